//! A session's background cleanups (a release on drop, a cancelled acquisition's delete)
//! and waiting until none is left ([`Session::settle`](crate::Session::settle), which
//! `close` runs before it revokes the lease).
//!
//! Each cleanup holds a [`Running`] token for as long as it runs; dropping the last token
//! wakes every [`Idle`] waiter. A waiter checks the count and registers its waker in one
//! step under the lock, so a cleanup that ends in between cannot be missed, and it
//! completes only once it *sees* the count at zero, never merely because it was woken.

use super::sync::{Arc, Mutex};
use super::wakers::Wakers;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Debug, Default)]
struct Inner {
    running: usize,
    idle_waiters: Wakers,
}

/// The count of running cleanups, shared by a session's handles.
#[derive(Debug, Default)]
pub(crate) struct Cleanups {
    inner: Mutex<Inner>,
}

impl Cleanups {
    /// No cleanup running.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Counts one more running cleanup until the token is dropped.
    pub(crate) fn start(cleanups: &Arc<Self>) -> Running {
        cleanups.inner.lock().running += 1;
        Running { cleanups: cleanups.clone() }
    }

    /// Completes once no cleanup is running.
    pub(crate) fn idle(cleanups: &Arc<Self>) -> Idle {
        Idle { cleanups: cleanups.clone(), id: None }
    }

    /// How many cleanups are running.
    #[cfg(any(test, leasehold_loom))]
    pub(crate) fn running(&self) -> usize {
        self.inner.lock().running
    }
}

/// One running cleanup; see [`Cleanups::start`].
#[derive(Debug)]
pub(crate) struct Running {
    cleanups: Arc<Cleanups>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let waiters = {
            let mut inner = self.cleanups.inner.lock();
            inner.running -= 1;
            if inner.running > 0 {
                return;
            }
            inner.idle_waiters.take_all()
        };
        for waker in waiters {
            waker.wake();
        }
    }
}

/// Future returned by [`Cleanups::idle`].
#[derive(Debug)]
pub(crate) struct Idle {
    cleanups: Arc<Cleanups>,
    id: Option<u64>,
}

impl Future for Idle {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        #[cfg(leasehold_loom_mutation_cleanups)]
        {
            // Mutation (loom-tests): the count is read under one acquisition of the lock and
            // the waker registered under another, so the last cleanup can end in between.
            if this.cleanups.inner.lock().running == 0 {
                return Poll::Ready(());
            }
        }
        let mut inner = this.cleanups.inner.lock();
        #[cfg(not(leasehold_loom_mutation_cleanups))]
        if inner.running == 0 {
            inner.idle_waiters.remove(this.id.take());
            return Poll::Ready(());
        }
        // Also after a wake-up whose cleanup was followed by another: wait again.
        inner.idle_waiters.register(&mut this.id, cx.waker());
        Poll::Pending
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        if self.id.is_some() {
            self.cleanups.inner.lock().idle_waiters.remove(self.id);
        }
    }
}

#[cfg(all(test, not(leasehold_loom)))]
mod tests {
    use super::*;
    use crate::local::CountingWaker;

    #[test]
    fn idle_only_once_every_cleanup_ended() {
        let c = Arc::new(Cleanups::new());
        let waker = CountingWaker::new();
        assert!(waker.poll(Box::pin(Cleanups::idle(&c)).as_mut()).is_ready(), "idle with none running");
        let (one, two) = (Cleanups::start(&c), Cleanups::start(&c));
        let mut idle = Box::pin(Cleanups::idle(&c));
        assert!(waker.poll(idle.as_mut()).is_pending());
        drop(one);
        assert_eq!(waker.wakes(), 0, "woken with one still running");
        assert!(waker.poll(idle.as_mut()).is_pending());
        drop(two);
        assert_eq!(waker.wakes(), 1);
        // Woken, but a new cleanup started before the waiter looked: it waits again.
        let three = Cleanups::start(&c);
        assert!(waker.poll(idle.as_mut()).is_pending());
        drop(three);
        assert_eq!(waker.wakes(), 2);
        assert!(waker.poll(idle.as_mut()).is_ready());
        assert_eq!(c.running(), 0);
        assert_eq!(c.inner.lock().idle_waiters.len(), 0, "a finished waiter left its waker");
    }
}
