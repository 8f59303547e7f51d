//! The `leasehold` binary against a real etcd started by the harness.
#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::etcd::EtcdCluster;

fn leasehold(etcd: &EtcdCluster) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    c.env("LEASEHOLD_ENDPOINTS", etcd.url());
    c
}

fn one_line_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("leasehold: "), "{err:?}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err:?}");
    err
}

/// 10 concurrent `leasehold lock` processes append start/end lines to one file: the
/// sections never overlap and the tokens strictly increase in file order.
#[test]
fn ten_processes_never_overlap_and_tokens_increase() {
    let etcd = EtcdCluster::single();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = format!(
        "echo \"start $LEASEHOLD_FENCING_TOKEN\" >> '{0}'; sleep 0.02; echo \"end $LEASEHOLD_FENCING_TOKEN\" >> '{0}'",
        log.display()
    );
    let children: Vec<_> = (0..10)
        .map(|i| {
            let strategy = if i % 2 == 0 { "pessimistic" } else { "optimistic" };
            leasehold(&etcd)
                .args(["lock", "cli-shared", "--strategy", strategy, "--", "sh", "-c", &script])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<(&str, u64)> = text
        .lines()
        .map(|l| {
            let (what, token) = l.split_once(' ').unwrap();
            (what, token.parse().unwrap())
        })
        .collect();
    assert_eq!(lines.len(), 20, "{text}");
    let mut last = 0;
    for pair in lines.chunks(2) {
        assert_eq!(pair[0].0, "start", "overlap:\n{text}");
        assert_eq!(pair[1], ("end", pair[0].1), "overlap:\n{text}");
        assert!(pair[0].1 > last, "tokens not increasing:\n{text}");
        last = pair[0].1;
    }
}

fn wait_started(child: &mut std::process::Child) -> u32 {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    line.trim().strip_prefix("started ").expect("child announces itself").parse().unwrap()
}

/// A shell script that prints `started <what>` (e.g. `$$`), then holds until `marker`
/// exists (at most 30 s).
fn hold_until(marker: &std::path::Path, what: &str) -> String {
    format!(
        "echo started {what}; i=0; while [ ! -f '{}' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
        marker.display()
    )
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; only its state says it is dead.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// When etcd goes away, renewals fail and the command is killed before the lease could
/// have expired; the exit code says "lock lost".
#[test]
fn child_is_killed_when_renewals_fail() {
    let mut etcd = EtcdCluster::single();
    let mut tool = leasehold(&etcd)
        .args(["lock", "--ttl", "3s", "--grace", "1s", "cli-lost", "--", "sh", "-c", "echo started $$; exec sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = wait_started(&mut tool);
    let etcd_gone = Instant::now();
    etcd.kill(0);
    // The last renewal was sent before etcd died, so the lease cannot expire on the server
    // sooner than 3 s (the TTL) from now: the command must be dead by then.
    while alive(child) && etcd_gone.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let dead_after = etcd_gone.elapsed();
    assert!(!alive(child), "the command survived");
    assert!(dead_after < Duration::from_secs(3), "killed after {dead_after:?}, past the TTL");
    let out = tool.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(122), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A supervisor paused past its TTL: its watchdog kills the command within the TTL, while
/// the supervisor is still stopped; on resume it exits "lock lost". (Before the watchdog
/// it could only kill on resume.)
#[test]
fn paused_supervisor_kills_on_resume() {
    let etcd = EtcdCluster::single();
    let mut tool = leasehold(&etcd)
        .args(["lock", "--ttl", "2s", "cli-paused", "--", "sh", "-c", "echo started $$; exec sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = wait_started(&mut tool);
    let pid = tool.id().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let paused = Instant::now();
    std::thread::sleep(Duration::from_secs(3)); // the fault: paused past the TTL
    assert!(!alive(child), "the command outlived its stopped supervisor's lease ({:?})", paused.elapsed());
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    let out = tool.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(122), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!alive(child));
}

/// `etcdctl lock` and `leasehold lock` exclude each other, both ways; --try and --timeout
/// give their exit codes while the other holds.
#[test]
fn interop_with_etcdctl_lock() {
    let etcd = EtcdCluster::single();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("go");
    let hold = hold_until(&marker, "$$");

    // etcdctl holds.
    let mut ctl =
        etcd.etcdctl().args(["lock", "cli-interop", "--", "sh", "-c", &hold]).stdout(Stdio::piped()).spawn().unwrap();
    wait_started(&mut ctl);
    let out = leasehold(&etcd).args(["lock", "--try", "cli-interop", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(123));
    one_line_error(&out);
    let out = leasehold(&etcd).args(["lock", "--timeout", "300ms", "cli-interop", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(124));
    one_line_error(&out);
    std::fs::write(&marker, "").unwrap();
    assert!(ctl.wait().unwrap().success());
    std::fs::remove_file(&marker).unwrap();

    // leasehold holds; etcdctl --try... etcdctl has no try: it must wait until we finish.
    let mut ours =
        leasehold(&etcd).args(["lock", "cli-interop", "--", "sh", "-c", &hold]).stdout(Stdio::piped()).spawn().unwrap();
    wait_started(&mut ours);
    let mut ctl = etcd
        .etcdctl()
        .args(["lock", "cli-interop", "--", "sh", "-c", "echo etcdctl-ran"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // etcdctl must still be waiting while we hold: it has not printed anything.
    let waited = Instant::now();
    let mut still_waiting = true;
    while waited.elapsed() < Duration::from_millis(500) {
        if ctl.try_wait().unwrap().is_some() {
            still_waiting = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(still_waiting, "etcdctl ran while leasehold held the lock");
    std::fs::write(&marker, "").unwrap();
    assert!(ours.wait().unwrap().success());
    let out = ctl.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "etcdctl-ran");
}

/// Bad input and unreachable endpoints: one-line errors and the documented exit codes.
#[test]
fn errors_are_one_line_with_documented_codes() {
    let bin = env!("CARGO_BIN_EXE_leasehold");
    let cases: &[(&[&str], i32)] = &[
        (&["--no-such-flag"], 2),
        (&["rwlock", "x", "--", "true"], 2),
        (&["lock", "--ttl", "banana", "x", "--", "true"], 2),
        (&["--endpoints", "memory://", "lock", "bad/name", "--", "true"], 2),
        (&["--endpoints", "memory://", "lock", "--ttl", "2h", "x", "--", "true"], 2),
        (&["--endpoints", "memory://", "lock", "x", "--", "/no/such/command"], 127),
        (&["--endpoints", "zk://127.0.0.1:1", "lock", "x", "--", "true"], 2),
    ];
    for (args, code) in cases {
        let out = Command::new(bin).args(*args).env_remove("LEASEHOLD_ENDPOINTS").output().unwrap();
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        one_line_error(&out);
    }
    let closed = support::etcd::free_port();
    let started = Instant::now();
    let out = Command::new(bin)
        .args([
            "--endpoints",
            &format!("etcd://127.0.0.1:{closed}"),
            "--connect-timeout",
            "1s",
            "lock",
            "x",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(one_line_error(&out).contains("connect"));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Examples:"));
}

/// Appends "start"/"end" lines to `log`, holding for a moment in between.
fn section_script(log: &std::path::Path) -> String {
    format!(
        "echo \"start $LEASEHOLD_FENCING_TOKEN\" >> '{0}'; sleep 0.1; echo \"end $LEASEHOLD_FENCING_TOKEN\" >> '{0}'",
        log.display()
    )
}

/// The most sections open at once in a start/end log.
fn max_concurrent(log: &std::path::Path) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap();
    let (mut open, mut max, mut done) = (0usize, 0usize, 0usize);
    for line in text.lines() {
        if line.starts_with("start") {
            open += 1;
            max = max.max(open);
        } else {
            open -= 1;
            done += 1;
        }
    }
    (max, done)
}

/// Six `leasehold semaphore --permits 2` processes: never more than two inside at once.
#[test]
fn semaphore_limit_holds_across_processes() {
    let etcd = EtcdCluster::single();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = section_script(&log);
    let children: Vec<_> = (0..6)
        .map(|i| {
            let strategy = if i % 3 == 2 { "optimistic" } else { "pessimistic" };
            leasehold(&etcd)
                .args(["semaphore", "--permits", "2", "--strategy", strategy, "cli-sem", "--", "sh", "-c", &script])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let (max, done) = max_concurrent(&log);
    assert_eq!(done, 6);
    assert!(max <= 2, "{max} holders at once");
    let out = leasehold(&etcd).args(["semaphore", "--permits", "3", "cli-sem", "--", "true"]).output().unwrap();
    // Bad input (the table's 2), not leasehold failing (125, until 2026-12-05).
    assert_eq!(out.status.code(), Some(2), "a different permit count must be refused");
    assert!(one_line_error(&out).contains("permits"));
}

/// SIGKILL of the process holding a permit (or leadership): its lease expires and the next
/// process gets in within about one TTL.
#[test]
fn permit_and_leadership_come_back_after_sigkill() {
    let etcd = EtcdCluster::single();
    for args in [&["semaphore", "--permits", "1", "cli-crash"][..], &["elect", "cli-crash-elect"][..]] {
        let mut holder = leasehold(&etcd)
            .args(args)
            .args(["--ttl", "2s", "--", "sh", "-c", "echo started $$; exec sleep 60"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let child = wait_started(&mut holder);
        let out = leasehold(&etcd).args(args).args(["--try", "--", "true"]).output().unwrap();
        assert_eq!(out.status.code(), Some(123), "{args:?} must be taken");
        holder.kill().unwrap(); // SIGKILL: no release, no revoke
        holder.wait().unwrap();
        let _ = Command::new("kill").args(["-KILL", &child.to_string()]).status();
        let started = Instant::now();
        let out = leasehold(&etcd).args(args).args(["--timeout", "20s", "--", "true"]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?} came back after {:?}", started.elapsed());
    }
}

/// `etcdctl elect` and `leasehold elect` see each other's leaders, both ways.
#[test]
fn interop_with_etcdctl_elect() {
    let etcd = EtcdCluster::single();
    // etcdctl leads; leasehold sees its value, and cannot lead.
    let mut ctl = etcd.etcdctl().args(["elect", "cli-elect", "from-etcdctl"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut reader = BufReader::new(ctl.stdout.take().unwrap());
    let (mut key, mut value) = (String::new(), String::new());
    reader.read_line(&mut key).unwrap();
    reader.read_line(&mut value).unwrap();
    assert_eq!(value.trim(), "from-etcdctl");
    let out = leasehold(&etcd).args(["leader", "cli-elect"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("leader from-etcdctl ") && text.contains(key.trim()), "{text}");
    let out = leasehold(&etcd).args(["elect", "--try", "cli-elect", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(123));
    // SIGINT makes etcdctl resign (SIGKILL would leave its 60 s lease behind).
    Command::new("kill").args(["-INT", &ctl.id().to_string()]).status().unwrap();
    ctl.wait().unwrap();

    // leasehold leads (after etcdctl's lease is gone); etcdctl's observer sees our value.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("go");
    let hold = hold_until(&marker, "$$");
    let mut ours = leasehold(&etcd)
        .args(["elect", "cli-elect", "--value", "from-leasehold", "--timeout", "20s", "--", "sh", "-c", &hold])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_started(&mut ours);
    let mut observer = etcd.etcdctl().args(["elect", "-l", "cli-elect"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut reader = BufReader::new(observer.stdout.take().unwrap());
    let (mut key, mut value) = (String::new(), String::new());
    reader.read_line(&mut key).unwrap();
    reader.read_line(&mut value).unwrap();
    assert_eq!(value.trim(), "from-leasehold");
    observer.kill().unwrap();
    observer.wait().unwrap();
    std::fs::write(&marker, "").unwrap();
    assert!(ours.wait().unwrap().success());
}

/// `leasehold elect --observe --json` prints each change on one line, including "no leader".
#[test]
fn observe_prints_every_change() {
    let etcd = EtcdCluster::single();
    /// The observer process, killed however the test ends.
    struct Observer(std::process::Child);
    impl Drop for Observer {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut observer = Observer(
        leasehold(&etcd).args(["elect", "cli-observe", "--observe", "--json"]).stdout(Stdio::piped()).spawn().unwrap(),
    );
    let mut reader = BufReader::new(observer.0.stdout.take().unwrap());
    let mut next = || {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        serde_json::from_str::<serde_json::Value>(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    };
    assert_eq!(next(), serde_json::json!({ "leader": null }));
    for value in ["one", "two"] {
        let out = leasehold(&etcd).args(["elect", "cli-observe", "--value", value, "--", "true"]).output().unwrap();
        assert!(out.status.success());
        let leader = next();
        assert_eq!(leader["leader"], value, "{leader}");
        assert!(
            leader["token"].as_u64().is_some() && leader["key"].is_string() && leader["lease"].is_string(),
            "{leader}"
        );
        assert_eq!(next(), serde_json::json!({ "leader": null }), "resign must show the gap");
    }
    drop(observer); // killed
}

/// `--lock-delay`: after a holder is SIGKILLed (no clean release), the next `lock` / `elect`
/// runs its command no sooner than the delay after the old lease could have expired; after
/// a clean exit the next one runs at once.
#[test]
fn lock_delay_after_sigkill_but_not_after_a_clean_exit() {
    let etcd = EtcdCluster::single();
    let delay = Duration::from_secs(3);
    for args in [&["lock", "cli-ld"][..], &["elect", "cli-ld-elect"][..]] {
        let delayed = |extra: &[&str]| {
            let mut c = leasehold(&etcd);
            c.args(args).args(["--lock-delay", "3s", "--ttl", "2s"]).args(extra);
            c
        };
        // A clean exit clears the marker: the next holder runs at once.
        let out = delayed(&["--", "true"]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let started = Instant::now();
        let out = delayed(&["--try", "--", "true"]).output().unwrap();
        assert!(out.status.success(), "{args:?}: a clean exit left a delay: {}", String::from_utf8_lossy(&out.stderr));
        assert!(started.elapsed() < delay);

        let mut holder =
            delayed(&["--", "sh", "-c", "echo started $$; exec sleep 60"]).stdout(Stdio::piped()).spawn().unwrap();
        let child = wait_started(&mut holder);
        holder.kill().unwrap(); // SIGKILL: no release, no revoke
        holder.wait().unwrap();
        let _ = Command::new("kill").args(["-KILL", &child.to_string()]).status();
        let killed = Instant::now();
        let out = delayed(&["--timeout", "30s", "--", "true"]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let waited = killed.elapsed();
        assert!(waited >= delay, "{args:?}: ran {waited:?} after the SIGKILL (delay {delay:?})");
        assert!(waited < Duration::from_secs(20), "{args:?}: came back only after {waited:?}");
    }
}

/// `status` shows the holder (with the token its command got) and the waiters, oldest
/// first, in text and JSON; a free name says so; a semaphore's first N entries hold.
#[test]
fn status_shows_holder_and_waiters() {
    let etcd = EtcdCluster::single();
    let status = |args: &[&str]| {
        let out = leasehold(&etcd).arg("status").args(args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(status(&["cli-status"]).trim(), "cli-status: free");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("go");
    let hold = hold_until(&marker, "$LEASEHOLD_FENCING_TOKEN");
    let mut holder =
        leasehold(&etcd).args(["lock", "cli-status", "--", "sh", "-c", &hold]).stdout(Stdio::piped()).spawn().unwrap();
    let token = wait_started(&mut holder);
    let mut waiter = leasehold(&etcd).args(["lock", "cli-status", "--", "true"]).spawn().unwrap();
    // The waiter queues in its own time: poll (bounded) until it shows.
    let mut text = String::new();
    for _ in 0..200 {
        text = status(&["cli-status"]);
        if text.starts_with("cli-status: 1 holding, 1 waiting") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "cli-status: 1 holding, 1 waiting", "{text}");
    assert!(lines[1].starts_with(&format!("holding token={token} lease=")), "{text}");
    assert!(lines[2].starts_with("waiting token="), "{text}");
    let waiting_token: u64 = lines[2]["waiting token=".len()..].split(' ').next().unwrap().parse().unwrap();
    assert!(waiting_token > token as u64, "{text}");

    let json: serde_json::Value = serde_json::from_str(&status(&["cli-status", "--json"])).unwrap();
    assert_eq!(json["name"], "cli-status", "{json}");
    assert_eq!(json["holding"][0]["token"].as_u64(), Some(token as u64), "{json}");
    assert!(json["holding"][0]["lease"].is_string() && json["holding"][0]["key"].is_string(), "{json}");
    assert_eq!(json["waiting"][0]["token"].as_u64(), Some(waiting_token), "{json}");
    // Read as a semaphore of 2 permits, both entries hold.
    assert!(status(&["cli-status", "--permits", "2"]).starts_with("cli-status: 2 holding, 0 waiting"));

    std::fs::write(&marker, "").unwrap();
    assert!(holder.wait().unwrap().success());
    assert!(waiter.wait().unwrap().success());
    assert_eq!(status(&["cli-status"]).trim(), "cli-status: free");
}

/// `release NAME --lease ID` frees a holder's key: a stale one (wrong token) releases
/// nothing (exit 1), a bad lease id is a usage error (exit 2); the right one prints what it
/// released, the holder's command is killed (exit 122, "revoked") and the waiter runs.
#[test]
fn release_revokes_a_holder_and_a_stale_release_does_nothing() {
    let etcd = EtcdCluster::single();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("go");
    let hold = hold_until(&marker, "$LEASEHOLD_LEASE $LEASEHOLD_FENCING_TOKEN");
    let mut holder = leasehold(&etcd)
        .args(["lock", "cli-release", "--", "sh", "-c", &hold])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let (lease, token) = line.trim().strip_prefix("started ").unwrap().split_once(' ').unwrap();
    let (lease, token) = (lease.to_owned(), token.parse::<u64>().unwrap());
    let waiter = leasehold(&etcd)
        .args(["lock", "cli-release", "--", "sh", "-c", "echo $LEASEHOLD_FENCING_TOKEN"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The waiter queues in its own time: poll (bounded) until it shows.
    let status = || leasehold(&etcd).args(["status", "cli-release"]).output().unwrap();
    for _ in 0..200 {
        if String::from_utf8_lossy(&status().stdout).starts_with("cli-release: 1 holding, 1 waiting") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let release = |args: &[&str]| leasehold(&etcd).args(["release", "cli-release"]).args(args).output().unwrap();

    let stale = release(&["--lease", &lease, "--token", &(token - 1).to_string()]);
    assert_eq!(stale.status.code(), Some(1), "{stale:?}");
    assert!(one_line_error(&stale).contains("nothing to release"), "{stale:?}");
    let bad = release(&["--lease", "not-hex"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(one_line_error(&bad).contains("not a lease id"), "{bad:?}");
    let now = String::from_utf8(status().stdout).unwrap();
    assert!(
        now.contains(&format!("holding token={token} lease={lease}")),
        "a stale release removed the holder:\n{now}"
    );

    let done = release(&["--lease", &lease]);
    assert!(done.status.success(), "{done:?}");
    let printed = String::from_utf8(done.stdout).unwrap();
    assert!(printed.starts_with(&format!("released token={token} lease={lease} key=")), "{printed}");
    let out = holder.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(122), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"), "{out:?}");
    let next = waiter.wait_with_output().unwrap();
    assert!(next.status.success(), "{next:?}");
    assert!(String::from_utf8(next.stdout).unwrap().trim().parse::<u64>().unwrap() > token);
    let again = release(&["--lease", &lease]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    std::fs::write(&marker, "").unwrap();
}

/// `lock NAME` without a command holds until SIGINT, printing the key and the token (as
/// `etcdctl lock NAME` does), and releases on SIGINT (exit 0).
#[test]
fn lock_without_a_command_holds_until_interrupted() {
    let etcd = EtcdCluster::single();
    let mut tool = leasehold(&etcd).args(["lock", "cli-hold"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(tool.stdout.take().unwrap()).lines();
    let key = out.next().unwrap().unwrap();
    let token = out.next().unwrap().unwrap();
    assert!(key.starts_with("cli-hold/"), "{key}");
    assert!(token.strip_prefix("token ").is_some_and(|t| t.parse::<u64>().is_ok()), "{token}");
    let busy = leasehold(&etcd).args(["lock", "--try", "cli-hold", "--", "true"]).output().unwrap();
    assert_eq!(busy.status.code(), Some(123), "held while the tool runs");
    Command::new("kill").args(["-INT", &tool.id().to_string()]).status().unwrap();
    assert_eq!(tool.wait().unwrap().code(), Some(0));
    let free = leasehold(&etcd).args(["lock", "--try", "cli-hold", "--", "true"]).output().unwrap();
    assert_eq!(free.status.code(), Some(0), "released on SIGINT");
}

/// Interrupted while waiting: exit 130, and the queued key is gone at once (the session is
/// closed), not a TTL later.
#[test]
fn interrupted_while_waiting_leaves_no_queued_key() {
    let etcd = EtcdCluster::single();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("release");
    let mut holder = leasehold(&etcd)
        .args(["lock", "cli-int", "--", "sh", "-c", &hold_until(&marker, "$$")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_started(&mut holder);
    let mut waiter = leasehold(&etcd).args(["lock", "--ttl", "30s", "cli-int", "--", "true"]).spawn().unwrap();
    let queued = || {
        let out = leasehold(&etcd).args(["status", "cli-int", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["waiting"].as_array().map_or(0, Vec::len)
    };
    let until = Instant::now() + Duration::from_secs(10);
    while queued() == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(queued(), 1, "the waiter queued");
    Command::new("kill").args(["-INT", &waiter.id().to_string()]).status().unwrap();
    assert_eq!(waiter.wait().unwrap().code(), Some(130));
    assert_eq!(queued(), 0, "the queued key stayed after the interrupt (its TTL is 30 s)");
    std::fs::write(&marker, "").unwrap();
    assert!(holder.wait().unwrap().success());
}

/// `rwlock`: readers share, a writer waits for them (`--try`: busy).
#[test]
fn rwlock_readers_share_a_writer_waits() {
    let etcd = EtcdCluster::single();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("release");
    let mut readers: Vec<_> = (0..2)
        .map(|i| {
            let _ = i;
            let script = hold_until(&marker, "$$");
            let mut r = leasehold(&etcd)
                .args(["rwlock", "--read", "cli-rw", "--", "sh", "-c", &script])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            wait_started(&mut r);
            r
        })
        .collect();
    let writer = leasehold(&etcd).args(["rwlock", "--write", "--try", "cli-rw", "--", "true"]).output().unwrap();
    assert_eq!(writer.status.code(), Some(123), "a writer while two readers hold");
    let usage = leasehold(&etcd).args(["rwlock", "cli-rw", "--", "true"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2), "--read or --write is required");
    std::fs::write(&marker, "").unwrap();
    for r in &mut readers {
        assert!(r.wait().unwrap().success());
    }
    let writer = leasehold(&etcd).args(["rwlock", "--write", "--try", "cli-rw", "--", "true"]).output().unwrap();
    assert_eq!(writer.status.code(), Some(0));
}

/// `status` reads a semaphore's stored permit count; endpoints as etcdctl takes them
/// (`host:port`); durations such as `1m30s`.
#[test]
fn status_reads_the_stored_count_and_flags_read_like_etcdctl() {
    let etcd = EtcdCluster::single();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("release");
    let mut permit = leasehold(&etcd)
        .args(["semaphore", "--permits", "2", "cli-sem-count", "--", "sh", "-c", &hold_until(&marker, "$$")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_started(&mut permit);
    let plain = etcd.endpoints().join(",");
    let out = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(["--endpoints", &plain, "status", "cli-sem-count", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["permits"].as_u64(), v["holding"].as_array().map(Vec::len)), (Some(2), Some(1)), "{v}");
    let text = leasehold(&etcd).args(["status", "cli-sem-count"]).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("cli-sem-count: 1 holding, 0 waiting (2 permits)"));
    std::fs::write(&marker, "").unwrap();
    assert!(permit.wait().unwrap().success());
    let out =
        leasehold(&etcd).args(["lock", "--timeout", "1m30s", "--ttl", "1m", "cli-dur", "--", "true"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A release that cannot be done in time (the store stopped as the command ends) is
/// reported, not silent.
#[test]
fn a_release_that_times_out_is_reported() {
    let etcd = EtcdCluster::single();
    let member = etcd.pid(0).unwrap();
    let out = leasehold(&etcd)
        .args(["lock", "--ttl", "30s", "cli-slow-release", "--", "sh", "-c", &format!("kill -STOP {member}")])
        .output()
        .unwrap();
    etcd.signal(0, "CONT");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "the command's status: {err}");
    assert!(err.contains("release did not finish") || err.contains("release failed"), "not reported: {err:?}");
}

/// Every fd the command inherits reaches it (systemd's socket activation passes fds from 3
/// on; `cmd 3<file`), and arguments that are not UTF-8 reach it unchanged. (Before, fd 3
/// was taken by the gate, and a non-UTF-8 argument panicked leasehold.)
#[test]
fn the_command_gets_its_fds_and_bytes_unchanged() {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let (three, four) = (dir.path().join("three"), dir.path().join("four"));
    std::fs::write(&three, "fd three\n").unwrap();
    std::fs::write(&four, "fd four\n").unwrap();
    let (f3, f4) = (std::fs::File::open(&three).unwrap(), std::fs::File::open(&four).unwrap());
    let (r3, r4) = (f3.as_raw_fd(), f4.as_raw_fd());
    let mut c = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    c.args(["--endpoints", "memory://", "lock", "fds", "--", "sh", "-c", "cat <&3; cat <&4; printf %s \"$1\"", "sh"])
        .arg(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    // SAFETY: dup2 is async-signal-safe; the fds stay open in the parent until the child ran.
    unsafe {
        c.pre_exec(move || {
            // Out of the way first (r3 or r4 may be 3 or 4), then onto 3 and 4 (dup2 clears
            // close-on-exec on the copy).
            let (h3, h4) = (libc::fcntl(r3, libc::F_DUPFD_CLOEXEC, 100), libc::fcntl(r4, libc::F_DUPFD_CLOEXEC, 100));
            if h3 < 0 || h4 < 0 || libc::dup2(h3, 3) < 0 || libc::dup2(h4, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"fd three\nfd four\ncaf\xe9");
    drop((f3, f4));

    let out = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(["--endpoints", "memory://", "lock"])
        .arg(std::ffi::OsStr::from_bytes(b"caf\xe9"))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(one_line_error(&out).contains("UTF-8"), "{}", String::from_utf8_lossy(&out.stderr));
}
