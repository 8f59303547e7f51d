//! The conformance suite on the embedded backend, plus memory-only fault injection.
mod conformance;

use conformance::lock_delay as ld;
use conformance::mutex as mx;
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

/// Lock-delay on the memory backend with paused time: the checks' lower bounds, and exact
/// upper bounds (time only moves when every task waits, so a delay lasts exactly itself).
mod lock_delay {
    use super::*;

    const DELAY: Duration = Duration::from_secs(15);
    /// Paused time jumps straight to the next timer: anything beyond the delay is a bug.
    const EXACT: Duration = Duration::from_millis(50);

    fn memory() -> (MemoryBackend, Client) {
        let backend = MemoryBackend::new();
        (backend.clone(), Client::new(backend))
    }

    #[tokio::test(start_paused = true)]
    async fn clean_unlock_has_no_delay() {
        for strategy in [Pessimistic, Optimistic] {
            let handoff = ld::clean_unlock_has_no_delay(&memory().1, strategy, DELAY).await;
            assert!(handoff <= EXACT, "{strategy:?}: {handoff:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_delays_the_waiter() {
        for strategy in [Pessimistic, Optimistic] {
            let (backend, client) = memory();
            let waited = ld::expiry_delays_the_waiter(&client, &|l| backend.expire_lease(l), strategy, DELAY).await;
            assert!(waited <= DELAY + EXACT, "{strategy:?}: waited {waited:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_delays_a_newcomer() {
        for strategy in [Pessimistic, Optimistic] {
            let (backend, client) = memory();
            let waited = ld::expiry_delays_a_newcomer(&client, &|l| backend.expire_lease(l), strategy, DELAY).await;
            assert!(waited <= DELAY + EXACT, "{strategy:?}: waited {waited:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_guard_is_not_clean() {
        ld::dropped_guard_is_not_clean(&memory().1, DELAY).await;
    }

    #[tokio::test(start_paused = true)]
    async fn session_lost_during_the_delay() {
        let (backend, client) = memory();
        ld::session_lost_during_the_delay(&client, &|l| backend.expire_lease(l), DELAY).await;
    }

    /// The marker lives in the reserved namespace, outside every lock's prefix, and a
    /// clean unlock removes it; a namespace keeps it inside.
    #[tokio::test(start_paused = true)]
    async fn marker_key_is_reserved_and_cleared() {
        let (_, client) = memory();
        let client = client.with_namespace("app/");
        let s = client.session().await.unwrap();
        let m = Mutex::new(&s, "jobs").unwrap().with_lock_delay(DELAY);
        let g = m.lock().await.unwrap();
        let marker = "app/~leasehold/lock-delay/jobs";
        let kv = client.backend().get(marker).await.unwrap().expect("the holder recorded itself");
        assert_eq!(String::from_utf8(kv.value).unwrap(), g.fencing_token().to_string());
        assert_eq!(kv.lease, 0, "the marker must outlive the holder's lease");
        g.unlock().await.unwrap();
        assert!(client.backend().get(marker).await.unwrap().is_none(), "a clean unlock clears the marker");
        assert!(Mutex::new(&s, "jobs").unwrap().lock_delay().is_none());
        assert!(m.clone().with_lock_delay(Duration::ZERO).lock_delay().is_none());
    }
}
