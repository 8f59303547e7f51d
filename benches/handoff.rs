//! Lock hand-off benchmark against a real single-node etcd, with etcd's own Lock RPC
//! (etcd-client's lock client, the Go recipe run inside the server) as the peer, all in
//! one run so the ratios compare like with like on a noisy machine.
//!
//! ```text
//! cargo bench --bench handoff                      # starts its own etcd on 127.0.0.1
//! cargo bench --bench handoff -- --tasks 16 --cycles 100 --uncontended 500
//! cargo bench --bench handoff -- --uncontended 0 --only pessimistic,shared   # some rows
//! LEASEHOLD_BENCH_ETCD=127.0.0.1:2379 cargo bench --bench handoff   # an etcd you run
//! ```
//!
//! Measures: the uncontended lock+unlock cycle (median, p99) and contended hand-offs per
//! second with N tasks, each with its own client connection and lease (the clock starts
//! once every task is connected). The relock rows time `Mutex::relock`, which releases and
//! queues again in one transaction: the cycle of a worker that keeps taking the lock.

#[path = "support/commit.rs"]
mod commit;
#[path = "../tests/support/etcd.rs"]
#[allow(dead_code)]
mod etcd;

use clap::Parser;
use etcd_client::LockOptions;
use leasehold::{Client, EtcdConfig, Mutex, Strategy};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

#[derive(Parser, Debug)]
struct Args {
    /// Contending tasks.
    #[arg(long, default_value_t = 16)]
    tasks: usize,
    /// Lock/unlock cycles per contending task.
    #[arg(long, default_value_t = 100)]
    cycles: usize,
    /// Cycles of the uncontended measurement.
    #[arg(long, default_value_t = 500)]
    uncontended: usize,
    /// Runs of each contended measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only these contended rows (short names: pessimistic, optimistic, shared, relock,
    /// relock-shared), e.g. to profile etcd during one of them; the Lock RPC row, the
    /// baseline, is always measured.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    Leasehold(Strategy),
    /// Pessimistic, all tasks of the process sharing one Client (one watch stream).
    SharedClient,
    LockRpc,
    /// Pessimistic, each cycle one `Mutex::relock` (release and re-queue in one Txn);
    /// `true`: all tasks sharing one Client.
    Relock(bool),
    /// The same two transactions as the pessimistic cycle, sent raw (no leasehold code).
    RawTxns,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Leasehold(Strategy::Pessimistic) => "leasehold pessimistic",
            Peer::Leasehold(Strategy::Optimistic) => "leasehold optimistic",
            Peer::Leasehold(Strategy::Adaptive) => "leasehold adaptive",
            Peer::Leasehold(_) => "leasehold, another strategy",
            Peer::SharedClient => "leasehold pessimistic, one shared client",
            Peer::LockRpc => "etcd Lock RPC (etcd-client)",
            Peer::Relock(false) => "leasehold pessimistic, relock (release + re-queue in one Txn)",
            Peer::Relock(true) => "leasehold pessimistic, relock, one shared client",
            Peer::RawTxns => "raw: leasehold's two Txns via etcd-client (floor)",
        }
    }

    /// The name `--only` selects the row by.
    fn short(self) -> &'static str {
        match self {
            Peer::Leasehold(strategy) => strategy.name(),
            Peer::SharedClient => "shared",
            Peer::LockRpc => "lock-rpc",
            Peer::Relock(false) => "relock",
            Peer::Relock(true) => "relock-shared",
            Peer::RawTxns => "raw",
        }
    }
}

/// One task's loop: `cycles` lock/unlock cycles on `name`, returning each cycle's time.
async fn cycles(
    endpoints: Vec<String>,
    peer: Peer,
    name: String,
    cycles: usize,
    shared: Option<Client>,
    start: Arc<Barrier>,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(cycles);
    match peer {
        Peer::Leasehold(_) | Peer::SharedClient | Peer::Relock(_) => {
            let strategy = match peer {
                Peer::Leasehold(s) => s,
                _ => Strategy::Pessimistic,
            };
            let client = match shared {
                Some(c) => c,
                None => Client::etcd(EtcdConfig::new(endpoints)).await.unwrap(),
            };
            let session = client.session().await.unwrap();
            let mutex = Mutex::new(&session, &name).unwrap().with_strategy(strategy);
            if let Peer::Relock(_) = peer {
                // Every cycle releases and queues again in one transaction; the first lock
                // and the last unlock are outside the per-cycle times, as a looping worker's
                // would be (after the barrier: the other tasks must reach it).
                start.wait().await;
                let mut g = mutex.lock().await.unwrap();
                for _ in 0..cycles {
                    let t = Instant::now();
                    mutex.relock(&mut g).await.unwrap();
                    times.push(t.elapsed());
                }
                g.unlock().await.unwrap();
            } else {
                start.wait().await;
                for _ in 0..cycles {
                    let t = Instant::now();
                    let g = mutex.lock().await.unwrap();
                    g.unlock().await.unwrap();
                    times.push(t.elapsed());
                }
            }
            session.close().await.unwrap();
        }
        Peer::RawTxns => {
            use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp};
            let mut client = etcd_client::Client::connect(endpoints, None).await.unwrap();
            let lease = client.lease_grant(10, None).await.unwrap().id();
            let prefix = format!("{name}/");
            let key = format!("{prefix}{lease:x}");
            start.wait().await;
            for _ in 0..cycles {
                let t = Instant::now();
                let head =
                    GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
                let txn = Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([
                        TxnOp::put(key.as_str(), "", Some(PutOptions::new().with_lease(lease))),
                        TxnOp::get(key.as_str(), None),
                        TxnOp::get(prefix.as_str(), Some(head.clone())),
                    ])
                    .or_else([TxnOp::get(key.as_str(), None), TxnOp::get(prefix.as_str(), Some(head))]);
                let rev = client.txn(txn).await.unwrap().header().unwrap().revision();
                let del = Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, rev)])
                    .and_then([TxnOp::delete(key.as_str(), None)]);
                client.txn(del).await.unwrap();
                times.push(t.elapsed());
            }
            client.lease_revoke(lease).await.unwrap();
        }
        Peer::LockRpc => {
            let mut client = etcd_client::Client::connect(endpoints, None).await.unwrap();
            let lease = client.lease_grant(10, None).await.unwrap().id();
            let (mut keeper, mut stream) = client.lease_keep_alive(lease).await.unwrap();
            let keep = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    if keeper.keep_alive().await.is_err() || stream.message().await.is_err() {
                        return;
                    }
                }
            });
            start.wait().await;
            for _ in 0..cycles {
                let t = Instant::now();
                let resp = client.lock(name.as_str(), Some(LockOptions::new().with_lease(lease))).await.unwrap();
                client.unlock(resp.key()).await.unwrap();
                times.push(t.elapsed());
            }
            keep.abort();
            client.lease_revoke(lease).await.unwrap();
        }
    }
    times
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if !args.bench {
        // `cargo test --all-targets` builds and runs bench targets too: nothing to measure then.
        println!("handoff: a benchmark; run it with `cargo bench --bench handoff`");
        return;
    }
    let (_etcd, endpoints) = match std::env::var("LEASEHOLD_BENCH_ETCD") {
        Ok(e) => (None, e.split(',').map(str::to_owned).collect()),
        Err(_) => {
            let c = etcd::EtcdCluster::single();
            let e = c.endpoints();
            (Some(c), e)
        }
    };
    let peers = [
        Peer::Leasehold(Strategy::Pessimistic),
        Peer::Leasehold(Strategy::Optimistic),
        Peer::Relock(false),
        Peer::RawTxns,
        Peer::LockRpc,
    ];
    let contended: Vec<Peer> = [
        Peer::Leasehold(Strategy::Pessimistic),
        Peer::Leasehold(Strategy::Optimistic),
        Peer::SharedClient,
        Peer::Relock(false),
        Peer::Relock(true),
        Peer::LockRpc,
    ]
    .into_iter()
    .filter(|p| args.only.is_empty() || *p == Peer::LockRpc || args.only.iter().any(|o| o == p.short()))
    .collect();
    let rpc_at = |list: &[Peer]| list.iter().position(|p| *p == Peer::LockRpc).unwrap();

    // `--uncontended 0` skips this part (e.g. to profile one contended row).
    if args.uncontended > 0 {
        println!(
            "## Uncontended lock+unlock cycle ({} cycles each, one task, interleaved in 10 rounds)\n",
            args.uncontended
        );
        println!("| implementation | median ms | p99 ms | median vs Lock RPC |");
        println!("|---|---:|---:|---:|");
        // Warm up connections and etcd itself, so the first row does not pay for it.
        for (i, peer) in peers.iter().enumerate() {
            cycles(endpoints.clone(), *peer, format!("bench-w{i}"), 50, None, Arc::new(Barrier::new(1))).await;
        }
        // Interleaved: 10 rounds, each implementation in turn, so drift on a shared machine
        // hits all of them alike.
        let mut all: Vec<Vec<Duration>> = vec![Vec::new(); peers.len()];
        for round in 0..10 {
            for (i, peer) in peers.iter().enumerate() {
                let n = args.uncontended / 10;
                let alone = Arc::new(Barrier::new(1));
                all[i].extend(cycles(endpoints.clone(), *peer, format!("bench-u{i}-{round}"), n, None, alone).await);
            }
        }
        let medians: Vec<(f64, f64)> = all
            .into_iter()
            .map(|mut t| {
                t.sort();
                (pct(&t, 0.5), pct(&t, 0.99))
            })
            .collect();
        let rpc = medians[rpc_at(&peers)].0;
        for (peer, (p50, p99)) in peers.iter().zip(&medians) {
            println!("| {} | {p50:.3} | {p99:.3} | {:.2}× |", peer.name(), p50 / rpc);
        }
    }

    println!(
        "\n## Contended hand-offs/s ({} tasks × {} cycles, each task its own lease; median of {} runs)\n",
        args.tasks, args.cycles, args.runs
    );
    println!(
        "(\"one shared client\": the 16 tasks share one Client, as tasks of one process would: one watch stream.)\n"
    );
    println!(
        "(\"first done\": when the first task finished its cycles, as a share of the run. Every task \
         does the same number of cycles, so with fair hand-offs all finish near the end (near 1); \
         a task that keeps winning finishes early (near 1/tasks).)\n"
    );
    let commit_before = commit::lone_commit_ms(&endpoints, 200).await;
    let mut rows = Vec::new();
    for (i, peer) in contended.iter().enumerate() {
        let mut runs = Vec::new();
        for run in 0..args.runs {
            let name = format!("bench-c{i}-{run}");
            let shared = match peer {
                Peer::SharedClient | Peer::Relock(true) => {
                    Some(Client::etcd(EtcdConfig::new(endpoints.clone())).await.unwrap())
                }
                _ => None,
            };
            // Every task connects and opens its session first; the clock starts when all
            // are ready, so the rate counts hand-offs, not connection setup.
            let start = Arc::new(Barrier::new(args.tasks + 1));
            let handles: Vec<_> = (0..args.tasks)
                .map(|_| {
                    let task =
                        cycles(endpoints.clone(), *peer, name.clone(), args.cycles, shared.clone(), start.clone());
                    tokio::spawn(async move {
                        let times = task.await;
                        (times, Instant::now())
                    })
                })
                .collect();
            start.wait().await;
            let started = Instant::now();
            let mut all = Vec::new();
            let mut first_done: Option<Instant> = None;
            for h in handles {
                let (times, done) = h.await.unwrap();
                all.extend(times);
                first_done = Some(first_done.map_or(done, |f| f.min(done)));
            }
            let elapsed = started.elapsed();
            let rate = all.len() as f64 / elapsed.as_secs_f64();
            let first = first_done.map_or(1.0, |f| (f - started).as_secs_f64() / elapsed.as_secs_f64());
            all.sort();
            runs.push((rate, pct(&all, 0.5), pct(&all, 0.99), first));
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        rows.push(runs[runs.len() / 2]);
    }
    let commit_after = commit::lone_commit_ms(&endpoints, 200).await;
    let commit_ms = (commit_before + commit_after) / 2.0;
    println!(
        "(\"per hand-off / lone commit\": the time per hand-off (1 / hand-offs per second) in units of \
         the median lone commit measured in this run, before and after the rows: {commit_before:.3} and \
         {commit_after:.3} ms, mean {commit_ms:.3} ms. Unlike \"vs Lock RPC\" it does not swing with \
         the hour.)\n"
    );
    println!(
        "| implementation | hand-offs/s | cycle p50 ms | cycle p99 ms | first done | vs Lock RPC | per hand-off / lone commit |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let rpc = rows[rpc_at(&contended)].0;
    for (peer, (rate, p50, p99, first)) in contended.iter().zip(&rows) {
        let per = 1e3 / rate / commit_ms;
        println!("| {} | {rate:.0} | {p50:.2} | {p99:.2} | {first:.2} | {:.2}× | {per:.2} |", peer.name(), rate / rpc);
    }
}
