//! Loom models of the combining queue of grouped register updates
//! (`src/local/combining.rs`): see `models.rs` for the conventions (`check`, preemption
//! bound, mutations).
//!
//! | cfg | mutated code | model that must fail |
//! |---|---|---|
//! | `leasehold_loom_mutation_combine` | `Combining::take` finds nothing pending and stops the combiner in a second acquisition of the lock, so a caller joining in between sees a combiner and starts none | [`grouped_updates_taken_once_in_order_and_answered`] |
//! | `leasehold_loom_mutation_order` | `Combining::take` takes the newest pending updates first | [`grouped_updates_taken_once_in_order_and_answered`] |
//! | `leasehold_loom_mutation_withdraw` | a withdrawn update that was not taken stays in the queue (and is applied) | [`withdrawn_update_is_never_applied`] |

use crate::local::combining::{Combining, Joined, Withdrawn};
use crate::models::{check, CountingWaker};
use loom::sync::{Arc, Mutex};
use loom::thread;
use std::future::Future;
use std::task::{Context, Poll, Waker};

type Queue = Combining<u32, u32>;

/// The combiner: takes batches until none waits, records what it applied, and answers
/// each update with ten times its value.
fn combine(queue: &Queue, applied: &Mutex<Vec<u32>>) {
    while let Some(batch) = queue.take(8) {
        applied.lock().unwrap().extend(batch.iter().map(|(_, op)| *op));
        queue.deliver(batch.into_iter().map(|(id, op)| (id, op * 10)));
    }
}

/// Polls a joined update once; its outcome if it has one.
fn outcome(joined: &mut Joined<u32, u32>) -> Option<u32> {
    let waker = Waker::from(std::sync::Arc::<CountingWaker>::default());
    match std::pin::Pin::new(joined).poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// Property: every joined update is taken exactly once, in arrival order, by a combiner
/// that some caller was told to start, and each caller gets its own outcome. Thread A
/// joins updates 1 and 2, thread B update 3; whichever is told to start a combiner runs
/// it (as the spawned task would), until it finds nothing pending. When both are done,
/// every update was applied once, 1 before 2, and every caller's outcome is there and is
/// its own (a stranded update would have none).
///
/// Preemption bound: 3 (models.rs). Two threads, three to six lock acquisitions each.
#[test]
#[cfg_attr(leasehold_loom_mutation_combine, should_panic(expected = "an update was stranded"))]
#[cfg_attr(leasehold_loom_mutation_order, should_panic(expected = "applied out of arrival order"))]
fn grouped_updates_taken_once_in_order_and_answered() {
    check("grouped_updates_taken_once_in_order_and_answered", || {
        let queue: Arc<Queue> = Arc::default();
        let applied = Arc::new(Mutex::new(Vec::new()));
        let caller = |ops: &'static [u32]| {
            let (queue, applied) = (queue.clone(), applied.clone());
            thread::spawn(move || {
                let mut joined = Vec::new();
                let mut start = false;
                for &op in ops {
                    let (j, s) = Combining::join(&queue, op);
                    joined.push((op, j));
                    start |= s;
                }
                if start {
                    combine(&queue, &applied);
                }
                joined
            })
        };
        let (a, b) = (caller(&[1, 2]), caller(&[3]));
        let mut joined = a.join().unwrap();
        joined.extend(b.join().unwrap());
        for (op, j) in &mut joined {
            let out = outcome(j);
            assert!(out.is_some(), "an update was stranded: {op} has no outcome");
            assert_eq!(out, Some(*op * 10), "an outcome reached another caller");
        }
        let applied = applied.lock().unwrap().clone();
        let mut sorted = applied.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 3], "an update lost or applied twice: {applied:?}");
        let pos = |op| applied.iter().position(|&x| x == op).unwrap();
        assert!(pos(1) < pos(2), "applied out of arrival order: {applied:?}");
    });
}

/// Property: a caller that withdraws (drops its future) while the combiner runs either
/// withdrew before its update was taken, and then it is never applied, or finds it in a
/// batch, and then it is applied exactly once; the other caller of the batch gets its
/// outcome either way.
///
/// Preemption bound: 3 (models.rs). Two threads, one to four lock acquisitions each.
#[test]
#[cfg_attr(leasehold_loom_mutation_withdraw, should_panic(expected = "a withdrawn update was applied"))]
fn withdrawn_update_is_never_applied() {
    check("withdrawn_update_is_never_applied", || {
        let queue: Arc<Queue> = Arc::default();
        let applied = Arc::new(Mutex::new(Vec::new()));
        let (dropped, start) = Combining::join(&queue, 1);
        assert!(start);
        let (mut kept, _) = Combining::join(&queue, 2);
        let combiner = {
            let (queue, applied) = (queue.clone(), applied.clone());
            thread::spawn(move || combine(&queue, &applied))
        };
        let withdrawer = thread::spawn(move || dropped.withdraw());
        combiner.join().unwrap();
        let withdrawn = withdrawer.join().unwrap();
        let applied = applied.lock().unwrap().clone();
        let times = applied.iter().filter(|&&x| x == 1).count();
        match withdrawn {
            Withdrawn::Before => assert_eq!(times, 0, "a withdrawn update was applied: {applied:?}"),
            Withdrawn::InFlight => assert_eq!(times, 1, "a taken update not applied once: {applied:?}"),
        }
        assert_eq!(outcome(&mut kept), Some(20), "the other caller lost its outcome");
        assert_eq!(queue.pending(), 0);
    });
}
