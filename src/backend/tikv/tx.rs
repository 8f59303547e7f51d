//! One transaction and its retries: errors and their mapping to [`Error`], the state of
//! one attempt ([`Tx`]: the snapshot's time and revision, the revisions and change-log
//! entries it will commit, leases on TSO time) and [`attempts`], which runs a body until an
//! attempt commits.

use super::*;

/// Why a transaction attempt failed.
pub(super) enum Fail {
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

pub(super) type TxResult<T> = std::result::Result<T, Fail>;

/// A failure that another attempt of the same transaction can fix: a write conflict, a
/// lock held by a transaction still running, or our own locks cleaned up by someone else.
pub(super) fn is_conflict(e: &tikv_client::Error) -> bool {
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
pub(super) fn map_err(e: tikv_client::Error) -> Error {
    use tikv_client::Error as E;
    let (kind, msg): (fn(Cause) -> Error, String) = if is_conflict(&e) {
        (Error::Unavailable, format!("tikv: contention: {e}"))
    } else {
        match &e {
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
            | E::JoinError(_) => (Error::Unavailable, format!("tikv: {e}")),
            E::StringError(s) | E::InternalError { message: s }
                if ["timeout", "connect", "channel", "closed", "transport", "unavailable"]
                    .iter()
                    .any(|w| s.to_lowercase().contains(w)) =>
            {
                (Error::Unavailable, format!("tikv: {s}"))
            }
            other => (Error::Store, format!("tikv: {other}")),
        }
    };
    // The client's own error stays the cause (`Error::source`).
    kind(Cause::with_source(msg, e))
}

/// Options of every backend transaction. A read or prewrite that meets another
/// transaction's lock resolves it (cleaning it up if its TTL ran out) and otherwise retries
/// after a short jittered pause, a dozen times at most; then the whole attempt starts over
/// with a new snapshot (the default backoff, up to 500 ms per step, would stall every
/// writer behind the hot revision key).
pub(super) fn optimistic() -> TransactionOptions {
    let mut retry = RetryOptions::default_optimistic();
    retry.lock_backoff = tikv_client::Backoff::full_jitter_backoff(1, 16, 12);
    TransactionOptions::new_optimistic()
        .drop_check(CheckLevel::Warn)
        .heartbeat_option(HeartbeatOption::NoHeartbeat)
        .retry_options(retry)
}

pub(super) fn jittered(d: Duration) -> Duration {
    let ms = d.as_secs_f64() * 1000.0;
    crate::backoff::with_rng(|rng| Duration::from_secs_f64(rng.random_range(ms * 0.5..=ms.max(0.001)) / 1000.0))
}

// ---------------------------------------------------------------------------------------
// One transaction attempt

/// The state of one transaction attempt: the TiKV transaction, the snapshot's time and
/// revision, and the revisions and log entries it will commit.
pub(super) struct Tx {
    pub(super) txn: Transaction,
    pub(super) inner: Arc<Inner>,
    /// TSO physical milliseconds of the start timestamp: "now" for lease expiry.
    pub(super) now_ms: u64,
    /// `m/rev` as of the snapshot.
    pub(super) base: Revision,
    /// The last revision allocated (== base while nothing changed).
    pub(super) rev: Revision,
    /// Whether the current change already has its revision.
    pub(super) open: bool,
    pub(super) log: BTreeMap<Revision, Vec<WatchEvent>>,
    pub(super) leases: HashMap<LeaseId, Option<LeaseRec>>,
    pub(super) reaped: HashSet<LeaseId>,
    /// Whether anything was written (including lease records, which have no revision).
    pub(super) dirty: bool,
    /// Whether the revision counter is written even if unchanged: a reap (see [`Tx::reap`]).
    pub(super) touch_rev: bool,
    /// Reap expired leases inline (writes) or only leave their keys out (reads).
    pub(super) reap_inline: bool,
    pub(super) met_expired: bool,
}

impl Tx {
    pub(super) async fn begin(inner: &Arc<Inner>, reap_inline: bool) -> TxResult<Self> {
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
            touch_rev: false,
            reap_inline,
            met_expired: false,
        })
    }

    pub(super) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(super) async fn lease(&mut self, id: LeaseId) -> TxResult<Option<LeaseRec>> {
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
    pub(super) async fn alive(&mut self, id: LeaseId) -> TxResult<bool> {
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
    pub(super) async fn raw_kv(&mut self, key: &str) -> TxResult<Option<KeyValue>> {
        let raw = self.txn.get(self.keys().kv(key)).await?;
        Ok(raw.map(|r| decode_kv(key.to_owned(), &r)).transpose()?)
    }

    /// Deals with a record whose lease may have expired: `None` if it did (reaping the
    /// lease first when writing).
    pub(super) async fn live(&mut self, kv: KeyValue) -> TxResult<Option<KeyValue>> {
        Ok(self.alive(kv.lease).await?.then_some(kv))
    }

    /// `key` as the contract sees it: absent if its lease expired.
    pub(super) async fn get(&mut self, key: &str) -> TxResult<Option<KeyValue>> {
        match self.raw_kv(key).await? {
            Some(kv) => self.live(kv).await,
            None => Ok(None),
        }
    }

    /// Every live key under `prefix`, oldest create revision first.
    pub(super) async fn scan(&mut self, prefix: &str) -> TxResult<Vec<KeyValue>> {
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
    pub(super) fn change(&mut self) -> Revision {
        if !self.open {
            self.rev += 1;
            self.open = true;
            self.log.insert(self.rev, Vec::new());
        }
        self.rev
    }

    /// Ends the current change: the next write gets a new revision.
    pub(super) fn end_change(&mut self) {
        self.open = false;
    }

    pub(super) async fn put(&mut self, key: &str, value: Vec<u8>, lease: LeaseId) -> TxResult<KeyValue> {
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

    pub(super) async fn delete(&mut self, key: &str) -> TxResult<bool> {
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
    ///
    /// If the lease exists, it also writes the revision counter, changed or not (a lease
    /// with no keys opens no revision): every change writes it, so a create under the lease that read the lease
    /// alive and commits after this reap conflicts with it and runs again, finding the
    /// lease gone. (Without it the two wrote disjoint keys — this the lease's records, the
    /// create its key and the lease's index — and both committed, an optimistic
    /// transaction's write skew: the key stayed under a lease that no longer existed,
    /// never reaped, with no delete event; test
    /// `a_create_racing_the_revoke_of_its_lease_is_not_left_behind`.)
    pub(super) async fn reap(&mut self, id: LeaseId) -> TxResult<()> {
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
            self.touch_rev = true; // (a lease that does not exist has no create to conflict with)
            self.txn.delete(self.keys().lease(id)).await?;
            self.txn.delete(self.keys().expiry(rec.expires_ms, id)).await?;
        }
        self.leases.insert(id, None);
        self.dirty = true;
        self.end_change();
        Ok(())
    }

    /// Commits (or, if nothing was written, just ends) the transaction.
    pub(super) async fn finish(mut self) -> TxResult<Revision> {
        if !self.dirty {
            self.txn.rollback().await?;
            return Ok(self.rev);
        }
        let mut wrote_revisions = false;
        let log = std::mem::take(&mut self.log);
        for (rev, events) in &log {
            if !events.is_empty() {
                self.txn.put(self.keys().log(*rev), encode_events(events)).await?;
                wrote_revisions = true;
            }
        }
        if self.rev != self.base || self.touch_rev {
            self.txn.put(self.keys().rev(), (self.rev as u64).to_be_bytes().to_vec()).await?;
        }
        if let Err(e) = self.txn.commit().await {
            let _ = self.txn.rollback().await;
            return Err(e.into());
        }
        if wrote_revisions {
            // Polled at once only for a watch of this backend that wants the change: on the
            // TiKV test server's flash sale one poll per write of a key nobody watches (a
            // watch of another register's queue kept open) cost a fifth of the writes per
            // second. Other changes wait for the poller's next turn, as other processes'
            // writes do. Asked after the commit: a watch added meanwhile whose start
            // revision is older than this write is then either seen here or polls after
            // the commit itself (adding a watch pokes the poller).
            if log.values().any(|events| self.inner.watched(events)) {
                self.inner.poke.notify_one();
            }
            let retention = self.inner.cfg.log_retention as i64;
            if self.rev / GC_EVERY != self.base / GC_EVERY && self.rev > retention {
                spawn_compaction(Arc::downgrade(&self.inner), self.rev - retention);
            }
        }
        Ok(self.rev)
    }

    pub(super) async fn abort(mut self) {
        let _ = self.txn.rollback().await;
    }
}

/// The change log is compacted each time the revision crosses a multiple of this.
pub(super) const GC_EVERY: Revision = 256;

/// Runs attempts of one transaction until one commits, a permanent error, or the bounded
/// retries on conflicts run out.
///
/// No attempt starts after `stop_at` (the caller stops waiting a little later), so an
/// operation whose caller got [`Error::Unavailable`] for a timeout does not commit long
/// afterwards: only an attempt already running at `stop_at` can.
pub(super) async fn attempts<T: Send + 'static>(
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

pub(super) type Body<T> =
    Arc<dyn for<'a> Fn(&'a mut Tx) -> Pin<Box<dyn Future<Output = TxResult<T>> + Send + 'a>> + Send + Sync>;
