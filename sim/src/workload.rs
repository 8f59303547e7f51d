//! The workload: each worker task of a client runs random operations of every recipe and
//! strategy until the world says stop — acquire (wait, try, timeout, or a future dropped at a
//! random moment), hold (belief checks and fenced writes), end (release, a release whose
//! future is dropped, a dropped guard, relock/reacquire), and register updates.
//!
//! Everything random comes from the worker's own generator, seeded from the run's seed.

use crate::check::{Checker, Kind, Name};
use leasehold::{
    Election, Leadership, Mutex, MutexGuard, Permit, ReadGuard, Register, RwLock, Semaphore, Session, Strategy,
    WriteGuard,
};
use rand::rngs::StdRng;
use rand::Rng;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The semaphore's permit count.
pub const PERMITS: usize = 2;
/// The weighted semaphore's permit count; its acquisitions take 1 to this many permits.
pub const WEIGHTED_PERMITS: u32 = 3;

/// What the workers of a run count.
#[derive(Debug, Default)]
pub struct Stats {
    pub ops: AtomicU64,
    /// Register increments started (a worker aborted by a crash may have had one in flight).
    pub started: AtomicU64,
    /// Register increments acknowledged as written.
    pub acked: AtomicU64,
    /// Acquisitions that held (a guard, a permit, a leadership), and those of them in the
    /// run's second half (after [`late`](Self::late) was set): a run whose clients all lost
    /// their sessions early would go on "running" failed calls and check little.
    pub held: AtomicU64,
    pub held_late: AtomicU64,
    pub late: AtomicBool,
    /// The next increment's number (each increment writes its own, see [`Worker::register`]).
    pub next_increment: AtomicU64,
    /// The acknowledged increments: their numbers and the revisions their writes were
    /// reported at (the world checks each against the store's history).
    pub acknowledged: std::sync::Mutex<Vec<(u64, i64)>>,
}

/// One worker task's context.
pub struct Worker {
    pub who: String,
    pub session: Session,
    pub checker: Checker,
    pub rng: StdRng,
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
    /// A register handle kept across updates (its queue place may be kept between them).
    register: Option<Register>,
    /// The session's TTL, for a new session when it is lost.
    ttl: Duration,
    /// Where the sessions this worker opens go, for the world's checks (its client's).
    opened: Arc<std::sync::Mutex<Vec<Session>>>,
}

/// Something held, of any recipe.
enum Held {
    Mutex(MutexGuard),
    Permit(Permit),
    /// A permit of the weighted semaphore (`w`).
    Weighted(Permit),
    Read(ReadGuard),
    Write(WriteGuard),
    Leader(Leadership),
}

impl Held {
    fn is_valid(&self) -> bool {
        match self {
            Held::Mutex(g) => g.is_valid(),
            Held::Permit(g) | Held::Weighted(g) => g.is_valid(),
            Held::Read(g) => g.is_valid(),
            Held::Write(g) => g.is_valid(),
            Held::Leader(g) => g.is_valid(),
        }
    }

    fn key(&self) -> &str {
        match self {
            Held::Mutex(g) => g.key(),
            Held::Permit(g) | Held::Weighted(g) => g.key(),
            Held::Read(g) => g.key(),
            Held::Write(g) => g.key(),
            Held::Leader(g) => g.key(),
        }
    }

    fn token(&self) -> u64 {
        match self {
            Held::Mutex(g) => g.fencing_token(),
            Held::Permit(g) | Held::Weighted(g) => g.fencing_token(),
            Held::Read(g) => g.fencing_token(),
            Held::Write(g) => g.fencing_token(),
            Held::Leader(g) => g.fencing_token(),
        }
    }

    /// The admission rule the store must show for this guard.
    fn kind(&self) -> Kind {
        match self {
            Held::Mutex(_) | Held::Leader(_) => Kind::First,
            Held::Permit(_) => Kind::AmongFirst(PERMITS),
            Held::Weighted(_) => Kind::Weighted(WEIGHTED_PERMITS.into()),
            Held::Read(_) => Kind::Reader,
            Held::Write(_) => Kind::Writer,
        }
    }

    async fn fenced_put(&self, key: &str) {
        let value = self.token().to_string();
        let _ = match self {
            Held::Mutex(g) => g.fenced_put(key, value).await,
            Held::Permit(g) | Held::Weighted(g) => g.fenced_put(key, value).await,
            Held::Write(g) => g.fenced_put(key, value).await,
            Held::Leader(g) => g.fenced_put(key, value).await,
            Held::Read(_) => Ok(()),
        };
    }

    async fn release(self) {
        let _ = match self {
            Held::Mutex(g) => g.unlock().await,
            Held::Permit(g) | Held::Weighted(g) => g.release().await,
            Held::Read(g) => g.unlock().await,
            Held::Write(g) => g.unlock().await,
            Held::Leader(g) => g.resign().await,
        };
    }
}

fn strategy(rng: &mut StdRng) -> Strategy {
    [Strategy::Pessimistic, Strategy::Optimistic, Strategy::Adaptive][rng.random_range(0..3)]
}

fn ms(rng: &mut StdRng, max: u64) -> Duration {
    Duration::from_millis(rng.random_range(0..=max))
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        who: String,
        session: Session,
        checker: Checker,
        rng: StdRng,
        stop: Arc<AtomicBool>,
        stats: Arc<Stats>,
        ttl: Duration,
        opened: Arc<std::sync::Mutex<Vec<Session>>>,
    ) -> Self {
        Self { who, session, checker, rng, stop, stats, register: None, ttl, opened }
    }

    /// Runs operations until told to stop. A worker whose session is lost opens a new one
    /// on its client, as a service does: without it, most runs lost every session to a
    /// pause or a stall early and then only made failed calls (200 seeds: 74 held nothing
    /// in the run's second half).
    pub async fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            if !self.session.is_valid() {
                if let Ok(session) = self.session.client().session_builder().ttl(self.ttl).open().await {
                    self.trace(format_args!("opened session {:x} (the last one was lost)", session.lease_id()));
                    self.opened.lock().unwrap().push(session.clone());
                    self.session = session;
                    self.register = None;
                }
            }
            self.stats.ops.fetch_add(1, Ordering::Relaxed);
            let op = self.rng.random_range(0..100);
            if self.checker.trace {
                println!(
                    "{:>10.3} {} op {op} (session {:x} valid {})",
                    crate::check::now(),
                    self.who,
                    self.session.lease_id(),
                    self.session.is_valid()
                );
            }
            match op {
                0..30 => self.mutex().await,
                30..45 => self.semaphore().await,
                45..60 => self.rwlock().await,
                60..72 => self.election().await,
                72..95 => self.register().await,
                _ => self.weighted().await,
            }
            tokio::time::sleep(ms(&mut self.rng, 50)).await;
        }
    }

    /// Waits for `acquire` the way the dice say: in full, or dropped after a random time.
    async fn acquire<T>(&mut self, acquire: impl Future<Output = leasehold::Result<T>>) -> Option<T> {
        if self.rng.random_bool(0.2) {
            let patience = ms(&mut self.rng, 300);
            tokio::time::timeout(patience, acquire).await.ok()?.ok()
        } else {
            acquire.await.ok()
        }
    }

    fn trace(&self, what: std::fmt::Arguments<'_>) {
        if self.checker.trace {
            println!("{:>10.3} {} {what}", crate::check::now(), self.who);
        }
    }

    /// Checks with the store that `held` holds, if it says so.
    fn check(&self, name: &Name, held: &Held) {
        if held.is_valid() {
            self.checker.believes(&self.who, name, held.kind(), held.key(), held.token());
        }
    }

    /// Holds for a while: belief checks and fenced writes.
    async fn hold(&mut self, name: &Name, held: &Held) {
        self.stats.held.fetch_add(1, Ordering::Relaxed);
        if self.stats.late.load(Ordering::Relaxed) {
            self.stats.held_late.fetch_add(1, Ordering::Relaxed);
        }
        self.trace(format_args!("holds {} with {}@{}", name.name, held.key(), held.token()));
        for _ in 0..self.rng.random_range(1..=4) {
            self.check(name, held);
            if self.rng.random_bool(0.7) {
                held.fenced_put(&name.data).await;
            }
            self.check(name, held);
            tokio::time::sleep(ms(&mut self.rng, 400)).await;
        }
        self.check(name, held);
    }

    /// Ends a hold: a release, a release whose future is dropped early, or a dropped guard.
    async fn end(&mut self, held: Held) {
        self.trace(format_args!("ends {}@{}", held.key(), held.token()));
        match self.rng.random_range(0..10) {
            0..7 => held.release().await,
            7 => {
                let patience = ms(&mut self.rng, 20);
                let _ = tokio::time::timeout(patience, held.release()).await;
            }
            _ => drop(held),
        }
    }

    async fn mutex(&mut self) {
        let name = self.checker.name(["m0", "m1"][self.rng.random_range(0..2)]).clone();
        let Ok(mutex) = Mutex::new(&self.session, name.name) else { return };
        let mutex = mutex.with_strategy(strategy(&mut self.rng));
        if self.rng.random_bool(0.1) {
            let (checker, who, data) = (self.checker.clone(), self.who.clone(), name.data.clone());
            let _ = mutex
                .with_lock(async |g| {
                    if g.is_valid() {
                        checker.believes(&who, &name, Kind::First, g.key(), g.fencing_token());
                    }
                    let _ = g.fenced_put(data, g.fencing_token().to_string()).await;
                })
                .await;
            return;
        }
        let got = match self.rng.random_range(0..4) {
            0 => mutex.try_lock().await.ok().flatten(),
            1 => {
                let t = ms(&mut self.rng, 3000);
                mutex.lock_timeout(t).await.ok()
            }
            _ => self.acquire(mutex.lock()).await,
        };
        let Some(mut guard) = got else { return };
        let relocks = if self.rng.random_bool(0.3) { self.rng.random_range(1..=3) } else { 0 };
        for _ in 0..relocks {
            let held = Held::Mutex(guard);
            self.hold(&name, &held).await;
            let Held::Mutex(g) = held else { unreachable!() };
            guard = g;
            let relocked = if self.rng.random_bool(0.2) {
                let patience = ms(&mut self.rng, 100);
                tokio::time::timeout(patience, mutex.relock(&mut guard)).await.ok().and_then(Result::ok)
            } else {
                mutex.relock(&mut guard).await.ok()
            };
            if relocked.is_none() {
                return; // the guard is released (or was lost)
            }
        }
        let held = Held::Mutex(guard);
        self.hold(&name, &held).await;
        self.end(held).await;
    }

    async fn semaphore(&mut self) {
        let name = self.checker.name("s").clone();
        let Ok(sem) = Semaphore::new(&self.session, name.name, PERMITS as u32) else { return };
        let sem = sem.with_strategy(strategy(&mut self.rng));
        let got = match self.rng.random_range(0..4) {
            0 => sem.try_acquire().await.ok().flatten(),
            1 => {
                let t = ms(&mut self.rng, 3000);
                sem.acquire_timeout(t).await.ok()
            }
            _ => self.acquire(sem.acquire()).await,
        };
        let Some(permit) = got else { return };
        self.hold_permit(&name, &sem, permit, None).await;
    }

    /// Holds `permit` of `sem` (reacquiring it on the way three times in ten), then ends the
    /// hold. `weighted`: a permit of the weighted semaphore, of that many permits.
    async fn hold_permit(&mut self, name: &Name, sem: &Semaphore, mut permit: Permit, weighted: Option<u32>) {
        let wrap = |p| if weighted.is_some() { Held::Weighted(p) } else { Held::Permit(p) };
        if self.rng.random_bool(0.3) {
            let held = wrap(permit);
            self.hold(name, &held).await;
            let (Held::Permit(p) | Held::Weighted(p)) = held else { unreachable!() };
            permit = p;
            if sem.reacquire(&mut permit).await.is_err() {
                return;
            }
            if let Some(n) = weighted {
                self.checker.weighs(&self.who, name, permit.key(), n);
            }
        }
        let held = wrap(permit);
        self.hold(name, &held).await;
        self.end(held).await;
    }

    /// A semaphore whose acquisitions take 1 to [`WEIGHTED_PERMITS`] permits at once.
    async fn weighted(&mut self) {
        let name = self.checker.name("w").clone();
        let Ok(sem) = Semaphore::new(&self.session, name.name, WEIGHTED_PERMITS) else { return };
        let sem = sem.with_strategy(strategy(&mut self.rng));
        let n = self.rng.random_range(1..=WEIGHTED_PERMITS);
        let got = match self.rng.random_range(0..4) {
            0 => sem.try_acquire_many(n).await.ok().flatten(),
            1 => {
                let t = ms(&mut self.rng, 3000);
                sem.acquire_many_timeout(n, t).await.ok()
            }
            _ => self.acquire(sem.acquire_many(n)).await,
        };
        let Some(permit) = got else { return };
        self.checker.weighs(&self.who, &name, permit.key(), n);
        self.hold_permit(&name, &sem, permit, Some(n)).await;
    }

    async fn rwlock(&mut self) {
        let name = self.checker.name("rw").clone();
        let Ok(lock) = RwLock::new(&self.session, name.name) else { return };
        let write = self.rng.random_bool(0.4);
        let held = match (write, self.rng.random_range(0..3)) {
            (false, 0) => lock.try_read().await.ok().flatten().map(Held::Read),
            (false, _) => self.acquire(lock.read()).await.map(Held::Read),
            (true, 0) => lock.try_write().await.ok().flatten().map(Held::Write),
            (true, _) => self.acquire(lock.write()).await.map(Held::Write),
        };
        let Some(held) = held else { return };
        self.hold(&name, &held).await;
        self.end(held).await;
    }

    async fn election(&mut self) {
        let name = self.checker.name("e").clone();
        let Ok(election) = Election::new(&self.session, name.name) else { return };
        let value = self.who.clone();
        let got = match self.rng.random_range(0..3) {
            0 => election.try_campaign(value).await.ok().flatten(),
            1 => {
                let t = ms(&mut self.rng, 3000);
                election.campaign_timeout(value, t).await.ok()
            }
            _ => self.acquire(election.campaign(value)).await,
        };
        let Some(leader) = got else { return };
        if self.rng.random_bool(0.3) {
            let _ = leader.proclaim(format!("{} again", self.who)).await;
        }
        let held = Held::Leader(leader);
        self.hold(&name, &held).await;
        self.end(held).await;
    }

    /// One increment of the counter register, with a random strategy. Its value is
    /// `<count> <increment number>`: the checker sees which increment each write of the
    /// history is (none may be written twice, each must add one to the count before it),
    /// and the world checks that every acknowledged one was written, at the revision
    /// reported.
    async fn register(&mut self) {
        if self.register.is_none() || self.rng.random_bool(0.1) {
            let Ok(r) = Register::new(&self.session, "ctr") else { return };
            self.register = Some(r.with_strategy(strategy(&mut self.rng)));
        }
        let register = self.register.clone().expect("set above");
        let id = self.stats.next_increment.fetch_add(1, Ordering::Relaxed);
        let increment = |v: Option<&[u8]>| {
            let n = v.map_or(0, |v| crate::check::count(v).unwrap_or(u64::MAX - 1));
            Some(format!("{} {id}", n + 1).into_bytes())
        };
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        let outcome = if self.rng.random_bool(0.15) {
            let patience = ms(&mut self.rng, 200);
            tokio::time::timeout(patience, register.update(increment)).await.ok()
        } else {
            Some(register.update(increment).await)
        };
        if let Some(Ok(updated)) = outcome {
            if updated.written {
                self.stats.acked.fetch_add(1, Ordering::Relaxed);
                // A written update without its revision is caught by the world's check.
                let revision = updated.revision.unwrap_or(0);
                self.stats.acknowledged.lock().unwrap().push((id, revision));
            }
        }
    }
}
