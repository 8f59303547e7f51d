//! The TiKV backend (crate `tikv-client` 0.4, transactional API; feature `tikv`).
//!
//! TiKV has neither leases nor watches nor etcd's revisions, so this backend builds the
//! [contract](super) out of TiKV transactions. Everything lives under one key root
//! ([`TikvConfig::root`], default `leasehold/`):
//!
//! | key | holds |
//! |---|---|
//! | `k/<key>` | a user key: value, create and mod revision, lease |
//! | `m/rev` | the revision counter |
//! | `g/<rev>` | the change log: the events of revision `rev` |
//! | `m/compacted` | the highest revision removed from the change log |
//! | `l/<lease>` | a lease: TTL and expiry (TSO milliseconds) |
//! | `e/<expiry>/<lease>` | leases by expiry, for the reaper |
//! | `x/<lease>/<key>` | the keys attached to a lease |
//! | `t/<name>` | the key a [`TxnLock`] locks |
//!
//! # Revisions
//!
//! Every operation is one optimistic transaction, retried from the start on a write
//! conflict (bounded; then [`Error::Unavailable`]). A transaction that changes user keys
//! reads `m/rev`, writes `m/rev + 1` (more for several revisions) and appends the change
//! log entry, all in the same commit. Because every writer writes `m/rev`, any two writers
//! that overlap conflict and one retries: writes are serialized, a snapshot sees a
//! contiguous prefix of revisions, and each key's create and mod revision are stored with
//! it. A conditional write ([`Backend::create`], [`Backend::delete_if_created`],
//! [`Backend::compare_and_swap`], [`Backend::write_if`]) checks its condition on the
//! transaction's snapshot and commits together with its write, so check and write are
//! atomic (rule 4); a failed condition writes nothing and leaves `m/rev` alone.
//!
//! TSO timestamps are not used as revisions: a key's create revision must be written into
//! its record inside the transaction, before the commit timestamp exists, and start
//! timestamps do not order commits (a transaction that started earlier may commit later,
//! which would let two queue keys both be "oldest"). The counter costs one hot key; etcd
//! serializes writes through its Raft log the same way.
//!
//! **Fencing token** = the key's create revision, taken from the counter: strictly
//! increasing across all writes, hence per name.
//!
//! # Leases
//!
//! A lease is the record `l/<id>` whose expiry is a TSO physical time (PD's clock, never a
//! local one): granting or renewing sets it to the transaction's start timestamp plus the
//! TTL, so a renewal restarts the TTL when it reaches the cluster (rule 2), and a renewal
//! of an expired lease fails with [`Error::LeaseNotFound`]. The id is the grant's start
//! timestamp (unique cluster-wide).
//!
//! A key whose lease has expired counts as deleted everywhere at once: every operation
//! that meets it first **reaps** the lease in the same transaction — deletes all of the
//! lease's keys in one revision of their own, with delete events in the change log — and
//! then decides on the state after the reap. A read ([`Backend::get`],
//! [`Backend::range_prefix`]) runs read-only first and, only if it met an expired lease,
//! again as a write that reaps it: a read must not leave keys out as expired unless the
//! lease is reaped, since a renewal that started before the expiry could otherwise
//! commit after it and bring them back. Renewal and reaping both write `l/<id>`, so they
//! cannot both commit. A background reaper per backend (every
//! [`TikvConfig::reap_interval`]) reaps due leases found through the `e/` index, so
//! watchers see the delete events without other traffic.
//!
//! # Watches
//!
//! TiKV cannot push changes, so a watch polls — not the keys, but the change log: one
//! poller per backend reads `g/<rev>` entries after the oldest cursor of its watches,
//! and hands each watch the events under its prefix with their real revisions, one
//! batch per revision, in order (rule 5 holds in full: nothing between polls is lost,
//! because every revision has its log entry). It polls every
//! [`TikvConfig::poll_interval`] after a change, backing off with jitter to
//! [`TikvConfig::poll_max_interval`] while nothing changes, and at once after a write
//! through the same backend that one of its watches wants (a write no watch wants waits
//! for the next turn: one poll per such write cost the TiKV test server's flash sale a
//! fifth of its orders per second). The deviations from etcd:
//!
//! - **latency**: a change made by another process is seen up to one poll interval late;
//! - **compaction**: the log keeps the last [`TikvConfig::log_retention`] revisions; a
//!   watch that falls further behind gets an error (as etcd's compaction does) and the
//!   view resynchronises;
//! - a failed poll breaks every watch of the backend (they resynchronise), as a broken
//!   connection does on etcd.
//!
//! Polling the keys and diffing them, the other way to fake a watch, would lose states
//! between polls; the recipes' waits would tolerate that (they decide on the latest exact
//! state, `queue::turn`), but `PrefixView::subscribe` — the election observer — promises
//! every distinct state, which only a log can keep.
//!
//! # The pessimistic transaction lock
//!
//! [`TxnLock`] is the TiKV-specific second strategy: a pessimistic transaction that locks
//! `t/<name>` (`lock_keys`), kept by the transaction heartbeat; unlock is a rollback.
//! Waiters wait inside TiKV's lock-wait queue. Its fencing token is a TSO timestamp
//! fetched after the lock was granted. The generic recipes ([`Mutex`](crate::Mutex) and
//! friends) do not use it: they get both their strategies (the fair queue and
//! compare-and-swap) through the trait.
//!
//! # Contention and timeouts
//!
//! Since every writer writes `m/rev`, concurrent writers conflict by design. Writers of
//! one backend (one [`Client`](crate::Client)) therefore take turns locally, so they never
//! conflict with each other; writers in different processes race optimistically and the
//! loser retries after a jittered pause. A transaction that meets another's lock retries
//! the read after a few milliseconds (tikv-client's default lock backoff grows to 500 ms
//! per step, which would stall every writer behind the hot key). A call waits at most
//! [`TikvConfig::request_timeout`]; no new attempt starts after three quarters of it, so a
//! call reported as timed out does not commit long afterwards.
//!
//! # Other choices
//!
//! - Only the transactional API is used, never raw keys (TiKV forbids mixing both on one
//!   key range), and no bounded raw scan (see `tikv-client`'s raw scan bug). Every scan is
//!   a transactional scan over a range with an explicit end.
//! - Transactions never panic on drop (`drop_check(CheckLevel::Warn)`) and every path
//!   commits or rolls back. Each call runs in its own task: a caller that times out or is
//!   cancelled does not cut a transaction in half.

use super::*;
use crate::backoff::Backoff;
use crate::error::{Cause, Error};
use parking_lot::Mutex;
use rand::Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use tikv_client::transaction::HeartbeatOption;
use tikv_client::{CheckLevel, RetryOptions, Transaction, TransactionClient, TransactionOptions};
use tokio::sync::{mpsc, Notify};

mod changes;
mod reaper;
mod records;
mod store;
mod tx;
mod txn_lock;

use changes::*;
use reaper::*;
use records::*;
use tikv_client::TimestampExt as _;
use tx::*;
pub use txn_lock::{TxnLock, TxnLockGuard};

/// How to reach TiKV, and the knobs of the emulation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TikvConfig {
    /// PD endpoints, `host:port` each; any reachable one will do.
    pub pd_endpoints: Vec<String>,
    /// The first contact must succeed within this (default 5 s), else [`Error::Connect`].
    pub connect_timeout: Duration,
    /// Each call fails with [`Error::Unavailable`] after this (default 5 s).
    pub request_timeout: Duration,
    /// Shortest pause between two polls of the change log (default 10 ms).
    pub poll_interval: Duration,
    /// Longest pause between two polls while nothing changes (default 200 ms).
    pub poll_max_interval: Duration,
    /// How often the background reaper looks for expired leases (default 500 ms).
    pub reap_interval: Duration,
    /// How many revisions the change log keeps for watchers that lag (default 10 000).
    pub log_retention: u64,
    /// Heartbeat interval of [`TxnLock`] transactions (default 5 s; TiKV keeps the lock
    /// 20 s past the last heartbeat). Above 0 and at most [`MAX_TXN_LOCK_HEARTBEAT`]:
    /// [`TikvBackend::connect`] refuses others.
    pub txn_lock_heartbeat: Duration,
    /// The key prefix everything is stored under (default `leasehold/`).
    pub root: String,
}

/// The longest [`TikvConfig::txn_lock_heartbeat`]: half of the 20 s TiKV keeps a
/// pessimistic lock past its last heartbeat (a longer one let a held lock expire between
/// two heartbeats, and `Duration::ZERO` made the heartbeat task spin).
pub const MAX_TXN_LOCK_HEARTBEAT: Duration = Duration::from_secs(10);

impl TikvConfig {
    /// Defaults for these PD endpoints.
    pub fn new<S: Into<String>>(pd_endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            pd_endpoints: pd_endpoints.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(10),
            poll_max_interval: Duration::from_millis(200),
            reap_interval: Duration::from_millis(500),
            log_retention: 10_000,
            txn_lock_heartbeat: Duration::from_secs(5),
            root: "leasehold/".into(),
        }
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the per-request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the shortest and longest pause between change-log polls.
    pub fn poll_interval(mut self, min: Duration, max: Duration) -> Self {
        self.poll_interval = min;
        self.poll_max_interval = max.max(min);
        self
    }

    /// Sets how often the reaper looks for expired leases.
    pub fn reap_interval(mut self, interval: Duration) -> Self {
        self.reap_interval = interval;
        self
    }

    /// Sets how many revisions the change log keeps.
    pub fn log_retention(mut self, revisions: u64) -> Self {
        self.log_retention = revisions.max(1);
        self
    }

    /// Sets the key root (several independent leasehold stores can share a cluster).
    pub fn root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }
}

/// The TiKV backend. Cheap to clone.
#[derive(Clone)]
pub struct TikvBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TikvBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TikvBackend").field("pd", &self.inner.cfg.pd_endpoints).finish_non_exhaustive()
    }
}

struct Inner {
    client: TransactionClient,
    cfg: TikvConfig,
    keys: Keys,
    watches: Mutex<Vec<Slot>>,
    /// Poll now: a local write that a watch wants happened, or a watch was added.
    poke: Arc<Notify>,
    /// Reap now: a read met an expired lease.
    reap_now: Arc<Notify>,
    tasks_started: Mutex<bool>,
    /// Held by the one writing transaction of this backend in flight.
    write_turn: tokio::sync::Mutex<()>,
}

/// One registered watch, as the poller sees it.
struct Slot {
    prefix: String,
    /// Every event up to this revision has been delivered.
    cursor: Revision,
    tx: mpsc::UnboundedSender<Result<Vec<WatchEvent>>>,
}

impl Inner {
    /// Whether a watch of this backend wants any of `events` (then a local write pokes the
    /// poller).
    fn watched(&self, events: &[WatchEvent]) -> bool {
        let watches = self.watches.lock();
        events.iter().any(|e| {
            let key = match e {
                WatchEvent::Put(kv) => &kv.key,
                WatchEvent::Delete { key, .. } => key,
            };
            watches.iter().any(|s| key.starts_with(&s.prefix))
        })
    }
}
