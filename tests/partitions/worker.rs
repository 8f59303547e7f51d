//! The worker processes of the partition suite: this test binary run again in a host's
//! network namespace (`partition_worker`, ignored otherwise), doing what `LEASEHOLD_PART_ROLE`
//! says and printing one line per event for the parent:
//!
//! - `hold`: takes the mutex `LEASEHOLD_PART_NAME`, prints `HELD <token> <key>`, then every
//!   new validity deadline as `DEADLINE <CLOCK_MONOTONIC ns>` and, when the session is lost,
//!   `LOST <ns>`. On a line `write` on stdin it tries a fenced write and prints
//!   `FENCED ok` or `FENCED refused <error>`, then `VALID <is_valid>`, and exits.
//! - `mixed`: two clients, each with a session of its own, loop for `LEASEHOLD_PART_RUN_MS`:
//!   a mutex or a semaphore of 2 permits (waiting, with a timeout), two fenced history
//!   writes a short while apart (`WRITE acked|refused|unknown <key>`), a release; a lost session is
//!   replaced. At the end each settles its session and prints the keys under its lease
//!   (`LEFTOVER <key>`: none may be), then `DONE`.

use crate::support::net::mono_ns;
use crate::HIST;
use leasehold::{Client, Error, EtcdConfig, Mutex, Semaphore, Session};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::BufRead;
use std::time::{Duration, Instant};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("partition worker: {name} (run by the partition suite)"))
}

async fn client(endpoints: &str) -> Client {
    // Short request timeouts: a cut must show as failures, not as 5 s waits. Behind a slow
    // link (LEASEHOLD_PART_REQUEST_MS) a request takes longer than that.
    let request = std::env::var("LEASEHOLD_PART_REQUEST_MS").ok().and_then(|m| m.parse().ok()).unwrap_or(1000);
    let config = EtcdConfig::new(endpoints.split(',').map(str::to_owned))
        .connect_timeout(Duration::from_millis(request * 10).max(Duration::from_secs(5)))
        .request_timeout(Duration::from_millis(request));
    // The members may be electing a leader (a partition just began): try again a while.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match Client::etcd(config.clone()).await {
            Ok(client) => return client,
            Err(e) if Instant::now() < until => println!("RETRY connect: {e}"),
            Err(e) => panic!("connect: {e}"),
        }
    }
}

/// The worker's main.
pub async fn main() {
    let role = env("LEASEHOLD_PART_ROLE");
    let endpoints = env("LEASEHOLD_PART_ENDPOINTS");
    let ttl = Duration::from_millis(env("LEASEHOLD_PART_TTL_MS").parse().unwrap());
    match role.as_str() {
        "hold" => hold(&endpoints, ttl).await,
        "mixed" => mixed(&endpoints, ttl).await,
        other => panic!("partition worker: unknown role {other}"),
    }
}

/// When the session's validity deadline is, on `CLOCK_MONOTONIC`.
/// The session's validity deadline on `CLOCK_MONOTONIC`, also when it already passed.
fn deadline_ns(session: &Session) -> u64 {
    let (deadline, now, mono) = (session.deadline(), std::time::Instant::now(), mono_ns());
    match deadline.checked_duration_since(now) {
        Some(left) => mono + left.as_nanos() as u64,
        None => mono.saturating_sub(now.duration_since(deadline).as_nanos() as u64),
    }
}

async fn hold(endpoints: &str, ttl: Duration) {
    let name = env("LEASEHOLD_PART_NAME");
    let client = client(endpoints).await;
    // Until it holds: a session lost while waiting (the members elect a leader) is replaced.
    let (session, guard) = loop {
        let session = match client.session_builder().ttl(ttl).open().await {
            Ok(s) => s,
            Err(e) => {
                println!("RETRY session: {e}");
                continue;
            }
        };
        match Mutex::new(&session, &name).unwrap().lock().await {
            Ok(guard) => break (session, guard),
            Err(e) => println!("RETRY lock: {e}"),
        }
    };
    println!("HELD {} {}", guard.fencing_token(), guard.key());
    let watcher = {
        let session = session.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let d = session.deadline();
                // Every deadline, the first included (whether or not it already passed):
                // until it, this client believed it held.
                if last != Some(d) {
                    println!("DEADLINE {}", deadline_ns(&session));
                    last = Some(d);
                }
                tokio::select! {
                    _ = session.lost() => {
                        println!("LOST {}", mono_ns());
                        return;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        })
    };
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap_or_default();
    if line.trim() == "write" {
        let _ = tokio::time::timeout(Duration::from_secs(5), watcher).await;
        match guard.fenced_put(format!("part/fenced/{name}"), "late").await {
            Ok(()) => println!("FENCED ok"),
            Err(e) => println!("FENCED refused {e}"),
        }
        println!("VALID {}", guard.is_valid());
    }
    std::mem::forget(guard); // its session is gone or goes with the process
}

/// One client's loop of the mixed workload.
async fn mixed_client(
    endpoints: String,
    ttl: Duration,
    worker: usize,
    c: usize,
    until: Instant,
    seed: u64,
) -> Vec<String> {
    let client = client(&endpoints).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut session: Option<Session> = None;
    let mut seq = 0u64;
    while Instant::now() < until {
        let s = match &session {
            Some(s) if !s.is_lost() => s.clone(),
            _ => match client.session_builder().ttl(ttl).open().await {
                Ok(s) => {
                    session = Some(s.clone());
                    s
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let (resource, guard) = if rng.random_bool(0.5) {
            let m = Mutex::new(&s, "part-mx").unwrap();
            ("part-mx", m.lock_timeout(Duration::from_secs(3)).await.map(Guard::Mutex))
        } else {
            let sem = Semaphore::new(&s, "part-sem", 2).unwrap();
            ("part-sem", sem.acquire_timeout(Duration::from_secs(3)).await.map(Guard::Permit))
        };
        let Ok(guard) = guard else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..100))).await;
            continue;
        };
        // Two writes, on entering and before leaving: a holder is "in" between them, so
        // holders that overlap show in the history.
        for _ in 0..2 {
            seq += 1;
            let key = format!("{HIST}{resource}/{:020}/{worker}/{c}/{seq}", guard.token());
            let said = match guard.fenced_put(&key).await {
                Ok(()) => "acked",
                Err(Error::NotHeld { .. }) => "refused",
                Err(_) => "unknown",
            };
            println!("WRITE {said} {key}");
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..100))).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), guard.release()).await;
    }
    // Nothing is held now: once settled, no key may be left under the live lease. A create
    // that landed after its caller gave up is deleted by the session's audit one TTL after
    // that attempt (`session/cleanup.rs`), which `settle` does not wait for: keys found are
    // listed once more after a TTL, and only those still there count (as in the fault
    // suite's leftover check).
    let mut left = Vec::new();
    if let Some(s) = session.filter(|s| s.is_valid()) {
        let _ = tokio::time::timeout(Duration::from_secs(20), s.settle()).await;
        // The session's fence key is no lock, permit or place (`Session::fence_key`).
        let fence = s.fence_key().to_owned();
        if let Ok(keys) = s.client().backend().lease_keys(s.lease_id()).await {
            left = keys.into_iter().filter(|k| *k != fence).collect();
        }
        if !left.is_empty() {
            tokio::time::sleep(ttl + Duration::from_secs(1)).await;
            let _ = tokio::time::timeout(Duration::from_secs(20), s.settle()).await;
            match s.client().backend().lease_keys(s.lease_id()).await {
                Ok(again) if s.is_valid() => left.retain(|k| again.contains(k)),
                // The lease ended meanwhile, taking its keys: nothing to say.
                _ => left.clear(),
            }
        }
        let _ = s.close().await;
    }
    left
}

enum Guard {
    Mutex(leasehold::MutexGuard),
    Permit(leasehold::Permit),
}

impl Guard {
    fn token(&self) -> u64 {
        match self {
            Guard::Mutex(g) => g.fencing_token(),
            Guard::Permit(g) => g.fencing_token(),
        }
    }

    async fn fenced_put(&self, key: &str) -> leasehold::Result<()> {
        match self {
            Guard::Mutex(g) => g.fenced_put(key, "").await,
            Guard::Permit(g) => g.fenced_put(key, "").await,
        }
    }

    async fn release(self) -> leasehold::Result<()> {
        match self {
            Guard::Mutex(g) => g.unlock().await,
            Guard::Permit(g) => g.release().await,
        }
    }
}

async fn mixed(endpoints: &str, ttl: Duration) {
    let worker: usize = env("LEASEHOLD_PART_WORKER").parse().unwrap();
    let run = Duration::from_millis(env("LEASEHOLD_PART_RUN_MS").parse().unwrap());
    let seed: u64 = env("LEASEHOLD_PART_SEED").parse().unwrap();
    let until = Instant::now() + run;
    let clients: Vec<_> = (0..2)
        .map(|c| tokio::spawn(mixed_client(endpoints.to_owned(), ttl, worker, c, until, seed * 10 + c as u64)))
        .collect();
    for c in clients {
        for key in c.await.unwrap() {
            println!("LEFTOVER {key}");
        }
    }
    println!("DONE");
}
