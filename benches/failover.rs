//! Leader failover times on a real single-node etcd (started here on 127.0.0.1):
//! - after SIGKILL of the leader's **process** (its lease must expire on the server);
//! - after the leader resigns (a delete that the queued candidate sees at once).
//!
//! ```text
//! cargo bench --bench failover                       # 20 trials each, TTL 2 s
//! cargo bench --bench failover -- --trials 20 --ttl 3
//! ```
//! Each trial: a leader (a child process for the SIGKILL case) and one candidate waiting
//! for it in this process; the time is from the kill (or the resign call) to the moment
//! the candidate's `campaign()` returns. Both strategies run in the same process: a queued
//! candidate (its key waits behind the leader's) and an optimistic one (it writes nothing,
//! sees the leader's key go, pauses 0.5 ms with full jitter and creates its key).

#[path = "../examples/support/counting.rs"]
#[allow(dead_code)]
mod counting;
#[path = "../tests/support/etcd.rs"]
#[allow(dead_code)]
mod etcd;

use clap::Parser;
use leasehold::{Client, Election, EtcdConfig, Strategy};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Session TTL in seconds.
    #[arg(long, default_value_t = 2)]
    ttl: u64,
    #[arg(long, hide = true)]
    bench: bool,
}

/// Child mode: campaign, say so, and wait to be killed.
async fn leader_process(url: &str, name: &str, ttl: u64) {
    let client = Client::connect(url).await.unwrap();
    let session = client.session_builder().ttl(Duration::from_secs(ttl)).open().await.unwrap();
    let _leadership = Election::new(&session, name).unwrap().campaign("doomed").await.unwrap();
    println!("leading");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

async fn until_queued(client: &Client, name: &str, n: usize) {
    let prefix = client.prefix_of(name).unwrap();
    for _ in 0..1000 {
        if client.backend().range_prefix(&prefix, 0).await.unwrap().0.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("candidate never queued");
}

/// A client for the candidate that counts its store calls, so the trial can tell when an
/// optimistic candidate (which leaves no key) has tried once and waits.
fn counted(client: &Client) -> (Client, Arc<counting::Counts>) {
    let counts = Arc::new(counting::Counts::default());
    (Client::new(counting::Counting { inner: client.backend().clone(), counts: counts.clone() }), counts)
}

/// Waits until the candidate waits: a queued one's key is behind the leader's; an
/// optimistic one has sent its create (which finds the leader) and had time for the answer.
async fn until_waiting(client: &Client, name: &str, strategy: Strategy, counts: &counting::Counts) {
    if strategy == Strategy::Pessimistic {
        return until_queued(client, name, 2).await;
    }
    for _ in 0..1000 {
        if counts.writes() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await; // the answer, then its wait
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("candidate never tried");
}

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.99), v[v.len() - 1].as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    if let (Ok(url), Ok(name)) = (std::env::var("FAILOVER_URL"), std::env::var("FAILOVER_NAME")) {
        let ttl = std::env::var("FAILOVER_TTL").unwrap().parse().unwrap();
        return leader_process(&url, &name, ttl).await;
    }
    let args = Args::parse();
    if !args.bench {
        println!("failover: a benchmark; run it with `cargo bench --bench failover`");
        return;
    }
    let etcd = etcd::EtcdCluster::single();
    let client = Client::etcd(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let ttl = Duration::from_secs(args.ttl);

    println!("## Leader failover ({} trials each, TTL {:?}, single-node etcd)\n", args.trials, ttl);
    println!("| candidate | event | median ms | p99 ms | max ms | target |");
    println!("|---|---|---:|---:|---:|---|");
    let target = ttl.as_secs_f64() * 1e3 + 300.0;
    for strategy in [Strategy::Pessimistic, Strategy::Optimistic] {
        let (killed, resigned) = trials(&etcd, &client, &args, strategy).await;
        let (k50, k99, kmax) = stats(killed);
        let (r50, r99, rmax) = stats(resigned);
        println!("| {strategy} | SIGKILL of the leader's process | {k50:.0} | {k99:.0} | {kmax:.0} | ≤ TTL + 300 = {target:.0} ms |");
        println!("| {strategy} | resign | {r50:.2} | {r99:.2} | {rmax:.2} | ≤ 50 ms |");
    }
}

/// The SIGKILL and the resign trials with a candidate of `strategy`.
async fn trials(
    etcd: &etcd::EtcdCluster,
    client: &Client,
    args: &Args,
    strategy: Strategy,
) -> (Vec<Duration>, Vec<Duration>) {
    let ttl = Duration::from_secs(args.ttl);
    let mut killed = Vec::new();
    for trial in 0..args.trials {
        let name = format!("failover-kill-{strategy}-{trial}");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("FAILOVER_URL", etcd.url())
            .env("FAILOVER_NAME", &name)
            .env("FAILOVER_TTL", args.ttl.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "leading");
        let (candidates, counts) = counted(client);
        let session = candidates.session_builder().ttl(ttl).open().await.unwrap();
        let election = Election::new(&session, &name).unwrap().with_strategy(strategy);
        let candidate = tokio::spawn(async move {
            let l = election.campaign("successor").await.unwrap();
            (Instant::now(), l)
        });
        until_waiting(client, &name, strategy, &counts).await;
        // A random point in the renewal cycle, as a real crash would be.
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..args.ttl * 1000 / 3))).await;
        let t0 = Instant::now();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (elected, leadership) = candidate.await.unwrap();
        killed.push(elected - t0);
        leadership.resign().await.unwrap();
        session.close().await.unwrap();
    }

    let mut resigned = Vec::new();
    for trial in 0..args.trials {
        let name = format!("failover-resign-{strategy}-{trial}");
        let a = client.session().await.unwrap();
        let (candidates, counts) = counted(client);
        let b = candidates.session().await.unwrap();
        let leader = Election::new(&a, &name).unwrap().campaign("first").await.unwrap();
        let election = Election::new(&b, &name).unwrap().with_strategy(strategy);
        let candidate = tokio::spawn(async move {
            let l = election.campaign("second").await.unwrap();
            (Instant::now(), l)
        });
        until_waiting(client, &name, strategy, &counts).await;
        let t0 = Instant::now();
        leader.resign().await.unwrap();
        let (elected, leadership) = candidate.await.unwrap();
        resigned.push(elected - t0);
        leadership.resign().await.unwrap();
        a.close().await.unwrap();
        b.close().await.unwrap();
    }
    (killed, resigned)
}
