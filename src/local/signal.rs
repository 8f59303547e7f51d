//! A one-shot broadcast signal: the session's lost() notification.
//!
//! `fire` wakes every registered waiter once and returns true only for the first call;
//! a waiter that registers after the signal fired completes at once. Each waiter future
//! has a slot id; dropping the future removes its waker, so repeated polling and
//! cancellation leak nothing.

use super::sync::{Arc, Mutex};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct Inner {
    fired: bool,
    next_id: u64,
    waiters: Vec<(u64, Waker)>,
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
        let waiters = {
            let mut inner = self.inner.lock();
            if inner.fired {
                return false;
            }
            inner.fired = true;
            std::mem::take(&mut inner.waiters)
        };
        for (_, waker) in waiters {
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
            this.id = None;
            return Poll::Ready(());
        }
        match this.id {
            Some(id) => {
                if let Some(slot) = inner.waiters.iter_mut().find(|(i, _)| *i == id) {
                    slot.1.clone_from(cx.waker());
                }
            }
            None => {
                let id = inner.next_id;
                inner.next_id += 1;
                inner.waiters.push((id, cx.waker().clone()));
                this.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for SignalWait {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.signal.inner.lock().waiters.retain(|(i, _)| *i != id);
        }
    }
}
