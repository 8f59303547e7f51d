//! The session's fence: a late copy of a create can never make a key.
//!
//! A request whose answer is lost may still reach the store later: a retransmission held
//! in a cut link's buffer, a proposal that commits after its caller timed out. For a
//! create that is a key under the session's live lease that nothing of the session owns —
//! created after the acquisition moved on, or after its key was released — which holds a
//! lock, a permit or a queue place until the session ends. The audit one TTL later
//! (`session/cleanup.rs`) catches one that lands early; nothing bounds how late one lands.
//!
//! So every create of the session carries a [`Fence`]: it changes nothing unless the
//! session's **fence key** (`<namespace>./fence/<lease hex>`, under the lease; `.` is no
//! valid recipe name, so no recipe's prefix holds it) has the revision the session knew
//! when it sent the create. After an attempt whose outcome is unknown, the session
//! **moves the fence** (one conditional put) before it tries again or cleans up, so every
//! copy of that attempt, and of any earlier one, is refused by the store whenever it
//! arrives. A re-attached session moves it too, fencing off the earlier process's
//! requests. Another task's create that was in flight meanwhile is refused with the
//! fence's new revision ([`CreateResponse::fence_moved`](crate::backend::CreateResponse))
//! and sent again: a definite refusal, not an unknown outcome.

use crate::backend::{Backend, Condition, Fence, LeaseId, Revision, Write};
use crate::backoff::Backoff;
use crate::error::Result;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// How long [`move_fence`] retries transient failures before it gives up (as a create does;
/// a background cleanup calls it again until the session ends).
const MOVE_FOR: Duration = Duration::from_secs(10);

/// The fence key and the revision this session last knew it at.
#[derive(Debug)]
pub(crate) struct FenceState {
    key: String,
    /// Its `mod_revision`; 0 while it is absent (never moved).
    revision: AtomicI64,
}

impl FenceState {
    pub(crate) fn new(namespace: &str, lease: LeaseId) -> Self {
        Self { key: format!("{namespace}./fence/{lease:x}"), revision: AtomicI64::new(0) }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The fence a create sent now must carry.
    pub(crate) fn current(&self) -> Fence {
        let revision = Some(self.revision.load(Ordering::Acquire)).filter(|&r| r != 0);
        Fence { key: self.key.clone(), revision }
    }

    /// The store says the fence is at `now` (0: absent). Revisions of a live fence only
    /// grow, so an older answer read after a newer one changes nothing; an absent fence
    /// (the lease is gone) is taken as it is, so a create fails on the lease instead.
    pub(crate) fn seen(&self, now: Revision) {
        if now == 0 {
            self.revision.store(0, Ordering::Release);
        } else {
            self.revision.fetch_max(now, Ordering::AcqRel);
        }
    }
}

/// Moves the fence past every revision it had when the call began (see the
/// [module docs](self)), retrying transient failures: once this returns `Ok`, no create
/// sent before the call can change anything. It ends only on a conditional put of its own
/// that applied: a fence found elsewhere (another task of the session moved it, an earlier
/// try's answer was lost, or an earlier process of a re-attached lease moved it) is read
/// and moved once more, since a create may be on its way that expects exactly that.
pub(crate) async fn move_fence(backend: &dyn Backend, fence: &FenceState, lease: LeaseId) -> Result<()> {
    // Mutation (scripts/test.sh): the fence never moves, so a late create lands.
    #[cfg(leasehold_fence_mutation_frozen)]
    if true {
        let _ = (backend, lease);
        return Ok(());
    }
    let Fence { key, revision: mut at } = fence.current();
    let policy = Backoff::default();
    let (mut delays, started) = (policy.delays(), tokio::time::Instant::now());
    loop {
        let held = [Condition::Modified { key: key.clone(), revision: at }];
        let put = Write::Put { key: key.clone(), value: Vec::new(), lease: Some(lease) };
        let outcome = match backend.write_if(&held, vec![put]).await {
            Ok(Some(rev)) => {
                tracing::debug!(key, rev, "fence moved: no earlier create of the session can land");
                fence.seen(rev);
                return Ok(());
            }
            Ok(None) => backend.get(&key).await.map(|kv| kv.map(|kv| kv.mod_revision)),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(now) => {
                fence.seen(now.unwrap_or(0));
                at = now;
            }
            Err(e) if e.is_transient() => match delays.next() {
                Some(delay) if started.elapsed() + delay <= MOVE_FOR => tokio::time::sleep(delay).await,
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}
