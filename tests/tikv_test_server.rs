//! The in-process PD + TiKV test server (crate `tikv-test-server`) driven by the real
//! `tikv-client`: the protocol and the semantics the leasehold backend relies on. (Here
//! rather than in the server's crate, whose dev-dependency on tikv-client would be built
//! by every `cargo test --workspace`.)
use std::time::{Duration, Instant};
use tikv_client::{CheckLevel, Error, TransactionClient, TransactionOptions};
use tikv_test_server::TestServer;

async fn client(server: &TestServer) -> TransactionClient {
    TransactionClient::new(server.pd_endpoints()).await.expect("connect")
}

fn optimistic() -> TransactionOptions {
    TransactionOptions::new_optimistic().drop_check(CheckLevel::Warn)
}

fn pessimistic() -> TransactionOptions {
    TransactionOptions::new_pessimistic().drop_check(CheckLevel::Warn)
}

fn is_conflict(e: &Error) -> bool {
    match e {
        Error::KeyError(k) => k.conflict.is_some(),
        Error::ExtractedErrors(v) | Error::MultipleKeyErrors(v) => v.iter().any(is_conflict),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_increase() {
    let server = TestServer::start().await;
    let c = client(&server).await;
    let mut last = 0;
    for _ in 0..100 {
        let ts = c.current_timestamp().await.unwrap().version();
        assert!(ts > last);
        last = ts;
    }
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!((last >> 18).abs_diff(now_ms) < 5_000, "physical part is wall-clock milliseconds");
}

trait Version {
    fn version(&self) -> u64;
}
impl Version for tikv_client::Timestamp {
    fn version(&self) -> u64 {
        ((self.physical as u64) << 18) + self.logical as u64
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_commit_snapshot_and_conflict() {
    let server = TestServer::start().await;
    let c = client(&server).await;
    let mut t = c.begin_with_options(optimistic()).await.unwrap();
    t.put("a".to_owned(), "1").await.unwrap();
    t.put("b".to_owned(), "2").await.unwrap();
    t.commit().await.unwrap();

    let mut reader = c.begin_with_options(optimistic()).await.unwrap();
    let mut t1 = c.begin_with_options(optimistic()).await.unwrap();
    let mut t2 = c.begin_with_options(optimistic()).await.unwrap();
    assert_eq!(t1.get("a".to_owned()).await.unwrap(), Some(b"1".to_vec()));
    t1.put("a".to_owned(), "t1").await.unwrap();
    t2.put("a".to_owned(), "t2").await.unwrap();
    t1.commit().await.unwrap();
    let e = t2.commit().await.unwrap_err();
    assert!(is_conflict(&e), "{e:?}");
    t2.rollback().await.unwrap();
    // The older snapshot still reads the old value; a scan sees both keys in order.
    assert_eq!(reader.get("a".to_owned()).await.unwrap(), Some(b"1".to_vec()));
    let pairs: Vec<_> = reader.scan("a".to_owned().."c".to_owned(), 10).await.unwrap().collect();
    assert_eq!(pairs.len(), 2);
    reader.rollback().await.unwrap();
    let mut after = c.begin_with_options(optimistic()).await.unwrap();
    assert_eq!(after.get("a".to_owned()).await.unwrap(), Some(b"t1".to_vec()));
    // A bounded scan that finds fewer keys than its limit returns only what is in range.
    let pairs: Vec<_> = after.scan("a".to_owned().."z".to_owned(), 10).await.unwrap().collect();
    assert_eq!(pairs.len(), 2);
    after.rollback().await.unwrap();
    assert_eq!(server.lock_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pessimistic_lock_waits_for_the_holder() {
    let server = TestServer::start().await;
    let c = client(&server).await;
    let mut holder = c.begin_with_options(pessimistic()).await.unwrap();
    holder.lock_keys(vec!["lock".to_owned()]).await.unwrap();
    let c2 = c.clone();
    let (locking, asked) = tokio::sync::oneshot::channel();
    let waiter = tokio::spawn(async move {
        let mut t = c2.begin_with_options(pessimistic()).await.unwrap();
        let started = Instant::now();
        locking.send(()).unwrap();
        t.lock_keys(vec!["lock".to_owned()]).await.unwrap();
        let waited = started.elapsed();
        t.rollback().await.unwrap();
        waited
    });
    // The holder lets go 300 ms after the waiter asked (not after it was spawned: its
    // transaction's begin takes a round trip of its own).
    asked.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the second lock must wait");
    holder.rollback().await.unwrap();
    let waited = waiter.await.unwrap();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert_eq!(server.lock_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_prewrite_is_rolled_back_after_its_ttl() {
    let server = TestServer::start().await;
    let c = client(&server).await;
    let mut t = c.begin_with_options(optimistic()).await.unwrap();
    t.put("k".to_owned(), "v").await.unwrap();
    t.commit().await.unwrap();
    // A writer that prewrote and then could not commit (as if it died): its lock stays.
    server.fail_method("KvCommit", true);
    let mut dead = c.begin_with_options(optimistic()).await.unwrap();
    dead.put("k".to_owned(), "never").await.unwrap();
    assert!(dead.commit().await.is_err());
    server.fail_method("KvCommit", false);
    assert_eq!(server.lock_count(), 1);
    // Readers resolve it: while its TTL (3 s) runs they are told it is locked; then
    // check_txn_status rolls it back and the read sees the committed value.
    let mut value = None;
    for _ in 0..20 {
        let mut reader = c.begin_with_options(optimistic()).await.unwrap();
        let r = reader.get("k".to_owned()).await;
        reader.rollback().await.unwrap();
        if let Ok(v) = r {
            value = v;
            break;
        }
    }
    assert_eq!(value, Some(b"v".to_vec()));
    assert_eq!(server.lock_count(), 0);
    assert!(server.calls("KvCheckTxnStatus") > 0, "the client asked about the lock's owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pessimistic_heartbeat_keeps_the_lock() {
    let server = TestServer::start().await;
    let c = client(&server).await;
    let opts = pessimistic()
        .heartbeat_option(tikv_client::transaction::HeartbeatOption::FixedTime(Duration::from_millis(100)));
    let mut t = c.begin_with_options(opts).await.unwrap();
    t.lock_keys(vec!["hb".to_owned()]).await.unwrap();
    // Every 100 ms: two within 10 s even on a machine that stalls (a liveness bound, not a
    // speed; a fixed sleep of 350 ms left a stall of 150 ms to fail it).
    let asked = Instant::now();
    while server.calls("KvTxnHeartBeat") < 2 {
        assert!(asked.elapsed() < Duration::from_secs(10), "fewer than 2 heartbeats in 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.rollback().await.unwrap();
    assert_eq!(server.lock_count(), 0);
}

#[tokio::test]
async fn unavailable_server_fails_calls() {
    let server = TestServer::start().await;
    let c = client(&server).await;
    server.set_unavailable(true);
    let r = tokio::time::timeout(Duration::from_secs(20), c.current_timestamp()).await.expect("bounded");
    assert!(r.is_err());
}
