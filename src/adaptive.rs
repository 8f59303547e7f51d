//! The adaptive contention policy: start optimistic, queue when conflicts rise, go back to
//! optimistic when queueing finds nobody to wait for.
//!
//! Each handle (a [`Mutex`](crate::Mutex) or [`Register`](crate::Register) with
//! [`Strategy::Adaptive`](crate::Strategy::Adaptive)) keeps two exponentially weighted
//! averages of its own recent operations (weight [`ALPHA`] for the newest):
//!
//! | mode | average | switch when |
//! |---|---|---|
//! | optimistic | conflicts per operation (failed compare-and-swaps) | above [`TO_QUEUE`], or at once when a [`Register`](crate::Register) update finds others queued |
//! | queued | share of operations that had to wait behind another holder | below [`TO_OPTIMISTIC`], after at least [`MIN_RUN`] queued operations |
//!
//! Optimistic costs nothing extra when alone but wastes work and time on retries under
//! contention; the queue costs a lock's round trips but turns contention into an orderly
//! hand-off. The thresholds give hysteresis so a handle does not flap between the two.
//! [`TO_QUEUE`] is where the contention sweep (`docs/sweep.md`) shows optimistic updates
//! start to starve (p99 in seconds) on etcd; below it optimistic has the higher throughput.
//! An adaptive register's optimistic write also requires the lock's queue to be empty, so
//! that once one client queues the others follow instead of fighting it (a mix of the two
//! modes is slower than either).

use parking_lot::Mutex;

/// Weight of the newest observation.
pub const ALPHA: f64 = 0.25;
/// Conflicts per optimistic operation above which the handle starts queueing.
pub const TO_QUEUE: f64 = 1.0;
/// Share of queued operations that waited, below which the handle goes optimistic again.
pub const TO_OPTIMISTIC: f64 = 0.2;
/// Queued operations before the handle may go back.
pub const MIN_RUN: u32 = 8;

#[derive(Debug, Default)]
struct State {
    queued: bool,
    conflicts: f64,
    waited: f64,
    run: u32,
}

/// One handle's policy state (shared by its clones).
#[derive(Debug, Default)]
pub(crate) struct Adaptive {
    state: Mutex<State>,
}

impl Adaptive {
    /// Whether the next operation should queue.
    pub(crate) fn queue_next(&self) -> bool {
        self.state.lock().queued
    }

    /// Records an optimistic operation that met `conflicts` failed attempts.
    pub(crate) fn optimistic(&self, conflicts: u32) {
        let mut s = self.state.lock();
        s.conflicts = (1.0 - ALPHA) * s.conflicts + ALPHA * f64::from(conflicts);
        if !s.queued && s.conflicts > TO_QUEUE {
            tracing::debug!(conflicts = s.conflicts, "adaptive: switching to the queue");
            *s = State { queued: true, conflicts: 0.0, waited: 1.0, run: 0 };
        }
    }

    /// Switches to the queue now (an optimistic operation found others queued).
    pub(crate) fn force_queue(&self) {
        let mut s = self.state.lock();
        if !s.queued {
            *s = State { queued: true, conflicts: 0.0, waited: 1.0, run: 0 };
        }
    }

    /// Records a queued operation; `waited` if another holder was ahead.
    pub(crate) fn queued(&self, waited: bool) {
        let mut s = self.state.lock();
        s.waited = (1.0 - ALPHA) * s.waited + ALPHA * if waited { 1.0 } else { 0.0 };
        s.run = s.run.saturating_add(1);
        if s.queued && s.run >= MIN_RUN && s.waited < TO_OPTIMISTIC {
            tracing::debug!(waited = s.waited, "adaptive: contention is quiet; optimistic again");
            *s = State::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_with_hysteresis() {
        let a = Adaptive::default();
        assert!(!a.queue_next(), "starts optimistic");
        a.optimistic(0);
        a.optimistic(1);
        assert!(!a.queue_next(), "one conflict is not contention");
        for _ in 0..8 {
            a.optimistic(2);
        }
        assert!(a.queue_next(), "repeated conflicts switch to the queue");
        for _ in 0..(MIN_RUN - 1) {
            a.queued(false);
        }
        assert!(a.queue_next(), "stays queued for at least MIN_RUN operations");
        a.queued(false);
        assert!(!a.queue_next(), "quiet queue goes back to optimistic");
        a.force_queue();
        assert!(a.queue_next(), "finding others queued switches at once");
        for _ in 0..50 {
            a.queued(true);
        }
        assert!(a.queue_next(), "a busy queue stays a queue");
    }
}
