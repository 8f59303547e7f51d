//! Release-exactly-once for a guard.
//!
//! A guard can be released by an explicit `unlock()` or by its `Drop`, and the two may race
//! (a guard moved into a task that is aborted while another clone of the work unlocks).
//! Session loss does not go through here: a guard whose session is lost reports invalid
//! through the session, and its key went with the lease. The loom model adds a third
//! contender to show the word admits exactly one releaser however many race. The state word:
//!
//! | value | meaning |
//! |---|---|
//! | `HELD` (0) | acquired, nobody has started releasing |
//! | `RELEASING` (1) | one caller won [`begin`](ReleaseOnce::begin) and is sending the delete |
//! | `RELEASED` (2) | the release finished (or was abandoned because the session is gone) |
//!
//! Only the caller whose compare-exchange moved `HELD → RELEASING` sends the delete.

use super::sync::{AtomicU8, Ordering};

const HELD: u8 = 0;
const RELEASING: u8 = 1;
const RELEASED: u8 = 2;

/// One guard's release state.
#[derive(Debug)]
pub(crate) struct ReleaseOnce {
    state: AtomicU8,
}

impl ReleaseOnce {
    /// A held guard.
    pub(crate) fn new() -> Self {
        Self { state: AtomicU8::new(HELD) }
    }

    /// Claims the right to release. True for exactly one caller over the guard's life.
    pub(crate) fn begin(&self) -> bool {
        #[cfg(not(leasehold_loom_mutation_release))]
        {
            self.state.compare_exchange(HELD, RELEASING, Ordering::AcqRel, Ordering::Acquire).is_ok()
        }
        // Mutation for the loom suite: check, then set, as two steps.
        #[cfg(leasehold_loom_mutation_release)]
        {
            if self.state.load(Ordering::Acquire) != HELD {
                return false;
            }
            self.state.store(RELEASING, Ordering::Release);
            true
        }
    }

    /// Marks the release finished (called by the winner of `begin`).
    pub(crate) fn finish(&self) {
        self.state.store(RELEASED, Ordering::Release);
    }

    /// Whether nobody has started releasing.
    pub(crate) fn is_held(&self) -> bool {
        self.state.load(Ordering::Acquire) == HELD
    }
}
