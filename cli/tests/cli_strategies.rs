//! The `leasehold` binary's strategies and weights, against a real etcd started by the
//! harness: weighted permits, and elections and read-write locks of every strategy.
#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::Command;
use support::etcd::EtcdCluster;

fn leasehold(etcd: &EtcdCluster) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    c.env("LEASEHOLD_ENDPOINTS", etcd.url());
    c
}

/// A section of 0.1 s that logs `start <tag> <token>` and `end <tag> <token>`.
fn section(log: &std::path::Path, tag: &str) -> String {
    format!(
        "echo \"start {tag} $LEASEHOLD_FENCING_TOKEN\" >> '{0}'; sleep 0.1; echo \"end {tag} $LEASEHOLD_FENCING_TOKEN\" >> '{0}'",
        log.display()
    )
}

/// The log's lines as (start?, tag, token).
fn lines(log: &std::path::Path) -> Vec<(bool, String, u64)> {
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .map(|l| {
            let mut parts = l.split(' ');
            let start = parts.next() == Some("start");
            let tag = parts.next().unwrap().to_owned();
            (start, tag, parts.next().unwrap().parse().unwrap())
        })
        .collect()
}

fn run_all(children: Vec<std::process::Child>) {
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
}

/// Six `leasehold semaphore --permits 3 --weight w` processes (weights 2 and 1, both
/// strategies): the weights inside never add up to more than 3, and a weight above the
/// count is refused with a one-line error.
#[test]
fn weighted_permits_across_processes() {
    let etcd = EtcdCluster::single();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let children = (0..6)
        .map(|i| {
            let (weight, strategy) =
                (if i % 2 == 0 { "2" } else { "1" }, if i % 3 == 2 { "optimistic" } else { "pessimistic" });
            let script = section(&log, weight);
            leasehold(&etcd)
                .args(["semaphore", "--permits", "3", "--weight", weight, "--strategy", strategy, "cli-weights"])
                .args(["--", "sh", "-c", &script])
                .spawn()
                .unwrap()
        })
        .collect();
    run_all(children);
    let (mut inside, mut most, mut done) = (0u32, 0u32, 0);
    for (start, weight, _) in lines(&log) {
        let w: u32 = weight.parse().unwrap();
        if start {
            inside += w;
            most = most.max(inside);
        } else {
            inside -= w;
            done += 1;
        }
    }
    assert_eq!(done, 6);
    assert!(most <= 3, "{most} permits held at once of 3");
    let out = leasehold(&etcd)
        .args(["semaphore", "--permits", "3", "--weight", "4", "cli-weights", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("leasehold: ") && err.trim_end().lines().count() == 1 && !err.contains("panicked"),
        "{err:?}"
    );
}

/// Six `leasehold elect` processes, two of each strategy: one leader at a time, and the
/// tokens increase in the order the terms ran.
#[test]
fn elections_of_every_strategy_never_overlap() {
    let etcd = EtcdCluster::single();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let children = (0..6)
        .map(|i| {
            let strategy = ["pessimistic", "optimistic", "adaptive"][i % 3];
            let script = section(&log, strategy);
            leasehold(&etcd)
                .args(["elect", "cli-elect-strategies", "--strategy", strategy, "--", "sh", "-c", &script])
                .spawn()
                .unwrap()
        })
        .collect();
    run_all(children);
    let lines = lines(&log);
    assert_eq!(lines.len(), 12);
    let mut last = 0;
    for pair in lines.chunks(2) {
        assert!(pair[0].0 && !pair[1].0 && pair[0].2 == pair[1].2, "two leaders at once: {lines:?}");
        assert!(pair[0].2 > last, "tokens not increasing: {lines:?}");
        last = pair[0].2;
    }
}

/// Eight `leasehold rwlock` processes, readers and writers of every strategy: a writer is
/// alone inside.
#[test]
fn rwlock_strategies_keep_writers_alone() {
    let etcd = EtcdCluster::single();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let children = (0..8)
        .map(|i| {
            let strategy = ["pessimistic", "optimistic", "adaptive"][i % 3];
            let mode = if i % 4 == 0 { "--write" } else { "--read" };
            let script = section(&log, mode.trim_start_matches('-'));
            leasehold(&etcd)
                .args(["rwlock", mode, "--strategy", strategy, "cli-rw-strategies", "--", "sh", "-c", &script])
                .spawn()
                .unwrap()
        })
        .collect();
    run_all(children);
    let (mut readers, mut writers, mut done) = (0, 0, 0);
    for (start, mode, _) in lines(&log) {
        let step = if start { 1 } else { -1 };
        if mode == "write" {
            writers += step;
        } else {
            readers += step;
        }
        assert!(writers <= 1 && (writers == 0 || readers == 0), "a writer was not alone");
        done += usize::from(!start);
    }
    assert_eq!(done, 8);
}
