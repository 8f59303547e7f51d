//! Live prefix views: an exact copy of the keys under one prefix, kept by one long-lived
//! watch per prefix per client, with waiters woken by predicates (see the [engine's
//! docs](super#prefix-views)), and the task that keeps such a watch going.

use crate::backend::{Backend, KeyValue, Revision, WatchEvent};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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
    pub(crate) fn snapshot(kvs: Vec<KeyValue>, revision: Revision) -> Self {
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
    pub(crate) fn delete(&mut self, key: &str, rev: Revision) {
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
    /// Predicates by waiter id; a waiter that goes away removes its own.
    waiters: Vec<(u64, Check)>,
    next_id: u64,
}

impl ViewState {
    /// Runs every waiter's predicate; keeps those still waiting.
    fn evaluate(&mut self) {
        if !self.synced {
            return;
        }
        let view = &self.view;
        self.waiters.retain_mut(|(_, check)| !check(view));
    }

    /// Adds a waiter (evaluated at once); its id, for [`Registered`].
    fn register(&mut self, check: Check) -> u64 {
        self.next_id += 1;
        self.waiters.push((self.next_id, check));
        self.evaluate();
        self.next_id
    }
}

/// Fails the view when its task ends, however it ends: a permanent error has set `failed`
/// already, but a task that panicked, or whose runtime shut down, ends without one, and its
/// waiters and subscriptions would wait for changes no task will apply (as `deletes.rs`'s
/// feed). With `failed` set they get an error, and the client opens a new view
/// ([`PrefixView::is_failed`]).
struct TaskGone(Arc<Mutex<ViewState>>);

impl Drop for TaskGone {
    fn drop(&mut self) {
        let waiters = {
            let mut st = self.0.lock();
            st.synced = false;
            st.failed.get_or_insert_with(|| "the view's task ended".to_owned());
            std::mem::take(&mut st.waiters) // dropping the senders fails every waiter
        };
        drop(waiters); // outside the lock: a waiter's drop may take it
    }
}

/// Removes a waiter's predicate when the waiter goes away, so waiters that give up on a
/// quiet prefix do not pile up until its next change.
#[derive(Debug)]
struct Registered {
    state: Arc<Mutex<ViewState>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.state.lock().waiters.retain(|(id, _)| *id != self.id);
    }
}

impl std::fmt::Debug for ViewState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewState").field("synced", &self.synced).field("waiters", &self.waiters.len()).finish()
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
            // Moved into the task with `broken`: goes when the task does, however it ends.
            let gone = TaskGone(state.clone());
            move |err: &Error| {
                let _ = &gone;
                let mut st = state.lock();
                let had_synced = std::mem::replace(&mut st.synced, false);
                if !err.is_transient() {
                    st.failed = Some(err.to_string());
                    st.waiters.clear(); // dropping the senders fails every waiter
                }
                had_synced
            }
        };
        let task = WatchTask::keep("prefix watch", "view", prefix.clone(), session, broken);
        Arc::new(Self { prefix, state, _task: task })
    }

    /// Whether the view gave up (a permanent error); the client then opens a new one.
    pub(crate) fn is_failed(&self) -> bool {
        self.state.lock().failed.is_some()
    }

    /// Waits until `pred` returns `Some`, evaluated on the synced view after every change.
    /// Cancel-safe: dropping the future removes the waiter.
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
        let _registered = {
            let mut st = self.state.lock();
            if st.failed.is_some() {
                drop(st);
                return Err(self.failure());
            }
            Registered { state: self.state.clone(), id: st.register(check) }
        };
        rx.await.map_err(|_| self.failure())
    }

    /// A standing subscription: reports `map(view)` once the view is synced, then again
    /// after every applied revision at which it differs from the last value reported (or
    /// from `last`, if given). Values queue up until [`Subscription::next`] takes them, so
    /// none is missed however slowly the subscriber reads. After a broken watch the view
    /// resynchronises and the subscription reports the state it finds (changes made and
    /// undone while the watch was down are not seen). Dropping the subscription removes it.
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
        // If the view failed the sender is dropped: `next` fails at once.
        let registered = st.failed.is_none().then(|| Registered { state: self.state.clone(), id: st.register(check) });
        Subscription { view: self.clone(), rx, _registered: registered }
    }

    /// The error a waiter gets once the view has failed.
    fn failure(&self) -> Error {
        let why = self.state.lock().failed.clone().unwrap_or_else(|| "view closed".into());
        Error::Store(format!("watch on {:?} failed: {why}", self.prefix).into())
    }
}

/// See [`PrefixView::subscribe`].
#[derive(Debug)]
pub(crate) struct Subscription<T> {
    view: Arc<PrefixView>,
    rx: mpsc::UnboundedReceiver<T>,
    _registered: Option<Registered>,
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
    /// Each transient break counts in `leasehold_watch_resyncs_total{kind}`.
    pub(crate) fn keep<S, F>(
        what: &'static str,
        kind: &'static str,
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
                crate::metrics::watch_resync(kind);
                tracing::debug!(prefix, error = %err, ?delay, "{what} broken; resynchronising");
                tokio::time::sleep(delay).await;
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::Write;
    use crate::queue::tests::put;
    use crate::Client;

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

    /// Waiters that give up on a prefix where nothing happens do not pile up.
    #[tokio::test]
    async fn cancelled_waiters_of_a_quiet_view_are_removed() {
        let client = Client::new(MemoryBackend::new());
        let view = client.view("p/");
        count_is(&view, 0).await;
        for _ in 0..100 {
            let never = view.wait_for(|v| (v.entries().count() > 0).then_some(()));
            assert!(tokio::time::timeout(Duration::from_millis(1), never).await.is_err());
        }
        let sub = view.subscribe(None, |v| v.revision());
        drop(sub);
        assert_eq!(view.state.lock().waiters.len(), 0, "cancelled waiters stay until the next event");
    }

    /// A view whose task ends without an error (its runtime shut down while the client
    /// lives on, or it panicked) fails its waiters and subscriptions and says it failed,
    /// so the client opens a new one, as a delete feed does. (It used to stay "synced":
    /// its waiters waited for good, and an election observer on it reported a frozen
    /// leader; a review found it, 2026-12-05.)
    #[test]
    fn a_view_whose_task_is_gone_fails_its_waiters() {
        let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let first = runtime();
        let (client, view) = first.block_on(async {
            let client = Client::new(MemoryBackend::new());
            let view = client.view("p/");
            count_is(&view, 0).await;
            (client, view)
        });
        let waiting = {
            let view = view.clone();
            std::thread::spawn(move || {
                runtime().block_on(async {
                    let mut sub = view.subscribe(None, |v| v.entries().count());
                    let first = sub.next().await;
                    let wait = view.wait_for(|v| (v.entries().count() > 0).then_some(()));
                    (first, tokio::time::timeout(Duration::from_secs(10), wait).await, sub.next().await)
                })
            })
        };
        while view.state.lock().waiters.len() < 2 {
            std::thread::yield_now();
        }
        drop(first); // the view's task goes with its runtime, without an error
        assert!(view.is_failed(), "a view without its task says it failed");
        let (first, waited, next) = waiting.join().unwrap();
        assert_eq!(first.unwrap(), 0);
        assert!(matches!(waited, Ok(Err(_))), "the waiter fails: {waited:?}");
        assert!(next.is_err(), "the subscription fails");
        drop(client);
    }
}
