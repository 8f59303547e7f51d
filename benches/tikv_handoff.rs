//! Lock hand-off benchmark on the TiKV backend, comparing its strategies with each other:
//! the generic recipes' fair queue and compare-and-swap ([`Mutex`] on the trait), and the
//! TiKV-specific pessimistic-transaction lock ([`TxnLock`]).
//!
//! ```text
//! cargo bench --features tikv,tikv-test-server/server --bench tikv_handoff  # against the in-process test server
//! cargo bench --features tikv,tikv-test-server/server --bench tikv_handoff -- --tasks 8 --cycles 30 --uncontended 200
//! LEASEHOLD_BENCH_TIKV_PD=127.0.0.1:2379 cargo bench --features tikv,tikv-test-server/server --bench tikv_handoff
//! ```
//!
//! Against the test server the numbers are ratios between strategies on one machine, not
//! TiKV performance figures: the server keeps everything in memory and shares the two
//! cores with the clients.

use clap::Parser;
use leasehold::backend::tikv::{TikvBackend, TxnLock};
use leasehold::{Client, Mutex, Strategy, TikvConfig};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// Contending tasks (each with its own client, as separate processes would be).
    #[arg(long, default_value_t = 4)]
    tasks: usize,
    /// Lock/unlock cycles per contending task.
    #[arg(long, default_value_t = 25)]
    cycles: usize,
    /// Cycles of the uncontended measurement.
    #[arg(long, default_value_t = 200)]
    uncontended: usize,
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug)]
enum Way {
    Queue,
    Cas,
    TxnLock,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Queue => "Mutex, pessimistic (fair queue)",
            Way::Cas => "Mutex, optimistic (CAS + retry)",
            Way::TxnLock => "TxnLock (pessimistic txn)",
        }
    }
}

/// One task's loop: `cycles` lock/unlock cycles on `name` through its own client.
async fn cycles(endpoints: Vec<String>, way: Way, name: String, cycles: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(cycles);
    let backend = TikvBackend::connect(TikvConfig::new(endpoints)).await.unwrap();
    match way {
        Way::Queue | Way::Cas => {
            let strategy = if matches!(way, Way::Queue) { Strategy::Pessimistic } else { Strategy::Optimistic };
            let client = Client::new(backend);
            let session = client.session().await.unwrap();
            let mutex = Mutex::new(&session, &name).unwrap().with_strategy(strategy);
            for _ in 0..cycles {
                let t = Instant::now();
                mutex.lock().await.unwrap().unlock().await.unwrap();
                times.push(t.elapsed());
            }
            session.close().await.unwrap();
        }
        Way::TxnLock => {
            let lock = TxnLock::new(&backend, &name).unwrap();
            for _ in 0..cycles {
                let t = Instant::now();
                lock.lock().await.unwrap().unlock().await.unwrap();
                times.push(t.elapsed());
            }
        }
    }
    times
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    if !args.bench {
        // `cargo test --all-targets` builds and runs bench targets too: nothing to measure then.
        println!("tikv_handoff: a benchmark; run it with `cargo bench --features tikv,tikv-test-server/server --bench tikv_handoff`");
        return;
    }
    let (_server, endpoints) = match std::env::var("LEASEHOLD_BENCH_TIKV_PD") {
        Ok(e) => (None, e.split(',').map(str::to_owned).collect()),
        Err(_) => {
            let s = tikv_test_server::TestServer::start().await;
            let e = s.pd_endpoints();
            (Some(s), e)
        }
    };
    let ways = [Way::Queue, Way::Cas, Way::TxnLock];
    for (i, way) in ways.iter().enumerate() {
        cycles(endpoints.clone(), *way, format!("bench-w{i}"), 10).await; // warm up
    }

    println!("## Uncontended lock+unlock cycle ({} cycles, one task)\n", args.uncontended);
    println!("| strategy | median ms | p99 ms | median vs queue |");
    println!("|---|---:|---:|---:|");
    let mut rows = Vec::new();
    for (i, way) in ways.iter().enumerate() {
        let mut t = cycles(endpoints.clone(), *way, format!("bench-u{i}"), args.uncontended).await;
        t.sort();
        rows.push((pct(&t, 0.5), pct(&t, 0.99)));
    }
    for (way, (p50, p99)) in ways.iter().zip(&rows) {
        println!("| {} | {p50:.2} | {p99:.2} | {:.2}× |", way.name(), p50 / rows[0].0);
    }

    println!("\n## Contended hand-offs/s ({} tasks × {} cycles, each task its own client)\n", args.tasks, args.cycles);
    println!("| strategy | hand-offs/s | cycle p50 ms | cycle p99 ms | rate vs queue |");
    println!("|---|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for (i, way) in ways.iter().enumerate() {
        let name = format!("bench-c{i}");
        let started = Instant::now();
        let handles: Vec<_> =
            (0..args.tasks).map(|_| tokio::spawn(cycles(endpoints.clone(), *way, name.clone(), args.cycles))).collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        let rate = all.len() as f64 / started.elapsed().as_secs_f64();
        all.sort();
        rows.push((rate, pct(&all, 0.5), pct(&all, 0.99)));
    }
    for (way, (rate, p50, p99)) in ways.iter().zip(&rows) {
        println!("| {} | {rate:.1} | {p50:.1} | {p99:.1} | {:.2}× |", way.name(), rate / rows[0].0);
    }
}
