//! A client's measurement of its two modes for one register key: the epochs, the costs
//! they give, and the choice of mode (see the [parent module](super)).

use super::*;

/// What a [`Crowd`] measured and chose, under its lock.
#[derive(Debug)]
pub(super) struct State {
    /// The mode of the current epoch.
    pub(super) mode: Mode,
    /// The mode in use between measurements of the other.
    pub(super) best: Mode,
    pub(super) epoch: u64,
    /// The first counted completion of this epoch.
    pub(super) clock: Option<Instant>,
    /// The last [`SAMPLES`] epochs' seconds per completion, by [`Mode::index`]: the mode's
    /// cost.
    pub(super) samples: [Samples; 2],
    /// The last epoch's seconds per completion, by [`Mode::index`].
    pub(super) per_update: [Option<f64>; 2],
    /// The last epoch's length, by [`Mode::index`].
    pub(super) took: [Option<Duration>; 2],
    /// When the current run of `best` began.
    pub(super) settled: Option<Instant>,
    /// Seconds a queued update's function takes (averaged).
    pub(super) function: Option<f64>,
    /// A store round trip: the quickest queued write of the last queue epoch (the quickest,
    /// because a write's time also holds whatever else the process ran meanwhile; on the
    /// embedded store that is most of it), and of the current one so far.
    pub(super) round_trip: Option<f64>,
    pub(super) round_trip_now: Option<f64>,
    /// Share of this client's queued updates admitted by another client's write
    /// (averaged).
    pub(super) foreign: f64,
    /// The revisions of this client's last [`OWN_WRITES`] queued writes (a ring).
    pub(super) own: [i64; OWN_WRITES],
    pub(super) own_next: usize,
    /// Whether a mode had its first exploration's warm-up epoch (see `close_epoch`), by
    /// [`Mode::index`].
    pub(super) warmed: [bool; 2],
    /// The client's first epoch, the start's, has ended (see `close_epoch`).
    pub(super) started: bool,
    /// The current epoch is the first back in the mode in use after an exploration of the
    /// other (see `close_epoch`).
    pub(super) back: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            mode: Mode::Queue,
            best: Mode::Queue,
            epoch: 0,
            clock: None,
            samples: [Samples::default(), Samples::default()],
            per_update: [None, None],
            took: [None, None],
            settled: None,
            function: None,
            round_trip: None,
            round_trip_now: None,
            foreign: 0.0,
            own: [0; OWN_WRITES],
            own_next: 0,
            warmed: [false; 2],
            started: false,
            back: false,
        }
    }
}

impl State {
    pub(super) fn cost(&self, mode: Mode) -> Option<f64> {
        self.samples[mode.index()].median()
    }

    /// Whether compare-and-swap may beat the queue. Concurrent compare-and-swaps that read
    /// the same value collide — one of them wins per window, about — so they gain only
    /// where an update's window, its function and two store round trips (read, write), is
    /// below about the queue's time per update ([`WINDOW_SHARE`]): the embedded store (a
    /// window of ~3 µs against 14–45 µs). The window is only a rough guide where a round trip
    /// is most of a hand-over, and measuring decides: on the TiKV test server (quickest
    /// round trip 0.9–1.0 ms against the queue's 1.9 ms per update, 2026-12-05) the window
    /// is at the queue's time, yet compare-and-swap runs 1.2 ms per update and sold 1.4 times
    /// as many orders, since a failed compare-and-swap costs the store little; on etcd (0.4–0.5 ms against 0.7–0.8) compare-and-swap runs 1.2–1.5
    /// ms per update, every failed attempt being a commit. So the gate lets both be measured
    /// (at 1.0 it kept the TiKV test server's sale in the queue for a third of a second), and
    /// an exploration of the dearer mode costs little: it is cut short, its hand-overs are
    /// short and not counted. Nor a function that takes a share of the queue's time
    /// ([`FUNCTION_SHARE`]: 1 ms among six tasks, nearly every attempt fails and the losers'
    /// work is wasted). Nor where other clients update the register too ([`MAX_FOREIGN`]):
    /// their queue would make this client's writes yield and wait (one exploration at the
    /// start of an etcd flash sale of four processes took 130–220 ms of its 650), and the
    /// handles' own policy (`src/adaptive.rs`) is what weighs contention between processes.
    /// Measuring would only waste work. The queue's time per update is its cost, the median
    /// of its last epochs, not the last epoch's: one slow epoch does not open the gate.
    pub(super) fn optimistic_may_pay(&self) -> bool {
        match (self.function, self.round_trip, self.cost(Mode::Queue)) {
            (Some(function), Some(round_trip), Some(queue)) => {
                function + 2.0 * round_trip < WINDOW_SHARE * queue
                    && function < FUNCTION_SHARE * queue
                    && self.foreign < MAX_FOREIGN
            }
            _ => false,
        }
    }

    /// Whether an epoch with `n` completions (counted from its timed ones) over `elapsed` is
    /// over: [`EPOCH`] completions and [`MIN_EPOCH_TIME`]; or, measuring the mode not in
    /// use, as soon as it is plainly dearer: after the time the mode in use needs for [`ABORT_UPDATES`] updates it
    /// has completed fewer than 1/[`ABORT_AFTER`] as many. Measuring it longer would only
    /// cost: on etcd, sixteen tasks of one process compare-and-swapping collide (all read
    /// the same value, one write wins) and did 767 updates/s against the queue's 1,233.
    pub(super) fn epoch_done(&self, n: u32, elapsed: Duration) -> bool {
        if n >= EPOCH && elapsed >= MIN_EPOCH_TIME {
            return true;
        }
        match self.per_update[self.best.index()] {
            Some(best) if self.mode != self.best => {
                // A warm-up epoch (see `close_epoch`) is cut short only if far dearer.
                let k = if self.warmed[self.mode.index()] { 1.0 } else { WARM_UP_ABORT };
                let elapsed = elapsed.as_secs_f64();
                elapsed >= k * f64::from(ABORT_UPDATES) * best && f64::from(n) < elapsed / (k * ABORT_AFTER * best)
            }
            _ => false,
        }
    }

    /// Ends the current epoch: `n` completions in `took`.
    pub(super) fn close_epoch(&mut self, took: Duration, n: u32, now: Instant) {
        let (m, other) = (self.mode, self.mode.other());
        // The quickest write is a round trip in any epoch of the queue, counted or not.
        if m == Mode::Queue {
            if let Some(rt) = self.round_trip_now.take() {
                self.round_trip = Some(rt);
            }
        }
        if !std::mem::replace(&mut self.started, true)
            || m != self.best && !std::mem::replace(&mut self.warmed[m.index()], true) && n >= EPOCH
        {
            // The first exploration of a mode begins with a warm-up epoch, neither cut short
            // nor counted: it carries the switch (on the TiKV test server sixteen tasks
            // starting compare-and-swap together after the queue drained: 4 ms per update
            // against 0.4–0.9 after, under load). Cut short and counted, it made the mode's
            // one sample and kept it from being measured again for five seconds. One cut
            // short (far dearer, [`WARM_UP_ABORT`]) counts.
            //
            // Nor is the client's first epoch, of the queue, counted: it carries the start
            // (the register's feed opening, every task's first place in the queue). On etcd,
            // sixteen tasks of one process, it read 1.0–1.7 ms per update against 0.7–1.0
            // after, and made compare-and-swap (1.2–1.8) look worth measuring, or once even
            // cheaper: 0.2 s of a 1.5 s sale spent in the dearer mode. (The queue's first
            // exploration, should compare-and-swap be the mode by then, still has its
            // warm-up.)
            self.epoch += 1;
            self.clock = None;
            return;
        }
        if std::mem::take(&mut self.back) && m == self.best {
            // The first epoch back in the mode in use after an exploration carries the
            // hand-over back, and is not counted either. On etcd, sixteen tasks of one
            // process back in the queue after compare-and-swap ran 5.0 ms per update in that
            // epoch against 1.0–1.4 before and after. Counted, it made the queue's median
            // 3.2 ms, so compare-and-swap (3.0) was measured again at once, twice, and then
            // that hand-over back was paid once more: 0.5 s of a 2.5 s sale.
            self.epoch += 1;
            self.clock = None;
            return;
        }
        let per_update = took.as_secs_f64() / f64::from(n.max(1));
        self.per_update[m.index()] = Some(per_update);
        self.took[m.index()] = Some(took);
        self.samples[m.index()].push(per_update);
        let cheaper = |a: Mode, b: Mode| match (self.cost(a), self.cost(b)) {
            (Some(a), Some(b)) => a < SWITCH_BELOW * b,
            _ => false,
        };
        let next = if m != self.best {
            // An exploration ends. One cut short is dearer by its completions, even where
            // too few of its timed updates have ended to show it.
            let aborted = n < EPOCH || took < MIN_EPOCH_TIME;
            if !aborted && cheaper(m, self.best) {
                self.best = m;
            } else if !aborted && self.samples[m.index()].len < SAMPLES && !cheaper(self.best, m) {
                // Too close to tell, and measured too little: measure it again at once. (Going
                // back first costs two hand-overs, and the epoch after a switch is the dearest
                // — its tasks start together. On the TiKV test server a first sale flipped
                // between the modes three times this way, 242 of its 800 orders queued.)
                self.epoch += 1;
                self.clock = None;
                return;
            }
            self.settled = Some(now);
            self.back = self.best != m;
            self.best
        } else if other == Mode::Optimistic && !self.optimistic_may_pay() {
            m
        } else if self.samples[other.index()].len < SAMPLES
            && self.cost(other).is_none_or(|c| self.cost(m).is_some_and(|m| c * SWITCH_BELOW < m))
            || cheaper(other, m)
        {
            // Not measured enough yet (the first epochs, while sessions and watches open,
            // can be slow), or the mode in use became dearer than the other was: measure
            // the other now (its figure may be old).
            other
        } else {
            // What a whole epoch of the other takes (one cut short took less).
            let full = Duration::from_secs_f64(self.per_update[other.index()].unwrap_or(0.0) * f64::from(EPOCH));
            let other_epoch = self.took[other.index()].unwrap_or(Duration::ZERO).max(full);
            let gap = MIN_EXPLORE_GAP.max(other_epoch * EXPLORE_SHARE);
            if self.settled.is_none_or(|t| now.saturating_duration_since(t) >= gap) {
                other
            } else {
                m
            }
        };
        if next != m || next != self.best {
            tracing::debug!(
                queue = ?self.cost(Mode::Queue),
                optimistic = ?self.cost(Mode::Optimistic),
                from = ?m,
                to = ?next,
                "adaptive register: seconds per update by mode"
            );
        }
        self.mode = next;
        self.epoch += 1;
        self.clock = None;
    }
}
