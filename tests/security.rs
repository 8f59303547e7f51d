//! TLS and etcd auth against real etcd processes: certificates are made at run time
//! (`support::certs`), users and roles with `etcdctl`. Failures must be typed
//! (`Error::Tls`, `Error::Auth`), say why, come within the connect timeout, and leave
//! nothing behind.
mod support;

use leasehold::{Client, Election, Error, EtcdConfig, Mutex, Semaphore, TlsConfig};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::certs;
use support::etcd::{EtcdCluster, Options};

/// The connect timeout every failing connection must respect.
const CONNECT: Duration = Duration::from_secs(2);
/// What "within the connect timeout" allows on top (process start-up, a loaded machine).
const SLACK: Duration = Duration::from_secs(2);

fn tls_cluster(pki: &certs::Pki) -> EtcdCluster {
    EtcdCluster::start_with(Options { members: 1, tls: Some(pki.server.clone()), ..Options::default() })
}

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

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_leasehold"))
}

fn one_line_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("leasehold: "), "{err:?}");
    assert!(!err.contains("panicked"), "{err:?}");
    err
}

/// With the CA and a client certificate, everything works over TLS (library and CLI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = certs::pki(dir.path(), true);
    let etcd = tls_cluster(&pki);
    assert_eq!(etcd.scheme(), "https");
    let client = etcd.client().await; // CA + client certificate
    let session = client.session().await.unwrap();
    let guard = Mutex::new(&session, "tls-lock").unwrap().lock().await.unwrap();
    guard.fenced_put("tls-data", "over tls").await.unwrap();
    guard.unlock().await.unwrap();
    let permit = Semaphore::new(&session, "tls-sem", 2).unwrap().acquire().await.unwrap();
    permit.release().await.unwrap();
    let kv = client.backend().get("tls-data").await.unwrap().expect("written");
    assert_eq!(kv.value, b"over tls");
    session.close().await.unwrap();

    let tls = etcd.tls().unwrap();
    let out = cli()
        .args(["--endpoints", &etcd.url(), "--connect-timeout", "5s"])
        .arg("--cacert")
        .arg(&tls.ca)
        .arg("--cert")
        .arg(&tls.client_cert)
        .arg("--key")
        .arg(&tls.client_key)
        .args(["lock", "tls-cli", "--", "sh", "-c", "test -n \"$LEASEHOLD_FENCING_TOKEN\""])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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

/// Runs `etcdctl` (as root once auth is on) and insists that it succeeds.
fn ctl(etcd: &EtcdCluster, root: bool, args: &[&str]) -> String {
    let mut c = etcd.etcdctl();
    if root {
        c.arg("--user=root:root-pw");
    }
    let out = c.args(args).output().unwrap();
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A cluster with auth on: `root`, and `alice` who may read and write only under `app1/`.
fn auth_cluster() -> EtcdCluster {
    let etcd = EtcdCluster::single();
    ctl(&etcd, false, &["user", "add", "root", "--new-user-password=root-pw", "--interactive=false"]);
    ctl(&etcd, false, &["user", "grant-role", "root", "root"]);
    ctl(&etcd, false, &["role", "add", "app1"]);
    ctl(&etcd, false, &["role", "grant-permission", "app1", "--prefix=true", "readwrite", "app1/"]);
    ctl(&etcd, false, &["user", "add", "alice", "--new-user-password=alice-pw", "--interactive=false"]);
    ctl(&etcd, false, &["user", "grant-role", "alice", "app1"]);
    ctl(&etcd, false, &["auth", "enable"]);
    etcd
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
            matches!(&r, Err(Error::Auth(msg)) if msg.contains("permission denied")),
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
        assert!(matches!(&r, Err(Error::Auth(msg)) if msg.contains("authentication failed")), "{user}: {r:?}");
        assert!(started.elapsed() < CONNECT + SLACK, "{user}: took {:?}", started.elapsed());
    }
    let r = Client::etcd(EtcdConfig::new(etcd.endpoints()).connect_timeout(CONNECT)).await;
    assert!(matches!(&r, Err(Error::Auth(msg)) if msg.contains("user name is empty")), "no user at all: {r:?}");
}

/// The CLI with `--user`: works inside the user's prefix; refused elsewhere (or with a
/// wrong password) with a one-line error and exit code 125.
#[test]
fn cli_user_inside_and_outside_its_prefix() {
    let etcd = auth_cluster();
    let run = |args: &[&str]| {
        cli()
            .env_remove("LEASEHOLD_ENDPOINTS")
            .args(["--endpoints", &etcd.url(), "--connect-timeout", "2s"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--user", "alice:alice-pw", "--namespace", "app1/", "lock", "job", "--", "true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&[
        "--user",
        "alice",
        "--password",
        "alice-pw",
        "--namespace",
        "app1/",
        "semaphore",
        "--permits",
        "1",
        "pool",
        "--",
        "true",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for args in [
        &["--user", "alice:alice-pw", "lock", "job", "--", "true"][..],
        &["--user", "alice:alice-pw", "--namespace", "app2/", "lock", "job", "--", "true"][..],
        &["--user", "alice:wrong", "--namespace", "app1/", "lock", "job", "--", "true"][..],
    ] {
        let started = Instant::now();
        let out = run(args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let line = one_line_error(&out);
        assert!(line.contains("auth"), "{args:?}: {line}");
        assert!(started.elapsed() < CONNECT + SLACK + SLACK, "{args:?} took {:?}", started.elapsed());
    }
    let root = ctl(&etcd, true, &["get", "", "--prefix", "--keys-only"]);
    assert!(root.lines().filter(|l| !l.is_empty()).all(|k| k.starts_with("app1/")), "stray keys: {root}");
}
