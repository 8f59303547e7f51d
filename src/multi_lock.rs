//! Several mutexes taken all-or-nothing, in one global order (Curator's
//! `InterProcessMultiLock`, Redisson's `MultiLock`).

use crate::backend::Condition;
use crate::error::{Error, Result};
use crate::mutex::{Mutex, MutexGuard};
use crate::strategy::Strategy;
use crate::{Session, Write};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;

/// The recipe's name in errors.
const WHAT: &str = "multilock";

/// Several names locked together: all of them, or none.
///
/// The names are [`Mutex`]es (the same keys: a `MultiLock` over `a` and `b` excludes a
/// `Mutex` on `a`, `etcdctl lock a` and Go's `concurrency.Mutex` on `a`). They are taken
/// one by one in **one global order** — by name, byte-wise — whatever order they were given
/// in, so two multi-locks over overlapping sets cannot deadlock: each waits only for names
/// after the ones it holds, and the holder of the last name in any wait chain waits for
/// nobody. That holds for every process that takes more than one of these names through a
/// `MultiLock` (or in the same order); code that holds one name through a plain `Mutex`
/// while it waits for another can still deadlock with it.
///
/// While it waits for a later name it holds the earlier ones (as Curator's does); if it
/// gives up — a [`try_lock`](MultiLock::try_lock) that finds a name taken, a
/// [`lock_timeout`](MultiLock::lock_timeout) that runs out, an error — it releases every
/// name it took before it returns.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
/// use leasehold::{Client, Mutex, MultiLock};
/// let client = Client::memory();
/// let (a, b) = (client.session().await?, client.session().await?);
/// // Move stock between two warehouses: both or neither.
/// let both = MultiLock::new(&a, ["stock.berlin", "stock.paris"])?.lock().await?;
/// assert_eq!(both.guards().len(), 2);
/// both.fenced_put("transfers/last", "berlin-to-paris").await?; // only while both are held
///
/// // Another session that needs one of them waits, or gives up at once.
/// assert!(Mutex::new(&b, "stock.paris")?.try_lock().await?.is_none());
/// assert!(MultiLock::new(&b, ["stock.paris", "stock.rome"])?.try_lock().await?.is_none());
/// # b.settle().await;
/// assert!(Mutex::new(&b, "stock.rome")?.try_lock().await?.is_some(), "the try left rome free");
/// both.unlock().await?;
/// # Ok(()) }
/// ```
///
/// # Cancel safety
/// Dropping a `lock()` future at any point leaves nothing held: the names taken so far are
/// released in the background, and a key being created is deleted, as for a dropped
/// [`Mutex::lock`].
#[derive(Debug, Clone)]
pub struct MultiLock {
    /// One mutex per name, in the global order.
    mutexes: Vec<Mutex>,
}

impl MultiLock {
    /// A multi-lock over `names`, in any order; repeated names count once. Fails with
    /// [`Error::InvalidName`] for an invalid name and [`Error::InvalidArgument`] for an
    /// empty set.
    pub fn new<I>(session: &Session, names: I) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_owned()).collect();
        // A planted bug for the conformance suite to catch (scripts/test.sh): take the names
        // in the order given.
        #[cfg(not(leasehold_multilock_mutation_unordered))]
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(Error::invalid(WHAT, "no names to lock"));
        }
        let mutexes = names.iter().map(|n| Mutex::new(session, n)).collect::<Result<_>>()?;
        Ok(Self { mutexes })
    }

    /// Chooses how each name is acquired (see [`Mutex::with_strategy`]); the order and the
    /// all-or-nothing rule are the same for every strategy.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.mutexes = self.mutexes.into_iter().map(|m| m.with_strategy(strategy)).collect();
        self
    }

    /// The names, in the order they are taken.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.mutexes.iter().map(Mutex::name)
    }

    /// Waits until every name is held.
    ///
    /// Fails with [`Error::SessionLost`] if the session is lost while waiting, releasing
    /// what it took.
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: the names
    /// taken are released and a key being created is deleted, in the background
    /// ([`Session::settle`] waits for it).
    pub async fn lock(&self) -> Result<MultiGuard> {
        self.acquire(Limit::Forever).await.map(|g| g.expect("waits until held"))
    }

    /// Takes every name if each is free now, without waiting: `Ok(None)` if one is taken,
    /// holding none of them (those taken before it are released before this returns).
    ///
    /// # Cancel safety
    /// As [`lock`](Self::lock): dropping the future leaves nothing held.
    pub async fn try_lock(&self) -> Result<Option<MultiGuard>> {
        self.acquire(Limit::Try).await
    }

    /// Waits at most `timeout` in all; fails with [`Error::Timeout`], holding none of the
    /// names (those taken are released before this returns).
    ///
    /// # Cancel safety
    /// As [`lock`](Self::lock): dropping the future leaves nothing held.
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<MultiGuard> {
        // A timeout past what the clock can count is no limit at all.
        let limit = Instant::now().checked_add(timeout).map_or(Limit::Forever, Limit::Until);
        match self.acquire(limit).await? {
            Some(g) => Ok(g),
            None => Err(Error::Timeout { what: WHAT, after: timeout }),
        }
    }

    async fn acquire(&self, limit: Limit) -> Result<Option<MultiGuard>> {
        let mut held = MultiGuard { guards: Vec::with_capacity(self.mutexes.len()) };
        for mutex in &self.mutexes {
            let got = match limit {
                Limit::Forever => mutex.lock().await.map(Some),
                Limit::Try => mutex.try_lock().await,
                Limit::Until(deadline) => {
                    match mutex.lock_timeout(deadline.saturating_duration_since(Instant::now())).await {
                        Ok(g) => Ok(Some(g)),
                        Err(Error::Timeout { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            };
            match got {
                Ok(Some(guard)) => held.guards.push(guard),
                Ok(None) => {
                    held.release_quietly().await;
                    return Ok(None);
                }
                Err(e) => {
                    held.release_quietly().await;
                    return Err(e);
                }
            }
        }
        tracing::debug!(names = self.mutexes.len(), "multilock: all held");
        Ok(Some(held))
    }
}

/// How long an acquisition may wait, in all.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Forever,
    Try,
    Until(Instant),
}

/// Every name of a [`MultiLock`], held. Released by [`unlock`](MultiGuard::unlock), or in
/// the background on drop (each name as a dropped [`MutexGuard`]).
///
/// It owns what it needs: it is `Send + Sync + 'static`, like every guard.
#[derive(Debug)]
#[must_use = "the locks are released when this is dropped: bind it (`let guard = ...`) for as long as they must be held"]
pub struct MultiGuard {
    /// One guard per name, in the global order.
    guards: Vec<MutexGuard>,
}

impl MultiGuard {
    /// Each name's guard, in the order they were taken (by name): each has its own key and
    /// fencing token.
    pub fn guards(&self) -> &[MutexGuard] {
        &self.guards
    }

    /// The fencing tokens, one per name in the order of [`guards`](Self::guards).
    pub fn fencing_tokens(&self) -> Vec<u64> {
        self.guards.iter().map(MutexGuard::fencing_token).collect()
    }

    /// True while every name is held and the session is before its validity deadline.
    pub fn is_valid(&self) -> bool {
        self.guards.iter().all(MutexGuard::is_valid)
    }

    /// Completes when any name is lost (what was held must be treated as gone).
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut all: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> =
            self.guards.iter().map(|g| Box::pin(g.lost()) as Pin<Box<dyn Future<Output = ()> + Send>>).collect();
        std::future::poll_fn(move |cx| {
            if all.iter_mut().any(|f| f.as_mut().poll(cx).is_ready()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Puts `value` at `key` only while **every** name is still held: one transaction that
    /// compares each guard key's create revision. Fails with [`Error::NotHeld`] otherwise,
    /// writing nothing.
    ///
    /// # Cancel safety
    /// A write dropped while in flight may or may not have been applied; it is applied only
    /// while all are held.
    pub async fn fenced_put(&self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Result<()> {
        self.fenced_write(vec![Write::Put { key: key.into(), value: value.into(), lease: None }]).await
    }

    /// Applies `writes` atomically, only while every name is still held (one transaction).
    /// Fails with [`Error::NotHeld`] otherwise, writing nothing.
    ///
    /// # Cancel safety
    /// As for [`fenced_put`](Self::fenced_put): all of the writes or none, and only while
    /// all are held.
    pub async fn fenced_write(&self, writes: Vec<Write>) -> Result<()> {
        let (first, rest) = self.guards.split_first().expect("a multi-lock holds at least one name");
        let others: Vec<Condition> = rest
            .iter()
            .map(|g| Condition::Created { key: g.key().to_owned(), revision: g.fencing_token() as i64 })
            .collect();
        match first.fenced_write_if(&others, writes).await? {
            Some(_) => Ok(()),
            None => Err(Error::NotHeld { what: WHAT, reason: "a name of the set is no longer held".into() }),
        }
    }

    /// Releases every name (in the reverse order), each deleting its key only if it is still
    /// that acquisition's. Tries all of them; the first error, if any, is returned.
    ///
    /// # Cancel safety
    /// Dropping the future leaves nothing held: the releases not yet made go on in the
    /// background (as for dropped guards).
    pub async fn unlock(mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(guard) = self.guards.pop() {
            if let Err(e) = guard.unlock().await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Releases what is held after a failed acquisition; an error leaves that key to the
    /// background release and the lease.
    async fn release_quietly(&mut self) {
        while let Some(guard) = self.guards.pop() {
            if let Err(e) = guard.unlock().await {
                tracing::warn!(error = %e, "multilock: release after a failed acquisition");
            }
        }
    }
}
