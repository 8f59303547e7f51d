//! The conformance suite on the embedded backend, plus memory-only fault injection.
#[macro_use]
mod conformance;

use leasehold::{Client, MemoryBackend, Mutex};
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

conformance_suite!(on_memory);

/// An observer keeps working across a cut connection (every watch broken at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_observe_survives_a_broken_watch() {
    let backend = MemoryBackend::new();
    let client = Client::new(backend.clone());
    rc::election_observe_survives_a_broken_watch(&client, &|cut| backend.set_unavailable(cut)).await;
}

/// Guards can move between tasks and threads, and the futures can be spawned.
#[test]
fn bounds() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<leasehold::Mutex>();
    send_sync::<leasehold::MutexGuard>();
    send_sync::<leasehold::Semaphore>();
    send_sync::<leasehold::Permit>();
    send_sync::<leasehold::RwLock>();
    send_sync::<leasehold::ReadGuard>();
    send_sync::<leasehold::WriteGuard>();
    send_sync::<leasehold::Election>();
    send_sync::<leasehold::Leadership>();
    send_sync::<leasehold::LeaderInfo>();
    send_sync::<leasehold::Register>();
    send_sync::<leasehold::Session>();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let session = Client::memory().session().await.unwrap();
        let election = leasehold::Election::new(&session, "bounds").unwrap();
        let mut observer = election.observe();
        send(&observer);
        send(&observer.changed());
        send(&election.campaign("x"));
        send(&leasehold::Semaphore::new(&session, "bounds-sem", 1).unwrap().acquire());
        send(&Mutex::new(&session, "bounds-mx").unwrap().lock());
        send(&leasehold::Register::new(&session, "bounds-reg").unwrap().update(|_| None));
    });
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
