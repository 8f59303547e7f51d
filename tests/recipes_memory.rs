//! The recipe checks of `tests/conformance/recipes.rs`, on the embedded memory backend.

#[path = "conformance/recipes.rs"]
mod recipes;

use leasehold::{Client, MemoryBackend};
use recipes::Mix;

fn memory() -> (MemoryBackend, Client) {
    let backend = MemoryBackend::new();
    (backend.clone(), Client::new(backend))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_limit_holds_under_contention() {
    recipes::semaphore_limit_holds_under_contention(&memory().1, Mix::Queued).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_limit_holds_with_mixed_strategies() {
    recipes::semaphore_limit_holds_under_contention(&memory().1, Mix::Mixed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_admits_in_arrival_order() {
    recipes::semaphore_admits_in_arrival_order(&memory().1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_crashed_holder_permits_return() {
    let (backend, client) = memory();
    recipes::semaphore_crashed_holder_permits_return(&client, &|lease| backend.expire_lease(lease)).await;
}

#[tokio::test]
async fn semaphore_permit_count_mismatch() {
    recipes::semaphore_permit_count_mismatch(&memory().1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_try_timeout_cancel_leave_nothing() {
    recipes::semaphore_try_timeout_cancel_leave_nothing(&memory().1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwlock_readers_share_writer_excludes() {
    recipes::rwlock_readers_share_writer_excludes(&memory().1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwlock_exclusion_under_contention() {
    recipes::rwlock_exclusion_under_contention(&memory().1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwlock_writer_not_starved_by_later_readers() {
    recipes::rwlock_writer_not_starved_by_later_readers(&memory().1).await;
}

#[tokio::test]
async fn election_campaign_leader_proclaim_resign() {
    recipes::election_campaign_leader_proclaim_resign(&memory().1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_failover_after_resign() {
    recipes::election_failover_after_resign(&memory().1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_failover_after_lease_expiry() {
    let (backend, client) = memory();
    recipes::election_failover_after_lease_expiry(&client, &|lease| backend.expire_lease(lease)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_observe_reports_every_change() {
    recipes::election_observe_reports_every_change(&memory().1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_observe_survives_a_broken_watch() {
    let (backend, client) = memory();
    recipes::election_observe_survives_a_broken_watch(&client, &|cut| backend.set_unavailable(cut)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_tokens_increase_across_terms() {
    recipes::election_tokens_increase_across_terms(&memory().1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwlock_and_election_cancel_leave_nothing() {
    recipes::rwlock_and_election_cancel_leave_nothing(&memory().1).await;
}

/// Guards can move between tasks and threads, and the futures can be spawned.
#[test]
fn bounds() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<leasehold::Semaphore>();
    send_sync::<leasehold::Permit>();
    send_sync::<leasehold::RwLock>();
    send_sync::<leasehold::ReadGuard>();
    send_sync::<leasehold::WriteGuard>();
    send_sync::<leasehold::Election>();
    send_sync::<leasehold::Leadership>();
    send_sync::<leasehold::LeaderInfo>();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let session = Client::memory().session().await.unwrap();
        let election = leasehold::Election::new(&session, "bounds").unwrap();
        let mut observer = election.observe();
        send(&observer);
        send(&observer.changed());
        send(&election.campaign("x"));
        send(&leasehold::Semaphore::new(&session, "bounds-sem", 1).unwrap().acquire());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_one_campaign_per_session() {
    recipes::election_one_campaign_per_session(&memory().1).await;
}
