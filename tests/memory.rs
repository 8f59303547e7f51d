//! The conformance suite on the embedded backend, plus memory-only fault injection.
mod conformance;

use conformance::mutex as mx;
use conformance::register as rg;
use leasehold::{Client, MemoryBackend, Mutex, Strategy::*};
use std::time::Duration;

macro_rules! on_memory {
    ($($name:ident => |$c:ident| $body:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let $c = &Client::memory();
            $body.await;
        }
    )*};
}

on_memory! {
    mutual_exclusion_pessimistic => |c| mx::mutual_exclusion(c, Pessimistic, 8, 25);
    mutual_exclusion_optimistic => |c| mx::mutual_exclusion(c, Optimistic, 8, 25);
    try_lock_pessimistic => |c| mx::try_lock(c, Pessimistic);
    try_lock_optimistic => |c| mx::try_lock(c, Optimistic);
    timeout_pessimistic => |c| mx::timeout(c, Pessimistic);
    timeout_optimistic => |c| mx::timeout(c, Optimistic);
    cancellation_pessimistic => |c| mx::cancellation(c, Pessimistic, 300);
    cancellation_optimistic => |c| mx::cancellation(c, Optimistic, 300);
    ownership_safe_unlock => |c| mx::ownership_safe_unlock(c);
    lost_session => |c| mx::lost_session(c);
    waiter_loses_its_key_pessimistic => |c| mx::waiter_loses_its_key(c, Pessimistic);
    waiter_loses_its_key_optimistic => |c| mx::waiter_loses_its_key(c, Optimistic);
    reattach => |c| mx::reattach(c);
    bad_input => |c| mx::bad_input(c);
    close_releases => |c| mx::close_releases(c);
}

/// A store that stops answering: renewals fail, and the session is declared lost at its
/// local deadline (sent time of the last renewal + TTL), before the server could have
/// expired the lease. Paused time makes this exact.
#[tokio::test(start_paused = true)]
async fn unreachable_store_loses_the_session_at_its_deadline() {
    let backend = MemoryBackend::new();
    let client = Client::new(backend.clone());
    let ttl = Duration::from_secs(3);
    let s = client.session_builder().ttl(ttl).open().await.unwrap();
    let guard = Mutex::new(&s, "partitioned").unwrap().lock().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // one renewal (at 1 s) succeeded
    let deadline = s.deadline();
    assert!(deadline >= tokio::time::Instant::now().into_std() + Duration::from_millis(1400));
    backend.set_unavailable(true);
    guard.lost().await;
    let now = tokio::time::Instant::now().into_std();
    assert!(now >= deadline, "lost before the deadline");
    assert!(now <= deadline + Duration::from_millis(50), "lost late: {:?}", now - deadline);
    assert!(!guard.is_valid());
}

on_memory! {
    register_mixed_strategies_lose_no_update => |c| rg::mixed_strategies_lose_no_update(c, 12, 20);
    register_adaptive_follows_contention => |c| rg::adaptive_follows_contention(c, 8, 20);
    register_declined_update_writes_nothing => |c| rg::declined_update_writes_nothing(c);
}
