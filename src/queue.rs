//! The one wait engine every recipe uses.
//!
//! Every wait follows **one long-lived watch** per prefix per [`Client`](crate::Client),
//! opened the first time something waits there and shared by all local waiters. Why not a
//! watch per wait, as etcd's own recipe does: etcd puts a watch whose start revision is at
//! or below the current revision into its "unsynced" group, which is caught up every
//! 100 ms; under contention almost every hand-off pays that (see `docs/performance.md`). A
//! watch opened once, before it is needed, never does. There are two kinds:
//!
//! # Queue waiters: the delete feed
//!
//! A queued key is admitted by a [`Rule`] over the keys created before it, all of which
//! the create call read in the same transaction; from then on that set only shrinks. So a
//! queue waiter keeps its own snapshot and needs only deletions: the [`DeleteFeed`]
//! (module `deletes`) is a deletes-only watch (on etcd, filtered at the server), and a
//! release costs one event per waiting client and no extra round trip.
//!
//! # Prefix views
//!
//! A [`PrefixView`] is a live, exact copy of the keys under one prefix, ordered by create
//! revision, for the waits that need puts too: the optimistic [`Retry`] ("the holder is
//! gone") and the election observer. It is opened in the order that loses no event:
//! register the watch (it reports everything after its start revision), read the prefix at
//! some revision `S`, then apply only events newer than `S`. Waiters register a predicate;
//! the view re-evaluates predicates after each applied revision and wakes only the waiters
//! whose predicate now holds.
//!
//! A view proves a fact "at revision V" only once it has applied every event up to V.
//! Predicates therefore see [`View::revision`] and must not decide about a key created at
//! revision M before the view has reached M. If the watch breaks (compaction, a lost
//! connection), the view marks itself unsynced, evaluates nothing, and resynchronises from
//! a fresh watch and read; waiters simply keep waiting.
//!
//! # Cancellation-safe enqueue
//!
//! [`Pending`] runs the create RPC in its own task, so cancelling the caller never leaves
//! an RPC whose outcome nobody knows. If the caller is dropped before it turns the pending
//! key into a guard, the drop waits (in the background) for the RPC and deletes the key
//! if it was created, while still holding the session's local queue for that key.
//!
//! # The flows the recipes share
//!
//! | recipe | key | admission rule (on keys older than the waiter's) |
//! |---|---|---|
//! | `Mutex`, `Election` | `<prefix><lease hex>` | it is the oldest key |
//! | `Semaphore` | `<prefix><lease hex>-<n>` | it is among the N oldest keys |
//! | `RwLock` | `<prefix>read/…`, `<prefix>write/…` | reader: no older write key; writer: oldest |
//!
//! - [`enqueue`] is the pessimistic (fair) acquisition: create the key, let the head read
//!   in the same call decide, else wait on the delete feed for the rule.
//! - [`Retry`] is the optimistic acquisition's wait: until a view predicate says the
//!   resource may be free, then a jittered pause.
//! - [`PrefixView::subscribe`] reports every distinct value of a function of the view (the
//!   election observer).

use crate::backend::{
    Backend, Condition, CreateRequest, CreateResponse, KeyValue, Replaced, Revision, WatchEvent, Write,
};
use crate::backoff::{Backoff, Delays};
use crate::error::{Error, Result};
use crate::guard::Holding;
use crate::local::waiter_queue::{Slot, WaiterQueue};
use crate::Session;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

mod deletes;
pub(crate) mod parked;
pub(crate) use deletes::DeleteFeed;

/// The keys under a prefix as of [`revision`](View::revision).
#[derive(Debug, Default)]
pub(crate) struct View {
    /// The revision of the last read: events at or below it are already in the view.
    base: Revision,
    revision: Revision,
    by_create: BTreeMap<Revision, KeyValue>,
    by_key: HashMap<String, Revision>,
}

impl View {
    /// The revision up to which the view is exact.
    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    /// Keys in create-revision order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &KeyValue> {
        self.by_create.values()
    }

    /// The key, if present.
    pub(crate) fn get(&self, key: &str) -> Option<&KeyValue> {
        self.by_key.get(key).and_then(|r| self.by_create.get(r))
    }

    /// A view of `kvs` (a complete head of the prefix, oldest first) read at `revision`.
    fn snapshot(kvs: Vec<KeyValue>, revision: Revision) -> Self {
        let mut view = Self::default();
        view.reset(kvs, revision);
        view
    }

    fn reset(&mut self, kvs: Vec<KeyValue>, revision: Revision) {
        self.by_create.clear();
        self.by_key.clear();
        for kv in kvs {
            self.insert(kv);
        }
        self.base = revision;
        self.revision = revision;
    }

    fn insert(&mut self, kv: KeyValue) {
        if let Some(old) = self.by_key.insert(kv.key.clone(), kv.create_revision) {
            self.by_create.remove(&old);
        }
        self.by_create.insert(kv.create_revision, kv);
    }

    fn apply(&mut self, event: WatchEvent) {
        let rev = event.revision();
        // Compare with the read, not with `revision`: one revision may carry several events
        // (a lease expiry deletes all its keys at once).
        if rev <= self.base {
            return; // already in the snapshot
        }
        match event {
            WatchEvent::Put(kv) => self.insert(kv),
            WatchEvent::Delete { key, .. } => self.remove(&key),
        }
        self.revision = rev;
    }

    /// Applies the deletion of `key` at `rev` (skipped if the snapshot already has it).
    fn delete(&mut self, key: &str, rev: Revision) {
        if rev > self.base {
            self.remove(key);
            self.revision = rev;
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(r) = self.by_key.remove(key) {
            self.by_create.remove(&r);
        }
    }
}

type Check = Box<dyn FnMut(&View) -> bool + Send>;

#[derive(Default)]
struct ViewState {
    synced: bool,
    failed: Option<String>,
    view: View,
    waiters: Vec<Check>,
}

impl ViewState {
    /// Runs every waiter's predicate; keeps those still waiting.
    fn evaluate(&mut self) {
        if !self.synced {
            return;
        }
        let view = &self.view;
        self.waiters.retain_mut(|check| !check(view));
    }
}

/// A live view of one prefix; see the [module docs](self).
pub(crate) struct PrefixView {
    prefix: String,
    state: Arc<Mutex<ViewState>>,
    _task: WatchTask,
}

impl std::fmt::Debug for PrefixView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixView").field("prefix", &self.prefix).finish()
    }
}

impl PrefixView {
    /// Opens the view: starts the task that watches and keeps it in sync.
    pub(crate) fn open(backend: Arc<dyn Backend>, prefix: String) -> Arc<Self> {
        let state = Arc::new(Mutex::new(ViewState::default()));
        let session = {
            let (prefix, state) = (prefix.clone(), state.clone());
            move || view_session(backend.clone(), prefix.clone(), state.clone())
        };
        let broken = {
            let state = state.clone();
            move |err: &Error| {
                let mut st = state.lock();
                let had_synced = std::mem::replace(&mut st.synced, false);
                if !err.is_transient() {
                    st.failed = Some(err.to_string());
                    st.waiters.clear(); // dropping the senders fails every waiter
                }
                had_synced
            }
        };
        let task = WatchTask::keep("prefix watch", prefix.clone(), session, broken);
        Arc::new(Self { prefix, state, _task: task })
    }

    /// Whether the view gave up (a permanent error); the client then opens a new one.
    pub(crate) fn is_failed(&self) -> bool {
        self.state.lock().failed.is_some()
    }

    /// Waits until `pred` returns `Some`, evaluated on the synced view after every change.
    /// Cancel-safe: dropping the future removes the waiter at the next evaluation.
    pub(crate) async fn wait_for<R: Send + 'static>(
        &self,
        mut pred: impl FnMut(&View) -> Option<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = oneshot::channel::<R>();
        let mut tx = Some(tx);
        let check: Check = Box::new(move |view| {
            let Some(sender) = tx.as_ref() else {
                return true;
            };
            if sender.is_closed() {
                return true; // the waiter was cancelled
            }
            match pred(view) {
                Some(r) => {
                    let _ = tx.take().expect("checked").send(r);
                    true
                }
                None => false,
            }
        });
        {
            let mut st = self.state.lock();
            if st.failed.is_some() {
                drop(st);
                return Err(self.failure());
            }
            st.waiters.push(check);
            st.evaluate();
        }
        rx.await.map_err(|_| self.failure())
    }

    /// A standing subscription: reports `map(view)` once the view is synced, then again
    /// after every applied revision at which it differs from the last value reported (or
    /// from `last`, if given). Values queue up until [`Subscription::next`] takes them, so
    /// none is missed however slowly the subscriber reads. After a broken watch the view
    /// resynchronises and the subscription reports the state it finds (changes made and
    /// undone while the watch was down are not seen). Dropping the subscription removes it
    /// at the next evaluation.
    pub(crate) fn subscribe<T>(
        self: &Arc<Self>,
        last: Option<T>,
        mut map: impl FnMut(&View) -> T + Send + 'static,
    ) -> Subscription<T>
    where
        T: PartialEq + Clone + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut last = last;
        let check: Check = Box::new(move |view| {
            if tx.is_closed() {
                return true;
            }
            let now = map(view);
            if last.as_ref() != Some(&now) {
                last = Some(now.clone());
                return tx.send(now).is_err();
            }
            false
        });
        let mut st = self.state.lock();
        if st.failed.is_none() {
            st.waiters.push(check); // else the sender is dropped: `next` fails at once
            st.evaluate();
        }
        Subscription { view: self.clone(), rx }
    }

    /// The error a waiter gets once the view has failed.
    fn failure(&self) -> Error {
        let why = self.state.lock().failed.clone().unwrap_or_else(|| "view closed".into());
        Error::Store(format!("watch on {:?} failed: {why}", self.prefix))
    }
}

/// See [`PrefixView::subscribe`].
#[derive(Debug)]
pub(crate) struct Subscription<T> {
    view: Arc<PrefixView>,
    rx: mpsc::UnboundedReceiver<T>,
}

impl<T> Subscription<T> {
    /// The next value. Fails only if the view failed permanently (subscribe again: the
    /// client then opens a new view).
    pub(crate) async fn next(&mut self) -> Result<T> {
        match self.rx.recv().await {
            Some(v) => Ok(v),
            None => Err(self.view.failure()),
        }
    }
}

/// One watch session of a view: watch, then read, then apply, until the watch breaks.
async fn view_session(backend: Arc<dyn Backend>, prefix: String, state: Arc<Mutex<ViewState>>) -> Result<Infallible> {
    let mut watch = backend.watch_prefix(&prefix).await?;
    let (kvs, revision) = backend.range_prefix(&prefix, 0).await?;
    {
        let mut st = state.lock();
        st.view.reset(kvs, revision.max(watch.start_revision()));
        st.synced = true;
        st.evaluate();
    }
    loop {
        let batch = watch.next().await?;
        let mut st = state.lock();
        // Evaluate after each revision, not each batch (a batch may hold several): a
        // subscriber sees every state the prefix went through.
        for (_, events) in revisions(batch) {
            for event in events {
                st.view.apply(event);
            }
            st.evaluate();
        }
    }
}

/// Splits a watch batch into its revisions, in order.
pub(crate) fn revisions(batch: Vec<WatchEvent>) -> impl Iterator<Item = (Revision, Vec<WatchEvent>)> {
    let mut events = batch.into_iter().peekable();
    std::iter::from_fn(move || {
        let first = events.next()?;
        let rev = first.revision();
        let mut group = vec![first];
        while let Some(e) = events.next_if(|e| e.revision() == rev) {
            group.push(e);
        }
        Some((rev, group))
    })
}

/// The task that keeps one long-lived watch going; aborted when its owner is dropped.
#[derive(Debug)]
pub(crate) struct WatchTask(tokio::task::JoinHandle<()>);

impl Drop for WatchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl WatchTask {
    /// Runs `session` (one watch, until it breaks) again and again, with a growing pause
    /// between. After each break `broken(err)` resets the owner's state and says whether the
    /// session had synced (then the pauses start over); a permanent error ends the task.
    pub(crate) fn keep<S, F>(
        what: &'static str,
        prefix: String,
        mut session: S,
        mut broken: impl FnMut(&Error) -> bool + Send + 'static,
    ) -> Self
    where
        S: FnMut() -> F + Send + 'static,
        F: Future<Output = Result<Infallible>> + Send,
    {
        Self(tokio::spawn(async move {
            let policy = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
            let mut delays = policy.delays();
            loop {
                let err = match session().await {
                    Err(e) => e,
                    Ok(never) => match never {},
                };
                if broken(&err) {
                    delays = policy.delays();
                }
                if !err.is_transient() {
                    tracing::warn!(prefix, error = %err, "{what} failed permanently");
                    return;
                }
                let delay = delays.next().unwrap_or(policy.cap);
                tracing::debug!(prefix, error = %err, ?delay, "{what} broken; resynchronising");
                tokio::time::sleep(delay).await;
            }
        }))
    }
}

/// Where a queued key stands in a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// The rule admits the key.
    Ready,
    /// The key is still there but must wait.
    Wait,
    /// The key is gone (its lease expired, or someone deleted it).
    Gone,
}

/// Evaluates `rule` for the key `(key, rev)` once the view has reached `rev`.
pub(crate) fn turn(view: &View, key: &str, rev: Revision, rule: &Rule) -> Option<Turn> {
    if view.revision() < rev {
        return None; // the view has not seen our key yet: decide nothing
    }
    match view.get(key) {
        Some(kv) if kv.create_revision == rev => Some(if rule.admits(view, rev) { Turn::Ready } else { Turn::Wait }),
        _ => Some(Turn::Gone),
    }
}

/// A queue recipe's admission rule. Every rule depends only on the keys created before the
/// waiter's own (so the head its create call read decides it whenever that head contains
/// the key, with no further read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rule {
    /// The oldest key: `Mutex`, `Election`, an `RwLock` writer.
    First,
    /// Among the `n` oldest keys: `Semaphore`.
    AmongFirst(usize),
    /// No older key starts with this prefix: an `RwLock` reader (no writer ahead).
    NoOlderUnder(String),
}

impl Rule {
    /// Whether the key created at `rev` is admitted in `view`.
    pub(crate) fn admits(&self, view: &View, rev: Revision) -> bool {
        match self {
            Rule::First => view.entries().next().is_some_and(|kv| kv.create_revision == rev),
            Rule::AmongFirst(n) => view.entries().take(*n).any(|kv| kv.create_revision == rev),
            Rule::NoOlderUnder(p) => {
                !view.entries().take_while(|kv| kv.create_revision < rev).any(|kv| kv.key.starts_with(p))
            }
        }
    }
}

/// Takes this session's local queue slot for `key` (one acquisition per key per session at
/// a time), waiting as `wait` allows. `None` if another task of the session holds it and
/// `wait` ran out (at once for `Wait::No`).
pub(crate) async fn local_slot(session: &Session, key: &str, wait: Wait) -> Option<Slot> {
    let queue = session.local_queue(key);
    match wait {
        Wait::No => WaiterQueue::try_acquire(&queue),
        _ => with_deadline(wait, WaiterQueue::acquire(&queue)).await,
    }
}

/// A key being created for an acquisition; deletes it in the background if dropped.
#[derive(Debug)]
pub(crate) struct Pending {
    session: Session,
    key: String,
    stage: Stage,
    local: Option<Slot>,
}

#[derive(Debug)]
enum Stage {
    InFlight(tokio::task::JoinHandle<Result<CreateResponse>>),
    Exists(Revision),
    Done,
}

impl Pending {
    /// Sends `req` (in its own task). `local` is the session's local queue slot for the key;
    /// it is released only after the key is gone or handed to a guard.
    pub(crate) fn start(session: &Session, req: CreateRequest, local: Option<Slot>) -> Self {
        let backend = session.client().backend().clone();
        let key = req.key.clone();
        // Retrying is safe: the key is this session's own, so a retry after an attempt
        // that did write finds the key already there (with this lease) and reports it.
        let task = tokio::spawn(async move { Backoff::default().retry(|| backend.create(req.clone())).await });
        Self { session: session.clone(), key, stage: Stage::InFlight(task), local }
    }

    /// Like [`start`](Self::start) for a key created by a conditional write instead
    /// (`key` absent must be among `conditions`, and a put of `key` under the session's
    /// lease among `writes`): a register update that writes its value, releases its lock
    /// and queues again in one transaction ([`parked`]). Not retried — the write is not
    /// idempotent — so a transport error leaves the outcome unknown and the key is cleaned
    /// up like any other whose create failed. The response says `created` when the
    /// conditions held; it carries no head.
    pub(crate) fn write(
        session: &Session,
        key: String,
        conditions: Vec<Condition>,
        writes: Vec<Write>,
        local: Option<Slot>,
    ) -> Self {
        let backend = session.client().backend().clone();
        let (lease, created_key) = (session.lease_id(), key.clone());
        let task = tokio::spawn(async move {
            let applied = backend.write_if(&conditions, writes).await?;
            let mine = applied.map(|rev| KeyValue {
                key: created_key,
                value: Vec::new(),
                create_revision: rev,
                mod_revision: rev,
                lease,
            });
            Ok(CreateResponse {
                created: mine.is_some(),
                mine,
                head: Vec::new(),
                revision: applied.unwrap_or(0),
                read: None,
            })
        });
        Self { session: session.clone(), key, stage: Stage::InFlight(task), local }
    }

    /// Waits for the create RPC's outcome.
    pub(crate) async fn response(&mut self) -> Result<CreateResponse> {
        let Stage::InFlight(task) = &mut self.stage else {
            return Err(Error::Store("pending: response already taken".into()));
        };
        let outcome = task.await.map_err(|e| Error::Store(format!("create task failed: {e}")));
        let resp = match outcome {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) | Err(e) => {
                // Not known to exist; a transient failure may still have written it.
                self.stage = Stage::Done;
                if e.is_transient() {
                    self.cleanup_unknown();
                }
                return Err(e);
            }
        };
        self.stage = match &resp.mine {
            Some(kv) if kv.lease == self.session.lease_id() || kv.lease == 0 => Stage::Exists(kv.create_revision),
            _ => Stage::Done,
        };
        Ok(resp)
    }

    /// Keeps the key: the caller now owns it (as a guard) and must release it.
    pub(crate) fn keep(mut self) -> Option<Slot> {
        self.stage = Stage::Done;
        self.local.take()
    }

    /// Deletes the key now (a failed try, a timeout) and waits for it. If this future is
    /// dropped, or the delete fails, the key is still [`Stage::Exists`] and `Drop` deletes
    /// it in the background.
    pub(crate) async fn abandon(mut self) -> Result<()> {
        if let Stage::Exists(rev) = self.stage {
            let backend = self.session.client().backend().clone();
            release_retry(&*backend, &self.key, rev).await?;
            self.stage = Stage::Done;
        }
        Ok(())
    }

    /// After a failed RPC whose effect is unknown: delete the key if it is ours.
    fn cleanup_unknown(&mut self) {
        let backend = self.session.client().backend().clone();
        let key = self.key.clone();
        let lease = self.session.lease_id();
        let local = self.local.take();
        self.session.spawn_cleanup(async move {
            if let Ok(Some(kv)) = backend.get(&key).await {
                if kv.lease == lease {
                    let _ = release_retry(&*backend, &key, kv.create_revision).await;
                }
            }
            drop(local);
        });
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let backend = self.session.client().backend().clone();
        let key = std::mem::take(&mut self.key);
        let local = self.local.take();
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Done => {}
            Stage::Exists(rev) => self.session.spawn_cleanup(async move {
                let _ = release_retry(&*backend, &key, rev).await;
                drop(local);
            }),
            Stage::InFlight(task) => {
                let lease = self.session.lease_id();
                self.session.spawn_cleanup(async move {
                    if let Ok(Ok(resp)) = task.await {
                        if let Some(kv) = resp.mine.filter(|kv| kv.lease == lease) {
                            let _ = release_retry(&*backend, &key, kv.create_revision).await;
                        }
                    }
                    drop(local);
                })
            }
        }
    }
}

/// Ownership-safe delete, retried on transient errors. True if this call deleted the key.
pub(crate) async fn release_retry(backend: &dyn Backend, key: &str, create_revision: Revision) -> Result<bool> {
    let policy = Backoff::default();
    policy.retry(|| backend.delete_if_created(key, create_revision)).await
}

/// How long an acquisition may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Not at all: a try.
    No,
    /// Until this instant.
    Until(Instant),
    /// Until admitted (or the session is lost).
    Forever,
}

impl Wait {
    /// At most `timeout` from now.
    pub(crate) fn at_most(timeout: Duration) -> Self {
        Wait::Until(Instant::now() + timeout)
    }
}

/// Runs `fut`, giving up (None) at the deadline of `wait` (`Wait::No` callers only pass
/// futures that do not wait).
pub(crate) async fn with_deadline<T>(wait: Wait, fut: impl Future<Output = T>) -> Option<T> {
    match wait {
        Wait::Forever => Some(fut.await),
        Wait::Until(at) => tokio::time::timeout_at(at, fut).await.ok(),
        Wait::No => Some(fut.await),
    }
}

/// Waits until `pred` returns `Some` on the live view of `prefix`. Fails with `SessionLost`
/// if the session is lost first.
pub(crate) async fn wait_view<R: Send + 'static>(
    session: &Session,
    prefix: &str,
    pred: impl FnMut(&View) -> Option<R> + Send + 'static,
) -> Result<R> {
    let view = session.client().view(prefix);
    let lost = session.lost();
    tokio::select! {
        r = view.wait_for(pred) => r,
        _ = lost => Err(Error::SessionLost { lease: session.lease_id() }),
    }
}

/// Waits for the key `(key, rev)` to be admitted by `rule`, starting from `head` (a read of
/// the whole prefix at or after `rev`) and following the prefix's [`DeleteFeed`]. Fails
/// with `SessionLost` if the key disappears or the session is lost meanwhile. Returns the
/// revision of the deletion that admitted it.
///
/// Why not wait herd-free for the one key ahead, as ZooKeeper's lock recipe does: on etcd
/// that needs a new watch per wait, and a watch created while writes are in flight can land
/// in etcd's "unsynced" group and wait up to 100 ms (measured: the hand-off rate halved and
/// p99 went to ~100 ms). Registering those watches without a start revision on one
/// long-lived multiplexed stream did not help: their delete events still came 87–98 ms
/// late in bursts (625–766 hand-offs/s at 16 clients against the feed's 1,113; see
/// `docs/performance.md`). One long-lived feed per prefix per client never waits so; its
/// cost is one event per deletion per client that waits on the prefix.
///
/// `register`: the key of the register whose lock this is, to follow the register's feed
/// (which also brings its values; see [`DeleteFeed::open_register`]).
pub(crate) async fn wait_turn(
    session: &Session,
    prefix: &str,
    key: &str,
    rev: Revision,
    head: View,
    rule: Rule,
    register: Option<&str>,
) -> Result<Revision> {
    let feed = match register {
        Some(register) => session.client().register_feed(prefix, register),
        None => session.client().delete_feed(prefix),
    };
    let lost = session.lost();
    let t = tokio::select! {
        r = feed.wait_turn(head, key, rev, rule) => r?,
        _ = lost => return Err(Error::SessionLost { lease: session.lease_id() }),
    };
    match t {
        (Turn::Ready, at) => Ok(at),
        _ => Err(Error::SessionLost { lease: session.lease_id() }),
    }
}

/// A view predicate: the key `(key, rev)` that was seen is gone (deleted, or re-created with
/// another revision). The optimistic strategy's "the holder went".
pub(crate) fn gone(key: &str, rev: Revision) -> impl FnMut(&View) -> bool + Send + 'static {
    let key = key.to_owned();
    move |v| v.revision() >= rev && v.get(&key).is_none_or(|kv| kv.create_revision != rev)
}

/// One key to enqueue with [`enqueue`].
#[derive(Debug)]
pub(crate) struct Ticket {
    /// The subsystem, for errors.
    pub(crate) what: &'static str,
    /// The create call (key, value, lease, prefix and how much of its head to read).
    pub(crate) req: CreateRequest,
    /// The session's local queue slot, for recipes whose key is one per session; released
    /// only once the key is gone or handed to the guard.
    pub(crate) local: Option<Slot>,
    /// What to do if the key already exists under this session's lease: take it over (a
    /// re-attached session reclaims its mutex), or leave it alone and return
    /// [`Admission::KeyTaken`] (recipes with one key per acquisition pick another key).
    pub(crate) adopt: bool,
    /// A guard this acquisition replaces (a mutex relock): its key is deleted in the create
    /// call's transaction. If that call fails, or the acquisition is cancelled before its
    /// answer, the guard is dropped and so released in the background as usual.
    pub(crate) replaces: Option<Holding>,
}

/// The outcome of [`enqueue`].
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // returned once per acquisition and taken apart at once
pub(crate) enum Admission {
    /// Admitted. The key as the create call saw it (an adopted key keeps its old value),
    /// and when it was admitted.
    Held(Holding, KeyValue, Admitted),
    /// A try that was not admitted at once, or a deadline that passed; the key is gone.
    NotAdmitted,
    /// The key already existed under this session's lease and `adopt` was false; nothing
    /// was written or deleted.
    KeyTaken,
}

/// When an [`enqueue`] was admitted, and what its create call read besides.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The revision from which the key holds: the create call's when admitted at once,
    /// otherwise that of the deletion that admitted it.
    pub(crate) at: Revision,
    /// [`CreateRequest::read`] as of `at`, when the key was admitted at once (`None` if it
    /// waited: the create call's read is older than its admission).
    pub(crate) read: Option<Option<KeyValue>>,
}

/// The pessimistic (queued, fair) acquisition every queue recipe runs: create the key under
/// the session's lease through [`Pending`] (cancellation-safe), and unless `rule` admits it
/// at once, wait on the prefix's delete feed until it does. A try (`Wait::No`) or a deadline
/// that passes deletes the key again and returns [`Admission::NotAdmitted`].
///
/// A [`Rule`] depends only on the keys created before the waiter's: the head the create call
/// read (the whole prefix, when the caller may wait) decides it at once, and deletions are
/// all that can change it afterwards.
pub(crate) async fn enqueue(session: &Session, ticket: Ticket, wait: Wait, rule: Rule) -> Result<Admission> {
    let Ticket { what, mut req, local, adopt, replaces } = ticket;
    if wait != Wait::No {
        // A waiter follows only deletions from here on, so it needs every key ahead of it.
        req.head_limit = 0;
    }
    if let Some(old) = &replaces {
        req.replaces = Some(Replaced { key: old.key().to_owned(), revision: Some(old.revision()) });
    }
    let (key, prefix, register) = (req.key.clone(), req.prefix.clone(), req.read.clone());
    let mut pending = Pending::start(session, req, local);
    let resp = pending.response().await?;
    if let Some(old) = replaces {
        old.released_elsewhere();
    }
    let Some(mine) = resp.mine.clone().filter(|kv| kv.lease == session.lease_id()) else {
        return Err(Error::Store(format!("{what}: {key} exists under another lease")));
    };
    if !resp.created && !adopt {
        drop(pending.keep()); // not this acquisition's key: leave it
        return Ok(Admission::KeyTaken);
    }
    let rev = mine.create_revision;
    let head = View::snapshot(resp.head, resp.revision);
    let waited = turn(&head, &key, rev, &rule) != Some(Turn::Ready);
    let admitted = if waited {
        if wait == Wait::No {
            pending.abandon().await?;
            return Ok(Admission::NotAdmitted);
        }
        match with_deadline(wait, wait_turn(session, &prefix, &key, rev, head, rule, register.as_deref())).await {
            Some(at) => Admitted { at: at?, read: None },
            None => {
                pending.abandon().await?;
                return Ok(Admission::NotAdmitted);
            }
        }
    } else {
        Admitted { at: resp.revision, read: Some(resp.read) }
    };
    let local = pending.keep();
    Ok(Admission::Held(Holding::new(session.clone(), key, rev, local).contended(waited), mine, admitted))
}

/// The waiting half of an optimistic (compare-and-swap) acquisition. After an attempt that
/// found the resource busy, [`Retry::after`] waits until the live view says it may be free
/// and then a jittered pause from the recipe's [`Backoff`], so that waiters woken by the
/// same release do not all retry at once. Not fair: nobody keeps a place in a queue.
#[derive(Debug)]
pub(crate) struct Retry {
    wait: Wait,
    cap: Duration,
    delays: Delays,
}

impl Retry {
    pub(crate) fn new(wait: Wait, backoff: &Backoff) -> Self {
        Self { wait, cap: backoff.cap, delays: backoff.delays() }
    }

    /// Waits until `free` holds on the live view of `prefix`, then pauses. False when the
    /// caller must give up instead: a try, or the deadline passed.
    pub(crate) async fn after(
        &mut self,
        session: &Session,
        prefix: &str,
        mut free: impl FnMut(&View) -> bool + Send + 'static,
    ) -> Result<bool> {
        if self.wait == Wait::No {
            return Ok(false);
        }
        let pause = self.delays.next().unwrap_or(self.cap);
        let waited = async {
            wait_view(session, prefix, move |v| free(v).then_some(())).await?;
            tokio::time::sleep(pause).await;
            Ok::<(), Error>(())
        };
        match with_deadline(self.wait, waited).await {
            Some(r) => r.map(|()| true),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::{Precondition, Write};
    use crate::Client;

    /// A create request under `p/` (also used by the delete feed's tests).
    pub(super) fn put(key: &str, lease: i64) -> CreateRequest {
        CreateRequest {
            key: key.into(),
            value: Vec::new(),
            lease,
            precondition: Precondition::KeyAbsent,
            prefix: "p/".into(),
            head_limit: 0,
            replaces: None,
            read: None,
        }
    }

    async fn count_is(view: &PrefixView, n: usize) {
        let wait = view.wait_for(move |v| (v.entries().count() == n).then_some(()));
        tokio::time::timeout(Duration::from_secs(5), wait).await.expect("view reached the count").unwrap();
    }

    #[tokio::test]
    async fn applies_every_event_of_one_revision() {
        let backend = MemoryBackend::new();
        let client = Client::new(backend.clone());
        let lease = backend.grant_lease(Duration::from_secs(60)).await.unwrap().id;
        let view = client.view("p/");
        count_is(&view, 0).await;
        for key in ["p/a", "p/b", "p/c"] {
            backend.create(put(key, lease)).await.unwrap();
        }
        count_is(&view, 3).await;
        backend.expire_lease(lease); // one revision, three delete events
        count_is(&view, 0).await;
    }

    #[tokio::test]
    async fn subscription_reports_each_distinct_state_in_order() {
        let backend = MemoryBackend::new();
        let client = Client::new(backend.clone());
        let lease = backend.grant_lease(Duration::from_secs(60)).await.unwrap().id;
        let mut sub = client.view("p/").subscribe(None, |v| v.entries().count());
        assert_eq!(sub.next().await.unwrap(), 0, "the synced state comes first");
        for key in ["p/a", "p/b", "p/c"] {
            backend.create(put(key, lease)).await.unwrap();
        }
        // An update that leaves the count as it was is not reported.
        let rewrite = Write::Put { key: "p/a".into(), value: b"x".to_vec(), lease: Some(lease) };
        let created = backend.get("p/a").await.unwrap().unwrap().create_revision;
        let held = [crate::backend::Condition::Created { key: "p/a".into(), revision: created }];
        assert!(backend.write_if(&held, vec![rewrite]).await.unwrap().is_some());
        backend.delete_if_created("p/b", backend.get("p/b").await.unwrap().unwrap().create_revision).await.unwrap();
        // Read only now: every state was queued meanwhile.
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap());
        }
        assert_eq!(seen, [1, 2, 3, 2]);
    }

    #[tokio::test]
    async fn a_dropped_subscription_is_removed() {
        let backend = MemoryBackend::new();
        let client = Client::new(backend.clone());
        let view = client.view("p/");
        let mut sub = view.subscribe(None, |v| v.revision());
        sub.next().await.unwrap();
        drop(sub);
        let lease = backend.grant_lease(Duration::from_secs(60)).await.unwrap().id;
        backend.create(put("p/a", lease)).await.unwrap();
        count_is(&view, 1).await; // an evaluation after the drop
        assert_eq!(view.state.lock().waiters.len(), 0);
    }
}
