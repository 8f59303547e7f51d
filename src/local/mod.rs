//! In-process shared state that leasehold's safety rests on (and one hint that only saves
//! a read).
//!
//! Everything here is free of tokio and of any backend, and takes its primitives from
//! [`sync`], a shim that is `parking_lot`/`std` in normal builds and `loom` when built with
//! `RUSTFLAGS="--cfg leasehold_loom"`. The loom models in `loom-tests/` compile these very
//! files (by path) and check them exhaustively; see `docs/guarantees.md`.
//!
//! | module | state | property |
//! |---|---|---|
//! | [`session_state`] | session status and validity deadline | the deadline never moves back; a lost or closed session never becomes valid again |
//! | [`cleanups`] | a session's running background cleanups | `settle()` completes only when none runs, and is never left waiting |
//! | [`release`] | a guard's held/releasing/released word | exactly one of unlock, drop and session loss sends the release |
//! | [`fence`] | a fenced resource's high-water mark | no lower token is applied after a higher one |
//! | [`signal`] | the one-shot lost() signal | every waiter sees it, once |
//! | [`waiter_queue`] | a session's local waiters for one key | one slot, served in arrival order; a cancelled waiter never strands the queue |
//! | [`combining`] | a grouped register handle's updates waiting for its combiner, and their outcomes | each update is taken once, in arrival order, or withdrawn and never applied; each outcome reaches its own caller; a joined update always has a combiner |
//! | [`value_hints`] | the value a client's queued register update wrote, by key | a waiter takes it only if written at its admission revision, and waits at most once for a write in flight (a dropped write wakes it) |

pub(crate) mod cleanups;
pub(crate) mod combining;
pub(crate) mod fence;
pub(crate) mod release;
pub(crate) mod session_state;
pub(crate) mod signal;
pub(crate) mod sync;
pub(crate) mod value_hints;
pub(crate) mod waiter_queue;
pub(crate) mod wakers;

/// A waker that counts its wake-ups, for the unit tests of the futures here.
#[cfg(all(test, not(leasehold_loom)))]
#[derive(Default)]
pub(crate) struct CountingWaker(std::sync::atomic::AtomicUsize);

#[cfg(all(test, not(leasehold_loom)))]
impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(all(test, not(leasehold_loom)))]
impl CountingWaker {
    /// A new one, shared.
    pub(crate) fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::default()
    }

    /// How many times it was woken.
    pub(crate) fn wakes(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Polls `fut` once with this waker.
    pub(crate) fn poll<F: std::future::Future + ?Sized>(
        self: &std::sync::Arc<Self>,
        fut: std::pin::Pin<&mut F>,
    ) -> std::task::Poll<F::Output> {
        fut.poll(&mut std::task::Context::from_waker(&std::task::Waker::from(self.clone())))
    }
}
