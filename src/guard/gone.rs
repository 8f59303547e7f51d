//! A guard told when its own key goes while its session lives: an operator revoked it
//! ([`Client::revoke`](crate::Client::revoke)), or something else deleted it. The session's
//! loss covers the lease's end; this covers the key's.
//!
//! The guard follows its key on the client's shared deletes-only feed of the name's prefix
//! (the one its queue waiters use): no watch of its own, and nothing at all until
//! [`lost`](crate::MutexGuard::lost) is first polled.

use crate::backend::Revision;
use crate::Session;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Completes once the key `(key, rev)` is gone (deleted, or created again with another
/// revision) while its lease lives, and then sets `gone`. Never completes while the key
/// exists, nor when its lease went with it (the caller waits for the session's loss
/// besides). A feed that fails is opened again after a pause.
pub(crate) async fn key_gone(session: Session, key: String, rev: Revision, gone: Arc<AtomicBool>) {
    let client = session.client();
    client.until_gone(&key, rev).await;
    // The key goes with its lease too (expired, revoked): that is the session's loss, which
    // the session reports (as `SessionLost`); wait for it instead. A lease that lives on
    // means the key alone was deleted. A failed check says nothing about the lease, but the
    // key is gone all the same.
    if let Ok(None) = client.backend().lease_ttl(session.lease_id()).await {
        return std::future::pending().await;
    }
    gone.store(true, Ordering::Release);
}
