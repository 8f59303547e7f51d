//! A distributed mutex with a fencing token, under a session's lease.

use crate::adaptive::Adaptive;
use crate::backend::{CreateRequest, Precondition, Write};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::guard::{fenced_writes, held_accessors, Holder, Holding};
use crate::lock_delay::{self, LockDelay};
use crate::queue::{acquire_cas, enqueue, Admission, Cas, CasAttempt, Exclusive, Prepared, Rule, Ticket, Wait};
use crate::strategy::Strategy;
use crate::Session;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The recipe's name in errors.
const WHAT: &str = "mutex";

/// A distributed mutex.
///
/// Keys follow etcd's Go `concurrency.Mutex`: the holder and the waiters each own a key
/// `<namespace><name>/<lease id in hex>`; the owner is the key with the lowest create
/// revision. A leasehold mutex, `etcdctl lock <name>` and Go services using
/// `concurrency.NewMutex(s, "<name>")` therefore exclude each other, whichever
/// [`Strategy`] this side uses.
///
/// Each acquisition's **fencing token** is its key's create revision: strictly greater than
/// every token issued before for the name.
///
/// # Cancel safety
/// Dropping a `lock()` future at any point leaves no key behind: a key that was (or may
/// have been) created is deleted in the background ([`Session::settle`] waits for that).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
/// use leasehold::{Client, Mutex, Strategy};
/// let session = Client::memory().session().await?;
/// let mutex = Mutex::new(&session, "cron-job")?;
/// let guard = mutex.lock().await?;
/// // A second session is told the name is taken, at once.
/// let other = session.client().session().await?;
/// assert!(Mutex::new(&other, "cron-job")?.try_lock().await?.is_none());
/// guard.fenced_put("cron-job.last-run", "2026-11-22").await?;    // applied only while held
/// guard.unlock().await?;
/// let again = Mutex::new(&other, "cron-job")?.with_strategy(Strategy::Optimistic).lock().await?;
/// assert!(again.fencing_token() > 0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Mutex {
    session: Session,
    name: String,
    /// The session's keys in the name's queue (shared with a register of the same name).
    queue: Exclusive,
    strategy: Strategy,
    backoff: Backoff,
    adaptive: Arc<Adaptive>,
    lock_delay: Option<LockDelay>,
}

impl Mutex {
    /// A pessimistic (fair) mutex on `name`. Fails for an invalid name.
    pub fn new(session: &Session, name: &str) -> Result<Self> {
        Ok(Self {
            session: session.clone(),
            name: name.to_owned(),
            queue: Exclusive::new(session, name)?,
            strategy: Strategy::Pessimistic,
            backoff: Backoff::optimistic(),
            adaptive: Arc::default(),
            lock_delay: None,
        })
    }

    /// Chooses the strategy.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The delays the optimistic strategy waits after seeing the holder go, before it
    /// tries again (jittered, so that waiters do not all retry at once).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Enables **lock-delay** (Chubby, Consul): after a holder loses the lock without a
    /// clean [`unlock`](MutexGuard::unlock) (its lease expired because it crashed, paused or
    /// was cut off; its session was closed; or its guard was dropped), the next acquirer
    /// waits `delay` before it returns the guard, counted from the moment it was admitted
    /// (after the old key was gone), keeping its place in the queue meanwhile. A clean
    /// `unlock` hands over with no delay. `Duration::ZERO` turns it off (the default).
    ///
    /// Writes the old holder sent to resources that check no token get `delay` to arrive
    /// before the next holder starts: choose it longer than such a write can be in flight.
    /// Fenced writes need no delay.
    ///
    /// Every user of the name should enable it: an acquirer waits only for holders that
    /// recorded themselves (each admitted holder writes its token to a marker key,
    /// `<namespace>~leasehold/lock-delay/<name>`, which stays after the name is last used).
    /// Costs two more round trips per acquisition. While the delay runs,
    /// [`try_lock`](Mutex::try_lock) returns `Ok(None)` and [`lock_timeout`](Mutex::lock_timeout)
    /// fails at once if the delay outlasts its timeout; the handle (and its clones) remembers
    /// when it first saw the failed holder, so retrying does not restart the delay.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Mutex};
    /// use std::time::Duration;
    /// let client = Client::memory();
    /// let (a, b) = (client.session().await?, client.session().await?);
    /// let delay = Duration::from_secs(15);
    /// let guard = Mutex::new(&a, "jobs")?.with_lock_delay(delay).lock().await?;
    /// guard.unlock().await?; // clean: no delay for the next holder
    /// let mutex = Mutex::new(&b, "jobs")?.with_lock_delay(delay);
    /// let guard = mutex.try_lock().await?.expect("free at once");
    /// drop(guard); // not a clean unlock (a panic may have dropped it mid-write)
    /// # b.settle().await;
    /// assert!(mutex.try_lock().await?.is_none()); // within the delay
    /// let started = tokio::time::Instant::now();
    /// mutex.lock().await?.unlock().await?;
    /// assert!(started.elapsed() <= delay);
    /// # Ok(()) }
    /// ```
    pub fn with_lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = (!delay.is_zero())
            .then(|| LockDelay::new(delay, self.session.client().reserved_key(lock_delay::AREA, &self.name)));
        self
    }

    /// The lock-delay, if enabled (see [`with_lock_delay`](Mutex::with_lock_delay)).
    pub fn lock_delay(&self) -> Option<Duration> {
        self.lock_delay.as_ref().map(LockDelay::delay)
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key this session uses for the name (a [relock](Self::relock) alternates between
    /// it and [`relock_key`](Self::relock_key)).
    pub fn key(&self) -> &str {
        self.queue.key()
    }

    /// The session's second key for the name, `<key>-r`: a relock queues with the key the
    /// guard does not hold, because etcd cannot delete and create one key in one
    /// transaction. (Lease ids are hex, so no other session's key can look like it.)
    pub fn relock_key(&self) -> String {
        self.queue.relock_key()
    }

    /// Waits until the lock is held.
    ///
    /// Fails with [`Error::SessionLost`] if the session is lost while waiting
    /// ([`Error::SessionClosed`] if it is closed or detached through another handle).
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn lock(&self) -> Result<MutexGuard> {
        self.acquire(Wait::Forever).await.map(|g| g.expect("waits until held"))
    }

    /// Runs `work` under the lock: waits for the lock, runs `work` with the guard, and
    /// unlocks when it returns. The lock-lost notification is built in: if the session is
    /// lost while `work` runs, `work` is dropped at once — it does not get past the await
    /// it is at — and the call fails with [`Error::SessionLost`] ([`Error::SessionClosed`]
    /// if the session is closed or detached through another handle); if its key is revoked
    /// ([`Client::revoke`](crate::Client::revoke)) while the session lives, likewise with
    /// [`Error::NotHeld`]. (With [`lock`](Self::lock), watching [`MutexGuard::lost`] is the
    /// caller's job.)
    ///
    /// If the unlock after `work` fails (the store unreachable for the whole retry budget),
    /// the result is still returned — the work did run under the lock — and the key is left
    /// to the lease, with a warning in the log. If `work` panics, the panic unwinds through
    /// this call and the guard's drop releases the lock in the background.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Mutex};
    /// let session = Client::memory().session().await?;
    /// let report = Mutex::new(&session, "nightly-report")?;
    /// let token = report
    ///     .with_lock(async |guard| {
    ///         guard.fenced_put("reports/last-run", "2026-12-01").await?; // refused once lost
    ///         Ok::<_, leasehold::Error>(guard.fencing_token())
    ///     })
    ///     .await??;
    /// assert!(token > 0);
    /// assert!(report.holder().await?.is_none(), "released after the work");
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future drops `work` at the await it is at; what was acquired is
    /// released in the background, as for a dropped guard.
    pub async fn with_lock<T>(&self, work: impl AsyncFnOnce(&MutexGuard) -> T) -> Result<T> {
        let guard = self.lock().await?;
        let lost = guard.lost();
        crate::guard::run_held("mutex", guard, lost, &self.session, work, async |g: MutexGuard| g.unlock().await).await
    }

    /// Takes the lock if it is free, without waiting: `Ok(None)` if someone else holds it.
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn try_lock(&self) -> Result<Option<MutexGuard>> {
        self.acquire(Wait::No).await
    }

    /// Waits at most `timeout`; fails with [`Error::Timeout`], leaving nothing behind.
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<MutexGuard> {
        match self.acquire(Wait::at_most(timeout)).await? {
            Some(g) => Ok(g),
            None => Err(Error::Timeout { what: "mutex", after: timeout }),
        }
    }

    /// Releases `guard` and queues for the lock again **in one transaction**, so a loop
    /// that locks, works, unlocks and locks again pays one commit per round instead of two.
    /// Fair: whoever was queued when the guard is released goes first, and the lock comes
    /// back after them, with a new (greater) fencing token; when nobody waits it comes back
    /// at once. The new acquisition uses the session's other key for the name
    /// ([`relock_key`](Self::relock_key) and [`key`](Self::key) alternate).
    ///
    /// Queued relocks need the pessimistic strategy (or adaptive while it queues) and no
    /// lock-delay; otherwise this is [`unlock`](MutexGuard::unlock) followed by
    /// [`lock`](Self::lock).
    ///
    /// Errors: [`Error::InvalidArgument`] if `guard` is not this mutex's (another name or
    /// session), [`Error::SessionLost`] if the session is lost and [`Error::NotHeld`] if the
    /// guard was released: these leave `guard` as it was.
    /// Any later error, or dropping the future, leaves `guard` released (the old key is
    /// deleted in the background if the transaction did not delete it) and no new key
    /// behind, as for a cancelled [`lock`](Self::lock).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Mutex};
    /// let session = Client::memory().session().await?;
    /// let mutex = Mutex::new(&session, "batch")?;
    /// let mut guard = mutex.lock().await?;
    /// for _ in 0..3 {
    ///     let before = guard.fencing_token();
    ///     // ... one unit of work under the lock, then let any waiter go first ...
    ///     mutex.relock(&mut guard).await?;
    ///     assert!(guard.fencing_token() > before);
    /// }
    /// guard.unlock().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future leaves the old acquisition released and no new key behind (both
    /// are deleted in the background if the transaction's outcome is not known).
    pub async fn relock(&self, guard: &mut MutexGuard) -> Result<()> {
        let ours = guard.session().lease_id() == self.session.lease_id()
            && (guard.key() == self.key() || guard.key() == self.relock_key());
        guard.hold.check_requeue("mutex", "relock", ours, &self.name)?;
        let queued = match self.strategy {
            Strategy::Pessimistic => true,
            Strategy::Optimistic => false,
            Strategy::Adaptive => self.adaptive.queue_next(),
        };
        let placeholder = guard.hold.released_copy();
        let mut hold = std::mem::replace(&mut guard.hold, placeholder);
        let marker = guard.marker.take();
        if !queued || self.lock_delay.is_some() || marker.is_some() {
            MutexGuard { hold, marker }.unlock().await?;
            *guard = self.lock().await?;
            return Ok(());
        }
        let mut timer = crate::metrics::Acquire::start("mutex");
        let key = self.queue.other_key(hold.key());
        let req = CreateRequest { key, ..self.queue.request(Precondition::KeyAbsent, None) };
        let local = hold.take_local();
        let ticket =
            Ticket { what: "mutex", req, local, adopt: true, replaces: Some(hold), check: None, register: None };
        let span = tracing::debug_span!(
            "mutex.relock",
            name = %self.name,
            token = tracing::field::Empty,
            wait_ms = tracing::field::Empty
        );
        let admission = enqueue(&self.session, ticket, Wait::Forever, Rule::First).instrument(span.clone()).await;
        let mut hold = match timer.check(admission)? {
            Admission::Held(hold, ..) => hold,
            Admission::NotAdmitted | Admission::KeyTaken => unreachable!("waits forever, and adopt is set"),
        };
        if self.strategy == Strategy::Adaptive {
            self.adaptive.queued(hold.was_contended());
        }
        timer.admitted(&mut hold, &span);
        guard.hold = hold;
        Ok(())
    }

    /// The current holder, if any (a snapshot: it may change at once).
    ///
    /// # Cancel safety
    /// Cancel-safe: a read; dropping it changes nothing.
    pub async fn holder(&self) -> Result<Option<Holder>> {
        let (kvs, _) = self.session.client().backend().range_prefix(self.queue.prefix(), 1).await?;
        Ok(kvs.into_iter().next().map(Holder::of))
    }

    async fn acquire(&self, wait: Wait) -> Result<Option<MutexGuard>> {
        let timer = crate::metrics::Acquire::start("mutex");
        let span = tracing::debug_span!(
            "mutex.acquire",
            name = %self.name,
            strategy = ?self.strategy,
            token = tracing::field::Empty,
            wait_ms = tracing::field::Empty
        );
        let acquired = async {
            self.session.check()?;
            // A re-attached lease's key for this name is adopted, and its relock key deleted
            // in the create step (by its revision: see `Exclusive::prepare`).
            // Deleted in the background if this acquisition ends without holding.
            let Some((prepared, stale_key)) = self.queue.prepare(wait).await? else { return Ok(None) };
            let guard = match self.strategy {
                Strategy::Pessimistic => self.acquire_queued(wait, prepared).await,
                Strategy::Optimistic => match self.cas(wait, prepared, false).await? {
                    Ok(got) => Ok(got),
                    // A re-attached lease's key of this session, queued already: wait in the queue.
                    Err(prepared) => self.acquire_queued(wait, prepared).await,
                },
                Strategy::Adaptive if self.adaptive.queue_next() => {
                    let got = self.acquire_queued(wait, prepared).await?;
                    if let Some(g) = &got {
                        self.adaptive.queued(g.hold.was_contended());
                    }
                    Ok(got)
                }
                Strategy::Adaptive => {
                    // For a mutex the queue costs what a compare-and-swap costs when alone, and
                    // is fair under contention: the first holder met (not by a try) switches
                    // to it, this acquisition included — waiting without a place, it could
                    // starve behind the queue.
                    match self.cas(wait, prepared, true).await? {
                        Ok(got) => {
                            if got.is_some() {
                                self.adaptive.optimistic(0);
                            }
                            Ok(got)
                        }
                        Err(prepared) => {
                            self.adaptive.force_queue();
                            let got = self.acquire_queued(wait, prepared).await?;
                            if let Some(g) = &got {
                                self.adaptive.queued(g.hold.was_contended());
                            }
                            Ok(got)
                        }
                    }
                }
            }?;
            if guard.is_some() {
                stale_key.landed();
            }
            match (guard, &self.lock_delay) {
                (Some(guard), Some(delay)) => Self::after_delay(guard, delay, wait).await,
                (guard, _) => Ok(guard),
            }
        }
        .instrument(span.clone())
        .await;
        timer.settle(wait, &span, acquired, |g| &mut g.hold)
    }

    /// Lock-delay, once admitted: see [`crate::lock_delay`].
    async fn after_delay(guard: MutexGuard, delay: &LockDelay, wait: Wait) -> Result<Option<MutexGuard>> {
        let held = delay.hold("mutex", guard.hold, wait).await?;
        Ok(held.map(|(hold, marker)| MutexGuard { hold, marker: Some(marker) }))
    }

    async fn acquire_queued(&self, wait: Wait, prepared: Prepared) -> Result<Option<MutexGuard>> {
        let held = self.queue.queued(WHAT, wait, prepared, None).await?;
        Ok(held.map(|(hold, _)| MutexGuard { hold, marker: None }))
    }

    /// The compare-and-swap acquisition. With `give_way`, the first holder it meets (unless
    /// `wait` is a try) ends it with the slot and stale key back (`Err`), for the queue; so
    /// does this session's own key found behind a holder (see [`Cas::Busy`]).
    async fn cas(
        &self,
        wait: Wait,
        (local, stale): Prepared,
        give_way: bool,
    ) -> Result<std::result::Result<Option<MutexGuard>, Prepared>> {
        let req = self.queue.request(Precondition::PrefixEmpty, stale.clone());
        let attempt = CasAttempt { local: Some(local), adopt: true, give_way };
        Ok(match acquire_cas(&self.session, WHAT, req, attempt, wait, &self.backoff).await?.0 {
            Cas::Held(hold, _) => Ok(Some(MutexGuard { hold, marker: None })),
            Cas::NotHeld => Ok(None),
            Cas::Busy(local) => Err((local.expect("the slot comes back"), stale)),
            Cas::KeyTaken => unreachable!("adopt is set"),
        })
    }
}

/// A held mutex. Released by [`unlock`](MutexGuard::unlock), or in the background on drop.
///
/// It owns what it needs (a handle of its session, its key and token): it is `Send + Sync
/// + 'static`, so it can move into a spawned task and outlive the recipe handle that
/// acquired it, like tokio's `Owned*` guards (checked at compile time in `src/lib.rs`).
#[derive(Debug)]
#[must_use = "the lock is released when this is dropped: bind it (`let guard = ...`) for as long as it must be held"]
pub struct MutexGuard {
    hold: Holding,
    /// With lock-delay: the marker a clean unlock clears.
    marker: Option<String>,
}

impl MutexGuard {
    held_accessors!(
        token: "The fencing token: strictly greater than every earlier holder's token of this name.",
        key: "The key this acquisition holds (`<prefix>/<lease hex>`, or its [relock key](Mutex::relock_key))."
    );

    fenced_writes!("mutex", "guard still holds the lock");

    /// Applies `writes` only while this guard still holds the lock, and releases it in the
    /// same transaction: a fenced write and an unlock in one round trip. Fails with
    /// [`Error::NotHeld`] (writing nothing) if the lock is no longer held.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Mutex, Write};
    /// let session = Client::memory().session().await?;
    /// let mutex = Mutex::new(&session, "nightly-report")?;
    /// let guard = mutex.lock().await?;
    /// let done = Write::Put { key: "reports/last-run".into(), value: b"2026-12-03".to_vec(), lease: None };
    /// guard.unlock_with(vec![done]).await?; // the result and the release: one commit
    /// assert!(mutex.holder().await?.is_none());
    /// let stored = session.client().backend().get("reports/last-run").await?;
    /// assert_eq!(stored.map(|kv| kv.value), Some(b"2026-12-03".to_vec()));
    /// # Ok(()) }
    /// ```
    ///
    /// Writes that name one key twice, or the guard's own key (which the release deletes in
    /// the same transaction), are refused with [`Error::InvalidArgument`]: nothing is
    /// written, and the lock is released in the background as by dropping the guard.
    ///
    /// # Cancel safety
    /// Dropping the future does not leave the lock held: the release goes on in the
    /// background. The writes were applied only if the transaction reached the store
    /// while the lock was held.
    pub async fn unlock_with(mut self, mut writes: Vec<Write>) -> Result<()> {
        writes.extend(self.marker.take().map(|key| Write::Delete { key }));
        if self.hold.write_and_release(&[], writes).await?.is_some() {
            return Ok(());
        }
        Err(Error::NotHeld { what: "mutex", reason: format!("{} no longer exists with this token", self.key()) })
    }

    /// Releases the lock, deleting the key only if it is still this acquisition's. With
    /// [lock-delay](Mutex::with_lock_delay), this is the clean release: the next holder does
    /// not wait (dropping the guard is not).
    ///
    /// # Cancel safety
    /// Dropping the future does not leave it held: the release goes on in the session's
    /// background cleanup (as for a dropped guard), retried until the key is gone or the
    /// session ends.
    pub async fn unlock(self) -> Result<()> {
        match self.marker {
            Some(marker) => self.hold.release_writing(WHAT, vec![Write::Delete { key: marker }]).await,
            None => self.hold.release(WHAT).await,
        }
    }
}
