//! Helpers of the safety regression tests (`tests/safety.rs`, `tests/session_end.rs`): a
//! client behind the fault-injecting decorator, a second client without faults, and
//! waiting on paused time. Each test file declares `mod faulty` (`support/faulty.rs`) too.

use crate::faulty::{Faults, Faulty};
use leasehold::backend::Backend;
use leasehold::{Client, MemoryBackend};
use std::sync::Arc;

/// A client whose calls go through a fault plan of its own.
pub fn faulty(store: &MemoryBackend) -> (Client, Faults) {
    let faults = Faults::new();
    (Client::new(Faulty::new(Arc::new(store.clone()), faults.clone())), faults)
}

/// A second client on the same store, without faults.
pub async fn other_session(store: &MemoryBackend) -> leasehold::Session {
    Client::new(store.clone()).session().await.unwrap()
}

/// Yields until `done()` (other tasks run meanwhile; paused time does not move).
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never: {what}");
}

/// The keys under `prefix` in the store.
pub async fn keys(store: &MemoryBackend, prefix: &str) -> Vec<String> {
    store.range_prefix(prefix, 0).await.unwrap().0.into_iter().map(|kv| kv.key).collect()
}
