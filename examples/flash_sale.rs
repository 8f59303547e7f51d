//! Flash sale: N buyers deduct from an inventory of M units until it is sold out, in
//! several ways, and every run checks that nothing was oversold or lost.
//!
//! ```text
//! cargo run --release --example flash_sale                       # embedded backend
//! cargo run --release --example flash_sale -- --backend etcd://127.0.0.1:2379
//! cargo run --release --example flash_sale -- --buyers 64 --units 500
//! ```
//!
//! Ways to sell (one row each):
//! - `cas`: read the stock, compare-and-swap the decrement, retry with jittered backoff;
//! - `mutex-pessimistic`: a fair-queue Mutex around read-modify-write, with a fenced write;
//! - `mutex-optimistic`: the same under a CAS-acquired Mutex.
//!
//! Checks: units sold == M, the stock ends at 0 (no oversell, no lost update), and every
//! write made under a lock carried the current fencing token (a FencedResource mirror
//! refused none).

use clap::Parser;
use leasehold::{Backoff, Client, FencedResource, Mutex, Strategy};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Flash-sale contention demo: no oversell, whatever the strategy")]
struct Args {
    /// Store URL: memory:// (embedded, default) or etcd://host:port[,host:port]
    #[arg(long, default_value = "memory://")]
    backend: String,
    /// Concurrent buyers.
    #[arg(long, default_value_t = 16)]
    buyers: usize,
    /// Units in stock.
    #[arg(long, default_value_t = 200)]
    units: u64,
    /// Only these ways (comma-separated); default all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(Default)]
struct Stats {
    sold: AtomicU64,
    retries: AtomicU64,
    writes: AtomicU64,
    stale: AtomicU64,
}

#[derive(Clone, Copy, Debug)]
enum Way {
    Cas,
    Mutex(Strategy),
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Cas => "cas",
            Way::Mutex(Strategy::Pessimistic) => "mutex-pessimistic",
            Way::Mutex(Strategy::Optimistic) => "mutex-optimistic",
        }
    }
}

fn parse(kv: Option<leasehold::backend::KeyValue>) -> (u64, Option<i64>) {
    kv.map_or((0, None), |kv| (String::from_utf8_lossy(&kv.value).parse().unwrap_or(0), Some(kv.mod_revision)))
}

/// One buyer: buys one unit per order until the stock is gone. Returns order latencies.
async fn buyer(
    client: Client,
    way: Way,
    stock_key: String,
    stats: Arc<Stats>,
    fence: Arc<FencedResource<()>>,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let backend = client.backend().clone();
    match way {
        Way::Cas => {
            let policy = Backoff::new(Duration::from_micros(200), Duration::from_millis(20));
            loop {
                let started = Instant::now();
                let mut delays = policy.delays();
                let bought = loop {
                    let (stock, rev) = parse(backend.get(&stock_key).await.unwrap());
                    if stock == 0 {
                        break false;
                    }
                    stats.writes.fetch_add(1, Ordering::Relaxed);
                    let r =
                        backend.compare_and_swap(&stock_key, rev, (stock - 1).to_string().into(), None).await.unwrap();
                    if r.swapped {
                        break true;
                    }
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delays.next().unwrap_or(policy.cap)).await;
                };
                if !bought {
                    return latencies;
                }
                stats.sold.fetch_add(1, Ordering::Relaxed);
                latencies.push(started.elapsed());
            }
        }
        Way::Mutex(strategy) => {
            let session = client.session().await.unwrap();
            let mutex = Mutex::new(&session, "flash-sale").unwrap().with_strategy(strategy);
            loop {
                let started = Instant::now();
                let guard = mutex.lock().await.unwrap();
                let (stock, _) = parse(backend.get(&stock_key).await.unwrap());
                if stock == 0 {
                    guard.unlock().await.unwrap();
                    break;
                }
                if fence.check(guard.fencing_token()).is_err() {
                    stats.stale.fetch_add(1, Ordering::Relaxed);
                }
                guard.fenced_put(stock_key.clone(), (stock - 1).to_string()).await.unwrap();
                guard.unlock().await.unwrap();
                stats.writes.fetch_add(3, Ordering::Relaxed); // enqueue, fenced put, release
                stats.sold.fetch_add(1, Ordering::Relaxed);
                latencies.push(started.elapsed());
            }
            session.close().await.unwrap();
            latencies
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> leasehold::Result<()> {
    let args = Args::parse();
    let client = Client::connect(&args.backend).await?.with_namespace(format!("flash-{}/", std::process::id()));
    let ways = [Way::Cas, Way::Mutex(Strategy::Pessimistic), Way::Mutex(Strategy::Optimistic)];
    println!("flash sale on {}: {} buyers, {} units\n", args.backend, args.buyers, args.units);
    println!("| way | orders/s | p50 ms | p99 ms | retries/order | writes/order | sold | stock left | check |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut all_ok = true;
    for way in ways {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == way.name()) {
            continue;
        }
        let stock_key = format!("flash-{}/stock-{}", std::process::id(), way.name());
        client.backend().compare_and_swap(&stock_key, None, args.units.to_string().into(), None).await?;
        let stats = Arc::new(Stats::default());
        let fence = Arc::new(FencedResource::new(()));
        let started = Instant::now();
        let handles: Vec<_> = (0..args.buyers)
            .map(|_| tokio::spawn(buyer(client.clone(), way, stock_key.clone(), stats.clone(), fence.clone())))
            .collect();
        let mut latencies = Vec::new();
        for h in handles {
            latencies.extend(h.await.expect("buyer panicked"));
        }
        let elapsed = started.elapsed();
        latencies.sort();
        let sold = stats.sold.load(Ordering::Relaxed);
        let (left, _) = parse(client.backend().get(&stock_key).await?);
        let stale = stats.stale.load(Ordering::Relaxed);
        let ok = sold == args.units && left == 0 && stale == 0;
        all_ok &= ok;
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            way.name(),
            sold as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            stats.retries.load(Ordering::Relaxed) as f64 / sold.max(1) as f64,
            stats.writes.load(Ordering::Relaxed) as f64 / sold.max(1) as f64,
            sold,
            left,
            if ok { "ok: no oversell, no lost update, no stale token" } else { "VIOLATION" },
        );
    }
    if !all_ok {
        eprintln!("flash sale: a check failed");
        std::process::exit(1);
    }
    Ok(())
}
