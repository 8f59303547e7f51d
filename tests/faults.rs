//! Fault-injection safety suite on a real 3-member etcd (anchors: Jepsen's etcd 3.4.3
//! analysis, Kleppmann's fencing tokens, Chubby's sequencers).
//!
//! # Setup
//! [`WORKERS`] OS processes (this test binary re-run in worker mode) each run three clients,
//! each with its own session of [`TTL`]: one on each mutex of [`MUTEXES`] (the two
//! strategies mixed, the second mutex with lock-delay) and one on the semaphore
//! [`SEMAPHORE`] of [`PERMITS`] permits. A client loops: acquire (waiting, with a timeout, or
//! cancelled at a random point by dropping the future), write an `enter` entry, hold for a
//! moment, write an `exit` entry, and (a third of the time) relock or reacquire — release
//! and queue again in one transaction — and hold once more, then release. It never checks `is_valid()` before writing: a
//! pause can always fall between such a check and the write, so the suite makes that worst
//! case the normal one.
//!
//! # The fenced resource and what "accepted" means
//! The resource is etcd itself. Every write is one fenced transaction
//! (`fenced_write`, comparing the guard key's create revision) that creates a history entry
//! `faults/hist/<resource>/<token>/<worker>/<client>/<seq>`. An entry **is accepted** if and
//! only if it exists in the store afterwards; its `mod_revision` places it in the store's
//! single order. Workers' own reports (accepted, refused with `NotHeld`, unknown outcome
//! after a transient error) are only cross-checked against the store.
//!
//! # Faults (the parent, while the workers run)
//! SIGKILL and restart of an etcd member (the raft leader, or a follower); SIGSTOP of the
//! leader member (a grey failure) for longer than an election; SIGSTOP of a worker process
//! **while it holds** something, for [`STOP_FOR`] > TTL, then SIGCONT (its leases expire;
//! on resume its pending writes must be refused and it must carry on with new sessions);
//! and, inside the workers, acquisitions cancelled at random points.
//!
//! # The checker ([`checker`])
//! - no stale write accepted: per mutex, in revision order, an accepted entry's token is
//!   never below a token accepted earlier (so the tokens the resource accepted strictly
//!   increase from holder to holder);
//! - at most N holders at once: a holder is "in" from its first to its last accepted entry
//!   (store revisions); at no revision are more than 1 (mutex) or [`PERMITS`] (semaphore)
//!   holders in;
//! - every write a worker saw acknowledged is in the store, and nothing it saw refused is;
//! - no key is left under the lock prefixes within one TTL after the workers exit;
//! - every worker exits 0 with a summary line, every client finished, and every error a
//!   client met is of an expected kind.
//!
//! The control [`fault_suite_control_unfenced_writes_are_caught`] runs the same workers
//! writing **without** the fence and shows the checker reports the stale writes, and the
//! unit tests at the end feed the checker corrupted histories.
mod support;

use leasehold::backend::KeyValue;
use leasehold::{Client, Error, EtcdConfig, Mutex, MutexGuard, Permit, Semaphore, Session, Strategy, Write};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};
use support::etcd::EtcdCluster;

// ---- knobs ---------------------------------------------------------------------------

/// Worker processes of the suite.
const WORKERS: usize = 5;
/// Session TTL of every client (renewed every TTL/3).
const TTL: Duration = Duration::from_secs(3);
/// How long the workers run; faults end at least [`QUIET_TAIL`] before.
const RUN: Duration = Duration::from_secs(70);
/// No fault in this last part of the run, so that workers finish on a healthy cluster.
const QUIET_TAIL: Duration = Duration::from_secs(5);
/// A stopped worker stays stopped this long: longer than the TTL, so its leases expire.
const STOP_FOR: Duration = Duration::from_secs(5);
/// A killed member stays down this long before it is restarted.
const MEMBER_DOWN: Duration = Duration::from_secs(2);
/// A paused (SIGSTOP) member stays paused this long (longer than etcd's 1 s election timeout).
const MEMBER_PAUSE: Duration = Duration::from_secs(2);
/// Quiet time between two faults.
const CALM: Duration = Duration::from_millis(1500);
/// How long the parent looks for a worker that holds something before stopping one anyway.
const FIND_HOLDER: Duration = Duration::from_secs(3);
/// The two mutexes; the second uses lock-delay ([`LOCK_DELAY`]).
const MUTEXES: [&str; 2] = ["fault-mx-a", "fault-mx-b"];
/// Lock-delay of the second mutex.
const LOCK_DELAY: Duration = Duration::from_millis(300);
/// The semaphore and its permits.
const SEMAPHORE: &str = "fault-sem";
const PERMITS: u32 = 2;
/// How long a client holds, between its enter and exit writes (ms, uniform).
const HOLD_MS: std::ops::Range<u64> = 30..200;
/// The workers' per-request timeout (a request to a dead or paused member fails in time).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);
/// No queued (pessimistic) acquisition may wait longer (a paused holder's lease must expire
/// first, and a member restart may pause the cluster): a liveness bound, far above what is
/// expected.
const LIVENESS: Duration = Duration::from_secs(30);
/// Where the history entries live.
const HIST: &str = "faults/hist/";
/// Bound on any single worker operation that is not an acquisition (liveness, not speed).
const OP_LIMIT: Duration = Duration::from_secs(20);

const ENV_WORKER: &str = "LEASEHOLD_FAULTS_WORKER";
const ENV_ENDPOINTS: &str = "LEASEHOLD_FAULTS_ENDPOINTS";
const ENV_RUN_MS: &str = "LEASEHOLD_FAULTS_RUN_MS";
const ENV_FENCED: &str = "LEASEHOLD_FAULTS_FENCED";
const ENV_SEED: &str = "LEASEHOLD_FAULTS_SEED";

// ---- the worker ----------------------------------------------------------------------

/// What one client did, summed per worker into its summary line.
#[derive(Debug, Default, Clone)]
struct Stats {
    sessions: u64,
    acquired: u64,
    /// Acquisitions made by `Mutex::relock` / `Semaphore::reacquire` (counted in `acquired` too).
    relocked: u64,
    cancelled: u64,
    timeouts: u64,
    accepted: u64,
    refused: u64,
    unknown: u64,
    session_lost: u64,
    transient: u64,
    unexpected: u64,
    finished: u64,
    /// Waiting acquisitions still waiting when the run ended.
    cut_at_end: u64,
    /// The longest a waiting pessimistic (queued, fair) acquisition took to be admitted (ms).
    max_wait_queued_ms: u64,
    /// The same for the optimistic strategy, which keeps no place in a queue (ms).
    max_wait_cas_ms: u64,
}

impl Stats {
    const FIELDS: [&'static str; 15] = [
        "sessions",
        "acquired",
        "relocked",
        "cancelled",
        "timeouts",
        "accepted",
        "refused",
        "unknown",
        "session_lost",
        "transient",
        "unexpected",
        "finished",
        "cut_at_end",
        "max_wait_queued_ms",
        "max_wait_cas_ms",
    ];

    fn values(&self) -> [u64; 15] {
        [
            self.sessions,
            self.acquired,
            self.relocked,
            self.cancelled,
            self.timeouts,
            self.accepted,
            self.refused,
            self.unknown,
            self.session_lost,
            self.transient,
            self.unexpected,
            self.finished,
            self.cut_at_end,
            self.max_wait_queued_ms,
            self.max_wait_cas_ms,
        ]
    }

    fn values_mut(&mut self) -> [&mut u64; 15] {
        [
            &mut self.sessions,
            &mut self.acquired,
            &mut self.relocked,
            &mut self.cancelled,
            &mut self.timeouts,
            &mut self.accepted,
            &mut self.refused,
            &mut self.unknown,
            &mut self.session_lost,
            &mut self.transient,
            &mut self.unexpected,
            &mut self.finished,
            &mut self.cut_at_end,
            &mut self.max_wait_queued_ms,
            &mut self.max_wait_cas_ms,
        ]
    }

    fn add(&mut self, other: &Stats) {
        for ((a, b), name) in self.values_mut().into_iter().zip(other.values()).zip(Self::FIELDS) {
            *a = if name.starts_with("max_") { (*a).max(b) } else { *a + b };
        }
    }

    fn line(&self) -> String {
        Self::FIELDS.iter().zip(self.values()).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }

    fn parse(line: &str) -> (usize, Stats) {
        let mut worker = usize::MAX;
        let mut st = Stats::default();
        for (k, v) in line.split_whitespace().filter_map(|kv| kv.split_once('=')) {
            if k == "worker" {
                worker = v.parse().unwrap();
            } else if let Some(i) = Self::FIELDS.iter().position(|f| *f == k) {
                *st.values_mut()[i] = v.parse().unwrap();
            }
        }
        (worker, st)
    }

    /// Counts an error met outside a write; returns whether the session must be replaced.
    fn error(&mut self, e: &Error) -> bool {
        match e {
            Error::SessionLost { .. } | Error::LeaseNotFound { .. } => {
                self.session_lost += 1;
                true
            }
            Error::Timeout { .. } => {
                self.timeouts += 1;
                false
            }
            e if e.is_transient() => {
                self.transient += 1;
                false
            }
            other => {
                self.unexpected += 1;
                eprintln!("worker: unexpected error: {other}");
                true
            }
        }
    }
}

/// What a client contends for.
#[derive(Debug, Clone, Copy)]
enum Resource {
    Mutex(usize),
    Semaphore,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Mutex(i) => MUTEXES[i],
            Resource::Semaphore => SEMAPHORE,
        }
    }
}

/// A client's handle on its resource.
enum Target {
    Mutex(Mutex),
    Semaphore(Semaphore),
}

/// Something held.
enum Held {
    Mutex(MutexGuard),
    Permit(Permit),
}

impl Target {
    async fn lock(&self) -> leasehold::Result<Held> {
        match self {
            Target::Mutex(m) => m.lock().await.map(Held::Mutex),
            Target::Semaphore(s) => s.acquire().await.map(Held::Permit),
        }
    }

    async fn lock_timeout(&self, d: Duration) -> leasehold::Result<Held> {
        match self {
            Target::Mutex(m) => m.lock_timeout(d).await.map(Held::Mutex),
            Target::Semaphore(s) => s.acquire_timeout(d).await.map(Held::Permit),
        }
    }
}

impl Held {
    /// Releases and queues again in one transaction (`Mutex::relock`, `Semaphore::reacquire`).
    async fn again(&mut self, target: &Target) -> leasehold::Result<()> {
        match (self, target) {
            (Held::Mutex(g), Target::Mutex(m)) => m.relock(g).await,
            (Held::Permit(p), Target::Semaphore(s)) => s.reacquire(p).await,
            _ => unreachable!("a guard comes from its own target"),
        }
    }

    fn token(&self) -> u64 {
        match self {
            Held::Mutex(g) => g.fencing_token(),
            Held::Permit(p) => p.fencing_token(),
        }
    }

    async fn fenced(&self, writes: Vec<Write>) -> leasehold::Result<()> {
        match self {
            Held::Mutex(g) => g.fenced_write(writes).await,
            Held::Permit(p) => p.fenced_write(writes).await,
        }
    }

    async fn release(self) -> leasehold::Result<()> {
        match self {
            Held::Mutex(g) => g.unlock().await,
            Held::Permit(p) => p.release().await,
        }
    }
}

/// One client of a worker.
struct ClientRun {
    client: Client,
    worker: usize,
    index: usize,
    resource: Resource,
    strategy: Strategy,
    fenced: bool,
    end: tokio::time::Instant,
    rng: StdRng,
    seq: u64,
    st: Stats,
}

impl ClientRun {
    async fn run(mut self) -> Stats {
        let mut session: Option<Session> = None;
        while tokio::time::Instant::now() < self.end {
            let s = match &session {
                Some(s) if s.is_valid() => s.clone(),
                _ => {
                    if session.take().is_some_and(|old| old.is_lost()) {
                        self.st.session_lost += 1;
                    }
                    let open = self.client.session_builder().ttl(TTL).open();
                    match tokio::time::timeout_at(self.end, open).await {
                        Ok(Ok(s)) => {
                            self.st.sessions += 1;
                            session = Some(s.clone());
                            s
                        }
                        Ok(Err(e)) => {
                            self.st.error(&e);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                        Err(_) => break,
                    }
                }
            };
            if self.round(&s).await {
                session = None;
            }
        }
        if let Some(s) = session {
            let _ = tokio::time::timeout(OP_LIMIT, s.close()).await;
        }
        self.st.finished += 1;
        self.st
    }

    fn target(&self, s: &Session) -> Target {
        match self.resource {
            Resource::Mutex(i) => {
                let m = Mutex::new(s, MUTEXES[i]).unwrap().with_strategy(self.strategy);
                Target::Mutex(if i == 1 { m.with_lock_delay(LOCK_DELAY) } else { m })
            }
            Resource::Semaphore => {
                Target::Semaphore(Semaphore::new(s, SEMAPHORE, PERMITS).unwrap().with_strategy(self.strategy))
            }
        }
    }

    /// One acquisition and, if it succeeds, one hold. True if the session must be replaced.
    async fn round(&mut self, s: &Session) -> bool {
        let target = self.target(s);
        let outcome = match self.rng.random_range(0..10) {
            // Waits until admitted (how long is the suite's liveness figure); cut off when
            // the run is over.
            0..=5 => {
                let started = tokio::time::Instant::now();
                match tokio::time::timeout_at(self.end, target.lock()).await {
                    Ok(r) => {
                        let waited = started.elapsed().as_millis() as u64;
                        let max = match self.strategy {
                            Strategy::Optimistic => &mut self.st.max_wait_cas_ms,
                            _ => &mut self.st.max_wait_queued_ms,
                        };
                        *max = (*max).max(waited);
                        if waited > 10_000 {
                            eprintln!(
                                "worker {}: {} {:?} waited {waited} ms: {:?}",
                                self.worker,
                                self.resource.name(),
                                self.strategy,
                                r.as_ref().map(|h| h.token())
                            );
                        }
                        Some(r)
                    }
                    Err(_) => {
                        self.st.cut_at_end += 1;
                        eprintln!(
                            "worker {}: {} {:?} still waiting at the end, after {:?}",
                            self.worker,
                            self.resource.name(),
                            self.strategy,
                            started.elapsed()
                        );
                        return false;
                    }
                }
            }
            6 | 7 => Some(target.lock_timeout(Duration::from_millis(self.rng.random_range(50..500))).await),
            8 => {
                let polls = self.rng.random_range(0..40);
                let mut fut = Box::pin(target.lock());
                tokio::select! {
                    biased;
                    r = &mut fut => Some(r),
                    _ = yield_times(polls) => None,
                }
            }
            _ => {
                let after = Duration::from_millis(self.rng.random_range(0..80));
                tokio::select! {
                    r = target.lock() => Some(r),
                    _ = tokio::time::sleep(after) => None,
                }
            }
        };
        let mut held = match outcome {
            None => {
                self.st.cancelled += 1;
                return false;
            }
            Some(Err(e)) => return self.st.error(&e),
            Some(Ok(h)) => h,
        };
        self.st.acquired += 1;
        let name = self.resource.name();
        println!("HOLD {} {name} 1", self.worker);
        let mut replace = false;
        let mut rounds = 1 + u32::from(self.rng.random_range(0..3) == 0); // a third relock once
        while rounds > 0 {
            rounds -= 1;
            if self.write(&held, "enter").await {
                let hold = Duration::from_millis(self.rng.random_range(HOLD_MS));
                tokio::time::sleep(hold).await; // a SIGSTOP here is the pause fencing must survive
                self.write(&held, "exit").await;
            }
            if rounds == 0 {
                break;
            }
            // Release and queue again in one transaction; a relock cut off by the end of the
            // run (or failing) leaves the guard released, and the release below does nothing.
            match tokio::time::timeout_at(self.end, held.again(&target)).await {
                Ok(Ok(())) => {
                    self.st.acquired += 1;
                    self.st.relocked += 1;
                }
                Ok(Err(e)) => {
                    replace = self.st.error(&e);
                    break;
                }
                Err(_) => {
                    self.st.cut_at_end += 1;
                    break;
                }
            }
        }
        match tokio::time::timeout(OP_LIMIT, held.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => replace = self.st.error(&e),
            Err(_) => {
                self.st.unexpected += 1;
                eprintln!("worker {}: release of {name} hung", self.worker);
            }
        }
        println!("HOLD {} {name} 0", self.worker);
        replace || !s.is_valid()
    }

    /// One history entry, fenced (or not, in the control). False if it was refused.
    async fn write(&mut self, held: &Held, what: &str) -> bool {
        self.seq += 1;
        let key =
            format!("{HIST}{}/{:020}/{}/{}/{}", self.resource.name(), held.token(), self.worker, self.index, self.seq);
        let result = if self.fenced {
            held.fenced(vec![Write::Put { key, value: what.as_bytes().to_vec(), lease: None }]).await
        } else {
            // The control: a writer that trusts its lock instead of the fence.
            let backend = self.client.backend();
            backend.compare_and_swap(&key, None, what.as_bytes().to_vec(), None).await.map(|_| ())
        };
        match result {
            Ok(()) => {
                self.st.accepted += 1;
                true
            }
            Err(Error::NotHeld { .. }) => {
                self.st.refused += 1;
                false
            }
            Err(e) => {
                self.st.unknown += 1;
                if !e.is_transient() {
                    self.st.unexpected += 1;
                    eprintln!("worker {}: write failed: {e}", self.worker);
                }
                true
            }
        }
    }
}

async fn yield_times(n: usize) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// Worker mode: does nothing unless [`ENV_WORKER`] is set (then the parent started it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_worker() {
    let Ok(worker) = std::env::var(ENV_WORKER) else {
        return;
    };
    let worker: usize = worker.parse().unwrap();
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let endpoints: Vec<String> = env(ENV_ENDPOINTS).split(',').map(str::to_owned).collect();
    let run = Duration::from_millis(env(ENV_RUN_MS).parse().unwrap());
    let fenced = env(ENV_FENCED) == "1";
    let seed: u64 = env(ENV_SEED).parse().unwrap();
    let config = EtcdConfig::new(endpoints).request_timeout(REQUEST_TIMEOUT).connect_timeout(Duration::from_secs(10));
    let client = Client::etcd(config).await.expect("worker connects");
    let end = tokio::time::Instant::now() + run;
    let flip = |i: usize| if (worker + i) % 2 == 0 { Strategy::Pessimistic } else { Strategy::Optimistic };
    let plan = [
        (Resource::Mutex(0), flip(0)),
        (Resource::Mutex(1), flip(1)),
        (Resource::Semaphore, if worker % 3 == 2 { Strategy::Optimistic } else { Strategy::Pessimistic }),
    ];
    let mut tasks = Vec::new();
    for (index, (resource, strategy)) in plan.into_iter().enumerate() {
        let run = ClientRun {
            client: client.clone(),
            worker,
            index,
            resource,
            strategy,
            fenced,
            end,
            rng: StdRng::seed_from_u64(seed ^ ((worker as u64) << 8 | index as u64)),
            seq: 0,
            st: Stats::default(),
        };
        tasks.push(tokio::spawn(run.run()));
    }
    let mut total = Stats::default();
    for t in tasks {
        match t.await {
            Ok(st) => total.add(&st),
            Err(e) => eprintln!("worker {worker}: a client panicked: {e}"),
        }
    }
    println!("FAULTS-SUMMARY worker={worker} clients={} {}", plan.len(), total.line());
    assert_eq!(total.finished, plan.len() as u64, "every client finishes");
}

// ---- the checker ---------------------------------------------------------------------

/// Reads a recorded history and finds violations. Pure: the unit tests feed it by hand.
mod checker {
    use super::*;

    /// One accepted history entry.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Entry {
        /// The store revision that accepted it.
        pub rev: i64,
        /// The writer's fencing token.
        pub token: u64,
        /// The worker process that wrote it.
        pub worker: usize,
    }

    /// Entries under `<HIST><resource>/`, in store order.
    pub fn parse(resource: &str, kvs: &[KeyValue]) -> Vec<Entry> {
        let prefix = format!("{HIST}{resource}/");
        let mut entries: Vec<Entry> = kvs
            .iter()
            .map(|kv| {
                let rest = kv.key.strip_prefix(&prefix).unwrap_or_else(|| panic!("foreign key {}", kv.key));
                let parts: Vec<&str> = rest.split('/').collect();
                assert_eq!(parts.len(), 4, "malformed history key {}", kv.key);
                Entry { rev: kv.mod_revision, token: parts[0].parse().unwrap(), worker: parts[1].parse().unwrap() }
            })
            .collect();
        entries.sort_by_key(|e| e.rev);
        entries
    }

    /// What the checker found for one resource.
    #[derive(Debug, Default)]
    pub struct Report {
        /// Accepted entries.
        pub writes: usize,
        /// Distinct holders (tokens) that had writes accepted.
        pub holders: usize,
        /// Entries accepted with a token below one accepted before (exclusive resources).
        pub stale: Vec<String>,
        /// The most holders "in" at one revision.
        pub max_at_once: usize,
        /// Entries at whose revision more holders than the limit were in.
        pub over_limit: Vec<String>,
    }

    impl Report {
        pub fn violations(&self) -> usize {
            self.stale.len() + self.over_limit.len()
        }
    }

    /// Checks `entries` (store order) of a resource that admits `limit` holders at once;
    /// `exclusive` also demands non-decreasing tokens (a mutex).
    ///
    /// "At once": a holder (token) is in from the revision of its first accepted entry to
    /// that of its last, inclusive. With fenced writes that interval lies inside the time
    /// its key existed; a semaphore admitting more than `limit` would show as more than
    /// `limit` intervals covering one revision.
    pub fn check(entries: &[Entry], limit: usize, exclusive: bool) -> Report {
        let mut report = Report { writes: entries.len(), ..Report::default() };
        let mut span: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
        let mut highest = 0;
        for e in entries {
            if exclusive && e.token < highest {
                report.stale.push(format!(
                    "rev {}: token {} (worker {}) accepted after token {highest}",
                    e.rev, e.token, e.worker
                ));
            }
            highest = highest.max(e.token);
            let s = span.entry(e.token).or_insert((e.rev, e.rev));
            s.0 = s.0.min(e.rev);
            s.1 = s.1.max(e.rev);
        }
        report.holders = span.len();
        let mut firsts: Vec<i64> = span.values().map(|s| s.0).collect();
        let mut lasts: Vec<i64> = span.values().map(|s| s.1).collect();
        firsts.sort_unstable();
        lasts.sort_unstable();
        for e in entries {
            let started = firsts.partition_point(|&f| f <= e.rev);
            let ended = lasts.partition_point(|&l| l < e.rev);
            let inside = started - ended;
            report.max_at_once = report.max_at_once.max(inside);
            if inside > limit {
                report.over_limit.push(format!("rev {}: {inside} holders in (limit {limit})", e.rev));
            }
        }
        report
    }
}

// ---- the parent ----------------------------------------------------------------------

/// A fault the parent injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fault {
    /// SIGKILL of the raft leader, restart after [`MEMBER_DOWN`].
    KillLeader,
    /// SIGKILL of a follower, restart after [`MEMBER_DOWN`].
    KillFollower,
    /// SIGSTOP of the leader member for [`MEMBER_PAUSE`], then SIGCONT.
    PauseLeader,
    /// SIGSTOP of a worker process that holds something, for [`STOP_FOR`], then SIGCONT.
    StopWorkerHolding,
    /// The same, when no worker was seen holding within [`FIND_HOLDER`].
    StopWorkerIdle,
}

/// The worker processes, with what their output says; stopped ones are resumed and every
/// one is killed on drop (a failing test leaves nothing running).
struct Workers {
    children: Vec<Child>,
    holding: Arc<StdMutex<HashMap<usize, HashMap<String, bool>>>>,
    summaries: Arc<StdMutex<HashMap<usize, String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    fn spawn(n: usize, endpoints: &[String], run: Duration, fenced: bool, seed: u64) -> Self {
        let exe = std::env::current_exe().unwrap();
        let holding = Arc::new(StdMutex::new(HashMap::new()));
        let summaries = Arc::new(StdMutex::new(HashMap::new()));
        let mut children = Vec::new();
        let mut readers = Vec::new();
        for w in 0..n {
            let mut child = Command::new(&exe)
                .args(["--exact", "fault_worker", "--nocapture", "--test-threads=1"])
                .env(ENV_WORKER, w.to_string())
                .env(ENV_ENDPOINTS, endpoints.join(","))
                .env(ENV_RUN_MS, run.as_millis().to_string())
                .env(ENV_FENCED, if fenced { "1" } else { "0" })
                .env(ENV_SEED, seed.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let out = BufReader::new(child.stdout.take().unwrap());
            let (holding, summaries) = (holding.clone(), summaries.clone());
            readers.push(std::thread::spawn(move || {
                for line in out.lines().map_while(Result::ok) {
                    let mut parts = line.split_whitespace();
                    match parts.next() {
                        Some("HOLD") => {
                            let (_, name, on) = (parts.next(), parts.next().unwrap_or(""), parts.next() == Some("1"));
                            holding.lock().unwrap().entry(w).or_insert_with(HashMap::new).insert(name.to_owned(), on);
                        }
                        Some("FAULTS-SUMMARY") => {
                            summaries.lock().unwrap().insert(w, line.clone());
                        }
                        _ => {}
                    }
                }
            }));
            children.push(child);
        }
        Self { children, holding, summaries, readers }
    }

    fn pid(&self, w: usize) -> String {
        self.children[w].id().to_string()
    }

    /// A worker (picked at random) that holds something `wanted` accepts, if one is seen
    /// within `within` (looked at least once).
    fn holder(&self, wanted: impl Fn(&str) -> bool, within: Duration, rng: &mut StdRng) -> Option<usize> {
        let started = Instant::now();
        loop {
            let holding = self.holding.lock().unwrap();
            let mut found: Vec<usize> =
                holding.iter().filter(|(_, h)| h.iter().any(|(n, on)| *on && wanted(n))).map(|(w, _)| *w).collect();
            drop(holding);
            if !found.is_empty() {
                found.sort_unstable();
                return Some(found[rng.random_range(0..found.len())]);
            }
            if started.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, w: usize, sig: &str) {
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(self.pid(w)).status();
    }

    /// Waits for every worker (bounded) and returns each one's exit status.
    fn wait(&mut self, limit: Duration) -> Vec<std::process::ExitStatus> {
        let started = Instant::now();
        let mut statuses = vec![None; self.children.len()];
        while statuses.iter().any(Option::is_none) {
            for (i, c) in self.children.iter_mut().enumerate() {
                if statuses[i].is_none() {
                    statuses[i] = c.try_wait().unwrap();
                }
            }
            assert!(started.elapsed() < limit, "workers still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        statuses.into_iter().map(Option::unwrap).collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = Command::new("kill").arg("-CONT").arg(c.id().to_string()).stderr(Stdio::null()).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How a run is set up.
struct Plan {
    members: usize,
    workers: usize,
    run: Duration,
    fenced: bool,
    /// The faults, cycled until the run's quiet tail.
    faults: &'static [Fault],
}

/// What a run produced.
struct Outcome {
    reports: Vec<(&'static str, checker::Report)>,
    injected: BTreeMap<Fault, usize>,
    totals: Stats,
    /// Violations outside the per-resource reports (lost or phantom writes, leftovers…).
    other_violations: Vec<String>,
    leftover_cleared_after: Duration,
    runtime: Duration,
    text: String,
}

impl Outcome {
    fn violations(&self) -> usize {
        self.reports.iter().map(|(_, r)| r.violations()).sum::<usize>() + self.other_violations.len()
    }
}

fn elapsed(start: Instant) -> String {
    format!("{:6.1}s", start.elapsed().as_secs_f64())
}

fn run_plan(plan: Plan) -> Outcome {
    let started = Instant::now();
    let seed: u64 = std::env::var(ENV_SEED).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let mut etcd = EtcdCluster::start(plan.members, &[]);
    let endpoints = etcd.endpoints();
    eprintln!("[{}] {} members up; {} workers, seed {seed}", elapsed(started), plan.members, plan.workers);
    let mut workers = Workers::spawn(plan.workers, &endpoints, plan.run, plan.fenced, seed);
    let run_started = Instant::now();
    let mut injected: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut step = 0;
    // The longest a fault step takes (a member restart may take longer; then the tail is shorter).
    let step_max = CALM + FIND_HOLDER + STOP_FOR;
    while run_started.elapsed() + step_max + QUIET_TAIL < plan.run {
        std::thread::sleep(CALM);
        let fault = plan.faults[step % plan.faults.len()];
        step += 1;
        let done = match fault {
            Fault::KillLeader | Fault::KillFollower | Fault::PauseLeader => {
                let Some(leader) = etcd.leader() else {
                    eprintln!("[{}] no leader visible; skipping {fault:?}", elapsed(started));
                    continue;
                };
                let victim = if fault == Fault::KillFollower {
                    let others: Vec<usize> = (0..plan.members).filter(|&i| i != leader).collect();
                    others[rng.random_range(0..others.len())]
                } else {
                    leader
                };
                if fault == Fault::PauseLeader {
                    etcd.signal(victim, "STOP");
                    std::thread::sleep(MEMBER_PAUSE);
                    etcd.signal(victim, "CONT");
                } else {
                    etcd.kill(victim);
                    std::thread::sleep(MEMBER_DOWN);
                    etcd.restart(victim);
                }
                etcd.wait_healthy(Duration::from_secs(30));
                eprintln!("[{}] {fault:?}: member {victim} (leader was {leader})", elapsed(started));
                fault
            }
            Fault::StopWorkerHolding | Fault::StopWorkerIdle => {
                // Prefer a mutex holder: its lock will be taken by another worker meanwhile.
                let w = workers
                    .holder(|n| n.starts_with("fault-mx"), FIND_HOLDER, &mut rng)
                    .or_else(|| workers.holder(|_| true, Duration::ZERO, &mut rng));
                let (w, kind) = match w {
                    Some(w) => (w, Fault::StopWorkerHolding),
                    None => (rng.random_range(0..plan.workers), Fault::StopWorkerIdle),
                };
                workers.signal(w, "STOP");
                std::thread::sleep(STOP_FOR);
                workers.signal(w, "CONT");
                eprintln!("[{}] {kind:?}: worker {w} for {STOP_FOR:?}", elapsed(started));
                kind
            }
        };
        *injected.entry(done).or_default() += 1;
    }
    let statuses = workers.wait(plan.run + Duration::from_secs(90));
    eprintln!("[{}] workers exited", elapsed(started));

    let mut other_violations = Vec::new();
    let summaries = workers.summaries.lock().unwrap().clone();
    let mut totals = Stats::default();
    let mut per_worker: HashMap<usize, Stats> = HashMap::new();
    for (w, status) in statuses.iter().enumerate() {
        assert!(status.success(), "worker {w} failed: {status}");
        let line = summaries.get(&w).unwrap_or_else(|| panic!("worker {w} printed no summary"));
        let (id, st) = Stats::parse(line);
        assert_eq!(id, w);
        assert_eq!(st.finished, 3, "worker {w}: a client did not finish: {line}");
        totals.add(&st);
        per_worker.insert(w, st);
    }

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (reports, leftover_cleared_after) = rt.block_on(async {
        let client = Client::etcd(EtcdConfig::new(endpoints.clone())).await.unwrap();
        let backend = client.backend();
        // No key under a lock prefix within one TTL (plus slack) after the workers exit.
        let exited = Instant::now();
        let prefixes: Vec<String> = MUTEXES.iter().chain([&SEMAPHORE]).map(|n| client.prefix_of(n).unwrap()).collect();
        let mut left = Vec::new();
        while exited.elapsed() < TTL + Duration::from_secs(3) {
            left.clear();
            for p in &prefixes {
                left.extend(backend.range_prefix(p, 0).await.unwrap().0.into_iter().map(|kv| kv.key));
            }
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !left.is_empty() {
            other_violations.push(format!("keys left under the lock prefixes: {left:?}"));
        }
        let cleared = exited.elapsed();
        // The history.
        let mut reports = Vec::new();
        let mut stored_per_worker: HashMap<usize, u64> = HashMap::new();
        for (name, limit, exclusive) in
            [(MUTEXES[0], 1, true), (MUTEXES[1], 1, true), (SEMAPHORE, PERMITS as usize, false)]
        {
            let (kvs, _) = backend.range_prefix(&format!("{HIST}{name}/"), 0).await.unwrap();
            let entries = checker::parse(name, &kvs);
            for e in &entries {
                *stored_per_worker.entry(e.worker).or_default() += 1;
            }
            reports.push((name, checker::check(&entries, limit, exclusive)));
        }
        // Every acknowledged write is stored; nothing refused is.
        for (w, st) in &per_worker {
            let stored = stored_per_worker.get(w).copied().unwrap_or(0);
            if stored < st.accepted {
                other_violations.push(format!("worker {w}: {} writes acknowledged, {stored} stored", st.accepted));
            }
            if stored > st.accepted + st.unknown {
                other_violations.push(format!(
                    "worker {w}: {stored} stored, but only {} acknowledged + {} unknown",
                    st.accepted, st.unknown
                ));
            }
        }
        (reports, cleared)
    });
    drop(etcd);
    let mut outcome = Outcome {
        reports,
        injected,
        totals,
        other_violations,
        leftover_cleared_after,
        runtime: started.elapsed(),
        text: String::new(),
    };
    outcome.text = render(&outcome, &plan, seed);
    outcome
}

fn render(o: &Outcome, plan: &Plan, seed: u64) -> String {
    let mut t = String::new();
    let fenced = if plan.fenced { "fenced" } else { "UNFENCED (control)" };
    writeln!(t, "fault suite: {} members, {} workers x 3 clients, {fenced}, seed {seed}", plan.members, plan.workers)
        .unwrap();
    writeln!(t, "  runtime {:.1} s (workers ran {:.0} s)", o.runtime.as_secs_f64(), plan.run.as_secs_f64()).unwrap();
    let st = &o.totals;
    writeln!(
        t,
        "  operations: {} acquisitions ({} by relock/reacquire), {} writes accepted, {} refused (stale), \
         {} unknown outcome, {} sessions",
        st.acquired, st.relocked, st.accepted, st.refused, st.unknown, st.sessions
    )
    .unwrap();
    writeln!(
        t,
        "  client-side: {} cancelled acquisitions, {} timeouts, {} sessions lost, {} transient errors, {} unexpected",
        st.cancelled, st.timeouts, st.session_lost, st.transient, st.unexpected
    )
    .unwrap();
    writeln!(
        t,
        "  liveness: longest wait to be admitted {:.1} s queued (fair), {:.1} s optimistic (not fair); \
         {} waits still open when the run ended",
        st.max_wait_queued_ms as f64 / 1000.0,
        st.max_wait_cas_ms as f64 / 1000.0,
        st.cut_at_end
    )
    .unwrap();
    let faults: Vec<String> = o.injected.iter().map(|(f, n)| format!("{f:?}={n}")).collect();
    writeln!(t, "  faults injected: {}", faults.join(" ")).unwrap();
    for (name, r) in &o.reports {
        writeln!(
            t,
            "  {name}: {} writes by {} holders, max {} at once, {} stale accepted, {} over the limit",
            r.writes,
            r.holders,
            r.max_at_once,
            r.stale.len(),
            r.over_limit.len()
        )
        .unwrap();
        for v in r.stale.iter().chain(&r.over_limit).take(5) {
            writeln!(t, "    violation: {v}").unwrap();
        }
    }
    for v in &o.other_violations {
        writeln!(t, "  violation: {v}").unwrap();
    }
    writeln!(t, "  lock prefixes empty {:.1} s after the workers exited", o.leftover_cleared_after.as_secs_f64())
        .unwrap();
    writeln!(t, "  VIOLATIONS: {}", o.violations()).unwrap();
    t
}

fn publish(name: &str, text: &str) {
    println!("{text}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.txt"));
    std::fs::write(&path, text).unwrap();
}

/// The suite: a 3-member cluster, every fault kind, fenced writes. Zero violations, and
/// the faults really happened and really hit holders.
#[test]
fn fault_suite_on_three_members() {
    const FAULTS: &[Fault] = &[
        Fault::StopWorkerHolding,
        Fault::KillLeader,
        Fault::StopWorkerHolding,
        Fault::KillFollower,
        Fault::PauseLeader,
    ];
    let o = run_plan(Plan { members: 3, workers: WORKERS, run: RUN, fenced: true, faults: FAULTS });
    publish("fault-suite", &o.text);
    assert_eq!(o.violations(), 0, "{}", o.text);
    let st = &o.totals;
    assert_eq!(st.unexpected, 0, "unexpected errors:\n{}", o.text);
    assert!(o.injected.get(&Fault::KillLeader).is_some_and(|&n| n > 0), "no leader was killed\n{}", o.text);
    assert!(o.injected.get(&Fault::StopWorkerHolding).is_some_and(|&n| n > 0), "no holder was paused\n{}", o.text);
    assert!(st.refused > 0, "no stale write was attempted, so the fence was never tested\n{}", o.text);
    assert!(st.cancelled > 0 && st.session_lost > 0, "{}", o.text);
    assert!(st.relocked > 0, "no relock or reacquire happened\n{}", o.text);
    for (name, r) in &o.reports {
        assert!(r.holders >= 10, "{name}: too little happened\n{}", o.text);
    }
    let sem = &o.reports.iter().find(|(n, _)| *n == SEMAPHORE).unwrap().1;
    assert!(sem.max_at_once >= 2, "the semaphore never had two holders: the check saw nothing\n{}", o.text);
    // The fair queue bounds every wait; the optimistic strategy keeps no place, and under
    // this much contention from queued waiters it can starve (documented, reported only).
    assert!(
        Duration::from_millis(st.max_wait_queued_ms) < LIVENESS,
        "a queued acquisition waited longer than {LIVENESS:?} (a stuck waiter?)\n{}",
        o.text
    );
}

/// The control: the same workers, writing **without** the fence, and a worker paused while
/// it holds a mutex (twice). Its late writes land after the next holder's, and the checker must
/// say so. (If this passes with 0 violations, the checker is blind.)
#[test]
fn fault_suite_control_unfenced_writes_are_caught() {
    const FAULTS: &[Fault] = &[Fault::StopWorkerHolding];
    let o = run_plan(Plan { members: 1, workers: 2, run: Duration::from_secs(30), fenced: false, faults: FAULTS });
    publish("fault-suite-control", &o.text);
    assert!(o.injected.get(&Fault::StopWorkerHolding).is_some_and(|&n| n > 0), "{}", o.text);
    let stale: usize = o.reports.iter().map(|(_, r)| r.stale.len()).sum();
    assert!(stale > 0, "unfenced late writes were not caught:\n{}", o.text);
}

// ---- the checker on hand-made histories ----------------------------------------------

fn entries(list: &[(i64, u64)]) -> Vec<checker::Entry> {
    list.iter().map(|&(rev, token)| checker::Entry { rev, token, worker: 0 }).collect()
}

#[test]
fn checker_accepts_a_clean_mutex_history() {
    // Three holders one after another (tokens 10, 14, 20), two writes each.
    let r = checker::check(&entries(&[(11, 10), (12, 10), (15, 14), (16, 14), (21, 20), (22, 20)]), 1, true);
    assert_eq!((r.violations(), r.holders, r.max_at_once), (0, 3, 1));
}

#[test]
fn checker_catches_a_stale_write() {
    // Holder 10 paused; holder 14 wrote; then 10's late write was accepted.
    let r = checker::check(&entries(&[(11, 10), (15, 14), (16, 14), (17, 10)]), 1, true);
    assert_eq!(r.stale.len(), 1, "{r:?}");
    assert!(r.stale[0].contains("token 10") && r.stale[0].contains("after token 14"));
    assert!(!r.over_limit.is_empty(), "10 is in from 11 to 17, overlapping 14: {r:?}");
}

#[test]
fn checker_catches_two_holders_at_once_even_with_increasing_tokens() {
    // 10 writes at 11 and 13; 12 writes at 12 (tokens never go down, but the holds overlap).
    let r = checker::check(&entries(&[(11, 10), (12, 12), (13, 12), (14, 10)]), 1, true);
    assert!(!r.over_limit.is_empty(), "{r:?}");
}

#[test]
fn checker_counts_semaphore_holders_at_once() {
    // Limit 2: holders 5 and 6 overlap (fine); 7 enters while both are in (not fine).
    let ok = checker::check(&entries(&[(8, 5), (9, 6), (10, 5), (11, 6), (12, 7), (13, 7)]), 2, false);
    assert_eq!((ok.violations(), ok.max_at_once), (0, 2));
    let bad = checker::check(&entries(&[(8, 5), (9, 6), (10, 7), (11, 5), (12, 6), (13, 7)]), 2, false);
    assert_eq!(bad.max_at_once, 3);
    assert!(!bad.over_limit.is_empty());
    assert!(bad.stale.is_empty(), "tokens are not ordered for a semaphore");
}

#[test]
fn checker_parses_history_keys_in_store_order() {
    let kv = |key: &str, rev| KeyValue {
        key: key.into(),
        value: b"enter".to_vec(),
        create_revision: rev,
        mod_revision: rev,
        lease: 0,
    };
    let kvs = [kv(&format!("{HIST}m/{:020}/3/0/2", 14), 16), kv(&format!("{HIST}m/{:020}/1/0/1", 10), 11)];
    let parsed = checker::parse("m", &kvs);
    assert_eq!(
        parsed,
        vec![checker::Entry { rev: 11, token: 10, worker: 1 }, checker::Entry { rev: 16, token: 14, worker: 3 },]
    );
    let (w, st) = Stats::parse("FAULTS-SUMMARY worker=4 clients=3 acquired=7 refused=2 finished=3");
    assert_eq!((w, st.acquired, st.refused, st.finished), (4, 7, 2, 3));
}
