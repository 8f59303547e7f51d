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
//! session's **fence key** (`<namespace>~leasehold/fence/<lease hex>`, under the lease, in
//! the reserved area no recipe's prefix holds: `crate::name`) has the revision the session
//! knew when it sent the create. After an attempt whose outcome is unknown, the session
//! **moves the fence** (one conditional put) before it tries again or cleans up, so every
//! copy of that attempt, and of any earlier one, is refused by the store whenever it
//! arrives. A re-attached session moves it too, before it lists the lease's keys, fencing
//! off the earlier process's creates. Another task's create that was in flight meanwhile
//! is refused with the fence's new revision
//! ([`CreateResponse::fence_moved`](crate::backend::CreateResponse)) and sent again: a
//! definite refusal, not an unknown outcome. A fence found absent, or behind what the
//! session knew (deleted by hand; a store restored from a snapshot), is moved again rather
//! than followed back: a create sent while the fence was absent would otherwise be valid
//! again. (Creates sent before the fence first moved carry "absent", so deleting the fence
//! key by hand while such a copy is still on its way lets it land; the audit is the line
//! behind that.)

use crate::backend::{Backend, Condition, Fence, LeaseId, Revision, Write};
use crate::backoff::Backoff;
use crate::error::Result;
use crate::name::reserved_key;
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
        Self { key: reserved_key(namespace, "fence", &format!("{lease:x}")), revision: AtomicI64::new(0) }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The fence a create sent now must carry.
    pub(crate) fn current(&self) -> Fence {
        let revision = Some(self.revision.load(Ordering::Acquire)).filter(|&r| r != 0);
        Fence { key: self.key.clone(), revision }
    }

    /// The store said the fence is at `now`, ahead of what the create that learnt it
    /// carried. Revisions of a fence only grow, so an older answer read after a newer one
    /// changes nothing.
    pub(crate) fn seen(&self, now: Revision) {
        self.revision.fetch_max(now, Ordering::AcqRel);
    }

    /// The session's own move of the fence applied at `rev`: the fence is there now,
    /// whatever the session knew (which is ahead only if the store went backwards, or
    /// another task's move applied after this one: its creates then learn it again).
    fn moved_to(&self, rev: Revision) {
        self.revision.store(rev, Ordering::Release);
    }

    /// Whether a refusal that found the fence at `now` (0: absent) is one to follow (a
    /// newer revision than the refused create carried, `sent`), rather than a fence to
    /// move again (absent, or behind: see the module docs).
    pub(crate) fn ahead(now: Revision, sent: Option<Revision>) -> bool {
        now > sent.unwrap_or(0)
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
        if started.elapsed() > MOVE_FOR {
            let why = format!("the session's fence kept moving for {MOVE_FOR:?}");
            return Err(crate::Error::Unavailable(why.into()));
        }
        let held = [Condition::Modified { key: key.clone(), revision: at }];
        let put = Write::Put { key: key.clone(), value: Vec::new(), lease: Some(lease) };
        let outcome = match backend.write_if(&held, vec![put]).await {
            Ok(Some(rev)) => {
                tracing::debug!(key, rev, "fence moved: no earlier create of the session can land");
                fence.moved_to(rev);
                return Ok(());
            }
            Ok(None) => backend.get(&key).await.map(|kv| kv.map(|kv| kv.mod_revision)),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(now) => at = now, // moved elsewhere (or gone): move it from there
            Err(e) if e.is_transient() => match delays.next() {
                Some(delay) if started.elapsed() + delay <= MOVE_FOR => tokio::time::sleep(delay).await,
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}
