//! Fault-injection safety suite on a real 3-member etcd (anchors: Jepsen's etcd 3.4.3
//! analysis, Kleppmann's fencing tokens, Chubby's sequencers).
//!
//! # Setup
//! [`WORKERS`] OS processes (this test binary re-run in worker mode) each run three clients,
//! each with its own session of [`TTL`]: one on each mutex of [`MUTEXES`] (the two
//! strategies mixed, the second mutex with lock-delay) and one on the semaphore
//! [`SEMAPHORE`] of [`PERMITS`] permits. A client loops: acquire (waiting, with a timeout, or
//! cancelled at a random point by dropping the future), write an `enter` entry, hold for a
//! moment, write an `exit` entry, and (a third of the time) relock or reacquire — release
//! and queue again in one transaction — and hold once more, then release. It never checks `is_valid()` before writing: a
//! pause can always fall between such a check and the write, so the suite makes that worst
//! case the normal one. When the run is over, each client settles its session and lists
//! the keys under its lease **before** it closes it (the leftover check, below).
//!
//! # The fenced resource and what "accepted" means
//! The resource is etcd itself. Every write is one fenced transaction
//! (`fenced_write`, comparing the guard key's create revision) that creates a history entry
//! `faults/hist/<resource>/<token>/<worker>/<client>/<seq>`. An entry **is accepted** if and
//! only if it exists in the store afterwards; its `mod_revision` places it in the store's
//! single order. Workers report every write's key with what they saw (`WRITE acked|refused|
//! unknown <key>`: acknowledged, refused with `NotHeld`, unknown outcome after a transient
//! error); those reports are only cross-checked against the store.
//!
//! # Faults (the parent, while the workers run)
//! SIGKILL and restart of an etcd member (the raft leader, or a follower); SIGSTOP of the
//! leader member (a grey failure) for longer than an election; SIGSTOP of a worker process
//! **while it holds** something, for [`STOP_FOR`] > TTL, then SIGCONT (its leases expire;
//! on resume its pending writes must be refused and it must carry on with new sessions).
//! "Holds" means a hold's sleep between its `enter` and `exit` writes, which the worker
//! brackets with `HOLD` lines (a relock's wait in the queue is not one: a stop there loses
//! a place, not a write). The parent stops a worker it saw in one and, 50 ms later (time
//! for its reader threads to read what the stopped worker wrote), checks that it still is;
//! if not, it resumes it at once and tries another. A hold whose sleep overran by more than a TTL says so (`PAUSED`, with
//! what its exit write got), and the report counts the stops that landed in a hold;
//! and, inside the workers, acquisitions cancelled at random points. Every signal is sent
//! with `libc::kill`, its return value checked, and its effect seen in `/proc/<pid>/stat`
//! ([`Signals`](parent::Signals)); the suite asserts that each fault kind it lists was injected.
//!
//! # The checker ([`checker`])
//! - no stale write accepted: per mutex, in revision order, an accepted entry's token is
//!   never below a token accepted earlier (so the tokens the resource accepted strictly
//!   increase from holder to holder);
//! - at most N holders at once: a holder is "in" from its first to its last accepted entry
//!   (store revisions); at no revision are more than 1 (mutex) or [`PERMITS`] (semaphore)
//!   holders in;
//! - key by key ([`checker::writes`]): every write a worker saw acknowledged is in the
//!   store, nothing it saw refused is, and every stored entry is one a worker reported;
//! - no leftover key: after the run each client settles its session and lists the keys under
//!   its (still live) lease; it holds nothing then, so any key there is owned by no guard
//!   ([`ClientRun::check_leftovers`](client::ClientRun::check_leftovers));
//! - every worker exits 0 with a summary line, every client finished, and every error a
//!   client met is of an expected kind.
//!
//! # Controls: each check seen failing
//! The controls run the same workers with one violation made on purpose, and each asserts
//! that its check reports it: [`fault_suite_control_unfenced_writes_are_caught`] (writes
//! **without** the fence: stale writes), and, with a [`Plant`] made by worker 0,
//! [`fault_suite_control_over_admission_is_caught`] (at most N holders),
//! [`fault_suite_control_skipped_release_is_caught`] (leftover keys) and
//! [`fault_suite_control_lost_ack_is_caught`] (acknowledged writes stored). The unit tests
//! of the checker (in its module) feed it corrupted histories.
mod support;

#[path = "faults/checker.rs"]
mod checker;
#[path = "faults/client.rs"]
mod client;
#[path = "faults/parent.rs"]
mod parent;
#[path = "faults/report.rs"]
mod report;
#[path = "faults/worker.rs"]
mod worker;

use parent::{not_injected, planted, run_plan, Fault, Plan};
use report::publish;
use std::fmt::Write as _;
use std::time::Duration;
use worker::Plant;

// ---- knobs ---------------------------------------------------------------------------

/// Worker processes of the suite.
const WORKERS: usize = 5;
/// Session TTL of every client (renewed every TTL/3).
const TTL: Duration = Duration::from_secs(3);
/// How long the workers run; faults end at least [`QUIET_TAIL`] before.
const RUN: Duration = Duration::from_secs(70);
/// No fault in this last part of the run, so that workers finish on a healthy cluster.
const QUIET_TAIL: Duration = Duration::from_secs(5);
/// A stopped worker stays stopped this long: longer than the TTL, so its leases expire.
const STOP_FOR: Duration = Duration::from_secs(5);
/// A killed member stays down this long before it is restarted.
const MEMBER_DOWN: Duration = Duration::from_secs(2);
/// A paused (SIGSTOP) member stays paused this long (longer than etcd's 1 s election timeout).
const MEMBER_PAUSE: Duration = Duration::from_secs(2);
/// Quiet time between two faults.
const CALM: Duration = Duration::from_millis(1500);
/// How long the parent looks for a worker that holds something before stopping one anyway.
const FIND_HOLDER: Duration = Duration::from_secs(3);
/// A signal's effect must show in `/proc/<pid>/stat` within this long.
const SIGNAL_SEEN: Duration = Duration::from_secs(2);
/// The two mutexes; the second uses lock-delay ([`LOCK_DELAY`]).
const MUTEXES: [&str; 2] = ["fault-mx-a", "fault-mx-b"];
/// Lock-delay of the second mutex.
const LOCK_DELAY: Duration = Duration::from_millis(300);
/// The semaphore and its permits.
const SEMAPHORE: &str = "fault-sem";
const PERMITS: u32 = 2;
/// The semaphore of `PERMITS + 1` permits of [`Plant::OverAdmission`].
const PLANT_SEMAPHORE: &str = "fault-sem-plant";
/// How long the workers of a planted control run (no faults: the plant is made after it).
const CONTROL_RUN: Duration = Duration::from_secs(6);
/// How long a client holds, between its enter and exit writes (ms, uniform).
const HOLD_MS: std::ops::Range<u64> = 30..200;
/// The workers' per-request timeout (a request to a dead or paused member fails in time).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);
/// No queued (pessimistic) acquisition may wait longer (a paused holder's lease must expire
/// first, and a member restart may pause the cluster): a liveness bound, far above what is
/// expected.
const LIVENESS: Duration = Duration::from_secs(30);
/// Where the history entries live.
const HIST: &str = "faults/hist/";
/// Bound on any single worker operation that is not an acquisition (liveness, not speed).
const OP_LIMIT: Duration = Duration::from_secs(20);

const ENV_WORKER: &str = "LEASEHOLD_FAULTS_WORKER";
const ENV_ENDPOINTS: &str = "LEASEHOLD_FAULTS_ENDPOINTS";
const ENV_RUN_MS: &str = "LEASEHOLD_FAULTS_RUN_MS";
const ENV_FENCED: &str = "LEASEHOLD_FAULTS_FENCED";
const ENV_SEED: &str = "LEASEHOLD_FAULTS_SEED";
const ENV_PLANT: &str = "LEASEHOLD_FAULTS_PLANT";

// ---- the worker's entry point --------------------------------------------------------

/// Worker mode: the parent re-runs this test binary with `--ignored --exact fault_worker` and
/// the worker's settings in the environment ([`ENV_WORKER`] and the others), and this runs
/// [`worker::main`]. Ignored otherwise; run by hand without those settings, it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the worker of the fault suite, which runs it"]
async fn fault_worker() {
    worker::main().await;
}

// ---- the suite and its controls ------------------------------------------------------

/// The suite: a 3-member cluster, every fault kind, fenced writes. Zero violations, and
/// the faults really happened and really hit holders. (Named to sort before the controls:
/// libtest starts tests in name order, so this, the longest, starts at once and the
/// controls run one after another beside it.)
#[test]
fn fault_suite_all_faults_on_three_members() {
    const FAULTS: &[Fault] = &[
        Fault::StopWorkerHolding,
        Fault::KillLeader,
        Fault::StopWorkerHolding,
        Fault::KillFollower,
        Fault::PauseLeader,
    ];
    let o = run_plan(Plan { members: 3, workers: WORKERS, run: RUN, fenced: true, faults: FAULTS, plant: None });
    publish("fault-suite", &o.text);
    assert_eq!(o.violations(), 0, "{}", o.text);
    let st = &o.totals;
    assert_eq!(st.unexpected, 0, "unexpected errors:\n{}", o.text);
    let missing = not_injected(FAULTS, &o.injected);
    assert!(missing.is_empty(), "never injected: {missing:?}\n{}", o.text);
    for sig in ["SIGSTOP", "SIGCONT", "SIGKILL"] {
        assert!(o.signals.get(sig).is_some_and(|&n| n > 0), "no {sig} was sent\n{}", o.text);
    }
    assert_eq!(o.signals.get("SIGSTOP"), o.signals.get("SIGCONT"), "a stopped process was not resumed\n{}", o.text);
    assert!(st.refused > 0, "no stale write was attempted, so the fence was never tested\n{}", o.text);
    assert!(
        o.stops_in_hold.refused > 0,
        "no worker stopped in a hold had its exit write refused: the stops missed the holds\n{}",
        o.text
    );
    assert!(st.cancelled > 0 && st.session_lost > 0, "{}", o.text);
    assert!(st.relocked > 0, "no relock or reacquire happened\n{}", o.text);
    for (name, r) in &o.reports {
        assert!(r.holders >= 10, "{name}: too little happened\n{}", o.text);
    }
    let sem = &o.reports.iter().find(|(n, _)| *n == SEMAPHORE).unwrap().1;
    assert!(sem.max_at_once >= 2, "the semaphore never had two holders: the check saw nothing\n{}", o.text);
    // Most clients end on a live session (one paused near the end may not).
    assert!(st.leases_listed as usize > WORKERS * 3 / 2, "the leftover check listed too few leases\n{}", o.text);
    // The fair queue bounds every wait; the optimistic strategy keeps no place, and under
    // this much contention from queued waiters it can starve (documented, reported only).
    assert!(!stuck_waiter(st), "a queued acquisition waited longer than {LIVENESS:?} (a stuck waiter?)\n{}", o.text);
}

/// The liveness bound: a queued wait, ended or still open at the end, longer than
/// [`LIVENESS`].
fn stuck_waiter(st: &worker::Stats) -> bool {
    Duration::from_millis(st.max_wait_queued_ms) >= LIVENESS
}

/// The control of the liveness bound ([`Plant::StuckHolder`]): a mutex held for the whole
/// run keeps its queued waiter waiting until the end, which the bound must report. (It
/// counted only waits that ended until 2026-12-05: such a waiter passed.)
#[test]
fn fault_suite_control_stuck_waiter_is_caught() {
    let (mut o, key) = parent::planted_for(Plant::StuckHolder, LIVENESS + Duration::from_secs(10));
    let caught = stuck_waiter(&o.totals);
    writeln!(
        o.text,
        "  control: planted a holder of {key} for the whole run; the liveness bound reported it: {caught} (longest queued wait {} ms)",
        o.totals.max_wait_queued_ms
    )
    .unwrap();
    publish("fault-suite-control-stuck-waiter", &o.text);
    assert!(caught, "the stuck waiter was not caught:\n{}", o.text);
    assert_eq!(o.violations(), 0, "violations besides the planted one:\n{}", o.text);
}

/// The control of the stale-write check: the same workers, writing **without** the fence,
/// and a worker paused while it holds a mutex (twice). Its late writes land after the next
/// holder's, and the checker must say so. (If this passes with 0 violations, the checker is
/// blind.)
#[test]
fn fault_suite_control_unfenced_writes_are_caught() {
    const FAULTS: &[Fault] = &[Fault::StopWorkerHolding];
    let plan =
        Plan { members: 1, workers: 2, run: Duration::from_secs(30), fenced: false, faults: FAULTS, plant: None };
    let o = run_plan(plan);
    publish("fault-suite-control", &o.text);
    assert!(o.injected.get(&Fault::StopWorkerHolding).is_some_and(|&n| n > 0), "{}", o.text);
    let stale: usize = o.reports.iter().map(|(_, r)| r.stale.len()).sum();
    assert!(stale > 0, "unfenced late writes were not caught:\n{}", o.text);
}

/// The control of the at-most-N check ([`Plant::OverAdmission`]): `PERMITS + 1` holders of
/// the semaphore in at once must be reported, and nothing else.
#[test]
fn fault_suite_control_over_admission_is_caught() {
    let (mut o, made) = planted(Plant::OverAdmission);
    let sem = &o.reports.iter().find(|(n, _)| *n == SEMAPHORE).unwrap().1;
    let caught = sem.over_limit.len();
    writeln!(o.text, "  control: planted {made}; the at-most-N check reported {caught}").unwrap();
    publish("fault-suite-control-over-admission", &o.text);
    assert!(caught > 0 && sem.max_at_once > PERMITS as usize, "over-admission not caught:\n{}", o.text);
    assert_eq!(o.violations(), caught, "violations besides the planted one:\n{}", o.text);
}

/// The control of the leftover check ([`Plant::SkippedRelease`]): the forgotten guard's key,
/// under a live lease, must be reported, and nothing else.
#[test]
fn fault_suite_control_skipped_release_is_caught() {
    let (mut o, key) = planted(Plant::SkippedRelease);
    let caught = o.leftovers.iter().filter(|l| l.contains(&format!(": {key} "))).count();
    writeln!(o.text, "  control: planted a skipped release of {key}; the leftover check reported it {caught} time(s)")
        .unwrap();
    publish("fault-suite-control-skipped-release", &o.text);
    assert_eq!(caught, 1, "the skipped release was not caught:\n{}", o.text);
    assert_eq!(o.violations(), 1, "violations besides the planted one:\n{}", o.text);
}

/// The control of the key-by-key write check ([`Plant::LostAck`]): the acknowledged write
/// that is not in the store must be reported, and nothing else (the per-worker counts
/// balance, see the plant).
#[test]
fn fault_suite_control_lost_ack_is_caught() {
    let (mut o, key) = planted(Plant::LostAck);
    let caught = o.writes.lost.iter().filter(|l| l.starts_with(&format!("{key}:"))).count();
    writeln!(
        o.text,
        "  control: planted a lost acknowledgement of {key}; the write check reported it {caught} time(s)"
    )
    .unwrap();
    publish("fault-suite-control-lost-ack", &o.text);
    assert_eq!(caught, 1, "the lost acknowledgement was not caught:\n{}", o.text);
    assert_eq!(o.violations(), 1, "violations besides the planted one:\n{}", o.text);
}

/// The control of the store check (`EtcdCluster::divergence`): members that do not hold one
/// history must be reported. Two single-member clusters stand in for two members that
/// disagree: the same number of writes (so the same revision) with different values, then
/// one more write on one of them (a member that never catches up).
#[test]
fn fault_suite_control_diverged_members_are_caught() {
    use support::etcd::{divergence, EtcdCluster};
    let (a, b) = (EtcdCluster::single(), EtcdCluster::single());
    let put = |c: &EtcdCluster, key: &str, value: &str| {
        let out = c.etcdctl().args(["put", key, value]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let key = format!("{HIST}fault-mx-a/1");
    put(&a, &key, "enter");
    put(&b, &key, "exit");
    let members = [("a".to_owned(), a.etcdctl()), ("b".to_owned(), b.etcdctl())];
    let same_revision = divergence(&members, Duration::from_secs(1), HIST);
    assert_eq!(same_revision.len(), 2, "{same_revision:?}");
    assert!(
        same_revision.iter().all(|l| l.contains("revision 2,") && l.contains(", 1 keys under")),
        "{same_revision:?}"
    );
    put(&a, &format!("{HIST}fault-mx-a/2"), "enter");
    let behind = divergence(&members, Duration::from_secs(1), HIST);
    assert!(behind.iter().any(|l| l.starts_with("member a: revision 3,")), "{behind:?}");
    // And one cluster agrees with itself.
    let alone = [("a".to_owned(), a.etcdctl())];
    assert_eq!(divergence(&alone, Duration::from_secs(1), HIST), Vec::<String>::new());
}

/// The diagnostic of an unexpected `NotHeld` (`parent::history_of`) finds the revision that
/// deleted a key and what else it changed: here a lease revoke taking two keys at once.
#[test]
fn fault_suite_history_of_a_gone_key_names_its_delete() {
    let etcd = support::etcd::EtcdCluster::single();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let said = rt.block_on(async {
        let mut c = etcd_client::Client::connect(etcd.endpoints(), None).await.unwrap();
        let lease = c.lease_grant(60, None).await.unwrap().id();
        let with_lease = Some(etcd_client::PutOptions::new().with_lease(lease));
        let token = c.put("gone/a", "", with_lease.clone()).await.unwrap().header().unwrap().revision();
        c.put("gone/b", "", with_lease).await.unwrap();
        c.put("other", "", None).await.unwrap();
        c.lease_revoke(lease).await.unwrap();
        c.put("later", "", None).await.unwrap();
        parent::history_of(&etcd.endpoints(), "gone/a", token).await.unwrap()
    });
    assert!(said.contains("deleted at revision 5, which made 2 change(s): deleted gone/a"), "{said}");
    assert!(said.contains("deleted gone/b"), "{said}");
}
