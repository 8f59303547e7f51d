//! The conformance suite on a real etcd started by the harness, plus etcd-only tests:
//! a 3-member cluster losing a member, interop with `etcdctl lock`, several client
//! processes, and unreachable endpoints.
#[macro_use]
mod conformance;
mod support;

use conformance::lock_delay as ld;
use leasehold::{Client, Error, EtcdConfig, Mutex};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::etcd::EtcdCluster;

macro_rules! on_etcd {
    ($($name:ident => |$c:ident| $body:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let etcd = EtcdCluster::single();
            let $c = &etcd.client().await;
            $body.await;
        }
    )*};
}

conformance_suite!(on_etcd);

/// Lock-delay on etcd: lower bounds only ("not acquired before the delay"). The clean
/// hand-off uses a long delay so that "no delay" cannot be confused with a slow store.
const LOCK_DELAY: Duration = Duration::from_millis(1500);
on_etcd! {
    lock_delay_clean_unlock_pessimistic => |c| ld::clean_unlock_has_no_delay(c, Pessimistic, Duration::from_secs(20));
    lock_delay_clean_unlock_optimistic => |c| ld::clean_unlock_has_no_delay(c, Optimistic, Duration::from_secs(20));
    lock_delay_expiry_delays_the_waiter_pessimistic => |c| ld::expiry_delays_the_waiter(c, &conformance::crash(c), Pessimistic, LOCK_DELAY);
    lock_delay_expiry_delays_the_waiter_optimistic => |c| ld::expiry_delays_the_waiter(c, &conformance::crash(c), Optimistic, LOCK_DELAY);
    lock_delay_expiry_delays_a_newcomer => |c| ld::expiry_delays_a_newcomer(c, &conformance::crash(c), Pessimistic, LOCK_DELAY);
    lock_delay_election_expiry_delays_the_next_leader => |c| ld::election_expiry_delays_the_next_leader(c, &conformance::crash(c), LOCK_DELAY);
    lock_delay_dropped_guard_is_not_clean => |c| ld::dropped_guard_is_not_clean(c, LOCK_DELAY);
    lock_delay_revoked_during_the_delay => |c| ld::revoked_during_the_delay(c, LOCK_DELAY);
    lock_delay_session_lost_during_the_delay => |c| ld::session_lost_during_the_delay(c, &conformance::crash(c), LOCK_DELAY);
}

/// The observer resynchronises after etcd itself went away and came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_observe_survives_an_etcd_restart() {
    let etcd = std::sync::Mutex::new(EtcdCluster::single());
    let endpoints = etcd.lock().unwrap().endpoints(); // no guard held across the connect
    let client = Client::etcd(EtcdConfig::new(endpoints)).await.unwrap();
    let cut = |down: bool| {
        let mut e = etcd.lock().unwrap();
        if down {
            e.kill(0);
        } else {
            e.restart(0);
            e.wait_healthy(Duration::from_secs(30));
        }
    };
    el::election_observe_survives_a_broken_watch(&client, &cut).await;
}

/// With 3 members, killing the raft leader does not stop the lock: acquisitions resume
/// (after an election) and exclusion holds throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_survives_losing_the_leader_of_three() {
    let mut etcd = EtcdCluster::start(3, &[]);
    let client = etcd.client().await;
    mx::mutual_exclusion(&client, Pessimistic, 4, 5).await;
    let leader = etcd.leader().expect("a leader");
    etcd.kill(leader);
    // Sessions opened after the kill must work through the remaining two members.
    let session = client.session().await.unwrap();
    let m = Mutex::new(&session, "after-kill").unwrap();
    let g = m.lock_timeout(mx::SOON).await.unwrap();
    g.fenced_put("after-kill.data", "ok").await.unwrap();
    g.unlock().await.unwrap();
    mx::mutual_exclusion(&client, Pessimistic, 4, 5).await;
    mx::mutual_exclusion(&client, Optimistic, 4, 5).await;
    etcd.restart(leader);
    etcd.wait_healthy(Duration::from_secs(30));
}

/// A session on a store that dies is lost by its deadline, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lost_when_etcd_dies() {
    let mut etcd = EtcdCluster::single();
    let client =
        Client::etcd(EtcdConfig::new(etcd.endpoints()).request_timeout(Duration::from_millis(500))).await.unwrap();
    let s = client.session_builder().ttl(Duration::from_secs(2)).open().await.unwrap();
    let guard = Mutex::new(&s, "dies").unwrap().lock().await.unwrap();
    etcd.kill(0);
    tokio::time::timeout(mx::SOON, guard.lost()).await.expect("lost() fired");
    assert!(!guard.is_valid());
    let deadline = s.deadline();
    assert!(Instant::now() >= deadline, "lost before the local deadline");
}

/// leasehold and `etcdctl lock` exclude each other on the same name, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_with_etcdctl_lock() {
    let etcd = EtcdCluster::single();
    let client = etcd.client().await;
    for strategy in [Pessimistic, Optimistic] {
        // 1. leasehold holds; etcdctl waits until we unlock.
        let s = client.session().await.unwrap();
        let m = Mutex::new(&s, "shared").unwrap().with_strategy(strategy);
        let guard = m.lock().await.unwrap();
        let mut ctl = etcd
            .etcdctl()
            .args(["lock", "shared", "--", "echo", "etcdctl-got-it"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let prefix = client.prefix_of("shared").unwrap();
        let mut queued = false;
        for _ in 0..500 {
            if client.backend().range_prefix(&prefix, 0).await.unwrap().0.len() == 2 {
                queued = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(queued, "etcdctl never queued behind us");
        assert!(ctl.try_wait().unwrap().is_none(), "etcdctl ran while we held the lock");
        guard.unlock().await.unwrap();
        let out = tokio::task::spawn_blocking(move || ctl.wait_with_output().unwrap()).await.unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "etcdctl-got-it");

        // 2. etcdctl holds (until a marker file appears; etcdctl does not pass its stdin on);
        //    we cannot take it, then we can.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("release");
        let script = format!(
            "echo held; i=0; while [ ! -f '{}' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
            marker.display()
        );
        let mut ctl =
            etcd.etcdctl().args(["lock", "shared", "--", "sh", "-c", &script]).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(ctl.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "held");
        assert!(m.try_lock().await.unwrap().is_none(), "we got a lock etcdctl holds");
        let holder = m.holder().await.unwrap().expect("etcdctl holds the lock");
        let waiting = tokio::spawn({
            let m = m.clone();
            async move { m.lock_timeout(mx::SOON).await.map(|g| g.fencing_token()) }
        });
        std::fs::write(&marker, b"").unwrap();
        let token = waiting.await.unwrap().unwrap();
        assert!(token > holder.token, "our token {token} must exceed etcdctl's {}", holder.token);
        assert!(ctl.wait().unwrap().success());
        s.close().await.unwrap();
    }
}

/// Several OS processes increment a counter in etcd under the lock with fenced writes; no
/// increment is lost. The workers are this test binary re-run in worker mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_share_a_fenced_counter() {
    const PROCS: usize = 3;
    const ROUNDS: usize = 15;
    let etcd = EtcdCluster::single();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCS)
        .map(|i| {
            std::process::Command::new(&exe)
                .args(["--exact", "process_worker", "--ignored", "--nocapture", "--test-threads=1"])
                .env("LEASEHOLD_WORKER_URL", etcd.url())
                .env("LEASEHOLD_WORKER_ROUNDS", ROUNDS.to_string())
                .env("LEASEHOLD_WORKER_STRATEGY", if i % 2 == 0 { "pessimistic" } else { "optimistic" })
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = tokio::task::spawn_blocking(move || c.wait_with_output().unwrap()).await.unwrap();
        assert!(out.status.success(), "worker failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    let client = etcd.client().await;
    let kv = client.backend().get("proc-counter").await.unwrap().expect("counter written");
    assert_eq!(String::from_utf8(kv.value).unwrap(), (PROCS * ROUNDS).to_string());
}

/// Worker mode of the test above (ignored: the test above runs it, with its settings).
#[tokio::test]
#[ignore = "the worker of several_processes_share_a_fenced_counter, which runs it"]
async fn process_worker() {
    let url = std::env::var("LEASEHOLD_WORKER_URL").expect("worker mode: LEASEHOLD_WORKER_URL (run by its test)");
    let rounds: usize = std::env::var("LEASEHOLD_WORKER_ROUNDS").unwrap().parse().unwrap();
    let strategy =
        if std::env::var("LEASEHOLD_WORKER_STRATEGY").unwrap() == "optimistic" { Optimistic } else { Pessimistic };
    let client = Client::connect(&url).await.unwrap();
    let session = client.session().await.unwrap();
    let m = Mutex::new(&session, "proc").unwrap().with_strategy(strategy);
    for _ in 0..rounds {
        let g = m.lock().await.unwrap();
        let n: u64 = client
            .backend()
            .get("proc-counter")
            .await
            .unwrap()
            .map_or(0, |kv| String::from_utf8(kv.value).unwrap().parse().unwrap());
        g.fenced_put("proc-counter", (n + 1).to_string()).await.unwrap();
        g.unlock().await.unwrap();
    }
    session.close().await.unwrap();
}

/// Endpoints that do not answer fail with Error::Connect within the connect timeout, and
/// keep the store client's error as the cause: Error -> Cause -> etcd_client::Error.
#[tokio::test]
async fn unreachable_endpoints_fail_fast() {
    let closed = support::etcd::free_port(); // nothing listens there
    for endpoints in [vec![format!("127.0.0.1:{closed}")], vec!["127.0.0.1:1".into(), format!("127.0.0.1:{closed}")]] {
        let timeout = Duration::from_millis(800);
        let started = Instant::now();
        let r = Client::etcd(EtcdConfig::new(endpoints).connect_timeout(timeout)).await;
        assert!(matches!(r, Err(Error::Connect { .. })), "{r:?}");
        assert!(started.elapsed() < timeout * 4, "took {:?}", started.elapsed());
        let e = r.err().unwrap();
        let cause = std::error::Error::source(&e).expect("Error::Connect has a source");
        let client_error = cause.source().and_then(|c| c.downcast_ref::<etcd_client::Error>());
        assert!(client_error.is_some(), "the etcd client's error is not the cause of {e:?}");
    }
    let r = Client::connect("zookeeper://127.0.0.1:2181").await;
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
}

/// A watch that sees nothing for a while keeps its connection: etcd closes a connection
/// whose client pings more often than every 5 s (`--grpc-keepalive-min-time`, "too many
/// pings") while the server sends nothing on it. (With pings every 2 s, the watch broke
/// after about 8 quiet seconds: found by the partition suite's quiet observer.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_keeps_its_connection() {
    let etcd = EtcdCluster::single();
    let client = etcd.client().await;
    let mut watch = client.backend().watch_prefix("quiet/").await.unwrap();
    // Quiet for 3 × 5 s: long enough for three pings too many at any interval under 5 s.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let put = etcd.etcdctl().args(["put", "quiet/k", "v"]).output().unwrap();
    assert!(put.status.success(), "{put:?}");
    let batch = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("no event within 5 s");
    let batch = batch.expect("the watch broke while quiet");
    assert!(
        batch.iter().any(|e| matches!(e, leasehold::backend::WatchEvent::Put(kv) if kv.key == "quiet/k")),
        "{batch:?}"
    );
}
