//! Fencing on the resource side, for resources outside the store.
//!
//! Inside the store, use a guard's fenced write (e.g.
//! [`MutexGuard::fenced_put`](crate::MutexGuard::fenced_put)): the store applies it only
//! while the guard's key still exists with its revision. For anything else (a file, a
//! database row, a remote service) keep a [`FencedResource`] next to the resource and pass
//! every write through it with the writer's token.

use crate::error::{Error, Result};
use crate::local::fence::HighWater;

/// A resource that remembers the highest fencing token it accepted and refuses lower ones.
///
/// The check and the write happen under one lock, so a writer whose token is stale can
/// never write after a newer holder did. Equal tokens are accepted (one holder writing
/// several times).
///
/// ```
/// use leasehold::{Error, FencedResource};
/// let stock = FencedResource::new(10u32);
/// stock.apply(7, |s| *s -= 1).unwrap();           // holder with token 7
/// stock.apply(9, |s| *s -= 1).unwrap();           // the next holder, token 9
/// let late = stock.apply(7, |s| *s -= 1);         // the first holder woke up late
/// assert!(matches!(late, Err(Error::StaleToken { token: 7, highest: 9 })));
/// assert_eq!(stock.read(|s| *s), 8);
/// ```
#[derive(Debug)]
pub struct FencedResource<T> {
    inner: HighWater<T>,
}

impl<T> FencedResource<T> {
    /// Wraps `value`; no token accepted yet.
    pub fn new(value: T) -> Self {
        Self { inner: HighWater::new(value) }
    }

    /// Runs `write` on the value if `token` is not below the highest accepted token.
    pub fn apply<R>(&self, token: u64, write: impl FnOnce(&mut T) -> R) -> Result<R> {
        self.inner.apply(token, write).map_err(|highest| Error::StaleToken { token, highest })
    }

    /// Checks a token without writing (and raises the mark if it is the highest).
    pub fn check(&self, token: u64) -> Result<()> {
        self.apply(token, |_| ())
    }

    /// The highest token accepted so far (0 if none).
    pub fn highest(&self) -> u64 {
        self.inner.highest()
    }

    /// Reads the value.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        self.inner.read(f)
    }
}
