//! The combining queue of a grouped [`Register`](crate::Register): updates that tasks hand
//! to the handle's combiner, and the outcomes it hands back (flat combining, Hendler et
//! al., SPAA 2010).
//!
//! A caller [`join`](Combining::join)s with its update and waits on the [`Joined`] future
//! it gets; the first caller that finds no combiner running is told to start one. The
//! combiner [`take`](Combining::take)s batches — the oldest pending updates, in arrival
//! order, each taken exactly once — applies them, and [`deliver`](Combining::deliver)s
//! each outcome to its own caller. When it finds nothing pending it stops, in the same
//! step that tells the next caller to start a new one, so a joined update is never left
//! without a combiner.
//!
//! A caller whose future is dropped withdraws (dropping its [`Joined`] leaves): if its update
//! was not yet taken it is removed and never applied; once taken it is in a batch in flight
//! and is applied if that batch commits, and its outcome is dropped on delivery.

use super::sync::{Arc, Mutex};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Where one joined update stands.
#[derive(Debug)]
enum State<Out> {
    /// Waiting to be taken into a batch.
    Pending,
    /// In a batch in flight.
    Taken,
    /// Its outcome, not yet picked up by its caller.
    Done(Out),
}

#[derive(Debug)]
struct Entry<Out> {
    state: State<Out>,
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Inner<Op, Out> {
    next_id: u64,
    /// Pending updates in arrival order.
    pending: VecDeque<(u64, Op)>,
    /// Every update whose caller still waits, by id (ordered: [`abandon`](Combining::abandon)
    /// wakes them in arrival order, so a simulated run does not depend on a hasher's keys).
    entries: BTreeMap<u64, Entry<Out>>,
    /// Whether a combiner runs (told to start and not yet stopped).
    combiner: bool,
}

/// The combining queue of one register handle (shared by its clones).
#[derive(Debug)]
pub(crate) struct Combining<Op, Out> {
    inner: Mutex<Inner<Op, Out>>,
}

impl<Op, Out> Default for Combining<Op, Out> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                next_id: 0,
                pending: VecDeque::new(),
                entries: BTreeMap::new(),
                combiner: false,
            }),
        }
    }
}

/// A batch taken by the combiner: the updates with the ids their outcomes go to, oldest
/// first.
pub(crate) type Batch<Op> = Vec<(u64, Op)>;

impl<Op, Out> Combining<Op, Out> {
    /// Hands `op` to the combiner. The second value is true when no combiner runs: the
    /// caller must start one (which then [`take`](Self::take)s until it gets `None`).
    pub(crate) fn join(queue: &Arc<Self>, op: Op) -> (Joined<Op, Out>, bool) {
        let mut inner = queue.inner.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.pending.push_back((id, op));
        inner.entries.insert(id, Entry { state: State::Pending, waker: None });
        let start = !inner.combiner;
        inner.combiner = true;
        (Joined { queue: queue.clone(), id: Some(id) }, start)
    }

    /// More updates for the batch the combiner is applying (the value it applies them to is
    /// known only now, so later arrivals can still join): up to `max` pending updates,
    /// oldest first, each now taken; possibly none. Never stops the combiner.
    pub(crate) fn top_up(&self, max: usize) -> Batch<Op> {
        if max == 0 {
            return Vec::new();
        }
        let mut inner = self.inner.lock();
        if inner.pending.is_empty() {
            return Vec::new();
        }
        Self::take_locked(&mut inner, max)
    }

    /// The combiner's next batch: up to `max` pending updates (at least one), oldest first,
    /// each now taken. `None` when nothing is pending: the combiner has stopped, and the
    /// next [`join`](Self::join) starts a new one.
    pub(crate) fn take(&self, max: usize) -> Option<Batch<Op>> {
        let mut inner = self.inner.lock();
        if inner.pending.is_empty() {
            #[cfg(leasehold_loom_mutation_combine)]
            {
                // Mutation (scripts/loom.sh): the combiner stops in a second step, so a
                // caller that joins in between sees it running and starts none.
                drop(inner);
                self.inner.lock().combiner = false;
                return None;
            }
            #[cfg(not(leasehold_loom_mutation_combine))]
            {
                inner.combiner = false;
                return None;
            }
        }
        Some(Self::take_locked(&mut inner, max))
    }

    /// Takes up to `max` (at least one) of the pending updates, which must not be empty.
    fn take_locked(inner: &mut Inner<Op, Out>, max: usize) -> Batch<Op> {
        let n = max.max(1).min(inner.pending.len());
        #[cfg(not(leasehold_loom_mutation_order))]
        let batch: Batch<Op> = inner.pending.drain(..n).collect();
        // Mutation (scripts/loom.sh): the newest updates first.
        #[cfg(leasehold_loom_mutation_order)]
        let batch: Batch<Op> = {
            let len = inner.pending.len();
            inner.pending.drain(len - n..).rev().collect()
        };
        for (id, _) in &batch {
            if let Some(e) = inner.entries.get_mut(id) {
                e.state = State::Taken;
            }
        }
        batch
    }

    /// Hands each outcome to its caller, in the order given (the batch's). An outcome whose
    /// caller withdrew is dropped.
    pub(crate) fn deliver(&self, outcomes: impl IntoIterator<Item = (u64, Out)>) {
        let mut wake = Vec::new();
        {
            let mut inner = self.inner.lock();
            for (id, out) in outcomes {
                if let Some(e) = inner.entries.get_mut(&id) {
                    e.state = State::Done(out);
                    wake.extend(e.waker.take());
                }
            }
        }
        for w in wake {
            w.wake();
        }
    }

    /// The combiner ended without finishing (its task was cancelled, its runtime shut
    /// down): every caller still waiting, whether its update was pending or taken, gets
    /// `fail()`, and the next [`join`](Self::join) starts a new combiner.
    pub(crate) fn abandon(&self, fail: impl Fn() -> Out) {
        let mut wake = Vec::new();
        {
            let mut inner = self.inner.lock();
            inner.combiner = false;
            inner.pending.clear();
            for e in inner.entries.values_mut() {
                if !matches!(e.state, State::Done(_)) {
                    e.state = State::Done(fail());
                    wake.extend(e.waker.take());
                }
            }
        }
        for w in wake {
            w.wake();
        }
    }

    /// How many updates wait to be taken.
    pub(crate) fn pending(&self) -> usize {
        self.inner.lock().pending.len()
    }
}

/// A joined update's outcome, to come. Dropping it withdraws the update (as `withdraw`,
/// in tests and the loom models, does).
#[derive(Debug)]
pub(crate) struct Joined<Op, Out> {
    queue: Arc<Combining<Op, Out>>,
    /// `None` once the outcome was picked up or the update withdrawn.
    id: Option<u64>,
}

/// Where a withdrawn update stood (what `Joined::withdraw` returns in tests and the loom
/// models).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Withdrawn {
    /// The update was not taken yet: it is removed and never applied.
    Before,
    /// The update is in a batch in flight (or done): applied if that batch commits.
    InFlight,
}

impl<Op, Out> Joined<Op, Out> {
    /// Leaves the queue without the outcome (what dropping it does), saying where the
    /// update stood.
    #[cfg(any(test, leasehold_loom))]
    pub(crate) fn withdraw(mut self) -> Withdrawn {
        self.leave()
    }

    fn leave(&mut self) -> Withdrawn {
        let Some(id) = self.id.take() else { return Withdrawn::InFlight };
        let mut inner = self.queue.inner.lock();
        let entry = inner.entries.remove(&id);
        match entry.map(|e| e.state) {
            Some(State::Pending) => {
                #[cfg(not(leasehold_loom_mutation_withdraw))]
                inner.pending.retain(|(i, _)| *i != id);
                // Mutation (scripts/loom.sh): the update stays queued and is applied anyway.
                Withdrawn::Before
            }
            _ => Withdrawn::InFlight,
        }
    }
}

impl<Op, Out> Drop for Joined<Op, Out> {
    fn drop(&mut self) {
        self.leave();
    }
}

impl<Op, Out> Unpin for Joined<Op, Out> {}

impl<Op, Out> Future for Joined<Op, Out> {
    type Output = Out;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Out> {
        let Some(id) = self.id else { panic!("a Joined polled after it completed") };
        let mut inner = self.queue.inner.lock();
        let entry = inner.entries.get_mut(&id).expect("a waiting update has its entry");
        if !matches!(entry.state, State::Done(_)) {
            match &mut entry.waker {
                Some(w) => w.clone_from(cx.waker()),
                None => entry.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        let Some(Entry { state: State::Done(out), .. }) = inner.entries.remove(&id) else { unreachable!() };
        drop(inner);
        self.id = None;
        Poll::Ready(out)
    }
}

#[cfg(all(test, not(leasehold_loom)))]
mod tests {
    use super::*;
    use crate::local::CountingWaker;

    #[test]
    fn updates_are_taken_once_in_arrival_order_and_answered_to_their_callers() {
        let q: Arc<Combining<u32, u32>> = Arc::default();
        let (mut a, start_a) = Combining::join(&q, 1);
        let (mut b, start_b) = Combining::join(&q, 2);
        assert!(start_a && !start_b, "the first caller starts the combiner");
        let w = CountingWaker::new();
        assert!(w.poll(Pin::new(&mut a)).is_pending());
        let batch = q.take(8).unwrap();
        assert_eq!(batch.iter().map(|(_, op)| *op).collect::<Vec<_>>(), [1, 2]);
        q.deliver(batch.into_iter().map(|(id, op)| (id, op * 10)));
        assert_eq!(w.wakes(), 1);
        assert_eq!(w.poll(Pin::new(&mut a)), Poll::Ready(10));
        assert_eq!(w.poll(Pin::new(&mut b)), Poll::Ready(20));
        assert!(q.take(8).is_none(), "nothing pending: the combiner stops");
        let (_c, start_c) = Combining::join(&q, 3);
        assert!(start_c, "a stopped combiner is started again");
    }

    #[test]
    fn a_withdrawn_update_is_never_taken_and_a_taken_one_stays_in_its_batch() {
        let q: Arc<Combining<u32, u32>> = Arc::default();
        let (a, _) = Combining::join(&q, 1);
        let (b, _) = Combining::join(&q, 2);
        assert_eq!(a.withdraw(), Withdrawn::Before);
        let batch = q.take(1).unwrap();
        assert_eq!(batch.iter().map(|(_, op)| *op).collect::<Vec<_>>(), [2]);
        assert_eq!(b.withdraw(), Withdrawn::InFlight);
        q.deliver(batch); // dropped: nobody waits
        assert_eq!(q.pending(), 0);
        assert!(q.take(1).is_none());
    }

    #[test]
    fn a_batch_is_topped_up_without_stopping_the_combiner() {
        let q: Arc<Combining<u32, u32>> = Arc::default();
        let (_a, start) = Combining::join(&q, 1);
        assert!(start);
        assert_eq!(q.take(8).unwrap().len(), 1);
        assert!(q.top_up(8).is_empty(), "nothing more yet");
        let (_b, start_b) = Combining::join(&q, 2);
        assert!(!start_b, "topping up an empty queue did not stop the combiner");
        assert_eq!(q.top_up(8).iter().map(|(_, op)| *op).collect::<Vec<_>>(), [2]);
        assert!(q.top_up(0).is_empty());
        assert!(q.take(8).is_none());
    }

    #[test]
    fn an_abandoned_combiner_answers_everyone_and_a_new_one_starts() {
        let q: Arc<Combining<u32, u32>> = Arc::default();
        let (mut a, _) = Combining::join(&q, 1);
        let (mut b, _) = Combining::join(&q, 2);
        let _taken = q.take(1).unwrap();
        q.abandon(|| 0);
        let w = CountingWaker::new();
        assert_eq!(w.poll(Pin::new(&mut a)), Poll::Ready(0), "a taken update's caller is answered");
        assert_eq!(w.poll(Pin::new(&mut b)), Poll::Ready(0), "a pending update's caller is answered");
        assert_eq!(q.pending(), 0);
        let (_c, start) = Combining::join(&q, 3);
        assert!(start, "the next caller starts a new combiner");
    }

    #[test]
    fn a_batch_is_bounded() {
        let q: Arc<Combining<u32, u32>> = Arc::default();
        let joined: Vec<_> = (0..5).map(|i| Combining::join(&q, i).0).collect();
        assert_eq!(q.take(2).unwrap().len(), 2);
        assert_eq!(q.take(0).unwrap().len(), 1, "at least one");
        assert_eq!(q.pending(), 2);
        drop(joined);
        assert_eq!(q.pending(), 0, "dropped callers withdrew what was still pending");
    }
}
