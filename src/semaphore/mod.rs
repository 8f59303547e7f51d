//! A fair counting semaphore with fenced permits, under a session's lease.

use crate::backend::{CreateRequest, CreateResponse, Precondition, Revision};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::queue::{create, enqueue, weight_of, Admission, CreateCheck, Retry, Rule, Ticket, View, Wait};
use crate::strategy::Strategy;
use crate::Session;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

mod permit;
mod usage;
pub use permit::Permit;
use usage::weight_value;
pub use usage::Usage;
pub(crate) use usage::{count_key_of, parse_count, usage_of};

/// How many numbered keys an acquisition tries before giving up, when it finds them taken
/// (only a re-attached session, whose counter starts again, can find one taken).
const KEY_ATTEMPTS: usize = 64;

/// A counting semaphore: at most N permits of a name are held at once, across processes.
///
/// # Keys
/// - `<namespace><name>` (no trailing `/`): the permit count N, as decimal text, with no
///   lease. The first user creates it; it is the count every user is admitted by.
/// - `<namespace><name>/<lease id in hex>-<n>`: one key per acquisition (waiting or
///   holding), under the session's lease; `n` numbers the session's acquisitions, so one
///   session can hold several permits. Its value is the acquisition's **weight**, the
///   permits it asks for: empty for one permit (so a single-permit key is what every
///   version writes, and a key without a weight counts as one), else that count as decimal
///   text (an [`acquire_many`](Semaphore::acquire_many)). Versions before weights read
///   every key as one permit: do not mix them with `acquire_many` on a name.
///
/// # Admission
/// With [`Strategy::Pessimistic`] (the default) the semaphore is **fair**: keys queue in
/// create-revision order and a key holds its permits while the weights of the keys up to
/// its own (its own included) sum to at most N. So at most N permits are held at once, and
/// admission is FIFO: a waiter for many permits at the head of the queue is not passed by
/// later waiters for fewer, even when enough are free for them (as tokio's semaphore). A
/// waiter is woken only when its turn comes (the client's delete feed for the prefix
/// evaluates it; no extra round trip per change). A holder that crashes frees its permits
/// when its lease expires.
///
/// With [`Strategy::Optimistic`] an acquisition creates its key, reads the first N keys in
/// the same call, and deletes the key at once if the same rule does not admit it; it then
/// waits until the keys left weigh at most N minus its weight, and tries again after a
/// jittered delay. It keeps no place in
/// the queue, so it is not fair (a steady stream of queued waiters can pass it), but it
/// never leaves a waiting key behind. Both strategies use the same rule on the same keys,
/// so they can be mixed safely.
///
/// A client that asks for a different count than the stored one gets
/// [`Error::PermitMismatch`] and is never admitted.
///
/// Each acquisition's **fencing token** is its key's create revision (one token however
/// many permits it holds): strictly greater than the token of every permit of the name
/// granted before it.
///
/// # Cancel safety
/// Dropping an `acquire()` or `acquire_many(n)` future at any point leaves no key behind (see
/// [`Session::settle`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
/// use leasehold::{Client, Error, Semaphore};
/// let client = Client::memory();
/// let session = client.session().await?;
/// let pool = Semaphore::new(&session, "db-connections", 2)?;
/// let a = pool.acquire().await?;
/// let b = pool.acquire().await?; // one session may hold several permits
/// assert!(pool.try_acquire().await?.is_none()); // both are taken
/// assert!(b.fencing_token() > a.fencing_token());
/// a.release().await?;
/// let c = pool.try_acquire().await?.expect("a permit is free again");
/// assert!(pool.try_acquire_many(2).await?.is_none(), "one is free, not two");
///
/// // Another process asking for a different count is refused.
/// let other = client.session().await?;
/// let wrong = Semaphore::new(&other, "db-connections", 5)?;
/// assert!(matches!(wrong.acquire().await, Err(Error::PermitMismatch { stored: 2, requested: 5, .. })));
/// # drop((b, c)); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Semaphore {
    session: Session,
    name: String,
    prefix: String,
    count_key: String,
    permits: u32,
    strategy: Strategy,
    backoff: Backoff,
    /// The stored count as this handle last saw it (equal to `permits`), with the create
    /// revision of the count key; every acquisition checks it again in its create call.
    stored: Arc<parking_lot::Mutex<Option<(u32, Revision)>>>,
}

impl Semaphore {
    /// A fair semaphore of `permits` permits on `name`. Fails for an invalid name or zero
    /// permits. The count is checked against the stored one at the first acquisition.
    pub fn new(session: &Session, name: &str, permits: u32) -> Result<Self> {
        let prefix = session.client().prefix_of(name)?;
        if permits == 0 {
            return Err(Error::invalid("semaphore", "a semaphore needs at least one permit"));
        }
        let count_key = count_key_of(&prefix).to_owned();
        Ok(Self {
            session: session.clone(),
            name: name.to_owned(),
            prefix,
            count_key,
            permits,
            strategy: Strategy::Pessimistic,
            backoff: Backoff::optimistic(),
            stored: Arc::default(),
        })
    }

    /// Chooses the strategy (see [the type docs](Semaphore#admission)).
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The delays the optimistic strategy waits after seeing a permit freed, before it
    /// tries again.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The permit count this handle asked for.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// Who holds the permits (each holder with how many it holds, [`Holder::permits`](crate::Holder::permits))
    /// and how many acquisitions wait: a snapshot, which may change at once. `permits` is the stored count (this handle's, if nobody has used the name
    /// yet). Writes nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Semaphore};
    /// let session = Client::memory().session().await?;
    /// let encoders = Semaphore::new(&session, "encoders", 3)?;
    /// let permit = encoders.acquire().await?;
    /// let usage = encoders.usage().await?;
    /// assert_eq!((usage.holders.len(), usage.available(), usage.waiting), (1, 2, 0));
    /// assert_eq!(usage.holders[0].token, permit.fencing_token());
    /// # permit.release().await?; Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: a read; dropping it changes nothing.
    pub async fn usage(&self) -> Result<Usage> {
        let backend = self.session.client().backend();
        let permits = match backend.get(&self.count_key).await? {
            Some(kv) => parse_count(&self.count_key, &kv.value)?,
            None => self.permits,
        };
        usage_of(&**backend, &self.prefix, permits).await
    }

    /// Waits until a permit is held.
    ///
    /// Fails with [`Error::PermitMismatch`] if the stored count differs, and with
    /// [`Error::SessionLost`] if the session is lost while waiting ([`Error::SessionClosed`]
    /// if it is closed or detached through another handle).
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn acquire(&self) -> Result<Permit> {
        self.acquire_with(Wait::Forever, 1).await.map(|p| p.expect("waits until held"))
    }

    /// Waits until `permits` permits are held, by one acquisition: one key, one fencing
    /// token, released all at once ([`Permit::permits`] says how many). Fair with every
    /// other acquisition (see [Admission](Semaphore#admission)): it is admitted when the
    /// acquisitions queued before it and its own `permits` fit in N.
    ///
    /// Fails with [`Error::InvalidArgument`] at once, writing nothing, if `permits` is 0
    /// or more than the semaphore's count; otherwise as [`acquire`](Self::acquire).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Error, Semaphore};
    /// let session = Client::memory().session().await?;
    /// let memory_gb = Semaphore::new(&session, "memory-gb", 16)?;
    /// let big_job = memory_gb.acquire_many(12).await?;
    /// assert_eq!(big_job.permits(), 12);
    /// assert!(memory_gb.try_acquire_many(5).await?.is_none(), "4 are free");
    /// let small_job = memory_gb.acquire_many(4).await?;
    /// assert!(matches!(memory_gb.acquire_many(17).await, Err(Error::InvalidArgument { .. })));
    /// big_job.release().await?;
    /// # small_job.release().await?; Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn acquire_many(&self, permits: u32) -> Result<Permit> {
        self.acquire_with(Wait::Forever, permits).await.map(|p| p.expect("waits until held"))
    }

    /// Takes `permits` permits at once if this acquisition is admitted now (they are free
    /// and nobody queued earlier waits for them): `Ok(None)` otherwise. Errors as
    /// [`acquire_many`](Self::acquire_many).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Semaphore};
    /// let session = Client::memory().session().await?;
    /// let lanes = Semaphore::new(&session, "lanes", 3)?;
    /// let one = lanes.acquire().await?;
    /// assert!(lanes.try_acquire_many(3).await?.is_none());
    /// let two = lanes.try_acquire_many(2).await?.expect("two are free");
    /// # drop((one, two)); Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn try_acquire_many(&self, permits: u32) -> Result<Option<Permit>> {
        self.acquire_with(Wait::No, permits).await
    }

    /// Waits at most `timeout` for `permits` permits at once; fails with
    /// [`Error::Timeout`], leaving nothing behind. Errors as
    /// [`acquire_many`](Self::acquire_many).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Error, Semaphore};
    /// use std::time::Duration;
    /// let session = Client::memory().session().await?;
    /// let lanes = Semaphore::new(&session, "lanes", 3)?;
    /// let one = lanes.acquire().await?;
    /// let r = lanes.acquire_many_timeout(3, Duration::from_millis(10)).await;
    /// assert!(matches!(r, Err(Error::Timeout { .. })));
    /// # drop(one); Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn acquire_many_timeout(&self, permits: u32, timeout: Duration) -> Result<Permit> {
        match self.acquire_with(Wait::at_most(timeout), permits).await? {
            Some(p) => Ok(p),
            None => Err(Error::Timeout { what: "semaphore", after: timeout }),
        }
    }

    /// Runs `work` holding a permit: waits for one, runs `work` with it, and releases it
    /// when `work` returns. If the session is lost while `work` runs, `work` is dropped at
    /// the await it is at and the call fails with [`Error::SessionLost`] (as
    /// [`Mutex::with_lock`](crate::Mutex::with_lock)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Semaphore};
    /// let session = Client::memory().session().await?;
    /// let encoders = Semaphore::new(&session, "encoders", 3)?;
    /// let in_use = encoders.with_permit(async |_permit| encoders.usage().await).await??;
    /// assert_eq!(in_use.holders.len(), 1);
    /// assert_eq!(encoders.usage().await?.available(), 3, "released after the work");
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future drops `work` at the await it is at; what was acquired is
    /// released in the background, as for a dropped guard.
    pub async fn with_permit<T>(&self, work: impl AsyncFnOnce(&Permit) -> T) -> Result<T> {
        let permit = self.acquire().await?;
        let lost = permit.lost();
        crate::guard::run_held("semaphore", permit, lost, &self.session, work, async |p: Permit| p.release().await)
            .await
    }

    /// Takes a permit if one is free for this caller now: `Ok(None)` otherwise.
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn try_acquire(&self) -> Result<Option<Permit>> {
        self.acquire_with(Wait::No, 1).await
    }

    /// Waits at most `timeout`; fails with [`Error::Timeout`], leaving nothing behind.
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Permit> {
        match self.acquire_with(Wait::at_most(timeout), 1).await? {
            Some(p) => Ok(p),
            None => Err(Error::Timeout { what: "semaphore", after: timeout }),
        }
    }

    /// Returns `permit` and queues for as many permits again **in one transaction**: a worker
    /// that takes a permit per job pays one commit per job instead of two. Fair: whoever
    /// was queued when the permit is returned is admitted first; when a permit is free the
    /// new one is held at once, with a new (greater) fencing token and a new key.
    ///
    /// With [`Strategy::Optimistic`] this is [`release`](Permit::release) followed by
    /// [`acquire`](Self::acquire).
    ///
    /// Errors: [`Error::InvalidArgument`] if `permit` is not this semaphore's (another name
    /// or session), [`Error::SessionLost`] if the session is lost, [`Error::NotHeld`] if the
    /// permit was released, and the errors of
    /// [`acquire`](Self::acquire) while it checks the stored count: all leave `permit` as
    /// it was. Any later error, or dropping the future, leaves `permit` released and no new
    /// key behind.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Semaphore};
    /// let session = Client::memory().session().await?;
    /// let workers = Semaphore::new(&session, "render-farm", 2)?;
    /// let mut permit = workers.acquire().await?;
    /// for _ in 0..3 {
    ///     let before = permit.fencing_token();
    ///     // ... one job under the permit, then let any waiter go first ...
    ///     workers.reacquire(&mut permit).await?;
    ///     assert!(permit.fencing_token() > before);
    /// }
    /// permit.release().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future leaves the old acquisition released and no new key behind (both
    /// are deleted in the background if the transaction's outcome is not known).
    pub async fn reacquire(&self, permit: &mut Permit) -> Result<()> {
        let own = format!("{}{:x}-", self.prefix, self.session.lease_id());
        let ours = permit.session().lease_id() == self.session.lease_id() && permit.key().starts_with(&own);
        permit.hold.check_requeue("semaphore", "reacquire", ours, &self.name)?;
        let limit = self.stored_count().await?;
        let weight = permit.permits;
        let placeholder = permit.hold.released_copy();
        let hold = std::mem::replace(&mut permit.hold, placeholder);
        if self.strategy == Strategy::Optimistic {
            hold.release("semaphore").await?;
            *permit = self.acquire_many(weight).await?;
            return Ok(());
        }
        let mut timer = crate::metrics::Acquire::start("semaphore");
        let span = tracing::debug_span!(
            "semaphore.reacquire",
            name = %self.name,
            permits = self.permits,
            token = tracing::field::Empty,
            wait_ms = tracing::field::Empty
        );
        let ticket = Ticket {
            what: "semaphore",
            req: self.request(self.next_key(), limit, weight),
            local: None,
            adopt: false,
            replaces: Some(hold),
            check: Some(self.count_check()),
            register: None,
        };
        let rule = Rule::Weighted(limit.into());
        let admission = enqueue(&self.session, ticket, Wait::Forever, rule).instrument(span.clone()).await;
        let mut hold = match timer.check(admission)? {
            Admission::Held(hold, ..) => hold,
            // The old permit went in that transaction; queue with a fresh key.
            Admission::KeyTaken => {
                let queued = self.acquire_queued(Wait::Forever, limit, weight).await;
                timer.check(queued)?.expect("waits until held").hold
            }
            Admission::NotAdmitted => unreachable!("waits until held"),
        };
        timer.admitted(&mut hold, &span);
        permit.hold = hold;
        Ok(())
    }

    async fn acquire_with(&self, wait: Wait, weight: u32) -> Result<Option<Permit>> {
        let timer = crate::metrics::Acquire::start("semaphore");
        let span = tracing::debug_span!(
            "semaphore.acquire",
            name = %self.name,
            permits = self.permits,
            weight,
            strategy = ?self.strategy,
            token = tracing::field::Empty,
            wait_ms = tracing::field::Empty
        );
        let acquired = async {
            if weight == 0 {
                return Err(Error::invalid("semaphore", "an acquisition takes at least one permit"));
            }
            if weight > self.permits {
                let reason = format!("{weight} permits asked of a semaphore of {}", self.permits);
                return Err(Error::invalid("semaphore", reason));
            }
            self.session.check()?;
            let mut recreated = 0;
            loop {
                let limit = self.stored_count().await?;
                let acquired = match self.strategy {
                    Strategy::Pessimistic | Strategy::Adaptive => self.acquire_queued(wait, limit, weight).await,
                    Strategy::Optimistic => self.acquire_cas(wait, limit, weight).await,
                };
                match acquired {
                    // The count key was deleted meanwhile: create it again and retry.
                    Err(Error::Store(_)) if self.stored.lock().is_none() && recreated < 3 => recreated += 1,
                    other => return other,
                }
            }
        }
        .instrument(span.clone())
        .await;
        timer.settle(wait, &span, acquired, |g| &mut g.hold)
    }

    /// The stored count, creating it if this is the first user. Only a count equal to
    /// `permits` is returned (and then remembered, until an acquisition's create call reads
    /// another: see [`count_check`](Self::count_check)).
    async fn stored_count(&self) -> Result<u32> {
        if let Some((n, _)) = *self.stored.lock() {
            return Ok(n);
        }
        let backend = self.session.client().backend();
        let count = self.permits.to_string().into_bytes();
        let resp = backend.compare_and_swap(&self.count_key, None, count, None).await?;
        let Some(kv) = resp.current else {
            return Err(Error::Store(format!("semaphore: {} was deleted while being read", self.count_key).into()));
        };
        let stored = parse_count(&self.count_key, &kv.value)?;
        if stored != self.permits {
            return Err(Error::PermitMismatch { name: self.name.clone(), stored, requested: self.permits });
        }
        *self.stored.lock() = Some((stored, kv.create_revision));
        Ok(stored)
    }

    /// Checks the count key as the create call read it, in the same transaction: the
    /// count this handle admits by must still be the stored one (someone may have deleted
    /// the count key and created it again with another count).
    fn count_check(&self) -> CreateCheck {
        let (stored, count_key, name, permits) =
            (self.stored.clone(), self.count_key.clone(), self.name.clone(), self.permits);
        Box::new(move |resp: &CreateResponse| {
            let known = *stored.lock();
            match &resp.read {
                Some(kv) if known.is_some_and(|(_, rev)| rev == kv.create_revision) => Ok(()),
                Some(kv) => {
                    let now = parse_count(&count_key, &kv.value)?;
                    if now != permits {
                        *stored.lock() = None;
                        return Err(Error::PermitMismatch { name: name.clone(), stored: now, requested: permits });
                    }
                    *stored.lock() = Some((now, kv.create_revision));
                    Ok(())
                }
                None => {
                    *stored.lock() = None;
                    Err(Error::Store(format!("semaphore: the count key {count_key} was deleted").into()))
                }
            }
        })
    }

    /// The create call of an acquisition of `weight` permits. Its head is the first `limit`
    /// keys, enough to decide a try: every key weighs at least 1, so a key the rule admits
    /// is among them (a waiter reads the whole prefix, see [`enqueue`]).
    fn request(&self, key: String, limit: u32, weight: u32) -> CreateRequest {
        CreateRequest {
            key,
            value: weight_value(weight),
            lease: self.session.lease_id(),
            precondition: Precondition::KeyAbsent,
            prefix: self.prefix.clone(),
            head_limit: limit as usize,
            replaces: None,
            // The count as of this very step: checked by `count_check`.
            read: Some(self.count_key.clone()),
            fence: None,
        }
    }

    fn next_key(&self) -> String {
        format!("{}{:x}-{}", self.prefix, self.session.lease_id(), self.session.next_seq())
    }

    /// The key for an acquisition of `weight` permits: the oldest leftover permit key of a
    /// re-attached lease with that weight (`true`: taken over, see
    /// [`SessionBuilder::attach`](crate::SessionBuilder::attach)), else a new one. A
    /// leftover's weight is read from the store, only while this semaphore has leftovers.
    async fn acquisition_key(&self, weight: u32) -> Result<(String, bool)> {
        let own = format!("{}{:x}-", self.prefix, self.session.lease_id());
        let leftovers: Vec<String> = self.session.leftover_keys().into_iter().filter(|k| k.starts_with(&own)).collect();
        for key in leftovers {
            let kv = self.session.client().backend().get(&key).await?;
            let fits =
                kv.is_some_and(|kv| kv.lease == self.session.lease_id() && weight_of(&kv.value) == u64::from(weight));
            if fits && self.session.take_leftover_key(&key) {
                return Ok((key, true));
            }
        }
        Ok((format!("{own}{}", self.session.next_seq()), false))
    }

    fn keys_taken(&self) -> Error {
        Error::Store(
            format!("semaphore: {KEY_ATTEMPTS} keys of lease {:x} were all taken", self.session.lease_id()).into(),
        )
    }

    async fn acquire_queued(&self, wait: Wait, limit: u32, weight: u32) -> Result<Option<Permit>> {
        for _ in 0..KEY_ATTEMPTS {
            let (key, leftover) = self.acquisition_key(weight).await?;
            let ticket = Ticket {
                what: "semaphore",
                req: self.request(key, limit, weight),
                local: None,
                adopt: leftover,
                replaces: None,
                check: Some(self.count_check()),
                register: None,
            };
            match enqueue(&self.session, ticket, wait, Rule::Weighted(limit.into())).await? {
                Admission::Held(hold, ..) => return Ok(Some(Permit { hold, permits: weight })),
                Admission::NotAdmitted => return Ok(None),
                Admission::KeyTaken => continue,
            }
        }
        Err(self.keys_taken())
    }

    async fn acquire_cas(&self, wait: Wait, limit: u32, weight: u32) -> Result<Option<Permit>> {
        let mut retry = Retry::new(wait, &self.backoff);
        let (mut key, mut leftover) = self.acquisition_key(weight).await?;
        let mut taken = 0;
        loop {
            let Some((pending, resp)) =
                create(&self.session, self.request(key.clone(), limit, weight), None, None, wait).await?
            else {
                return Ok(None);
            };
            if let Err(e) = (self.count_check())(&resp) {
                pending.abandon().await?;
                return Err(e);
            }
            let Some(mine) = resp.mine.filter(|kv| kv.lease == self.session.lease_id()) else {
                return Err(Error::Store(format!("semaphore: {key} exists under another lease").into()));
            };
            if !resp.created && !leftover {
                drop(pending.leave()); // an earlier process's key on a re-attached lease
                taken += 1;
                if taken == KEY_ATTEMPTS {
                    return Err(self.keys_taken());
                }
                (key, leftover) = self.acquisition_key(weight).await?;
                continue;
            }
            let rev = mine.create_revision;
            // The same rule as a queued waiter's, on the head read in the same call.
            if Rule::Weighted(limit.into()).admits(&View::snapshot(resp.head, resp.revision), rev) {
                return Ok(Some(Permit { hold: pending.into_holding(rev)?, permits: weight }));
            }
            // Not admitted: give the place up at once, wait until the keys left leave room
            // for this weight (with this deletion seen), then retry.
            pending.abandon().await?;
            let k = key.clone();
            let room = u64::from(limit - weight);
            let below_limit = move |v: &View| {
                v.revision() >= rev
                    && v.get(&k).is_none_or(|kv| kv.create_revision != rev)
                    && v.entries()
                        .try_fold(0u64, |sum, kv| sum.checked_add(weight_of(&kv.value)).filter(|&s| s <= room))
                        .is_some()
            };
            if !retry.after(&self.session, &self.prefix, below_limit).await? {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Client, Semaphore, Strategy};

    /// A queued semaphore waiter follows the name's deletes-only feed, as every queue
    /// waiter but a register's does: no event for each new waiter's key or count write.
    /// (It followed a register's feed of the count key, which brings every put under the
    /// prefix and the count's values, because the engine took any create that reads a key
    /// for a register's.)
    #[tokio::test]
    async fn a_waiting_permit_follows_the_deletes_only_feed() {
        let client = Client::memory();
        let (a, b) = (client.session().await.unwrap(), client.session().await.unwrap());
        let held = Semaphore::new(&a, "sem", 1).unwrap().acquire().await.unwrap();
        let sb = Semaphore::new(&b, "sem", 1).unwrap().with_strategy(Strategy::Pessimistic);
        let waiting = tokio::spawn(async move { sb.acquire().await.map(drop) });
        let feeds = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                let feeds = client.open_feeds();
                if !feeds.0.is_empty() || !feeds.1.is_empty() {
                    return feeds;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the waiter opened a feed");
        assert_eq!(feeds, (vec![client.prefix_of("sem").unwrap()], vec![]));
        held.release().await.unwrap();
        waiting.await.unwrap().unwrap();
    }
}
