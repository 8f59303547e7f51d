//! The high-water mark of a fenced resource.
//!
//! The check and the write happen under one lock: checking first and writing after
//! releasing the lock would let a writer with token 5 that passed its check write after a
//! writer with token 6 (the mutation the loom suite checks for).

use super::sync::Mutex;

/// A value guarded by the highest fencing token accepted so far.
#[derive(Debug)]
pub(crate) struct HighWater<T> {
    inner: Mutex<(u64, T)>,
}

impl<T> HighWater<T> {
    /// A resource that has accepted no token yet.
    pub(crate) fn new(value: T) -> Self {
        Self { inner: Mutex::new((0, value)) }
    }

    /// Runs `write` if `token` is at least the highest accepted so far, and raises the mark.
    /// Returns `Err(highest)` without running `write` otherwise.
    pub(crate) fn apply<R>(&self, token: u64, write: impl FnOnce(&mut T) -> R) -> Result<R, u64> {
        #[cfg(not(leasehold_loom_mutation_fence))]
        {
            let mut inner = self.inner.lock();
            if token < inner.0 {
                return Err(inner.0);
            }
            inner.0 = token;
            Ok(write(&mut inner.1))
        }
        // Mutation for the loom suite: check under the lock, write under a second one.
        #[cfg(leasehold_loom_mutation_fence)]
        {
            {
                let inner = self.inner.lock();
                if token < inner.0 {
                    return Err(inner.0);
                }
            }
            let mut inner = self.inner.lock();
            inner.0 = inner.0.max(token);
            Ok(write(&mut inner.1))
        }
    }

    /// The highest token accepted so far (0 if none).
    pub(crate) fn highest(&self) -> u64 {
        self.inner.lock().0
    }

    /// Reads the guarded value.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.inner.lock().1)
    }
}
