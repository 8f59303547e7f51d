//! A session's background deletes: the keys it must not leave behind.
//!
//! A key of the session that no guard owns any more — a release that was dropped or could
//! not be sent in time, an acquisition cancelled after its create, a create whose outcome
//! is unknown (it may have applied before its answer was lost), a leftover being released —
//! would otherwise stay as long as the lease, and the lease lives as long as the session: a
//! lock held for good, a permit lost, a queue place nobody leaves. So each such delete runs
//! in the background and is **retried until it is done or the session ends** (lost, closed
//! or detached: then the lease takes the key, or, detached, the next owner of the lease
//! does). [`Session::settle`] waits for them; `close` settles before it revokes.
//!
//! While a delete of a key is pending the key is **doomed** (see
//! [`Cleanups`](crate::local::cleanups)): an acquisition of this session that finds the key
//! under its own lease does not take it over, since the delete would take it away from
//! under it; it waits for the delete and creates the key afresh.
//!
//! A request can also land after its caller gave up: a create whose every attempt failed,
//! but one of which reaches the store later; or a request of the process that held the
//! lease before a [re-attach](crate::SessionBuilder::attach). Its key would belong to
//! nothing. The session's **fence** (`session/fence.rs`) keeps such a create from landing
//! at all once the session has moved on, however late it arrives. As a second line, after
//! each such event (an attempt with an unknown outcome, an attach) the session **audits**
//! its lease one TTL later: every key of a recipe's shape under the lease that nothing of
//! the session owns — no acquisition, guard, parked place or leftover — is deleted like the
//! others (a request of an earlier process that landed before the attach, say).

use super::{is_recipe_key, move_fence, Session, Shared};
use crate::backend::{Backend, Condition, LeaseId, Revision, Write};
use crate::backoff::Backoff;
use crate::error::Result;
use crate::local::cleanups::{Cleanups, Owned, Running};
use crate::local::session_state::SessionStatus;
use crate::local::waiter_queue::Slot;
use crate::Client;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl Session {
    /// Deletes `key` if it still has `revision` — applying `extra` in the same transaction —
    /// in the background, retrying until done or the session ends. `local` (the session's
    /// local slot for the key, if the caller had it) is released after. The key is doomed
    /// from this call on.
    pub(crate) fn release_in_background(
        &self,
        key: String,
        revision: Revision,
        extra: Vec<Write>,
        local: Option<Slot>,
    ) {
        let doom = self.doom(&key);
        self.delete_in_background(doom, Target::Created(key, revision, extra), local);
    }

    /// Deletes `key`, a leftover this session took over only to delete it (a re-attached
    /// lease's relock key, `Exclusive::prepare`), in the background: while it still has
    /// `revision`, or, if that was not read yet, if it exists under the session's lease.
    /// The key is doomed from this call on.
    pub(crate) fn delete_leftover_in_background(&self, key: String, revision: Option<Revision>) {
        match revision {
            Some(revision) => self.release_in_background(key, revision, Vec::new(), None),
            None => {
                let doom = self.doom(&key);
                self.delete_in_background(doom, Target::IfOurs(key), None);
            }
        }
    }

    /// After a create whose outcome is unknown: moves the session's fence, so that no copy
    /// of it can land any more, then deletes `key` in the background if it exists under
    /// this session's lease, retrying until done or the session ends.
    pub(crate) fn cleanup_unknown(&self, key: String, local: Option<Slot>) {
        let doom = self.doom(&key);
        self.delete_in_background(doom, Target::Unknown(key), local);
    }

    /// Marks `key` doomed until the token is dropped (see the [module docs](self)).
    pub(crate) fn doom(&self, key: &str) -> Running {
        Cleanups::start_for(&self.inner.shared.cleanups, key)
    }

    /// Claims `key` for an acquisition, unless it is doomed (see [`Cleanups::claim`]). A
    /// [leftover](Session::leftover_keys) of a re-attached lease is taken over here, as the
    /// create that adopts it starts, and not before: an acquisition dropped earlier leaves
    /// it listed (until 2026-12-05 `Exclusive::prepare` took the session's key off the list
    /// before a read, and a lock dropped in that read left the old key holding the lock,
    /// listed nowhere). Under the leftovers' lock, so `release_leftovers` either dooms the
    /// key first (and this claim is refused) or no longer finds it listed.
    pub(crate) fn claim(&self, key: &str) -> Option<Owned> {
        let mut left = self.inner.leftovers.lock();
        let owned = Cleanups::claim(&self.inner.shared.cleanups, key)?;
        if let Some(at) = left.iter().position(|(k, _)| k == key) {
            left.remove(at); // its own claim goes only now, with `owned` already held
        }
        Some(owned)
    }

    /// Claims `key` whether or not it is doomed.
    #[cfg_attr(not(leasehold_sim_mutation_adopt), allow(dead_code))]
    pub(crate) fn own(&self, key: &str) -> Owned {
        Cleanups::own(&self.inner.shared.cleanups, key)
    }

    /// Whether the session ended (lost or closed), not merely past its deadline: only then
    /// is a key left to the lease.
    pub(crate) fn is_ended(&self) -> bool {
        self.inner.shared.state.status() != SessionStatus::Alive
    }

    /// Audits the lease one TTL from now (see the [module docs](self)); an audit already
    /// due later covers this one.
    pub(crate) fn schedule_audit(&self) {
        let due = Instant::now() + self.inner.ttl;
        let start = {
            let mut audit = self.inner.shared.audit.lock();
            audit.due = Some(audit.due.map_or(due, |d| d.max(due)));
            !std::mem::replace(&mut audit.running, true)
        };
        if start {
            let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
            let (client, shared, lease) = (self.inner.client.clone(), self.inner.shared.clone(), self.lease_id());
            handle.spawn(audit(client, shared, lease));
        }
    }

    /// Whether a background delete of `key` is pending.
    pub(crate) fn is_doomed(&self, key: &str) -> bool {
        self.inner.shared.cleanups.is_doomed(key)
    }

    /// Completes once no background delete of `key` is pending.
    pub(crate) fn undoomed(&self, key: &str) -> impl Future<Output = ()> + Send + 'static {
        Cleanups::key_idle(&self.inner.shared.cleanups, key)
    }

    /// Runs the delete `target` (doomed by `doom`) in the background; see [`persist`].
    pub(crate) fn delete_in_background(&self, doom: Running, target: Target, local: Option<Slot>) {
        let (backend, shared) = (self.inner.client.backend().clone(), self.inner.shared.clone());
        spawn_delete(backend, shared, self.lease_id(), doom, target, local);
    }
}

fn spawn_delete(
    backend: Arc<dyn Backend>,
    shared: Arc<Shared>,
    lease: LeaseId,
    doom: Running,
    target: Target,
    local: Option<Slot>,
) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(key = target.key(), "no tokio runtime: the key is left to the lease");
        return;
    };
    handle.spawn(async move {
        target.run(&*backend, &shared, lease).await;
        // The key is no longer doomed by the time the next task of the session gets the
        // slot, and the slot is free by the time `Session::settle` returns.
        doom.end_handing_on(local);
        // Planted for scripts/sim.sh: a background task that panics once its work is done,
        // which nothing but the panic itself shows (the simulator must count it).
        #[cfg(leasehold_sim_mutation_panic)]
        panic!("planted: a background delete panics after its work");
    });
}

/// When the next audit is due, and whether its task runs.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    due: Option<Instant>,
    running: bool,
}

/// The audit task: waits until the audit is due (later events push it back), then deletes
/// the keys of the lease that nothing owns, until no audit is due.
async fn audit(client: Client, shared: Arc<Shared>, lease: LeaseId) {
    loop {
        let due = {
            let mut audit = shared.audit.lock();
            match audit.due {
                Some(due) if due > Instant::now() => Some(due),
                Some(_) => {
                    audit.due = None;
                    None
                }
                None => {
                    audit.running = false;
                    return;
                }
            }
        };
        if let Some(due) = due {
            tokio::time::sleep_until(due).await;
            continue; // it may have moved meanwhile
        }
        if shared.state.status() != SessionStatus::Alive {
            shared.audit.lock().running = false;
            return;
        }
        let backend = client.backend().clone();
        match Backoff::default().retry(|| backend.lease_keys(lease)).await {
            Ok(keys) => {
                for key in keys.into_iter().filter(|k| is_recipe_key(client.namespace(), lease, k)) {
                    if let Some(doom) = Cleanups::doom_unowned(&shared.cleanups, &key) {
                        tracing::info!(key, "a key under the session's lease that nothing owns (a request that landed late): deleting it");
                        crate::metrics::orphan_deleted();
                        spawn_delete(backend.clone(), shared.clone(), lease, doom, Target::IfOurs(key), None);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "audit of the lease's keys failed; again later");
                let mut audit = shared.audit.lock();
                let again = Instant::now() + Duration::from_secs(1);
                audit.due = Some(audit.due.map_or(again, |d| d.max(again)));
            }
        }
    }
}

/// What a background delete deletes.
#[derive(Debug)]
pub(crate) enum Target {
    /// The key, only while it has this create revision, with the extra writes.
    Created(String, Revision, Vec<Write>),
    /// The key, if it exists under the session's lease (its revision is not known).
    IfOurs(String),
    /// Like `IfOurs`, for a key whose create's outcome is unknown: the session's fence
    /// moves first, so that the create cannot land after the delete.
    Unknown(String),
}

impl Target {
    fn key(&self) -> &str {
        match self {
            Target::Created(key, ..) | Target::IfOurs(key) | Target::Unknown(key) => key,
        }
    }

    async fn run(self, backend: &dyn Backend, shared: &Shared, lease: LeaseId) {
        match self {
            Target::Created(key, revision, extra) => {
                let held = [Condition::Created { key: key.clone(), revision }];
                let mut writes = vec![Write::Delete { key: key.clone() }];
                writes.extend(extra);
                persist(shared, &key, || backend.write_if(&held, writes.clone())).await;
            }
            Target::Unknown(key) => {
                // Even if the fence could not be moved (a permanent error, the session alive:
                // the delete is still worth trying; the audit looks again later).
                persist(shared, &key, || move_fence(backend, &shared.fence, lease)).await;
                Box::pin(Target::IfOurs(key).run(backend, shared, lease)).await;
            }
            Target::IfOurs(key) => {
                // Read once, then delete that revision only: a retry after a delete whose
                // answer was lost must not delete a newer key of the same name.
                let Some(Some(kv)) = persist(shared, &key, || backend.get(&key)).await else { return };
                if kv.lease == lease {
                    persist(shared, &key, || backend.delete_if_created(&key, kv.create_revision)).await;
                }
            }
        }
    }
}

/// After this long of failures a background delete says so in the log (it keeps trying).
const NOTE_AFTER: Duration = Duration::from_secs(10);

/// Runs `op` until it succeeds, fails permanently, or the session is no longer alive;
/// transient failures are retried with jittered delays of at most 2 s.
async fn persist<T, F, Fut>(shared: &Shared, key: &str, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = tokio::time::Instant::now();
    let mut delays = Backoff::new(Duration::from_millis(50), Duration::from_secs(2)).delays();
    let mut noted = false;
    loop {
        if shared.state.status() != SessionStatus::Alive {
            return None; // the lease takes the key (or, detached, its next owner)
        }
        match op().await {
            Ok(v) => return Some(v),
            // Mutation (scripts/sim.sh): issue 17's bug 4, a background delete tried once.
            #[cfg(leasehold_sim_mutation_cleanup)]
            Err(_) => return None,
            Err(e) if e.is_transient() => {
                if !noted && started.elapsed() >= NOTE_AFTER {
                    noted = true;
                    tracing::warn!(key, error = %e, "background delete still failing; retrying until the session ends");
                }
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(2))).await;
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "background delete failed permanently; the key is left to the lease");
                return None;
            }
        }
    }
}
