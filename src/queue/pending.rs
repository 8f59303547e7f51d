//! Cancellation-safe creation of a queue key ([`Pending`]) and the session's local slot
//! that one acquisition per key per session holds while it creates and holds the key.

use super::{with_deadline, Wait};
use crate::backend::{Backend, Condition, CreateRequest, CreateResponse, KeyValue, Revision, Write};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::local::waiter_queue::{Slot, WaiterQueue};
use crate::Session;

/// Takes this session's local queue slot for `key` (one acquisition per key per session at
/// a time), waiting as `wait` allows. `None` if another task of the session holds it and
/// `wait` ran out (at once for `Wait::No`).
pub(crate) async fn local_slot(session: &Session, key: &str, wait: Wait) -> Option<Slot> {
    let queue = session.local_queue(key);
    match wait {
        Wait::No => WaiterQueue::try_acquire(&queue),
        _ => with_deadline(wait, WaiterQueue::acquire(&queue)).await,
    }
}

/// A key being created for an acquisition; deletes it in the background if dropped.
#[derive(Debug)]
pub(crate) struct Pending {
    session: Session,
    key: String,
    stage: Stage,
    local: Option<Slot>,
}

#[derive(Debug)]
enum Stage {
    InFlight(tokio::task::JoinHandle<Result<CreateResponse>>),
    Exists(Revision),
    Done,
}

impl Pending {
    /// Sends `req` (in its own task). `local` is the session's local queue slot for the key;
    /// it is released only after the key is gone or handed to a guard.
    pub(crate) fn start(session: &Session, req: CreateRequest, local: Option<Slot>) -> Self {
        let backend = session.client().backend().clone();
        let key = req.key.clone();
        // Retrying is safe: the key is this session's own, so a retry after an attempt
        // that did write finds the key already there (with this lease) and reports it.
        let task = tokio::spawn(async move { Backoff::default().retry(|| backend.create(req.clone())).await });
        Self { session: session.clone(), key, stage: Stage::InFlight(task), local }
    }

    /// Like [`start`](Self::start) for a key created by a conditional write instead
    /// (`key` absent must be among `conditions`, and a put of `key` under the session's
    /// lease among `writes`): a register update that writes its value, releases its lock
    /// and queues again in one transaction ([`parked`]). Not retried — the write is not
    /// idempotent — so a transport error leaves the outcome unknown and the key is cleaned
    /// up like any other whose create failed. The response says `created` when the
    /// conditions held; it carries no head.
    pub(crate) fn write(
        session: &Session,
        key: String,
        conditions: Vec<Condition>,
        writes: Vec<Write>,
        local: Option<Slot>,
    ) -> Self {
        let backend = session.client().backend().clone();
        let (lease, created_key) = (session.lease_id(), key.clone());
        let task = tokio::spawn(async move {
            let applied = backend.write_if(&conditions, writes).await?;
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
            })
        });
        Self { session: session.clone(), key, stage: Stage::InFlight(task), local }
    }

    /// Waits for the create RPC's outcome.
    pub(crate) async fn response(&mut self) -> Result<CreateResponse> {
        let Stage::InFlight(task) = &mut self.stage else {
            return Err(Error::Store("pending: response already taken".into()));
        };
        let outcome = task.await.map_err(|e| Error::Store(format!("create task failed: {e}")));
        let resp = match outcome {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) | Err(e) => {
                // Not known to exist; a transient failure may still have written it.
                self.stage = Stage::Done;
                if e.is_transient() {
                    self.cleanup_unknown();
                }
                return Err(e);
            }
        };
        self.stage = match &resp.mine {
            Some(kv) if kv.lease == self.session.lease_id() || kv.lease == 0 => Stage::Exists(kv.create_revision),
            _ => Stage::Done,
        };
        Ok(resp)
    }

    /// Keeps the key: the caller now owns it (as a guard) and must release it.
    pub(crate) fn keep(mut self) -> Option<Slot> {
        self.stage = Stage::Done;
        self.local.take()
    }

    /// Deletes the key now (a failed try, a timeout) and waits for it. If this future is
    /// dropped, or the delete fails, the key is still [`Stage::Exists`] and `Drop` deletes
    /// it in the background.
    pub(crate) async fn abandon(mut self) -> Result<()> {
        if let Stage::Exists(rev) = self.stage {
            let backend = self.session.client().backend().clone();
            release_retry(&*backend, &self.key, rev).await?;
            self.stage = Stage::Done;
        }
        Ok(())
    }

    /// After a failed RPC whose effect is unknown: delete the key if it is ours.
    fn cleanup_unknown(&mut self) {
        let backend = self.session.client().backend().clone();
        let key = self.key.clone();
        let lease = self.session.lease_id();
        let local = self.local.take();
        self.session.spawn_cleanup(async move {
            if let Ok(Some(kv)) = backend.get(&key).await {
                if kv.lease == lease {
                    let _ = release_retry(&*backend, &key, kv.create_revision).await;
                }
            }
            drop(local);
        });
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let backend = self.session.client().backend().clone();
        let key = std::mem::take(&mut self.key);
        let local = self.local.take();
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Done => {}
            Stage::Exists(rev) => self.session.spawn_cleanup(async move {
                let _ = release_retry(&*backend, &key, rev).await;
                drop(local);
            }),
            Stage::InFlight(task) => {
                let lease = self.session.lease_id();
                self.session.spawn_cleanup(async move {
                    if let Ok(Ok(resp)) = task.await {
                        if let Some(kv) = resp.mine.filter(|kv| kv.lease == lease) {
                            let _ = release_retry(&*backend, &key, kv.create_revision).await;
                        }
                    }
                    drop(local);
                })
            }
        }
    }
}

/// Ownership-safe delete, retried on transient errors. True if this call deleted the key.
pub(crate) async fn release_retry(backend: &dyn Backend, key: &str, create_revision: Revision) -> Result<bool> {
    let policy = Backoff::default();
    policy.retry(|| backend.delete_if_created(key, create_revision)).await
}
