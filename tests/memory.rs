//! The conformance suite on the embedded backend, plus memory-only fault injection.
#[macro_use]
mod conformance;

use conformance::lock_delay as ld;
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
    el::election_observe_survives_a_broken_watch(&client, &|cut| backend.set_unavailable(cut)).await;
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
        let guard = Mutex::new(&session, "bounds-unlock").unwrap().lock().await.unwrap();
        send(&guard.unlock()); // a release can be spawned too
        let permit = leasehold::Semaphore::new(&session, "bounds-sem2", 1).unwrap().acquire().await.unwrap();
        send(&permit.release());
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
    async fn election_expiry_delays_the_next_leader() {
        let (backend, client) = memory();
        let waited = ld::election_expiry_delays_the_next_leader(&client, &|l| backend.expire_lease(l), DELAY).await;
        assert!(waited <= DELAY + EXACT, "waited {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_guard_is_not_clean() {
        ld::dropped_guard_is_not_clean(&memory().1, DELAY).await;
    }

    #[tokio::test(start_paused = true)]
    async fn revoked_during_the_delay() {
        ld::revoked_during_the_delay(&memory().1, DELAY).await;
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

/// A grouped update polled outside a tokio runtime fails with a clear error instead of
/// panicking (its combiner is a task of the caller's runtime), and leaves the handle
/// working; a combiner whose runtime shuts down answers the updates still waiting, and the
/// next update starts a new combiner.
#[test]
fn grouped_update_outside_a_runtime_and_after_its_runtime_ended() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (session, reg) = rt.block_on(async {
        let s = Client::memory().session().await.unwrap();
        let reg = leasehold::Register::new(&s, "grp-rt").unwrap();
        (s, reg)
    });
    let outside = reg.clone();
    let err = std::thread::spawn(move || futures::executor::block_on(outside.update_grouped(|_| Some(b"x".to_vec()))))
        .join()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, leasehold::Error::InvalidArgument { .. }), "{err}");
    // A runtime whose combiner is parked mid-batch is dropped: its waiting callers are
    // answered (here: none remain but the one whose future ends with the runtime), and a
    // later update on another runtime is served.
    let other = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let short = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let reg2 = reg.clone();
    // The combiner is spawned on `short`, which is never driven again after this poll.
    let mut waiting = Box::pin(reg2.update_grouped(|_| Some(b"1".to_vec())));
    let _ = short.block_on(async { futures::poll!(&mut waiting) });
    drop(short); // cancels the combiner task: the waiting update is answered
    let answered = other.block_on(async { tokio::time::timeout(Duration::from_secs(5), waiting).await });
    let answered = answered.expect("the caller was answered when the combiner's runtime ended");
    assert!(answered.is_err(), "{answered:?}");
    let served = other.block_on(reg.update_grouped(|_| Some(b"2".to_vec()))).unwrap();
    assert!(served.written, "a new combiner serves later updates");
    other.block_on(session.close()).unwrap();
}

/// Two adaptive tasks of one client on a current-thread runtime (what `#[tokio::test]`
/// gives): their updates are short, so the client measures compare-and-swap cheaper than
/// its queue and uses it, as on a multi-threaded one (`src/crowd.rs`). On one thread a
/// task's parked queue place was, every other update, first already when its follower read
/// the queue, after the other task's write and its next queue key: that admission, at the
/// read's revision, was counted as another client's. With half the admissions "foreign",
/// compare-and-swap was never measured: every update queued, at a sixth of optimistic's
/// rate.
#[tokio::test]
async fn adaptive_tasks_on_one_thread_measure_compare_and_swap() {
    use leasehold::{Register, Strategy};
    use std::time::Instant;
    let client = Client::memory();
    let started = Instant::now();
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let s = client.session().await.unwrap();
                let r = Register::new(&s, "one-thread").unwrap().with_strategy(Strategy::Adaptive);
                // (queued, all) in the second half of the run
                let (mut queued, mut all) = (0_u64, 0_u64);
                while started.elapsed() < Duration::from_millis(600) {
                    let u = r.update(|v| Some(v.map_or(1, |v| v[0].wrapping_add(1)).to_be_bytes().to_vec())).await;
                    let u = u.unwrap();
                    if started.elapsed() > Duration::from_millis(300) {
                        queued += u64::from(u.token.is_some());
                        all += 1;
                    }
                }
                s.close().await.unwrap();
                (queued, all)
            })
        })
        .collect();
    let (mut queued, mut all) = (0, 0);
    for t in tasks {
        let (q, a) = t.await.unwrap();
        (queued, all) = (queued + q, all + a);
    }
    assert!(all > 0);
    assert!(queued * 2 < all, "{queued} of {all} updates queued: the client never took compare-and-swap");
}

/// A lease granted after the store learned its soonest expiry, and expiring before it,
/// still expires on time: its key is gone at its deadline, read by a call or deleted by
/// the reaper. (The store skips its scan of all leases until the soonest expiry it knows,
/// which a new lease lowers.)
#[tokio::test(start_paused = true)]
async fn a_shorter_lease_granted_later_expires_on_time() {
    use leasehold::backend::{Backend, Write};
    let backend = MemoryBackend::new();
    let long = backend.grant_lease(Duration::from_secs(60)).await.unwrap();
    let put = |key: &str, lease| Write::Put { key: key.into(), value: b"v".to_vec(), lease: Some(lease) };
    backend.transact(&[], vec![put("long", long.id)], &[]).await.unwrap();
    let short = backend.grant_lease(Duration::from_secs(1)).await.unwrap();
    backend.transact(&[], vec![put("short", short.id)], &[]).await.unwrap();
    let mut deletes = backend.watch_prefix("short").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(backend.get("short").await.unwrap().is_none(), "the 1 s lease's key outlived it");
    assert!(backend.get("long").await.unwrap().is_some());
    let events = tokio::time::timeout(Duration::from_secs(1), deletes.next()).await;
    assert!(matches!(&events, Ok(Ok(e)) if !e.is_empty()), "no delete was published: {events:?}");
}
