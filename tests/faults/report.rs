//! What a run produced ([`Outcome`]), what its worker stops hit ([`StopsInHold`]), and
//! the report rendered from them and published.

use crate::checker;
use crate::parent::{Fault, Plan};
use crate::worker::Stats;
use crate::{OP_LIMIT, STOP_FOR};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What a run produced.
pub(crate) struct Outcome {
    /// The members' histories disagree after the run (etcd broke its own consistency): one
    /// line per member, empty if they agree.
    pub(crate) diverged: Vec<String>,
    /// What the store's history says of keys a worker found gone while its session was
    /// valid (an unexpected `NotHeld`, counted in the totals): who deleted each, and what
    /// else that revision changed. Diagnostics, not violations.
    pub(crate) gone: Vec<String>,
    pub(crate) reports: Vec<(&'static str, checker::Report)>,
    /// The key-by-key check of the writes.
    pub(crate) writes: checker::WriteReport,
    /// The leftover check's findings: keys under live leases owned by no guard.
    pub(crate) leftovers: Vec<String>,
    /// Keys under the lock prefixes one TTL after the workers exited.
    pub(crate) after_exit: Vec<String>,
    /// A worker's write reports disagreeing with its summary (reports lost on the way).
    pub(crate) other_violations: Vec<String>,
    /// The `PLANT` lines of a control.
    pub(crate) plants: Vec<String>,
    pub(crate) injected: BTreeMap<Fault, usize>,
    /// The worker stops, and which landed in a hold.
    pub(crate) stops_in_hold: StopsInHold,
    pub(crate) signals: BTreeMap<&'static str, usize>,
    pub(crate) totals: Stats,
    pub(crate) leftover_cleared_after: Duration,
    pub(crate) runtime: Duration,
    pub(crate) text: String,
}

impl Outcome {
    pub(crate) fn violations(&self) -> usize {
        self.reports.iter().map(|(_, r)| r.violations()).sum::<usize>()
            + self.writes.violations()
            + self.leftovers.len()
            + self.after_exit.len()
            + self.other_violations.len()
            + self.diverged.len()
    }
}

/// What the worker stops hit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StopsInHold {
    /// Worker stops made (for [`STOP_FOR`]).
    pub(crate) stops: usize,
    /// Stops resumed at once because the worker had left its hold before the stop landed
    /// (not in `stops`; see `parent::stop_a_holder`).
    pub(crate) missed: usize,
    /// Of the stops, those that landed in a hold's sleep: a hold of that worker reported
    /// its sleep overrun after the stop, before that worker's next stop and within
    /// [`STOP_FOR`] + [`OP_LIMIT`] of it.
    pub(crate) in_hold: usize,
    /// What the exit writes of those holds got.
    pub(crate) refused: usize,
    pub(crate) unknown: usize,
    /// Accepted: the lease outlived the stop (an election extends every lease), or the
    /// writes were not fenced (the control).
    pub(crate) acked: usize,
    /// Holds that overran with no stop to credit them to (a worker starved of the CPU).
    pub(crate) unmatched: usize,
}

/// Which of the worker stops `stops` (worker, stopped at) landed in a hold, from `paused`
/// (worker, heard at, exit write). A stopped worker prints nothing, so a hold's line comes
/// after its stop's resume and its exit write.
pub(crate) fn stops_in_hold(stops: &[(usize, Instant)], paused: &[(usize, Instant, checker::Said)]) -> StopsInHold {
    let mut r = StopsInHold { stops: stops.len(), ..StopsInHold::default() };
    let mut credited = vec![false; paused.len()];
    for (i, &(w, stopped)) in stops.iter().enumerate() {
        let next = stops[i + 1..].iter().find(|s| s.0 == w).map(|s| s.1);
        let end = next.map_or(stopped + STOP_FOR + OP_LIMIT, |n| n.min(stopped + STOP_FOR + OP_LIMIT));
        let mut hit = false;
        for (j, &(pw, at, said)) in paused.iter().enumerate() {
            if pw != w || at < stopped || at >= end {
                continue;
            }
            hit = true;
            credited[j] = true;
            match said {
                checker::Said::Refused => r.refused += 1,
                checker::Said::Unknown => r.unknown += 1,
                checker::Said::Acked => r.acked += 1,
            }
        }
        r.in_hold += usize::from(hit);
    }
    r.unmatched = credited.iter().filter(|&&c| !c).count();
    r
}

pub(crate) fn render(o: &Outcome, plan: &Plan, seed: u64) -> String {
    let mut t = String::new();
    let fenced = if plan.fenced { "fenced" } else { "UNFENCED (control)" };
    let plant = plan.plant.map_or(String::new(), |p| format!(", planted {} (control)", p.name()));
    writeln!(
        t,
        "fault suite: {} members, {} workers x 3 clients, {fenced}{plant}, seed {seed}",
        plan.members, plan.workers
    )
    .unwrap();
    writeln!(t, "  runtime {:.1} s (workers ran {:.0} s)", o.runtime.as_secs_f64(), plan.run.as_secs_f64()).unwrap();
    let st = &o.totals;
    writeln!(
        t,
        "  operations: {} acquisitions ({} by relock/reacquire), {} writes accepted, {} refused (stale), \
         {} unknown outcome, {} sessions",
        st.acquired, st.relocked, st.accepted, st.refused, st.unknown, st.sessions
    )
    .unwrap();
    writeln!(
        t,
        "  client-side: {} cancelled acquisitions, {} timeouts, {} sessions lost, {} releases/relocks found their \
         lock gone with its lost session, {} transient errors, {} unexpected",
        st.cancelled, st.timeouts, st.session_lost, st.lost_before_release, st.transient, st.unexpected
    )
    .unwrap();
    writeln!(
        t,
        "  liveness: longest wait to be admitted {:.1} s queued (fair; also counting waits still open at the end), \
         {:.1} s optimistic (not fair); {} waits still open when the run ended",
        st.max_wait_queued_ms as f64 / 1000.0,
        st.max_wait_cas_ms as f64 / 1000.0,
        st.cut_at_end
    )
    .unwrap();
    writeln!(
        t,
        "  worker stops: {} of {} landed in a hold's sleep ({} more resumed at once: the worker had left its hold); \
         those holds' exit writes, after the lease's TTL: {} refused, {} of unknown outcome, {} accepted{}; \
         {} holds overran by a TTL with no stop",
        o.stops_in_hold.in_hold,
        o.stops_in_hold.stops,
        o.stops_in_hold.missed,
        o.stops_in_hold.refused,
        o.stops_in_hold.unknown,
        o.stops_in_hold.acked,
        if plan.fenced { "" } else { " (unfenced: the stale writes the control must catch)" },
        o.stops_in_hold.unmatched
    )
    .unwrap();
    let faults: Vec<String> = o.injected.iter().map(|(f, n)| format!("{f:?}={n}")).collect();
    let none = |v: Vec<String>| if v.is_empty() { "none".to_owned() } else { v.join(" ") };
    writeln!(t, "  faults injected: {}", none(faults)).unwrap();
    let signals: Vec<String> = o.signals.iter().map(|(s, n)| format!("{s}={n}")).collect();
    writeln!(t, "  signals sent (libc::kill, effect seen in /proc): {}", none(signals)).unwrap();
    for p in &o.plants {
        writeln!(t, "  planted: {p}").unwrap();
    }
    for (name, r) in &o.reports {
        writeln!(
            t,
            "  {name}: {} writes by {} holders, max {} at once, {} stale accepted, {} over the limit",
            r.writes,
            r.holders,
            r.max_at_once,
            r.stale.len(),
            r.over_limit.len()
        )
        .unwrap();
        for v in r.stale.iter().chain(&r.over_limit).take(5) {
            writeln!(t, "    violation: {v}").unwrap();
        }
    }
    let w = &o.writes;
    writeln!(
        t,
        "  writes, key by key: {} acknowledged, {} of them not stored; {} refused, {} of them stored; \
         {} of unknown outcome, {} of them stored; {} stored entries unreported",
        w.acked,
        w.lost.len(),
        w.refused,
        w.refused_stored.len(),
        w.unknown,
        w.unknown_stored,
        w.unaccounted.len()
    )
    .unwrap();
    for v in w.lost.iter().chain(&w.refused_stored).chain(&w.unaccounted).take(5) {
        writeln!(t, "    violation: {v}").unwrap();
    }
    writeln!(
        t,
        "  leftover check (after the run, settled, before close): {} live leases listed, {} keys under them \
         owned by no guard ({} more deleted meanwhile by the session's audit)",
        st.leases_listed,
        o.leftovers.len(),
        st.audited
    )
    .unwrap();
    for v in o.leftovers.iter().take(5) {
        writeln!(t, "    violation: {v}").unwrap();
    }
    writeln!(t, "  lock prefixes empty {:.1} s after the workers exited", o.leftover_cleared_after.as_secs_f64())
        .unwrap();
    if o.diverged.is_empty() {
        writeln!(t, "  store: the members hold one history (equal hashes at one revision)").unwrap();
    } else {
        writeln!(t, "  store: THE MEMBERS DISAGREE (etcd broke its own consistency; the checks above read a mix)")
            .unwrap();
        for v in &o.diverged {
            writeln!(t, "    violation: {v}").unwrap();
        }
    }
    for g in &o.gone {
        writeln!(t, "  gone while its session lived: {g}").unwrap();
    }
    for v in o.after_exit.iter().chain(&o.other_violations) {
        writeln!(t, "  violation: {v}").unwrap();
    }
    writeln!(t, "  VIOLATIONS: {}", o.violations()).unwrap();
    t
}

pub(crate) fn publish(name: &str, text: &str) {
    println!("{text}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.txt"));
    std::fs::write(&path, text).unwrap();
}

// ---- unit tests ----------------------------------------------------------------------

mod tests {
    use super::*;

    #[test]
    fn a_stop_is_credited_with_the_pauses_of_its_worker_until_that_worker_next_stops() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // Worker 1 stopped at 0 and 100, worker 2 at 50 (never seen in a hold).
        let stops = [(1, at(0)), (2, at(50)), (1, at(100))];
        let paused = [
            (1, at(10), checker::Said::Refused),
            (1, at(11), checker::Said::Unknown), // a second hold of the same stop
            (2, at(40), checker::Said::Acked),   // before worker 2's stop: not its
            (1, at(120), checker::Said::Refused),
        ];
        let mut r = stops_in_hold(&stops, &paused);
        assert_eq!(r, StopsInHold { stops: 3, missed: 0, in_hold: 2, refused: 2, unknown: 1, acked: 0, unmatched: 1 });
        // Long after its worker's last stop, an overrun is no stop's.
        let late = [(1, at(100) + STOP_FOR + OP_LIMIT, checker::Said::Refused)];
        r = stops_in_hold(&stops, &late);
        assert_eq!((r.in_hold, r.unmatched), (0, 1));
    }
}
