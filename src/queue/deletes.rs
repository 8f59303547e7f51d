//! The queue waiters' feed: one long-lived **deletes-only** watch per prefix per client.
//!
//! A queued key is admitted by a rule over the keys created before it (see
//! [`enqueue`](super::enqueue)). Those keys are all known the moment the key is created:
//! the create call reads the whole prefix in the same transaction. From then on the set
//! can only shrink, so a waiter needs nothing but the deletions after its own create
//! revision. Each waiter therefore keeps its **own** snapshot (the create call's head) and
//! the feed only delivers deletions to it. On etcd the watch is opened with `NOPUT`, so
//! the server sends nothing for the keys other contenders create: one event per hand-off
//! per watching client instead of two, and less work for etcd, which is the bottleneck of a
//! contended queue (`docs/performance.md`).
//!
//! A register's queue has a feed of its own ([`DeleteFeed::open_register`]) that also
//! carries the register's value: a queued update ends with one transaction that writes the
//! value and deletes its lock key, so the event that admits the next waiter comes in the
//! same message as the value it needs. The feed leaves the value in the client's
//! [`ValueHints`], where the admitted update takes it instead of reading it (one round trip
//! off every hand-off between processes). Its watch is the key `<key>` and the prefix
//! `<key>/` without a filter ([`Backend::watch_key_and_prefix`]: not the other names that
//! start with `<key>`, whose traffic a watch of the prefix `<key>` brought to every waiting
//! client; on etcd the names that sort before `/` still come and are dropped locally); the
//! puts of queue keys it also carries come, in a loop that keeps its place
//! ([`parked`](super::parked)), in the same message as the write.
//!
//! A waiter whose snapshot is older than what the feed can replay (the feed was opened
//! after the snapshot was read, the watch broke, or the replay log was trimmed) reads the
//! prefix again and starts from that read. Reads happen only then, never per hand-off.

use super::{revisions, turn, Rule, Turn, View, WatchTask};
use crate::backend::{Backend, Revision, WatchEvent};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::local::signal::Signal;
use crate::local::value_hints::ValueHints;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::oneshot;

/// How many recent deletions the feed keeps for waiters whose snapshot is a little older
/// than the feed's last event (they raced the watch). Older snapshots read the prefix again.
const REPLAY: usize = 1024;

/// One long-lived deletes-only watch of a prefix; see the [module docs](self).
pub(crate) struct DeleteFeed {
    prefix: String,
    backend: Arc<dyn Backend>,
    state: Arc<Mutex<FeedState>>,
    _task: WatchTask,
}

impl std::fmt::Debug for DeleteFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeleteFeed").field("prefix", &self.prefix).finish()
    }
}

#[derive(Default)]
struct FeedState {
    /// While synced (the watch is up): every deletion after this revision is in `log` or
    /// still to come.
    covers_after: Option<Revision>,
    /// Fired when the feed next syncs (or fails); replaced by an unfired one when a synced
    /// watch breaks. Not a `tokio::sync::watch`: its receivers wake in an order drawn at
    /// random, and the waiters that wake here read the prefix, so their order shows in the
    /// store's history, which must be a function of the simulator's seed
    /// (`docs/guarantees.md`); a [`Signal`] wakes them in the order they came.
    sync: Signal,
    failed: Option<String>,
    log: VecDeque<(Revision, String)>,
    waiters: Vec<Waiter>,
    next_id: u64,
}

struct Waiter {
    /// For [`Registered`].
    id: u64,
    view: View,
    key: String,
    rev: Revision,
    rule: Rule,
    /// Taken when the turn is sent.
    tx: Option<oneshot::Sender<(Turn, Revision)>>,
}

impl Waiter {
    /// The waiter's turn, if decided, and the revision it was decided at.
    fn decided(&self) -> Option<(Turn, Revision)> {
        match turn(&self.view, &self.key, self.rev, &self.rule)? {
            Turn::Wait => None,
            t => Some((t, self.view.revision())),
        }
    }
}

impl FeedState {
    /// The watch broke (or the task ended): forgets what it covered and sends every
    /// registered waiter back to read the prefix (dropping their senders). Whether it had
    /// synced.
    fn unsync(&mut self) -> bool {
        let had_synced = self.covers_after.take().is_some();
        if had_synced {
            self.sync = Signal::new();
        }
        self.log.clear();
        self.waiters.clear();
        had_synced
    }

    /// Fails the feed for good (the first reason is kept); the signal to fire, once the lock
    /// is released, so that waiters see it.
    fn fail(&mut self, why: String) -> Signal {
        self.failed.get_or_insert(why);
        self.sync.clone()
    }

    /// Applies one revision's deletions: to the log and to every waiter; wakes those decided.
    fn apply(&mut self, rev: Revision, keys: &[String]) {
        for key in keys {
            self.log.push_back((rev, key.clone()));
        }
        while self.log.len() > REPLAY {
            let (dropped, _) = self.log.pop_front().expect("non-empty");
            // Everything after `dropped` is still in the log (entries of one revision are
            // contiguous, and a waiter at `dropped` needs none of them).
            self.covers_after = self.covers_after.map(|c| c.max(dropped));
        }
        self.waiters.retain_mut(|w| {
            if w.tx.as_ref().is_none_or(|tx| tx.is_closed()) {
                return false; // the waiter was cancelled
            }
            for key in keys {
                w.view.delete(key, rev);
            }
            match w.decided() {
                Some(t) => {
                    let _ = w.tx.take().expect("checked above").send(t);
                    false
                }
                None => true,
            }
        });
    }
}

impl DeleteFeed {
    /// Opens the feed: starts the task that watches and keeps it in sync.
    pub(crate) fn open(backend: Arc<dyn Backend>, prefix: String) -> Arc<Self> {
        Self::open_with(backend, prefix, None)
    }

    /// Opens the feed of a register's queue: also follows the register's value at `key`
    /// and leaves it in `hints` (see the [module docs](self)).
    pub(crate) fn open_register(
        backend: Arc<dyn Backend>,
        prefix: String,
        key: String,
        hints: Arc<ValueHints>,
    ) -> Arc<Self> {
        debug_assert!(prefix.starts_with(&key), "the register's key prefixes its lock's");
        Self::open_with(backend, prefix, Some(Arc::new((key, hints))))
    }

    fn open_with(
        backend: Arc<dyn Backend>,
        prefix: String,
        value: Option<Arc<(String, Arc<ValueHints>)>>,
    ) -> Arc<Self> {
        let state = Arc::new(Mutex::new(FeedState::default()));
        let session = {
            let (backend, prefix, state) = (backend.clone(), prefix.clone(), state.clone());
            move || feed_session(backend.clone(), prefix.clone(), value.clone(), state.clone())
        };
        let broken = {
            let state = state.clone();
            // Moved into the task with `broken`: goes when the task does, however it ends.
            let gone = TaskGone(state.clone());
            move |err: &Error| {
                let _ = &gone;
                let mut st = state.lock();
                let had_synced = st.unsync();
                if !err.is_transient() {
                    let sync = st.fail(err.to_string());
                    drop(st);
                    sync.fire(); // wake readers: they will see `failed`
                }
                had_synced
            }
        };
        let task = WatchTask::keep("prefix delete watch", "deletes", prefix.clone(), session, broken);
        Arc::new(Self { prefix, backend, state, _task: task })
    }

    /// Whether the feed gave up (a permanent error); the client then opens a new one.
    pub(crate) fn is_failed(&self) -> bool {
        self.state.lock().failed.is_some()
    }

    /// Waits until the feed is synced (tests).
    #[cfg(test)]
    async fn synced(&self) {
        let sync = self.state.lock().sync.clone();
        sync.wait().await;
    }

    /// Waits until the key `(key, rev)` is decided by `rule`, starting from `view` (a read of
    /// the prefix at or after `rev`), and returns the decision with the revision it was made
    /// at (the deletion that admitted the key). Cancel-safe: a dropped waiter is removed.
    pub(crate) async fn wait_turn(
        &self,
        mut view: View,
        key: &str,
        rev: Revision,
        rule: Rule,
    ) -> Result<(Turn, Revision)> {
        loop {
            let rx = {
                let mut st = self.state.lock();
                if let Some(why) = &st.failed {
                    return Err(Error::Store(format!("watch on {:?} failed: {why}", self.prefix).into()));
                }
                match st.covers_after {
                    Some(after) if view.revision() >= after => {
                        let from = view.revision();
                        for (r, k) in st.log.iter().filter(|(r, _)| *r > from) {
                            view.delete(k, *r);
                        }
                        let (tx, rx) = oneshot::channel();
                        st.next_id += 1;
                        let id = st.next_id;
                        let waiter = Waiter { id, view, key: key.to_owned(), rev, rule: rule.clone(), tx: Some(tx) };
                        if let Some(t) = waiter.decided() {
                            return Ok(t);
                        }
                        st.waiters.push(waiter);
                        Some((rx, Registered { state: self.state.clone(), id }))
                    }
                    _ => None,
                }
            };
            if let Some((rx, _registered)) = rx {
                if let Ok(t) = rx.await {
                    return Ok(t);
                }
                // The watch broke (the waiter was dropped with it): read again below.
            }
            // The feed cannot replay from `view`: once it is synced, read the prefix again.
            let sync = {
                let st = self.state.lock();
                (st.covers_after.is_none() && st.failed.is_none()).then(|| st.sync.clone())
            };
            if let Some(sync) = sync {
                sync.wait().await;
            }
            let policy = Backoff::default();
            let (kvs, at) = policy.retry(|| self.backend.range_prefix(&self.prefix, 0)).await?;
            view = View::snapshot(kvs, at);
        }
    }
}

/// Fails the feed when its task ends, however it ends: a permanent error has set `failed`
/// already, but a task that panicked, or whose runtime shut down, ends without one, and its
/// waiters would otherwise wait for a wake-up no task will send. With `failed` set they
/// get an error, and the client opens a new feed ([`DeleteFeed::is_failed`]).
struct TaskGone(Arc<Mutex<FeedState>>);

impl Drop for TaskGone {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.unsync();
        let sync = st.fail("the feed's task ended".to_owned());
        drop(st);
        sync.fire();
    }
}

/// Removes a waiter from the feed when it goes away, so waiters that give up on a quiet
/// prefix do not pile up until its next deletion.
struct Registered {
    state: Arc<Mutex<FeedState>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.state.lock().waiters.retain(|w| w.id != self.id);
    }
}

/// One watch session of the feed: watch, then apply deletions (and record values), until
/// the watch breaks.
async fn feed_session(
    backend: Arc<dyn Backend>,
    prefix: String,
    value: Option<Arc<(String, Arc<ValueHints>)>>,
    state: Arc<Mutex<FeedState>>,
) -> Result<Infallible> {
    let mut watch = match &value {
        Some(value) => backend.watch_key_and_prefix(&value.0, &prefix).await?,
        None => backend.watch_prefix_deletes(&prefix).await?,
    };
    let sync = {
        let mut st = state.lock();
        st.covers_after = Some(watch.start_revision());
        st.sync.clone()
    };
    sync.fire();
    loop {
        let batch = watch.next().await?;
        let mut st = state.lock();
        // Planted for scripts/sim.sh: a batch's deletions all stamped with its first
        // revision (a feed that takes a watch batch for one revision).
        #[cfg(leasehold_sim_mutation_batch)]
        let first = batch.first().map(WatchEvent::revision);
        for (rev, events) in revisions(batch) {
            #[cfg(leasehold_sim_mutation_batch)]
            let rev = first.unwrap_or(rev);
            let mut keys = Vec::new();
            for event in events {
                match event {
                    // Only the lock's keys (the watch's own filter says so too).
                    WatchEvent::Delete { key, .. } if key.starts_with(&prefix) => keys.push(key),
                    // Recorded before the deletion of the same revision wakes anyone.
                    WatchEvent::Put(kv) if value.as_ref().is_some_and(|v| v.0 == kv.key) => {
                        let (key, hints) = &**value.as_ref().expect("checked");
                        hints.seen(key, kv.value, kv.mod_revision);
                    }
                    _ => {}
                }
            }
            st.apply(rev, &keys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use std::time::Duration;
    use tokio::task::JoinHandle;

    async fn create(backend: &MemoryBackend, key: &str, lease: i64) -> Revision {
        backend.create(crate::queue::tests::put(key, lease)).await.unwrap().mine.unwrap().create_revision
    }

    /// A store with `p/a` holding and `p/b` queued behind it, and their revisions.
    async fn a_then_b() -> (MemoryBackend, i64, Revision, Revision) {
        let backend = MemoryBackend::new();
        let lease = backend.grant_lease(Duration::from_secs(60)).await.unwrap().id;
        let a = create(&backend, "p/a", lease).await;
        let b = create(&backend, "p/b", lease).await;
        (backend, lease, a, b)
    }

    async fn head(backend: &MemoryBackend) -> View {
        let (kvs, at) = backend.range_prefix("p/", 0).await.unwrap();
        View::snapshot(kvs, at)
    }

    async fn decided(feed: &DeleteFeed, view: View, key: &str, rev: Revision) -> (Turn, Revision) {
        let wait = feed.wait_turn(view, key, rev, Rule::First);
        tokio::time::timeout(Duration::from_secs(5), wait).await.expect("decided in time").unwrap()
    }

    fn spawn_wait(
        feed: &Arc<DeleteFeed>,
        view: View,
        key: &'static str,
        rev: Revision,
    ) -> JoinHandle<(Turn, Revision)> {
        let feed = feed.clone();
        tokio::spawn(async move { decided(&feed, view, key, rev).await })
    }

    #[tokio::test]
    async fn a_deletion_before_the_feed_opened_is_not_missed() {
        let (backend, _, a, b) = a_then_b().await;
        let snapshot = head(&backend).await; // b waits behind a
        backend.delete_if_created("p/a", a).await.unwrap(); // ... and a goes before any watch
        let feed = DeleteFeed::open(Arc::new(backend.clone()), "p/".into());
        feed.synced().await; // the feed covers only later deletions
        assert_eq!(decided(&feed, snapshot, "p/b", b).await.0, Turn::Ready, "the waiter reads again");
    }

    #[tokio::test]
    async fn a_waiter_is_woken_by_the_deletion_ahead_and_only_then() {
        let (backend, lease, a, b) = a_then_b().await;
        let feed = DeleteFeed::open(Arc::new(backend.clone()), "p/".into());
        let snapshot = head(&backend).await;
        let waiting = spawn_wait(&feed, snapshot, "p/b", b);
        // Keys created behind the waiter, and their deletion, change nothing for it.
        let c = create(&backend, "p/c", lease).await;
        backend.delete_if_created("p/c", c).await.unwrap();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        backend.delete_if_created("p/a", a).await.unwrap();
        let deleted_at = backend.range_prefix("p/", 0).await.unwrap().1;
        assert_eq!(waiting.await.unwrap(), (Turn::Ready, deleted_at), "admitted at the deletion's revision");
        // A waiter whose own key goes (its lease expired) is told so.
        let d = create(&backend, "p/d", lease).await;
        let snapshot = head(&backend).await; // d waits behind b
        let waiting = spawn_wait(&feed, snapshot, "p/d", d);
        backend.delete_if_created("p/d", d).await.unwrap();
        assert_eq!(waiting.await.unwrap().0, Turn::Gone);
    }

    /// Waiters that give up on a quiet prefix do not pile up until its next deletion.
    #[tokio::test]
    async fn cancelled_waiters_of_a_quiet_feed_are_removed() {
        let (backend, _, _, b) = a_then_b().await;
        let feed = DeleteFeed::open(Arc::new(backend.clone()), "p/".into());
        feed.synced().await;
        for _ in 0..100 {
            let snapshot = head(&backend).await;
            let wait = feed.wait_turn(snapshot, "p/b", b, Rule::First);
            assert!(tokio::time::timeout(Duration::from_millis(1), wait).await.is_err());
        }
        assert_eq!(feed.state.lock().waiters.len(), 0, "cancelled waiters stay until the next deletion");
    }

    /// A feed whose task ends without an error (its runtime shut down, or it panicked) fails
    /// its waiters, the registered and those that must read again, instead of leaving them
    /// waiting for a wake-up no task will send; and it says it failed, so the client opens
    /// a new one.
    #[test]
    fn a_feed_whose_task_is_gone_fails_its_waiters() {
        let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let first = runtime();
        let (backend, feed, a, b, snapshot) = first.block_on(async {
            let (backend, _, a, b) = a_then_b().await;
            let feed = DeleteFeed::open(Arc::new(backend.clone()), "p/".into());
            feed.synced().await;
            let snapshot = head(&backend).await;
            (backend, feed, a, b, snapshot)
        });
        let registered = {
            let feed = feed.clone();
            // Registered with the feed (its snapshot is covered), on a runtime of its own.
            std::thread::spawn(move || {
                runtime().block_on(async {
                    let wait = feed.wait_turn(snapshot, "p/b", b, Rule::First);
                    tokio::time::timeout(Duration::from_secs(10), wait).await
                })
            })
        };
        while feed.state.lock().waiters.is_empty() {
            std::thread::yield_now();
        }
        drop(first); // the feed's task goes with its runtime, without an error
        assert!(feed.is_failed(), "a feed without its task says it failed");
        let registered = registered.join().unwrap();
        assert!(matches!(registered, Ok(Err(_))), "the registered waiter fails: {registered:?}");
        runtime().block_on(async {
            backend.delete_if_created("p/a", a).await.unwrap();
            // A snapshot the feed cannot replay from: this waiter must read again.
            let old = View::snapshot(Vec::new(), 0);
            let wait = feed.wait_turn(old, "p/b", b, Rule::First);
            let late = tokio::time::timeout(Duration::from_secs(10), wait).await;
            assert!(matches!(late, Ok(Err(_))), "a later waiter fails too: {late:?}");
        });
    }

    #[tokio::test]
    async fn a_broken_watch_sends_waiters_back_to_read() {
        let (backend, _, a, b) = a_then_b().await;
        let feed = DeleteFeed::open(Arc::new(backend.clone()), "p/".into());
        let snapshot = head(&backend).await;
        let waiting = spawn_wait(&feed, snapshot, "p/b", b);
        tokio::task::yield_now().await;
        // Break the watch, and delete while no watch may be registered: only a fresh read
        // can tell the waiter.
        backend.set_unavailable(true);
        backend.set_unavailable(false);
        backend.delete_if_created("p/a", a).await.unwrap();
        assert_eq!(waiting.await.unwrap().0, Turn::Ready);
        assert!(!feed.is_failed(), "a transient break is not a failure");
    }
}
