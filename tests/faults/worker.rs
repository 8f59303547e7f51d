//! The worker side: a worker process (this test binary re-run in worker mode, see
//! [`main`]) runs three clients ([`ClientRun`]) and sums what they did ([`Stats`]) into its
//! summary line.

use crate::client::ClientRun;
use crate::{
    ENV_ENDPOINTS, ENV_FENCED, ENV_PLANT, ENV_RUN_MS, ENV_SEED, ENV_WORKER, MUTEXES, REQUEST_TIMEOUT, SEMAPHORE,
};
use leasehold::{Client, Error, EtcdConfig, Mutex, MutexGuard, Permit, Semaphore, Strategy, Write};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::Duration;

/// What one client did, summed per worker into its summary line.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    pub(crate) sessions: u64,
    pub(crate) acquired: u64,
    /// Acquisitions made by `Mutex::relock` / `Semaphore::reacquire` (counted in `acquired` too).
    pub(crate) relocked: u64,
    pub(crate) cancelled: u64,
    pub(crate) timeouts: u64,
    pub(crate) accepted: u64,
    pub(crate) refused: u64,
    pub(crate) unknown: u64,
    /// Holds whose sleep between the enter and exit writes overran by more than
    /// [`PAUSED_OVERRUN`](crate::client::PAUSED_OVERRUN): the worker was stopped (or starved)
    /// while it held, so its exit write came after its lease's TTL.
    pub(crate) paused_in_hold: u64,
    pub(crate) session_lost: u64,
    /// Releases and relocks refused with `NotHeld` because the session was lost first (a
    /// paused holder: its key went with its lease). With the session still valid that
    /// refusal would be a bug, and is counted in `unexpected`.
    pub(crate) lost_before_release: u64,
    pub(crate) transient: u64,
    pub(crate) unexpected: u64,
    pub(crate) finished: u64,
    /// Waiting acquisitions still waiting when the run ended.
    pub(crate) cut_at_end: u64,
    /// The longest a waiting pessimistic (queued, fair) acquisition took to be admitted (ms).
    pub(crate) max_wait_queued_ms: u64,
    /// The same for the optimistic strategy, which keeps no place in a queue (ms).
    pub(crate) max_wait_cas_ms: u64,
    /// Live leases whose keys the leftover check listed.
    pub(crate) leases_listed: u64,
    /// Keys found under those leases, owned by no guard (each reported in a `LEFTOVER` line).
    pub(crate) leftover: u64,
    /// Keys found at the leftover check's first listing that the session's audit deleted
    /// before its second (a create that landed after its caller gave up).
    pub(crate) audited: u64,
}

impl Stats {
    const FIELDS: [&'static str; 20] = [
        "sessions",
        "acquired",
        "relocked",
        "cancelled",
        "timeouts",
        "accepted",
        "refused",
        "unknown",
        "paused_in_hold",
        "session_lost",
        "lost_before_release",
        "transient",
        "unexpected",
        "finished",
        "cut_at_end",
        "max_wait_queued_ms",
        "max_wait_cas_ms",
        "leases_listed",
        "leftover",
        "audited",
    ];

    fn values(&self) -> [u64; 20] {
        [
            self.sessions,
            self.acquired,
            self.relocked,
            self.cancelled,
            self.timeouts,
            self.accepted,
            self.refused,
            self.unknown,
            self.paused_in_hold,
            self.session_lost,
            self.lost_before_release,
            self.transient,
            self.unexpected,
            self.finished,
            self.cut_at_end,
            self.max_wait_queued_ms,
            self.max_wait_cas_ms,
            self.leases_listed,
            self.leftover,
            self.audited,
        ]
    }

    fn values_mut(&mut self) -> [&mut u64; 20] {
        [
            &mut self.sessions,
            &mut self.acquired,
            &mut self.relocked,
            &mut self.cancelled,
            &mut self.timeouts,
            &mut self.accepted,
            &mut self.refused,
            &mut self.unknown,
            &mut self.paused_in_hold,
            &mut self.session_lost,
            &mut self.lost_before_release,
            &mut self.transient,
            &mut self.unexpected,
            &mut self.finished,
            &mut self.cut_at_end,
            &mut self.max_wait_queued_ms,
            &mut self.max_wait_cas_ms,
            &mut self.leases_listed,
            &mut self.leftover,
            &mut self.audited,
        ]
    }

    pub(crate) fn add(&mut self, other: &Stats) {
        for ((a, b), name) in self.values_mut().into_iter().zip(other.values()).zip(Self::FIELDS) {
            *a = if name.starts_with("max_") { (*a).max(b) } else { *a + b };
        }
    }

    pub(crate) fn line(&self) -> String {
        Self::FIELDS.iter().zip(self.values()).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }

    pub(crate) fn parse(line: &str) -> (usize, Stats) {
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
    pub(crate) fn error(&mut self, e: &Error) -> bool {
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
                // A key gone while its session lived: the parent looks up who deleted it.
                if let Error::NotHeld { reason, .. } = other {
                    if let Some((key, token)) = gone_key(reason) {
                        println!("GONE {key} {token}");
                    }
                }
                true
            }
        }
    }
}

/// What a client contends for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resource {
    Mutex(usize),
    Semaphore,
}

impl Resource {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Resource::Mutex(i) => MUTEXES[i],
            Resource::Semaphore => SEMAPHORE,
        }
    }
}

/// A client's handle on its resource.
pub(crate) enum Target {
    Mutex(Mutex),
    Semaphore(Semaphore),
}

/// Something held.
pub(crate) enum Held {
    Mutex(MutexGuard),
    Permit(Permit),
}

impl Target {
    pub(crate) async fn lock(&self) -> leasehold::Result<Held> {
        match self {
            Target::Mutex(m) => m.lock().await.map(Held::Mutex),
            Target::Semaphore(s) => s.acquire().await.map(Held::Permit),
        }
    }

    pub(crate) async fn lock_timeout(&self, d: Duration) -> leasehold::Result<Held> {
        match self {
            Target::Mutex(m) => m.lock_timeout(d).await.map(Held::Mutex),
            Target::Semaphore(s) => s.acquire_timeout(d).await.map(Held::Permit),
        }
    }
}

impl Held {
    /// Releases and queues again in one transaction (`Mutex::relock`, `Semaphore::reacquire`).
    pub(crate) async fn again(&mut self, target: &Target) -> leasehold::Result<()> {
        match (self, target) {
            (Held::Mutex(g), Target::Mutex(m)) => m.relock(g).await,
            (Held::Permit(p), Target::Semaphore(s)) => s.reacquire(p).await,
            _ => unreachable!("a guard comes from its own target"),
        }
    }

    pub(crate) fn token(&self) -> u64 {
        match self {
            Held::Mutex(g) => g.fencing_token(),
            Held::Permit(p) => p.fencing_token(),
        }
    }

    pub(crate) fn key(&self) -> &str {
        match self {
            Held::Mutex(g) => g.key(),
            Held::Permit(p) => p.key(),
        }
    }

    pub(crate) async fn fenced(&self, writes: Vec<Write>) -> leasehold::Result<()> {
        match self {
            Held::Mutex(g) => g.fenced_write(writes).await,
            Held::Permit(p) => p.fenced_write(writes).await,
        }
    }

    pub(crate) async fn release(self) -> leasehold::Result<()> {
        match self {
            Held::Mutex(g) => g.unlock().await,
            Held::Permit(p) => p.release().await,
        }
    }
}

/// A violation a control run makes on purpose, to show that the check meant to find it
/// does. Worker 0 makes it (one of its clients, see [`Plant::client`]) after its run, on a
/// healthy cluster, and says so in a `PLANT <name> <what>` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plant {
    /// Over-admission of the semaphore: the semaphore client holds `PERMITS + 1` permits at
    /// once and writes `enter`, then `exit`, with each into [`SEMAPHORE`]'s history (fenced,
    /// so every write is accepted): `PERMITS + 1` holders in at once, what a semaphore
    /// admitting one too many would leave. (The permits are of [`PLANT_SEMAPHORE`](crate::PLANT_SEMAPHORE), of
    /// `PERMITS + 1` permits: [`SEMAPHORE`] itself refuses a count other than its stored one.)
    /// The at-most-N check must report it.
    OverAdmission,
    /// A skipped release: the first mutex client acquires and forgets the guard
    /// (`mem::forget`: neither released nor dropped, so nothing deletes its key, and its
    /// session still counts the key as owned, so the session's audit leaves it alone
    /// too). The leftover check must report the key.
    SkippedRelease,
    /// A lost acknowledgement: the first mutex client makes a fenced write that lands but
    /// reports it as of unknown outcome, then reports a second write as acknowledged without
    /// sending it (a client told "applied" of a write the store never applied). The
    /// per-worker counts balance (one entry stored; one acknowledged plus one unknown), so
    /// only the key-by-key check can see the loss; it must report that key.
    LostAck,
    /// A holder that never lets go: the first mutex client acquires its mutex at the start
    /// of the run (on a session of its own) and holds it until the end, so every queued
    /// wait for that mutex is still open when the run ends. The liveness bound must see
    /// them (it counted only waits that ended until 2026-12-05). Made during the run, not
    /// after it as the others are.
    StuckHolder,
}

impl Plant {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Plant::OverAdmission => "over-admission",
            Plant::SkippedRelease => "skipped-release",
            Plant::LostAck => "lost-ack",
            Plant::StuckHolder => "stuck-holder",
        }
    }

    fn parse(s: &str) -> Option<Plant> {
        [Plant::OverAdmission, Plant::SkippedRelease, Plant::LostAck, Plant::StuckHolder]
            .into_iter()
            .find(|p| p.name() == s)
    }

    /// The client of worker 0 that makes it.
    fn client(self) -> usize {
        match self {
            Plant::OverAdmission => 2,
            Plant::SkippedRelease | Plant::LostAck | Plant::StuckHolder => 0,
        }
    }
}

/// The worker's main, run by the test `fault_worker` in a worker process the parent
/// started, with its settings in the environment ([`ENV_WORKER`] and the others). Run by
/// hand without them, it fails.
pub(crate) async fn main() {
    let worker = std::env::var(ENV_WORKER).expect("worker mode: LEASEHOLD_FAULTS_WORKER (run by the fault suite)");
    let worker: usize = worker.parse().unwrap();
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let endpoints: Vec<String> = env(ENV_ENDPOINTS).split(',').map(str::to_owned).collect();
    let run = Duration::from_millis(env(ENV_RUN_MS).parse().unwrap());
    let fenced = env(ENV_FENCED) == "1";
    let seed: u64 = env(ENV_SEED).parse().unwrap();
    let plant = std::env::var(ENV_PLANT).ok().and_then(|p| Plant::parse(&p)).filter(|_| worker == 0);
    let config = EtcdConfig::new(endpoints).request_timeout(REQUEST_TIMEOUT).connect_timeout(Duration::from_secs(10));
    let client = Client::etcd(config).await.expect("worker connects");
    let end = tokio::time::Instant::now() + run;
    let flip = |i: usize| if (worker + i).is_multiple_of(2) { Strategy::Pessimistic } else { Strategy::Optimistic };
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
            plant: plant.filter(|p| p.client() == index),
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

#[test]
fn summary_lines_parse() {
    let (w, st) = Stats::parse("FAULTS-SUMMARY worker=4 clients=3 acquired=7 refused=2 finished=3");
    assert_eq!((w, st.acquired, st.refused, st.finished), (4, 7, 2, 3));
}

/// The key and token of a `NotHeld` reason "… <key> no longer existed with token <n>".
fn gone_key(reason: &str) -> Option<(&str, i64)> {
    let (before, token) = reason.split_once(" no longer existed with token ")?;
    Some((before.rsplit(' ').next()?, token.trim().parse().ok()?))
}
