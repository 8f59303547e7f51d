//! Network partitions and slow links (issue 19): etcd members and client processes on
//! hosts of their own — network namespaces on a private bridge (`tests/support/net.rs`) —
//! cut off, isolated, slowed and flapped, as Jepsen tests etcd, on one machine.
//!
//! | scenario | what must hold |
//! |---|---|
//! | `a_client_cut_off_from_every_member` | its validity deadline is **before** the server expires its lease (margin measured per trial, never negative), and `lost()` fires within TTL / 4 of the deadline; after healing, its fenced write is refused and it is not valid; the next client gets the lock |
//! | `the_raft_leader_isolated_with_its_client` | the client attached only to the isolated leader: its deadline before the majority expires its lease, `lost()` within TTL / 4 of it; the majority elects a leader and serves the others |
//! | `a_slow_link_within_the_renewal_budget` | a round trip of 0.3–0.5 × TTL with jitter and 5 % loss from before the session opens: renewals get through (some trial renews), and the holder survives or is reported lost in time, never valid after the server expired its lease |
//! | `a_slow_link_beyond_the_renewal_budget` | a holder's link becomes 0.3–0.5 × TTL each way: the session is reported lost in time — never valid after the server expired it |
//! | `flapping_links_under_a_mixed_workload` | cuts and heals every 0.5–2 s for a minute: no stale write accepted, ≤ 1 mutex and ≤ 2 permit holders at any revision, acknowledged writes stored (key by key), no key left under a live lease, every worker done soon after the last heal |
//!
//! The scenario with the `leasehold` binary, `the_cli_on_a_host_that_is_cut_off`, is in
//! `cli/tests/partitions.rs` (package `leasehold-cli`: a test can run only its own package's
//! binary); `scripts/partitions.sh` runs both.
//!
//! Times from different processes are compared on `CLOCK_MONOTONIC`, one clock for the
//! whole machine. The server's expiry of a lease is when the delete event of its key
//! reaches a watcher in the test process (over a link that is never cut), timed by a task
//! that reads the watch all along ([`Deletes`]), not when the test gets round to it.
mod support;

#[allow(dead_code)]
#[path = "faults/checker.rs"]
mod checker;
#[path = "partitions/worker.rs"]
mod worker;

use leasehold::backend::WatchEvent;
use leasehold::Client;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use support::net::{mono_ns, Link, Net, NetEtcd, Proxy};

/// Where the mixed workload's fenced writes go (read by the fault suite's checker).
pub const HIST: &str = "part/hist/";

/// The worker side (ignored: the scenarios run it, in their hosts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the worker of the partition suite, which runs it"]
async fn partition_worker() {
    worker::main().await;
}

/// A worker process in host `host`, with its output lines on a channel.
struct Worker {
    child: Child,
    lines: Receiver<String>,
    name: String,
}

impl Worker {
    fn spawn(net: &Net, host: usize, name: &str, env: &[(&str, String)]) -> Worker {
        let mut cmd = net.command(host, std::env::current_exe().unwrap());
        cmd.args(["--ignored", "--exact", "partition_worker", "--nocapture", "--test-threads=1"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        let who = name.to_owned();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                // libtest's "test partition_worker ... " has no newline of its own.
                let line = match line.rsplit_once("partition_worker ... ") {
                    Some((_, rest)) => rest.to_owned(),
                    None => line,
                };
                if std::env::var_os("LEASEHOLD_PART_TRACE").is_some() {
                    eprintln!("[{who}] {line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Worker { child, lines, name: name.to_owned() }
    }

    /// The next line starting with `word`, within `limit` (its other words).
    fn expect(&self, word: &str, limit: Duration) -> Vec<String> {
        self.wait_for(word, limit).unwrap_or_else(|| panic!("{}: no {word} within {limit:?}", self.name))
    }

    fn wait_for(&self, word: &str, limit: Duration) -> Option<Vec<String>> {
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let mut words = line.split_whitespace().map(str::to_owned);
                    if words.next().as_deref() == Some(word) {
                        return Some(words.collect());
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        let _ = writeln!(stdin, "{line}");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn holder(net: &Net, host: usize, who: &str, endpoints: &str, name: &str, ttl: Duration) -> Worker {
    holder_with(net, host, who, endpoints, name, ttl, Duration::from_secs(1))
}

/// A `hold` worker whose requests time out after `request`.
fn holder_with(
    net: &Net,
    host: usize,
    who: &str,
    endpoints: &str,
    name: &str,
    ttl: Duration,
    request: Duration,
) -> Worker {
    let env = [
        ("LEASEHOLD_PART_ROLE", "hold".to_owned()),
        ("LEASEHOLD_PART_ENDPOINTS", endpoints.to_owned()),
        ("LEASEHOLD_PART_NAME", name.to_owned()),
        ("LEASEHOLD_PART_TTL_MS", ttl.as_millis().to_string()),
        ("LEASEHOLD_PART_REQUEST_MS", request.as_millis().to_string()),
    ];
    Worker::spawn(net, host, who, &env)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The deletes under a prefix, each timed (`CLOCK_MONOTONIC` ns) as it reaches the test
/// process: a task reads the watch all along, so a delete that came while the test waited
/// for something else keeps its own time. A key may be deleted more than once (a lock
/// attempt that failed in transit cleans its key up, and the next attempt of the same
/// session makes it again): every time is kept.
struct Deletes {
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<u64>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Deletes {
    fn watch(rt: &tokio::runtime::Runtime, client: &Client, prefix: &str) -> Deletes {
        let mut watch = rt.block_on(client.backend().watch_prefix(prefix)).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, Vec<u64>>::new()));
        let record = seen.clone();
        let task = rt.spawn(async move {
            loop {
                let batch = watch.next().await.expect("the test's watch");
                let now = mono_ns();
                for e in batch {
                    if let WatchEvent::Delete { key, .. } = e {
                        record.lock().unwrap().entry(key).or_default().push(now);
                    }
                }
            }
        });
        Deletes { seen, task }
    }

    /// When `key` was first deleted after `after` (its lease expired or was revoked),
    /// waiting up to `limit`.
    fn of(&self, key: &str, after: u64, limit: Duration) -> u64 {
        let until = Instant::now() + limit;
        loop {
            if let Some(&t) = self.seen.lock().unwrap().get(key).and_then(|ts| ts.iter().find(|&&t| t > after)) {
                return t;
            }
            assert!(!self.task.is_finished(), "the test's watch ended");
            assert!(Instant::now() < until, "{key} never expired within {limit:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Deletes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A holder's last validity deadline and its `LOST` time, from its lines.
///
/// What the holder believed is its deadline: `is_valid()` is false from it on, whatever the
/// scheduler does, so the scenarios compare the server's expiry with the deadline. The
/// `LOST` stamp is when a task of the worker ran after the `lost` signal fired (by a timer
/// at the deadline): on a loaded machine it comes later by the scheduling delay of two
/// tasks (a CI run saw it only 51 ms before the expiry), which says nothing about what the
/// holder believed. It is required, within a quarter of a TTL of the deadline ([`lost_soon`]:
/// the `lost()` signal stops the CLI's command and `with_lock`'s work), and reported.
fn loss(a: &Worker, limit: Duration) -> (u64, u64) {
    let until = Instant::now() + limit;
    let mut deadline = 0u64;
    while Instant::now() < until {
        let Ok(line) = a.lines.recv_timeout(until.saturating_duration_since(Instant::now())) else { break };
        let mut w = line.split_whitespace();
        match (w.next(), w.next().and_then(|n| n.parse::<u64>().ok())) {
            (Some("DEADLINE"), Some(d)) => deadline = deadline.max(d),
            (Some("LOST"), Some(t)) => {
                assert!(deadline > 0, "{} reported no validity deadline before its loss", a.name);
                return (deadline, t);
            }
            _ => {}
        }
    }
    panic!("{} never reported its session lost within {limit:?} (last deadline {deadline})", a.name)
}

/// `lost()` fired (the `LOST` stamp, `lost`) within TTL / 4 of the validity deadline: a
/// bound for the scheduling delay of the worker's tasks on a loaded machine, far above the
/// 1–2 ms seen, and below a renewal interval (TTL / 3), so a signal that waited for the next
/// renewal's failure would not pass.
fn lost_soon(what: &str, lost: u64, deadline: u64, ttl: Duration) {
    let late = lost as i128 - deadline as i128;
    assert!(
        late <= (ttl / 4).as_nanos() as i128,
        "{what}: lost() fired {:.0} ms after the validity deadline (TTL {ttl:?})",
        ms(late)
    );
}

fn ms(ns: i128) -> f64 {
    ns as f64 / 1e6
}

/// The scenarios, apart from the worker entry point: `scripts/partitions.sh` runs them
/// (`partition_suite`), one at a time.
mod partition_suite {
    use super::*;

    /// Scenario 1: a holding client cut off from every member (its host's link down), three
    /// trials. Its validity deadline must come before the server expires its lease, and its
    /// session be reported lost soon after it (see [`loss`]); after the heal, its fenced
    /// write is refused.
    #[test]
    fn a_client_cut_off_from_every_member() {
        let Some(net) = Net::new_or_skip(3, "a_client_cut_off_from_every_member") else { return };
        let etcd = NetEtcd::start(&net, &[0]);
        let rt = runtime();
        let client: Client = rt.block_on(Client::connect(&etcd.url(&[0]))).unwrap();
        let endpoints = etcd.endpoints(&[0]).join(",");
        let ttl = Duration::from_secs(2);
        let (mut margins, mut signal) = (Vec::new(), Vec::new());
        for trial in 0..3 {
            let name = format!("cut-{trial}");
            let deletes = Deletes::watch(&rt, &client, &format!("{name}/"));
            let mut a = holder(&net, 1, "A", &endpoints, &name, ttl);
            let key = a.expect("HELD", Duration::from_secs(20))[1].clone();
            let held = mono_ns(); // after the key was made
            let b = holder(&net, 2, "B", &endpoints, &name, ttl);
            net.cut(1);
            let (deadline, lost) = loss(&a, ttl * 3);
            let expired = deletes.of(&key, held, ttl * 5);
            b.expect("HELD", Duration::from_secs(10));
            let margin = expired as i128 - deadline as i128;
            assert!(
                margin >= 0,
                "trial {trial}: A believed it held until {:.0} ms after the server expired its lease",
                ms(-margin)
            );
            margins.push(ms(margin));
            lost_soon(&format!("trial {trial}"), lost, deadline, ttl);
            signal.push(ms(lost as i128 - deadline as i128));
            net.heal(1);
            a.say("write");
            let fenced = a.expect("FENCED", Duration::from_secs(15));
            assert_eq!(
                fenced.first().map(String::as_str),
                Some("refused"),
                "trial {trial}: A's late write: {fenced:?}"
            );
            assert_eq!(a.expect("VALID", Duration::from_secs(5)), ["false"], "trial {trial}");
        }
        println!(
            "cut off from every member: the deadline before the server's expiry by {margins:.0?} ms, LOST stamped \
             {signal:.0?} ms after the deadline (TTL 2 s)"
        );
    }

    /// Scenario 2: the raft leader isolated from the other members, with a client that talks to
    /// it alone. The old leader can commit nothing (it steps down); that client's validity
    /// deadline must come before the majority expires its lease, and its session be reported
    /// lost soon after it; the majority elects a leader and serves a client attached to it.
    #[test]
    fn the_raft_leader_isolated_with_its_client() {
        let Some(net) = Net::new_or_skip(5, "the_raft_leader_isolated_with_its_client") else { return };
        let etcd = NetEtcd::start(&net, &[0, 1, 2]);
        let leader = (0..50)
            .find_map(|_| {
                etcd.leader().or_else(|| {
                    std::thread::sleep(Duration::from_millis(100));
                    None
                })
            })
            .expect("a leader");
        let others: Vec<usize> = etcd.all().into_iter().filter(|&m| m != leader).collect();
        let rt = runtime();
        let observer: Client = rt.block_on(Client::connect(&etcd.url(&others))).unwrap();
        let deletes = Deletes::watch(&rt, &observer, "iso/");
        let ttl = Duration::from_secs(3);
        let a = holder(&net, 3, "A", &etcd.endpoints(&[leader]).join(","), "iso", ttl);
        let key = a.expect("HELD", Duration::from_secs(20))[1].clone();
        let held = mono_ns();
        let b = holder(&net, 4, "B", &etcd.endpoints(&others).join(","), "iso", ttl);
        for &m in &others {
            net.cut_link(etcd.host_of(leader), etcd.host_of(m));
        }
        let (deadline, lost) = loss(&a, Duration::from_secs(30));
        let expired = deletes.of(&key, held, Duration::from_secs(30));
        b.expect("HELD", Duration::from_secs(15));
        let margin = expired as i128 - deadline as i128;
        assert!(
            margin >= 0,
            "A (on the minority) believed it held {:.0} ms after the majority expired its lease",
            ms(-margin)
        );
        lost_soon("A (on the minority)", lost, deadline, ttl);
        let new_leader = etcd.leader();
        assert!(new_leader.is_some_and(|l| l != leader), "the majority has no new leader: {new_leader:?}");
        net.heal_links();
        println!(
            "leader isolated: A's deadline {:.0} ms before the majority expired its lease, LOST stamped {:.0} ms \
             after the deadline (TTL 3 s)",
            ms(margin),
            ms(lost as i128 - deadline as i128)
        );
    }

    /// Scenario 3a: a holder behind a slow, lossy link whose round trip is 0.3–0.5 × TTL (a
    /// proxy: 0.2 × TTL ± 0.05 × TTL each way, 5 % of chunks a retransmission later), from
    /// before its session opens, three trials. What must hold (issue 19): the session
    /// survives or is reported lost in time — its deadline, counted from each renewal's
    /// request, stays before the server's expiry, and it is never valid after the server
    /// expired it. And renewals work over this link: some trial renews (trials go on, up to
    /// eight, until one has; each trial renews with a fair chance, so three alone all failed
    /// to, by a code-read estimate, about once in 25 runs). Survival is not
    /// asserted: renewals go one at a time, each sent once the one before is answered, so a
    /// session lasts while every round trip stays under TTL / 2 — the top of this range, with
    /// a retransmission or chunks queued behind each other, goes past it (CI, 2026-12-03:
    /// sessions lost in time after 0, 1 and 7 renewals; in other runs 3 of 3 survived).
    #[test]
    fn a_slow_link_within_the_renewal_budget() {
        let ttl = Duration::from_secs(3);
        let each_way = Link {
            delay: ttl.mul_f64(0.2),
            jitter: ttl.mul_f64(0.05),
            loss: 0.05,
            retransmit: Duration::from_millis(200),
        };
        let trials = slow_link("a_slow_link_within_the_renewal_budget", "slow", ttl, each_way, false, 3..=8);
        // Safety is asserted in `slow_link` for every trial; here, that renewals get through
        // at all (a session that could never renew over this link, as before dc2c0a7, fails).
        assert!(trials.iter().any(|&(renewals, _)| renewals >= 1), "no trial renewed over the slow link: {trials:?}");
    }

    /// Scenario 3b: a holder whose link becomes slow once it holds: 0.4 × TTL ± 0.1 × TTL
    /// each way (a round trip of 0.6–1 × TTL), 5 % loss, two trials. Renewals, one at a time,
    /// cannot keep up: the session must be reported lost in time, never valid after the
    /// server expired it. (Over such a link from the start, a lock cannot be taken at all:
    /// the grant's answer comes with too little validity left for the acquisition's own
    /// round trip, and an acquisition answered past the deadline is refused.)
    #[test]
    fn a_slow_link_beyond_the_renewal_budget() {
        let ttl = Duration::from_secs(3);
        let each_way = Link {
            delay: ttl.mul_f64(0.4),
            jitter: ttl.mul_f64(0.1),
            loss: 0.05,
            retransmit: Duration::from_millis(200),
        };
        slow_link("a_slow_link_beyond_the_renewal_budget", "slower", ttl, each_way, true, 2..=2);
    }

    /// Holder A behind `link` (to the only member; from the moment it holds if `once_held`)
    /// for 10 s per trial, then its link cut; B (direct) queued behind it. A's last validity
    /// deadline must not be after the server's expiry. Returns, for each trial, the number
    /// of renewals A saw once it held and whether its session survived until the cut.
    fn slow_link(
        test: &str,
        prefix: &str,
        ttl: Duration,
        link: Link,
        once_held: bool,
        trials: std::ops::RangeInclusive<usize>,
    ) -> Vec<(usize, bool)> {
        let Some(net) = Net::new_or_skip(3, test) else { return vec![(usize::MAX, true); *trials.start()] };
        let etcd = NetEtcd::start(&net, &[0]);
        let rt = runtime();
        let client: Client = rt.block_on(Client::connect(&etcd.url(&[0]))).unwrap();
        let member = etcd.endpoints(&[0])[0].parse().unwrap();
        let proxy = Proxy::start(net.root, member, link);
        let mut margins = Vec::new();
        let mut outcomes = Vec::new();
        let mut renewals = Vec::new();
        // At least `trials.start()` trials; more, up to `trials.end()`, while none renewed.
        for trial in 0..*trials.end() {
            if trial >= *trials.start() && renewals.iter().any(|&r| r >= 1) {
                break;
            }
            let name = format!("{prefix}-{trial}");
            let deletes = Deletes::watch(&rt, &client, &format!("{name}/"));
            proxy.set(if once_held { Link::FAST } else { link });
            // Its requests may take a round trip of up to 1 × TTL, and more with a loss.
            let mut a = holder_with(&net, 1, "A", &proxy.addr.to_string(), &name, ttl, ttl * 2);
            let key = a.expect("HELD", Duration::from_secs(60))[1].clone();
            let held = mono_ns();
            proxy.set(link);
            let b = holder(&net, 2, "B", &etcd.endpoints(&[0]).join(","), &name, ttl);
            // 10 s: A either keeps its lease or loses it, and the store says which. Then A's
            // link is cut towards the server (requests on their way included; answers still
            // come back): a session that survived must be reported lost, its last deadline
            // before the server's expiry. The server's last renewal is then one whose answer
            // A may still get, so a deadline counted from an answer shows as one too late.
            std::thread::sleep(Duration::from_secs(10));
            let cut_at = mono_ns();
            proxy.cut(true);
            let (mut deadline, mut lost, mut moved) = (0u64, None, 0usize);
            let until = Instant::now() + ttl * 3;
            while lost.is_none() {
                let left = until.saturating_duration_since(Instant::now());
                let Ok(line) = a.lines.recv_timeout(left) else { break };
                let mut w = line.split_whitespace();
                match (w.next(), w.next().and_then(|n| n.parse::<u64>().ok())) {
                    (Some("DEADLINE"), Some(d)) => {
                        deadline = deadline.max(d);
                        moved += 1;
                    }
                    (Some("LOST"), Some(t)) => lost = Some(t),
                    _ => {}
                }
            }
            let survived = lost.is_some_and(|t| t >= cut_at);
            let _ = a.child.kill();
            let _ = a.child.wait();
            proxy.cut(false);
            assert!(lost.is_some(), "trial {trial}: A never reported its session lost after its link was cut");
            assert!(deadline > 0, "trial {trial}: A reported no validity deadline");
            let expired = deletes.of(&key, held, ttl * 5);
            let margin = expired as i128 - deadline as i128;
            assert!(
                margin >= 0,
                "trial {trial}: A believed it held {:.0} ms after the server expired its lease",
                ms(-margin)
            );
            margins.push(ms(margin));
            outcomes.push(if survived { "survived 10 s" } else { "lost" });
            renewals.push(moved.saturating_sub(1));
            b.expect("HELD", Duration::from_secs(15));
        }
        drop(proxy);
        println!(
            "{test}: A's sessions {outcomes:?} after {renewals:?} renewals; its last deadline before \
             the server's expiry by {margins:.0?} ms (TTL {ttl:?})"
        );
        renewals.into_iter().zip(outcomes.iter().map(|o| *o == "survived 10 s")).collect()
    }

    /// Scenario 4: three members and three worker processes on hosts of their own (two clients
    /// each, a mutex and a semaphore of 2, fenced history writes); for a minute a random host —
    /// member or client — is cut or healed every 0.5–2 s. The store's history must show no
    /// stale write, ≤ 1 mutex and ≤ 2 semaphore holders at any revision; every acknowledged
    /// write is stored and no refused one; no worker leaves a key under its live lease; every
    /// worker is done within 60 s of the last heal.
    #[test]
    fn flapping_links_under_a_mixed_workload() {
        use rand::{Rng, SeedableRng};
        const RUN: Duration = Duration::from_secs(60);
        let Some(net) = Net::new_or_skip(6, "flapping_links_under_a_mixed_workload") else { return };
        let etcd = NetEtcd::start(&net, &[0, 1, 2]);
        let endpoints = etcd.endpoints(&etcd.all()).join(",");
        let seed = mono_ns();
        let workers: Vec<Worker> = (0..3)
            .map(|w| {
                let env = [
                    ("LEASEHOLD_PART_ROLE", "mixed".to_owned()),
                    ("LEASEHOLD_PART_ENDPOINTS", endpoints.clone()),
                    ("LEASEHOLD_PART_TTL_MS", "2000".to_owned()),
                    ("LEASEHOLD_PART_WORKER", w.to_string()),
                    ("LEASEHOLD_PART_RUN_MS", RUN.as_millis().to_string()),
                    ("LEASEHOLD_PART_SEED", (seed + w as u64).to_string()),
                ];
                Worker::spawn(&net, 3 + w, &format!("worker {w}"), &env)
            })
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let started = Instant::now();
        let mut cut = [false; 6];
        let (mut cuts, mut heals) = (0, 0);
        while started.elapsed() < RUN - Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(rng.random_range(500..2000)));
            let h = rng.random_range(0..6);
            // Never more than one member cut at once: the majority stays, so there is progress.
            let members_cut = (0..3).filter(|&m| cut[m]).count();
            if cut[h] {
                net.heal(h);
                heals += 1;
            } else if h >= 3 || members_cut == 0 {
                net.cut(h);
                cuts += 1;
            } else {
                continue;
            }
            cut[h] = !cut[h];
        }
        for (h, &is_cut) in cut.iter().enumerate() {
            if is_cut {
                net.heal(h);
                heals += 1;
            }
        }
        let healed = Instant::now();
        let mut said = Vec::new();
        let mut leftovers = Vec::new();
        for w in &workers {
            let until = healed + RUN + Duration::from_secs(60);
            loop {
                let left = until.saturating_duration_since(Instant::now());
                let line = w
                    .lines
                    .recv_timeout(left)
                    .unwrap_or_else(|_| panic!("{} not done within 60 s of the heal", w.name));
                let mut words = line.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some("WRITE"), Some(s), Some(key)) => {
                        said.push((checker::Said::parse(s).unwrap(), key.to_owned()))
                    }
                    (Some("LEFTOVER"), Some(key), _) => leftovers.push(format!("{}: {key}", w.name)),
                    (Some("DONE"), ..) => break,
                    _ => {}
                }
            }
        }
        let rt = runtime();
        // Right after the heal the members may still be electing a leader: the connect (one
        // round trip) and the read are tried again for 30 s (a connect answered "etcdserver:
        // no leader" failed this check once, 2026-12-03).
        let url = etcd.url(&etcd.all());
        let (stored, _) = rt.block_on(async {
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                let read = match Client::connect(&url).await {
                    Ok(client) => client.backend().range_prefix(HIST, 0).await,
                    Err(e) => Err(e),
                };
                match read {
                    Ok(read) => return read,
                    Err(e) if Instant::now() < until => {
                        eprintln!("flapping: reading the history: {e}; again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("the history cannot be read 30 s after the heal: {e}"),
                }
            }
        });
        let mut violations = Vec::new();
        for (resource, limit) in [("part-mx", 1), ("part-sem", 2)] {
            let own: Vec<_> =
                stored.iter().filter(|kv| kv.key.starts_with(&format!("{HIST}{resource}/"))).cloned().collect();
            let report = checker::check(&checker::parse(resource, &own), limit, limit == 1);
            println!(
                "flapping: {resource}: {} writes accepted from {} holders, at most {} at once, {} violations",
                report.writes,
                report.holders,
                report.max_at_once,
                report.violations()
            );
            violations.extend(report.stale.iter().chain(&report.over_limit).cloned());
        }
        let keys: Vec<String> = stored.iter().map(|kv| kv.key.clone()).collect();
        let writes = checker::writes(&said, &keys);
        violations.extend(writes.lost.iter().chain(&writes.refused_stored).chain(&writes.unaccounted).cloned());
        violations.extend(leftovers.iter().map(|l| format!("left under a live lease: {l}")));
        println!(
        "flapping: {cuts} cuts and {heals} heals in {:.0} s; writes {} acknowledged, {} refused, {} unknown ({} stored); {} leftover keys; {} violations",
        RUN.as_secs_f64(),
        writes.acked,
        writes.refused,
        writes.unknown,
        writes.unknown_stored,
        leftovers.len(),
        violations.len()
    );
        assert!(violations.is_empty(), "violations:\n{}", violations.join("\n"));
        assert!(cuts >= 10 && writes.acked >= 50, "too little happened: {cuts} cuts, {} writes", writes.acked);
    }
}
