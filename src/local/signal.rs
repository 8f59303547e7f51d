//! A one-shot broadcast signal: the session's lost() notification, a value hint's "done", and
//! the queue feed's "synced again".
//!
//! `fire` wakes every registered waiter once and returns true only for the first call;
//! a waiter that registers after the signal fired completes at once. Each waiter future
//! has a slot id; dropping the future removes its waker, so repeated polling and
//! cancellation leak nothing. Waiters are woken in the order they registered (unlike a
//! `tokio::sync::watch`, whose receivers wake in a random order): a simulated run stays a
//! function of its seed.

use super::sync::{Arc, Mutex};
use super::wakers::Wakers;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Debug, Default)]
struct Inner {
    fired: bool,
    waiters: Wakers,
}

/// A one-shot signal shared by clones.
#[derive(Debug, Clone, Default)]
pub(crate) struct Signal {
    inner: Arc<Mutex<Inner>>,
}

impl Signal {
    /// An unfired signal.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Fires the signal. True only for the first call.
    pub(crate) fn fire(&self) -> bool {
        // Mutation for the loom suite: look whether it fired under one acquisition of the
        // lock and fire under another, so that two callers can both see it unfired.
        #[cfg(leasehold_loom_mutation_fire)]
        if self.is_fired() {
            return false;
        }
        let waiters = {
            let mut inner = self.inner.lock();
            #[cfg(not(leasehold_loom_mutation_fire))]
            if inner.fired {
                return false;
            }
            inner.fired = true;
            inner.waiters.take_all()
        };
        for waker in waiters {
            waker.wake();
        }
        true
    }

    /// Whether the signal has fired.
    pub(crate) fn is_fired(&self) -> bool {
        self.inner.lock().fired
    }

    /// A future that completes once the signal has fired.
    pub(crate) fn wait(&self) -> SignalWait {
        SignalWait { signal: self.clone(), id: None }
    }
}

/// Future returned by [`Signal::wait`].
#[derive(Debug)]
pub(crate) struct SignalWait {
    signal: Signal,
    id: Option<u64>,
}

impl Future for SignalWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut inner = this.signal.inner.lock();
        if inner.fired {
            this.id = None; // `fire` took every waker
            return Poll::Ready(());
        }
        inner.waiters.register(&mut this.id, cx.waker());
        Poll::Pending
    }
}

impl Drop for SignalWait {
    fn drop(&mut self) {
        if self.id.is_some() {
            self.signal.inner.lock().waiters.remove(self.id);
        }
    }
}
