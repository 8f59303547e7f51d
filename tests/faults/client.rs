//! One client of a worker ([`ClientRun`]): its acquire / write / hold / release loop, the
//! leftover check after its run, and a control's plant.

use crate::checker;
use crate::worker::{Held, Plant, Resource, Stats, Target};
use crate::{HIST, HOLD_MS, LOCK_DELAY, MUTEXES, OP_LIMIT, PERMITS, PLANT_SEMAPHORE, SEMAPHORE, TTL};
use leasehold::{Client, Error, Mutex, Semaphore, Session, Strategy, Write};
use rand::rngs::StdRng;
use rand::Rng;
use std::time::{Duration, Instant};

/// A hold's sleep that overran by more than this (one TTL: no renewal could have kept the
/// lease) means the worker was stopped (or starved) while it held: its exit write comes
/// after its lease could expire, and the fence refuses it unless the lease was kept
/// (an etcd election extends every lease).
pub(crate) const PAUSED_OVERRUN: Duration = TTL;

/// One client of a worker.
pub(crate) struct ClientRun {
    pub(crate) client: Client,
    pub(crate) worker: usize,
    pub(crate) index: usize,
    pub(crate) resource: Resource,
    pub(crate) strategy: Strategy,
    pub(crate) fenced: bool,
    pub(crate) end: tokio::time::Instant,
    pub(crate) rng: StdRng,
    pub(crate) seq: u64,
    pub(crate) st: Stats,
    /// The violation this client makes after its run (a control's worker 0 only).
    pub(crate) plant: Option<Plant>,
}

impl ClientRun {
    pub(crate) async fn run(mut self) -> Stats {
        let mut session: Option<Session> = None;
        let stuck = match self.plant {
            Some(Plant::StuckHolder) => self.hold_for_the_run().await,
            _ => None,
        };
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
        if let Some((held, s)) = stuck {
            let _ = tokio::time::timeout(OP_LIMIT, held.release()).await;
            let _ = tokio::time::timeout(OP_LIMIT, s.close()).await;
        }
        // The run is over: the plant (a control's), then the leftover check while the
        // session still lives, then close (which revokes the lease, deleting every key).
        let mut session = session.filter(Session::is_valid);
        if let Some(plant) = self.plant.filter(|&p| p != Plant::StuckHolder) {
            if session.is_none() {
                session = tokio::time::timeout(OP_LIMIT, self.client.session_builder().ttl(TTL).open())
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            match &session {
                Some(s) => self.plant(plant, s).await,
                None => println!("PLANT-FAILED {}: no session", plant.name()),
            }
        }
        if let Some(s) = &session {
            self.check_leftovers(s).await;
        }
        if let Some(s) = session {
            let _ = tokio::time::timeout(OP_LIMIT, s.close()).await;
        }
        self.st.finished += 1;
        self.st
    }

    /// The leftover check, run before the session closes: `close` revokes the lease,
    /// deleting every key under it, so a check after it could find nothing. It waits for
    /// the session's background deletes ([`Session::settle`]: releases handed to the
    /// background, keys of cancelled acquisitions), then lists the keys under the lease.
    /// The client holds nothing now, so each key listed is owned by no guard — a release
    /// that left its key, a cancelled acquisition's key that stayed, a queue place nobody
    /// leaves — and is reported in a `LEFTOVER` line, which the parent counts as a
    /// violation. Background deletes still running after [`OP_LIMIT`] are reported too.
    ///
    /// A create that lands after its caller gave up is not something `settle` waits for:
    /// the session's audit deletes it one TTL after that attempt (see `session/cleanup.rs`).
    /// So keys found are listed once more after one TTL, and only those still there are
    /// reported (the others are counted in `audited`). A key of a forgotten guard stays
    /// (see [`Plant::SkippedRelease`]): the check fails on it.
    async fn check_leftovers(&mut self, s: &Session) {
        let (w, c, lease) = (self.worker, self.index, s.lease_id());
        if tokio::time::timeout(OP_LIMIT, s.settle()).await.is_err() {
            let why = format!("background deletes still running {OP_LIMIT:?} after the run");
            println!("LEFTOVER worker {w} client {c} lease {lease:x}: {why}");
            return;
        }
        let Some(mut keys) = self.lease_keys(s).await else { return };
        if !keys.is_empty() {
            tokio::time::sleep(TTL + Duration::from_secs(1)).await;
            let _ = tokio::time::timeout(OP_LIMIT, s.settle()).await;
            let Some(again) = self.lease_keys(s).await else { return };
            self.st.audited += keys.iter().filter(|k| !again.contains(k)).count() as u64;
            keys = again;
        }
        if !s.is_valid() {
            // The lease may have ended meanwhile, taking its keys: nothing to say.
            eprintln!("worker {w} client {c}: session lost during the leftover check");
            return;
        }
        self.st.leases_listed += 1;
        for key in keys {
            self.st.leftover += 1;
            println!("LEFTOVER worker {w} client {c} lease {lease:x}: {key} (owned by no guard)");
        }
    }

    /// The keys under the session's lease (retried on transient errors for [`OP_LIMIT`]).
    async fn lease_keys(&mut self, s: &Session) -> Option<Vec<String>> {
        let started = Instant::now();
        loop {
            match tokio::time::timeout(OP_LIMIT, self.client.backend().lease_keys(s.lease_id())).await {
                // The session's fence key is no lock, permit or place (`Session::fence_key`).
                Ok(Ok(keys)) => return Some(keys.into_iter().filter(|k| k != s.fence_key()).collect()),
                Ok(Err(e)) if e.is_transient() && started.elapsed() < OP_LIMIT => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => {
                    self.st.unexpected += 1;
                    eprintln!("worker {}: the leftover check could not list lease keys: {other:?}", self.worker);
                    return None;
                }
            }
        }
    }

    /// Makes `plant` (see [`Plant`]) and says so: `PLANT <name> <what>`, or `PLANT-FAILED`.
    /// [`Plant::StuckHolder`]: this client's mutex, acquired at the start on a session of
    /// its own and held until the end of the run (the caller releases it then).
    async fn hold_for_the_run(&mut self) -> Option<(Held, Session)> {
        let s = tokio::time::timeout(OP_LIMIT, self.client.session_builder().ttl(TTL).open()).await.ok()?.ok()?;
        match tokio::time::timeout(OP_LIMIT, self.target(&s).lock()).await {
            Ok(Ok(held)) => {
                println!("PLANT {} {}", Plant::StuckHolder.name(), held.key());
                Some((held, s))
            }
            other => {
                println!("PLANT-FAILED stuck-holder: {:?}", other.map(|r| r.map(|h| h.token())));
                None
            }
        }
    }

    async fn plant(&mut self, plant: Plant, s: &Session) {
        let name = plant.name();
        let target = match plant {
            Plant::OverAdmission => Target::Semaphore(Semaphore::new(s, PLANT_SEMAPHORE, PERMITS + 1).unwrap()),
            Plant::SkippedRelease | Plant::LostAck => self.target(s),
            Plant::StuckHolder => return, // made during the run (`hold_for_the_run`)
        };
        let mut held = Vec::new();
        let wanted = if plant == Plant::OverAdmission { PERMITS as usize + 1 } else { 1 };
        while held.len() < wanted {
            match tokio::time::timeout(OP_LIMIT, target.lock()).await {
                Ok(Ok(h)) => held.push(h),
                other => {
                    println!("PLANT-FAILED {name}: acquisition: {:?}", other.map(|r| r.map(|h| h.token())));
                    return;
                }
            }
        }
        match plant {
            Plant::OverAdmission => {
                for h in &held {
                    self.write(h, "enter").await;
                }
                for h in &held {
                    self.write(h, "exit").await;
                }
                let tokens: Vec<u64> = held.iter().map(Held::token).collect();
                for h in held {
                    let _ = tokio::time::timeout(OP_LIMIT, h.release()).await;
                }
                println!("PLANT {name} {} holders of {SEMAPHORE} in at once, tokens {tokens:?}", tokens.len());
            }
            Plant::SkippedRelease => {
                let h = held.pop().unwrap();
                println!("PLANT {name} {}", h.key());
                std::mem::forget(h);
            }
            Plant::LostAck => {
                let h = held.pop().unwrap();
                let landed = self.next_key(&h);
                let put = Write::Put { key: landed.clone(), value: b"enter".to_vec(), lease: None };
                if let Err(e) = h.fenced(vec![put]).await {
                    println!("PLANT-FAILED {name}: the write that should land: {e}");
                    return;
                }
                self.said(checker::Said::Unknown, &landed);
                let lost = self.next_key(&h);
                self.said(checker::Said::Acked, &lost);
                let _ = tokio::time::timeout(OP_LIMIT, h.release()).await;
                println!("PLANT {name} {lost}");
            }
            Plant::StuckHolder => unreachable!("returned above"),
        }
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
                        // A wait still going at the end counts for the liveness bound as one
                        // that ended: a waiter whose wake-up was lost is one that never ends.
                        // (Only ended waits counted until 2026-12-05, so the bound could not
                        // see the stuck waiter its message names: `Plant::StuckHolder`.)
                        if self.strategy != Strategy::Optimistic {
                            let waited = started.elapsed().as_millis() as u64;
                            self.st.max_wait_queued_ms = self.st.max_wait_queued_ms.max(waited);
                        }
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
        let mut replace = false;
        let mut rounds = 1 + u32::from(self.rng.random_range(0..3) == 0); // a third relock once
        while rounds > 0 {
            rounds -= 1;
            if self.write(&held, "enter").await != checker::Said::Refused {
                // `HOLD` brackets the hold's sleep: the parent stops a worker it sees in one,
                // and a stop there is followed by this hold's fenced exit write after the
                // lease's TTL. (A relock's wait in the queue is outside it: a stop there loses
                // the place, not a write.)
                let until = Instant::now() + Duration::from_millis(self.rng.random_range(HOLD_MS));
                println!("HOLD {} {name} 1", self.worker);
                // A SIGSTOP here is the pause fencing must survive.
                tokio::time::sleep_until(until.into()).await;
                println!("HOLD {} {name} 0", self.worker);
                let paused = until.elapsed() > PAUSED_OVERRUN;
                let said = self.write(&held, "exit").await;
                if paused {
                    self.st.paused_in_hold += 1;
                    println!("PAUSED {} {name} {}", self.worker, said.word());
                }
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
                    replace = self.hold_error(&e, s);
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
            Ok(Err(e)) => replace = self.hold_error(&e, s),
            Err(_) => {
                self.st.unexpected += 1;
                eprintln!("worker {}: release of {name} hung", self.worker);
            }
        }
        replace || !s.is_valid()
    }

    /// Counts an error of a relock or release; returns whether the session must be
    /// replaced. `NotHeld` is expected once the session is lost (the key went with the
    /// lease); while it is still valid nothing else deletes the key, so it is unexpected.
    fn hold_error(&mut self, e: &Error, s: &Session) -> bool {
        match e {
            Error::NotHeld { .. } if !s.is_valid() => {
                self.st.lost_before_release += 1;
                true
            }
            e => self.st.error(e),
        }
    }

    /// The key of this client's next history entry under `held`.
    fn next_key(&mut self, held: &Held) -> String {
        self.seq += 1;
        format!("{HIST}{}/{:020}/{}/{}/{}", self.resource.name(), held.token(), self.worker, self.index, self.seq)
    }

    /// Counts what this client saw of the write of `key` and reports it (`WRITE <said> <key>`).
    fn said(&mut self, said: checker::Said, key: &str) {
        match said {
            checker::Said::Acked => self.st.accepted += 1,
            checker::Said::Refused => self.st.refused += 1,
            checker::Said::Unknown => self.st.unknown += 1,
        }
        println!("WRITE {} {key}", said.word());
    }

    /// One history entry, fenced (or not, in the control), and what this client saw of it.
    async fn write(&mut self, held: &Held, what: &str) -> checker::Said {
        let key = self.next_key(held);
        let result = if self.fenced {
            held.fenced(vec![Write::Put { key: key.clone(), value: what.as_bytes().to_vec(), lease: None }]).await
        } else {
            // The control: a writer that trusts its lock instead of the fence.
            let backend = self.client.backend();
            backend.compare_and_swap(&key, None, what.as_bytes().to_vec(), None).await.map(|_| ())
        };
        let said = match result {
            Ok(()) => checker::Said::Acked,
            Err(Error::NotHeld { .. }) => checker::Said::Refused,
            Err(e) => {
                if !e.is_transient() {
                    self.st.unexpected += 1;
                    eprintln!("worker {}: write failed: {e}", self.worker);
                }
                checker::Said::Unknown
            }
        };
        self.said(said, &key);
        said
    }
}

async fn yield_times(n: usize) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}
