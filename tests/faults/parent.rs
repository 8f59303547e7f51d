//! The parent side: the faults it injects ([`Fault`], with [`Signals`] and the `/proc`
//! helpers), the worker processes it runs ([`Workers`]), and a run ([`run_plan`]) from its
//! [`Plan`] to its [`Outcome`] (see [`report`]).

use crate::checker;
use crate::report::{self, Outcome};
use crate::support::etcd::EtcdCluster;
use crate::support::proc::state;
use crate::worker::{Plant, Stats};
use crate::{
    CALM, CONTROL_RUN, ENV_ENDPOINTS, ENV_FENCED, ENV_PLANT, ENV_RUN_MS, ENV_SEED, ENV_WORKER, FIND_HOLDER, HIST,
    MEMBER_DOWN, MEMBER_PAUSE, MUTEXES, PERMITS, QUIET_TAIL, SEMAPHORE, SIGNAL_SEEN, STOP_FOR, TTL,
};
use leasehold::{Client, EtcdConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

/// A fault the parent injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Fault {
    /// SIGKILL of the raft leader, restart after [`MEMBER_DOWN`].
    KillLeader,
    /// SIGKILL of a follower, restart after [`MEMBER_DOWN`].
    KillFollower,
    /// SIGSTOP of the leader member for [`MEMBER_PAUSE`], then SIGCONT.
    PauseLeader,
    /// SIGSTOP of a worker process that holds something, for [`STOP_FOR`], then SIGCONT.
    StopWorkerHolding,
    /// The same, when no worker was found in a hold within [`FIND_HOLDER`] (none seen in
    /// one, or every one stopped had left it).
    StopWorkerIdle,
}

/// The signals the parent sends, counted per kind. Each is sent with `libc::kill`, which
/// must return 0, and must then show in `/proc/<pid>/stat` within [`SIGNAL_SEEN`]: state
/// `T` (stopped) after SIGSTOP, any other state after SIGCONT, a zombie (or no process)
/// after SIGKILL. A fault whose signal did not take effect fails the run rather than
/// being counted.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    sent: BTreeMap<&'static str, usize>,
}

impl Signals {
    fn send(&mut self, pid: u32, sig: libc::c_int) {
        let name = match sig {
            libc::SIGSTOP => "SIGSTOP",
            libc::SIGCONT => "SIGCONT",
            libc::SIGKILL => "SIGKILL",
            other => panic!("the suite sends no signal {other}"),
        };
        // SAFETY: kill(2) has no memory effects; `pid` is a child of this process (a worker
        // or an etcd member), not yet reaped.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({pid}, {name}) failed: {}", std::io::Error::last_os_error());
        let started = Instant::now();
        loop {
            let state = state(pid);
            if signal_took(sig, state) {
                break;
            }
            assert!(started.elapsed() < SIGNAL_SEEN, "{name} to {pid}: state still {state:?} after {SIGNAL_SEEN:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
        *self.sent.entry(name).or_default() += 1;
    }
}

/// Whether a process in `state` (see [`proc_state`]) shows the effect of `sig`.
fn signal_took(sig: libc::c_int, state: Option<char>) -> bool {
    match sig {
        libc::SIGSTOP => state == Some('T'),
        libc::SIGCONT => state.is_some_and(|s| s != 'T'),
        _ => matches!(state, None | Some('Z' | 'X')),
    }
}

/// Stops a worker in a hold (preferring a mutex's: its lock is taken by another worker
/// meanwhile; a worker picked for one must still be in one) and returns it with [`Fault::StopWorkerHolding`]; or, if none is found within
/// [`FIND_HOLDER`], picks one to stop idle ([`Fault::StopWorkerIdle`], not stopped yet).
///
/// A worker seen in a hold may leave it before the SIGSTOP lands (a hold's sleep is
/// 30–200 ms). A stopped worker prints nothing more, so once the reader threads have read
/// the lines it wrote before the stop, its `HOLD` state says whether the stop landed in a
/// hold; one that did not is resumed at once (counted in `missed`) and another is tried.
/// The parent gives the readers [`HOLD_SETTLE`] for that, which is no barrier: a reader
/// starved of the CPU that long still shows the hold, and the stop counts as a hold's
/// (its `PAUSED` line, which never comes, is what the report then misses).
fn stop_a_holder(workers: &Workers, signals: &mut Signals, rng: &mut StdRng, missed: &mut usize) -> (usize, Fault) {
    let looking = Instant::now();
    loop {
        let within = FIND_HOLDER.saturating_sub(looking.elapsed());
        let mutex = |n: &str| n.starts_with("fault-mx");
        let found = workers
            .holder(mutex, within, rng)
            .map(|w| (w, true))
            .or_else(|| workers.holder(|_| true, Duration::ZERO, rng).map(|w| (w, false)));
        let Some((w, of_mutex)) = found else {
            return (rng.random_range(0..workers.children.len()), Fault::StopWorkerIdle);
        };
        signals.send(workers.pid(w), libc::SIGSTOP);
        std::thread::sleep(HOLD_SETTLE);
        // Still in a hold of the kind it was picked for: a worker picked for a mutex's may
        // hold the (uncontended) semaphore all along, and only a mutex's late write comes
        // after the next holder's (what the unfenced control must see).
        if workers.holds(w, |n| !of_mutex || mutex(n)) {
            return (w, Fault::StopWorkerHolding);
        }
        signals.send(workers.pid(w), libc::SIGCONT);
        *missed += 1;
        if looking.elapsed() >= FIND_HOLDER {
            return (rng.random_range(0..workers.children.len()), Fault::StopWorkerIdle);
        }
    }
}

/// How long the parent lets its reader threads read what a worker wrote before it was
/// stopped, before it looks at the worker's `HOLD` state.
const HOLD_SETTLE: Duration = Duration::from_millis(50);

/// The pid of member `i` of `etcd`.
fn member_pid(etcd: &EtcdCluster, i: usize) -> u32 {
    etcd.pid(i).unwrap_or_else(|| panic!("member {i} is not running"))
}

/// What the workers' output says, as the parent's reader threads collect it.
#[derive(Debug, Default)]
struct Heard {
    /// Per worker, per resource: whether it holds it now (`HOLD` lines).
    holding: HashMap<usize, HashMap<String, bool>>,
    /// Per worker, its `FAULTS-SUMMARY` line.
    summaries: HashMap<usize, String>,
    /// Every write: worker, what it saw, key (`WRITE` lines).
    writes: Vec<(usize, checker::Said, String)>,
    /// The leftover check's findings (`LEFTOVER` lines).
    leftovers: Vec<String>,
    /// A control's plant (`PLANT` and `PLANT-FAILED` lines).
    plants: Vec<String>,
    /// Keys a worker found gone while its session was valid, with their tokens (`GONE`).
    gone: Vec<(String, i64)>,
    /// Holds whose sleep overran the lease's TTL: worker, when heard, what its exit write
    /// got (`PAUSED` lines).
    paused: Vec<(usize, Instant, checker::Said)>,
}

/// The worker processes, with what their output says; stopped ones are resumed and every
/// one is killed on drop (a failing test leaves nothing running).
struct Workers {
    children: Vec<Child>,
    heard: Arc<StdMutex<Heard>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    fn spawn(n: usize, endpoints: &[String], plan: &Plan, seed: u64) -> Self {
        let exe = std::env::current_exe().unwrap();
        let heard = Arc::new(StdMutex::new(Heard::default()));
        let mut children = Vec::new();
        let mut readers = Vec::new();
        for w in 0..n {
            let mut child = Command::new(&exe)
                .args(["--ignored", "--exact", "fault_worker", "--nocapture", "--test-threads=1"])
                .env(ENV_WORKER, w.to_string())
                .env(ENV_ENDPOINTS, endpoints.join(","))
                .env(ENV_RUN_MS, plan.run.as_millis().to_string())
                .env(ENV_FENCED, if plan.fenced { "1" } else { "0" })
                .env(ENV_SEED, seed.to_string())
                .env(ENV_PLANT, plan.plant.map_or("", Plant::name))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let out = BufReader::new(child.stdout.take().unwrap());
            let heard = heard.clone();
            readers.push(std::thread::spawn(move || {
                for line in out.lines().map_while(Result::ok) {
                    // libtest prints `test fault_worker ... ` with no newline, so the worker's
                    // first line comes after it.
                    let line = line.strip_prefix("test fault_worker ... ").unwrap_or(&line).to_owned();
                    let Some((first, rest)) = line.split_once(' ') else { continue };
                    let mut heard = heard.lock().unwrap();
                    match first {
                        "HOLD" => {
                            let mut parts = rest.split_whitespace();
                            let (_, name, on) = (parts.next(), parts.next().unwrap_or(""), parts.next() == Some("1"));
                            heard.holding.entry(w).or_default().insert(name.to_owned(), on);
                        }
                        "WRITE" => {
                            let (said, key) = rest.split_once(' ').expect("WRITE <said> <key>");
                            let said = checker::Said::parse(said).expect("WRITE acked|refused|unknown");
                            heard.writes.push((w, said, key.to_owned()));
                        }
                        "LEFTOVER" => heard.leftovers.push(rest.to_owned()),
                        "GONE" => {
                            if let Some((key, token)) = rest.split_once(' ') {
                                heard.gone.push((key.to_owned(), token.parse().unwrap_or(0)));
                            }
                        }
                        "PAUSED" => {
                            let said = rest.split_whitespace().nth(2).and_then(checker::Said::parse);
                            heard.paused.push((w, Instant::now(), said.expect("PAUSED <w> <name> <said>")));
                        }
                        "PLANT" | "PLANT-FAILED" => heard.plants.push(line.clone()),
                        "FAULTS-SUMMARY" => {
                            heard.summaries.insert(w, line.clone());
                        }
                        _ => {}
                    }
                }
            }));
            children.push(child);
        }
        Self { children, heard, readers }
    }

    fn pid(&self, w: usize) -> u32 {
        self.children[w].id()
    }

    /// Whether worker `w`'s last `HOLD` lines say it is in a hold of something `wanted`
    /// accepts.
    fn holds(&self, w: usize, wanted: impl Fn(&str) -> bool) -> bool {
        let heard = self.heard.lock().unwrap();
        heard.holding.get(&w).is_some_and(|h| h.iter().any(|(n, &on)| on && wanted(n)))
    }

    /// A worker (picked at random) that holds something `wanted` accepts, if one is seen
    /// within `within` (looked at least once).
    fn holder(&self, wanted: impl Fn(&str) -> bool, within: Duration, rng: &mut StdRng) -> Option<usize> {
        let started = Instant::now();
        loop {
            let heard = self.heard.lock().unwrap();
            let mut found: Vec<usize> = heard
                .holding
                .iter()
                .filter(|(_, h)| h.iter().any(|(n, on)| *on && wanted(n)))
                .map(|(w, _)| *w)
                .collect();
            drop(heard);
            if !found.is_empty() {
                found.sort_unstable();
                return Some(found[rng.random_range(0..found.len())]);
            }
            if started.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for every worker (bounded) and returns each one's exit status.
    fn wait(&mut self, limit: Duration) -> Vec<std::process::ExitStatus> {
        let started = Instant::now();
        let mut statuses = vec![None; self.children.len()];
        while statuses.iter().any(Option::is_none) {
            for (i, c) in self.children.iter_mut().enumerate() {
                if statuses[i].is_none() {
                    statuses[i] = c.try_wait().unwrap();
                }
            }
            assert!(started.elapsed() < limit, "workers still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        statuses.into_iter().map(Option::unwrap).collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            if c.try_wait().ok().flatten().is_none() {
                // SAFETY: kill(2) on our own unreaped child; the result does not matter here.
                unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGCONT) };
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How a run is set up.
pub(crate) struct Plan {
    pub(crate) members: usize,
    pub(crate) workers: usize,
    pub(crate) run: Duration,
    pub(crate) fenced: bool,
    /// The faults, cycled until the run's quiet tail (none: no fault).
    pub(crate) faults: &'static [Fault],
    /// The violation worker 0 makes after its run (a control's).
    pub(crate) plant: Option<Plant>,
}

/// The fault kinds of `claimed` that were not injected at least once.
pub(crate) fn not_injected(claimed: &[Fault], injected: &BTreeMap<Fault, usize>) -> Vec<Fault> {
    let mut missing = Vec::new();
    for f in claimed {
        if injected.get(f).is_none_or(|&n| n == 0) && !missing.contains(f) {
            missing.push(*f);
        }
    }
    missing
}

/// Whether worker `w`'s `WRITE` reports disagree with its summary's counts (a report lost
/// on the way would hide a lost write from the key-by-key check).
fn reports_disagree(w: usize, writes: &[(usize, checker::Said, String)], st: &Stats) -> Option<String> {
    let count = |said| writes.iter().filter(|(x, s, _)| *x == w && *s == said).count() as u64;
    let reported = [count(checker::Said::Acked), count(checker::Said::Refused), count(checker::Said::Unknown)];
    let summary = [st.accepted, st.refused, st.unknown];
    (reported != summary).then(|| {
        format!("worker {w}: {reported:?} writes reported (acked, refused, unknown), its summary says {summary:?}")
    })
}

fn elapsed(start: Instant) -> String {
    format!("{:6.1}s", start.elapsed().as_secs_f64())
}

pub(crate) fn run_plan(plan: Plan) -> Outcome {
    let started = Instant::now();
    let seed: u64 = std::env::var(ENV_SEED).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let mut rng = StdRng::seed_from_u64(seed);
    if plan.faults.iter().any(|f| matches!(f, Fault::KillLeader | Fault::KillFollower)) {
        // Killing members of an etcd that loses revisions when killed tests etcd, not leasehold.
        if let Some(why) = crate::support::etcd::unfit_under_kills() {
            panic!("the fault suite kills etcd members, and {why}");
        }
    }
    let mut etcd = EtcdCluster::start(plan.members, &[]);
    let endpoints = etcd.endpoints();
    eprintln!("[{}] {} members up; {} workers, seed {seed}", elapsed(started), plan.members, plan.workers);
    let mut workers = Workers::spawn(plan.workers, &endpoints, &plan, seed);
    let run_started = Instant::now();
    let mut injected: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut signals = Signals::default();
    // Each worker stop: which worker, when it was stopped (about: `stop_a_holder` stopped a
    // holder a moment before, to see it still held).
    let mut worker_stops: Vec<(usize, Instant)> = Vec::new();
    // Stops resumed at once because the worker had left its hold first.
    let mut missed_holds = 0;
    let mut step = 0;
    // The longest a fault step takes (a member restart may take longer; then the tail is shorter).
    let step_max = CALM + FIND_HOLDER + STOP_FOR;
    while !plan.faults.is_empty() && run_started.elapsed() + step_max + QUIET_TAIL < plan.run {
        std::thread::sleep(CALM);
        let fault = plan.faults[step % plan.faults.len()];
        let done = match fault {
            Fault::KillLeader | Fault::KillFollower | Fault::PauseLeader => {
                let Some(leader) = etcd.leader() else {
                    // The same fault again after the next calm, so that none is skipped.
                    eprintln!("[{}] no leader visible; {fault:?} postponed", elapsed(started));
                    continue;
                };
                let victim = if fault == Fault::KillFollower {
                    let others: Vec<usize> = (0..plan.members).filter(|&i| i != leader).collect();
                    others[rng.random_range(0..others.len())]
                } else {
                    leader
                };
                let pid = member_pid(&etcd, victim);
                if fault == Fault::PauseLeader {
                    signals.send(pid, libc::SIGSTOP);
                    std::thread::sleep(MEMBER_PAUSE);
                    signals.send(pid, libc::SIGCONT);
                } else {
                    signals.send(pid, libc::SIGKILL);
                    etcd.kill(victim); // reaps it, so that `restart` may start it again
                    std::thread::sleep(MEMBER_DOWN);
                    etcd.restart(victim);
                }
                etcd.wait_healthy(Duration::from_secs(30));
                eprintln!("[{}] {fault:?}: member {victim} (leader was {leader})", elapsed(started));
                fault
            }
            Fault::StopWorkerHolding | Fault::StopWorkerIdle => {
                let (w, kind) = stop_a_holder(&workers, &mut signals, &mut rng, &mut missed_holds);
                worker_stops.push((w, Instant::now()));
                if kind == Fault::StopWorkerIdle {
                    signals.send(workers.pid(w), libc::SIGSTOP);
                }
                std::thread::sleep(STOP_FOR);
                signals.send(workers.pid(w), libc::SIGCONT);
                eprintln!("[{}] {kind:?}: worker {w} for {STOP_FOR:?}", elapsed(started));
                kind
            }
        };
        step += 1;
        *injected.entry(done).or_default() += 1;
    }
    let statuses = workers.wait(plan.run + Duration::from_secs(90));
    eprintln!("[{}] workers exited", elapsed(started));

    let heard = std::mem::take(&mut *workers.heard.lock().unwrap());
    let mut stops_in_hold = report::stops_in_hold(&worker_stops, &heard.paused);
    stops_in_hold.missed = missed_holds;
    let mut other_violations = Vec::new();
    let mut totals = Stats::default();
    for (w, status) in statuses.iter().enumerate() {
        assert!(status.success(), "worker {w} failed: {status}");
        let line = heard.summaries.get(&w).unwrap_or_else(|| panic!("worker {w} printed no summary"));
        let (id, st) = Stats::parse(line);
        assert_eq!(id, w);
        assert_eq!(st.finished, 3, "worker {w}: a client did not finish: {line}");
        // The key-by-key check is only as good as the write reports: none may be missing.
        other_violations.extend(reports_disagree(w, &heard.writes, &st));
        let paused = heard.paused.iter().filter(|p| p.0 == w).count() as u64;
        if paused != st.paused_in_hold {
            other_violations.push(format!(
                "worker {w}: {paused} PAUSED lines heard, its summary says {} holds overran",
                st.paused_in_hold
            ));
        }
        totals.add(&st);
    }

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (reports, writes, after_exit, leftover_cleared_after, gone) = rt.block_on(async {
        let client = Client::etcd(EtcdConfig::new(endpoints.clone())).await.unwrap();
        let backend = client.backend();
        // A sanity check: nothing under a lock prefix one TTL (plus slack) after the workers
        // exit. Every lease has been revoked or has expired by then, so this can only find a
        // key written with no lease; keys left under live leases are the leftover check's.
        let exited = Instant::now();
        let prefixes: Vec<String> = MUTEXES.iter().chain([&SEMAPHORE]).map(|n| client.prefix_of(n).unwrap()).collect();
        let mut left = Vec::new();
        while exited.elapsed() < TTL + Duration::from_secs(3) {
            left.clear();
            for p in &prefixes {
                left.extend(backend.range_prefix(p, 0).await.unwrap().0.into_iter().map(|kv| kv.key));
            }
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let cleared = exited.elapsed();
        let after_exit: Vec<String> =
            left.into_iter().map(|k| format!("{k}: still there after the workers exited")).collect();
        // The history.
        let mut reports = Vec::new();
        for (name, limit, exclusive) in
            [(MUTEXES[0], 1, true), (MUTEXES[1], 1, true), (SEMAPHORE, PERMITS as usize, false)]
        {
            let (kvs, _) = backend.range_prefix(&format!("{HIST}{name}/"), 0).await.unwrap();
            reports.push((name, checker::check(&checker::parse(name, &kvs), limit, exclusive)));
        }
        // Every acknowledged write is stored, nothing refused is, nothing unreported is.
        let (stored, _) = backend.range_prefix(HIST, 0).await.unwrap();
        let stored: Vec<String> = stored.into_iter().map(|kv| kv.key).collect();
        let said: Vec<(checker::Said, String)> = heard.writes.iter().map(|(_, s, k)| (*s, k.clone())).collect();
        let mut gone = Vec::new();
        for (key, token) in heard.gone.iter().take(3) {
            gone.push(history_of(&endpoints, key, *token).await.unwrap_or_else(|e| format!("{key}: {e}")));
        }
        (reports, checker::writes(&said, &stored), after_exit, cleared, gone)
    });
    // The store itself: do the members hold one history? (If not, every check above read a
    // store that broke its own guarantee, and says nothing of leasehold.)
    let diverged = etcd.divergence(Duration::from_secs(10), HIST);
    drop(etcd);
    let mut outcome = Outcome {
        diverged,
        gone,
        reports,
        writes,
        leftovers: heard.leftovers,
        after_exit,
        other_violations,
        plants: heard.plants,
        injected,
        stops_in_hold,
        signals: signals.sent,
        totals,
        leftover_cleared_after,
        runtime: started.elapsed(),
        text: String::new(),
    };
    outcome.text = report::render(&outcome, &plan, seed);
    outcome
}

/// A planted control: 1 member, 2 workers, no fault, [`CONTROL_RUN`]; worker 0 makes
/// `plant` after its run. Returns the outcome and what the plant line says (asserted made).
pub(crate) fn planted(plant: Plant) -> (Outcome, String) {
    planted_for(plant, CONTROL_RUN)
}

/// [`planted`] with a run of `run`.
pub(crate) fn planted_for(plant: Plant, run: Duration) -> (Outcome, String) {
    let plan = Plan { members: 1, workers: 2, run, fenced: true, faults: &[], plant: Some(plant) };
    let o = run_plan(plan);
    let prefix = format!("PLANT {} ", plant.name());
    let made = o.plants.iter().find_map(|p| p.strip_prefix(&prefix)).map(str::to_owned);
    let made = made.unwrap_or_else(|| panic!("the plant was not made:\n{}", o.text));
    (o, made)
}

// ---- unit tests ----------------------------------------------------------------------

/// Signals seen in `/proc`, and the run's own bookkeeping checks.
mod tests {
    use super::*;

    #[test]
    fn signals_are_sent_and_seen_in_proc() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let mut signals = Signals::default();
        signals.send(child.id(), libc::SIGSTOP);
        assert_eq!(state(child.id()), Some('T'));
        signals.send(child.id(), libc::SIGCONT);
        signals.send(child.id(), libc::SIGKILL);
        assert_eq!(state(child.id()), Some('Z'), "killed, not yet reaped");
        child.wait().unwrap();
        assert_eq!(signals.sent.values().sum::<usize>(), 3);
        // The state checks themselves.
        assert!(!signal_took(libc::SIGSTOP, Some('S')) && !signal_took(libc::SIGSTOP, None));
        assert!(!signal_took(libc::SIGCONT, Some('T')) && !signal_took(libc::SIGCONT, None));
        assert!(!signal_took(libc::SIGKILL, Some('S')) && !signal_took(libc::SIGKILL, Some('T')));
    }

    #[test]
    #[should_panic(expected = "kill(")]
    fn a_signal_that_reaches_no_process_fails() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap(); // reaped: no such process any more
        Signals::default().send(pid, libc::SIGSTOP);
    }

    #[test]
    fn missing_fault_kinds_and_lost_write_reports_are_reported() {
        let injected = BTreeMap::from([(Fault::KillLeader, 2), (Fault::PauseLeader, 0)]);
        let claimed = [Fault::KillLeader, Fault::StopWorkerHolding, Fault::PauseLeader, Fault::StopWorkerHolding];
        assert_eq!(not_injected(&claimed, &injected), vec![Fault::StopWorkerHolding, Fault::PauseLeader]);
        assert!(not_injected(&[Fault::KillLeader], &injected).is_empty());
        let writes = vec![(0, checker::Said::Acked, "a".to_owned()), (1, checker::Said::Acked, "b".to_owned())];
        let st = Stats { accepted: 1, ..Stats::default() };
        assert!(reports_disagree(0, &writes, &st).is_none());
        let st = Stats { accepted: 2, ..Stats::default() };
        assert!(reports_disagree(0, &writes, &st).is_some_and(|v| v.contains("[1, 0, 0]")));
    }
}

/// The store's history of `key` from `token` (its create revision): the revision that
/// deleted it, and every change that revision made (a lease's expiry or revoke deletes all
/// of its keys at once; a release deletes the key alone; a relock puts the next key too).
pub(crate) async fn history_of(endpoints: &[String], key: &str, token: i64) -> Result<String, String> {
    use etcd_client::GetOptions;
    let mut c = etcd_client::Client::connect(endpoints, None).await.map_err(|e| e.to_string())?;
    let at = |c: &mut etcd_client::Client, rev: i64| {
        let mut c = c.clone();
        let key = key.to_owned();
        async move {
            let r = c.get(key, Some(GetOptions::new().with_revision(rev))).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(r.kvs().first().map(|kv| (kv.create_revision(), kv.lease())))
        }
    };
    let now = c.get("\0", None).await.map_err(|e| e.to_string())?.header().map_or(0, |h| h.revision());
    let Some((created, lease)) = at(&mut c, token).await? else {
        return Ok(format!("{key}: not in the store at its token's revision {token}"));
    };
    if created != token {
        return Ok(format!("{key}: created at {created}, not at its token {token}"));
    }
    if at(&mut c, now).await?.is_some_and(|(r, _)| r == token) {
        return Ok(format!("{key}@{token}: still in the store at revision {now}"));
    }
    // The first revision at which it is gone (present at `lo`, gone at `hi`).
    let (mut lo, mut hi) = (token, now);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match at(&mut c, mid).await? {
            Some((r, _)) if r == token => lo = mid,
            _ => hi = mid,
        }
    }
    let all = |rev: i64| {
        let mut c = c.clone();
        async move {
            let r = c.get("\0", Some(GetOptions::new().with_from_key().with_revision(rev))).await;
            let r = r.map_err(|e| e.to_string())?;
            Ok::<_, String>(
                r.kvs()
                    .iter()
                    .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), (kv.mod_revision(), kv.lease())))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )
        }
    };
    let (before, after) = (all(hi - 1).await?, all(hi).await?);
    let mut changes = Vec::new();
    for (k, (_, l)) in &before {
        if !after.contains_key(k) {
            changes.push(format!("deleted {k} (lease {l:x})"));
        }
    }
    for (k, (m, l)) in &after {
        if *m == hi {
            changes.push(format!("put {k} (lease {l:x})"));
        }
    }
    Ok(format!(
        "{key}@{token} (lease {lease:x}) deleted at revision {hi}, which made {} change(s): {}",
        changes.len(),
        changes.join("; ")
    ))
}
