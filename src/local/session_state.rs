//! A session's status and local validity deadline.
//!
//! The deadline is `instant the last successful renewal was *sent* + granted TTL`. The
//! server's lease expires no earlier than that (it starts its TTL when the renewal
//! *arrives*), so a session that believes itself valid before its deadline is right,
//! given clocks that run at the same rate.
//!
//! | status | `is_valid(now)` | transitions |
//! |---|---|---|
//! | `Alive` | `now < deadline` | `renewed` (deadline only moves forward), `expire_if_due`/`mark_lost` → `Lost`, `close` → `Closed` |
//! | `Lost` | false | none: a late renewal success never revives a lost session |
//! | `Closed` | false | none |

use super::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// Renewed in time; valid until its deadline.
    Alive,
    /// The lease expired or could not be renewed before the deadline.
    Lost,
    /// Closed by its owner (lease revoked).
    Closed,
}

#[derive(Debug)]
struct Inner {
    status: SessionStatus,
    deadline: Instant,
}

/// Status and deadline behind one lock, so that no reader sees a deadline of a lost session.
#[derive(Debug)]
pub(crate) struct SessionState {
    inner: Mutex<Inner>,
}

impl SessionState {
    /// A fresh, alive session valid until `deadline`.
    pub(crate) fn new(deadline: Instant) -> Self {
        Self { inner: Mutex::new(Inner { status: SessionStatus::Alive, deadline }) }
    }

    /// Records a renewal that succeeded and whose request was sent at `sent`. Returns
    /// false (and changes nothing) if the session is no longer alive.
    pub(crate) fn renewed(&self, sent: Instant, ttl: Duration) -> bool {
        let mut inner = self.inner.lock();
        #[cfg(not(leasehold_loom_mutation_revive))]
        if inner.status != SessionStatus::Alive {
            return false;
        }
        // Mutation for the loom suite: only a closed session refuses a renewal; a success
        // (the server extended the lease, after all) revives a lost one.
        #[cfg(leasehold_loom_mutation_revive)]
        {
            if inner.status == SessionStatus::Closed {
                return false;
            }
            inner.status = SessionStatus::Alive;
        }
        let candidate = sent + ttl;
        #[cfg(not(leasehold_loom_mutation_deadline))]
        if candidate > inner.deadline {
            inner.deadline = candidate;
        }
        // Mutation for the loom suite: accept an older renewal's deadline, moving it back.
        #[cfg(leasehold_loom_mutation_deadline)]
        {
            inner.deadline = candidate;
        }
        true
    }

    /// Whether the session is alive and `now` is before its deadline.
    pub(crate) fn is_valid(&self, now: Instant) -> bool {
        let inner = self.inner.lock();
        inner.status == SessionStatus::Alive && now < inner.deadline
    }

    /// The current status (an alive session past its deadline still reads `Alive` until
    /// someone calls [`expire_if_due`](Self::expire_if_due); use `is_valid` for decisions).
    pub(crate) fn status(&self) -> SessionStatus {
        self.inner.lock().status
    }

    /// The validity deadline.
    pub(crate) fn deadline(&self) -> Instant {
        self.inner.lock().deadline
    }

    /// Moves an alive session past its deadline to `Lost`. True only for the call that
    /// made the transition.
    pub(crate) fn expire_if_due(&self, now: Instant) -> bool {
        let mut inner = self.inner.lock();
        if inner.status == SessionStatus::Alive && now >= inner.deadline {
            inner.status = SessionStatus::Lost;
            return true;
        }
        false
    }

    /// Marks an alive session lost (the server said the lease is gone). True only for the
    /// call that made the transition.
    pub(crate) fn mark_lost(&self) -> bool {
        let mut inner = self.inner.lock();
        if inner.status == SessionStatus::Alive {
            inner.status = SessionStatus::Lost;
            return true;
        }
        false
    }

    /// Marks an alive session closed. True only for the call that made the transition.
    pub(crate) fn close(&self) -> bool {
        let mut inner = self.inner.lock();
        if inner.status == SessionStatus::Alive {
            inner.status = SessionStatus::Closed;
            return true;
        }
        false
    }
}
