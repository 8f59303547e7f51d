//! TLS and etcd auth against real etcd processes: certificates are made at run time
//! (`support::certs`), users and roles with `etcdctl`. Failures must be typed
//! (`Error::Tls`, `Error::Auth`), say why, come within the connect timeout, and leave
//! nothing behind.
//!
//! The tests that also run the `leasehold` binary are in `cli/tests/security.rs` (package
//! `leasehold-cli`); both share `security/common.rs`.
#[path = "security/common.rs"]
mod common;
mod support;

use common::{auth_cluster, ctl, tls_cluster, CONNECT, SLACK};
use leasehold::{Client, Election, Error, EtcdConfig, Mutex, Semaphore, TlsConfig};
use std::time::{Duration, Instant};
use support::certs;
use support::etcd::EtcdCluster;

fn read(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Connects with `tls`, expecting failure: returns the error and how long it took.
async fn connect_fails(etcd: &EtcdCluster, tls: Option<TlsConfig>) -> (Error, Duration) {
    let mut config = EtcdConfig::new(etcd.endpoints()).connect_timeout(CONNECT);
    if let Some(tls) = tls {
        config = config.tls(tls);
    }
    let started = Instant::now();
    let r = Client::etcd(config).await;
    let took = started.elapsed();
    match r {
        Ok(_) => panic!("connected, expected a failure"),
        Err(e) => (e, took),
    }
}

/// A wrong CA, a missing or foreign client certificate, unreadable PEM: each is a clear
/// `Error::Tls` naming the certificate problem, within the connect timeout. Plain HTTP to a
/// TLS port is `Error::Connect`, also in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_are_clear_and_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let pki = certs::pki(dir.path(), true);
    let etcd = tls_cluster(&pki);
    let s = &pki.server;
    let good = |tls: TlsConfig| tls.identity_pem(read(&s.client_cert), read(&s.client_key));
    let cases: Vec<(&str, TlsConfig, &[&str])> = vec![
        (
            "server certificate signed by an unknown CA",
            good(TlsConfig::new().ca_pem(read(&pki.other_ca))),
            &["certificate", "unknownissuer", "not signed by the configured ca"],
        ),
        ("no client certificate", TlsConfig::new().ca_pem(read(&s.ca)), &["refused the client certificate"]),
        (
            "client certificate from a CA the server does not trust",
            TlsConfig::new()
                .ca_pem(read(&s.ca))
                .identity_pem(read(&pki.other_client.cert), read(&pki.other_client.key)),
            &["refused the client certificate"],
        ),
        (
            "server name that the certificate does not cover",
            good(TlsConfig::new().ca_pem(read(&s.ca))).domain("elsewhere.test"),
            &["certificate not valid for name"],
        ),
        (
            "CA file that is not PEM",
            good(TlsConfig::new().ca_pem(b"not a certificate".to_vec())),
            &["ca certificate", "no pem"],
        ),
    ];
    for (what, tls, words) in cases {
        let (err, took) = connect_fails(&etcd, Some(tls)).await;
        eprintln!("{what}: {err} (after {took:?})");
        assert!(matches!(err, Error::Tls(_)), "{what}: expected Error::Tls, got {err:?}");
        let text = err.to_string().to_lowercase();
        for word in words {
            assert!(text.contains(word), "{what}: {text:?} does not mention {word:?}");
        }
        assert!(took < CONNECT + SLACK, "{what}: took {took:?}");
    }
    let (err, took) = connect_fails(&etcd, None).await;
    eprintln!("plain http: {err} (after {took:?})");
    assert!(matches!(err, Error::Connect { .. }), "plain http to a TLS port: {err:?}");
    assert!(took < CONNECT + SLACK, "plain http took {took:?}");
}

async fn as_user(etcd: &EtcdCluster, user: &str, password: &str) -> leasehold::Result<Client> {
    Client::etcd(EtcdConfig::new(etcd.endpoints()).connect_timeout(CONNECT).user(user, password)).await
}

/// A user limited to `app1/` can use every recipe (and lock-delay, whose marker lives in
/// the namespace) through `Client::with_namespace("app1/")`; outside it every attempt is a
/// clear `Error::Auth` and writes nothing: afterwards root finds no key outside `app1/` and
/// no key attached to a lease. Wrong passwords and unknown users are `Error::Auth` in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_user_limited_to_a_prefix() {
    let etcd = auth_cluster();
    let alice = as_user(&etcd, "alice", "alice-pw").await.unwrap();
    let inside = alice.with_namespace("app1/");
    let session = inside.session().await.unwrap();
    let guard = Mutex::new(&session, "job").unwrap().with_lock_delay(Duration::from_secs(5)).lock().await.unwrap();
    guard.fenced_put("app1/job.data", "ok").await.unwrap();
    let r = guard.fenced_put("elsewhere/job.data", "refused").await;
    assert!(matches!(r, Err(Error::Auth(_))), "a fenced write outside the prefix: {r:?}");
    guard.unlock().await.unwrap();
    let permit = Semaphore::new(&session, "pool", 2).unwrap().acquire().await.unwrap();
    permit.release().await.unwrap();
    let lead = Election::new(&session, "leader").unwrap().campaign("alice").await.unwrap();
    lead.resign().await.unwrap();

    for namespace in ["", "app2/", "app1"] {
        let outside = alice.with_namespace(namespace);
        let s = outside.session().await.unwrap();
        let m = Mutex::new(&s, "job").unwrap();
        let r = m.try_lock().await;
        assert!(matches!(r, Err(Error::Auth(_))), "try_lock in {namespace:?}: {r:?}");
        let r = m.lock_timeout(Duration::from_secs(5)).await;
        assert!(
            matches!(&r, Err(Error::Auth(msg)) if msg.message().contains("permission denied")),
            "lock in {namespace:?}: {r:?}"
        );
        let r = Semaphore::new(&s, "pool", 2).unwrap().acquire().await;
        assert!(matches!(r, Err(Error::Auth(_))), "semaphore in {namespace:?}: {r:?}");
        let r = Election::new(&s, "leader").unwrap().try_campaign("alice").await;
        assert!(matches!(r, Err(Error::Auth(_))), "election in {namespace:?}: {r:?}");
        s.settle().await;
        s.close().await.unwrap();
    }
    session.close().await.unwrap();

    let root = as_user(&etcd, "root", "root-pw").await.unwrap();
    let (all, _) = root.backend().range_prefix("", 0).await.unwrap();
    let stray: Vec<_> = all.iter().filter(|kv| !kv.key.starts_with("app1/")).map(|kv| &kv.key).collect();
    assert!(stray.is_empty(), "keys outside app1/: {stray:?}");
    let leased: Vec<_> = all.iter().filter(|kv| kv.lease != 0).map(|kv| &kv.key).collect();
    assert!(leased.is_empty(), "keys still attached to a lease: {leased:?}");
    let leases = ctl(&etcd, true, &["lease", "list"]);
    assert!(leases.contains("found 0 leases"), "sessions left leases: {leases}");

    for (user, password) in [("alice", "wrong"), ("mallory", "alice-pw")] {
        let started = Instant::now();
        let r = as_user(&etcd, user, password).await;
        assert!(
            matches!(&r, Err(Error::Auth(msg)) if msg.message().contains("authentication failed")),
            "{user}: {r:?}"
        );
        assert!(started.elapsed() < CONNECT + SLACK, "{user}: took {:?}", started.elapsed());
        // The etcd client's own error is kept as the cause: Error -> Cause -> etcd_client::Error.
        let e = r.err().unwrap();
        let client_error = std::error::Error::source(&e).and_then(std::error::Error::source);
        assert!(
            matches!(
                client_error.and_then(|c| c.downcast_ref::<etcd_client::Error>()),
                Some(etcd_client::Error::GRpcStatus(_))
            ),
            "{user}: the gRPC status is not the cause of {e:?}"
        );
    }
    let r = Client::etcd(EtcdConfig::new(etcd.endpoints()).connect_timeout(CONNECT)).await;
    assert!(
        matches!(&r, Err(Error::Auth(msg)) if msg.message().contains("user name is empty")),
        "no user at all: {r:?}"
    );
}
