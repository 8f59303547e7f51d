//! Footprint: one process holding 10,000 locks through one session — one lease, one
//! keep-alive stream — and the resident memory it costs.
//!
//! ```text
//! cargo run --release --example footprint                  # starts a local etcd (needs scripts/install-deps.sh)
//! cargo run --release --example footprint -- --locks 10000 --backend etcd://127.0.0.1:2379
//! cargo run --release --example footprint -- --backend memory://   # includes the store itself
//! ```

#[path = "../tests/support/etcd.rs"]
#[allow(dead_code)]
mod etcd;

use clap::Parser;
use leasehold::{Client, Mutex};
use std::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    /// Store URL; default: an etcd started here on 127.0.0.1.
    #[arg(long)]
    backend: Option<String>,
    #[arg(long, default_value_t = 10_000)]
    locks: usize,
    /// Acquisitions in flight at once.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> leasehold::Result<()> {
    let args = Args::parse();
    let mut _etcd = None;
    let url = match &args.backend {
        Some(u) => u.clone(),
        None => {
            let c = etcd::EtcdCluster::single();
            let u = c.url();
            _etcd = Some(c);
            u
        }
    };
    let client = Client::connect(&url).await?.with_namespace("footprint/");
    let session = client.session().await?;
    let before = rss_kib();
    let started = Instant::now();
    let mut guards = Vec::with_capacity(args.locks);
    let mut names = (0..args.locks).map(|i| format!("lock-{i}"));
    loop {
        let batch: Vec<String> = names.by_ref().take(args.parallel).collect();
        if batch.is_empty() {
            break;
        }
        let acquired = futures::future::join_all(batch.iter().map(|n| async {
            let m = Mutex::new(&session, n)?;
            m.lock().await
        }))
        .await;
        for g in acquired {
            guards.push(g?);
        }
    }
    let took = started.elapsed();
    let after = rss_kib();
    assert!(guards.iter().all(|g| g.is_valid()));
    let leases = match &client.backend().kind() {
        &"etcd" => {
            let endpoints: Vec<String> = url.trim_start_matches("etcd://").split(',').map(str::to_owned).collect();
            let mut raw = etcd_client::Client::connect(endpoints, None).await.expect("etcd");
            raw.leases().await.expect("leases").leases().len().to_string()
        }
        _ => "1 (by construction)".to_owned(),
    };
    println!(
        "| locks held | leases on the server | keep-alive streams | RSS before | RSS after | per lock | acquire time |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {leases} | 1 | {:.1} MiB | {:.1} MiB | {:.0} B | {:.2?} |",
        guards.len(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before) * 1024) as f64 / guards.len() as f64,
        took
    );
    drop(guards);
    session.settle().await;
    session.close().await
}
