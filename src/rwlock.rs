//! A fair distributed read-write lock with fencing tokens, under a session's lease.

use crate::adaptive::Adaptive;
use crate::backend::{CreateRequest, Precondition};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::guard::{fenced_writes, held_accessors, Holding};
use crate::queue::{acquire_cas, enqueue, Admission, Cas, CasAttempt, Rule, Ticket, Wait};
use crate::strategy::Strategy;
use crate::Session;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The recipe's name in errors.
const WHAT: &str = "rwlock";

/// How many numbered keys an acquisition tries before giving up, when it finds them taken
/// (only a re-attached session, whose counter starts again, can find one taken).
const KEY_ATTEMPTS: usize = 64;

/// A read-write lock: many readers, or one writer, across processes.
///
/// # Keys
/// Every acquisition (waiting or holding) owns one key under the session's lease, and the
/// key says the mode, as in etcd's experimental `recipe.RWMutex`:
/// `<namespace><name>/read/<lease id in hex>-<n>` or `<namespace><name>/write/<lease id in hex>-<n>`.
///
/// # Admission
/// Fair, first come first served by create revision (etcd's recipe, Curator's
/// `InterProcessReadWriteLock` rule): a **reader** is admitted once no write key is older
/// than its own; a **writer** once its key is the oldest of all. So readers that arrive
/// after a queued writer wait behind it, and a stream of readers never starves a writer.
/// Waiters are woken by the client's delete feed for the prefix only when their rule
/// becomes true.
///
/// That is [`Strategy::Pessimistic`], the default. With [`Strategy::Optimistic`]
/// ([`with_strategy`](RwLock::with_strategy)) an acquisition writes its key only when it is
/// admitted at once — a reader only while no write key exists, a writer only while no key
/// at all exists (one compare-and-swap) — and otherwise writes nothing, waits until the
/// oldest key in its way is gone, pauses (jittered) and tries again. It keeps no place, so
/// it is not fair: queued writers make optimistic readers wait, and a stream of readers can
/// keep an optimistic writer out. [`Strategy::Adaptive`] starts optimistic and queues once
/// an acquisition that may wait found the lock taken (as the [`Mutex`](crate::Mutex)).
/// The admission rule is the same in every strategy, so they can be mixed safely.
///
/// # Fencing tokens
/// A guard's token is its key's create revision. A writer's token is greater than that of
/// every reader and writer admitted before it, and a reader's is greater than that of every
/// writer before it; readers that hold together have distinct tokens that only order them.
///
/// # Cancel safety
/// Dropping a `read()` or `write()` future at any point leaves no key behind (see
/// [`Session::settle`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
/// use leasehold::{Client, RwLock};
/// let client = Client::memory();
/// let (a, b) = (client.session().await?, client.session().await?);
/// let r1 = RwLock::new(&a, "config")?.read().await?;
/// let r2 = RwLock::new(&b, "config")?.read().await?; // readers share
/// assert!(RwLock::new(&b, "config")?.try_write().await?.is_none());
/// r1.unlock().await?;
/// r2.unlock().await?;
/// let w = RwLock::new(&b, "config")?.write().await?;
/// w.fenced_put("config.value", "v2").await?; // applied only while the write lock is held
/// assert!(RwLock::new(&a, "config")?.try_read().await?.is_none());
/// # drop(w); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RwLock {
    session: Session,
    name: String,
    prefix: String,
    strategy: Strategy,
    backoff: Backoff,
    adaptive: Arc<Adaptive>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Read,
    Write,
}

impl Mode {
    fn segment(self) -> &'static str {
        match self {
            Mode::Read => "read/",
            Mode::Write => "write/",
        }
    }
}

impl RwLock {
    /// A read-write lock on `name`. Fails for an invalid name.
    pub fn new(session: &Session, name: &str) -> Result<Self> {
        let prefix = session.client().prefix_of(name)?;
        Ok(Self {
            session: session.clone(),
            name: name.to_owned(),
            prefix,
            strategy: Strategy::Pessimistic,
            backoff: Backoff::optimistic(),
            adaptive: Arc::default(),
        })
    }

    /// Chooses how this handle's acquisitions contend (see [Admission](RwLock#admission)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, RwLock, Strategy};
    /// let client = Client::memory();
    /// let (a, b) = (client.session().await?, client.session().await?);
    /// let writer = RwLock::new(&a, "config")?.write().await?;
    /// let readers = RwLock::new(&b, "config")?.with_strategy(Strategy::Optimistic);
    /// assert!(readers.try_read().await?.is_none()); // wrote nothing: a writer holds
    /// writer.unlock().await?;
    /// let r = readers.read().await?; // one compare-and-swap: no writer now
    /// assert!(r.fencing_token() > 0);
    /// # Ok(()) }
    /// ```
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The strategy (see [`with_strategy`](RwLock::with_strategy)).
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The pauses an optimistic acquisition waits after seeing the key in its way go, before
    /// it tries again (jittered). The default: full jitter from 0.5 ms, doubling up to 50 ms.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until the lock is held for reading.
    ///
    /// Fails with [`Error::SessionLost`] if the session is lost while waiting
    /// ([`Error::SessionClosed`] if it is closed or detached through another handle).
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn read(&self) -> Result<ReadGuard> {
        let hold = self.acquire(Mode::Read, Wait::Forever).await?;
        Ok(ReadGuard { hold: hold.expect("waits until held") })
    }

    /// Takes a read lock if no writer holds or waits for the lock: `Ok(None)` otherwise.
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn try_read(&self) -> Result<Option<ReadGuard>> {
        Ok(self.acquire(Mode::Read, Wait::No).await?.map(|hold| ReadGuard { hold }))
    }

    /// Waits at most `timeout` for a read lock; fails with [`Error::Timeout`], leaving
    /// nothing behind.
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn read_timeout(&self, timeout: Duration) -> Result<ReadGuard> {
        match self.acquire(Mode::Read, Wait::at_most(timeout)).await? {
            Some(hold) => Ok(ReadGuard { hold }),
            None => Err(Error::Timeout { what: "rwlock", after: timeout }),
        }
    }

    /// Waits until the lock is held for writing.
    ///
    /// Fails with [`Error::SessionLost`] if the session is lost while waiting
    /// ([`Error::SessionClosed`] if it is closed or detached through another handle).
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn write(&self) -> Result<WriteGuard> {
        let hold = self.acquire(Mode::Write, Wait::Forever).await?;
        Ok(WriteGuard { hold: hold.expect("waits until held") })
    }

    /// Takes the write lock if nobody holds or waits for the lock: `Ok(None)` otherwise.
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn try_write(&self) -> Result<Option<WriteGuard>> {
        Ok(self.acquire(Mode::Write, Wait::No).await?.map(|hold| WriteGuard { hold }))
    }

    /// Waits at most `timeout` for the write lock; fails with [`Error::Timeout`], leaving
    /// nothing behind.
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn write_timeout(&self, timeout: Duration) -> Result<WriteGuard> {
        match self.acquire(Mode::Write, Wait::at_most(timeout)).await? {
            Some(hold) => Ok(WriteGuard { hold }),
            None => Err(Error::Timeout { what: "rwlock", after: timeout }),
        }
    }

    async fn acquire(&self, mode: Mode, wait: Wait) -> Result<Option<Holding>> {
        let timer = crate::metrics::Acquire::start("rwlock");
        let span = tracing::debug_span!(
            "rwlock.acquire",
            name = %self.name,
            ?mode,
            strategy = ?self.strategy,
            token = tracing::field::Empty,
            wait_ms = tracing::field::Empty
        );
        let acquired = async {
            self.session.check()?;
            for _ in 0..KEY_ATTEMPTS {
                // A re-attached lease's leftover key of this mode is taken over first.
                let own = format!("{}{}{:x}-", self.prefix, mode.segment(), self.session.lease_id());
                let (key, leftover) = self.session.numbered_key(&own);
                let queued = match self.strategy {
                    Strategy::Pessimistic => true,
                    Strategy::Optimistic => false,
                    Strategy::Adaptive => self.adaptive.queue_next(),
                };
                let writers = format!("{}{}", self.prefix, Mode::Write.segment());
                let req = CreateRequest {
                    key,
                    value: Vec::new(),
                    lease: self.session.lease_id(),
                    precondition: Precondition::KeyAbsent,
                    prefix: self.prefix.clone(),
                    // A writer needs only the oldest key; a reader every key older than its own.
                    head_limit: if mode == Mode::Write { 1 } else { 0 },
                    replaces: None,
                    read: None,
                    fence: None,
                };
                let adaptive = self.strategy == Strategy::Adaptive;
                if !queued {
                    // A reader is excluded by any write key, a writer by any key at all.
                    let cas_req = match mode {
                        Mode::Read => CreateRequest { prefix: writers.clone(), ..req.clone() },
                        Mode::Write => req.clone(),
                    };
                    // Adaptive gives way at the first holder it meets (not in a try) and queues
                    // instead, this acquisition included, as the mutex does.
                    let attempt = CasAttempt { local: None, adopt: leftover, give_way: adaptive };
                    match acquire_cas(&self.session, WHAT, cas_req, attempt, wait, &self.backoff).await?.0 {
                        Cas::Held(hold, _) => {
                            if adaptive {
                                self.adaptive.optimistic(0);
                            }
                            return Ok(Some(hold));
                        }
                        Cas::NotHeld => return Ok(None),
                        Cas::KeyTaken => continue,
                        // Gave way (adaptive), or found this session's leftover key queued:
                        // queue, with the key as it is.
                        Cas::Busy(_) if adaptive => self.adaptive.force_queue(),
                        Cas::Busy(_) => {}
                    }
                }
                let ticket = Ticket {
                    what: "rwlock",
                    req,
                    local: None,
                    adopt: leftover,
                    replaces: None,
                    check: None,
                    register: None,
                };
                let admission = match mode {
                    Mode::Read => enqueue(&self.session, ticket, wait, Rule::NoOlderUnder(writers)).await?,
                    Mode::Write => enqueue(&self.session, ticket, wait, Rule::First).await?,
                };
                match admission {
                    Admission::Held(hold, ..) => {
                        if adaptive {
                            self.adaptive.queued(hold.was_contended());
                        }
                        return Ok(Some(hold));
                    }
                    Admission::NotAdmitted => return Ok(None),
                    Admission::KeyTaken => continue,
                }
            }
            Err(Error::Store(
                format!("rwlock: {KEY_ATTEMPTS} keys of lease {:x} were all taken", self.session.lease_id()).into(),
            ))
        }
        .instrument(span.clone())
        .await;
        timer.settle(wait, &span, acquired, |hold| hold)
    }
}

/// A held read lock. Released by [`unlock`](ReadGuard::unlock), or in the background on drop.
///
/// It owns what it needs (a handle of its session, its key and token): it is `Send + Sync
/// + 'static`, so it can move into a spawned task and outlive the recipe handle that
/// acquired it, like tokio's `Owned*` guards (checked at compile time in `src/lib.rs`).
#[derive(Debug)]
#[must_use = "the read lock is released when this is dropped: bind it (`let guard = ...`) for as long as it must be held"]
pub struct ReadGuard {
    hold: Holding,
}

impl ReadGuard {
    held_accessors!(
        token: "The fencing token: greater than the token of every writer admitted before this reader (see [`RwLock`](RwLock#fencing-tokens)).",
        key: "The key this read lock holds (`<prefix>read/<lease hex>-<n>`)."
    );

    /// Releases the read lock, deleting the key only if it is still this acquisition's.
    ///
    /// # Cancel safety
    /// Dropping the future does not leave it held: the release goes on in the session's
    /// background cleanup (as for a dropped guard), retried until the key is gone or the
    /// session ends.
    pub async fn unlock(self) -> Result<()> {
        self.hold.release(WHAT).await
    }
}

/// A held write lock. Released by [`unlock`](WriteGuard::unlock), or in the background on
/// drop.
///
/// It owns what it needs (a handle of its session, its key and token): it is `Send + Sync
/// + 'static`, so it can move into a spawned task and outlive the recipe handle that
/// acquired it, like tokio's `Owned*` guards (checked at compile time in `src/lib.rs`).
#[derive(Debug)]
#[must_use = "the write lock is released when this is dropped: bind it (`let guard = ...`) for as long as it must be held"]
pub struct WriteGuard {
    hold: Holding,
}

impl WriteGuard {
    held_accessors!(
        token: "The fencing token: strictly greater than the token of every reader and writer admitted before this writer.",
        key: "The key this write lock holds (`<prefix>write/<lease hex>-<n>`)."
    );

    fenced_writes!("rwlock", "guard still holds the write lock");

    /// Releases the write lock, deleting the key only if it is still this acquisition's.
    ///
    /// # Cancel safety
    /// Dropping the future does not leave it held: the release goes on in the session's
    /// background cleanup (as for a dropped guard), retried until the key is gone or the
    /// session ends.
    pub async fn unlock(self) -> Result<()> {
        self.hold.release(WHAT).await
    }
}
