//! Cancellation-safe creation of a queue key ([`Pending`]) and the session's local slot
//! that one acquisition per key per session holds while it creates and holds the key.

use super::{with_deadline, Wait};
use crate::backend::{Backend, Condition, CreateRequest, CreateResponse, KeyValue, Revision, Write};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::guard::Holding;
use crate::local::cleanups::Owned;
use crate::local::waiter_queue::{Slot, WaiterQueue};
use crate::session::{move_fence, FenceState, Target};
use crate::Session;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Takes this session's local queue slot for `key` (one acquisition per key per session at
/// a time), waiting as `wait` allows. `None` if another task of the session holds it and
/// `wait` ran out (at once for `Wait::No`). Fails with the session's
/// [ended error](Session::ended_error) if the session ends (lost, closed or detached)
/// while it waits: the other task may keep its guard for good. (Until 2026-12-05 this
/// waited for it all the same.)
pub(crate) async fn local_slot(session: &Session, key: &str, wait: Wait) -> Result<Option<Slot>> {
    let queue = session.local_queue(key);
    if wait == Wait::No {
        return Ok(WaiterQueue::try_acquire(&queue));
    }
    let slot = with_deadline(wait, WaiterQueue::acquire(&queue));
    tokio::select! {
        biased;
        slot = slot => Ok(slot),
        () = session.ended() => Err(session.ended_error()),
    }
}

/// Creates `req.key` for an acquisition through a [`Pending`] — every acquisition does, so
/// that none takes over a key of this session whose background delete is pending (the
/// delete would take it away from under the new holder, whose guard would still say it
/// holds): it waits for the delete, as `wait` allows, and creates the key afresh. `None`:
/// the wait ran out first (nothing was created). See [`Pending::start`] for the rest.
pub(crate) async fn create(
    session: &Session,
    req: CreateRequest,
    mut local: Option<Slot>,
    mut replaces: Option<Holding>,
    wait: Wait,
) -> Result<Option<(Pending, CreateResponse)>> {
    loop {
        let Some(owned) = claim(session, &req.key) else {
            let undoomed = session.undoomed(&req.key);
            if wait == Wait::No || with_deadline(wait, undoomed).await.is_none() {
                return Ok(None);
            }
            continue;
        };
        let mut pending = Pending::start(session, req.clone(), local.take(), replaces.take(), owned);
        let resp = pending.response().await.map_err(|e| match e {
            // The store has no such lease any more: the session is lost.
            Error::LeaseNotFound { .. } => Error::SessionLost { lease: session.lease_id() },
            e => e,
        })?;
        let ours = resp.mine.as_ref().is_some_and(|kv| kv.lease == session.lease_id());
        if !resp.created && ours && doomed(session, &req.key) {
            local = pending.leave(); // it is being deleted: not ours to take
            continue;
        }
        return Ok(Some((pending, resp)));
    }
}

/// Claims `key` for an acquisition of this session: `None` while its delete is pending.
pub(crate) fn claim(session: &Session, key: &str) -> Option<Owned> {
    #[cfg(not(leasehold_sim_mutation_adopt))]
    return session.claim(key);
    // Mutation (scripts/sim.sh): issue 17's bug 2, a key with a pending delete is taken.
    #[cfg(leasehold_sim_mutation_adopt)]
    return Some(session.own(key));
}

/// Whether a background delete of `key` by this session is pending.
fn doomed(session: &Session, key: &str) -> bool {
    #[cfg(not(leasehold_sim_mutation_adopt))]
    return session.is_doomed(key);
    // Mutation for the simulator (scripts/sim.sh): issue 17's bug 2, a key with a pending
    // delete is adopted.
    #[cfg(leasehold_sim_mutation_adopt)]
    {
        let _ = (session, key);
        false
    }
}

/// A key being created for an acquisition; deletes it in the background if dropped.
///
/// The create runs in a task of its own, so a caller that is cancelled never leaves an RPC
/// whose outcome nobody knows. Whatever happens to the caller, a key this acquisition
/// created (or may have created: an attempt failed after the store may have applied it) is
/// either handed to the caller ([`into_holding`](Self::into_holding)) or deleted, in the background if
/// need be, retried until done or the session ends (`session/cleanup.rs`).
///
/// A guard whose key the create's transaction also deletes (a relock's old key) is owned
/// here until the outcome is known: released elsewhere if the transaction applied, given
/// back if its conditions failed, and otherwise dropped (so released in the background)
/// **before** this key's own cleanup lets go of the session's local slot. So by the time
/// another task of the session can create the old key, its pending delete is registered
/// and that task does not adopt it.
#[derive(Debug)]
pub(crate) struct Pending {
    session: Session,
    key: String,
    stage: Stage,
    local: Option<Slot>,
    /// The claim on the key, passed on to the guard.
    owned: Option<Owned>,
    replaces: Option<Holding>,
    /// Whether the replaced key goes only if the key is created (a conditional write), not
    /// whatever the create decides (a create request's `replaces`).
    replaced_with_create: bool,
}

#[derive(Debug)]
enum Stage {
    /// The create task, and whether an attempt so far failed after the store may have
    /// applied it.
    InFlight(tokio::task::JoinHandle<Result<CreateResponse>>, Arc<AtomicBool>),
    /// The key exists under the session's lease with this revision.
    Exists(Revision),
    /// The create failed; an attempt may have created the key.
    Unknown,
    Done,
}

impl Pending {
    /// Sends `req` (in its own task). `local` is the session's local queue slot for the key;
    /// it is released only after the key is gone or handed to a guard. `replaces` is the
    /// guard whose key `req.replaces` names.
    pub(crate) fn start(
        session: &Session,
        req: CreateRequest,
        local: Option<Slot>,
        replaces: Option<Holding>,
        owned: Owned,
    ) -> Self {
        let backend = session.client().backend().clone();
        let key = req.key.clone();
        let unknown = Arc::new(AtomicBool::new(false));
        let (flag, session_) = (unknown.clone(), session.clone());
        // The request is boxed: kept in the task as it is, it made the task's allocation
        // large enough to miss the allocator's fast path (callgrind, a lone mutex: ~600
        // instructions more per lock in `_int_malloc`).
        let req = Box::new(req);
        // Retrying is safe: the key is this session's own, so a retry after an attempt that
        // did write finds the key already there (with this lease) and reports it. And no
        // attempt lands after a later one was sent: the fence moves in between
        // (`session/fence.rs`).
        let task = tokio::spawn(async move {
            let unfenced = AtomicBool::new(false);
            let attempt = || {
                let (backend, req, flag, session, unfenced) = (&backend, &req, &flag, &session_, &unfenced);
                async move {
                    // Nothing more is sent for a session that ended (a detached one's lease
                    // may be another process's by now) or whose deadline passed.
                    session.check()?;
                    // The rare paths are boxed: their futures (a sleep among them) would
                    // otherwise make every create's task that much larger to spawn.
                    if unfenced.load(Ordering::Acquire) {
                        Box::pin(move_fence(&**backend, session.fence(), session.lease_id())).await?;
                        unfenced.store(false, Ordering::Release);
                    }
                    for _ in 0..MAX_REFUSALS {
                        session.check()?;
                        let fence = session.fence().current();
                        let sent = fence.revision;
                        let now = match backend.create(CreateRequest { fence: Some(fence), ..(**req).clone() }).await {
                            Err(e) if e.is_transient() => {
                                flag.store(true, Ordering::Release);
                                unfenced.store(true, Ordering::Release);
                                return Err(e);
                            }
                            // Refused, not applied: another task moved the fence meanwhile.
                            // (Only the revision is kept across the await below.)
                            Ok(CreateResponse { fence_moved: Some(now), .. }) => now,
                            other => return other,
                        };
                        Box::pin(refused(session, &**backend, now, sent)).await?;
                    }
                    Err(Error::Unavailable(format!("the session's fence moved {MAX_REFUSALS} times in a row").into()))
                }
            };
            Backoff::default().retry(attempt).await
        });
        let stage = Stage::InFlight(task, unknown);
        let owned = Some(owned);
        Self { session: session.clone(), key, stage, local, owned, replaces, replaced_with_create: false }
    }

    /// Like [`start`](Self::start) for a key created by a conditional write instead
    /// (`key` absent must be among `conditions`, and a put of `key` under the session's
    /// lease among `writes`): a register update that writes its value, releases its lock
    /// and queues again in one transaction ([`parked`](super::parked)). Not retried — the
    /// write is not idempotent — so a transport error leaves the outcome unknown and the key
    /// is cleaned up like any other whose create failed. The response says `created` when
    /// the conditions held; it carries no head.
    pub(crate) fn write(
        session: &Session,
        key: String,
        conditions: Vec<Condition>,
        writes: Vec<Write>,
        local: Option<Slot>,
        replaces: Option<Holding>,
        owned: Owned,
    ) -> Self {
        let backend = session.client().backend().clone();
        let (lease, created_key) = (session.lease_id(), key.clone());
        let unknown = Arc::new(AtomicBool::new(false));
        let (flag, session_) = (unknown.clone(), session.clone());
        let task = tokio::spawn(async move {
            // Fenced like a create (`session/fence.rs`). A write refused by a moved fence
            // (nothing was written) is not sent again here, since `writes` is not kept (a
            // copy per write would cost every queued update): its caller sees its conditions
            // fail, reads the value again and retries (a conflict more), with the fence
            // followed or moved by then. Whether the fence moved is read only after a
            // refusal, not in the write's own step (which every write would pay for).
            let fence = session_.fence().current();
            let mut conditions = conditions;
            conditions.push(Condition::Modified { key: fence.key, revision: fence.revision });
            let applied = backend.write_if(&conditions, writes).await.inspect_err(|e| {
                if e.is_transient() {
                    flag.store(true, Ordering::Release);
                }
            })?;
            // (The fence's condition is the last one: pushed above.)
            if let (None, Some(Condition::Modified { key, .. })) = (applied, conditions.last()) {
                Box::pin(async {
                    let now = backend.get(key).await?.map(|kv| kv.mod_revision);
                    match now == fence.revision {
                        true => Ok(()), // the caller's own conditions failed
                        false => refused(&session_, &*backend, now.unwrap_or(0), fence.revision).await,
                    }
                })
                .await?;
            }
            let mine = applied.map(|rev| KeyValue {
                key: created_key,
                value: Vec::new(),
                create_revision: rev,
                mod_revision: rev,
                lease,
            });
            Ok(CreateResponse {
                created: mine.is_some(),
                mine,
                head: Vec::new(),
                revision: applied.unwrap_or(0),
                read: None,
                fence_moved: None,
            })
        });
        let stage = Stage::InFlight(task, unknown);
        let owned = Some(owned);
        Self { session: session.clone(), key, stage, local, owned, replaces, replaced_with_create: true }
    }

    /// Waits for the create's outcome.
    ///
    /// The response's `created` is also true when the key exists under this session's lease
    /// and an earlier attempt of this create failed after the store may have applied it
    /// (its answer was lost): the key is then this acquisition's own, created by that
    /// attempt. (Keys of one session and name are taken one at a time through the local
    /// slot, numbered keys are never reused — a re-attached session numbers above its
    /// leftovers — and a key with a pending delete is doomed.)
    ///
    /// On success the guard this create replaces is released (its key went in the same
    /// transaction), unless the write's conditions failed; see
    /// [`take_replaced`](Self::take_replaced).
    pub(crate) async fn response(&mut self) -> Result<CreateResponse> {
        let Stage::InFlight(task, unknown) = &mut self.stage else {
            return Err(Error::Store("pending: response already taken".into()));
        };
        let outcome = task.await.map_err(|e| Error::Store(format!("create task failed: {e}").into()));
        let unknown = unknown.load(Ordering::Acquire);
        if unknown {
            // An attempt may still land after this: look for keys nothing owns later.
            self.session.schedule_audit();
        }
        let mut resp = match outcome {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) | Err(e) => {
                // Not known to exist; a transient failure may still have written it.
                self.stage = if unknown || e.is_transient() { Stage::Unknown } else { Stage::Done };
                return Err(e);
            }
        };
        let lease = self.session.lease_id();
        let ours = resp.mine.as_ref().filter(|kv| kv.lease == lease).map(|kv| kv.create_revision);
        // (Mutation `leasehold_sim_mutation_cleanup`, issue 17's bug 4: the session's own key
        // found after a lost answer is not taken as this acquisition's.)
        #[cfg(not(leasehold_sim_mutation_cleanup))]
        if unknown && ours.is_some() && !self.session.is_doomed(&self.key) {
            resp.created = true;
        }
        self.stage = match ours {
            Some(rev) => Stage::Exists(rev),
            None => Stage::Done,
        };
        if resp.created || !self.replaced_with_create {
            if let Some(old) = self.replaces.take() {
                old.released_elsewhere();
            }
        }
        Ok(resp)
    }

    /// The guard this create was to replace, if the transaction did not release it (a
    /// conditional write whose conditions failed): it still holds if it did.
    pub(crate) fn take_replaced(&mut self) -> Option<Holding> {
        self.replaces.take()
    }

    /// Keeps the key, created at `rev`, as a guard's: the guard now owns it (with the local
    /// slot and the claim) and must release it.
    ///
    /// Fails with `SessionLost` if the session's validity deadline has passed (or
    /// `SessionClosed` if it was closed meanwhile): an answer
    /// that came so late (a slow link) may be about a lease the store already expired, and
    /// a lock it already gave to another. The key is then deleted in the background, as a
    /// dropped acquisition's is.
    pub(crate) fn into_holding(mut self, rev: Revision) -> Result<Holding> {
        self.session.check()?; // lost, closed, or past its deadline
        self.stage = Stage::Done;
        Ok(Holding::new(self.session.clone(), self.key.clone(), rev, self.local.take(), self.owned.take()))
    }

    /// Leaves the key alone (it is not this acquisition's: a leftover, or a key being
    /// deleted), and gives back the local slot.
    pub(crate) fn leave(mut self) -> Option<Slot> {
        self.stage = Stage::Done;
        self.local.take()
    }

    /// Deletes the key now (a failed try, a timeout) and waits for it. If this future is
    /// dropped, or the delete fails, the key is still [`Stage::Exists`] and `Drop` deletes
    /// it in the background.
    pub(crate) async fn abandon(mut self) -> Result<()> {
        if let Stage::Exists(rev) = self.stage {
            if self.session.is_closed() {
                // Detached, the key may be a successor's by now; closed, the lease takes it.
                self.stage = Stage::Done;
                return Ok(());
            }
            let backend = self.session.client().backend().clone();
            release_retry(&*backend, &self.key, rev).await?;
            self.stage = Stage::Done;
        }
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // First the replaced guard (its delete is registered now), then this key's cleanup,
        // which lets go of the local slot when it is done.
        drop(self.replaces.take());
        let key = std::mem::take(&mut self.key);
        let local = self.local.take();
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Done => {}
            Stage::Exists(rev) => self.session.release_in_background(key, rev, Vec::new(), local),
            Stage::Unknown => self.session.cleanup_unknown(key, local),
            Stage::InFlight(task, unknown) => {
                let (session, doom) = (self.session.clone(), self.session.doom(&key));
                let lease = session.lease_id();
                let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
                handle.spawn(async move {
                    let outcome = task.await;
                    if unknown.load(Ordering::Acquire) {
                        // An earlier attempt's outcome is unknown: it may still land, also
                        // after the key the last attempt made is deleted below.
                        session.schedule_audit();
                    }
                    let target = match outcome {
                        Ok(Ok(resp)) => match resp.mine.filter(|kv| kv.lease == lease) {
                            Some(kv) => Some(Target::Created(key, kv.create_revision, Vec::new())),
                            None => None,
                        },
                        Ok(Err(e)) if !unknown.load(Ordering::Acquire) && !e.is_transient() => None,
                        _ => {
                            session.schedule_audit(); // an attempt may still have landed
                            Some(Target::Unknown(key))
                        }
                    };
                    match target {
                        Some(target) => session.delete_in_background(doom, target, local),
                        None => doom.end_handing_on(local), // as a background delete ends
                    }
                });
            }
        }
    }
}

/// How many times in a row one create attempt is refused by a moved fence before it counts
/// as a transient failure (retried after a pause): each refusal follows or moves the fence,
/// which moves only after an unknown outcome, so this is never reached unless something
/// else keeps moving it.
const MAX_REFUSALS: u32 = 64;

/// A create or write of `session` refused because its fence (`sent`) had moved to `now` (0:
/// absent): a newer fence is followed; one absent or behind is moved again, so that what
/// was sent while it was absent cannot become valid (`session/fence.rs`).
async fn refused(session: &Session, backend: &dyn Backend, now: Revision, sent: Option<Revision>) -> Result<()> {
    if FenceState::ahead(now, sent) {
        session.fence().seen(now);
        Ok(())
    } else {
        move_fence(backend, session.fence(), session.lease_id()).await
    }
}

/// Ownership-safe delete, retried on transient errors. True if this call deleted the key.
pub(crate) async fn release_retry(backend: &dyn Backend, key: &str, create_revision: Revision) -> Result<bool> {
    let policy = Backoff::default();
    policy.retry(|| backend.delete_if_created(key, create_revision)).await
}
