//! A held permit (of one or more permits).

use crate::guard::{fenced_writes, held_accessors, Holding};

/// The recipe's name in errors.
const WHAT: &str = "semaphore";

/// A held permit: one acquisition, holding [`permits`](Permit::permits) permits (1, or `n`
/// from [`acquire_many`](crate::Semaphore::acquire_many)) under one key and one fencing
/// token. Released by [`release`](Permit::release), or in the background on drop, all its
/// permits at once.
///
/// It owns what it needs (a handle of its session, its key and token): it is `Send + Sync
/// + 'static`, so it can move into a spawned task and outlive the recipe handle that
/// acquired it, like tokio's `Owned*` guards (checked at compile time in `src/lib.rs`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
/// use leasehold::{Client, Semaphore};
/// let session = Client::memory().session().await?;
/// let pool = Semaphore::new(&session, "pool", 3)?;
/// let two = pool.acquire_many(2).await?;
/// assert_eq!(two.permits(), 2);
/// two.release().await?; // both at once
/// assert_eq!(pool.usage().await?.available(), 3);
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "the permit is released when this is dropped: bind it (`let guard = ...`) for as long as it must be held"]
pub struct Permit {
    pub(super) hold: Holding,
    pub(super) permits: u32,
}

impl Permit {
    held_accessors!(
        token: "The fencing token: strictly greater than every earlier permit's token of this semaphore. (Up to N permits are held at once, so a token orders permits; it does not make one exclusive.)",
        key: "The key this permit holds (`<prefix><lease hex>-<n>`)."
    );

    fenced_writes!("semaphore", "permit is still held");

    /// How many permits this acquisition holds: 1 from [`acquire`](crate::Semaphore::acquire)
    /// and its kin, `n` from [`acquire_many(n)`](crate::Semaphore::acquire_many) and its kin.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Semaphore};
    /// let session = Client::memory().session().await?;
    /// let pool = Semaphore::new(&session, "pool", 3)?;
    /// let one = pool.acquire().await?;
    /// assert_eq!(one.permits(), 1);
    /// one.release().await?;
    /// assert_eq!(pool.try_acquire_many(3).await?.expect("all free").permits(), 3);
    /// # Ok(()) }
    /// ```
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// Returns the permit (all its permits at once), deleting the key only if it is still
    /// this acquisition's.
    ///
    /// # Cancel safety
    /// Dropping the future does not leave it held: the release goes on in the session's
    /// background cleanup (as for a dropped guard), retried until the key is gone or the
    /// session ends.
    pub async fn release(self) -> crate::Result<()> {
        self.hold.release(WHAT).await
    }
}
