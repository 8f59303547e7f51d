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
//! through the same backend. The deviations from etcd:
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
use crate::error::Error;
use parking_lot::Mutex;
use rand::Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use tikv_client::transaction::HeartbeatOption;
use tikv_client::{CheckLevel, RetryOptions, Transaction, TransactionClient, TransactionOptions};
use tokio::sync::{mpsc, Notify};

/// How to reach TiKV, and the knobs of the emulation.
#[derive(Debug, Clone)]
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
    /// 20 s past the last heartbeat).
    pub txn_lock_heartbeat: Duration,
    /// The key prefix everything is stored under (default `leasehold/`).
    pub root: String,
}

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
    /// Poll now: a local write happened or a watch was added.
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

// ---------------------------------------------------------------------------------------
// Keys and records

struct Keys {
    root: Vec<u8>,
}

fn hex16(n: u64) -> String {
    format!("{n:016x}")
}

impl Keys {
    fn with(&self, tag: &str, rest: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.root.len() + tag.len() + rest.len());
        k.extend_from_slice(&self.root);
        k.extend_from_slice(tag.as_bytes());
        k.extend_from_slice(rest);
        k
    }
    fn kv(&self, key: &str) -> Vec<u8> {
        self.with("k/", key.as_bytes())
    }
    fn rev(&self) -> Vec<u8> {
        self.with("m/rev", b"")
    }
    fn compacted(&self) -> Vec<u8> {
        self.with("m/compacted", b"")
    }
    fn log(&self, rev: Revision) -> Vec<u8> {
        self.with("g/", hex16(rev as u64).as_bytes())
    }
    fn lease(&self, id: LeaseId) -> Vec<u8> {
        self.with("l/", hex16(id as u64).as_bytes())
    }
    fn expiry(&self, at_ms: u64, id: LeaseId) -> Vec<u8> {
        self.with("e/", format!("{}/{}", hex16(at_ms), hex16(id as u64)).as_bytes())
    }
    fn expiry_upto(&self, at_ms: u64) -> Vec<u8> {
        self.with("e/", hex16(at_ms).as_bytes())
    }
    fn attached(&self, id: LeaseId, key: &str) -> Vec<u8> {
        self.with("x/", format!("{}/{key}", hex16(id as u64)).as_bytes())
    }
    fn txn_lock(&self, name: &str) -> Vec<u8> {
        self.with("t/", name.as_bytes())
    }
}

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

fn corrupt(what: &str) -> Error {
    Error::Store(format!("tikv: corrupt {what} record"))
}

struct Rd<'a>(&'a [u8]);

impl Rd<'_> {
    fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_be_bytes(*head))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = self.u64()? as usize;
        if self.0.len() < len {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head.to_vec())
    }
}

fn put_u64(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(&n.to_be_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_u64(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(24 + kv.value.len());
    put_u64(&mut buf, kv.create_revision as u64);
    put_u64(&mut buf, kv.mod_revision as u64);
    put_u64(&mut buf, kv.lease as u64);
    buf.extend_from_slice(&kv.value);
    buf
}

fn decode_kv(key: String, raw: &[u8]) -> Result<KeyValue> {
    let mut rd = Rd(raw);
    let (Some(c), Some(m), Some(l)) = (rd.u64(), rd.u64(), rd.u64()) else { return Err(corrupt("key")) };
    Ok(KeyValue { key, value: rd.0.to_vec(), create_revision: c as i64, mod_revision: m as i64, lease: l as i64 })
}

fn decode_u64(raw: Option<Vec<u8>>) -> Result<u64> {
    match raw {
        None => Ok(0),
        Some(v) => Rd(&v).u64().ok_or_else(|| corrupt("counter")),
    }
}

#[derive(Debug, Clone, Copy)]
struct LeaseRec {
    ttl_ms: u64,
    expires_ms: u64,
}

fn encode_lease(l: LeaseRec) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16);
    put_u64(&mut buf, l.ttl_ms);
    put_u64(&mut buf, l.expires_ms);
    buf
}

fn decode_lease(raw: &[u8]) -> Result<LeaseRec> {
    let mut rd = Rd(raw);
    match (rd.u64(), rd.u64()) {
        (Some(ttl_ms), Some(expires_ms)) => Ok(LeaseRec { ttl_ms, expires_ms }),
        _ => Err(corrupt("lease")),
    }
}

fn encode_events(events: &[WatchEvent]) -> Vec<u8> {
    let mut buf = Vec::new();
    for e in events {
        match e {
            WatchEvent::Put(kv) => {
                buf.push(0);
                put_bytes(&mut buf, kv.key.as_bytes());
                put_u64(&mut buf, kv.create_revision as u64);
                put_u64(&mut buf, kv.lease as u64);
                put_bytes(&mut buf, &kv.value);
            }
            WatchEvent::Delete { key, .. } => {
                buf.push(1);
                put_bytes(&mut buf, key.as_bytes());
            }
        }
    }
    buf
}

fn decode_events(rev: Revision, raw: &[u8]) -> Result<Vec<WatchEvent>> {
    let mut rd = Rd(raw);
    let mut out = Vec::new();
    while let Some((&tag, rest)) = rd.0.split_first() {
        rd.0 = rest;
        let key = rd.bytes().and_then(|k| String::from_utf8(k).ok()).ok_or_else(|| corrupt("log"))?;
        out.push(match tag {
            0 => {
                let (Some(c), Some(l), Some(value)) = (rd.u64(), rd.u64(), rd.bytes()) else {
                    return Err(corrupt("log"));
                };
                WatchEvent::Put(KeyValue { key, value, create_revision: c as i64, mod_revision: rev, lease: l as i64 })
            }
            1 => WatchEvent::Delete { key, revision: rev },
            _ => return Err(corrupt("log")),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Errors

/// Why a transaction attempt failed.
enum Fail {
    Tikv(tikv_client::Error),
    Lh(Error),
}

impl From<tikv_client::Error> for Fail {
    fn from(e: tikv_client::Error) -> Self {
        Fail::Tikv(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Lh(e)
    }
}

type TxResult<T> = std::result::Result<T, Fail>;

/// A failure that another attempt of the same transaction can fix: a write conflict, a
/// lock held by a transaction still running, or our own locks cleaned up by someone else.
fn is_conflict(e: &tikv_client::Error) -> bool {
    use tikv_client::Error as E;
    match e {
        E::KeyError(k) => {
            k.conflict.is_some()
                || k.locked.is_some()
                || !k.retryable.is_empty()
                || !k.abort.is_empty()
                || k.txn_not_found.is_some()
        }
        E::ResolveLockError(_) | E::TxnNotFound(_) => true,
        E::ExtractedErrors(v) | E::MultipleKeyErrors(v) => v.iter().any(is_conflict),
        E::PessimisticLockError { inner, .. } => is_conflict(inner),
        _ => false,
    }
}

/// Maps a tikv-client error: transport, region and undetermined-commit failures are
/// transient; so is contention that outlasted the retries.
fn map_err(e: tikv_client::Error) -> Error {
    use tikv_client::Error as E;
    if is_conflict(&e) {
        return Error::Unavailable(format!("tikv: contention: {e}"));
    }
    match e {
        E::Grpc(_)
        | E::GrpcAPI(_)
        | E::Io(_)
        | E::Channel(_)
        | E::Canceled(_)
        | E::RegionError(_)
        | E::UndeterminedError(_)
        | E::LeaderNotFound { .. }
        | E::NoCurrentRegions
        | E::EntryNotFoundInRegionCache
        | E::RegionForKeyNotFound { .. }
        | E::RegionNotFoundInResponse { .. }
        | E::JoinError(_) => Error::Unavailable(format!("tikv: {e}")),
        E::StringError(s) | E::InternalError { message: s }
            if ["timeout", "connect", "channel", "closed", "transport", "unavailable"]
                .iter()
                .any(|w| s.to_lowercase().contains(w)) =>
        {
            Error::Unavailable(format!("tikv: {s}"))
        }
        other => Error::Store(format!("tikv: {other}")),
    }
}

/// Options of every backend transaction. A read or prewrite that meets another
/// transaction's lock resolves it (cleaning it up if its TTL ran out) and otherwise retries
/// after a short jittered pause, a dozen times at most; then the whole attempt starts over
/// with a new snapshot (the default backoff, up to 500 ms per step, would stall every
/// writer behind the hot revision key).
fn optimistic() -> TransactionOptions {
    let mut retry = RetryOptions::default_optimistic();
    retry.lock_backoff = tikv_client::Backoff::full_jitter_backoff(1, 16, 12);
    TransactionOptions::new_optimistic()
        .drop_check(CheckLevel::Warn)
        .heartbeat_option(HeartbeatOption::NoHeartbeat)
        .retry_options(retry)
}

fn jittered(d: Duration) -> Duration {
    let ms = d.as_secs_f64() * 1000.0;
    crate::backoff::with_rng(|rng| Duration::from_secs_f64(rng.random_range(ms * 0.5..=ms.max(0.001)) / 1000.0))
}

// ---------------------------------------------------------------------------------------
// One transaction attempt

/// The state of one transaction attempt: the TiKV transaction, the snapshot's time and
/// revision, and the revisions and log entries it will commit.
struct Tx {
    txn: Transaction,
    inner: Arc<Inner>,
    /// TSO physical milliseconds of the start timestamp: "now" for lease expiry.
    now_ms: u64,
    /// `m/rev` as of the snapshot.
    base: Revision,
    /// The last revision allocated (== base while nothing changed).
    rev: Revision,
    /// Whether the current change already has its revision.
    open: bool,
    log: BTreeMap<Revision, Vec<WatchEvent>>,
    leases: HashMap<LeaseId, Option<LeaseRec>>,
    reaped: HashSet<LeaseId>,
    /// Whether anything was written (including lease records, which have no revision).
    dirty: bool,
    /// Reap expired leases inline (writes) or only leave their keys out (reads).
    reap_inline: bool,
    met_expired: bool,
}

impl Tx {
    async fn begin(inner: &Arc<Inner>, reap_inline: bool) -> TxResult<Self> {
        let mut txn = inner.client.begin_with_options(optimistic()).await?;
        let now_ms = txn.start_timestamp().physical as u64;
        let base = match txn.get(inner.keys.rev()).await {
            Ok(v) => decode_u64(v)? as Revision,
            Err(e) => {
                let _ = txn.rollback().await;
                return Err(e.into());
            }
        };
        Ok(Self {
            txn,
            inner: inner.clone(),
            now_ms,
            base,
            rev: base,
            open: false,
            log: BTreeMap::new(),
            leases: HashMap::new(),
            reaped: HashSet::new(),
            dirty: false,
            reap_inline,
            met_expired: false,
        })
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    async fn lease(&mut self, id: LeaseId) -> TxResult<Option<LeaseRec>> {
        if let Some(l) = self.leases.get(&id) {
            return Ok(*l);
        }
        let raw = self.txn.get(self.keys().lease(id)).await?;
        let rec = raw.map(|r| decode_lease(&r)).transpose()?;
        self.leases.insert(id, rec);
        Ok(rec)
    }

    /// Whether `id` exists and has not expired at the snapshot's time (0: no lease). An
    /// expired lease is reaped first when writing, and noted (a read then runs again as a
    /// write that reaps: see [`TikvBackend::read`]).
    async fn alive(&mut self, id: LeaseId) -> TxResult<bool> {
        if id == 0 {
            return Ok(true);
        }
        let now = self.now_ms;
        match self.lease(id).await? {
            Some(l) if l.expires_ms > now => Ok(true),
            Some(_) => {
                self.met_expired = true;
                if self.reap_inline {
                    self.reap(id).await?;
                }
                Ok(false)
            }
            None => Ok(false),
        }
    }

    /// The stored record of `key`, ignoring lease expiry (sees this transaction's writes).
    async fn raw_kv(&mut self, key: &str) -> TxResult<Option<KeyValue>> {
        let raw = self.txn.get(self.keys().kv(key)).await?;
        Ok(raw.map(|r| decode_kv(key.to_owned(), &r)).transpose()?)
    }

    /// Deals with a record whose lease may have expired: `None` if it did (reaping the
    /// lease first when writing).
    async fn live(&mut self, kv: KeyValue) -> TxResult<Option<KeyValue>> {
        Ok(self.alive(kv.lease).await?.then_some(kv))
    }

    /// `key` as the contract sees it: absent if its lease expired.
    async fn get(&mut self, key: &str) -> TxResult<Option<KeyValue>> {
        match self.raw_kv(key).await? {
            Some(kv) => self.live(kv).await,
            None => Ok(None),
        }
    }

    /// Every live key under `prefix`, oldest create revision first.
    async fn scan(&mut self, prefix: &str) -> TxResult<Vec<KeyValue>> {
        let start = self.keys().kv(prefix);
        let end = prefix_end(&start);
        let skip = self.keys().kv("").len();
        let pairs: Vec<_> = self.txn.scan(start..end, u32::MAX).await?.collect();
        let mut out = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let raw_key: Vec<u8> = pair.key().clone().into();
            let key = String::from_utf8(raw_key[skip..].to_vec()).map_err(|_| corrupt("key"))?;
            let kv = decode_kv(key, pair.value())?;
            out.push(kv);
        }
        let mut live = Vec::with_capacity(out.len());
        for kv in out {
            if let Some(kv) = self.live(kv).await? {
                live.push(kv);
            }
        }
        // A reap inside `live` may have deleted keys seen earlier in this scan.
        if self.reap_inline && live.iter().any(|kv| self.reaped.contains(&kv.lease)) {
            live.retain(|kv| !self.reaped.contains(&kv.lease));
        }
        live.sort_by_key(|kv| kv.create_revision);
        Ok(live)
    }

    /// The revision of the change being made (allocated on its first write).
    fn change(&mut self) -> Revision {
        if !self.open {
            self.rev += 1;
            self.open = true;
            self.log.insert(self.rev, Vec::new());
        }
        self.rev
    }

    /// Ends the current change: the next write gets a new revision.
    fn end_change(&mut self) {
        self.open = false;
    }

    async fn put(&mut self, key: &str, value: Vec<u8>, lease: LeaseId) -> TxResult<KeyValue> {
        if !self.alive(lease).await? {
            return Err(Error::LeaseNotFound { lease }.into());
        }
        let old = self.raw_kv(key).await?;
        let rev = self.change();
        let create_revision = old.as_ref().map_or(rev, |o| o.create_revision);
        let old_lease = old.as_ref().map_or(0, |o| o.lease);
        if old_lease != lease {
            if old_lease != 0 {
                self.txn.delete(self.keys().attached(old_lease, key)).await?;
            }
            if lease != 0 {
                self.txn.put(self.keys().attached(lease, key), Vec::new()).await?;
            }
        }
        let kv = KeyValue { key: key.to_owned(), value, create_revision, mod_revision: rev, lease };
        self.txn.put(self.keys().kv(key), encode_kv(&kv)).await?;
        self.log.get_mut(&rev).expect("opened").push(WatchEvent::Put(kv.clone()));
        self.dirty = true;
        Ok(kv)
    }

    async fn delete(&mut self, key: &str) -> TxResult<bool> {
        let Some(old) = self.raw_kv(key).await? else { return Ok(false) };
        let rev = self.change();
        self.txn.delete(self.keys().kv(key)).await?;
        if old.lease != 0 {
            self.txn.delete(self.keys().attached(old.lease, key)).await?;
        }
        self.log.get_mut(&rev).expect("opened").push(WatchEvent::Delete { key: key.to_owned(), revision: rev });
        self.dirty = true;
        Ok(true)
    }

    /// Deletes the lease and every key attached to it, in one revision of its own.
    async fn reap(&mut self, id: LeaseId) -> TxResult<()> {
        if id == 0 || !self.reaped.insert(id) {
            return Ok(());
        }
        self.end_change();
        let start = self.keys().with("x/", format!("{}/", hex16(id as u64)).as_bytes());
        let end = prefix_end(&start);
        let skip = start.len();
        let attached: Vec<Vec<u8>> = self.txn.scan_keys(start..end, u32::MAX).await?.map(Into::into).collect();
        for raw in attached {
            let key = String::from_utf8(raw[skip..].to_vec()).map_err(|_| corrupt("lease index"))?;
            if self.raw_kv(&key).await?.is_some_and(|kv| kv.lease == id) {
                self.delete(&key).await?;
            }
            self.txn.delete(raw).await?;
        }
        if let Some(rec) = self.lease(id).await? {
            self.txn.delete(self.keys().lease(id)).await?;
            self.txn.delete(self.keys().expiry(rec.expires_ms, id)).await?;
        }
        self.leases.insert(id, None);
        self.dirty = true;
        self.end_change();
        Ok(())
    }

    /// Commits (or, if nothing was written, just ends) the transaction.
    async fn finish(mut self) -> TxResult<Revision> {
        if !self.dirty {
            self.txn.rollback().await?;
            return Ok(self.rev);
        }
        let mut wrote_revisions = false;
        for (rev, events) in std::mem::take(&mut self.log) {
            if !events.is_empty() {
                self.txn.put(self.keys().log(rev), encode_events(&events)).await?;
                wrote_revisions = true;
            }
        }
        if self.rev != self.base {
            self.txn.put(self.keys().rev(), (self.rev as u64).to_be_bytes().to_vec()).await?;
        }
        if let Err(e) = self.txn.commit().await {
            let _ = self.txn.rollback().await;
            return Err(e.into());
        }
        if wrote_revisions {
            self.inner.poke.notify_one();
            let retention = self.inner.cfg.log_retention as i64;
            if self.rev / GC_EVERY != self.base / GC_EVERY && self.rev > retention {
                spawn_compaction(Arc::downgrade(&self.inner), self.rev - retention);
            }
        }
        Ok(self.rev)
    }

    async fn abort(mut self) {
        let _ = self.txn.rollback().await;
    }
}

/// The change log is compacted each time the revision crosses a multiple of this.
const GC_EVERY: Revision = 256;

/// Runs attempts of one transaction until one commits, a permanent error, or the bounded
/// retries on conflicts run out.
///
/// No attempt starts after `stop_at` (the caller stops waiting a little later), so an
/// operation whose caller got [`Error::Unavailable`] for a timeout does not commit long
/// afterwards: only an attempt already running at `stop_at` can.
async fn attempts<T: Send + 'static>(
    inner: Arc<Inner>,
    reap_inline: bool,
    stop_at: tokio::time::Instant,
    body: Body<T>,
) -> Result<(T, bool)> {
    let late = || Error::Unavailable("tikv: request timed out before it could run".into());
    let mut delays = Backoff::new(Duration::from_millis(1), Duration::from_millis(50)).max_attempts(200).delays();
    loop {
        // Writers of this backend take turns: they would all conflict on the revision key,
        // and under optimistic concurrency N concurrent writers waste O(N²) attempts.
        // Writers in other processes still race, and the loser retries.
        let _turn = if reap_inline {
            Some(tokio::time::timeout_at(stop_at, inner.write_turn.lock()).await.map_err(|_| late())?)
        } else {
            None
        };
        if tokio::time::Instant::now() >= stop_at {
            return Err(late());
        }
        let fail = match Tx::begin(&inner, reap_inline).await {
            Err(f) => f,
            Ok(mut tx) => match body(&mut tx).await {
                Ok(v) => {
                    let met_expired = tx.met_expired;
                    match tx.finish().await {
                        Ok(_) => return Ok((v, met_expired)),
                        Err(f) => f,
                    }
                }
                Err(f) => {
                    tx.abort().await;
                    f
                }
            },
        };
        let e = match fail {
            Fail::Lh(e) => return Err(e),
            Fail::Tikv(e) => e,
        };
        drop(_turn);
        let delay = if is_conflict(&e) { delays.next() } else { None };
        match delay {
            Some(d) => tokio::time::sleep(d).await,
            None => return Err(map_err(e)),
        }
    }
}

type Body<T> = Arc<dyn for<'a> Fn(&'a mut Tx) -> Pin<Box<dyn Future<Output = TxResult<T>> + Send + 'a>> + Send + Sync>;

impl TikvBackend {
    /// Connects through the PD endpoints and checks that the cluster answers (a timestamp
    /// round trip) within the connect timeout.
    pub async fn connect(config: TikvConfig) -> Result<Self> {
        if config.pd_endpoints.is_empty() {
            return Err(Error::invalid("tikv", "no PD endpoints given"));
        }
        if config.root.is_empty() {
            return Err(Error::invalid("tikv", "the key root must not be empty"));
        }
        let endpoints: Vec<String> = config
            .pd_endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://").trim_start_matches("https://").to_owned())
            .collect();
        let joined = endpoints.join(",");
        let tikv_config = tikv_client::Config::default().with_timeout(config.request_timeout);
        let attempt = async {
            let client = TransactionClient::new_with_config(endpoints.clone(), tikv_config).await?;
            client.current_timestamp().await?;
            Ok::<_, tikv_client::Error>(client)
        };
        let connect_error =
            |reason: String| Error::Connect { endpoints: joined.clone(), timeout: config.connect_timeout, reason };
        let client = match tokio::time::timeout(config.connect_timeout, attempt).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(connect_error(e.to_string())),
            Err(_) => return Err(connect_error("no answer".into())),
        };
        let keys = Keys { root: config.root.clone().into_bytes() };
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                cfg: config,
                keys,
                watches: Mutex::new(Vec::new()),
                poke: Arc::new(Notify::new()),
                reap_now: Arc::new(Notify::new()),
                tasks_started: Mutex::new(false),
                write_turn: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The underlying transactional client (for tools and tests).
    pub fn raw(&self) -> TransactionClient {
        self.inner.client.clone()
    }

    /// The configuration in use.
    pub fn config(&self) -> &TikvConfig {
        &self.inner.cfg
    }

    /// Starts the poller and the reaper (once).
    fn start_tasks(&self) {
        let mut started = self.inner.tasks_started.lock();
        if !*started {
            *started = true;
            tokio::spawn(poller(Arc::downgrade(&self.inner)));
            tokio::spawn(reaper(Arc::downgrade(&self.inner)));
        }
    }

    /// Runs `body` as one transaction (retried on conflicts) in its own task, bounded by
    /// the request timeout.
    async fn run<T: Send + 'static>(&self, reap_inline: bool, body: Body<T>) -> Result<T> {
        Ok(self.run_flagged(reap_inline, body).await?.0)
    }

    /// [`run`](Self::run), also telling whether the transaction met an expired lease.
    async fn run_flagged<T: Send + 'static>(&self, reap_inline: bool, body: Body<T>) -> Result<(T, bool)> {
        self.start_tasks();
        let timeout = self.inner.cfg.request_timeout;
        let now = tokio::time::Instant::now();
        // A timeout past what the clock can count: no limit (30 years, tokio's "never").
        let stop_at =
            now.checked_add(timeout.saturating_mul(3) / 4).unwrap_or(now + Duration::from_secs(86_400 * 365 * 30));
        let task = tokio::spawn(attempts(self.inner.clone(), reap_inline, stop_at, body));
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(Error::Store(format!("tikv: request task failed: {e}"))),
            Err(_) => Err(Error::Unavailable(format!("tikv: no answer within {timeout:?}"))),
        }
    }

    /// A read-only body. If it meets a key whose lease has expired, it runs again as a
    /// write that reaps the lease first, and answers from that run.
    ///
    /// Leaving an expired lease's keys out without reaping would not be safe: a renewal
    /// that started before the expiry (its start timestamp decides "alive") can commit
    /// after the read, and the lease and its keys would be back after a reader was told
    /// they were gone — and may have admitted another holder on it. A reap writes the
    /// lease record, as every renewal does, so the two conflict and only one commits:
    /// either the read sees the renewed lease, or the renewal fails.
    async fn read<T: Send + 'static>(&self, body: Body<T>) -> Result<T> {
        let (v, met_expired) = self.run_flagged(false, body.clone()).await?;
        #[cfg(not(leasehold_sim_mutation_tikv_read))]
        if met_expired {
            return self.run(true, body).await;
        }
        // Mutation (scripts/sim.sh): issue 17's bug 3, the read answers without reaping.
        #[cfg(leasehold_sim_mutation_tikv_read)]
        if met_expired {
            self.inner.reap_now.notify_one();
        }
        Ok(v)
    }

    async fn renew(&self, lease: LeaseId) -> Result<Duration> {
        self.run(
            true,
            Arc::new(move |tx| {
                Box::pin(async move {
                    let Some(rec) = tx.lease(lease).await? else {
                        return Err(Error::LeaseNotFound { lease }.into());
                    };
                    if rec.expires_ms <= tx.now_ms {
                        tx.reap(lease).await?;
                        return Ok(None);
                    }
                    let renewed = LeaseRec { ttl_ms: rec.ttl_ms, expires_ms: tx.now_ms + rec.ttl_ms };
                    tx.txn.delete(tx.keys().expiry(rec.expires_ms, lease)).await?;
                    tx.txn.put(tx.keys().expiry(renewed.expires_ms, lease), Vec::new()).await?;
                    tx.txn.put(tx.keys().lease(lease), encode_lease(renewed)).await?;
                    tx.dirty = true;
                    Ok(Some(Duration::from_millis(rec.ttl_ms)))
                })
            }),
        )
        .await?
        .ok_or(Error::LeaseNotFound { lease })
    }
}

/// Keeps a lease alive by renewing its record.
struct TikvKeepAlive {
    backend: TikvBackend,
    lease: LeaseId,
}

#[async_trait]
impl KeepAlive for TikvKeepAlive {
    async fn renew(&mut self) -> Result<Duration> {
        self.backend.renew(self.lease).await
    }
}

struct TikvWatch {
    start: Revision,
    rx: mpsc::UnboundedReceiver<Result<Vec<WatchEvent>>>,
}

#[async_trait]
impl WatchStream for TikvWatch {
    fn start_revision(&self) -> Revision {
        self.start
    }

    async fn next(&mut self) -> Result<Vec<WatchEvent>> {
        match self.rx.recv().await {
            Some(r) => r,
            None => Err(Error::Unavailable("tikv: watch closed".into())),
        }
    }
}

#[async_trait]
impl Backend for TikvBackend {
    fn kind(&self) -> &'static str {
        "tikv"
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let ttl_ms = (ttl.as_millis() as u64).max(1);
        let id = self
            .run(
                true,
                Arc::new(move |tx| {
                    Box::pin(async move {
                        let id = tx.txn.start_timestamp().version() as LeaseId;
                        let rec = LeaseRec { ttl_ms, expires_ms: tx.now_ms + ttl_ms };
                        tx.txn.put(tx.keys().lease(id), encode_lease(rec)).await?;
                        tx.txn.put(tx.keys().expiry(rec.expires_ms, id), Vec::new()).await?;
                        tx.dirty = true;
                        Ok(id)
                    })
                }),
            )
            .await?;
        Ok(Lease { id, ttl: Duration::from_millis(ttl_ms) })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Box<dyn KeepAlive>> {
        Ok(Box::new(TikvKeepAlive { backend: self.clone(), lease }))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.run(true, Arc::new(move |tx| Box::pin(tx.reap(lease)))).await
    }

    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<Duration>> {
        self.read(Arc::new(move |tx| {
            Box::pin(async move {
                if !tx.alive(lease).await? {
                    return Ok(None);
                }
                let now = tx.now_ms;
                Ok(tx.lease(lease).await?.map(|l| Duration::from_millis(l.expires_ms.saturating_sub(now))))
            })
        }))
        .await
    }

    async fn lease_keys(&self, lease: LeaseId) -> Result<Vec<String>> {
        self.read(Arc::new(move |tx| {
            Box::pin(async move {
                if !tx.alive(lease).await? {
                    return Ok(Vec::new());
                }
                let start = tx.keys().with("x/", format!("{}/", hex16(lease as u64)).as_bytes());
                let end = prefix_end(&start);
                let skip = start.len();
                let indexed: Vec<Vec<u8>> = tx.txn.scan_keys(start..end, u32::MAX).await?.map(Into::into).collect();
                let mut keys = Vec::new();
                for raw in indexed {
                    let key = String::from_utf8(raw[skip..].to_vec()).map_err(|_| corrupt("lease index"))?;
                    // The index may name a key since deleted or moved to another lease.
                    if tx.raw_kv(&key).await?.is_some_and(|kv| kv.lease == lease) {
                        keys.push(key);
                    }
                }
                Ok(keys)
            })
        }))
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.read(Arc::new(move |tx| {
            let key = key.clone();
            Box::pin(async move { tx.get(&key).await })
        }))
        .await
    }

    async fn range_prefix(&self, prefix: &str, limit: usize) -> Result<(Vec<KeyValue>, Revision)> {
        let prefix = prefix.to_owned();
        self.read(Arc::new(move |tx| {
            let prefix = prefix.clone();
            Box::pin(async move {
                let mut kvs = tx.scan(&prefix).await?;
                if limit > 0 {
                    kvs.truncate(limit);
                }
                Ok((kvs, tx.base))
            })
        }))
        .await
    }

    async fn create(&self, req: CreateRequest) -> Result<CreateResponse> {
        self.run(
            true,
            Arc::new(move |tx| {
                let req = req.clone();
                Box::pin(async move {
                    let ok = match req.precondition {
                        Precondition::KeyAbsent => tx.get(&req.key).await?.is_none(),
                        Precondition::PrefixEmpty => tx.scan(&req.prefix).await?.is_empty(),
                    };
                    if let Some(Replaced { key, revision }) = &req.replaces {
                        let current = tx.get(key).await?.map(|kv| kv.create_revision);
                        if current.is_some() && (revision.is_none() || current == *revision) {
                            tx.delete(key).await?;
                        }
                    }
                    if ok {
                        tx.put(&req.key, req.value.clone(), req.lease).await?;
                    }
                    let mine = tx.get(&req.key).await?;
                    let mut head = tx.scan(&req.prefix).await?;
                    if req.head_limit > 0 {
                        head.truncate(req.head_limit);
                    }
                    let read = match &req.read {
                        Some(k) => tx.get(k).await?,
                        None => None,
                    };
                    Ok(CreateResponse { created: ok, mine, head, revision: tx.rev, read })
                })
            }),
        )
        .await
    }

    async fn delete_if_created(&self, key: &str, create_revision: Revision) -> Result<bool> {
        let key = key.to_owned();
        self.run(
            true,
            Arc::new(move |tx| {
                let key = key.clone();
                Box::pin(async move {
                    if tx.get(&key).await?.is_some_and(|kv| kv.create_revision == create_revision) {
                        return tx.delete(&key).await;
                    }
                    Ok(false)
                })
            }),
        )
        .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<CasResponse> {
        let key = key.to_owned();
        self.run(
            true,
            Arc::new(move |tx| {
                let (key, value) = (key.clone(), value.clone());
                Box::pin(async move {
                    let swapped = tx.get(&key).await?.map(|kv| kv.mod_revision) == expected;
                    if swapped {
                        tx.put(&key, value, lease.unwrap_or(0)).await?;
                    }
                    let current = tx.get(&key).await?;
                    Ok(CasResponse { swapped, current, revision: tx.rev })
                })
            }),
        )
        .await
    }

    async fn write_if(&self, conditions: &[Condition], writes: Vec<Write>) -> Result<Option<Revision>> {
        let conditions = conditions.to_vec();
        self.run(
            true,
            Arc::new(move |tx| {
                let (conditions, writes) = (conditions.clone(), writes.clone());
                Box::pin(async move {
                    for c in &conditions {
                        let holds = match c {
                            Condition::Created { key, revision } => {
                                tx.get(key).await?.is_some_and(|kv| kv.create_revision == *revision)
                            }
                            Condition::Modified { key, revision } => {
                                tx.get(key).await?.map(|kv| kv.mod_revision) == *revision
                            }
                            Condition::PrefixEmpty { prefix } => tx.scan(prefix).await?.is_empty(),
                        };
                        if !holds {
                            return Ok(None);
                        }
                    }
                    // A key under an expired lease is gone: reap first (a reap is a revision
                    // of its own), so that every write below shares one revision.
                    let mut present = Vec::with_capacity(writes.len());
                    for w in &writes {
                        let key = match w {
                            Write::Put { key, .. } | Write::Delete { key } => key,
                        };
                        present.push(tx.get(key).await?.is_some());
                    }
                    for (w, present) in writes.into_iter().zip(present) {
                        match w {
                            Write::Put { key, value, lease } => {
                                tx.put(&key, value, lease.unwrap_or(0)).await?;
                            }
                            Write::Delete { key } if present => {
                                tx.delete(&key).await?;
                            }
                            Write::Delete { .. } => {}
                        }
                    }
                    Ok(Some(tx.rev))
                })
            }),
        )
        .await
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<Box<dyn WatchStream>> {
        let start = self.read(Arc::new(|tx| Box::pin(async move { Ok(tx.base) }))).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.watches.lock().push(Slot { prefix: prefix.to_owned(), cursor: start, tx });
        self.inner.poke.notify_one();
        Ok(Box::new(TikvWatch { start, rx }))
    }
}

// ---------------------------------------------------------------------------------------
// Background tasks

/// Most log entries read by one poll.
const POLL_BATCH: i64 = 256;

/// Reads the change log after the watches' cursors and hands out the events.
async fn poller(inner: Weak<Inner>) {
    let mut delay = Duration::ZERO;
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let (min_interval, max_interval) = (strong.cfg.poll_interval, strong.cfg.poll_max_interval);
        let idle = {
            let mut w = strong.watches.lock();
            w.retain(|s| !s.tx.is_closed());
            w.is_empty()
        };
        if idle {
            let poke = strong.poke.clone();
            drop(strong);
            // Re-check now and then that the backend still exists.
            let _ = tokio::time::timeout(Duration::from_secs(1), poke.notified()).await;
            delay = Duration::ZERO;
            continue;
        }
        if !delay.is_zero() {
            let poke = strong.poke.clone();
            let wait = jittered(delay);
            drop(strong);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = poke.notified() => {}
            }
            let Some(s) = inner.upgrade() else { return };
            delay = if poll_once(&s).await { min_interval } else { (delay * 2).clamp(min_interval, max_interval) };
        } else {
            delay = if poll_once(&strong).await { Duration::ZERO } else { min_interval };
        }
    }
}

/// One poll. True if it delivered anything (or must go on at once).
async fn poll_once(inner: &Arc<Inner>) -> bool {
    let from = match inner.watches.lock().iter().map(|s| s.cursor).min() {
        Some(c) => c,
        None => return false,
    };
    let backend = TikvBackend { inner: inner.clone() };
    let read = backend
        .run(
            false,
            Arc::new(move |tx| {
                Box::pin(async move {
                    let compacted = decode_u64(tx.txn.get(tx.keys().compacted()).await?)? as Revision;
                    let upto = tx.base.min(from + POLL_BATCH);
                    let mut entries = Vec::new();
                    if upto > from {
                        let start = tx.keys().log(from + 1);
                        let end = tx.keys().log(upto + 1);
                        let skip = tx.keys().log(0).len() - 16;
                        let pairs: Vec<_> = tx.txn.scan(start..end, u32::MAX).await?.collect();
                        for p in pairs {
                            let k: Vec<u8> = p.key().clone().into();
                            let rev = std::str::from_utf8(&k[skip..])
                                .ok()
                                .and_then(|h| i64::from_str_radix(h, 16).ok())
                                .ok_or_else(|| corrupt("log key"))?;
                            entries.push((rev, decode_events(rev, p.value())?));
                        }
                        entries.sort_by_key(|(r, _)| *r);
                    }
                    Ok((compacted, upto, tx.base, entries))
                })
            }),
        )
        .await;
    let mut slots = inner.watches.lock();
    let (compacted, upto, latest, entries) = match read {
        Ok(r) => r,
        Err(e) => {
            // The watches can no longer promise anything: break them (they resynchronise).
            for s in slots.drain(..) {
                let _ = s.tx.send(Err(Error::Unavailable(format!("tikv: watch poll failed: {e}"))));
            }
            return false;
        }
    };
    let mut delivered = false;
    slots.retain_mut(|slot| {
        if slot.cursor < compacted {
            let msg = format!(
                "tikv: watch at revision {} fell behind the change log (compacted to {compacted})",
                slot.cursor
            );
            let _ = slot.tx.send(Err(Error::Unavailable(msg)));
            return false;
        }
        if slot.cursor < from || slot.cursor >= upto {
            return !slot.tx.is_closed(); // not covered by this poll
        }
        for (rev, events) in &entries {
            if *rev <= slot.cursor {
                continue;
            }
            let mine: Vec<WatchEvent> = events
                .iter()
                .filter(|e| match e {
                    WatchEvent::Put(kv) => kv.key.starts_with(&slot.prefix),
                    WatchEvent::Delete { key, .. } => key.starts_with(&slot.prefix),
                })
                .cloned()
                .collect();
            if !mine.is_empty() {
                delivered = true;
                if slot.tx.send(Ok(mine)).is_err() {
                    return false;
                }
            }
        }
        slot.cursor = upto;
        true
    });
    delivered || !entries.is_empty() || upto < latest
}

/// Reaps leases whose expiry has passed, so their keys' delete events reach watchers.
async fn reaper(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let interval = strong.cfg.reap_interval;
        let now = strong.reap_now.clone();
        drop(strong);
        tokio::select! {
            _ = tokio::time::sleep(jittered(interval)) => {}
            _ = now.notified() => {}
        }
        let Some(strong) = inner.upgrade() else { return };
        if let Err(e) = reap_due(&strong).await {
            tracing::debug!(error = %e, "tikv: reaping expired leases failed");
        }
    }
}

async fn reap_due(inner: &Arc<Inner>) -> Result<()> {
    let backend = TikvBackend { inner: inner.clone() };
    let due: Vec<LeaseId> = backend
        .run(
            false,
            Arc::new(|tx| {
                Box::pin(async move {
                    let start = tx.keys().with("e/", b"");
                    let end = tx.keys().expiry_upto(tx.now_ms + 1);
                    let skip = start.len() + 17;
                    let keys: Vec<Vec<u8>> = tx.txn.scan_keys(start..end, 64).await?.map(Into::into).collect();
                    Ok(keys
                        .iter()
                        .filter_map(|k| {
                            let hex = std::str::from_utf8(k.get(skip..)?).ok()?;
                            u64::from_str_radix(hex, 16).ok().map(|id| id as LeaseId)
                        })
                        .collect())
                })
            }),
        )
        .await?;
    for id in due {
        backend
            .run(
                true,
                Arc::new(move |tx| {
                    Box::pin(async move {
                        if !tx.alive(id).await? {
                            tx.reap(id).await?;
                        }
                        Ok(())
                    })
                }),
            )
            .await?;
    }
    Ok(())
}

/// Starts [`compact`] in the background (a plain function, so that the futures that
/// trigger it do not contain it).
fn spawn_compaction(inner: Weak<Inner>, upto: Revision) {
    tokio::spawn(compact(inner, upto));
}

/// Removes change-log entries up to `upto` (bounded per run).
async fn compact(inner: Weak<Inner>, upto: Revision) {
    let Some(inner) = inner.upgrade() else { return };
    let backend = TikvBackend { inner };
    let r = backend
        .run(
            false,
            Arc::new(move |tx| {
                Box::pin(async move {
                    let done = decode_u64(tx.txn.get(tx.keys().compacted()).await?)? as Revision;
                    let upto = upto.min(done + 4096);
                    if upto <= done {
                        return Ok(());
                    }
                    let (start, end) = (tx.keys().log(done + 1), tx.keys().log(upto + 1));
                    let keys: Vec<Vec<u8>> = tx.txn.scan_keys(start..end, u32::MAX).await?.map(Into::into).collect();
                    for k in keys {
                        tx.txn.delete(k).await?;
                    }
                    tx.txn.put(tx.keys().compacted(), (upto as u64).to_be_bytes().to_vec()).await?;
                    tx.dirty = true;
                    Ok(())
                })
            }),
        )
        .await;
    if let Err(e) = r {
        tracing::debug!(error = %e, "tikv: change log compaction failed (retried at the next one)");
    }
}

// ---------------------------------------------------------------------------------------
// The pessimistic-transaction lock

/// A lock held by a TiKV **pessimistic transaction**: the TiKV-specific strategy.
///
/// [`lock`](TxnLock::lock) begins a pessimistic transaction and locks the key
/// `<root>t/<name>` with `lock_keys`; while another transaction holds it, the request
/// waits in TiKV's lock-wait queue (and the client retries after TiKV's wait timeout), so
/// a release wakes the next waiter at once. The transaction's heartbeat keeps the lock
/// ([`TikvConfig::txn_lock_heartbeat`]); if the holder dies, TiKV lets others resolve the
/// lock 20 s after its last heartbeat (tikv-client's fixed lock TTL). Unlock rolls the
/// transaction back.
///
/// The fencing token is a TSO timestamp fetched after the lock was granted: the previous
/// holder fetched its own before it released, so tokens strictly increase per name. They
/// are TSO versions, not revisions: do not compare them with the tokens of
/// [`Mutex`](crate::Mutex) guards.
///
/// Unlike the session-based recipes there is no lease and no loss notification: the
/// holder learns it lost the lock only when a fenced write is refused. There is no
/// `try_lock`: tikv-client 0.4 always asks TiKV to wait (its default lock wait, 1 s), so
/// `lock_timeout` checks its deadline between lock requests and may return up to about
/// two TiKV lock waits late.
///
/// ```no_run
/// # async fn demo(backend: leasehold::backend::tikv::TikvBackend) -> leasehold::Result<()> {
/// use leasehold::backend::tikv::TxnLock;
/// let lock = TxnLock::new(&backend, "inventory")?;
/// let guard = lock.lock().await?;
/// let token = guard.fencing_token();
/// guard.unlock().await?;
/// # let _ = token; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TxnLock {
    backend: TikvBackend,
    name: String,
}

/// A held [`TxnLock`]. Dropping it rolls the transaction back in the background.
pub struct TxnLockGuard {
    txn: Option<Transaction>,
    token: u64,
    name: String,
}

impl std::fmt::Debug for TxnLockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnLockGuard").field("name", &self.name).field("token", &self.token).finish_non_exhaustive()
    }
}

impl TxnLock {
    /// A lock named `name` (same rules as every recipe name).
    pub fn new(backend: &TikvBackend, name: &str) -> Result<Self> {
        crate::validate_name(name)?;
        Ok(Self { backend: backend.clone(), name: name.to_owned() })
    }

    /// Waits until the lock is held.
    ///
    /// # Cancel safety
    /// The acquisition runs in a task of its own: if the future is dropped, a lock it got
    /// is rolled back at once.
    pub async fn lock(&self) -> Result<TxnLockGuard> {
        self.acquire(None).await
    }

    /// Waits at most (about) `timeout`; [`Error::Timeout`] after it.
    ///
    /// # Cancel safety
    /// As for [`lock`](Self::lock).
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<TxnLockGuard> {
        self.acquire(Some(timeout)).await
    }

    /// Runs the acquisition in its own task: a cancelled caller never leaves a lock behind
    /// (the task rolls back what it got once it sees nobody is waiting).
    async fn acquire(&self, timeout: Option<Duration>) -> Result<TxnLockGuard> {
        let client = self.backend.inner.client.clone();
        let key = self.backend.inner.keys.txn_lock(&self.name);
        let heartbeat = self.backend.inner.cfg.txn_lock_heartbeat;
        let name = self.name.clone();
        let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<TxnLockGuard>>();
        tokio::spawn(async move {
            let got = lock_in_txn(&client, key, heartbeat, deadline, timeout).await;
            let got = got.map(|(txn, token)| TxnLockGuard { txn: Some(txn), token, name });
            if let Err(Ok(guard)) = tx.send(got) {
                let _ = guard.unlock().await; // the caller went away
            }
        });
        rx.await.map_err(|_| Error::Store("txn lock: acquisition task failed".into()))?
    }
}

async fn lock_in_txn(
    client: &TransactionClient,
    key: Vec<u8>,
    heartbeat: Duration,
    deadline: Option<tokio::time::Instant>,
    timeout: Option<Duration>,
) -> Result<(Transaction, u64)> {
    // One lock request waits in TiKV (1 s by default); a lock still held after that is
    // checked once (and cleaned up if its holder is gone), then this loop asks again, so
    // the deadline is looked at about once per TiKV lock wait.
    let mut retry = RetryOptions::default_pessimistic();
    retry.lock_backoff = tikv_client::Backoff::no_jitter_backoff(1, 1, 1);
    let options = TransactionOptions::new_pessimistic()
        .drop_check(CheckLevel::Warn)
        .heartbeat_option(HeartbeatOption::FixedTime(heartbeat))
        .retry_options(retry);
    let mut txn = client.begin_with_options(options).await.map_err(map_err)?;
    let mut pause = Backoff::new(Duration::from_millis(1), Duration::from_millis(20)).delays();
    loop {
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            let _ = txn.rollback().await;
            return Err(Error::Timeout { what: "txn lock", after: timeout.unwrap_or_default() });
        }
        match txn.lock_keys(vec![key.clone()]).await {
            Ok(()) => break,
            Err(e) if is_conflict(&e) => tokio::time::sleep(pause.next().unwrap_or(Duration::from_millis(20))).await,
            Err(e) => {
                let _ = txn.rollback().await;
                return Err(map_err(e));
            }
        }
    }
    match client.current_timestamp().await {
        Ok(ts) => Ok((txn, ts.version())),
        Err(e) => {
            let _ = txn.rollback().await;
            Err(map_err(e))
        }
    }
}

impl TxnLockGuard {
    /// The fencing token: a TSO timestamp taken after the lock was granted.
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Releases the lock (rolls the pessimistic transaction back).
    ///
    /// # Cancel safety
    /// The rollback runs in a task of its own: dropping the future does not stop it.
    pub async fn unlock(mut self) -> Result<()> {
        let Some(mut txn) = self.txn.take() else { return Ok(()) };
        let rollback = tokio::spawn(async move { txn.rollback().await.map_err(map_err) });
        rollback.await.map_err(|e| Error::Store(format!("txn lock: rollback task failed: {e}")))?
    }
}

impl Drop for TxnLockGuard {
    fn drop(&mut self) {
        if let Some(mut txn) = self.txn.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(async move {
                        let _ = txn.rollback().await;
                    });
                }
                Err(_) => tracing::warn!("txn lock dropped outside a runtime: TiKV frees it after its lock TTL"),
            }
        }
    }
}

use tikv_client::TimestampExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let kv =
            KeyValue { key: "a/b".into(), value: b"v\x00".to_vec(), create_revision: 7, mod_revision: 9, lease: 42 };
        assert_eq!(decode_kv("a/b".into(), &encode_kv(&kv)).unwrap(), kv);
        let events = vec![WatchEvent::Put(kv.clone()), WatchEvent::Delete { key: "a/c".into(), revision: 9 }];
        assert_eq!(decode_events(9, &encode_events(&events)).unwrap(), events);
        assert!(decode_events(9, &encode_events(&events)[..5]).is_err());
        let l = decode_lease(&encode_lease(LeaseRec { ttl_ms: 3, expires_ms: 5 })).unwrap();
        assert_eq!((l.ttl_ms, l.expires_ms), (3, 5));
    }

    #[test]
    fn key_layout_orders_numbers() {
        let keys = Keys { root: b"r/".to_vec() };
        assert!(keys.log(9) < keys.log(10) && keys.log(255) < keys.log(256));
        assert!(keys.expiry(99, 1) < keys.expiry_upto(100) && keys.expiry_upto(100) <= keys.expiry(100, 0));
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        let p = keys.kv("p/");
        assert!(keys.kv("p/x") < prefix_end(&p) && keys.kv("q") >= prefix_end(&p));
    }
}
