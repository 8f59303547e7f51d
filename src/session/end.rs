//! How a session ends: [`close`](Session::close) (revoke the lease), [`detach`](Session::detach)
//! (hand it on, never revoke it), or the drop of its last handle (revoke in the background,
//! also a revoke a failed or dropped close left owed, never a detached lease's).

use super::{status, Session, SessionInner};
use crate::backend::LeaseId;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU8, Ordering};

/// [`Shared::end`](super::Shared::end): open (neither closing nor detached).
pub(super) const END_OPEN: u8 = 0;
/// [`Shared::end`](super::Shared::end): a `close` began to revoke and has not seen it done
/// (the drop of the last handle revokes). Never detachable again: the revoke may land.
const END_REVOKE_OWED: u8 = 1;
/// [`Shared::end`](super::Shared::end): detached; never revoked by this process.
const END_DETACHED: u8 = 2;
/// [`Shared::end`](super::Shared::end): a `close` saw its revoke done.
const END_REVOKED: u8 = 3;

/// Marks the lease's revoke as begun (owed until [`revoked`] says it is done), unless the
/// session was detached: then the lease is a successor's and must not be revoked (false).
/// A close and the keep-alive task at the deadline both call it before they revoke, so a
/// detach after either fails.
pub(super) fn begin_revoke(end: &AtomicU8) -> bool {
    end.compare_exchange(END_OPEN, END_REVOKE_OWED, Ordering::AcqRel, Ordering::Acquire) != Err(END_DETACHED)
}

/// Records a revoke's answer: done (or the lease was gone already), nothing is owed.
pub(super) fn revoked(end: &AtomicU8, answer: &Result<()>) {
    if matches!(answer, Ok(()) | Err(Error::LeaseNotFound { .. })) {
        let _ = end.compare_exchange(END_REVOKE_OWED, END_REVOKED, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl Session {
    /// Whether [`detach`](Session::detach) succeeded (through any handle).
    pub(crate) fn is_detached(&self) -> bool {
        self.inner.shared.end.load(Ordering::Acquire) == END_DETACHED
    }

    /// Stops renewing, waits for background releases, and revokes the lease (deleting every
    /// key held through it).
    ///
    /// Background releases are waited for at most one TTL: they retry until the store
    /// answers, and if it keeps failing them the revoke deletes their keys all the same
    /// (only the extra writes of a clean release — a lock-delay marker's removal — are then
    /// not made).
    ///
    /// A revoke that fails is returned, and made again in the background once the last
    /// handle of the session is gone (as dropping the session would). A session
    /// [detached](Session::detach) through another handle is not revoked (its lease is
    /// its successor's): `Error::SessionClosed`.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the session as dropping the session does: once the last
    /// handle is gone the lease is revoked in the background.
    pub async fn close(self) -> Result<()> {
        let _ = tokio::time::timeout(self.inner.ttl, self.settle()).await;
        if let Some(task) = self.inner.keepalive.lock().take() {
            task.abort();
        }
        self.inner.shared.state.close();
        self.inner.shared.ended.fire();
        status::closed(&self.inner.shared);
        // Owed until it is done: if it fails, or this future is dropped, the drop of the
        // last handle revokes in the background as it would have without `close`. Never
        // for a detached session: its lease is its successor's.
        if !begin_revoke(&self.inner.shared.end) {
            return Err(Error::SessionClosed { lease: self.inner.lease });
        }
        let answer = self.inner.client.backend().revoke_lease(self.inner.lease).await;
        revoked(&self.inner.shared.end, &answer);
        answer
    }

    /// Stops renewing **without** revoking, and returns the lease id: what the store sees
    /// when a process crashes. The keys held through the session stay until the lease
    /// expires, or until a new session [attaches](crate::SessionBuilder::attach) to the lease and
    /// takes them over (a restarting process handing its locks to its successor). From
    /// here no revoke of this process reaches the lease: not by the drop of its last
    /// handle, nor by a [`close`](Session::close) through another handle, which then fails
    /// with `SessionClosed`.
    ///
    /// Fails once a revoke of the lease began — a `close` through any handle, or the
    /// session's own at its validity deadline, when it was lost — with
    /// [`Error::SessionLost`] if the session was lost, else [`Error::SessionClosed`]: that revoke may still land, after a successor
    /// attached, and take its keys, so the lease must not be handed on. (Until 2026-12-05
    /// it was handed on, and a revoke a failed close left owed was made when the last
    /// handle went.) Detaching twice answers the lease both times.
    pub fn detach(self) -> Result<LeaseId> {
        let end = &self.inner.shared.end;
        match end.compare_exchange(END_OPEN, END_DETACHED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) | Err(END_DETACHED) => {}
            Err(_) => return Err(self.ended_error()),
        }
        if let Some(task) = self.inner.keepalive.lock().take() {
            task.abort();
        }
        // Closed locally, so dropping the last handle does not revoke.
        self.inner.shared.state.close();
        self.inner.shared.ended.fire();
        status::closed(&self.inner.shared);
        Ok(self.inner.lease)
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        if let Some(task) = self.keepalive.lock().take() {
            task.abort();
        }
        let closing = self.shared.state.close();
        status::closed(&self.shared);
        if closing || self.shared.end.load(Ordering::Acquire) == END_REVOKE_OWED {
            let backend = self.client.backend().clone();
            let lease = self.lease;
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move {
                    let _ = backend.revoke_lease(lease).await;
                });
            }
        }
    }
}
