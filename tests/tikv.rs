//! The conformance suite on the TiKV backend, through the real `tikv-client` talking to the
//! in-process PD + TiKV test server (crate `tikv-test-server`, one per test), plus
//! TiKV-only tests: lease expiry judged on TSO time, the change-log watch, several and
//! unreachable PD endpoints, a cut-off cluster, and the pessimistic-transaction lock.
#[macro_use]
mod conformance;

use leasehold::backend::tikv::{TikvBackend, TxnLock};
use leasehold::backend::{Backend, CreateRequest, Precondition, WatchEvent};
use leasehold::{Client, Error, FencedResource, Mutex, TikvConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tikv_test_server::TestServer;

fn config(server: &TestServer) -> TikvConfig {
    TikvConfig::new(server.pd_endpoints())
}

async fn client(server: &TestServer) -> Client {
    Client::tikv(config(server)).await.expect("connect to the test server")
}

macro_rules! on_tikv {
    ($($name:ident => |$c:ident| $body:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let server = TestServer::start().await;
            let $c = &client(&server).await;
            $body.await;
            drop(server);
        }
    )*};
}

conformance_suite!(on_tikv);

/// The observer resynchronises after the cluster stopped answering for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_observe_survives_a_cut_cluster() {
    let server = TestServer::start().await;
    let client = client(&server).await;
    el::election_observe_survives_a_broken_watch(&client, &|cut| server.set_unavailable(cut)).await;
}

async fn wait_event(watch: &mut Box<dyn leasehold::backend::WatchStream>) -> Vec<WatchEvent> {
    tokio::time::timeout(mx::SOON, watch.next()).await.expect("an event").expect("watch alive")
}

/// A lease that is not renewed expires on the cluster's (TSO) clock: its key reads as
/// absent once the TTL has passed, and the reaper deletes it with a delete event, without
/// anyone touching the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrenewed_lease_expires_and_watchers_see_the_delete() {
    let server = TestServer::start().await;
    let backend = TikvBackend::connect(config(&server).reap_interval(Duration::from_millis(100))).await.unwrap();
    // Before the grant's request: the lease runs from a timestamp the grant takes after it,
    // so its key cannot go sooner than one TTL from here (taken after the grant and the
    // watch, the bound had to allow their round trips).
    let granted = Instant::now();
    let lease = backend.grant_lease(Duration::from_secs(1)).await.unwrap();
    assert_eq!(lease.ttl, Duration::from_secs(1));
    let mut watch = backend.watch_prefix("exp/").await.unwrap();
    let req = |key: &str, lease| CreateRequest {
        key: key.into(),
        value: b"v".to_vec(),
        lease,
        precondition: Precondition::KeyAbsent,
        prefix: "exp/".into(),
        head_limit: 0,
        replaces: None,
        read: None,
        fence: None,
    };
    let created = backend.create(req("exp/a", lease.id)).await.unwrap();
    assert!(created.created);
    assert_eq!(wait_event(&mut watch).await, vec![WatchEvent::Put(created.mine.clone().unwrap())]);
    let deleted = wait_event(&mut watch).await;
    // 10 ms below the TTL: the cluster's clock is the wall clock, which NTP may slew
    // against the monotonic one by up to 0.05 %.
    assert!(granted.elapsed() >= Duration::from_millis(990), "deleted before its TTL: {:?}", granted.elapsed());
    match deleted.as_slice() {
        [WatchEvent::Delete { key, revision }] => {
            assert_eq!(key, "exp/a");
            assert!(*revision > created.revision);
        }
        other => panic!("expected one delete, got {other:?}"),
    }
    assert!(backend.get("exp/a").await.unwrap().is_none());
    assert_eq!(backend.lease_ttl(lease.id).await.unwrap(), None);
    let mut keeper = backend.keep_alive(lease.id).await.unwrap();
    assert!(matches!(keeper.renew().await, Err(Error::LeaseNotFound { .. })));
}

/// Before any reaper runs, a key under an expired lease is already absent for reads and
/// for conditional writes; the write that meets it reaps it first, in a revision of its
/// own, so a watcher sees the delete before the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_absent_before_the_reaper_runs() {
    let server = TestServer::start().await;
    let backend = TikvBackend::connect(config(&server).reap_interval(Duration::from_secs(3600))).await.unwrap();
    let short = backend.grant_lease(Duration::from_secs(1)).await.unwrap();
    let long = backend.grant_lease(Duration::from_secs(60)).await.unwrap();
    let req = |lease| CreateRequest {
        key: "lazy/k".into(),
        value: Vec::new(),
        lease,
        precondition: Precondition::KeyAbsent,
        prefix: "lazy/".into(),
        head_limit: 0,
        replaces: None,
        read: None,
        fence: None,
    };
    let first = backend.create(req(short.id)).await.unwrap();
    assert!(first.created);
    assert!(!backend.create(req(long.id)).await.unwrap().created, "held while the lease lives");
    let mut watch = backend.watch_prefix("lazy/").await.unwrap();
    let mut expired = false;
    for _ in 0..100 {
        if backend.lease_ttl(short.id).await.unwrap().is_none() {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(expired, "the lease never expired");
    assert!(backend.get("lazy/k").await.unwrap().is_none(), "an expired key reads as absent");
    assert!(backend.range_prefix("lazy/", 0).await.unwrap().0.is_empty());
    let second = backend.create(req(long.id)).await.unwrap();
    assert!(second.created, "the expired key does not block the create");
    let mine = second.mine.unwrap();
    assert!(mine.create_revision > first.mine.unwrap().create_revision);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(wait_event(&mut watch).await);
    }
    assert!(matches!(&seen[0], WatchEvent::Delete { key, .. } if key == "lazy/k"));
    assert_eq!(seen[1], WatchEvent::Put(mine.clone()));
    assert!(seen[0].revision() < seen[1].revision());
    assert_eq!(second.revision, mine.mod_revision);
}

/// The watch delivers every revision under its prefix, in order, one batch per revision,
/// with the revisions a read reports, even when several change between two polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_every_revision_in_order() {
    let server = TestServer::start().await;
    // Slow polls: many revisions land between two of them.
    let backend =
        TikvBackend::connect(config(&server).poll_interval(Duration::from_millis(300), Duration::from_millis(300)))
            .await
            .unwrap();
    let other = TikvBackend::connect(config(&server)).await.unwrap(); // its writes do not poke the poller
    let lease = other.grant_lease(Duration::from_secs(60)).await.unwrap().id;
    let mut watch = backend.watch_prefix("w/").await.unwrap();
    let start = watch.start_revision();
    let mut revisions = Vec::new();
    for i in 0..20 {
        let key = format!("w/{}", i % 4);
        let current = other.get(&key).await.unwrap().map(|kv| kv.mod_revision);
        let r = other.compare_and_swap(&key, current, i.to_string().into_bytes(), Some(lease)).await.unwrap();
        assert!(r.swapped);
        revisions.push(r.revision);
        other.compare_and_swap("elsewhere", None, Vec::new(), None).await.unwrap();
        // not under w/
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let batch = wait_event(&mut watch).await;
        assert!(batch.iter().all(|e| e.revision() == batch[0].revision()), "one revision per batch");
        seen.extend(batch);
    }
    assert_eq!(seen.iter().map(WatchEvent::revision).collect::<Vec<_>>(), revisions);
    assert!(revisions[0] > start);
    let values: Vec<String> = seen
        .iter()
        .map(|e| match e {
            WatchEvent::Put(kv) => String::from_utf8(kv.value.clone()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(values, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
}

/// A backend whose poller does not poll of its own accord during a test (every 60 s): only
/// its own writes that one of its watches wants wake it. Its reaper, which scans too, waits
/// as long.
async fn poked_only(server: &TestServer) -> TikvBackend {
    let slow = Duration::from_secs(60);
    TikvBackend::connect(config(server).poll_interval(slow, slow).reap_interval(slow)).await.unwrap()
}

/// A local write pokes the poller only when one of the backend's watches wants it: writes
/// elsewhere read no change log (on the TiKV test server's flash sale, one poll per write
/// for a queue's feed kept open cost a fifth of the writes per second), and a write under
/// a watched prefix still comes at once, not at the next turn of a slow poller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_watched_local_write_pokes_the_poller() {
    let server = TestServer::start().await;
    let backend = poked_only(&server).await;
    let mut watch = backend.watch_prefix("w/").await.unwrap();
    let first = backend.compare_and_swap("w/a", None, b"0".to_vec(), None).await.unwrap();
    assert_eq!(wait_event(&mut watch).await[0].revision(), first.revision, "a watched write comes at once");
    let scans = server.calls("KvScan");
    for i in 0..20 {
        let current = backend.get("elsewhere").await.unwrap().map(|kv| kv.mod_revision);
        assert!(
            backend.compare_and_swap("elsewhere", current, i.to_string().into_bytes(), None).await.unwrap().swapped
        );
    }
    // One poll may still come from a wake-up stored while the first event was delivered
    // (the watch's own poke and the write's, one of them spent on an earlier poll).
    let polls = server.calls("KvScan") - scans;
    assert!(polls <= 1, "20 writes nobody watches read the change log {polls} times");
    let second = backend.compare_and_swap("w/a", Some(first.revision), b"1".to_vec(), None).await.unwrap();
    assert_eq!(wait_event(&mut watch).await[0].revision(), second.revision, "and so does the next");
}

/// Several PD endpoints: any reachable one will do; none reachable is Error::Connect within
/// the connect timeout; an unknown scheme is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_endpoints_reachable_and_not() {
    let server = TestServer::start_with(2).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut endpoints = vec![format!("127.0.0.1:{closed}")];
    endpoints.extend(server.pd_endpoints());
    let url = format!("tikv://{}", endpoints.join(","));
    let client = Client::connect(&url).await.expect("one dead endpoint does not matter");
    let s = client.session().await.unwrap();
    Mutex::new(&s, "several-pd").unwrap().lock().await.unwrap().unlock().await.unwrap();
    for endpoints in [vec![format!("127.0.0.1:{closed}")], vec!["127.0.0.1:1".into(), format!("127.0.0.1:{closed}")]] {
        let timeout = Duration::from_millis(800);
        let started = Instant::now();
        let r = Client::tikv(TikvConfig::new(endpoints).connect_timeout(timeout)).await;
        assert!(matches!(r, Err(Error::Connect { .. })), "{r:?}");
        assert!(started.elapsed() < timeout * 4, "took {:?}", started.elapsed());
        // The cause is kept: Error -> Cause -> the TiKV client's error (or, when nothing
        // answered in time, the timeout's).
        let e = r.err().unwrap();
        let cause = std::error::Error::source(&e).expect("Error::Connect has a source");
        let under = cause.source().expect("the underlying error is kept");
        assert!(
            under.downcast_ref::<tikv_client::Error>().is_some()
                || under.downcast_ref::<tokio::time::error::Elapsed>().is_some(),
            "{under:?}"
        );
    }
    let r = Client::tikv(TikvConfig::new(Vec::<String>::new())).await;
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
}

/// A cluster that stops answering: calls fail with Unavailable within the request timeout,
/// and the session is lost at (not before) its local deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lost_when_the_cluster_is_cut_off() {
    let server = TestServer::start().await;
    let client = Client::tikv(config(&server).request_timeout(Duration::from_millis(500))).await.unwrap();
    let s = client.session_builder().ttl(Duration::from_secs(2)).open().await.unwrap();
    let guard = Mutex::new(&s, "cut").unwrap().lock().await.unwrap();
    server.set_unavailable(true);
    let started = Instant::now();
    let r = client.backend().get("anything").await;
    assert!(matches!(r, Err(Error::Unavailable(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    tokio::time::timeout(mx::SOON, guard.lost()).await.expect("lost() fired");
    assert!(!guard.is_valid());
    assert!(Instant::now() >= s.deadline(), "lost before the local deadline");
}

/// The pessimistic-transaction lock excludes, hands over to waiters, and its TSO tokens
/// strictly increase across holders; it leaves no TiKV lock behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_lock_mutual_exclusion_and_tokens() {
    let server = TestServer::start().await;
    let backend = TikvBackend::connect(config(&server)).await.unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let fence = Arc::new(FencedResource::new(Vec::<u64>::new()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (backend, inside, fence) = (backend.clone(), inside.clone(), fence.clone());
        tasks.push(tokio::spawn(async move {
            let lock = TxnLock::new(&backend, "txn-mx").unwrap();
            for _ in 0..5 {
                let g = lock.lock().await.unwrap();
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                let token = g.fencing_token();
                fence.apply(token, |seen| seen.push(token)).expect("a holder's token is never stale");
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                g.unlock().await.unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(mx::SOON, t).await.expect("bounded").unwrap();
    }
    let seen = fence.read(|s| s.clone());
    assert_eq!(seen.len(), 20);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(server.lock_count(), 0, "a TiKV lock was left behind");
    assert!(server.calls("KvPessimisticLock") >= 20);
}

/// A waiting TxnLock times out while the lock is held, a cancelled lock() leaves nothing
/// behind, and a dropped guard frees the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_lock_timeout_cancel_and_drop() {
    let server = TestServer::start().await;
    let backend = TikvBackend::connect(config(&server)).await.unwrap();
    let lock = TxnLock::new(&backend, "txn-misc").unwrap();
    assert!(matches!(TxnLock::new(&backend, "a/b"), Err(Error::InvalidName { .. })));
    let held = lock.lock().await.unwrap();
    let started = Instant::now();
    let r = lock.lock_timeout(Duration::from_millis(300)).await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let cancelled = tokio::time::timeout(Duration::from_millis(100), lock.lock()).await;
    assert!(cancelled.is_err(), "acquired a held lock");
    let token = held.fencing_token();
    drop(held); // rolled back in the background
    let next = tokio::time::timeout(mx::SOON, lock.lock()).await.expect("freed by the drop").unwrap();
    assert!(next.fencing_token() > token);
    next.unlock().await.unwrap();
    // The cancelled and timed-out acquisitions left no lock either.
    let mut clean = false;
    for _ in 0..100 {
        if server.lock_count() == 0 {
            clean = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(clean, "{} TiKV locks left behind", server.lock_count());
}

/// The change log keeps a bounded number of revisions: a watch that fell behind the
/// compacted part gets an error (the view resynchronises), and a new watch works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watch_breaks_after_log_compaction() {
    let server = TestServer::start().await;
    let slow = poked_only(&server).await;
    let busy = TikvBackend::connect(config(&server).log_retention(10)).await.unwrap();
    let mut lagging = slow.watch_prefix("lag/").await.unwrap();
    let mut rev = None;
    for i in 0..300 {
        let r = busy.compare_and_swap("lag-counter", rev, i.to_string().into_bytes(), None).await.unwrap();
        assert!(r.swapped);
        rev = Some(r.revision);
    }
    // Compaction runs in the background after revision 256; wake the slow poller with a
    // write of its own until it notices (a write one of its watches wants: only those
    // wake it).
    let _pokes = slow.watch_prefix("poke-").await.unwrap();
    let mut broke = false;
    for i in 0..50 {
        slow.compare_and_swap(&format!("poke-{i}"), None, Vec::new(), None).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(200), lagging.next()).await {
            Ok(Err(Error::Unavailable(msg))) => {
                assert!(msg.message().contains("compacted"), "{msg}");
                broke = true;
                break;
            }
            Ok(other) => panic!("a lagging watch must not deliver: {other:?}"),
            Err(_) => {}
        }
    }
    assert!(broke, "the lagging watch never broke");
    let mut fresh = slow.watch_prefix("lag/").await.unwrap();
    let made = slow.compare_and_swap("lag/a", None, b"x".to_vec(), None).await.unwrap();
    assert_eq!(wait_event(&mut fresh).await, vec![WatchEvent::Put(made.current.unwrap())]);
}

/// Issue 17, bug 3: a renewal that started before its lease expired must not commit after
/// a read that left the lease's keys out as expired. Two backends (two processes): A owns
/// the lease and renews it; B reads. The test server holds A's renewal between its reads
/// and its commit while the lease expires and B reads, then lets it go.
///
/// Before the fix B's read answered without the key and the renewal then committed (it
/// started a second before the expiry, so it extended the lease past the read): the key
/// was back, with no write that created it, after a reader had been told it was gone — a
/// reader that could have admitted another holder on that. Now B's read reaps the lease
/// first, so the two conflict and only one commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_cannot_revive_a_lease_a_read_saw_expire() {
    const TTL: Duration = Duration::from_secs(3);
    let server = TestServer::start().await;
    let quiet = || config(&server).reap_interval(Duration::from_secs(600)); // no background reaps
    let a = TikvBackend::connect(quiet()).await.unwrap();
    let b = TikvBackend::connect(quiet()).await.unwrap();
    let granted = Instant::now();
    let lease = a.grant_lease(TTL).await.unwrap().id;
    let req = CreateRequest {
        key: "revive/a".into(),
        value: Vec::new(),
        lease,
        precondition: Precondition::KeyAbsent,
        prefix: "revive/".into(),
        head_limit: 0,
        replaces: None,
        read: None,
        fence: None,
    };
    assert!(a.create(req).await.unwrap().created);
    // The lease record's key (see the module docs of the backend): `<root>l/<id, 16 hex>`.
    let record = format!("l/{:016x}", lease as u64).into_bytes();
    let renewal_held = server.hold_next_prewrite(&record);
    let mut keeper = a.keep_alive(lease).await.unwrap();
    // Renew a second before the expiry (the lease's clock is the test server's TSO, which
    // is wall-clock milliseconds), so the renewal would extend it well past the read.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(granted.elapsed())).await;
    let renewal = tokio::spawn(async move { keeper.renew().await });
    tokio::time::timeout(Duration::from_secs(5), renewal_held.reached()).await.expect("the renewal reached its commit");
    assert!(granted.elapsed() < TTL, "the renewal started before the expiry ({:?})", granted.elapsed());
    tokio::time::sleep((TTL + Duration::from_millis(200)).saturating_sub(granted.elapsed())).await;
    // Whatever writes the lease record next (B's reap, by its read or its reaper) is held too.
    let reap_held = server.hold_next_prewrite(&record);
    let read = tokio::spawn({
        let b = b.clone();
        async move { b.range_prefix("revive/", 0).await }
    });
    tokio::time::timeout(Duration::from_secs(5), reap_held.reached()).await.expect("a reap of the lease started");
    renewal_held.release();
    let renewed = renewal.await.unwrap();
    reap_held.release();
    let seen: Vec<String> = read.await.unwrap().unwrap().0.into_iter().map(|kv| kv.key).collect();
    let now = b.get("revive/a").await.unwrap();
    let alive = b.lease_ttl(lease).await.unwrap();
    assert!(granted.elapsed() < TTL * 5 / 3, "too slow to tell: the renewed lease may have expired again");
    if seen.is_empty() {
        assert!(
            now.is_none() && alive.is_none(),
            "B's read left the key out as expired, then A's renewal ({renewed:?}) brought it back (key {now:?}, lease {alive:?})"
        );
    } else {
        assert!(renewed.is_ok(), "B's read saw the lease alive, so the renewal must have committed: {renewed:?}");
    }
}

/// A create under a lease that has no keys yet, racing the lease's revoke by another
/// process, must not be left behind: either it fails (its lease is gone) or its key goes
/// with the lease, with a delete event. The test server holds A's create between its reads
/// and its commit while B revokes the lease.
///
/// Before the fix both committed: the reap of a keyless lease wrote only the lease's own
/// records, and the create only read them (a write skew, which optimistic transactions do
/// not catch). The key stayed stored under a lease that no longer existed, hidden from
/// reads, never reaped, and its put in every watcher's view with no delete to follow (a
/// reviewer's reading, 2026-12-05). Now every reap also writes the revision counter, which
/// every change writes, so the two conflict and the create runs again and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_racing_the_revoke_of_its_lease_is_not_left_behind() {
    let server = TestServer::start().await;
    let quiet = || config(&server).reap_interval(Duration::from_secs(600)); // no background reaps
    let a = TikvBackend::connect(quiet()).await.unwrap();
    let b = TikvBackend::connect(quiet()).await.unwrap();
    let lease = a.grant_lease(Duration::from_secs(10)).await.unwrap().id;
    let mut watch = b.watch_prefix("orphan/").await.unwrap();
    let req = CreateRequest {
        key: "orphan/a".into(),
        value: Vec::new(),
        lease,
        precondition: Precondition::KeyAbsent,
        prefix: "orphan/".into(),
        head_limit: 0,
        replaces: None,
        read: None,
        fence: None,
    };
    let held = server.hold_next_prewrite(b"k/orphan/a");
    let create = tokio::spawn({
        let a = a.clone();
        async move { a.create(req).await }
    });
    tokio::time::timeout(Duration::from_secs(5), held.reached()).await.expect("the create reached its commit");
    b.revoke_lease(lease).await.unwrap();
    held.release();
    match create.await.unwrap() {
        Err(Error::LeaseNotFound { .. }) => {}
        Ok(resp) if resp.created => {
            // Its key must go with the lease: the put, then the delete.
            let mut events = wait_event(&mut watch).await;
            while !events.iter().any(|e| matches!(e, WatchEvent::Delete { key, .. } if key == "orphan/a")) {
                events = tokio::time::timeout(Duration::from_secs(3), watch.next())
                    .await
                    .expect("created under a revoked lease, and never deleted")
                    .expect("watch alive");
            }
        }
        other => panic!("the create: {other:?}"),
    }
}

/// A TTL past what the clock counts is a lease that never expires, as on the embedded
/// store (`tests/safety.rs`), not an overflow: the expiry was `now + ttl` in milliseconds,
/// which panicked in debug builds ("request task failed") and wrapped in release, a lease
/// that expired at once (a review found it, 2026-12-05).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_lease_ttl_never_expires() {
    let server = TestServer::start().await;
    let backend = TikvBackend::connect(config(&server)).await.unwrap();
    let lease = backend.grant_lease(Duration::MAX).await.unwrap();
    assert!(backend.lease_ttl(lease.id).await.unwrap().is_some_and(|t| t > Duration::from_secs(3600)));
    let mut keeper = backend.keep_alive(lease.id).await.unwrap();
    assert!(keeper.renew().await.unwrap() > Duration::from_secs(3600));
    backend.revoke_lease(lease.id).await.unwrap();
}

/// A TxnLock granted after a long wait is as safe as one granted at once. TiKV measures a
/// pessimistic lock's 20 s TTL (tikv-client's, fixed) from its transaction's start, and
/// the first heartbeat comes one interval after the grant: a waiter whose transaction had
/// begun before a wait of more than 15 s got a lock that had expired already, a third
/// acquisition resolved it and took the lock, and both held it (a reviewer's reading,
/// 2026-12-05; the test server measures as TiKV does, on its wall-clock TSO, so this takes
/// 25 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_lock_granted_after_a_long_wait_is_not_already_expired() {
    let server = TestServer::start().await;
    let backend = TikvBackend::connect(config(&server)).await.unwrap();
    let lock = TxnLock::new(&backend, "txn-long-wait").unwrap();
    let first = lock.lock().await.unwrap();
    let waiter = tokio::spawn({
        let lock = lock.clone();
        async move { lock.lock().await }
    });
    tokio::time::sleep(Duration::from_secs(21)).await;
    first.unlock().await.unwrap();
    let second = tokio::time::timeout(mx::SOON, waiter).await.expect("the waiter was admitted").unwrap().unwrap();
    let third = lock.lock_timeout(Duration::from_secs(3)).await;
    assert!(matches!(third, Err(Error::Timeout { .. })), "two holders: {third:?}");
    second.unlock().await.unwrap();
}

/// A TxnLock heartbeat interval that would let a held lock expire between two heartbeats
/// (TiKV keeps it 20 s past the last), or spin (zero), is refused at connect: it used to
/// be taken as given (a review found it, 2026-12-05).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_lock_heartbeat_out_of_range_is_refused() {
    let server = TestServer::start().await;
    for heartbeat in [Duration::ZERO, Duration::from_secs(20)] {
        let mut cfg = config(&server);
        cfg.txn_lock_heartbeat = heartbeat;
        let r = TikvBackend::connect(cfg).await;
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{heartbeat:?}: {r:?}");
    }
}
