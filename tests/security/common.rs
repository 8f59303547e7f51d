//! What `tests/security.rs` and `cli/tests/security.rs` share: the connect-timeout budget,
//! a TLS cluster, a cluster with auth on, and `etcdctl` as root.
use crate::support::certs;
use crate::support::etcd::{EtcdCluster, Options};
use std::time::Duration;

/// The connect timeout every failing connection must respect.
pub const CONNECT: Duration = Duration::from_secs(2);
/// What "within the connect timeout" allows on top (process start-up, a loaded machine).
pub const SLACK: Duration = Duration::from_secs(2);

pub fn tls_cluster(pki: &certs::Pki) -> EtcdCluster {
    EtcdCluster::start_with(Options { members: 1, tls: Some(pki.server.clone()), ..Options::default() })
}

/// Runs `etcdctl` (as root once auth is on) and insists that it succeeds.
pub fn ctl(etcd: &EtcdCluster, root: bool, args: &[&str]) -> String {
    let mut c = etcd.etcdctl();
    if root {
        c.arg("--user=root:root-pw");
    }
    let out = c.args(args).output().unwrap();
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A cluster with auth on: `root`, and `alice` who may read and write only under `app1/`.
pub fn auth_cluster() -> EtcdCluster {
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
