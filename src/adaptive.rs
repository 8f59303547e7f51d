//! The adaptive contention policy: start optimistic, queue when conflicts rise, go back to
//! optimistic when contention is quiet.
//!
//! Each handle (a [`Mutex`](crate::Mutex) or [`Register`](crate::Register) with
//! [`Strategy::Adaptive`](crate::Strategy::Adaptive)) keeps exponentially weighted averages
//! of its own recent operations (weight [`CONFLICT_ALPHA`] or [`ALPHA`] for the newest):
//!
//! | mode | signal | switch when |
//! |---|---|---|
//! | optimistic | conflicts per operation (failed compare-and-swaps) | above [`TO_QUEUE`]; a [`Mutex`](crate::Mutex) also at once when it had to wait for a holder |
//! | queued (mutex) | share of operations that had to wait behind another holder | below [`TO_OPTIMISTIC`], after at least [`MIN_RUN`] queued operations |
//! | queued (register) | probes: one optimistic attempt every [`PROBE_EVERY`] updates | [`PROBES_TO_LEAVE`] probes in a row write at once |
//! | queued (register) | the queue's time per hand-off over a store round trip and the update function | above [`DEAR`] in two of the last three measurements; then conflicts do not switch it back for [`DEAR_FOR`]; once that ran out, an update admitted at once while those measurements still say so leaves again |
//!
//! Optimistic costs nothing extra when alone but wastes work and time on retries under
//! contention; the queue costs a lock's round trips but turns contention into an orderly
//! hand-off. The thresholds give hysteresis so a handle does not flap between the two.
//! [`TO_QUEUE`] is low (a quarter of a conflict per update) because on etcd the register's
//! queue is the faster mode as soon as two processes contend: a queued update admitted by
//! another's write needs no read (its feed brings the value) and a loop keeps its place in
//! the queue, one commit per update, while two optimistic processes already meet 0.35
//! conflicts per update (contention sweep, `docs/sweep.md`: at 2 processes the queue ran
//! 1,634 updates/s, optimistic 1,390). Alone, a handle meets no conflicts and stays
//! optimistic, which is then the faster mode (one read and one commit, against a queued
//! update's two commits).
//!
//! An adaptive register's optimistic write also requires the lock's queue to be empty, and
//! a write that fails while anyone holds or waits for the lock joins the queue — whether or
//! not the value changed meanwhile (a busy queue keeps changing it, so an update that only
//! yielded on an unchanged value kept retrying and starved for seconds at 64 contenders).
//! Such a yield sends that one update through the queue and counts as a conflict; it does
//! not switch the handle. (It used to: then one unlucky handle switching pulled every
//! other handle into the queue, and since a queue fed by all of them never empties, none
//! could leave — at 8–32 contenders adaptive ran at the queue's speed even where
//! optimistic was faster.) The conflict average is slow ([`CONFLICT_ALPHA`] = 0.1) for the
//! same reason: with 0.25 a single update with five conflicts switched a handle, and at 8
//! contenders (0.3 conflicts per update on average) that happened within seconds.
//! A probe, and the update of an optimistic handle whose conflict average is at least
//! [`CONTENDED`] and that has seen the lock taken since, first reads the value together
//! with whether the lock is taken
//! (a [`Backend::transact`](crate::backend::Backend::transact) of two reads, one round
//! trip) and yields at once if it is: the write would fail, and on a store that is then
//! commit-bound each such doomed transaction cost the queue throughput (one client shared by
//! 32 contenders: adaptive 0.80× the queue, with these reads 0.95–1.02× in the same runs).
//! Handles below that average still try the write, because a short queue often drains
//! before it; yielding at every glimpse of a queue fed it again (4 own clients: 0.79×).
//! A queued register cannot judge quiet by its own waits (in a mix of modes its queue may
//! be short while optimistic writers keep yielding to it), hence the probes; a probe's
//! write also needs the queue empty, so while others queue it fails and the handle stays.
//! A handle that has not seen the lock taken writes without that read: with nobody queued
//! it only delays the write (at 4 contenders a short run of conflicts put handles over
//! [`CONTENDED`] and their p50 went from 1.10 to 1.23 ms).
//!
//! That a busy queue keeps a queued handle in it is right where the queue is the faster
//! mode, and wrong where its hand-offs are far dearer than compare-and-swaps: several
//! clients over one embedded store, where a startup burst of conflicts sent some handles
//! to the queue, the others followed through their yields, and all stayed (0.01–0.13×
//! optimistic at 2–64 clients). So a queued update also weighs the queue's time per
//! hand-off against a store round trip and its own function ([`Adaptive::queue_measured`]):
//! where a hand-off costs more than [`DEAR`] times that, the handle leaves the queue, keeps
//! no place in it, does not switch back on conflicts for [`DEAR_FOR`], and an update that
//! finds the lock taken waits for the queue to drain ([`Adaptive::drain_wait`]) before it
//! joins. On etcd the ratio is about 1 (0.5–1.8 at 8–64 contenders), on the embedded store
//! 10 and more. The round trip is the least of the handle's recent writes, queued ones
//! included (a handle that stays queued renews it), and of its last optimistic writes
//! (which queued writes, each a watch event to every waiting client, do not push out). When conflicts send the handle back
//! after [`DEAR_FOR`], the others have mostly stayed optimistic and the queue is empty: an
//! update admitted at once measures nothing, and while the kept measurements still say
//! dear the handle leaves again ([`Adaptive::queued_at_once`]). A handle that leaves the
//! queue, dear or by its probes, closes its client's idle register feed, which would bring
//! an event per write.
//!
//! All of this is about other processes. Several tasks of one client updating a register at
//! once are the client's own business, decided by measurement (`src/crowd.rs`): by default
//! an update that starts while another of the same client runs queues at once, before any
//! of it (the queue hands over inside the process without a read: one client shared by
//! 2–64 tasks on etcd, the queue 1.2–2.4× optimistic in run H), and where the client
//! measures compare-and-swap cheaper for its concurrent updates (the embedded store, where
//! a write takes a microsecond) every update compare-and-swaps instead.

use crate::crowd::Samples;
use parking_lot::{Mutex, MutexGuard};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Weight of the newest observation of whether a queued operation waited.
pub const ALPHA: f64 = 0.25;
/// Weight of the newest operation's conflicts: about the last ten operations count.
pub const CONFLICT_ALPHA: f64 = 0.1;
/// Conflicts per optimistic operation above which the handle starts queueing.
pub const TO_QUEUE: f64 = 0.25;

/// Conflicts per optimistic operation from which a register handle's update yields to a
/// busy queue before writing, rather than after a write that fails.
pub const CONTENDED: f64 = TO_QUEUE / 2.0;
/// Share of queued operations that waited, below which the handle goes optimistic again.
pub const TO_OPTIMISTIC: f64 = 0.2;
/// Queued operations before the handle may go back.
pub const MIN_RUN: u32 = 8;
/// A queued [`Register`](crate::Register) handle probes with one optimistic attempt every
/// this many updates.
pub const PROBE_EVERY: u32 = 8;
/// Successful probes in a row after which a queued register handle goes back to optimistic.
pub const PROBES_TO_LEAVE: u32 = 3;
/// A register handle's queue is *dear* while two of its last three measurements of the
/// queue's time per hand-off are above this many times a store round trip and the
/// handle's own update function ([`Adaptive::queue_measured`]).
pub const DEAR: f64 = 4.0;
/// How long a verdict that the queue is dear holds without a newer one.
pub const DEAR_FOR: Duration = Duration::from_secs(1);
/// A store round trip is the least of the handle's last this many timed writes (optimistic
/// or queued) and of its last this many optimistic writes.
pub const TRIPS: usize = 8;
/// The longest an update of a handle whose queue is dear waits for another client's queue
/// to drain ([`Adaptive::drain_wait`]).
pub const MAX_DRAIN_WAIT: Duration = Duration::from_millis(100);

/// What a [`Register`](crate::Register) handle's next update does, and how
/// ([`Adaptive::plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) next: Next,
    /// Read the lock with the value first: the handle meets contention (conflicts at least
    /// [`CONTENDED`]) and has seen the lock taken since.
    pub(crate) look_first: bool,
    /// The handle meets no contention (its conflict average is below [`QUIET`]) and has not
    /// seen the lock taken since it last was: its compare-and-swaps need not all check the
    /// lock's queue (`Register`).
    pub(crate) quiet: bool,
}

impl Plan {
    /// Whether the update numbered `seq` of its handle is a quiet handle's unchecked
    /// compare-and-swap (`Register`): all but one update in
    /// [`CHECK_QUEUE_EVERY`](crate::crowd::CHECK_QUEUE_EVERY).
    pub(crate) fn unchecked(&self, seq: u32) -> bool {
        self.quiet && self.next == Next::Optimistic && !seq.is_multiple_of(crate::crowd::CHECK_QUEUE_EVERY)
    }
}

/// Conflicts per optimistic operation below which a handle counts as meeting no
/// contention.
pub const QUIET: f64 = CONTENDED / 4.0;

/// What a [`Register`](crate::Register) handle's next update does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Compare-and-swap, retried.
    Optimistic,
    /// Take a place in the lock's queue.
    Queue,
    /// One optimistic attempt; on failure, the queue.
    Probe,
}

#[derive(Debug, Default)]
struct State {
    queued: bool,
    conflicts: f64,
    waited: f64,
    run: u32,
    probes_won: u32,
    /// Whether an optimistic handle has seen the lock taken (by a read, or a write that
    /// failed against the lock's prefix) since its conflict average last was below
    /// [`CONTENDED`].
    lock_seen: bool,
    /// What its queued updates measured of the queue; kept across switches.
    queue: QueueCost,
}

/// A register handle's measurements of its lock's queue ([`Adaptive::queue_measured`]).
#[derive(Debug, Default, Clone)]
struct QueueCost {
    /// Its last [`TRIPS`] timed writes (optimistic or queued), in seconds.
    trips: [f64; TRIPS],
    /// Writes timed (the next goes to `trips[timed % TRIPS]`).
    timed: usize,
    /// Its last [`TRIPS`] timed optimistic writes alone, which its queued writes do not
    /// push out: while every handle stays queued, each queued write brings every waiting
    /// client a watch event and can take many round trips (eight clients over one embedded
    /// store: 50–150 µs against 2–20; the handles then measured hand-offs at about two
    /// such writes and stayed, in 1 of 15 runs of the conformance check).
    optimistic_trips: [f64; TRIPS],
    optimistic_timed: usize,
    /// The queue's time per hand-off over a round trip and the handle's update function,
    /// the last few measurements.
    ratios: Samples,
    /// Until when the queue counts as dear (the last verdict, [`DEAR_FOR`] after it).
    dear_until: Option<Instant>,
    /// The last measured time for a hand-off to every key in the queue (its length, with
    /// the handle's own, times the time per hand-off).
    round: Duration,
}

impl QueueCost {
    fn dear(&self) -> bool {
        self.dear_until.is_some_and(|until| Instant::now() < until)
    }

    /// Whether two of the last three measurements are above [`DEAR`].
    fn ratios_say_dear(&self) -> bool {
        self.ratios.above(DEAR) >= 2
    }

    /// Keeps a write that took `took` among the last [`TRIPS`], and among the last
    /// optimistic ones if it was one.
    fn timed_write(&mut self, took: Duration, optimistic: bool) {
        self.trips[self.timed % TRIPS] = took.as_secs_f64();
        self.timed += 1;
        if optimistic {
            self.optimistic_trips[self.optimistic_timed % TRIPS] = took.as_secs_f64();
            self.optimistic_timed += 1;
        }
    }

    /// A store round trip: the least of the writes kept, if any.
    fn trip(&self) -> Option<f64> {
        let kept = self.trips[..self.timed.min(TRIPS)].iter();
        kept.chain(&self.optimistic_trips[..self.optimistic_timed.min(TRIPS)]).copied().reduce(f64::min)
    }
}

impl State {
    fn next(&mut self) -> Next {
        if !self.queued {
            return Next::Optimistic;
        }
        self.run = self.run.saturating_add(1);
        if self.run.is_multiple_of(PROBE_EVERY) {
            Next::Probe
        } else {
            Next::Queue
        }
    }

    fn look_first(&self) -> bool {
        self.conflicts >= CONTENDED && self.lock_seen
    }

    /// Just switched to the queue (a mutex counts every recent operation as having waited),
    /// keeping what was measured of the queue.
    fn queued(&self) -> Self {
        Self { queued: true, waited: 1.0, queue: self.queue.clone(), ..Self::default() }
    }

    /// The queue is dear from now for [`DEAR_FOR`]; a queued handle leaves it.
    fn dear_queue(&mut self) {
        self.queue.dear_until = Some(Instant::now() + DEAR_FOR);
        if self.queued {
            tracing::debug!(ratios = ?self.queue.ratios, "adaptive: the queue's hand-offs are dear; optimistic again");
            *self = self.optimistic();
        }
    }

    /// Optimistic afresh, keeping what was measured of the queue.
    fn optimistic(&self) -> Self {
        Self { queue: self.queue.clone(), ..Self::default() }
    }
}

/// One handle's policy state (shared by its clones).
#[derive(Debug, Default)]
pub(crate) struct Adaptive {
    state: Mutex<State>,
    /// Whether the state is quiet ([`State::quiet`]), read without the lock by
    /// [`plan`](Adaptive::plan): a lone handle's update then writes nothing shared here
    /// (on the embedded store, where an update takes a microsecond or two, taking the lock
    /// each time was measurable). Set under the lock after every change of the state.
    quiet: AtomicBool,
}

impl State {
    /// Optimistic, meeting no contention (its conflict average below [`QUIET`]), and no
    /// lock seen taken since it last was: its next update is a plain
    /// [`Plan`] `{ next: Optimistic, look_first: false, quiet: true }`.
    fn quiet(&self) -> bool {
        !self.queued && self.conflicts < QUIET && !self.lock_seen
    }
}

impl Adaptive {
    /// The state, locked; dropping the guard records whether it is quiet.
    fn state(&self) -> StateGuard<'_> {
        StateGuard { state: self.state.lock(), quiet: &self.quiet }
    }

    /// Whether the next operation should queue.
    pub(crate) fn queue_next(&self) -> bool {
        self.state().queued
    }

    /// Whether an optimistic register update should look at the lock before writing: the
    /// handle already meets contention (its conflict average is at least [`CONTENDED`]) and
    /// has seen the lock taken since it does. Where nobody has been seen queueing there is
    /// no queue to yield to, and the read would only delay the write.
    #[cfg(test)]
    pub(crate) fn look_first(&self) -> bool {
        self.state().look_first()
    }

    /// Records that the handle found the lock taken (a read of the lock, or a write
    /// conditional on its prefix being empty that failed for it).
    pub(crate) fn saw_lock_taken(&self) {
        self.state().lock_seen = true;
    }

    /// Records an optimistic operation that met `conflicts` failed attempts.
    pub(crate) fn optimistic(&self, conflicts: u32) {
        let mut s = self.state();
        s.conflicts = (1.0 - CONFLICT_ALPHA) * s.conflicts + CONFLICT_ALPHA * f64::from(conflicts);
        if s.conflicts < CONTENDED {
            s.lock_seen = false; // a quiet spell: look again before reading first
        }
        if !s.queued && s.conflicts > TO_QUEUE {
            if s.queue.dear() {
                return; // conflicts cost less than this queue (`queue_measured`)
            }
            tracing::debug!(conflicts = s.conflicts, "adaptive: switching to the queue");
            *s = s.queued();
        }
    }

    /// Records that a write of the register handle took `took`: a store round trip. Its
    /// optimistic writes (a conditional write that also asks whether the lock is taken) and
    /// its queued ones (a conditional write that also releases the lock) both count, so a
    /// handle that stays queued renews its round trips.
    pub(crate) fn write_took(&self, took: Duration) {
        self.state().queue.timed_write(took, false);
    }

    /// Records that an optimistic write of the register handle took `took`
    /// ([`write_took`](Self::write_took)), also kept among its last optimistic writes, which
    /// its queued writes do not push out.
    pub(crate) fn optimistic_write_took(&self, took: Duration) {
        self.state().queue.timed_write(took, true);
    }

    /// Records what a queued update of a register handle measured: it waited `took` for
    /// `ahead` keys (holders, waiters and kept places), and its own update function ran
    /// `function`.
    ///
    /// Each handle sees only its own time per update in either mode, and the mode it is
    /// alone in always looks cheaper: a lone queued handle has the queue to itself, a lone
    /// optimistic handle amid a queue finds it busy. So what is compared is the store's
    /// character, which is the same for every handle: the queue's time per hand-off
    /// (`took / ahead`) against what one holder's work needs at least — its update
    /// function and a store round trip (the least of its last [`TRIPS`] writes, each one
    /// conditional write, [`write_took`](Self::write_took), and of its last [`TRIPS`]
    /// optimistic ones). On etcd a
    /// hand-off is a commit and a watch event, and costs about what such a write does under
    /// the same load (0.5–1.8 times at 8–64 contenders); the queue's fairness and its fewer
    /// wasted writes decide. On the
    /// embedded store a round trip takes a microsecond and a hand-off (watch events to
    /// every waiting client, and a task's wake-up) tens to hundreds: the queue runs many
    /// times slower than compare-and-swaps would. Once two of the last three ratios pass
    /// [`DEAR`] (not one alone: one wait can be slow for other reasons, a feed being
    /// opened, a crashed holder's lease running out) the handle leaves the queue,
    /// conflicts do not send it back, its queued updates keep no place, and an optimistic
    /// update that finds the lock taken waits for the queue to drain before joining it
    /// ([`drain_wait`](Self::drain_wait), `Register::adaptive`) — for [`DEAR_FOR`] after
    /// the last such measurement.
    ///
    /// A limit of the measure: a hand-off includes the other holders' update functions, of
    /// which only the handle's own is known (a handle with a fast function among clients
    /// with slow ones may find their queue dear). (Before this, handles that had all queued
    /// stayed there: with a client per contender on the embedded store adaptive ran at
    /// 0.01–0.13 times optimistic's updates per second. And until the queued writes counted
    /// as round trips, the least of a queued handle's old optimistic writes did: timed while
    /// 64 contenders competed for the runtime, 10–90 µs instead of 1–2, and some sweep
    /// rounds at 64 clients kept every handle queued.)
    pub(crate) fn queue_measured(&self, took: Duration, ahead: u32, function: Duration) {
        if cfg!(leasehold_adaptive_mutation_dear_ignored) || ahead == 0 {
            return;
        }
        let mut s = self.state();
        let Some(trip) = s.queue.trip() else { return };
        let handoff = took.as_secs_f64() / f64::from(ahead);
        s.queue.round = took / ahead * (ahead.saturating_add(1));
        s.queue.ratios.push(handoff / (trip + function.as_secs_f64()).max(1e-9));
        let dear = s.queue.ratios_say_dear();
        s.queue.dear_until = None;
        if dear {
            s.dear_queue();
        }
    }

    /// Records that a queued update of the register handle was admitted at once, nobody
    /// ahead of it: no measure of a hand-off ([`queue_measured`](Self::queue_measured)).
    /// A handle that went back to the queue once its last verdict was [`DEAR_FOR`] old, on
    /// conflicts, finds it empty where the others stayed optimistic, and so measured
    /// nothing new there: it stayed until its probes won (at least
    /// [`PROBE_EVERY`] × [`PROBES_TO_LEAVE`] updates), its queue key making the others'
    /// checked writes yield and its client's feed bringing an event per write. Now, while
    /// the ratios it keeps still say dear, such an update renews the verdict and the handle
    /// leaves.
    pub(crate) fn queued_at_once(&self) {
        let mut s = self.state();
        if s.queued && s.queue.ratios_say_dear() {
            s.dear_queue();
        }
    }

    /// Whether the register handle's queue measured dear lately ([`queue_measured`](Self::queue_measured)).
    pub(crate) fn queue_is_dear(&self) -> bool {
        self.state().queue.dear()
    }

    /// How long an optimistic update that found the lock taken waits for the queue to
    /// drain before it joins: `None` unless the queue measured dear lately; then twice the
    /// last measured time for the queue to hand the lock to each of its keys, at most
    /// [`MAX_DRAIN_WAIT`].
    pub(crate) fn drain_wait(&self) -> Option<Duration> {
        let s = self.state();
        s.queue.dear().then(|| (s.queue.round * 2).min(MAX_DRAIN_WAIT))
    }

    /// The next update's [`Next`], whether it reads the lock first, and whether the handle is
    /// quiet: a quiet handle's from its flag, without the lock; any other's under one lock.
    pub(crate) fn plan(&self) -> Plan {
        if self.quiet.load(Ordering::Acquire) {
            return Plan { next: Next::Optimistic, look_first: false, quiet: true };
        }
        let mut s = self.state();
        let next = s.next();
        Plan { next, look_first: s.look_first(), quiet: s.conflicts < QUIET && !s.lock_seen }
    }

    /// What a register's next update does. Queued handles probe every [`PROBE_EVERY`]
    /// updates: when no one else is queued and the value is not contended a single
    /// optimistic attempt succeeds and the handle goes back to optimistic ([`Adaptive::probed`]).
    /// (A queued register cannot judge quiet by its own waits: in a mix of modes its queue
    /// may be short while optimistic writers keep yielding to it.)
    #[cfg(test)]
    pub(crate) fn next(&self) -> Next {
        self.state().next()
    }

    /// Records a probe's outcome: `wrote` if its single optimistic attempt succeeded. After
    /// [`PROBES_TO_LEAVE`] successes in a row the handle is optimistic again (one success
    /// can be luck: under heavy contention a single attempt still wins now and then).
    /// Whether the handle left the queue now.
    pub(crate) fn probed(&self, wrote: bool) -> bool {
        let mut s = self.state();
        s.probes_won = if wrote { s.probes_won + 1 } else { 0 };
        let leaves = s.probes_won >= PROBES_TO_LEAVE;
        if leaves {
            tracing::debug!("adaptive: probes succeed; optimistic again");
            *s = s.optimistic();
        }
        leaves
    }

    /// Switches to the queue now (an optimistic mutex acquisition had to wait for a holder).
    pub(crate) fn force_queue(&self) {
        let mut s = self.state();
        if !s.queued {
            *s = s.queued();
        }
    }

    /// Records a queued operation; `waited` if another holder was ahead.
    pub(crate) fn queued(&self, waited: bool) {
        let mut s = self.state();
        s.waited = (1.0 - ALPHA) * s.waited + ALPHA * if waited { 1.0 } else { 0.0 };
        s.run = s.run.saturating_add(1);
        if s.queued && s.run >= MIN_RUN && s.waited < TO_OPTIMISTIC {
            tracing::debug!(waited = s.waited, "adaptive: contention is quiet; optimistic again");
            *s = s.optimistic();
        }
    }
}

/// [`Adaptive`]'s state, locked (see [`Adaptive::state`]).
struct StateGuard<'a> {
    state: MutexGuard<'a, State>,
    quiet: &'a AtomicBool,
}

impl Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        self.quiet.store(self.state.quiet(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_with_hysteresis() {
        let a = Adaptive::default();
        assert!(!a.queue_next(), "starts optimistic");
        a.optimistic(0);
        a.optimistic(1);
        assert!(!a.queue_next(), "one conflict is not contention");
        for _ in 0..8 {
            a.optimistic(2);
        }
        assert!(a.queue_next(), "repeated conflicts switch to the queue");
        for _ in 0..(MIN_RUN - 1) {
            a.queued(false);
        }
        assert!(a.queue_next(), "stays queued for at least MIN_RUN operations");
        a.queued(false);
        assert!(!a.queue_next(), "quiet queue goes back to optimistic");
        a.force_queue();
        assert!(a.queue_next(), "finding others queued switches at once");
        for _ in 0..50 {
            a.queued(true);
        }
        assert!(a.queue_next(), "a busy queue stays a queue");
    }

    #[test]
    fn looks_at_the_lock_first_only_when_contended_and_a_queue_was_seen() {
        let a = Adaptive::default();
        // Between CONTENDED and TO_QUEUE: contended, still optimistic.
        let contended = |a: &Adaptive| a.state().conflicts = (CONTENDED + TO_QUEUE) / 2.0;
        contended(&a);
        assert!(!a.look_first(), "contended, but nobody was seen queueing: write at once");
        a.saw_lock_taken();
        assert!(a.look_first(), "contended and the lock was seen taken");
        a.optimistic(0);
        assert!(!a.queue_next() && a.look_first(), "still contended: keeps looking first");
        for _ in 0..20 {
            a.optimistic(0);
        }
        contended(&a);
        assert!(!a.look_first(), "a quiet spell in between forgets the queue");
    }

    #[test]
    fn a_queued_register_probes_and_leaves_only_after_wins_in_a_row() {
        let a = Adaptive::default();
        assert_eq!(a.next(), Next::Optimistic);
        a.force_queue();
        let mut probes = 0;
        for _ in 0..(PROBE_EVERY * 4) {
            if a.next() == Next::Probe {
                probes += 1;
                // Two wins, then a loss: not quiet yet.
                a.probed(probes % 3 != 0);
            }
        }
        assert_eq!(probes, 4, "one probe every PROBE_EVERY updates");
        assert!(a.queue_next(), "a lost probe starts the count again");
        for _ in 0..(PROBE_EVERY * PROBES_TO_LEAVE) {
            if a.next() == Next::Probe {
                a.probed(true);
            }
        }
        assert_eq!(a.next(), Next::Optimistic, "PROBES_TO_LEAVE wins in a row: optimistic again");
    }

    /// A queue whose hand-offs cost many round trips (the embedded store's) is left, and
    /// conflicts do not send the handle back until the verdict is [`DEAR_FOR`] old.
    #[tokio::test(start_paused = true)]
    async fn a_dear_queue_is_left_and_not_rejoined_for_a_while() {
        let a = Adaptive::default();
        a.force_queue();
        a.queue_measured(Duration::from_micros(400), 4, Duration::ZERO);
        assert!(a.queue_next() && !a.queue_is_dear(), "no round trip measured yet: no verdict");
        a.write_took(Duration::from_micros(30));
        a.write_took(Duration::from_micros(2)); // the least counts
        a.queue_measured(Duration::from_micros(40), 1, Duration::ZERO);
        assert!(a.queue_next() && !a.queue_is_dear(), "one measurement alone is no verdict");
        a.queue_measured(Duration::from_micros(40), 1, Duration::ZERO);
        assert!(a.queue_is_dear(), "40 µs per hand-off against a 2 µs round trip, twice");
        assert!(!a.queue_next(), "a dear queue is left");
        // 40 µs per hand-off, two keys in the queue: 80 µs to drain; waited twice that.
        assert_eq!(a.drain_wait(), Some(Duration::from_micros(160)));
        a.queue_measured(Duration::from_secs(2), 1, Duration::ZERO);
        assert_eq!(a.drain_wait(), Some(MAX_DRAIN_WAIT), "a wait is bounded");
        for _ in 0..30 {
            a.optimistic(3);
        }
        assert!(!a.queue_next(), "conflicts do not send it back while the queue is dear");
        tokio::time::advance(DEAR_FOR).await;
        assert!(!a.queue_is_dear() && a.drain_wait().is_none(), "the verdict holds DEAR_FOR");
        a.optimistic(3);
        assert!(a.queue_next(), "then conflicts switch to the queue again");
        // The ratios measured before count: one more dear measurement leaves again.
        a.queue_measured(Duration::from_micros(40), 1, Duration::ZERO);
        assert!(!a.queue_next());
    }

    /// A handle whose queued writes are all slow (each brings every waiting client a watch
    /// event: eight clients over one embedded store, 50–150 µs) still weighs hand-offs
    /// against its optimistic writes (2–20 µs there), which its queued writes do not push
    /// out. (Before, they did, and a queue of handles that all stayed measured about two
    /// such writes per hand-off and kept them: 1 run in 15 of the conformance check
    /// `register_adaptive_leaves_a_dear_queue`.)
    #[tokio::test(start_paused = true)]
    async fn slow_queued_writes_do_not_hide_a_dear_queue() {
        let a = Adaptive::default();
        a.optimistic_write_took(Duration::from_micros(2));
        a.force_queue();
        for _ in 0..TRIPS {
            a.write_took(Duration::from_micros(100));
        }
        for _ in 0..2 {
            a.queue_measured(Duration::from_micros(200), 1, Duration::ZERO);
        }
        assert!(a.queue_is_dear() && !a.queue_next(), "200 µs per hand-off against a 2 µs round trip");
    }

    /// A hand-off that costs about a round trip (etcd's), or one that is mostly the
    /// holders' update functions, is no reason to leave.
    #[tokio::test(start_paused = true)]
    async fn a_queue_is_kept_where_hand_offs_cost_round_trips_or_functions() {
        let a = Adaptive::default();
        a.write_took(Duration::from_millis(1));
        a.force_queue();
        for _ in 0..5 {
            a.queue_measured(Duration::from_micros(4_500), 3, Duration::ZERO); // 1.5 ms each
        }
        assert!(a.queue_next() && !a.queue_is_dear(), "1.5 round trips per hand-off");
        let b = Adaptive::default();
        b.write_took(Duration::from_micros(2));
        b.force_queue();
        for _ in 0..5 {
            b.queue_measured(Duration::from_micros(2_100), 1, Duration::from_millis(2));
        }
        assert!(b.queue_next() && !b.queue_is_dear(), "the hand-off is the holder's 2 ms function");
    }

    /// `plan` reads a quiet handle's plan without the lock: it is the locked plan in every
    /// state the handle passes through.
    #[test]
    fn the_plan_read_without_the_lock_is_the_locked_plan() {
        let locked = |a: &Adaptive| {
            let s = a.state.lock();
            let quiet = s.conflicts < QUIET && !s.lock_seen;
            (s.queued, s.look_first(), quiet)
        };
        let a = Adaptive::default();
        let check = |a: &Adaptive, step: &str| {
            let (queued, look_first, quiet) = locked(a);
            let plan = a.plan();
            assert_eq!((plan.look_first, plan.quiet), (look_first, quiet), "{step}");
            assert_eq!(plan.next == Next::Optimistic, !queued, "{step}");
        };
        check(&a, "new");
        a.optimistic(0);
        check(&a, "a conflict-free update");
        a.saw_lock_taken();
        check(&a, "the lock seen taken");
        for _ in 0..30 {
            a.optimistic(0);
        }
        check(&a, "quiet again");
        a.optimistic(1);
        check(&a, "one conflict");
        for _ in 0..10 {
            a.optimistic(3);
        }
        check(&a, "switched to the queue");
        for _ in 0..(PROBE_EVERY * PROBES_TO_LEAVE) {
            if a.plan().next == Next::Probe {
                a.probed(true);
            }
        }
        check(&a, "probes won: optimistic again");
        a.force_queue();
        check(&a, "forced to the queue");
    }
}
