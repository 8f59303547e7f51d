//! The embedded in-process backend: same semantics as etcd, no server.
//!
//! One global revision counter, leases that expire on tokio's clock (so tests can run
//! with paused time), prefix watches that deliver each revision as one batch, and the
//! same conditional writes. [`MemoryBackend::set_unavailable`] and
//! [`MemoryBackend::expire_lease`] inject faults for tests: every call fails with
//! [`Error::Unavailable`] while unavailable, as a partitioned client would see.

use super::*;
use crate::error::Error;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// The in-memory store. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    lease_changed: Arc<Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.lease_changed.notify_one(); // lets the reaper see that the store is gone
    }
}

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    kvs: BTreeMap<String, KeyValue>,
    leases: HashMap<LeaseId, LeaseEntry>,
    /// No lease expires before this (`None`: not known). Every call expires the leases due,
    /// and a scan of all of them on each call was a quarter of the instructions of 64
    /// tasks updating one register (callgrind, 2026-12-04): now only a call at or after
    /// this scans. A renewal only moves an expiry later, so this stays a lower bound.
    due_from: Option<Instant>,
    next_lease: LeaseId,
    watchers: Vec<Watcher>,
    unavailable: bool,
    reaper_started: bool,
}

#[derive(Debug)]
struct LeaseEntry {
    ttl: Duration,
    expires: Instant,
    keys: BTreeSet<String>,
}

#[derive(Debug)]
struct Watcher {
    prefix: String,
    tx: mpsc::UnboundedSender<Vec<WatchEvent>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// While `true`, every call fails with [`Error::Unavailable`] (leases keep expiring).
    /// Open watches break too, as they would when a client is cut off.
    pub fn set_unavailable(&self, unavailable: bool) {
        let mut st = self.inner.state.lock();
        st.unavailable = unavailable;
        if unavailable {
            st.watchers.clear();
        }
    }

    /// Expires `lease` now, as if its TTL had run out on the server.
    pub fn expire_lease(&self, lease: LeaseId) {
        self.inner.state.lock().revoke(lease);
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.inner.state.lock().revision
    }

    /// The keys under `prefix` now (leases due by now expired first), oldest create
    /// revision first, and the revision: a read that does not yield, for checkers that
    /// must see the store at the very moment a client believes something (a simulation's
    /// history checker). Works while the store is marked unavailable.
    pub fn snapshot(&self, prefix: &str) -> (Vec<KeyValue>, Revision) {
        let mut st = self.inner.state.lock();
        st.expire_due(Instant::now());
        (st.prefix(prefix, 0), st.revision)
    }

    /// Locks the state after expiring due leases and checking availability; starts the
    /// reaper that expires leases when nobody calls.
    /// Every call yields to the scheduler once before touching the state, as a call over
    /// the network would, so that concurrent callers interleave as they do on a real store.
    async fn call(&self) -> Result<parking_lot::MutexGuard<'_, State>> {
        tokio::task::yield_now().await;
        self.state()
    }

    fn state(&self) -> Result<parking_lot::MutexGuard<'_, State>> {
        let mut st = self.inner.state.lock();
        st.expire_due(Instant::now());
        if !st.reaper_started {
            st.reaper_started = true;
            tokio::spawn(reaper(Arc::downgrade(&self.inner), self.inner.lease_changed.clone()));
        }
        if st.unavailable {
            return Err(Error::Unavailable("memory: store marked unavailable".into()));
        }
        Ok(st)
    }
}

/// Expires leases at their deadlines, so watchers see deletes without other traffic.
async fn reaper(inner: Weak<Inner>, lease_changed: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else { return };
            let mut st = inner.state.lock();
            st.expire_due(Instant::now());
            st.due_from
        };
        let changed = lease_changed.notified();
        match next {
            Some(at) => {
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep_until(at) => {}
                    _ = changed => {}
                }
            }
            None => changed.await,
        }
    }
}

/// When a lease granted or renewed now with `ttl` expires (a TTL past what the clock can
/// count: in 30 years, tokio's own "never").
fn expiry(ttl: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(ttl).unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

fn in_prefix(key: &str, prefix: &str) -> bool {
    key.starts_with(prefix)
}

impl State {
    fn expire_due(&mut self, now: Instant) {
        if self.due_from.is_some_and(|from| now < from) {
            return;
        }
        let mut due: Vec<LeaseId> = self.leases.iter().filter(|(_, l)| l.expires <= now).map(|(id, _)| *id).collect();
        // In a fixed order (each expiry is a revision of its own): the same run gives the
        // same history.
        due.sort_unstable_by_key(|id| (self.leases[id].expires, *id));
        for id in due {
            self.revoke(id);
        }
        self.due_from = self.leases.values().map(|l| l.expires).min();
    }

    /// Deletes a lease and its keys, all in one revision.
    fn revoke(&mut self, lease: LeaseId) {
        let Some(entry) = self.leases.remove(&lease) else {
            return;
        };
        let keys: Vec<String> =
            entry.keys.into_iter().filter(|k| self.kvs.get(k).is_some_and(|kv| kv.lease == lease)).collect();
        if keys.is_empty() {
            return;
        }
        self.revision += 1;
        let rev = self.revision;
        let events = keys
            .into_iter()
            .map(|key| {
                self.kvs.remove(&key);
                WatchEvent::Delete { key, revision: rev }
            })
            .collect();
        self.publish(events);
    }

    fn publish(&mut self, events: Vec<WatchEvent>) {
        self.watchers.retain(|w| {
            let mine: Vec<WatchEvent> = events
                .iter()
                .filter(|e| match e {
                    WatchEvent::Put(kv) => in_prefix(&kv.key, &w.prefix),
                    WatchEvent::Delete { key, .. } => in_prefix(key, &w.prefix),
                })
                .cloned()
                .collect();
            mine.is_empty() || w.tx.send(mine).is_ok()
        });
    }

    /// Applies writes in one new revision. Writes that name a key twice are refused, as
    /// etcd refuses them (see [`Backend::transact`]); the embedded store applied them in
    /// order until 2026-12-05, so such a write list worked in tests and failed on etcd.
    fn apply(&mut self, writes: Vec<Write>) -> Result<()> {
        super::distinct_keys(&writes)?;
        for w in &writes {
            if let Write::Put { lease: Some(l), .. } = w {
                if *l != 0 && !self.leases.contains_key(l) {
                    return Err(Error::LeaseNotFound { lease: *l });
                }
            }
        }
        self.revision += 1;
        let rev = self.revision;
        let mut events = Vec::new();
        for w in writes {
            match w {
                Write::Put { key, value, lease } => {
                    let lease = lease.unwrap_or(0);
                    let create_revision = self.kvs.get(&key).map_or(rev, |kv| kv.create_revision);
                    if let Some(old) = self.kvs.get(&key) {
                        if old.lease != lease {
                            if let Some(l) = self.leases.get_mut(&old.lease) {
                                l.keys.remove(&key);
                            }
                        }
                    }
                    if let Some(l) = self.leases.get_mut(&lease) {
                        l.keys.insert(key.clone());
                    }
                    let kv = KeyValue { key: key.clone(), value, create_revision, mod_revision: rev, lease };
                    self.kvs.insert(key, kv.clone());
                    events.push(WatchEvent::Put(kv));
                }
                Write::Delete { key } => {
                    if self.kvs.remove(&key).is_some() {
                        events.push(WatchEvent::Delete { key, revision: rev });
                    }
                }
            }
        }
        if events.is_empty() {
            self.revision -= 1;
        } else {
            self.publish(events);
        }
        Ok(())
    }

    /// Whether any key starts with `prefix` (without collecting them).
    fn occupied(&self, prefix: &str) -> bool {
        use std::ops::Bound;
        let mut keys = self.kvs.range::<str, _>((Bound::Included(prefix), Bound::Unbounded));
        keys.next().is_some_and(|(k, _)| in_prefix(k, prefix))
    }

    fn prefix(&self, prefix: &str, limit: usize) -> Vec<KeyValue> {
        let mut kvs: Vec<KeyValue> = self
            .kvs
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| in_prefix(k, prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        kvs.sort_by_key(|kv| kv.create_revision);
        if limit > 0 {
            kvs.truncate(limit);
        }
        kvs
    }
}

struct MemoryKeepAlive {
    backend: MemoryBackend,
    lease: LeaseId,
}

#[async_trait]
impl KeepAlive for MemoryKeepAlive {
    async fn renew(&mut self) -> Result<Duration> {
        let mut st = self.backend.call().await?;
        let Some(l) = st.leases.get_mut(&self.lease) else {
            return Err(Error::LeaseNotFound { lease: self.lease });
        };
        l.expires = expiry(l.ttl);
        let ttl = l.ttl;
        drop(st);
        self.backend.inner.lease_changed.notify_one();
        Ok(ttl)
    }
}

struct MemoryWatch {
    backend: MemoryBackend,
    start: Revision,
    rx: mpsc::UnboundedReceiver<Vec<WatchEvent>>,
}

#[async_trait]
impl WatchStream for MemoryWatch {
    fn start_revision(&self) -> Revision {
        self.start
    }

    async fn next(&mut self) -> Result<Vec<WatchEvent>> {
        match self.rx.recv().await {
            Some(batch) => Ok(batch),
            None => Err(Error::Unavailable("memory: watch closed".into())),
        }
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.backend.inner.state.lock().watchers.retain(|w| !w.tx.is_closed());
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let mut st = self.call().await?;
        st.next_lease += 1;
        // Ids look like etcd's: large, positive, not sequential-looking.
        let id = 0x694d_0000_0000 + st.next_lease;
        let expires = expiry(ttl);
        st.leases.insert(id, LeaseEntry { ttl, expires, keys: BTreeSet::new() });
        st.due_from = st.due_from.map(|from| from.min(expires));
        drop(st);
        self.inner.lease_changed.notify_one();
        Ok(Lease { id, ttl })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Box<dyn KeepAlive>> {
        drop(self.call().await?);
        Ok(Box::new(MemoryKeepAlive { backend: self.clone(), lease }))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.call().await?.revoke(lease);
        Ok(())
    }

    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<Duration>> {
        let st = self.call().await?;
        Ok(st.leases.get(&lease).map(|l| l.expires.saturating_duration_since(Instant::now())))
    }

    async fn lease_keys(&self, lease: LeaseId) -> Result<Vec<String>> {
        let st = self.call().await?;
        Ok(st.kvs.values().filter(|kv| kv.lease == lease).map(|kv| kv.key.clone()).collect())
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.call().await?.kvs.get(key).cloned())
    }

    async fn range_prefix(&self, prefix: &str, limit: usize) -> Result<(Vec<KeyValue>, Revision)> {
        let st = self.call().await?;
        Ok((st.prefix(prefix, limit), st.revision))
    }

    async fn create(&self, req: CreateRequest) -> Result<CreateResponse> {
        let mut st = self.call().await?;
        let fence_moved = req.fence.as_ref().and_then(|fence| {
            let now = st.kvs.get(&fence.key).map(|kv| kv.mod_revision);
            (now != fence.revision).then_some(now.unwrap_or(0))
        });
        let ok = fence_moved.is_none()
            && match req.precondition {
                Precondition::KeyAbsent => !st.kvs.contains_key(&req.key),
                Precondition::PrefixEmpty => !st.kvs.contains_key(&req.key) && st.prefix(&req.prefix, 1).is_empty(),
            };
        let mut writes = Vec::new();
        if let Some(Replaced { key, revision }) = req.replaces.filter(|_| fence_moved.is_none()) {
            let current = st.kvs.get(&key).map(|kv| kv.create_revision);
            if current.is_some() && (revision.is_none() || current == revision) {
                writes.push(Write::Delete { key });
            }
        }
        if ok {
            writes.push(Write::Put { key: req.key.clone(), value: req.value, lease: Some(req.lease) });
        }
        if !writes.is_empty() {
            st.apply(writes)?;
        }
        Ok(CreateResponse {
            created: ok,
            mine: st.kvs.get(&req.key).cloned(),
            head: st.prefix(&req.prefix, req.head_limit),
            revision: st.revision,
            read: req.read.and_then(|k| st.kvs.get(&k).cloned()),
            fence_moved,
        })
    }

    async fn delete_if_created(&self, key: &str, create_revision: Revision) -> Result<bool> {
        let mut st = self.call().await?;
        if st.kvs.get(key).is_some_and(|kv| kv.create_revision == create_revision) {
            st.apply(vec![Write::Delete { key: key.to_owned() }])?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<CasResponse> {
        let mut st = self.call().await?;
        let current = st.kvs.get(key).map(|kv| kv.mod_revision);
        let swapped = current == expected;
        if swapped {
            st.apply(vec![Write::Put { key: key.to_owned(), value, lease }])?;
        }
        Ok(CasResponse { swapped, current: st.kvs.get(key).cloned(), revision: st.revision })
    }

    async fn transact(&self, conditions: &[Condition], writes: Vec<Write>, reads: &[Read]) -> Result<Transacted> {
        let mut st = self.call().await?;
        let holds = conditions.iter().all(|c| match c {
            Condition::Created { key, revision } => st.kvs.get(key).is_some_and(|kv| kv.create_revision == *revision),
            Condition::Modified { key, revision } => st.kvs.get(key).map(|kv| kv.mod_revision) == *revision,
            Condition::PrefixEmpty { prefix } => !st.occupied(prefix),
        });
        let applied = match holds {
            // Nothing to write changes nothing: no new revision (as on etcd).
            true if writes.is_empty() => Some(st.revision),
            true => {
                st.apply(writes)?;
                Some(st.revision)
            }
            false => None,
        };
        let reads = reads
            .iter()
            .map(|r| match r {
                Read::Key(key) => ReadValue::Key(st.kvs.get(key).cloned()),
                Read::Occupied(prefix) => ReadValue::Occupied(st.occupied(prefix)),
            })
            .collect();
        Ok(Transacted { applied, reads })
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<Box<dyn WatchStream>> {
        let mut st = self.call().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        st.watchers.push(Watcher { prefix: prefix.to_owned(), tx });
        Ok(Box::new(MemoryWatch { backend: self.clone(), start: st.revision, rx }))
    }
}
