//! The narrow store interface every recipe is written against.
//!
//! # Contract
//!
//! A backend is a linearizable key-value store with leases and prefix watches. Every
//! implementation must keep these rules; the conformance suite (`tests/conformance/`)
//! checks them the same way on every backend.
//!
//! 1. **Revisions.** The store has one revision counter. Every write that changes
//!    something gets a revision greater than every earlier write's. A key's
//!    `create_revision` is the revision that created it (it changes when a key is deleted
//!    and created again); `mod_revision` is the revision of its last change.
//! 2. **Leases.** A key written with a lease is deleted, with a delete event, when the lease
//!    expires or is revoked. [`Backend::grant_lease`] returns the TTL the server granted
//!    (it may round up); a renewal restarts that TTL when it *arrives* at the server.
//! 3. **Order.** [`Backend::range_prefix`] and the `head` of [`CreateResponse`] list keys in
//!    ascending `create_revision` order, and carry the revision they were read at.
//! 4. **Conditional writes are atomic**: [`Backend::create`], [`Backend::delete_if_created`],
//!    [`Backend::compare_and_swap`] and [`Backend::transact`] (with [`Backend::write_if`])
//!    check and write in one step. A write whose condition fails changes nothing and does not
//!    advance the revision. The reads of a [`Backend::transact`] are made in that same step:
//!    after its writes when they were applied, otherwise of the store the failed check saw.
//! 5. **Watches.** [`Backend::watch_prefix`] returns only once the watch is registered; it
//!    then delivers every change under the prefix with a revision greater than the
//!    watch's `start_revision`, in revision order, each revision complete in one batch. When
//!    it cannot keep that promise (compaction, cancellation, a broken connection) the next
//!    call to [`WatchStream::next`] returns an error, and the caller resynchronises.
//!    [`Backend::watch_prefix_deletes`] keeps the same promise for deletions only (a queue
//!    waiter needs nothing else; a store that filters at the server sends half the events),
//!    and [`Backend::watch_key_and_prefix`] for one key and one prefix that extends it (a
//!    register's value and its lock's queue), without the other keys that start with the key.
//! 6. **Errors.** Transport failures and unavailable members are [`Error::Unavailable`](crate::Error::Unavailable)
//!    (retried); everything else is permanent. A call never waits longer than the backend's
//!    request timeout.
//!
//! Keys are UTF-8 strings; the recipes build them as `<namespace><name>/<suffix>`.

use crate::error::Result;
use async_trait::async_trait;
use std::fmt::Debug;
use std::time::Duration;

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd;
pub mod memory;
#[cfg(feature = "tikv")]
#[cfg_attr(docsrs, doc(cfg(feature = "tikv")))]
pub mod tikv;

/// A lease id (etcd's int64 lease id).
pub type LeaseId = i64;
/// A store revision.
pub type Revision = i64;

/// A stored key and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Revision that created the key.
    pub create_revision: Revision,
    /// Revision of the last change to the key.
    pub mod_revision: Revision,
    /// The lease the key is attached to (0 for none).
    pub lease: LeaseId,
}

/// What must hold for [`Backend::create`] to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// The key does not exist.
    KeyAbsent,
    /// No key exists under the request's `prefix`, and the key itself does not exist (it
    /// may lie outside the prefix: a read lock's key is created while no writer's key
    /// exists). Never an overwrite: `created` means a new key, with a new create revision.
    PrefixEmpty,
}

/// A create-if-absent under a lease, which also reads the head of a prefix in the same step.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The key to create.
    pub key: String,
    /// Its value.
    pub value: Vec<u8>,
    /// The lease to attach it to.
    pub lease: LeaseId,
    /// When to write.
    pub precondition: Precondition,
    /// The prefix whose head is read in the same step.
    pub prefix: String,
    /// How many keys of the head to return (oldest first); 0 for all.
    pub head_limit: usize,
    /// A key of the same session to delete in the same step, before the precondition's
    /// effect is read back: a mutex [relock](crate::Mutex::relock) releases its old key and
    /// queues its new one in one transaction. Applied whether or not the create writes.
    pub replaces: Option<Replaced>,
    /// Another key to read in the same step, returned as [`CreateResponse::read`]: a
    /// queued [`Register`](crate::Register) update reads its value while it queues, so
    /// when it is admitted at once it needs no read of its own.
    pub read: Option<String>,
    /// A guard against a late copy of this request: when given, the call changes nothing
    /// (neither the create nor `replaces`) unless [`Fence::key`] has [`Fence::revision`]. A
    /// session moves its fence key on after a request's outcome was unknown, so a copy of
    /// that request which reaches the store later (a retransmission, a proposal committed
    /// after its caller timed out) can never create a key that nothing of the session owns.
    pub fence: Option<Fence>,
}

/// What must hold for a [`CreateRequest`] to change anything (see [`CreateRequest::fence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The fence key.
    pub key: String,
    /// Its expected `mod_revision`; `None`: the key is absent.
    pub revision: Option<Revision>,
}

/// The key a [`CreateRequest`] deletes in the same step (see [`CreateRequest::replaces`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    /// The key. It must differ from the request's key (etcd refuses a transaction that
    /// deletes and puts one key).
    pub key: String,
    /// Delete it only if it has this create revision (a guard's release); `None`: whatever
    /// it has (a key named after the session's own lease that no acquisition holds).
    pub revision: Option<Revision>,
}

/// The outcome of [`Backend::create`].
#[derive(Debug, Clone)]
pub struct CreateResponse {
    /// Whether this call wrote the key.
    pub created: bool,
    /// The key as it is now, if it exists (created by this call or already there).
    pub mine: Option<KeyValue>,
    /// The first `head_limit` keys under the prefix, oldest first, after the call.
    pub head: Vec<KeyValue>,
    /// The store revision the response reflects.
    pub revision: Revision,
    /// [`CreateRequest::read`] as of `revision` (`None` if not asked for or absent).
    pub read: Option<KeyValue>,
    /// `Some(r)` if the request's [fence](CreateRequest::fence) did not hold: nothing was
    /// written (`created` is false) and the fence key's `mod_revision` is now `r` (0 if it
    /// is absent). `None` if it held or there was none.
    pub fence_moved: Option<Revision>,
}

/// The outcome of [`Backend::compare_and_swap`].
#[derive(Debug, Clone)]
pub struct CasResponse {
    /// Whether the new value was written.
    pub swapped: bool,
    /// The key as it is after the call.
    pub current: Option<KeyValue>,
    /// The store revision the response reflects.
    pub revision: Revision,
}

/// A condition of [`Backend::transact`] and [`Backend::write_if`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `key` exists with this `create_revision` (a guard still holds).
    Created {
        /// The key.
        key: String,
        /// Its expected create revision.
        revision: Revision,
    },
    /// `key`'s `mod_revision` is `revision`, or the key is absent if `None` (nobody wrote it since it was read).
    Modified {
        /// The key.
        key: String,
        /// Its expected mod revision; `None` for "absent".
        revision: Option<Revision>,
    },
    /// No key exists under `prefix` (nobody holds or waits for a lock there).
    PrefixEmpty {
        /// The prefix.
        prefix: String,
    },
}

/// One write of [`Backend::transact`] and [`Backend::write_if`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Put `value` at `key`, attached to `lease` if given.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The lease, if any.
        lease: Option<LeaseId>,
    },
    /// Delete `key`.
    Delete {
        /// The key.
        key: String,
    },
}

/// A read of [`Backend::transact`], made in the same step as its check and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// One key: found as [`ReadValue::Key`].
    Key(String),
    /// Whether any key exists under a prefix (someone holds or waits for the lock there):
    /// found as [`ReadValue::Occupied`]. A store that can count without reading the keys
    /// (etcd's `count_only`) should.
    Occupied(String),
}

/// What a [`Read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadValue {
    /// The key, if it exists.
    Key(Option<KeyValue>),
    /// Whether any key exists under the prefix.
    Occupied(bool),
}

/// The outcome of [`Backend::transact`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transacted {
    /// The revision of the step that applied the writes (every key it put has that
    /// `mod_revision`); `None` if a condition failed and nothing was written.
    pub applied: Option<Revision>,
    /// What each read found, in the order asked.
    pub reads: Vec<ReadValue>,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or updated.
    Put(KeyValue),
    /// A key was deleted at `revision`.
    Delete {
        /// The deleted key.
        key: String,
        /// The revision of the deletion.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: LeaseId,
    /// The TTL the server granted.
    pub ttl: Duration,
}

/// A registered prefix watch; see rule 5 of the [contract](self).
#[async_trait]
pub trait WatchStream: Send {
    /// The revision the watch was registered at: it reports every change after it.
    fn start_revision(&self) -> Revision;
    /// The next batch of events (one or more complete revisions, in order). An error means
    /// the watch is broken and events may have been missed.
    async fn next(&mut self) -> Result<Vec<WatchEvent>>;
}

/// A stream of renewals for one lease (one keep-alive stream per session).
///
/// A renewal restarts the lease's TTL when it *arrives* at the server (rule 2 of the
/// [contract](self)). Answers may be paired with requests by order only, as on etcd's
/// stream; so a stream on which a `renew` was dropped before it returned must not be used
/// again (its next answer may be the abandoned request's): the session drops it and opens a
/// new one, and an implementation whose answers can be mistaken so refuses further calls
/// with [`Error::Unavailable`](crate::Error::Unavailable).
#[async_trait]
pub trait KeepAlive: Send {
    /// Renews the lease once. Returns the TTL it now has, or
    /// [`Error::LeaseNotFound`](crate::Error::LeaseNotFound) if it expired.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a dropped call may have sent its request; see the trait docs.
    async fn renew(&mut self) -> Result<Duration>;

    /// Whether opening this stream renewed the lease: its opening request was a renewal
    /// that the server answered (with the lease's granted TTL) before
    /// [`Backend::keep_alive`] returned, as on etcd. The session then counts the open as a
    /// renewal, from a time before it began, and saves a round trip. `false` by default.
    fn renewed_on_open(&self) -> bool {
        false
    }
}

/// A store that leasehold's recipes run on. See the [module docs](self) for the contract.
#[async_trait]
pub trait Backend: Send + Sync + Debug + 'static {
    /// A short name for logs ("memory", "etcd", "tikv").
    fn kind(&self) -> &'static str;

    /// Grants a lease with (at least) `ttl`.
    async fn grant_lease(&self, ttl: Duration) -> Result<Lease>;
    /// Opens a keep-alive stream for `lease`.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Box<dyn KeepAlive>>;
    /// Revokes `lease`, deleting its keys. Revoking an unknown lease is not an error.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;
    /// The remaining TTL of `lease`, or `None` if it does not exist.
    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<Duration>>;
    /// The keys attached to `lease` now, in no particular order (none if the lease does not
    /// exist). A session that re-attaches a lease reads them to take over what it held.
    async fn lease_keys(&self, lease: LeaseId) -> Result<Vec<String>>;

    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Reads up to `limit` keys under `prefix` (0 for all), oldest `create_revision` first,
    /// with the revision they were read at.
    async fn range_prefix(&self, prefix: &str, limit: usize) -> Result<(Vec<KeyValue>, Revision)>;

    /// Deletes `req.replaces` (if given), then creates `req.key` if `req.precondition` holds,
    /// and reads the prefix head (and `req.read`), atomically: the precondition is checked
    /// before the delete, the head, `mine` and `read` are read after it. If `req.fence` is
    /// given and does not hold, nothing is deleted or created (see
    /// [`CreateResponse::fence_moved`]).
    async fn create(&self, req: CreateRequest) -> Result<CreateResponse>;
    /// Deletes `key` only if its `create_revision` is `create_revision`. True if deleted.
    async fn delete_if_created(&self, key: &str, create_revision: Revision) -> Result<bool>;
    /// Writes `value` at `key` only if its `mod_revision` is `expected` (`None`: only if the
    /// key is absent).
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<CasResponse>;
    /// Checks every condition and, if all hold, applies `writes`; then reads `reads`: one
    /// atomic step (an etcd `Txn`, one TiKV transaction). The reads see the writes when
    /// they were applied, and otherwise the store as the failed check saw it. With no
    /// conditions and no writes this is a consistent read of several things at once.
    ///
    /// The writes' keys must differ: etcd refuses a transaction that names a key twice
    /// (as a permanent error), and every backend fails such a call with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) before sending it, writing
    /// nothing (`backend::distinct_keys`; conformance check `transact_contract`). The
    /// guards' fenced writes and releases rely on this: the release's delete of the
    /// guard's key and a lock-delay marker's count, so a caller naming those is refused.
    ///
    /// The recipes' multi-key steps are built from it: the fenced write (a
    /// [`Condition::Created`] on a guard's key: nothing is written once the key is gone,
    /// released or expired with its lease), write-and-release, and the adaptive register's
    /// write that yields to a queue (its value unchanged and the lock's prefix empty; on
    /// failure, whether the lock was taken).
    async fn transact(&self, conditions: &[Condition], writes: Vec<Write>, reads: &[Read]) -> Result<Transacted>;

    /// [`transact`](Backend::transact) without reads: `Some(revision)` of the step that
    /// applied `writes`, `None` if a condition failed and nothing was written.
    async fn write_if(&self, conditions: &[Condition], writes: Vec<Write>) -> Result<Option<Revision>> {
        Ok(self.transact(conditions, writes, &[]).await?.applied)
    }

    /// Opens a watch on every key under `prefix`; returns once it is registered.
    async fn watch_prefix(&self, prefix: &str) -> Result<Box<dyn WatchStream>>;

    /// Like [`watch_prefix`](Backend::watch_prefix), but reports deletions only (batches
    /// without one are skipped). The default filters `watch_prefix` locally; a backend whose
    /// store can filter at the server (etcd's `NOPUT`) should, so puts cost no traffic.
    async fn watch_prefix_deletes(&self, prefix: &str) -> Result<Box<dyn WatchStream>> {
        Ok(Box::new(DeletesOnly(self.watch_prefix(prefix).await?)))
    }

    /// Opens a watch on the key `key` and every key under `prefix`, which extends `key` (a
    /// register's value and its lock's queue, `<name>` and `<name>/`), and reports nothing
    /// else: not the keys of other names that merely start with `key` (`<name>2`), whose
    /// traffic is no concern of the watcher (batches left empty are skipped). The default
    /// watches every key starting with `key` and drops the others locally; a store that can
    /// watch a key range should narrow it at the server, as etcd's backend does. A `prefix`
    /// that does not start with `key` is an
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    async fn watch_key_and_prefix(&self, key: &str, prefix: &str) -> Result<Box<dyn WatchStream>> {
        KeyAndPrefix::check(key, prefix)?;
        Ok(Box::new(KeyAndPrefix::new(self.watch_prefix(key).await?, key, prefix)))
    }
}

/// A watch narrowed to one key and one prefix: [`Backend::watch_key_and_prefix`].
pub(crate) struct KeyAndPrefix {
    inner: Box<dyn WatchStream>,
    key: String,
    prefix: String,
}

impl KeyAndPrefix {
    /// The contract's precondition: `prefix` extends `key`.
    pub(crate) fn check(key: &str, prefix: &str) -> Result<()> {
        if prefix.starts_with(key) {
            Ok(())
        } else {
            Err(crate::Error::invalid("watch_key_and_prefix", format!("prefix {prefix:?} does not start with {key:?}")))
        }
    }

    /// Narrows `inner` (a watch covering at least `key` and `prefix`) to them.
    pub(crate) fn new(inner: Box<dyn WatchStream>, key: &str, prefix: &str) -> Self {
        Self { inner, key: key.to_owned(), prefix: prefix.to_owned() }
    }
}

#[async_trait]
impl WatchStream for KeyAndPrefix {
    fn start_revision(&self) -> Revision {
        self.inner.start_revision()
    }

    async fn next(&mut self) -> Result<Vec<WatchEvent>> {
        loop {
            let mut batch = self.inner.next().await?;
            batch.retain(|e| {
                let key = match e {
                    WatchEvent::Put(kv) => &kv.key,
                    WatchEvent::Delete { key, .. } => key,
                };
                *key == self.key || key.starts_with(&self.prefix)
            });
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }
}

/// A watch with its puts dropped: the default [`Backend::watch_prefix_deletes`].
struct DeletesOnly(Box<dyn WatchStream>);

#[async_trait]
impl WatchStream for DeletesOnly {
    fn start_revision(&self) -> Revision {
        self.0.start_revision()
    }

    async fn next(&mut self) -> Result<Vec<WatchEvent>> {
        loop {
            let mut batch = self.0.next().await?;
            batch.retain(|e| matches!(e, WatchEvent::Delete { .. }));
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }
}

/// Refuses `writes` that name one key twice, with [`Error::InvalidArgument`](crate::Error::InvalidArgument) before
/// anything is sent (the [`Backend::transact`] contract): etcd refuses such a transaction
/// ("duplicate key given in txn request") as a permanent error, and the embedded store
/// applied the writes in order until 2026-12-05, so a write list that worked in tests
/// failed for good on etcd. No allocation for the few writes of a recipe's step.
pub(crate) fn distinct_keys(writes: &[Write]) -> Result<()> {
    fn key(w: &Write) -> &str {
        match w {
            Write::Put { key, .. } | Write::Delete { key } => key,
        }
    }
    let twice = if writes.len() <= 16 {
        writes.iter().enumerate().find_map(|(i, w)| writes[..i].iter().any(|v| key(v) == key(w)).then(|| key(w)))
    } else {
        let mut seen = std::collections::HashSet::with_capacity(writes.len());
        writes.iter().map(key).find(|k| !seen.insert(*k))
    };
    match twice {
        None => Ok(()),
        Some(k) => Err(crate::error::Error::invalid(
            "transaction",
            format!("{k:?} is named twice in one transaction (or is a key the release itself deletes)"),
        )),
    }
}
