//! The partition suite's scenario with the `leasehold` binary (the others are in
//! `tests/partitions.rs` of package `leasehold`, which shares its harness,
//! `tests/support/net.rs`; `scripts/partitions.sh` runs both, as root):
//!
//! | scenario | what must hold |
//! |---|---|
//! | `the_cli_on_a_host_that_is_cut_off` | `leasehold lock`'s command on the cut host writes nothing after the next host's command began |
#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};
use support::net::{Net, NetEtcd};

/// The scenario, under the same path as the others (`partition_suite::…`):
/// `scripts/partitions.sh` runs them one at a time.
mod partition_suite {
    use super::*;

    /// Scenario 5: `leasehold lock` on a host that is cut off while its command writes to a log
    /// (on the file system the hosts share); `leasehold lock` on another host gets the lock
    /// after the lease expires. Every line of the first command precedes the second's first.
    #[test]
    fn the_cli_on_a_host_that_is_cut_off() {
        let Some(net) = Net::new_or_skip(3, "the_cli_on_a_host_that_is_cut_off") else { return };
        let etcd = NetEtcd::start(&net, &[0]);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let writer = r#"i=0; while :; do echo "$WHO $i $(date +%s%N)" >> "$LOG"; i=$((i+1)); sleep 0.02; done"#;
        let lock = |host: usize, who: &str| {
            net.command(host, env!("CARGO_BIN_EXE_leasehold"))
                .args(["--endpoints", &etcd.endpoints(&[0])[0], "lock", "--ttl", "2s", "--grace", "300ms", "cli-cut"])
                .args(["--", "sh", "-c", writer])
                .env("WHO", who)
                .env("LOG", &log)
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        };
        let lines = || -> Vec<(String, u128)> {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    Some((w.first()?.to_string(), w.get(2)?.parse().ok()?))
                })
                .collect()
        };
        let count = |who: &str| lines().iter().filter(|(w, _)| w == who).count();
        let wait = |what: &str, limit: Duration, done: &dyn Fn() -> bool| {
            let until = Instant::now() + limit;
            while !done() {
                assert!(Instant::now() < until, "{what} within {limit:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        let mut a = lock(1, "A");
        wait("A's command runs", Duration::from_secs(20), &|| count("A") > 0);
        let mut b = lock(2, "B");
        std::thread::sleep(Duration::from_millis(300)); // B queues
        net.cut(1);
        wait("B's command runs for a while", Duration::from_secs(20), &|| count("B") >= 10);
        let all = lines();
        let first_b = all.iter().position(|(w, _)| w == "B").unwrap();
        let last_a = all.iter().rposition(|(w, _)| w == "A").unwrap();
        assert!(
            last_a < first_b && all[last_a].1 < all[first_b].1,
            "the cut host's command wrote after the other's began: A's last line #{last_a}, B's first #{first_b}"
        );
        println!(
            "cli on a cut host: its command's last line {:.0} ms before the other host's first",
            (all[first_b].1 - all[last_a].1) as f64 / 1e6
        );
        net.heal(1);
        let code = a.wait().unwrap().code();
        assert_eq!(code, Some(122), "the cut host's leasehold says its lock was lost");
        let _ = b.kill();
        let _ = b.wait();
    }
}
