//! What every guard (mutex, permit, read/write lock, leadership) holds: one key created
//! under the session's lease, and the exactly-once release of it.

use crate::backend::{Revision, Write};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::local::release::ReleaseOnce;
use crate::queue::release_retry;
use crate::Session;
use std::future::Future;

/// A held key. Releasing deletes it only if it still has the create revision this
/// acquisition got, so a late or repeated release never deletes a newer acquisition.
#[derive(Debug)]
pub(crate) struct Holding {
    session: Session,
    key: String,
    revision: Revision,
    release: ReleaseOnce,
    local: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Holding {
    pub(crate) fn new(
        session: Session,
        key: String,
        revision: Revision,
        local: Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Self {
        Self { session, key, revision, release: ReleaseOnce::new(), local }
    }

    pub(crate) fn token(&self) -> u64 {
        self.revision as u64
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    pub(crate) fn is_valid(&self) -> bool {
        self.release.is_held() && self.session.is_valid()
    }

    pub(crate) fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.session.lost()
    }

    /// Applies `writes` in the store only while this key still exists with this revision.
    pub(crate) async fn fenced(&self, what: &'static str, writes: Vec<Write>) -> Result<()> {
        if !self.release.is_held() {
            return Err(Error::NotHeld { what, reason: "already released".into() });
        }
        let backend = self.session.client().backend();
        if backend.write_if_held(&self.key, self.revision, writes).await? {
            Ok(())
        } else {
            Err(Error::NotHeld { what, reason: format!("{} no longer exists with token {}", self.key, self.revision) })
        }
    }

    /// Releases now. Idempotent: only the first release (explicit or by drop) deletes.
    pub(crate) async fn release(mut self) -> Result<()> {
        if !self.release.begin() {
            return Ok(());
        }
        let backend = self.session.client().backend().clone();
        let result = release_retry(&*backend, &self.key, self.revision).await;
        self.release.finish();
        self.local.take();
        match result {
            Ok(deleted) => {
                if !deleted {
                    tracing::debug!(key = self.key, "release: key already gone (lease expired?)");
                }
                Ok(())
            }
            // A lost session has no keys left to delete.
            Err(_) if !self.session.is_valid() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Holding {
    /// Releases now like [`release`](Self::release), and applies `extra` in the same
    /// transaction as the delete, only if this acquisition still holds the key (a lock-delay
    /// marker is cleared this way). Retried on transient errors; a retry after an attempt
    /// that did apply finds the key gone and writes nothing.
    pub(crate) async fn release_writing(mut self, extra: Vec<Write>) -> Result<()> {
        if !self.release.begin() {
            return Ok(());
        }
        let backend = self.session.client().backend().clone();
        let mut writes = vec![Write::Delete { key: self.key.clone() }];
        writes.extend(extra);
        let (key, revision) = (self.key.clone(), self.revision);
        let result = Backoff::default().retry(|| backend.write_if_held(&key, revision, writes.clone())).await;
        self.release.finish();
        self.local.take();
        match result {
            Ok(applied) => {
                if !applied {
                    tracing::debug!(key = self.key, "release: key already gone (lease expired?)");
                }
                Ok(())
            }
            Err(_) if !self.session.is_valid() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        if !self.release.begin() {
            return;
        }
        if self.session.check().is_err() {
            // Lost, closed or detached: the key went (or goes) with the lease; a detached
            // session must look crashed, so nothing is deleted on its behalf.
            self.release.finish();
            return;
        }
        let backend = self.session.client().backend().clone();
        let key = std::mem::take(&mut self.key);
        let revision = self.revision;
        let local = self.local.take();
        self.session.spawn_cleanup(async move {
            let _ = release_retry(&*backend, &key, revision).await;
            drop(local);
        });
        self.release.finish();
    }
}
