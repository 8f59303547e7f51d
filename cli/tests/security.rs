//! TLS and etcd auth for the `leasehold` binary (and the library beside it) against real
//! etcd processes; the library-only cases are in `tests/security.rs` (package `leasehold`),
//! with which this file shares `tests/security/common.rs`.
#[path = "../../tests/security/common.rs"]
mod common;
#[path = "../../tests/support/mod.rs"]
mod support;

use common::{auth_cluster, ctl, tls_cluster, CONNECT, SLACK};
use leasehold::{Mutex, Semaphore};
use std::process::{Command, Output};
use std::time::Instant;
use support::certs;

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
