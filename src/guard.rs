//! What every guard (mutex, permit, read/write lock, leadership) holds: one key created
//! under the session's lease, and the exactly-once release of it.

use crate::backend::{Condition, KeyValue, Read, ReadValue, Revision, Write};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::local::cleanups::Owned;
use crate::local::release::ReleaseOnce;
use crate::local::waiter_queue::Slot;
use crate::Session;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod gone;

/// The accessors every guard type has (the guard stores its [`Holding`] in a field `hold`);
/// the two docs that differ per guard are arguments.
macro_rules! held_accessors {
    (token: $token_doc:literal, key: $key_doc:literal) => {
        #[doc = $token_doc]
        pub fn fencing_token(&self) -> u64 {
            self.hold.token()
        }

        #[doc = $key_doc]
        pub fn key(&self) -> &str {
            self.hold.key()
        }

        /// True while it is held and the session is before its validity deadline, and its
        /// key was not seen gone by [`lost`](Self::lost) (revoked by an operator).
        pub fn is_valid(&self) -> bool {
            self.hold.is_valid()
        }

        /// Completes when what was held must be treated as gone: the session is lost,
        /// [closed](crate::Session::close) (through any of its handles: the close revokes
        /// the lease) or [detached](crate::Session::detach), or
        /// this acquisition's key was deleted by someone else while the session lives (an
        /// operator's [`Client::revoke`](crate::Client::revoke); then
        /// [`is_valid`](Self::is_valid) turns false too). It also completes once the key is
        /// released, by this guard or a relock (the future may outlive the guard).
        ///
        /// Following the key costs nothing until the future is first polled; then it
        /// follows the client's shared deletes-only watch of the name's prefix (the one
        /// its queue waiters use), opening it if none is open.
        ///
        /// ```
        /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
        /// let client = leasehold::Client::memory();
        /// let session = client.session().await?;
        /// let guard = leasehold::Mutex::new(&session, "stuck-job")?.lock().await?;
        /// let lost = guard.lost();
        /// let holder = client.holder("stuck-job").await?.expect("held");
        /// assert!(client.revoke("stuck-job", &holder).await?); // an operator releases it
        /// lost.await;
        /// assert!(!guard.is_valid());
        /// # Ok(()) }
        /// ```
        ///
        /// # Cancel safety
        /// Cancel-safe: dropping the future stops following the key, nothing else.
        pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
            self.hold.lost()
        }

        /// The session it is held through.
        pub fn session(&self) -> &crate::Session {
            self.hold.session()
        }
    };
}
pub(crate) use held_accessors;

/// `fenced_put` and `fenced_write` for guards whose holder may write under it.
macro_rules! fenced_writes {
    ($what:literal, $held:literal) => {
        #[doc = concat!("Puts `value` at `key` in the store only while this ", $held, " (one transaction")]
        #[doc = "comparing the guard key's create revision). Fails with [`Error::NotHeld`](crate::Error::NotHeld)"]
        #[doc = "otherwise, writing nothing."]
        #[doc = ""]
        #[doc = "# Cancel safety"]
        #[doc = "A write dropped while in flight may or may not have been applied; it is applied only"]
        #[doc = "while held."]
        pub async fn fenced_put(&self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> crate::Result<()> {
            let write = crate::Write::Put { key: key.into(), value: value.into(), lease: None };
            self.hold.fenced($what, vec![write]).await
        }

        #[doc = concat!("Applies several writes atomically, only while this ", $held, ".")]
        #[doc = "Writes that name one key twice are refused with"]
        #[doc = "[`Error::InvalidArgument`](crate::Error::InvalidArgument), writing nothing (etcd"]
        #[doc = "refuses such a transaction)."]
        #[doc = ""]
        #[doc = "# Cancel safety"]
        #[doc = "As for `fenced_put`: all of the writes or none, and only while held."]
        pub async fn fenced_write(&self, writes: Vec<crate::Write>) -> crate::Result<()> {
            self.hold.fenced($what, writes).await
        }

        #[doc = concat!("Applies `writes` atomically only while this ", $held, " **and** every one of")]
        #[doc = "the caller's `conditions` holds: one transaction comparing the guard key's create"]
        #[doc = "revision besides them (etcd's `IsOwner()` compare next to the caller's own)."]
        #[doc = ""]
        #[doc = "`Ok(Some(revision))`: applied, at that store revision. `Ok(None)`: a condition of"]
        #[doc = "the caller's failed while the guard still held; nothing was written. Fails with"]
        #[doc = "[`Error::NotHeld`](crate::Error::NotHeld) if the guard no longer holds (nothing"]
        #[doc = "written either), whatever the caller's conditions."]
        #[doc = ""]
        #[doc = "# Cancel safety"]
        #[doc = "As for `fenced_put`: a write dropped while in flight may or may not have been applied,"]
        #[doc = "all of it or none, and only while held and the conditions held."]
        pub async fn fenced_write_if(
            &self,
            conditions: &[crate::backend::Condition],
            writes: Vec<crate::Write>,
        ) -> crate::Result<Option<crate::backend::Revision>> {
            self.hold.fenced_if($what, conditions, writes).await
        }
    };
}
pub(crate) use fenced_writes;

/// Who holds a name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// The holder's key.
    pub key: String,
    /// Its fencing token.
    pub token: u64,
    /// Its lease.
    pub lease: i64,
    /// How many permits it holds: 1, except for a semaphore permit taken with
    /// [`Semaphore::acquire_many`](crate::Semaphore::acquire_many) and its kin.
    pub permits: u32,
}

impl Holder {
    /// The holder whose key is `kv` (its token is the key's create revision), holding one
    /// permit.
    pub(crate) fn of(kv: KeyValue) -> Self {
        Self { key: kv.key, token: kv.create_revision as u64, lease: kv.lease, permits: 1 }
    }
}

/// A held key. Releasing deletes it only if it still has the create revision this
/// acquisition got, so a late or repeated release never deletes a newer acquisition.
#[derive(Debug)]
pub(crate) struct Holding {
    session: Session,
    key: String,
    revision: Revision,
    release: ReleaseOnce,
    local: Option<Slot>,
    /// Whether the acquisition had to wait for another holder (feeds the adaptive policy).
    contended: bool,
    /// The writes of a release in progress besides the delete: if its future is dropped,
    /// the background release applies them too.
    releasing: Vec<Write>,
    /// The `leasehold_held` gauge and hold time, from admission (see `metrics`) until the
    /// release: ended when a release is applied, or when this drops.
    held: crate::metrics::Held,
    /// The session's claim on the key (see `local/cleanups.rs`): kept until the key is gone
    /// or its delete is pending, so the session's audit never takes the key for an orphan.
    /// (Fields drop after `Drop::drop`, which registers a pending delete first.)
    _owned: Option<Owned>,
    /// Set once a [`lost`](Self::lost) future saw the key gone (see `guard/gone.rs`).
    gone: Arc<AtomicBool>,
}

impl Holding {
    pub(crate) fn new(
        session: Session,
        key: String,
        revision: Revision,
        local: Option<Slot>,
        owned: Option<Owned>,
    ) -> Self {
        let release = ReleaseOnce::new();
        let gone = Arc::default();
        let held = crate::metrics::Held::none();
        Self {
            session,
            key,
            revision,
            release,
            local,
            contended: false,
            releasing: Vec::new(),
            held,
            _owned: owned,
            gone,
        }
    }

    /// Starts the hold's metrics (at admission; see `metrics::Acquire::admitted`).
    #[cfg(feature = "metrics")]
    pub(crate) fn holds_as(&mut self, held: crate::metrics::Held) {
        self.held = held;
    }

    /// Marks the acquisition as one that waited for another holder.
    pub(crate) fn contended(mut self, contended: bool) -> Self {
        self.contended = contended;
        self
    }

    /// Whether the acquisition waited for another holder.
    pub(crate) fn was_contended(&self) -> bool {
        self.contended
    }

    pub(crate) fn token(&self) -> u64 {
        self.revision as u64
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    pub(crate) fn is_valid(&self) -> bool {
        self.release.is_held() && self.session.is_valid() && !self.gone.load(Ordering::Acquire)
    }

    /// Completes when the session ends (lost, closed or detached) or the key is gone (see
    /// `held_accessors!`).
    pub(crate) fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let session_lost = self.session.ended();
        let key_gone = gone::key_gone(self.session.clone(), self.key.clone(), self.revision, self.gone.clone());
        async move {
            tokio::select! {
                biased;
                _ = session_lost => {}
                _ = key_gone => {}
            }
        }
    }

    /// Applies `writes` only while this key still exists with this revision and every one
    /// of `conditions` holds: the revision they were applied at, `None` if one of
    /// `conditions` failed while the key still held, `NotHeld` if it did not. One
    /// transaction, which reads the key back in case it fails.
    pub(crate) async fn fenced_if(
        &self,
        what: &'static str,
        conditions: &[Condition],
        writes: Vec<Write>,
    ) -> Result<Option<Revision>> {
        if !self.release.is_held() {
            return Err(Error::NotHeld { what, reason: "already released".into() });
        }
        self.not_closed()?;
        let backend = self.session.client().backend();
        let mut all = vec![Condition::Created { key: self.key.clone(), revision: self.revision }];
        all.extend_from_slice(conditions);
        let done = backend.transact(&all, writes, &[Read::Key(self.key.clone())]).await?;
        if done.applied.is_some() {
            return Ok(done.applied);
        }
        match done.reads.first() {
            Some(ReadValue::Key(Some(kv))) if kv.create_revision == self.revision => Ok(None),
            _ => Err(Error::NotHeld {
                what,
                reason: format!("{} no longer exists with token {}", self.key, self.revision),
            }),
        }
    }

    /// Fails once the session was closed or detached: then nothing may be written or
    /// deleted on this guard's behalf. Detached, its key may be a successor's, taken over
    /// with the same create revision, which every write of a guard is conditional on: the
    /// old guard's release or fenced write would reach the successor's lock (until
    /// 2026-12-05; `a_guard_of_a_detached_session_touches_nothing`). (A session merely lost
    /// is left to the store, which refuses what its gone key no longer holds: `NotHeld`.)
    fn not_closed(&self) -> Result<()> {
        if self.session.is_closed() {
            return Err(Error::SessionClosed { lease: self.session.lease_id() });
        }
        Ok(())
    }

    /// Applies `writes` in the store only while this key still exists with this revision.
    pub(crate) async fn fenced(&self, what: &'static str, writes: Vec<Write>) -> Result<()> {
        if !self.release.is_held() {
            return Err(Error::NotHeld { what, reason: "already released".into() });
        }
        self.not_closed()?;
        let backend = self.session.client().backend();
        let held = [Condition::Created { key: self.key.clone(), revision: self.revision }];
        if backend.write_if(&held, writes).await?.is_some() {
            Ok(())
        } else {
            Err(Error::NotHeld { what, reason: format!("{} no longer exists with token {}", self.key, self.revision) })
        }
    }

    /// Applies `writes` only if this key is still held and `conditions` hold, and releases the
    /// key in the same transaction ("commit and release": one round trip less than a fenced
    /// write followed by a release): the revision they were applied at, or `Ok(None)` if a
    /// condition failed: nothing was written and the key is still held if it was.
    pub(crate) async fn write_and_release(
        &mut self,
        conditions: &[Condition],
        mut writes: Vec<Write>,
    ) -> Result<Option<Revision>> {
        if !self.release.is_held() {
            return Err(Error::NotHeld { what: "guard", reason: "already released".into() });
        }
        self.not_closed()?;
        writes.push(Write::Delete { key: self.key.clone() });
        let mut all = vec![Condition::Created { key: self.key.clone(), revision: self.revision }];
        all.extend_from_slice(conditions);
        let applied = self.session.client().backend().write_if(&all, writes).await?;
        if applied.is_some() && self.release.begin() {
            self.release.finish();
            self.local.take();
            self.held.end();
        }
        Ok(applied)
    }

    /// Releases now (see [`release_writing`](Self::release_writing)).
    pub(crate) async fn release(self, what: &'static str) -> Result<()> {
        self.release_writing(what, Vec::new()).await
    }

    /// The acquisition's create revision (its fencing token as a revision).
    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    /// Hands the session's local queue slot to whoever takes it (a relock's next
    /// acquisition). A background release on drop then runs without it, which is safe: the
    /// delete only removes this acquisition's revision of the key.
    pub(crate) fn take_local(&mut self) -> Option<Slot> {
        self.local.take()
    }

    /// Gives the local queue slot back after a [`take_local`](Self::take_local) whose
    /// relock wrote nothing (the guard still holds).
    pub(crate) fn restore_local(&mut self, local: Option<Slot>) {
        if self.local.is_none() {
            self.local = local;
        }
    }

    /// The checks before a relock or reacquire, each failing with the guard left as it was:
    /// the guard belongs to the caller's recipe and session (`ours`), the session is alive,
    /// and the guard still holds.
    pub(crate) fn check_requeue(&self, what: &'static str, op: &str, ours: bool, name: &str) -> Result<()> {
        if !ours {
            let reason = format!("{op}: {} is not this session's key for {name:?}", self.key);
            return Err(Error::InvalidArgument { what, reason });
        }
        self.session.check()?;
        if !self.is_valid() {
            return Err(Error::NotHeld { what, reason: format!("{op}: {} is released or lost", self.key) });
        }
        Ok(())
    }

    /// A copy that is already released (its drop deletes nothing): what a guard holds
    /// while its key moves to a new acquisition, and keeps if that fails.
    pub(crate) fn released_copy(&self) -> Holding {
        let release = ReleaseOnce::new();
        release.begin();
        release.finish();
        Holding {
            session: self.session.clone(),
            key: self.key.clone(),
            revision: self.revision,
            release,
            local: None,
            contended: self.contended,
            releasing: Vec::new(),
            held: crate::metrics::Held::none(),
            _owned: None,
            gone: Arc::default(),
        }
    }

    /// Marks the key released without deleting it: a transaction that also queued the next
    /// acquisition (a relock) deleted it.
    pub(crate) fn released_elsewhere(mut self) {
        if self.release.begin() {
            self.release.finish();
        }
        self.local.take();
    }
}

impl Holding {
    /// Releases now, deleting the key only if it still has this acquisition's create
    /// revision, and applies `extra` in the same transaction (a lock-delay marker is cleared
    /// this way). Retried on transient errors for the default budget; a retry after an
    /// attempt that did apply finds the key gone and writes nothing.
    ///
    /// Errors: [`Error::NotHeld`] if the key was already gone (the lock was lost before the
    /// release: its lease expired, or someone deleted it; when an attempt failed on the way
    /// and the retry found the key gone, only if the guard's `lost()` had seen it go, since
    /// that attempt may have deleted it itself, its answer lost), [`Error::SessionLost`] if the
    /// store could not be reached and the session is lost (the lease frees the key), and the
    /// store's error if it could not be reached in time while the session lives: the release
    /// then goes on in the background until the key is gone or the session ends.
    ///
    /// # Cancel safety
    /// Dropping the future hands the release (with `extra`) to the session's background
    /// cleanup, as dropping the guard does.
    pub(crate) async fn release_writing(mut self, what: &'static str, extra: Vec<Write>) -> Result<()> {
        if !self.release.is_held() {
            return Ok(());
        }
        let backend = self.session.client().backend().clone();
        let mut writes = vec![Write::Delete { key: self.key.clone() }];
        writes.extend(extra.iter().cloned());
        // From here until the outcome is known, a drop of this future releases in the
        // background (Drop sees the guard still held).
        self.releasing = extra;
        let held = [Condition::Created { key: self.key.clone(), revision: self.revision }];
        #[cfg(leasehold_sim_mutation_release)]
        if !self.release.begin() {
            return Ok(()); // mutation: the release is marked begun before it is sent
        }
        // Whether an attempt failed after the store may have applied it (Send, unlike a Cell).
        let unknown = std::sync::atomic::AtomicBool::new(false);
        let attempt = || {
            let attempt = backend.write_if(&held, writes.clone());
            let ended = self.not_closed();
            async {
                ended?; // not a try: the guard is left to the lease (Drop deletes nothing)
                let r = attempt.await;
                if r.as_ref().is_err_and(Error::is_transient) {
                    unknown.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                r
            }
        };
        let result = Backoff::default().retry(attempt).await;
        let lost = || Error::SessionLost { lease: self.session.lease_id() };
        match result {
            Ok(applied) => {
                self.release.begin();
                self.release.finish();
                self.local.take();
                self.held.end();
                match applied {
                    Some(_) => Ok(()),
                    // An earlier attempt may have applied (its answer lost): that is the
                    // common case (a leader killed mid-release), taken as a clean release. A
                    // revocation is told from it only when this guard's `lost()` had seen the
                    // key go first; one that landed unseen, just before an attempt that failed
                    // on the way, reads as clean too (the store cannot tell the two apart).
                    // (On 2026-12-05 this briefly said NotHeld whenever an attempt had failed
                    // on the way: the etcd fault suite's lost answers would then all have
                    // read as losses.)
                    None if unknown.load(std::sync::atomic::Ordering::Relaxed)
                        && self.session.is_valid()
                        && !self.gone.load(std::sync::atomic::Ordering::Acquire) =>
                    {
                        Ok(())
                    }
                    None => Err(Error::NotHeld {
                        what,
                        reason: format!(
                            "lost before the release: {} no longer existed with token {}",
                            self.key, self.revision
                        ),
                    }),
                }
            }
            // Closed or detached: the lease frees the key, or it is a successor's (Drop
            // deletes nothing then).
            Err(_) if self.session.is_closed() => Err(Error::SessionClosed { lease: self.session.lease_id() }),
            // The lease frees the key (Drop does nothing for a lost session).
            Err(_) if !self.session.is_valid() => Err(lost()),
            // Drop hands it to the background.
            Err(e) => Err(e),
        }
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        if !self.release.begin() {
            return;
        }
        self.release.finish();
        if self.session.is_ended() {
            // Lost, closed or detached: the key went (or goes) with the lease; a detached
            // session must look crashed, so nothing is deleted on its behalf. (Merely past
            // its deadline, the session may still be renewed: the background delete tries,
            // and stops if the session is lost.)
            return;
        }
        let (key, extra) = (std::mem::take(&mut self.key), std::mem::take(&mut self.releasing));
        self.session.release_in_background(key, self.revision, extra, self.local.take());
    }
}

/// The body of `Mutex::with_lock`, `Semaphore::with_permit` and
/// `Election::with_leadership`: runs `work` with `guard` unless the session ends first
/// (then `work` is dropped at its await: [`Error::SessionLost`], or
/// [`Error::SessionClosed`] when closed or detached through another handle) or its key is revoked
/// ([`Error::NotHeld`]), then releases the guard
/// with `release`; a release that fails is left to the lease (logged), since the work did
/// run while it was held.
pub(crate) async fn run_held<G, T>(
    what: &'static str,
    guard: G,
    lost: impl Future<Output = ()>,
    session: &Session,
    work: impl AsyncFnOnce(&G) -> T,
    release: impl AsyncFnOnce(G) -> Result<()>,
) -> Result<T> {
    let out = tokio::select! {
        biased;
        _ = lost => {
            if session.is_valid() {
                tracing::warn!(what, "key deleted (revoked) while running work under it; work stopped");
                return Err(Error::NotHeld { what, reason: "its key was deleted (revoked) while the work ran".into() });
            }
            tracing::warn!(what, "session ended while running work under it; work stopped");
            return Err(session.ended_error()); // lost, or closed or detached through another handle
        }
        out = work(&guard) => out,
    };
    if let Err(e) = release(guard).await {
        tracing::warn!(what, error = %e, "release after the work failed; the lease will free the key");
    }
    Ok(out)
}
