//! One simulated run: a store, a few clients with faults of their own, their workers, a
//! driver that injects whole-process pauses, network stalls, partial outages, a crash and a
//! restart, and at the end the liveness and quiescence checks.
//!
//! Everything runs on one thread on a tokio runtime with paused time: time moves only when
//! every task waits, so a run is a function of its seed (the faults, the workload and
//! leasehold's own jitter are all drawn from generators seeded with it).

use crate::check::{count, Checker, Kind, Name, COUNTER};
use crate::faulty::{Fault, Faults, Faulty, Op, Random};
use crate::workload::{Stats, Worker, PERMITS, WEIGHTED_PERMITS};
use leasehold::backend::Backend;
use leasehold::{Client, MemoryBackend, Session};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long the workload runs, in simulated time.
const RUN: Duration = Duration::from_secs(20);
/// After the faults are healed, every waiter must be done within this.
const SETTLE: Duration = Duration::from_secs(120);

/// What one run found.
#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<String>,
    /// Store changes the history checker saw.
    pub events: u64,
    /// A digest of the whole history (the same for every run of one seed).
    pub digest: u64,
    /// Operations the workers started.
    pub ops: u64,
    /// Acquisitions that held, and those in the run's second half.
    pub held: u64,
    pub held_late: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
}

/// Panics of the run in progress (any task's: a worker's, or one of the library's own
/// background tasks), recorded by the hook [`catch_panics`] installs.
static PANICS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records every panic for the run in progress, which counts each as a violation. A task
/// that panics only ends its task: tokio keeps the panic in the task's `JoinHandle` (and
/// for a task nobody joins, drops it), so a debug assertion of the library failing in a
/// worker or a background task used to leave the run "free of violations" with one worker
/// fewer. The default hook still prints it.
pub fn catch_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        PANICS.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{what}{place}"));
        default(info);
    }));
}

/// Runs the world of `seed` on a fresh single-threaded runtime with paused time.
pub fn run(seed: u64) -> Report {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime");
    leasehold::deterministic_jitter(Some(seed));
    PANICS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let mut report = rt.block_on(World::run(seed));
    // Tasks still alive end with the runtime (a crashed client's, say): their drops run now.
    drop(rt);
    leasehold::deterministic_jitter(None);
    for panic in PANICS.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        report.violations.push(format!("a task panicked: {panic}"));
    }
    report
}

struct Sim {
    id: usize,
    faults: Faults,
    client: Client,
    ttl: Duration,
    session: Option<Session>,
    workers: Vec<JoinHandle<()>>,
    crashed: bool,
    /// How many times it restarted (its workers are named `c<id>'…`).
    restarts: usize,
    /// Sessions its workers opened after theirs was lost (`Worker::run`).
    opened: Arc<std::sync::Mutex<Vec<Session>>>,
}

struct World {
    rng: StdRng,
    store: MemoryBackend,
    checker: Checker,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    sims: Vec<Sim>,
    faults: BTreeMap<&'static str, u64>,
    seed: u64,
}

fn names() -> Vec<Name> {
    let name =
        |name: &'static str, writes| Name { name, prefix: format!("{name}/"), data: format!("data/{name}"), writes };
    vec![
        name("m0", Kind::First),
        name("m1", Kind::First),
        name("s", Kind::AmongFirst(PERMITS)),
        name("w", Kind::Weighted(WEIGHTED_PERMITS.into())),
        name("rw", Kind::Writer),
        name("e", Kind::First),
    ]
}

/// A client's random faults: a third of the clients have none.
fn profile(rng: &mut StdRng, seed: u64) -> Option<Random> {
    if rng.random_bool(1.0 / 3.0) {
        return None;
    }
    Some(Random {
        seed,
        delay: rng.random_range(0.0..0.2),
        in_flight: rng.random_range(0.0..0.05),
        late: rng.random_range(0.0..0.02),
        fail_before: rng.random_range(0.0..0.05),
        lose_answer: rng.random_range(0.0..0.04),
        delay_answer: rng.random_range(0.0..0.2),
        break_watch: rng.random_range(0.0..0.02),
        max_delay: Duration::from_millis(rng.random_range(20..1500)),
    })
}

impl World {
    async fn run(seed: u64) -> Report {
        let store = MemoryBackend::new();
        let checker = Checker::new(store.clone(), names());
        let mut world = World {
            rng: StdRng::seed_from_u64(seed),
            store: store.clone(),
            checker: checker.clone(),
            stop: Arc::default(),
            stats: Arc::default(),
            sims: Vec::new(),
            faults: BTreeMap::new(),
            seed,
        };
        let mut history = store.watch_prefix("").await.expect("the history watch");
        let recorder = tokio::spawn(async move {
            while let Ok(batch) = history.next().await {
                checker.apply(batch);
            }
        });
        for id in 0..world.rng.random_range(3..=5) {
            world.add_client(id).await;
        }
        world.drive().await;
        world.stop.store(true, Ordering::Relaxed);
        for sim in world.sims.iter().filter(|sim| !sim.crashed) {
            // A crashed client stays cut off: its tasks that still run (the forgotten
            // session's renewals and cleanups) stand for a process that is gone.
            sim.faults.heal();
        }
        world.finish().await;
        recorder.abort();
        let mut report = Report {
            violations: world.checker.violations(),
            events: world.checker.events(),
            digest: world.checker.digest(),
            ops: world.stats.ops.load(Ordering::Relaxed),
            held: world.stats.held.load(Ordering::Relaxed),
            held_late: world.stats.held_late.load(Ordering::Relaxed),
            faults: world.faults,
        };
        for sim in &world.sims {
            for (kind, n) in sim.faults.injected() {
                *report.faults.entry(kind).or_default() += n;
            }
        }
        report
    }

    async fn add_client(&mut self, id: usize) {
        let faults = Faults::new();
        faults.set_random(profile(&mut self.rng, self.seed.wrapping_mul(31).wrapping_add(id as u64)));
        let client = Client::new(Faulty::new(Arc::new(self.store.clone()), faults.clone()));
        let ttl = Duration::from_secs([2, 3, 5][self.rng.random_range(0..3)]);
        let mut sim = Sim {
            id,
            faults,
            client,
            ttl,
            session: None,
            workers: Vec::new(),
            crashed: false,
            restarts: 0,
            opened: Arc::default(),
        };
        for _ in 0..20 {
            match sim.client.session_builder().ttl(ttl).open().await {
                Ok(session) => {
                    sim.session = Some(session);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        self.spawn_workers(&mut sim);
        self.sims.push(sim);
    }

    fn spawn_workers(&mut self, sim: &mut Sim) {
        let Some(session) = &sim.session else { return };
        for w in 0..self.rng.random_range(2..=3) {
            let rng = StdRng::seed_from_u64(self.rng.random());
            let who = format!("c{}{}.w{w}", sim.id, "'".repeat(sim.restarts));
            let (checker, stop, stats, opened) =
                (self.checker.clone(), self.stop.clone(), self.stats.clone(), sim.opened.clone());
            let worker = Worker::new(who, session.clone(), checker, rng, stop, stats, sim.ttl, opened);
            sim.workers.push(tokio::spawn(worker.run()));
        }
    }

    fn count(&mut self, kind: &'static str, client: usize) {
        *self.faults.entry(kind).or_default() += 1;
        if self.checker.trace {
            println!("{:>10.3} driver: {kind} of c{client}", crate::check::now());
        }
    }

    /// Injects the world's faults while the workload runs.
    async fn drive(&mut self) {
        let end = Instant::now() + RUN;
        let half = Instant::now() + RUN / 2;
        let (mut crashed, mut restarted) = (false, false);
        while Instant::now() < end {
            if Instant::now() >= half {
                self.stats.late.store(true, Ordering::Relaxed);
            }
            let gap = Duration::from_millis(self.rng.random_range(200..3000));
            tokio::time::sleep(gap).await;
            let i = self.rng.random_range(0..self.sims.len());
            let ttl = self.sims[i].ttl;
            match self.rng.random_range(0..100) {
                // The whole process stops (SIGSTOP, a VM pause): no task runs while the
                // clock moves; the store's leases expire meanwhile.
                0..12 => {
                    self.count("pause", i);
                    let d = ttl.mul_f64(self.rng.random_range(0.2..2.5));
                    tokio::time::advance(d).await;
                }
                // One client's network stalls: its requests and answers wait.
                12..30 => {
                    self.count("stall", i);
                    let d = ttl.mul_f64(self.rng.random_range(0.1..1.5));
                    self.sims[i].faults.stall_until(Instant::now() + d);
                }
                // One kind of call fails for a while (renewals still work).
                30..45 => {
                    self.count("outage", i);
                    let op = [Op::Create, Op::WriteIf, Op::DeleteIfCreated, Op::Get][self.rng.random_range(0..4)];
                    let d = Duration::from_millis(self.rng.random_range(500..12_000));
                    let faults = self.sims[i].faults.clone();
                    faults.inject(op, None, Fault::FailBefore, None);
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        faults.clear(op);
                    });
                }
                45..50 if !crashed => {
                    crashed = true;
                    self.count("crash", i);
                    self.crash(i);
                }
                50..57 if !restarted => {
                    restarted = true;
                    self.count("restart", i);
                    self.restart(i).await;
                }
                _ => {}
            }
        }
    }

    /// The client dies: its tasks stop at once and it never reaches the store again.
    fn crash(&mut self, i: usize) {
        let sim = &mut self.sims[i];
        sim.crashed = true;
        sim.faults.stall_until(Instant::now() + Duration::from_secs(1_000_000));
        for w in sim.workers.drain(..) {
            w.abort();
        }
        if let Some(session) = sim.session.take() {
            std::mem::forget(session); // no revoke: a crashed process revokes nothing
        }
        for session in sim.opened.lock().unwrap().drain(..) {
            std::mem::forget(session);
        }
    }

    /// The client restarts and hands its locks to its successor: the old process's tasks
    /// stop, it detaches, and a new session re-attaches the lease, releasing its leftovers
    /// while new workers already acquire.
    async fn restart(&mut self, i: usize) {
        let sim = &mut self.sims[i];
        if sim.crashed {
            return;
        }
        for w in sim.workers.drain(..) {
            w.abort();
        }
        let Some(old) = sim.session.take() else { return };
        // None: lost, and its keep-alive began to revoke the lease: nothing to hand on, the
        // new process starts afresh.
        let lease = old.detach().ok();
        // The old process's other sessions end with it, unrevoked: left to expire.
        for session in sim.opened.lock().unwrap().drain(..) {
            let _ = session.detach();
        }
        let mut sim = self.sims.remove(i);
        sim.restarts += 1;
        let builder = sim.client.session_builder().ttl(sim.ttl);
        let opened = match lease {
            Some(lease) => builder.attach(lease).open().await,
            None => builder.open().await,
        };
        match opened {
            Ok(session) => {
                if lease.is_some() {
                    let s = session.clone();
                    sim.workers.push(tokio::spawn(async move {
                        let _ = s.release_leftovers().await;
                    }));
                }
                sim.session = Some(session);
                self.spawn_workers(&mut sim);
            }
            Err(_) => sim.crashed = true, // the lease expired meanwhile: the process is gone
        }
        self.sims.insert(i, sim);
    }

    /// After the faults are healed: every worker ends, every background delete settles,
    /// no key stays under a live lease, and the counter lost no acknowledged update.
    async fn finish(&mut self) {
        let deadline = Instant::now() + SETTLE;
        let mut live: Vec<(usize, Session)> = Vec::new();
        for sim in &mut self.sims {
            for (w, worker) in sim.workers.drain(..).enumerate() {
                if tokio::time::timeout_at(deadline, worker).await.is_err() {
                    self.checker.violation(format!(
                        "c{} task {w} still waits {SETTLE:?} after every fault healed (a waiter never admitted)",
                        sim.id
                    ));
                }
            }
            if let Some(session) = sim.session.take() {
                live.push((sim.id, session));
            }
            if !sim.crashed {
                live.extend(sim.opened.lock().unwrap().drain(..).map(|s| (sim.id, s)));
            }
        }
        for (id, session) in &live {
            if tokio::time::timeout(SETTLE, session.settle()).await.is_err() {
                self.checker.violation(format!("c{id}: background deletes never settled"));
            }
        }
        // Crashed and detached leases expire meanwhile.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let (keys, rev) = self.store.snapshot("");
        for kv in keys.iter().filter(|kv| kv.lease != 0) {
            // The session's fence key is no lock, permit or place (`Session::fence_key`).
            let owner = live.iter().find(|(_, s)| s.lease_id() == kv.lease && s.is_valid() && kv.key != s.fence_key());
            if let Some((id, _)) = owner {
                self.checker.violation(format!(
                    "c{id}: key {} (token {}) left under its live lease at revision {rev}, held by nothing",
                    kv.key, kv.create_revision
                ));
            }
        }
        // Each acknowledged increment was written, once (the history checker saw to that),
        // at the revision its caller was told. Counting alone missed a lost acknowledged
        // increment beside one that landed after its caller gave up.
        for &(id, revision) in self.stats.acknowledged.lock().unwrap().iter() {
            match self.checker.increment_written(id) {
                Some(written) if written == revision => {}
                Some(written) => self.checker.violation(format!(
                    "register: increment {id} acknowledged at revision {revision} but written at {written}"
                )),
                None => self.checker.violation(format!(
                    "register: increment {id} acknowledged (revision {revision}) but never written (a lost update)"
                )),
            }
        }
        let value = self.store.snapshot(COUNTER).0.into_iter().find(|kv| kv.key == COUNTER);
        let total = value.map_or(Some(0), |kv| count(&kv.value));
        let (acked, started) = (self.stats.acked.load(Ordering::Relaxed), self.stats.started.load(Ordering::Relaxed));
        let written = self.checker.increments();
        if total != Some(written) || written < acked || written > started {
            self.checker.violation(format!(
                "register: count {total:?} stored after {written} writes of {started} increments started, {acked} acknowledged"
            ));
        }
        for (_, session) in live {
            let _ = session.close().await;
        }
    }
}
