//! The conformance suite on a real etcd started by the harness, plus etcd-only tests:
//! a 3-member cluster losing a member, interop with `etcdctl lock`, several client
//! processes, and unreachable endpoints.
mod conformance;
mod support;

use conformance::mutex as mx;
use conformance::recipes::{self as rc, Mix};
use leasehold::{Client, Error, EtcdConfig, Mutex, Strategy::*};
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

on_etcd! {
    mutual_exclusion_pessimistic => |c| mx::mutual_exclusion(c, Pessimistic, 8, 10);
    mutual_exclusion_optimistic => |c| mx::mutual_exclusion(c, Optimistic, 8, 10);
    try_lock_pessimistic => |c| mx::try_lock(c, Pessimistic);
    try_lock_optimistic => |c| mx::try_lock(c, Optimistic);
    timeout_pessimistic => |c| mx::timeout(c, Pessimistic);
    timeout_optimistic => |c| mx::timeout(c, Optimistic);
    cancellation_pessimistic => |c| mx::cancellation(c, Pessimistic, 150);
    cancellation_optimistic => |c| mx::cancellation(c, Optimistic, 150);
    ownership_safe_unlock => |c| mx::ownership_safe_unlock(c);
    lost_session => |c| mx::lost_session(c);
    waiter_loses_its_key_pessimistic => |c| mx::waiter_loses_its_key(c, Pessimistic);
    waiter_loses_its_key_optimistic => |c| mx::waiter_loses_its_key(c, Optimistic);
    reattach => |c| mx::reattach(c);
    bad_input => |c| mx::bad_input(c);
    close_releases => |c| mx::close_releases(c);
}

/// What a crashed process looks like to etcd: its lease is revoked (as expiry would).
fn crash(client: &Client) -> impl Fn(i64) + Sync + '_ {
    move |lease| {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(client.backend().revoke_lease(lease)).unwrap()
        })
    }
}

on_etcd! {
    semaphore_limit_holds_under_contention => |c| rc::semaphore_limit_holds_under_contention(c, Mix::Queued);
    semaphore_limit_holds_with_mixed_strategies => |c| rc::semaphore_limit_holds_under_contention(c, Mix::Mixed);
    semaphore_admits_in_arrival_order => |c| rc::semaphore_admits_in_arrival_order(c);
    semaphore_crashed_holder_permits_return => |c| rc::semaphore_crashed_holder_permits_return(c, &crash(c));
    semaphore_permit_count_mismatch => |c| rc::semaphore_permit_count_mismatch(c);
    semaphore_try_timeout_cancel_leave_nothing => |c| rc::semaphore_try_timeout_cancel_leave_nothing(c);
    rwlock_readers_share_writer_excludes => |c| rc::rwlock_readers_share_writer_excludes(c);
    rwlock_exclusion_under_contention => |c| rc::rwlock_exclusion_under_contention(c);
    rwlock_writer_not_starved_by_later_readers => |c| rc::rwlock_writer_not_starved_by_later_readers(c);
    rwlock_and_election_cancel_leave_nothing => |c| rc::rwlock_and_election_cancel_leave_nothing(c);
    election_campaign_leader_proclaim_resign => |c| rc::election_campaign_leader_proclaim_resign(c);
    election_failover_after_resign => |c| rc::election_failover_after_resign(c);
    election_failover_after_lease_expiry => |c| rc::election_failover_after_lease_expiry(c, &crash(c));
    election_observe_reports_every_change => |c| rc::election_observe_reports_every_change(c);
    election_tokens_increase_across_terms => |c| rc::election_tokens_increase_across_terms(c);
    election_one_campaign_per_session => |c| rc::election_one_campaign_per_session(c);
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
    rc::election_observe_survives_a_broken_watch(&client, &cut).await;
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
                .args(["--exact", "process_worker", "--nocapture", "--test-threads=1"])
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

/// Worker mode of the test above; does nothing unless LEASEHOLD_WORKER_URL is set.
#[tokio::test]
async fn process_worker() {
    let Ok(url) = std::env::var("LEASEHOLD_WORKER_URL") else {
        return;
    };
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

/// Endpoints that do not answer fail with Error::Connect within the connect timeout.
#[tokio::test]
async fn unreachable_endpoints_fail_fast() {
    let closed = support::etcd::free_port(); // nothing listens there
    for endpoints in [vec![format!("127.0.0.1:{closed}")], vec!["127.0.0.1:1".into(), format!("127.0.0.1:{closed}")]] {
        let timeout = Duration::from_millis(800);
        let started = Instant::now();
        let r = Client::etcd(EtcdConfig::new(endpoints).connect_timeout(timeout)).await;
        assert!(matches!(r, Err(Error::Connect { .. })), "{r:?}");
        assert!(started.elapsed() < timeout * 4, "took {:?}", started.elapsed());
    }
    let r = Client::connect("zookeeper://127.0.0.1:2181").await;
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
}
