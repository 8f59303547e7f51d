//! Flash sale: N buyers deduct from an inventory of M units until it is sold out, in
//! several ways, and every run checks that nothing was oversold or lost.
//!
//! ```text
//! cargo run --release --example flash_sale                       # embedded backend
//! cargo run --release --example flash_sale -- --backend etcd://127.0.0.1:2379
//! cargo run --release --example flash_sale -- --buyers 64 --units 500 --only adaptive
//! ```
//!
//! Ways to sell (one table row each):
//! - `optimistic`: read the stock and compare-and-swap the decrement, retrying with
//!   jittered backoff ([`Register`] with [`Strategy::Optimistic`]);
//! - `pessimistic`: a [`Mutex`](leasehold::Mutex) around the read-modify-write, with a
//!   fenced write (`Strategy::Pessimistic`);
//! - `adaptive`: optimistic until conflicts rise, then queued (`Strategy::Adaptive`);
//! - `semaphore-gated`: at most `--permits` buyers at a time (a [`Semaphore`]), each doing
//!   an optimistic decrement;
//! - `tikv-txn-lock` (only on TiKV, built with `--features tikv`): a TiKV pessimistic
//!   transaction lock (`TxnLock`, TiKV's own blocking lock queue) around the decrement.
//!
//! `--backend tikv-test://` (with `--features tikv`) runs against the in-process PD+TiKV
//! *test server* of the test suite — a demo of the TiKV code paths, not TiKV performance.
//!
//! The stock is stored as `"<units> <token>"`: a write made under the lock records its
//! fencing token, and every accepted write's token is compared with the one stored before
//! it, in the store's own order of writes (the write is a compare-and-swap on the value it
//! read) — so "every accepted write carried a current token" is checked, not assumed. Writes per order are counted by a decorator around the
//! backend, so they include the writes that acquiring and releasing locks and permits cost.

#[path = "support/counting.rs"]
mod counting;

use clap::Parser;
use counting::{Counting, Counts};
use leasehold::{Client, Register, Semaphore, Strategy};
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
    #[arg(long, default_value_t = 400)]
    units: u64,
    /// Permits of the semaphore-gated way.
    #[arg(long, default_value_t = 4)]
    permits: u32,
    /// Only these ways (comma-separated): optimistic, pessimistic, adaptive, semaphore-gated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    Plain(Strategy),
    SemaphoreGated,
    /// TiKV's pessimistic-transaction lock around an optimistic decrement.
    TxnLock,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Plain(Strategy::Optimistic) => "optimistic",
            Way::Plain(Strategy::Pessimistic) => "pessimistic",
            Way::Plain(Strategy::Adaptive) => "adaptive",
            Way::SemaphoreGated => "semaphore-gated",
            Way::TxnLock => "tikv-txn-lock",
        }
    }
}

#[derive(Default)]
struct Tally {
    sold: AtomicU64,
    conflicts: AtomicU64,
    queued: AtomicU64,
    stale: AtomicU64,
}

/// `"<units> <token>"` → (units, token).
fn parse(v: Option<&[u8]>) -> (u64, u64) {
    let text = v.map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    let mut it = text.split(' ').map(|s| s.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// One buyer: one unit per order until sold out. Returns each order's latency.
async fn buyer(
    client: Client,
    way: Way,
    name: String,
    permits: u32,
    tally: Arc<Tally>,
) -> leasehold::Result<Vec<Duration>> {
    let session = client.session().await?;
    let strategy = match way {
        Way::Plain(s) => s,
        Way::SemaphoreGated | Way::TxnLock => Strategy::Optimistic,
    };
    let stock = Register::new(&session, &name)?.with_strategy(strategy);
    let gate = match way {
        Way::SemaphoreGated => Some(Semaphore::new(&session, &format!("{name}-gate"), permits)?),
        Way::Plain(_) | Way::TxnLock => None,
    };
    #[cfg(feature = "tikv")]
    let txn_lock = match (way, tikv::backend()) {
        (Way::TxnLock, Some(b)) => Some(leasehold::backend::tikv::TxnLock::new(&b, &format!("{name}-txn"))?),
        _ => None,
    };
    let mut latencies = Vec::new();
    loop {
        let started = Instant::now();
        let permit = match &gate {
            Some(g) => Some(g.acquire().await?),
            None => None,
        };
        #[cfg(feature = "tikv")]
        let txn_guard = match &txn_lock {
            Some(l) => Some(l.lock().await?),
            None => None,
        };
        #[cfg(feature = "tikv")]
        let txn_token = txn_guard.as_ref().map(|g| g.fencing_token());
        #[cfg(not(feature = "tikv"))]
        let txn_token: Option<u64> = None;
        // A write under the lock stores its token with the stock; it must exceed the last
        // one stored (an optimistic write carries the last token forward).
        let mut stale = false;
        let updated = stock
            .update_with_token(|v, token| {
                let token = token.or(txn_token);
                let (units, last) = parse(v);
                if units == 0 {
                    return None;
                }
                stale = token.is_some_and(|t| t <= last);
                Some(format!("{} {}", units - 1, token.unwrap_or(last)).into_bytes())
            })
            .await?;
        if let Some(p) = permit {
            p.release().await?;
        }
        #[cfg(feature = "tikv")]
        if let Some(g) = txn_guard {
            g.unlock().await?;
        }
        tally.conflicts.fetch_add(u64::from(updated.conflicts), Ordering::Relaxed);
        if !updated.written {
            break;
        }
        tally.stale.fetch_add(u64::from(stale), Ordering::Relaxed);
        tally.queued.fetch_add(u64::from(updated.token.or(txn_token).is_some()), Ordering::Relaxed);
        tally.sold.fetch_add(1, Ordering::Relaxed);
        latencies.push(started.elapsed());
    }
    session.close().await?;
    Ok(latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// TiKV: the in-process test server for `tikv-test://`, and the concrete backend TxnLock needs.
#[cfg(feature = "tikv")]
mod tikv {
    use leasehold::backend::tikv::TikvBackend;
    use std::sync::OnceLock;

    static BACKEND: OnceLock<TikvBackend> = OnceLock::new();

    /// Resolves `tikv-test://` (starting the test server, kept for the process's life) and
    /// connects the concrete backend for `tikv://` URLs.
    pub async fn prepare(url: &str) -> leasehold::Result<String> {
        let url = if url == "tikv-test://" {
            let server = tikv_test_server::TestServer::start().await;
            let url = format!("tikv://{}", server.pd_endpoints().join(","));
            Box::leak(Box::new(server));
            url
        } else {
            url.to_owned()
        };
        if let Some(eps) = url.strip_prefix("tikv://") {
            let config = leasehold::TikvConfig::new(eps.split(',').map(str::to_owned));
            let _ = BACKEND.set(TikvBackend::connect(config).await?);
        }
        Ok(url)
    }

    pub fn backend() -> Option<TikvBackend> {
        BACKEND.get().cloned()
    }
}

#[tokio::main]
async fn main() -> leasehold::Result<()> {
    let args = Args::parse();
    #[cfg(feature = "tikv")]
    let url = tikv::prepare(&args.backend).await?;
    #[cfg(not(feature = "tikv"))]
    let url = args.backend.clone();
    let base = Client::connect(&url).await?;
    let counts = Arc::new(Counts::default());
    let client = Client::new(Counting { inner: base.backend().clone(), counts: counts.clone() })
        .with_namespace(format!("flash-{}/", std::process::id()));
    let mut ways = vec![
        Way::Plain(Strategy::Optimistic),
        Way::Plain(Strategy::Pessimistic),
        Way::Plain(Strategy::Adaptive),
        Way::SemaphoreGated,
    ];
    if url.starts_with("tikv://") {
        ways.push(Way::TxnLock);
    }
    println!("flash sale on {}: {} buyers, {} units\n", args.backend, args.buyers, args.units);
    println!(
        "| way | orders/s | p50 ms | p99 ms | conflicts/order | queued orders | writes/order | sold | left | check |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut all_ok = true;
    for way in ways {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == way.name()) {
            continue;
        }
        let name = format!("stock-{}", way.name());
        let setup = client.session().await?;
        Register::new(&setup, &name)?.update(|_| Some(format!("{} 0", args.units).into_bytes())).await?;
        let tally = Arc::new(Tally::default());
        let writes_before = counts.writes();
        let started = Instant::now();
        let handles: Vec<_> = (0..args.buyers)
            .map(|_| tokio::spawn(buyer(client.clone(), way, name.clone(), args.permits, tally.clone())))
            .collect();
        let mut latencies = Vec::new();
        for h in handles {
            latencies.extend(h.await.expect("buyer panicked")?);
        }
        let elapsed = started.elapsed();
        let writes = counts.writes() - writes_before;
        latencies.sort();
        let sold = tally.sold.load(Ordering::Relaxed);
        let (left, _) = parse(Register::new(&setup, &name)?.get().await?.as_deref());
        let stale = tally.stale.load(Ordering::Relaxed);
        let ok = sold == args.units && left == 0 && stale == 0;
        all_ok &= ok;
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {} | {} | {} |",
            way.name(),
            sold as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            tally.conflicts.load(Ordering::Relaxed) as f64 / sold.max(1) as f64,
            tally.queued.load(Ordering::Relaxed),
            writes as f64 / sold.max(1) as f64,
            sold,
            left,
            if ok { "ok" } else { "VIOLATION" },
        );
        setup.close().await?;
    }
    println!("\nok = units sold == stock, none left, no oversell or lost update, and no write under a stale token");
    if !all_ok {
        eprintln!("flash sale: a check failed");
        std::process::exit(1);
    }
    Ok(())
}
