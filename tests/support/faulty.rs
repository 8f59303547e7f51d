//! A fault-injecting decorator at the [`Backend`] boundary, for the deterministic safety
//! tests (`tests/safety.rs`) and the simulator (`sim/`), which includes this file by path.
//!
//! Every call of the wrapped store goes through [`Faults`], which decides per call (from
//! targeted [`Faults::inject`] rules, first match wins, or from a seeded [`Random`] plan):
//!
//! | [`Fault`] | the store | the caller |
//! |---|---|---|
//! | `Delay(d)` | gets the request `d` late; never, if the caller gave up first | waits `d` more |
//! | `InFlight(d)` | gets the request `d` late, **even if the caller gave up** | waits `d` more |
//! | `Late(d)` | gets the request `d` late | `Unavailable` at once (its timeout ran out first) |
//! | `FailBefore` | never gets it | `Unavailable` |
//! | `LoseAnswer` | applies it | `Unavailable` (the answer was lost) |
//! | `DelayAnswer(d)` | applies it at once | gets the answer `d` late |
//!
//! [`Faults::stall_until`] cuts the client off until an instant (requests wait before the
//! store, answers and watch events before the caller): a partition or a slow network, while
//! the client's own timers keep running. A whole-process pause (no task runs while the clock
//! moves) is `tokio::time::advance` on a paused runtime.
//!
//! Keep-alive streams behave as etcd's: requests and answers travel in order on one stream
//! and an answer carries no request id, so an answer whose `renew()` was abandoned is read by
//! the next `renew()` on the same stream. Watches pass their batches on in order; a fault on
//! [`Op::WatchNext`] delays a batch or breaks the watch.
#![allow(dead_code)]

use async_trait::async_trait;
use leasehold::backend::{
    Backend, CasResponse, Condition, CreateRequest, CreateResponse, KeepAlive, KeyValue, Lease, LeaseId, Read,
    Revision, Transacted, WatchEvent, WatchStream, Write,
};
use leasehold::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The kinds of store call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Grant,
    OpenKeepAlive,
    Renew,
    Revoke,
    LeaseTtl,
    LeaseKeys,
    Get,
    Range,
    Create,
    DeleteIfCreated,
    Cas,
    WriteIf,
    Watch,
    WatchNext,
}

impl Op {
    /// Whether the call changes the store.
    pub fn writes(self) -> bool {
        matches!(self, Op::Grant | Op::Renew | Op::Revoke | Op::Create | Op::DeleteIfCreated | Op::Cas | Op::WriteIf)
    }
}

/// What happens to one call (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Delay(Duration),
    InFlight(Duration),
    Late(Duration),
    FailBefore,
    LoseAnswer,
    DelayAnswer(Duration),
}

impl Fault {
    /// A short name, for counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Delay(_) => "delay",
            Fault::InFlight(_) => "in-flight",
            Fault::Late(_) => "late",
            Fault::FailBefore => "fail-before",
            Fault::LoseAnswer => "lose-answer",
            Fault::DelayAnswer(_) => "delay-answer",
        }
    }
}

/// A targeted fault: for calls of `op` that touch a key containing `key` (any key if
/// `None`), `times` times (for good if `None`).
#[derive(Debug, Clone)]
struct Rule {
    op: Op,
    key: Option<String>,
    fault: Fault,
    times: Option<u32>,
}

/// Random faults, drawn per call from a seeded generator (so the same calls in the same
/// order get the same faults). Probabilities are per call; delays are uniform up to
/// `max_delay`.
#[derive(Debug, Clone)]
pub struct Random {
    pub seed: u64,
    pub delay: f64,
    pub in_flight: f64,
    /// A write's caller times out at once while the store gets it later (etcd's client
    /// timeout, with the request still on its way).
    pub late: f64,
    pub fail_before: f64,
    pub lose_answer: f64,
    pub delay_answer: f64,
    /// Breaks of an open watch, per batch.
    pub break_watch: f64,
    pub max_delay: Duration,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    random: Option<(Random, StdRng)>,
    stalled_until: Option<Instant>,
    /// Faults injected so far, by kind.
    injected: Vec<(&'static str, u64)>,
    calls: Vec<(Op, u64)>,
    /// `Late` requests that reached the store (after their delay).
    late_arrived: u64,
}

/// The fault plan of one client's view of the store; cheap to clone (clones share it).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<State>>,
}

impl Faults {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a targeted rule (checked before random faults, in the order added).
    pub fn inject(&self, op: Op, key: Option<&str>, fault: Fault, times: Option<u32>) {
        let rule = Rule { op, key: key.map(str::to_owned), fault, times };
        self.state.lock().unwrap().rules.push(rule);
    }

    /// Removes every targeted rule of `op`.
    pub fn clear(&self, op: Op) {
        self.state.lock().unwrap().rules.retain(|r| r.op != op);
    }

    /// Removes every targeted rule.
    pub fn clear_all(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Ends every fault: targeted rules, random faults and a stall.
    pub fn heal(&self) {
        let mut st = self.state.lock().unwrap();
        st.rules.clear();
        st.random = None;
        st.stalled_until = None;
    }

    /// Draws random faults from now on (`None`: stop).
    pub fn set_random(&self, random: Option<Random>) {
        self.state.lock().unwrap().random = random.map(|r| {
            let rng = StdRng::seed_from_u64(r.seed);
            (r, rng)
        });
    }

    /// Cuts the client off until `until`: requests reach the store and answers and watch
    /// events reach the client only then.
    pub fn stall_until(&self, until: Instant) {
        let mut st = self.state.lock().unwrap();
        st.stalled_until = Some(st.stalled_until.map_or(until, |u| u.max(until)));
    }

    /// Counts one fault of `kind` (one that `pick` does not draw itself).
    fn count(&self, kind: &'static str) {
        let mut st = self.state.lock().unwrap();
        match st.injected.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => st.injected.push((kind, 1)),
        }
    }

    /// Faults injected so far, by kind.
    pub fn injected(&self) -> Vec<(&'static str, u64)> {
        self.state.lock().unwrap().injected.clone()
    }

    /// How many `Late` requests have reached the store so far (applied or refused by it).
    pub fn late_arrived(&self) -> u64 {
        self.state.lock().unwrap().late_arrived
    }

    /// How many calls of `op` were made.
    pub fn calls(&self, op: Op) -> u64 {
        self.state.lock().unwrap().calls.iter().find(|(o, _)| *o == op).map_or(0, |(_, n)| *n)
    }

    /// The fault for one call of `op` touching `keys` (counted).
    fn pick(&self, op: Op, keys: &[&str]) -> Option<Fault> {
        let mut st = self.state.lock().unwrap();
        match st.calls.iter_mut().find(|(o, _)| *o == op) {
            Some((_, n)) => *n += 1,
            None => st.calls.push((op, 1)),
        }
        let targeted = st.rules.iter_mut().find(|r| {
            r.op == op
                && r.times != Some(0)
                && r.key.as_ref().is_none_or(|k| keys.iter().any(|key| key.contains(k.as_str())))
        });
        let fault = match targeted {
            Some(rule) => {
                if let Some(n) = &mut rule.times {
                    *n -= 1;
                }
                Some(rule.fault)
            }
            None => st.random.as_mut().and_then(|(plan, rng)| draw(plan, rng, op)),
        };
        if let Some(f) = fault {
            let kind = if op == Op::WatchNext && f == Fault::FailBefore { "break-watch" } else { f.kind() };
            match st.injected.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => st.injected.push((kind, 1)),
            }
        }
        fault
    }

    /// Waits while the client is cut off.
    async fn gate(&self) {
        loop {
            let until = self.state.lock().unwrap().stalled_until;
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }
}

fn draw(plan: &Random, rng: &mut StdRng, op: Op) -> Option<Fault> {
    let delay = |rng: &mut StdRng| Duration::from_nanos(rng.random_range(0..=plan.max_delay.as_nanos().max(1) as u64));
    let x: f64 = rng.random();
    if op == Op::WatchNext {
        return if x < plan.break_watch {
            Some(Fault::FailBefore)
        } else if x < plan.break_watch + plan.delay {
            Some(Fault::Delay(delay(rng)))
        } else {
            None
        };
    }
    let mut edge = 0.0;
    let mut hit = |p: f64| {
        edge += p;
        x < edge
    };
    if hit(plan.fail_before) {
        Some(Fault::FailBefore)
    } else if hit(plan.delay) {
        Some(Fault::Delay(delay(rng)))
    } else if op.writes() && hit(plan.lose_answer) {
        Some(Fault::LoseAnswer)
    } else if op.writes() && hit(plan.in_flight) {
        Some(Fault::InFlight(delay(rng)))
    } else if op.writes() && op != Op::Renew && hit(plan.late) {
        Some(Fault::Late(delay(rng)))
    } else if hit(plan.delay_answer) {
        Some(Fault::DelayAnswer(delay(rng)))
    } else {
        None
    }
}

fn unavailable(why: &str) -> Error {
    Error::Unavailable(format!("faulty: {why}").into())
}

/// The decorator: one per client (each client has its own faults and stalls).
#[derive(Debug, Clone)]
pub struct Faulty {
    inner: Arc<dyn Backend>,
    faults: Faults,
}

impl Faulty {
    pub fn new(inner: Arc<dyn Backend>, faults: Faults) -> Self {
        Self { inner, faults }
    }

    /// Runs one call: `apply` is the store's side (built now, run when the store gets it).
    async fn call<T: Send + 'static>(
        &self,
        op: Op,
        keys: &[&str],
        apply: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let fault = self.faults.pick(op, keys);
        self.faults.gate().await;
        let answer = match fault {
            None => apply.await,
            Some(Fault::FailBefore) => return Err(unavailable("request failed before the store")),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.faults.gate().await;
                apply.await
            }
            Some(Fault::InFlight(d)) => {
                let faults = self.faults.clone();
                let sent = tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    faults.gate().await;
                    apply.await
                });
                sent.await.map_err(|e| unavailable(&format!("in-flight task: {e}")))?
            }
            Some(Fault::LoseAnswer) => {
                let _ = apply.await;
                return Err(unavailable("the store applied the request, the answer was lost"));
            }
            Some(Fault::Late(d)) => {
                let faults = self.faults.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    faults.gate().await;
                    let _ = apply.await;
                    faults.state.lock().unwrap().late_arrived += 1;
                });
                return Err(unavailable("request timed out (it is still on its way)"));
            }
            Some(Fault::DelayAnswer(d)) => {
                let r = apply.await;
                tokio::time::sleep(d).await;
                r
            }
        };
        self.faults.gate().await;
        answer
    }
}

fn write_keys(conditions: &[Condition], writes: &[Write]) -> Vec<String> {
    let mut keys: Vec<String> = conditions
        .iter()
        .map(|c| match c {
            Condition::Created { key, .. } | Condition::Modified { key, .. } => key.clone(),
            Condition::PrefixEmpty { prefix } => prefix.clone(),
        })
        .collect();
    keys.extend(writes.iter().map(|w| match w {
        Write::Put { key, .. } | Write::Delete { key } => key.clone(),
    }));
    keys
}

#[async_trait]
impl Backend for Faulty {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let inner = self.inner.clone();
        self.call(Op::Grant, &[], async move { inner.grant_lease(ttl).await }).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Box<dyn KeepAlive>> {
        let inner = self.inner.clone();
        let keeper = self.call(Op::OpenKeepAlive, &[], async move { inner.keep_alive(lease).await }).await?;
        Ok(Box::new(FaultyKeepAlive::start(keeper, self.faults.clone())))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let inner = self.inner.clone();
        self.call(Op::Revoke, &[], async move { inner.revoke_lease(lease).await }).await
    }

    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<Duration>> {
        let inner = self.inner.clone();
        self.call(Op::LeaseTtl, &[], async move { inner.lease_ttl(lease).await }).await
    }

    async fn lease_keys(&self, lease: LeaseId) -> Result<Vec<String>> {
        let inner = self.inner.clone();
        self.call(Op::LeaseKeys, &[], async move { inner.lease_keys(lease).await }).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let (inner, k) = (self.inner.clone(), key.to_owned());
        self.call(Op::Get, &[key], async move { inner.get(&k).await }).await
    }

    async fn range_prefix(&self, prefix: &str, limit: usize) -> Result<(Vec<KeyValue>, Revision)> {
        let (inner, p) = (self.inner.clone(), prefix.to_owned());
        self.call(Op::Range, &[prefix], async move { inner.range_prefix(&p, limit).await }).await
    }

    async fn create(&self, req: CreateRequest) -> Result<CreateResponse> {
        let inner = self.inner.clone();
        let key = req.key.clone();
        let replaced = req.replaces.as_ref().map(|r| r.key.clone()).unwrap_or_default();
        self.call(Op::Create, &[&key, &replaced], async move { inner.create(req).await }).await
    }

    async fn delete_if_created(&self, key: &str, create_revision: Revision) -> Result<bool> {
        let (inner, k) = (self.inner.clone(), key.to_owned());
        self.call(Op::DeleteIfCreated, &[key], async move { inner.delete_if_created(&k, create_revision).await }).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<CasResponse> {
        let (inner, k) = (self.inner.clone(), key.to_owned());
        self.call(Op::Cas, &[key], async move { inner.compare_and_swap(&k, expected, value, lease).await }).await
    }

    async fn transact(&self, conditions: &[Condition], writes: Vec<Write>, reads: &[Read]) -> Result<Transacted> {
        // A transaction without conditions and writes is a read.
        let op = if conditions.is_empty() && writes.is_empty() { Op::Get } else { Op::WriteIf };
        let mut keys = write_keys(conditions, &writes);
        keys.extend(reads.iter().map(|r| match r {
            Read::Key(key) | Read::Occupied(key) => key.clone(),
        }));
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (inner, conditions, reads) = (self.inner.clone(), conditions.to_vec(), reads.to_vec());
        self.call(op, &refs, async move { inner.transact(&conditions, writes, &reads).await }).await
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<Box<dyn WatchStream>> {
        let (inner, p) = (self.inner.clone(), prefix.to_owned());
        let watch = self.call(Op::Watch, &[prefix], async move { inner.watch_prefix(&p).await }).await?;
        Ok(Box::new(FaultyWatch {
            inner: watch,
            faults: self.faults.clone(),
            prefix: prefix.to_owned(),
            broken: false,
            failed: None,
        }))
    }

    async fn watch_prefix_deletes(&self, prefix: &str) -> Result<Box<dyn WatchStream>> {
        let (inner, p) = (self.inner.clone(), prefix.to_owned());
        let watch = self.call(Op::Watch, &[prefix], async move { inner.watch_prefix_deletes(&p).await }).await?;
        Ok(Box::new(FaultyWatch {
            inner: watch,
            faults: self.faults.clone(),
            prefix: prefix.to_owned(),
            broken: false,
            failed: None,
        }))
    }

    async fn watch_key_and_prefix(&self, key: &str, prefix: &str) -> Result<Box<dyn WatchStream>> {
        let (inner, k, p) = (self.inner.clone(), key.to_owned(), prefix.to_owned());
        let watch =
            self.call(Op::Watch, &[key, prefix], async move { inner.watch_key_and_prefix(&k, &p).await }).await?;
        Ok(Box::new(FaultyWatch {
            inner: watch,
            faults: self.faults.clone(),
            prefix: key.to_owned(),
            broken: false,
            failed: None,
        }))
    }
}

/// A keep-alive stream: one task plays the store's end, taking requests in order, renewing
/// when a request arrives and sending answers back in order.
struct FaultyKeepAlive {
    requests: mpsc::UnboundedSender<()>,
    answers: mpsc::UnboundedReceiver<Result<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyKeepAlive {
    fn start(mut keeper: Box<dyn KeepAlive>, faults: Faults) -> Self {
        let (requests, mut incoming) = mpsc::unbounded_channel::<()>();
        let (answer, answers) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while incoming.recv().await.is_some() {
                let fault = faults.pick(Op::Renew, &[]);
                faults.gate().await;
                let answered = match fault {
                    Some(Fault::FailBefore) => Err(unavailable("renewal failed before the store")),
                    Some(Fault::Delay(d) | Fault::InFlight(d) | Fault::Late(d)) => {
                        tokio::time::sleep(d).await;
                        faults.gate().await;
                        keeper.renew().await
                    }
                    Some(Fault::LoseAnswer) => {
                        let _ = keeper.renew().await;
                        return; // the stream breaks: this and every later renew() fails
                    }
                    Some(Fault::DelayAnswer(d)) => {
                        let r = keeper.renew().await;
                        tokio::time::sleep(d).await;
                        r
                    }
                    None => keeper.renew().await,
                };
                faults.gate().await;
                if answer.send(answered).is_err() {
                    return;
                }
            }
        });
        Self { requests, answers, task }
    }
}

impl Drop for FaultyKeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl KeepAlive for FaultyKeepAlive {
    async fn renew(&mut self) -> Result<Duration> {
        self.requests.send(()).map_err(|_| unavailable("keep-alive stream closed"))?;
        // The next answer on the stream, whichever request it belongs to.
        self.answers.recv().await.unwrap_or_else(|| Err(unavailable("keep-alive stream closed")))
    }
}

struct FaultyWatch {
    inner: Box<dyn WatchStream>,
    faults: Faults,
    prefix: String,
    broken: bool,
    /// An error of the inner stream met while coalescing, for the next call.
    failed: Option<leasehold::Error>,
}

#[async_trait]
impl WatchStream for FaultyWatch {
    fn start_revision(&self) -> Revision {
        self.inner.start_revision()
    }

    async fn next(&mut self) -> Result<Vec<WatchEvent>> {
        if self.broken {
            return Err(unavailable("watch broken"));
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut batch = self.inner.next().await?;
        match self.faults.pick(Op::WatchNext, &[&self.prefix]) {
            Some(Fault::FailBefore | Fault::LoseAnswer) => {
                self.broken = true;
                return Err(unavailable("watch broken"));
            }
            Some(Fault::Delay(d) | Fault::InFlight(d) | Fault::Late(d) | Fault::DelayAnswer(d)) => {
                tokio::time::sleep(d).await;
                // What queued up meanwhile comes in the same batch, several revisions in
                // one, as etcd sends a watcher it catches up (up to 1,000 revisions per
                // response): the embedded store sends one revision per batch.
                let revisions = batch.last().map(WatchEvent::revision);
                loop {
                    let mut next = self.inner.next();
                    match std::future::poll_fn(|cx| std::task::Poll::Ready(next.as_mut().poll(cx))).await {
                        std::task::Poll::Ready(Ok(more)) => batch.extend(more),
                        std::task::Poll::Ready(Err(e)) => {
                            self.failed = Some(e);
                            break;
                        }
                        std::task::Poll::Pending => break,
                    }
                }
                if batch.last().map(WatchEvent::revision) != revisions {
                    self.faults.count("coalesced-watch");
                }
            }
            None => {}
        }
        self.faults.gate().await;
        Ok(batch)
    }
}
