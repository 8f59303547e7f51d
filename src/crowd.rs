//! How an adaptive register's updates go while several tasks of one client update it at
//! once: measured, not assumed.
//!
//! Contention inside a process is known without measuring (the client counts its running
//! updates of each register), but which mode serves it better is not: on etcd the queue
//! wins (it hands over inside the process without a read, one commit per update), on the
//! embedded store a compare-and-swap takes microseconds and the queue's extra keys, watches
//! and wake-ups cost fifteen times more (flash sale, 2026-12-03: optimistic 520k orders/s,
//! queue 35k). So each client keeps, per register key, the time per update of its adaptive
//! updates in each [`Mode`] — an epoch's length over its completions, where one update in
//! [`TIMED_EVERY`] per handle is timed and stands for that many (the handles of a key
//! are timed at successive residues, [`Crowd::sampler`], so that buyers
//! that begin together do not time their updates together; every update is timed once a
//! store round trip measured [`TIME_ALL_FROM`] or more) — and uses the cheaper mode.
//! (It was the mean latency of the timed updates, start to end. But compare-and-swap's
//! latencies are heavy-tailed — on the TiKV test server's flash sale p50 1.2 ms, p99
//! 400 ms — so one late timed update decided an epoch's figure, and the mode was dropped
//! while it sold 1.4 times the queue's orders per second.)
//!
//! - An epoch lasts at least [`EPOCH`] completions (counted from the timed updates that
//!   started in it) and [`MIN_EPOCH_TIME`]; its clock starts at the first such completion
//!   (so the hand-over from the previous mode is not charged to its length) and restarts
//!   when no update of the queue's mode runs (those that started in it or joined its
//!   queue since, less those that left at a turn), or when the key's last handle goes (the crowd
//!   itself is kept while idle, `Client::register_crowd`). An update that starts in [`Mode::Optimistic`]
//!   while updates started in the queue's epochs still run is not timed either: it waits
//!   for them or races them, and its time is the switch's. A client that never runs two
//!   updates of a key at once never measures compare-and-swap and keeps the default,
//!   [`Mode::Queue`]: the behaviour tuned for updates across processes
//!   (`src/adaptive.rs`) is unchanged. (A key whose crowd measured compare-and-swap
//!   cheaper keeps that mode for later lone updates too, yielding to any queue it meets,
//!   until a measurement of the queue finds that cheaper.)
//! - The first epochs measure the two modes, [`SAMPLES`] each while they are close (within
//!   [`SWITCH_BELOW`]) — a close measurement of the mode not in use goes on at once for
//!   another epoch rather than after a switch back, since the epoch after a switch is the
//!   dearest; a measurement of the mode not in use stops as soon as it is plainly dearer
//!   ([`ABORT_AFTER`], [`ABORT_UPDATES`]). A mode's first exploration begins with a
//!   warm-up epoch that is not counted (and stops only if far dearer, [`WARM_UP_ABORT`]):
//!   it carries the switch. So does the client's first epoch, of the queue (it carries the
//!   start: the register's feed opening, every task's first place in the queue), and the
//!   first epoch back in the mode in use after an exploration (it carries the hand-over
//!   back). After that the client uses the
//!   cheaper mode (switching only below [`SWITCH_BELOW`] of the current one's cost, so noise
//!   does not flap it) and measures the other again after a run of the current one
//!   [`EXPLORE_SHARE`] times as long as an epoch of the other — and at least
//!   [`MIN_EXPLORE_GAP`] — so that exploring costs a few percent at most and a change of
//!   load is noticed.
//! - A mode's cost is the median of its last [`SAMPLES`] epochs: one epoch slowed by
//!   something else (a preempted thread, a timer) does not switch the mode.
//! - Compare-and-swap is measured only where it may pay (`State::optimistic_may_pay`): an
//!   update's window — its function and two round trips — under [`WINDOW_SHARE`] of the
//!   queue's time per update, its function under [`FUNCTION_SHARE`] of it, and fewer than
//!   [`MAX_FOREIGN`] of this client's queued updates admitted by other clients' writes.
//!
//! In [`Mode::Optimistic`] every adaptive update of the key by this client is a
//! compare-and-swap, retried after a jittered pause; one update in [`CHECK_QUEUE_EVERY`]
//! per handle, every retry, and every update while a queue was seen first read whether the
//! lock's queue is empty, with the value. One that finds it busy waits (for this client's
//! queued updates to end, or a backoff pause) and tries again, joining the queue after
//! [`YIELDS_TO_QUEUE`] such tries — not counting those during the hand-over from
//! [`Mode::Queue`], up to [`HANDOVER_TRIES`] (`Register::crowded_optimistic`); one that
//! finds the mode turned back to [`Mode::Queue`] (a turn ends its wait) joins this
//! client's queue and counts as one of the mode's ([`Crowd::rejoined_queue`]). The
//! hand-over itself is short: when the mode turns to [`Mode::Optimistic`], this client's
//! updates that queued by the in-process rule and are not yet admitted leave the queue and
//! compare-and-swap ([`Crowd::turned_optimistic`]); from then on no place is kept, and
//! one kept before is given up, not used. (They used to drain one hand-off at a time: on
//! the TiKV test server's flash sale 90–130 ms from the switch to the mode's first timed
//! update, a tenth of its sale.) Updates in this mode may fail more than once (it is chosen only where they rarely fail at all); in
//! [`Mode::Queue`] tasks of one
//! client never make each other's writes fail. Its conflicts do not feed the handle's own
//! policy: conflicts between tasks of one process are what this measures.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

mod samples;
mod state;
pub(crate) use samples::Samples;
use state::State;

/// Completions that make one epoch of measurement, at least.
pub const EPOCH: u32 = 32;
/// The shortest epoch: on the embedded store 32 updates take 40 µs, and one preemption of
/// the process in so short a span made an epoch fifty times slower than the next (and,
/// twice in three epochs, switched the mode for nothing).
pub const MIN_EPOCH_TIME: Duration = Duration::from_millis(5);
/// A mode replaces the current one only if its cost (time per update) is below this share of it.
pub const SWITCH_BELOW: f64 = 0.9;
/// The other mode is measured again after a run of the current one this many times as long
/// as an epoch of the other took (so exploring costs about 1/this of the time).
pub const EXPLORE_SHARE: u32 = 40;
/// The shortest run of the current mode between two measurements of the other.
pub const MIN_EXPLORE_GAP: Duration = Duration::from_millis(200);
/// [`Mode::Optimistic`] is tried only while an update's window (its function and two store
/// round trips) is less than this share of the queue's time per update (see
/// `State::optimistic_may_pay`: on the slow stores the window is at the queue's time
/// whichever mode is cheaper) ...
pub const WINDOW_SHARE: f64 = 1.25;
/// ... and its function less than this share of it.
pub const FUNCTION_SHARE: f64 = 0.5;
/// Weight of the newest function time in its average.
pub const FUNCTION_ALPHA: f64 = 0.1;
/// [`Mode::Optimistic`] is tried only while fewer than this share of the client's queued
/// updates are admitted by other clients' writes.
pub const MAX_FOREIGN: f64 = 0.1;
/// Weight of the newest admission in the foreign share.
pub const FOREIGN_ALPHA: f64 = 0.1;
/// This client's last queued writes remembered, to tell an admission by one of them.
pub const OWN_WRITES: usize = 64;
/// A measurement of the mode not in use ends once it is this many times slower than the
/// mode in use ...
pub const ABORT_AFTER: f64 = 1.5;
/// ... over at least the time the mode in use needs for this many updates.
pub const ABORT_UPDATES: u32 = 16;
/// The first exploration of a mode begins with a warm-up epoch, which is cut short only
/// past this many times [`ABORT_AFTER`] over as many times [`ABORT_UPDATES`].
pub const WARM_UP_ABORT: f64 = 2.0;
/// One update in this many (per handle) is timed and counted (the clock and a shared
/// counter cost a share of a microsecond update).
pub const TIMED_EVERY: u32 = 8;
/// A store round trip (the quickest queued write of a queue epoch) from which every update
/// is timed instead: sampled one in [`TIMED_EVERY`], an epoch of [`EPOCH`] completions is
/// the time between five of them, and on etcd such epochs of one mode read 28–60 ms
/// (sixteen tasks of one client compare-and-swapping): now and then two cheap ones in three
/// made compare-and-swap the mode, at two thirds of the queue's speed until it was measured
/// again. Where a round trip takes this long, a clock read and a shared count per update
/// cost nothing beside it.
pub const TIME_ALL_FROM: Duration = Duration::from_micros(100);
/// Epochs whose median is a mode's cost.
pub const SAMPLES: usize = 3;
/// In [`Mode::Optimistic`], one update in this many of a handle checks that the lock's
/// queue is empty (besides every retry, and every update while a queue was seen lately).
pub const CHECK_QUEUE_EVERY: u32 = 8;
/// Tries that find the lock's queue busy before an update in [`Mode::Optimistic`] joins it.
pub const YIELDS_TO_QUEUE: u32 = 3;
/// Tries that find it busy during the hand-over from [`Mode::Queue`] before such an update
/// joins it all the same (each waits for the client's queued updates to end, or a backoff
/// pause: 12 pauses of the default backoff are about half a second).
pub const HANDOVER_TRIES: u32 = 4 * YIELDS_TO_QUEUE;
/// Turns to be timed skipped in one hand-over to [`Mode::Optimistic`], at most (each
/// stands for [`TIMED_EVERY`] updates).
pub const HANDOVER_SKIPS: u32 = 16;

/// A handle's count of its updates, for the crowd's sampling (per handle: no contention).
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    count: AtomicU32,
    /// Where the handle's turns to be timed fall: handles made in a row get successive
    /// residues of [`TIMED_EVERY`] ([`Crowd::sampler`]).
    offset: u32,
}

/// How a client's adaptive updates of one register go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// An update that starts while another of the client runs queues (as does one whose
    /// handle kept a place); the others follow the handle's policy (`src/adaptive.rs`).
    Queue,
    /// Every update compare-and-swaps, yielding to a busy queue ([`YIELDS_TO_QUEUE`]).
    Optimistic,
}

impl Mode {
    fn index(self) -> usize {
        match self {
            Mode::Queue => 0,
            Mode::Optimistic => 1,
        }
    }

    fn other(self) -> Mode {
        match self {
            Mode::Queue => Mode::Optimistic,
            Mode::Optimistic => Mode::Queue,
        }
    }
}

/// One client's running updates of one register key and its choice of [`Mode`].
#[derive(Debug)]
pub(crate) struct Crowd {
    /// The current epoch and its mode (`epoch << 1 | optimistic`), read by every update
    /// without the lock; alone on its cache line, which changes once an epoch.
    current: Padded<AtomicU64>,
    /// Whether the current epoch measures the mode not in use (its end is checked at every
    /// timed completion, to cut it short).
    exploring: AtomicBool,
    /// Updates of [`Mode::Queue`] running now: started in it, or joined its queue after a
    /// turn back ([`rejoined_queue`](Crowd::rejoined_queue)), less those that left at a turn
    /// to [`Mode::Optimistic`] ([`left_queue`](Crowd::left_queue)). The in-process rule
    /// counts them; updates in [`Mode::Optimistic`] do not touch it, nor anything shared
    /// but `current`, unless timed.
    running: Padded<AtomicUsize>,
    /// One update in this many (per handle) is timed: [`TIMED_EVERY`], or 1 once a store
    /// round trip measured [`TIME_ALL_FROM`] or more (set between two epochs, never back).
    every: AtomicU32,
    /// Completions counted in the current epoch, `every` per timed one (the first
    /// starts its clock).
    counted: AtomicU32,
    state: Mutex<State>,
    /// Set when the mode turns to [`Mode::Optimistic`]: the register's feed (kept open for
    /// queued updates, see `Client::register_feed`) should be closed once idle.
    feed_idle: AtomicBool,
    /// Whether an update in [`Mode::Optimistic`] lately found the lock's queue busy (and
    /// none since found it empty).
    queue_seen: AtomicBool,
    /// This client's queued updates of the key running now, and their end.
    queued: AtomicUsize,
    /// Those of adaptive handles (see [`own_queue`](Crowd::own_queue)).
    queued_adaptive: AtomicUsize,
    drained: tokio::sync::Notify,
    /// Woken at every turn of the mode ([`turn`](Crowd::turn)): to [`Mode::Optimistic`],
    /// this client's updates that queued by the in-process rule and wait to be admitted
    /// leave the queue ([`turned_optimistic`](Crowd::turned_optimistic)); to
    /// [`Mode::Queue`], its compare-and-swaps that wait for its own queue join it
    /// (`Register::crowded_optimistic`).
    turned: tokio::sync::Notify,
    /// Handles of the key made so far (see [`sampler`](Crowd::sampler)).
    handles: AtomicU32,
    /// Updates not timed in the current hand-over to [`Mode::Optimistic`] (at most
    /// [`HANDOVER_SKIPS`]).
    handover_skips: AtomicU32,
    /// Handles of the key alive now ([`Crowd::join`]): when the last goes, the epoch's clock
    /// stops (the crowd is kept, `Client::register_crowd`, and the idle time until the next
    /// handle is no mode's cost).
    live: AtomicUsize,
}

impl Default for Crowd {
    fn default() -> Self {
        let state = State::default();
        let (queued, drained) = (AtomicUsize::new(0), tokio::sync::Notify::new());
        Self {
            current: Padded(AtomicU64::new(current(0, Mode::Queue))),
            exploring: AtomicBool::new(false),
            running: Padded(AtomicUsize::new(0)),
            every: AtomicU32::new(TIMED_EVERY),
            counted: AtomicU32::new(0),
            state: Mutex::new(state),
            feed_idle: AtomicBool::new(false),
            queue_seen: AtomicBool::new(false),
            queued,
            queued_adaptive: AtomicUsize::new(0),
            drained,
            turned: tokio::sync::Notify::new(),
            handles: AtomicU32::new(0),
            handover_skips: AtomicU32::new(0),
            live: AtomicUsize::new(0),
        }
    }
}

/// What [`Crowd::start`] tells an update.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    /// Updates of the key by this client in [`Mode::Queue`] that were running when this
    /// one started (the count `Crowd::running` keeps; 0 in [`Mode::Optimistic`]).
    pub(crate) others: usize,
    counted_running: bool,
    /// The mode to use.
    pub(crate) mode: Mode,
    epoch: u64,
    /// The completions its end counts for the epoch: 0 if not timed, else one update in
    /// this many is timed ([`TIMED_EVERY`], or 1: see [`TIME_ALL_FROM`]).
    weight: u32,
    /// Its number among its handle's updates.
    pub(crate) seq: u32,
}

impl Crowd {
    /// A new handle's sampler: handles made in a row are timed at successive residues of
    /// [`TIMED_EVERY`], so that their timed updates are spread out. (All timed at 0, 8, …,
    /// sixteen buyers that begin together time their updates together: on the TiKV test
    /// server an epoch's four timed completions came within 7 ms of one burst, and the
    /// queue's time per update was taken as 0.2 ms against a true 1.9.) The handle's own
    /// count still starts at 0: its first update checks the lock's queue (`Register`).
    pub(crate) fn sampler(&self) -> Sampler {
        Sampler { count: AtomicU32::new(0), offset: self.handles.fetch_add(1, Ordering::Relaxed) % TIMED_EVERY }
    }

    /// A new handle of the key: its sampler, and its membership until dropped (see `live`).
    pub(crate) fn join(self: &Arc<Self>) -> Member {
        self.live.fetch_add(1, Ordering::AcqRel);
        Member { sampler: self.sampler(), crowd: self.clone() }
    }

    /// An update starts; `sampler` is its handle's count of updates (one in
    /// [`TIMED_EVERY`] is timed: the clock costs a share of a microsecond update; every one
    /// on a store whose round trips take [`TIME_ALL_FROM`] or more).
    pub(crate) fn start(&self, sampler: &Sampler) -> Ticket {
        let (epoch, mode) = from_current(self.current.0.load(Ordering::Acquire));
        let counted_running = mode == Mode::Queue;
        let others = if counted_running { self.running.0.fetch_add(1, Ordering::AcqRel) } else { 0 };
        let seq = sampler.count.fetch_add(1, Ordering::Relaxed);
        // Read after `current`, which is stored after it: an update of a new epoch sees the
        // sampling chosen for it.
        let every = self.every.load(Ordering::Acquire);
        // Not timed in the hand-over from the queue to compare-and-swap: while updates
        // started in the queue's epochs still run, this one waits for them or races them,
        // and its time is the switch's, not the mode's (on the TiKV test server sixteen
        // queued updates take 30 ms to drain, twenty of the mode's own times per update).
        // At most HANDOVER_SKIPS such turns of TIMED_EVERY updates: a queued update that
        // never ends (another client's long holder ahead) must not keep the epoch from ending.
        let timed = seq.wrapping_add(sampler.offset).is_multiple_of(every)
            && (counted_running
                || self.running.0.load(Ordering::Acquire) == 0
                || self.handover_skips.fetch_add(1, Ordering::Relaxed) >= HANDOVER_SKIPS * (TIMED_EVERY / every));
        Ticket { others, counted_running, mode, epoch, weight: if timed { every } else { 0 }, seq }
    }

    /// The update of `ticket` ends now (`now` reads the clock); `completed` if it returned
    /// its outcome (an error or a dropped future is not measured). Only timed updates
    /// count: each stands for its ticket's weight of completions. The lock is taken only to
    /// start or end an epoch, or when the last running queued update ends.
    pub(crate) fn finish(&self, mut ticket: Ticket, completed: bool, now: impl Fn() -> Instant) {
        let last = self.stop_running(&mut ticket);
        if completed && ticket.weight > 0 {
            let now = now();
            // An epoch's timed updates all have the weight chosen for it: `every` changes
            // only between epochs, and an update of another epoch does not count.
            if from_current(self.current.0.load(Ordering::Acquire)).0 == ticket.epoch {
                let n = self.counted.fetch_add(ticket.weight, Ordering::AcqRel);
                if n.is_multiple_of(EPOCH) || self.exploring.load(Ordering::Relaxed) {
                    self.epoch_step(ticket.epoch, n, now);
                }
            }
        }
        if last {
            self.none_running();
        }
    }

    /// The update of `ticket`, which queued by the in-process rule (or rejoined the queue,
    /// [`rejoined_queue`](Crowd::rejoined_queue)), left the queue at a turn to
    /// [`Mode::Optimistic`] (`Crowd::turned_optimistic`) and compare-and-swaps: it
    /// is the mode's now, no longer a queued update the mode's hand-over waits for. (Counted
    /// until it ended, the hand-over lasted until the slowest leaver's compare-and-swap
    /// succeeded, through its retries: on etcd, sixteen tasks of one process, 0.15–0.2 s
    /// from the turn to the mode's first timed update, and in that time nothing measured
    /// the mode or could cut its exploration short.)
    pub(crate) fn left_queue(&self, ticket: &mut Ticket) {
        if self.stop_running(ticket) {
            self.none_running();
        }
    }

    /// The update of `ticket`, which began as a compare-and-swap, joined this client's queue
    /// after the mode turned back to [`Mode::Queue`] (`Register::crowded_optimistic`): it
    /// counts as running in the queue's mode again, as an update starting now would, so
    /// that the next updates queue behind it by the in-process rule and a turn's hand-over
    /// waits for it.
    pub(crate) fn rejoined_queue(&self, ticket: &mut Ticket) {
        if !std::mem::replace(&mut ticket.counted_running, true) {
            self.running.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// No longer counts the update of `ticket` as running in the queue's mode: whether it
    /// was the last.
    fn stop_running(&self, ticket: &mut Ticket) -> bool {
        std::mem::take(&mut ticket.counted_running) && self.running.0.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// The last running update of the queue's mode ended.
    fn none_running(&self) {
        if self.counted.load(Ordering::Acquire) > 0 {
            // Idle time is no mode's cost.
            let mut s = self.state.lock();
            if self.running.0.load(Ordering::Acquire) == 0 {
                s.clock = None;
                self.counted.store(0, Ordering::Release);
            }
        }
    }

    /// Starts the clock of `epoch` (at its first counted completion, `n` = 0) or ends it.
    fn epoch_step(&self, epoch: u64, n: u32, now: Instant) {
        let mut s = self.state.lock();
        if s.epoch != epoch {
            return;
        }
        match s.clock {
            None => s.clock = Some(now),
            Some(started) if n > 0 && s.epoch_done(n, now.saturating_duration_since(started)) => {
                let took = now.saturating_duration_since(started);
                let before = s.mode;
                s.close_epoch(took, n, now);
                if s.round_trip.is_some_and(|rt| rt >= TIME_ALL_FROM.as_secs_f64()) {
                    self.every.store(1, Ordering::Release);
                }
                self.counted.store(0, Ordering::Release);
                self.current.0.store(current(s.epoch, s.mode), Ordering::Release);
                self.exploring.store(s.mode != s.best, Ordering::Relaxed);
                if s.mode != before {
                    self.feed_idle.store(s.mode == Mode::Optimistic, Ordering::Relaxed);
                    self.handover_skips.store(0, Ordering::Relaxed);
                    self.turned.notify_waiters();
                }
            }
            Some(_) => {}
        }
    }

    /// Records a queued write of this client that made revision `written`.
    pub(crate) fn wrote(&self, written: Option<i64>) {
        if let Some(revision) = written {
            let mut s = self.state.lock();
            let i = s.own_next;
            s.own[i] = revision;
            s.own_next = (i + 1) % OWN_WRITES;
        }
    }

    /// Records that a queued update was admitted by the write and release at revision
    /// `at`: another client's unless it is one of this client's last writes.
    pub(crate) fn admitted_by(&self, at: i64) {
        let mut s = self.state.lock();
        let foreign = if s.own.contains(&at) { 0.0 } else { 1.0 };
        s.foreign = (1.0 - FOREIGN_ALPHA) * s.foreign + FOREIGN_ALPHA * foreign;
    }

    /// Records the time a queued update's function took and its write's round trip.
    pub(crate) fn queued_times(&self, function: Duration, write: Duration) {
        let mut s = self.state.lock();
        let t = function.as_secs_f64();
        s.function = Some(s.function.map_or(t, |old| (1.0 - FUNCTION_ALPHA) * old + FUNCTION_ALPHA * t));
        let w = write.as_secs_f64();
        s.round_trip_now = Some(s.round_trip_now.map_or(w, |m: f64| m.min(w)));
    }

    /// Records whether a look at the lock (with the value, see `Register::crowded_optimistic`)
    /// found its queue busy.
    pub(crate) fn saw_queue(&self, busy: bool) {
        if self.queue_seen.load(Ordering::Relaxed) != busy {
            self.queue_seen.store(busy, Ordering::Relaxed);
        }
    }

    /// Whether the lock's queue was found busy lately.
    pub(crate) fn queue_seen(&self) -> bool {
        self.queue_seen.load(Ordering::Relaxed)
    }

    /// Counts a queued update (any strategy; `adaptive` if its handle's strategy is) of the
    /// key by this client until dropped.
    pub(crate) fn queued_update(&self, adaptive: bool) -> QueuedUpdate<'_> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        if adaptive {
            self.queued_adaptive.fetch_add(1, Ordering::AcqRel);
        }
        QueuedUpdate(self, adaptive)
    }

    /// Whether queued updates of this client's adaptive handles run: in
    /// [`Mode::Optimistic`], those of the hand-over from the queue's mode and those that
    /// joined the queue since — a queue that drains unless fed (queued updates of another
    /// strategy need not ever drain).
    pub(crate) fn own_queue(&self) -> bool {
        self.queued_adaptive.load(Ordering::Acquire) > 0
    }

    /// This client's queued updates of the key running now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Completes once the client's queued updates of the key have all ended (enable it
    /// before reading [`queued`](Self::queued)).
    pub(crate) fn drained(&self) -> tokio::sync::futures::Notified<'_> {
        self.drained.notified()
    }

    /// Completes at the next turn of the mode (enable it before reading
    /// [`mode_now`](Self::mode_now)).
    pub(crate) fn turn(&self) -> tokio::sync::futures::Notified<'_> {
        self.turned.notified()
    }

    /// Completes once the mode is [`Mode::Optimistic`] (at once if it is now). An update
    /// that queued by the in-process rule leaves the queue when this completes before it is
    /// admitted (`Register::queued_unless_turned`): otherwise the tasks queued at the
    /// switch drain one hand-off at a time while the mode's own updates wait for them (on
    /// the TiKV test server's flash sale 90–130 ms, a tenth of a sale, from the switch to
    /// the first update the mode timed).
    pub(crate) async fn turned_optimistic(&self) {
        loop {
            let turned = self.turned.notified();
            tokio::pin!(turned);
            // Registered before the mode is read: a switch after the read wakes it.
            turned.as_mut().enable();
            if self.mode_now() == Mode::Optimistic {
                return;
            }
            // Woken by a turn, the mode is read again: it may have turned back since.
            turned.await;
        }
    }

    /// The mode of the current epoch.
    pub(crate) fn mode_now(&self) -> Mode {
        from_current(self.current.0.load(Ordering::Acquire)).1
    }

    /// Whether the register's feed should be closed when idle (the mode turned optimistic
    /// and it was not closed since).
    pub(crate) fn feed_to_close(&self) -> bool {
        self.feed_idle.load(Ordering::Relaxed)
    }

    /// The feed is closed (or was not open).
    pub(crate) fn feed_closed(&self) {
        self.feed_idle.store(false, Ordering::Relaxed);
    }

    /// Turns the mode to [`Mode::Optimistic`] now, as an epoch that measured it cheaper
    /// does, for tests.
    #[cfg(test)]
    pub(crate) fn turn_optimistic(&self) {
        self.turn_to(Mode::Optimistic);
    }

    /// Turns the mode back to [`Mode::Queue`] now, as an exploration of compare-and-swap
    /// that found it dearer does, for tests.
    #[cfg(test)]
    pub(crate) fn turn_queue(&self) {
        self.turn_to(Mode::Queue);
    }

    #[cfg(test)]
    fn turn_to(&self, mode: Mode) {
        let mut s = self.state.lock();
        (s.mode, s.best, s.clock) = (mode, mode, None);
        s.epoch += 1;
        self.current.0.store(current(s.epoch, s.mode), Ordering::Release);
        self.turned.notify_waiters();
    }

    /// Updates started in the queue's mode that still count as running, for tests.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.running.0.load(Ordering::Acquire)
    }

    /// Handles of the key made so far, for tests.
    #[cfg(test)]
    pub(crate) fn handles_made(&self) -> u32 {
        self.handles.load(Ordering::Relaxed)
    }

    /// The costs measured so far (seconds per update: queue, optimistic) and the mode in
    /// use, for tests and logs.
    #[cfg(test)]
    fn costs(&self) -> ([Option<f64>; 2], Mode) {
        let s = self.state.lock();
        ([s.cost(Mode::Queue), s.cost(Mode::Optimistic)], s.mode)
    }
}

/// A value alone on its cache line (so that counters written by every update do not
/// invalidate it for the others).
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

fn current(epoch: u64, mode: Mode) -> u64 {
    epoch << 1 | u64::from(mode == Mode::Optimistic)
}

fn from_current(current: u64) -> (u64, Mode) {
    (current >> 1, if current & 1 == 1 { Mode::Optimistic } else { Mode::Queue })
}

/// A handle of the key ([`Crowd::join`]; shared by the handle's clones).
#[derive(Debug)]
pub(crate) struct Member {
    sampler: Sampler,
    crowd: Arc<Crowd>,
}

impl Member {
    /// The handle's count of its updates.
    pub(crate) fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// The crowd the handle belongs to.
    pub(crate) fn crowd(&self) -> &Crowd {
        &self.crowd
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let crowd = &self.crowd;
        if crowd.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            // No handle left, so no update runs: the epoch's clock stops until the next
            // burst. (In Mode::Optimistic nothing else stops it: updates of that mode count
            // nothing shared. A crowd kept idle for a minute in the middle of an epoch made
            // that minute its cost, and the mode was not measured again for forty.)
            let mut s = crowd.state.lock();
            if crowd.live.load(Ordering::Acquire) == 0 {
                s.clock = None;
                crowd.counted.store(0, Ordering::Release);
            }
        }
    }
}

/// A running queued update (see [`Crowd::queued_update`]), and whether its handle is
/// adaptive.
pub(crate) struct QueuedUpdate<'a>(&'a Crowd, bool);

impl Drop for QueuedUpdate<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.queued_adaptive.fetch_sub(1, Ordering::AcqRel);
        }
        if self.0.queued.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests;
