//! The local waiter queue: a fair (first come, first served) async slot per key and session.
//!
//! The tasks of one session that want the same key (`<prefix><lease>`: a mutex or an
//! election of one name) would share one store key, so they take turns here first and only
//! the task holding the [`Slot`] talks to the store. The slot passes **directly** from the
//! releasing holder to the oldest waiter (it is *granted*, never left free for a newcomer
//! to grab), so waiters are served in arrival order and [`WaiterQueue::try_acquire`] never
//! passes anyone who waits. A waiter whose future is dropped leaves the queue; if the slot
//! had already been granted to it, it passes the slot on to the next waiter, so a
//! cancellation never strands the queue.
//!
//! Arrival is a waiter's first poll.

use super::sync::{Arc, Mutex};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct Inner {
    /// Whether the slot is out: held by a [`Slot`], or granted to the front waiter and not
    /// yet claimed by its future.
    out: bool,
    next_id: u64,
    /// Waiters in arrival order; only the front one can be `granted`.
    waiters: VecDeque<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    waker: Option<Waker>,
    granted: bool,
}

impl Inner {
    /// The slot comes back: grant it to the oldest waiter (whose waker the caller must wake,
    /// outside the lock), or mark it free if nobody waits.
    #[must_use]
    fn give_back(&mut self) -> Option<Waker> {
        debug_assert!(self.out, "a slot given back that was not out");
        // Mutation for the loom suite: the newest waiter gets the slot (a stack, not a queue).
        #[cfg(leasehold_loom_mutation_arrival)]
        if let Some(next) = self.waiters.back_mut() {
            next.granted = true;
            return next.waker.take();
        }
        if let Some(next) = self.waiters.front_mut() {
            next.granted = true;
            return next.waker.take();
        }
        self.out = false;
        None
    }
}

/// A fair async slot shared by the tasks of one session that want one key.
#[derive(Debug, Default)]
pub(crate) struct WaiterQueue {
    inner: Mutex<Inner>,
}

impl WaiterQueue {
    /// A queue with the slot free.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The slot at once, if it is free and nobody waits; never passes a waiter.
    pub(crate) fn try_acquire(queue: &Arc<Self>) -> Option<Slot> {
        let mut inner = queue.inner.lock();
        if inner.out || !inner.waiters.is_empty() {
            return None;
        }
        inner.out = true;
        Some(Slot { queue: queue.clone() })
    }

    /// Waits for the slot, behind everyone who arrived earlier. Cancel-safe: dropping the
    /// future leaves the queue (passing the slot on if it was already granted).
    pub(crate) fn acquire(queue: &Arc<Self>) -> Acquire {
        Acquire { queue: queue.clone(), id: None }
    }

    /// How many waiters are queued (granted or not).
    pub(crate) fn waiting(&self) -> usize {
        self.inner.lock().waiters.len()
    }

    /// Whether the slot is out (held or granted).
    #[cfg(any(test, leasehold_loom))]
    pub(crate) fn is_out(&self) -> bool {
        self.inner.lock().out
    }

    fn give_back(&self) {
        let waker = self.inner.lock().give_back();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The slot of a [`WaiterQueue`]; passes to the next waiter when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    queue: Arc<WaiterQueue>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.queue.give_back();
    }
}

/// Future returned by [`WaiterQueue::acquire`].
#[derive(Debug)]
pub(crate) struct Acquire {
    queue: Arc<WaiterQueue>,
    /// Set once queued; cleared once the slot is claimed.
    id: Option<u64>,
}

impl Future for Acquire {
    type Output = Slot;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Slot> {
        let this = &mut *self;
        let mut inner = this.queue.inner.lock();
        let Some(id) = this.id else {
            if !inner.out && inner.waiters.is_empty() {
                inner.out = true;
                return Poll::Ready(Slot { queue: this.queue.clone() });
            }
            let id = inner.next_id;
            inner.next_id += 1;
            inner.waiters.push_back(Waiter { id, waker: Some(cx.waker().clone()), granted: false });
            this.id = Some(id);
            return Poll::Pending;
        };
        // (Mutation `arrival`, with `give_back`'s: the granted waiter claims it where it stands.)
        #[cfg(leasehold_loom_mutation_arrival)]
        if let Some(at) = inner.waiters.iter().position(|w| w.id == id && w.granted) {
            inner.waiters.remove(at);
            this.id = None;
            return Poll::Ready(Slot { queue: this.queue.clone() });
        }
        if inner.waiters.front().is_some_and(|w| w.id == id && w.granted) {
            inner.waiters.pop_front();
            this.id = None;
            return Poll::Ready(Slot { queue: this.queue.clone() });
        }
        if let Some(me) = inner.waiters.iter_mut().find(|w| w.id == id) {
            match &mut me.waker {
                Some(w) => w.clone_from(cx.waker()),
                None => me.waker = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let waker = {
            let mut inner = self.queue.inner.lock();
            let Some(at) = inner.waiters.iter().position(|w| w.id == id) else { return };
            let me = inner.waiters.remove(at).expect("found above");
            // Granted but never claimed: the slot is ours to pass on. (Mutation for
            // loom-tests: forget to, stranding the slot with nobody to give it back.)
            if me.granted && !cfg!(leasehold_loom_mutation_queue) {
                inner.give_back()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(all(test, not(leasehold_loom)))]
mod tests {
    use super::*;
    use crate::local::CountingWaker;

    /// A queue whose slot is held, with waiters `a` and `b` queued in that order.
    #[allow(clippy::type_complexity)]
    fn two_waiters() -> (Arc<WaiterQueue>, Slot, [(Pin<Box<Acquire>>, std::sync::Arc<CountingWaker>); 2]) {
        let q = Arc::new(WaiterQueue::new());
        let held = WaiterQueue::try_acquire(&q).expect("free");
        let mut waiters = [
            (Box::pin(WaiterQueue::acquire(&q)), CountingWaker::new()),
            (Box::pin(WaiterQueue::acquire(&q)), CountingWaker::new()),
        ];
        for (fut, waker) in &mut waiters {
            assert!(waker.poll(fut.as_mut()).is_pending(), "the slot is held");
        }
        assert_eq!(q.waiting(), 2);
        (q, held, waiters)
    }

    #[test]
    fn served_in_arrival_order_and_try_never_passes_a_waiter() {
        let (q, held, [(mut a, wa), (mut b, wb)]) = two_waiters();
        drop(held);
        // Granted to `a`: nobody else can take it, not even a try.
        assert!(WaiterQueue::try_acquire(&q).is_none());
        assert!(wb.poll(b.as_mut()).is_pending());
        assert_eq!(wa.wakes(), 1);
        let Poll::Ready(slot_a) = wa.poll(a.as_mut()) else { panic!("a is first") };
        drop(slot_a);
        let Poll::Ready(slot_b) = wb.poll(b.as_mut()) else { panic!("then b") };
        drop(slot_b);
        assert!(!q.is_out() && q.waiting() == 0);
        assert!(WaiterQueue::try_acquire(&q).is_some());
    }

    #[test]
    fn a_cancelled_waiter_passes_a_granted_slot_on() {
        let (q, held, [(a, _), (mut b, wb)]) = two_waiters();
        drop(held); // granted to a
        drop(a); // which is cancelled before it claims it
        assert_eq!(wb.wakes(), 1, "b was not woken");
        let Poll::Ready(slot) = wb.poll(b.as_mut()) else { panic!("the slot passed to b") };
        assert_eq!(q.waiting(), 0);
        drop(slot);
        assert!(!q.is_out());
        // A waiter cancelled before its grant just leaves.
        let held = WaiterQueue::try_acquire(&q).expect("free");
        let mut c = Box::pin(WaiterQueue::acquire(&q));
        assert!(wb.poll(c.as_mut()).is_pending());
        drop(c);
        assert_eq!(q.waiting(), 0);
        drop(held);
        assert!(!q.is_out());
    }
}
