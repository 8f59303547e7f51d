//! A session's background cleanups (a release on drop, a cancelled acquisition's delete)
//! and waiting until none is left ([`Session::settle`](crate::Session::settle), which
//! `close` runs before it revokes the lease).
//!
//! Each cleanup holds a [`Running`] token for as long as it runs; dropping the last token
//! wakes every [`Idle`] waiter. A waiter checks the count and registers its waker in one
//! step under the lock, so a cleanup that ends in between cannot be missed, and it
//! completes only once it *sees* the count at zero, never merely because it was woken.

use super::sync::{Arc, Mutex};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct Inner {
    running: usize,
    next_id: u64,
    idle_waiters: Vec<(u64, Waker)>,
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
            std::mem::take(&mut inner.idle_waiters)
        };
        for (_, waker) in waiters {
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
            if let Some(id) = this.id.take() {
                inner.idle_waiters.retain(|(i, _)| *i != id);
            }
            return Poll::Ready(());
        }
        match this.id {
            Some(id) => {
                if let Some(slot) = inner.idle_waiters.iter_mut().find(|(i, _)| *i == id) {
                    slot.1.clone_from(cx.waker());
                } else {
                    // Woken (and so removed) by a cleanup that ended, but another started
                    // since: wait again.
                    inner.idle_waiters.push((id, cx.waker().clone()));
                }
            }
            None => {
                let id = inner.next_id;
                inner.next_id += 1;
                inner.idle_waiters.push((id, cx.waker().clone()));
                this.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.cleanups.inner.lock().idle_waiters.retain(|(i, _)| *i != id);
        }
    }
}

#[cfg(all(test, not(leasehold_loom)))]
mod tests {
    use super::*;
    use std::task::Wake;

    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn poll(fut: Pin<&mut Idle>, waker: &std::sync::Arc<Count>) -> bool {
        fut.poll(&mut Context::from_waker(&Waker::from(waker.clone()))).is_ready()
    }

    #[test]
    fn idle_only_once_every_cleanup_ended() {
        let c = Arc::new(Cleanups::new());
        assert!(poll(Box::pin(Cleanups::idle(&c)).as_mut(), &Default::default()), "idle with none running");
        let (one, two) = (Cleanups::start(&c), Cleanups::start(&c));
        let waker = std::sync::Arc::<Count>::default();
        let mut idle = Box::pin(Cleanups::idle(&c));
        assert!(!poll(idle.as_mut(), &waker));
        drop(one);
        assert_eq!(waker.0.load(std::sync::atomic::Ordering::Relaxed), 0, "woken with one still running");
        assert!(!poll(idle.as_mut(), &waker));
        drop(two);
        assert_eq!(waker.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Woken, but a new cleanup started before the waiter looked: it waits again.
        let three = Cleanups::start(&c);
        assert!(!poll(idle.as_mut(), &waker));
        drop(three);
        assert_eq!(waker.0.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert!(poll(idle.as_mut(), &waker));
        assert_eq!(c.running(), 0);
        assert!(c.inner.lock().idle_waiters.is_empty(), "a finished waiter left its waker");
    }
}
