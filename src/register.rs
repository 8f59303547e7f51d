//! A register: one value that many clients read-modify-write, with a contention strategy.

use crate::adaptive::{Adaptive, Next, Plan};
use crate::backend::{Condition, KeyValue, Read, ReadValue, Revision, Transacted, Write};
use crate::backoff::Backoff;
use crate::client::RunningUpdate;
use crate::crowd::{Crowd, Member, Mode, CHECK_QUEUE_EVERY, HANDOVER_TRIES, YIELDS_TO_QUEUE};
use crate::error::{Error, Result};
use crate::queue::parked::Parking;
use crate::queue::Exclusive;
use crate::strategy::Strategy;
use crate::Session;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

mod grouped;
mod queued;
#[cfg(test)]
mod tests;
use grouped::Group;
pub use grouped::{GroupToken, GroupUpdated, Grouping};

/// Looks at a dear queue, yielding to the runtime in between, that an update of an
/// adaptive handle makes at most while it waits for the queue to drain (`Register::adaptive`).
const SPIN_LOOKS: u32 = 256;
/// Backoff pauses it makes at most while it waits for the queue to drain.
const DRAIN_PAUSES: u32 = 8;

/// How an update of an adaptive handle whose queue is dear waits for another client's
/// queue to drain before it joins it (`Register::adaptive`): for about as long as the
/// queue measured to drain, then up to [`YIELDS_TO_QUEUE`] backoff pauses. A wait shorter
/// than the timer's millisecond yields to the runtime between looks, up to [`SPIN_LOOKS`]
/// times (a count, not a time: under a paused clock the time does not pass while a task
/// keeps yielding); a longer one takes the backoff's pauses, up to [`DRAIN_PAUSES`]. So
/// the wait ends on any clock.
#[derive(Debug, Default)]
struct DrainWait {
    looks: u32,
    drain_pauses: u32,
    pauses: u32,
}

/// The next step of a [`DrainWait`].
enum Pause {
    /// Yield to the runtime, then look again.
    Look,
    /// A backoff pause of at most this long, then look again.
    Sleep(Duration),
}

impl DrainWait {
    /// The next step with `left` of the measured drain time to go; `None`: join the queue.
    fn next(&mut self, left: Duration) -> Option<Pause> {
        if !left.is_zero() && left < Duration::from_millis(1) && self.looks < SPIN_LOOKS {
            self.looks += 1;
            Some(Pause::Look)
        } else if !left.is_zero() && self.drain_pauses < DRAIN_PAUSES {
            self.drain_pauses += 1;
            Some(Pause::Sleep(left))
        } else if self.pauses < YIELDS_TO_QUEUE {
            self.pauses += 1;
            Some(Pause::Sleep(Duration::MAX))
        } else {
            None
        }
    }
}

/// The register's lock in errors and metrics: the mutex of the register's name.
const LOCK: &str = "mutex";

/// What [`Register::update`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Updated {
    /// Whether a new value was written (false when the update function declined).
    pub written: bool,
    /// The value the update function saw last (the one it replaced, if written).
    pub previous: Option<Vec<u8>>,
    /// Failed compare-and-swaps on the way (conflicts with other writers).
    pub conflicts: u32,
    /// The fencing token of the lock the write was made under, if it was queued.
    pub token: Option<u64>,
    /// The store revision of the write (the value's new `mod_revision`), if written.
    pub revision: Option<Revision>,
}

/// How [`Register::optimistic`] tries.
#[derive(Debug, Clone, Copy, Default)]
struct Tries {
    /// A write also requires that nobody holds or waits for the register's lock
    /// ([`Register::write_unlocked`]), and the update gives up with [`Optimistic::Yield`]
    /// once a write fails with someone queued: a mix of optimistic writers and queued ones
    /// would make both lose (the adaptive strategy).
    yield_to_queue: bool,
    /// Every retry's read also says whether the lock is taken, and the update yields if it
    /// is (as `look_first` does for the first read).
    look_again: bool,
    /// The first read also says whether the lock is taken, and the update yields at once if
    /// it is.
    look_first: bool,
    /// Give up after this many conflicts (a probe).
    attempts: Option<u32>,
}

/// How an optimistic update ended.
enum Optimistic {
    Done(Updated),
    /// Gave up (adaptive only): someone holds or waits for the lock, or a probe lost.
    Yield {
        conflicts: u32,
    },
}

/// A value at one key that many clients update with a read-modify-write, so that no update
/// is lost — the flash-sale stock, a counter, a configuration document.
///
/// Every write is conditional on the value not having changed since it was read (a
/// compare-and-swap on its revision), whatever the [`Strategy`]; the strategy only decides
/// how contention is handled:
/// - [`Strategy::Optimistic`]: read, compare-and-swap, retry after a jittered delay on
///   conflict. One read and one write per update when alone. (It does not skip the read by
///   remembering the value it wrote last: measured, the last writer then needs one round
///   trip per update to everyone else's two and captures the register — at 8 processes one
///   made 3,494 updates in 2 s while each of the others finished one.)
/// - [`Strategy::Pessimistic`]: take the [`Mutex`](crate::Mutex) of the same name, then read and write;
///   the write is also fenced (applied only while the lock is held). Contention becomes an
///   orderly hand-off, at the cost of the lock's two round trips (the read is skipped when
///   the queueing call read the value, or the previous holder was a task of this client).
/// - [`Strategy::Adaptive`]: optimistic until conflicts rise, then queued until probes (a
///   single optimistic attempt now and then) keep succeeding (see `src/adaptive.rs`). Its
///   optimistic writes yield to the queue: an update whose write fails while anyone holds
///   or waits for the lock joins the queue instead of retrying against it. Updates of the
///   register by several tasks of one client at once go the way the client measures
///   cheaper (`src/crowd.rs`): through the queue, where an update that starts while another
///   of the client runs queues at once and tasks of one process never make each other's
///   writes fail (etcd, or update functions that take long); or, where compare-and-swap
///   completes more updates per second (the embedded store, the TiKV test server), by
///   compare-and-swap, looking at the queue on one update in eight per handle and on every
///   retry, and leaving it alone while it is busy.
///
///   Across clients (processes) each handle decides by its own conflicts and probes, and by
///   what its queue's hand-offs cost: a handle whose queued updates measure a hand-off at
///   more than four times a store round trip and its own update function (the embedded
///   store: microseconds per compare-and-swap, tens to hundreds per hand-off) leaves the
///   queue, stops switching to it for a second, and waits for another client's queue to
///   drain before joining it. On etcd a hand-off costs about a commit, and the queue is
///   the faster mode once processes contend. (Without that measurement, handles of
///   several clients over one embedded store that had all joined the queue stayed there,
///   at 0.01–0.13× optimistic's speed: `docs/performance.md`, "Leaving a dear queue".)
///
/// Clients may use different strategies on the same register at once: no update is lost.
/// The value lives at the key `<namespace><name>` (no lease), and the lock under
/// `<namespace><name>/`, so a register shares its name with the [`Mutex`](crate::Mutex) of that name.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
/// use leasehold::{Client, Register, Strategy};
/// let session = Client::memory().session().await?;
/// let stock = Register::new(&session, "stock")?.with_strategy(Strategy::Adaptive);
/// stock.update(|_| Some(b"3".to_vec())).await?;
/// // Sell one unit unless sold out.
/// let sold = stock
///     .update(|v| {
///         let n: u32 = std::str::from_utf8(v?).ok()?.parse().ok()?;
///         (n > 0).then(|| (n - 1).to_string().into_bytes())
///     })
///     .await?;
/// assert!(sold.written);
/// assert_eq!(stock.get().await?.as_deref(), Some(&b"2"[..]));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Register {
    session: Session,
    key: String,
    lock_prefix: String,
    /// The session's keys in the queue of the register's lock (the [`Mutex`](crate::Mutex)
    /// of the same name).
    lock: Exclusive,
    strategy: Strategy,
    backoff: Backoff,
    adaptive: Arc<Adaptive>,
    parking: Arc<Parking>,
    /// This handle's updates, for the crowd's sampling (per handle: no contention), and its
    /// place among the crowd's live handles: this client's running updates of the key and
    /// how its adaptive ones go ([`crowd`](Self::crowd)).
    member: Arc<Member>,
    /// The combiner of [`update_grouped`](Register::update_grouped), shared by clones.
    group: Arc<Group>,
}

/// The default of [`Register::with_requeue_window`].
pub const DEFAULT_REQUEUE_WINDOW: Duration = Duration::from_millis(1);

impl Register {
    /// An optimistic register `name`. Fails for an invalid name.
    pub fn new(session: &Session, name: &str) -> Result<Self> {
        let lock = Exclusive::new(session, name)?;
        let key = lock.prefix().trim_end_matches('/').to_owned();
        let crowd = session.client().register_crowd(&key);
        Ok(Self {
            session: session.clone(),
            member: Arc::new(crowd.join()),
            key,
            lock_prefix: lock.prefix().to_owned(),
            lock,
            strategy: Strategy::Optimistic,
            backoff: Backoff::optimistic(),
            adaptive: Arc::default(),
            parking: Arc::new(Parking::new(DEFAULT_REQUEUE_WINDOW)),
            group: Arc::new(Group::new(Grouping::default())),
        })
    }

    /// Chooses the strategy.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The delays between optimistic retries.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How soon the next update must follow for a queued update to keep the handle's place
    /// in the queue (default [`DEFAULT_REQUEUE_WINDOW`]; `Duration::ZERO` turns it off).
    ///
    /// A queued update costs two commits: one to queue, one to write and release. When it
    /// had to wait for others, the update before it on this handle ended less than
    /// `window` before it started, and no other task of this session waits to update the
    /// register, its write also queues the handle for the next update, at the back of the
    /// queue, in the same transaction: an update loop under contention then costs one
    /// commit per update, and everyone queued earlier still goes first. If no update
    /// claims the place by the time it comes to the head, it is released `window` later
    /// (at once if another task of the session waits for the register's lock),
    /// so an idle handle delays the others by at most that once. Dropping the handle
    /// releases it at once.
    pub fn with_requeue_window(mut self, window: Duration) -> Self {
        self.parking = Arc::new(Parking::new(window));
        self
    }

    /// The key holding the value.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Reads the value.
    ///
    /// # Cancel safety
    /// Cancel-safe: a read; dropping it changes nothing.
    pub async fn get(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.session.client().backend().get(&self.key).await?.map(|kv| kv.value))
    }

    /// Applies `f` to the current value (None if unset) and writes what it returns, unless
    /// it returns None. Retries on conflict with other writers, calling `f` again with the
    /// newer value; never loses an update.
    ///
    /// # Cancel safety
    /// Dropping the future never applies an update twice, but one dropped while its write
    /// was in flight may have been written (the write is conditional, so it was written as
    /// `f` computed it, on the value `f` saw). A queued update's place in the queue is
    /// deleted in the background, as for a dropped acquisition.
    pub async fn update(&self, mut f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>> + Send) -> Result<Updated> {
        self.update_with_token(|v, _| f(v)).await
    }

    /// Like [`update`](Register::update), and `f` also gets the fencing token of the lock the
    /// update runs under (`None` for an optimistic update), so it can store it with the value.
    ///
    /// # Cancel safety
    /// Dropping the future never applies an update twice, but one dropped while its write
    /// was in flight may have been written (the write is conditional, so it was written as
    /// `f` computed it, on the value `f` saw). A queued update's place in the queue is
    /// deleted in the background, as for a dropped acquisition.
    pub async fn update_with_token(
        &self,
        mut f: impl FnMut(Option<&[u8]>, Option<u64>) -> Option<Vec<u8>> + Send,
    ) -> Result<Updated> {
        self.update_async(|v, token| std::future::ready(f(v.as_deref(), token))).await
    }

    /// Like [`update_with_token`](Register::update_with_token) with an async update function,
    /// for updates that need I/O between reading and writing (the "critical section"). Under
    /// the optimistic strategy the value may change meanwhile; the write then fails and `f`
    /// runs again on the newer value. Under the pessimistic and adaptive strategies other
    /// updates of the register from this client wait while `f` runs, so `f` must not itself
    /// update the same register through this client (it would wait for itself).
    ///
    /// # Cancel safety
    /// Dropping the future never applies an update twice, but one dropped while its write
    /// was in flight may have been written (the write is conditional, so it was written as
    /// `f` computed it, on the value `f` saw). A queued update's place in the queue is
    /// deleted in the background, as for a dropped acquisition.
    pub async fn update_async<F, Fut>(&self, mut f: F) -> Result<Updated>
    where
        F: FnMut(Option<Vec<u8>>, Option<u64>) -> Fut + Send,
        Fut: Future<Output = Option<Vec<u8>>> + Send,
    {
        let f = &mut f;
        match self.strategy {
            Strategy::Optimistic => self.optimistic(f, Tries::default()).await.map(|o| match o {
                Optimistic::Done(u) => u,
                Optimistic::Yield { .. } => unreachable!("only adaptive yields"),
            }),
            Strategy::Pessimistic => {
                // Counted for this client's adaptive updates of the register (they queue
                // while others run); not measured (`src/crowd.rs` times adaptive updates).
                let _running = RunningUpdate::start(self.crowd(), self.member.sampler());
                self.queued(f, true).await
            }
            Strategy::Adaptive => {
                let mut running = RunningUpdate::start(self.crowd(), self.member.sampler());
                let updated = match running.mode() {
                    // Measured cheaper for this client: every update compare-and-swaps.
                    Mode::Optimistic => self.crowded_optimistic(f, &mut running).await,
                    // Contention between tasks of this client needs no measuring to be
                    // seen: while another update of this register by this client runs, this
                    // one queues. A compare-and-swap would only make theirs fail, and the
                    // queue hands the lock on inside the process without a read (`queued`).
                    // So does an update whose handle kept its place in the queue. Should the
                    // mode turn to compare-and-swap before the lock admits it, it leaves the
                    // queue and compare-and-swaps (`Crowd::turned_optimistic`).
                    Mode::Queue if running.others() > 0 || self.parking.is_parked() => {
                        match self.queued_unless_turned(f, &mut running).await {
                            Ok(Some(updated)) => Ok(updated),
                            // Checked or not as its number says, like any update of the
                            // mode. (Looking at the lock first, so as not to make the write
                            // of a holder of this client it left behind fail, was slower: on
                            // the TiKV test server's flash sale 0.86-0.87 of optimistic's
                            // orders/s against 0.89-0.99, 09:24-09:28 UTC.)
                            Ok(None) => self.crowded_optimistic(f, &mut running).await,
                            Err(e) => Err(e),
                        }
                    }
                    Mode::Queue => {
                        // The handle's own policy (`adaptive`). Its commonest update, a quiet
                        // handle's unchecked one, is taken here: one compare-and-swap, with
                        // no further layer of futures (on the embedded store, where an
                        // update takes a microsecond or two, that layer was measurable).
                        let plan = self.adaptive.plan();
                        if plan.unchecked(running.seq()) {
                            match self.optimistic(f, Tries { attempts: Some(1), ..Tries::default() }).await {
                                // Quiet already: a conflict-free update would only lower the average.
                                Ok(Optimistic::Done(updated)) => Ok(updated),
                                Ok(Optimistic::Yield { conflicts }) => self.adaptive(f, plan, conflicts).await,
                                Err(e) => Err(e),
                            }
                        } else {
                            self.adaptive(f, plan, 0).await
                        }
                    }
                };
                if updated.is_ok() {
                    running.completed();
                }
                updated
            }
        }
    }

    /// This client's running updates of the key and how its adaptive ones go.
    fn crowd(&self) -> &Crowd {
        self.member.crowd()
    }

    /// An adaptive update by the handle's own policy (`src/adaptive.rs`), planned by `plan`.
    /// A handle that meets no contention and has seen no queue checks the lock's queue on
    /// one update in CHECK_QUEUE_EVERY (and on every retry): a plain compare-and-swap is
    /// what the others cost, and a queue that appears is seen within a few updates. Those
    /// others ([`Plan::unchecked`]) try one compare-and-swap first (`update_async`) and
    /// come here only if it failed, with its `unchecked` conflicts.
    async fn adaptive<F, Fut>(&self, f: &mut F, plan: Plan, unchecked: u32) -> Result<Updated>
    where
        F: FnMut(Option<Vec<u8>>, Option<u64>) -> Fut + Send,
        Fut: Future<Output = Option<Vec<u8>>> + Send,
    {
        let Plan { next, look_first, .. } = plan;
        if next == Next::Queue {
            return self.queued(f, true).await;
        }
        let probe = next == Next::Probe;
        let mut tries = Tries {
            yield_to_queue: true,
            look_again: false,
            look_first: probe || look_first,
            attempts: probe.then_some(1),
        };
        let (mut conflicts, mut yielded, mut waits) = (unchecked, None, DrainWait::default());
        let mut delays = self.backoff.delays();
        loop {
            match self.optimistic(f, tries).await? {
                Optimistic::Done(mut updated) => {
                    updated.conflicts += conflicts;
                    if probe {
                        if self.adaptive.probed(true) {
                            // Out of the queue: an event per write of the register is of
                            // no use to compare-and-swaps (on the embedded store each is a
                            // task's wake-up; one open feed costs it 11–13% of its
                            // updates per second). A probe never runs while the handle
                            // keeps a place (its update claims the place instead). A
                            // handle that leaves because the queue is dear closes the feed
                            // in `queued`; one that only yields to the queue for an update
                            // keeps it: on etcd, reopening the watch at each such update
                            // would cost a sync, up to etcd's 100 ms catch-up, inside the
                            // wait weighed against a round trip.
                            self.session.client().close_idle_register_feed(&self.key);
                        }
                    } else {
                        self.adaptive.optimistic(updated.conflicts);
                    }
                    return Ok(updated);
                }
                // Someone is queued, or the probe lost: this update joins the queue rather
                // than fight it (a yield counts as conflicts; it does not switch the handle)
                // — unless the handle measured the queue dear (`Adaptive::queue_measured`):
                // then it first waits for the queue to drain ([`DrainWait`]), so that one
                // update that queued does not pull every other in.
                Optimistic::Yield { conflicts: c } => {
                    // Waiting for a queue to drain (below) counts as one conflict however
                    // often it looks.
                    if yielded.is_none() {
                        conflicts += c;
                    }
                    let drain = if probe { None } else { self.adaptive.drain_wait() };
                    let since = *yielded.get_or_insert_with(tokio::time::Instant::now);
                    let left = drain.map(|drain| drain.saturating_sub(since.elapsed()));
                    if let Some(pause) = left.and_then(|left| waits.next(left)) {
                        match pause {
                            Pause::Look => tokio::task::yield_now().await,
                            Pause::Sleep(at_most) => {
                                let pause = delays.next().unwrap_or(self.backoff.cap);
                                tokio::time::sleep(pause.min(at_most)).await;
                            }
                        }
                        tries.look_first = true; // the lock was seen taken: look before writing
                        continue;
                    }
                    if probe {
                        self.adaptive.probed(false);
                    } else {
                        self.adaptive.optimistic(conflicts);
                    }
                    let mut updated = self.queued(f, true).await?;
                    updated.conflicts += conflicts;
                    return Ok(updated);
                }
            }
        }
    }

    /// An adaptive update while this client measures compare-and-swap as the cheaper mode
    /// for its concurrent updates ([`Mode::Optimistic`], chosen only where the update
    /// functions are short against the queue's time per update, see `src/crowd.rs`): read,
    /// compare-and-swap, retried after a jittered pause, yielding while anyone holds or
    /// waits for the lock.
    ///
    /// Whether anyone does is read with the value (one read-only transaction), not asked by
    /// the write, which stays a plain compare-and-swap: a write that also reads the lock's
    /// prefix takes longer, and the longer window between read and write fails more often
    /// (TiKV test server's flash sale, retries writing that way: 1.3 conflicts per order
    /// against the optimistic strategy's 1.1, 0.78 of its orders/s). A queued holder whose
    /// write such a compare-and-swap beats reads again and retries under the lock (the
    /// value is never lost). The look costs the embedded store a twentieth of its updates,
    /// so it is taken by one update in [`CHECK_QUEUE_EVERY`] of the handle (`seq` is this
    /// one's number), by every update while a queue was seen lately, and by every retry. So
    /// writers of this mode notice another client's queue within a few updates of each
    /// handle and leave it alone until it is gone (conformance
    /// `register_adaptive_optimistic_mode_yields_to_a_queue`).
    ///
    /// One that finds the queue busy waits — for this client's queued updates to end, or a
    /// backoff pause when none runs (the queue is another client's) — and tries again,
    /// joining the queue after [`YIELDS_TO_QUEUE`] such tries: waiting rather than joining
    /// at once keeps one queued update from pulling every other in. Tries while queued
    /// updates of this client's adaptive handles run (the hand-over from the queue's mode,
    /// and any that joined since) do not count, up to [`HANDOVER_TRIES`]: that queue drains
    /// unless fed, and joining it kept it fed (the mode measured its own hand-over: 88 ms
    /// per update against the queue's 30 on the TiKV test server). Queued updates of this
    /// client's other strategies count as another client's would: they need not ever drain
    /// (conformance `register_adaptive_tasks_progress_beside_pessimistic_loops`). Once the
    /// mode has turned back to [`Mode::Queue`] (a turn also ends the wait), the next try
    /// that finds this client's queue busy joins it, leaving it again should the mode turn
    /// to compare-and-swap before the lock admits it. A place the
    /// handle kept in the queue is given up (deleted in the background), not used. The handle's own
    /// policy is left alone: the conflicts here are mostly this client's own tasks', which
    /// the measurement weighs.
    async fn crowded_optimistic<F, Fut>(&self, f: &mut F, running: &mut RunningUpdate<'_>) -> Result<Updated>
    where
        F: FnMut(Option<Vec<u8>>, Option<u64>) -> Fut + Send,
        Fut: Future<Output = Option<Vec<u8>>> + Send,
    {
        // A place the handle kept in the queue is given up, not used: this client's queued
        // updates are leaving the queue (`Crowd::turned_optimistic`), and each kept place
        // used would be one more hand-off that the mode's updates wait for.
        if self.parking.is_parked() {
            drop(self.parking.claim());
        }
        if self.crowd().feed_to_close() && self.session.client().close_idle_register_feed(&self.key) {
            self.crowd().feed_closed();
        }
        let (mut yields, mut busy, mut conflicts) = (0, 0, 0);
        let mut unchecked = !running.seq().is_multiple_of(CHECK_QUEUE_EVERY) && !self.crowd().queue_seen();
        let mut delays = self.backoff.delays();
        loop {
            // The reads look at the lock (see above); the retries of one call share one
            // backoff, as the optimistic strategy's do.
            let look = cfg!(not(leasehold_crowd_mutation_unchecked));
            let how =
                Tries { look_first: look && !std::mem::take(&mut unchecked), look_again: look, ..Tries::default() };
            match self.optimistic(f, how).await? {
                Optimistic::Done(mut updated) => {
                    // Only a try that looked at the lock may say the queue is gone.
                    if how.look_first || updated.conflicts > 0 {
                        self.crowd().saw_queue(false);
                    }
                    updated.conflicts += conflicts;
                    return Ok(updated);
                }
                Optimistic::Yield { conflicts: c } => {
                    self.crowd().saw_queue(true);
                    // Waiting for the adaptive handles' own queue is not a yield (see above),
                    // for HANDOVER_TRIES at most.
                    let own = self.crowd().own_queue();
                    // Registered before the mode is read: a turn after the read ends the
                    // pause below.
                    let turn = self.crowd().turn();
                    tokio::pin!(turn);
                    turn.as_mut().enable();
                    if own && self.crowd().mode_now() == Mode::Queue {
                        // The mode turned back to the queue: this client's queued updates
                        // are no hand-over that drains, they are the mode's, and its new
                        // updates keep feeding them. Waiting for them to end, this update
                        // slept through backoff pauses (on etcd, sixteen tasks of one
                        // process after an exploration of compare-and-swap: 60–80 such
                        // pauses, 0.2–0.5 s of tasks' time, per epoch for the next four).
                        // It joins them, as an update starting now would, and counts as
                        // one (`Crowd::rejoined_queue`).
                        running.rejoined_queue();
                        if let Some(mut updated) = self.queued_unless_turned(f, running).await? {
                            updated.conflicts += conflicts + c;
                            return Ok(updated);
                        }
                        // Turned to compare-and-swap again before the lock admitted it (and
                        // left, uncounted).
                        conflicts += c;
                        continue;
                    }
                    (yields, busy, conflicts) = (yields + u32::from(!own), busy + 1, conflicts + c);
                    if yields >= YIELDS_TO_QUEUE || busy >= HANDOVER_TRIES {
                        let mut updated = self.queued(f, false).await?;
                        updated.conflicts += conflicts;
                        return Ok(updated);
                    }
                    let pause = tokio::time::sleep(delays.next().unwrap_or(self.backoff.cap));
                    // Registered before the count is read: a drain after the read wakes it.
                    let drained = self.crowd().drained();
                    tokio::pin!(drained);
                    drained.as_mut().enable();
                    if self.crowd().queued() > 0 {
                        // A turn back to the queue ends the wait too: then this client's
                        // queue will not drain, and the next try joins it.
                        tokio::select! {
                            biased;
                            () = drained => {}
                            () = turn => {}
                            () = pause => {}
                        }
                    } else {
                        pause.await;
                    }
                }
            }
        }
    }

    /// Read, compare-and-swap, retry, as `tries` says ([`Tries`]).
    async fn optimistic<F, Fut>(&self, f: &mut F, tries: Tries) -> Result<Optimistic>
    where
        F: FnMut(Option<Vec<u8>>, Option<u64>) -> Fut + Send,
        Fut: Future<Output = Option<Vec<u8>>> + Send,
    {
        let client = self.session.client();
        let backend = client.backend();
        let Tries { yield_to_queue, look_again, look_first, attempts } = tries;
        // With look_first, while anyone holds or waits for the lock the write below would
        // fail: a probe, or an update of a handle that already meets contention and has seen
        // the lock taken, yields now without that doomed transaction (it counts as the one
        // conflict it was). A handle that meets little contention still tries: a short queue
        // often drains before its write, and yielding at every glimpse of one would keep the
        // queue fed. So does one that has not seen the lock taken: with nobody queued, the
        // read would only delay the write.
        let Some(mut current) = self.read_value(look_first).await? else {
            return Ok(Optimistic::Yield { conflicts: 1 });
        };
        let mut delays = self.backoff.delays();
        let mut conflicts = 0;
        loop {
            let (previous, expected) = current.take().map_or((None, None), |(v, r)| (Some(v), Some(r)));
            let Some(new) = f(previous.clone(), None).await else {
                let updated = Updated { written: false, previous, conflicts, token: None, revision: None };
                return Ok(Optimistic::Done(updated));
            };
            let written = if yield_to_queue {
                // One round trip: the write, or on failure whether anyone holds or waits for
                // the lock.
                let (written, locked) = self.write_unlocked(expected, new).await?;
                if locked {
                    self.adaptive.saw_lock_taken();
                    return Ok(Optimistic::Yield { conflicts: conflicts + 1 });
                }
                written
            } else {
                let cas = backend.compare_and_swap(&self.key, expected, new, None).await?;
                cas.swapped.then(|| cas.current.map_or(cas.revision, |kv| kv.mod_revision))
            };
            if let Some(revision) = written {
                crate::metrics::conflicts("register", conflicts);
                let updated = Updated { written: true, previous, conflicts, token: None, revision: Some(revision) };
                return Ok(Optimistic::Done(updated));
            }
            conflicts += 1;
            if attempts.is_some_and(|n| conflicts >= n) {
                return Ok(Optimistic::Yield { conflicts });
            }
            tokio::time::sleep(delays.next().unwrap_or(self.backoff.cap)).await;
            // Read again after the pause: the value the failed write brought back is as old
            // as the pause, and under steady contention a write from it always fails — the
            // contender that paused longest then never got in (fewest updates per contender
            // 0.01 of the mean at 8 processes, docs/performance.md).
            let Some(again) = self.read_value(look_again).await? else {
                return Ok(Optimistic::Yield { conflicts });
            };
            current = again;
        }
    }

    /// The value and its revision; with `look`, read with whether anyone holds or waits for
    /// the register's lock ([`read_checking_lock`](Self::read_checking_lock)), and `None` if
    /// anyone does.
    async fn read_value(&self, look: bool) -> Result<Option<Option<(Vec<u8>, Revision)>>> {
        let value_of = |kv: Option<KeyValue>| kv.map(|kv| (kv.value, kv.mod_revision));
        if !look {
            return Ok(Some(value_of(self.session.client().backend().get(&self.key).await?)));
        }
        let (kv, locked) = self.read_checking_lock().await?;
        if locked {
            self.adaptive.saw_lock_taken();
            return Ok(None);
        }
        Ok(Some(value_of(kv)))
    }

    /// The value, and whether anyone holds or waits for the register's lock, in one
    /// consistent read (one round trip): the adaptive register's first read, so that an
    /// update which would have to yield to the queue does so without a doomed write.
    async fn read_checking_lock(&self) -> Result<(Option<KeyValue>, bool)> {
        let reads = [Read::Key(self.key.clone()), Read::Occupied(self.lock_prefix.clone())];
        let done = self.session.client().backend().transact(&[], Vec::new(), &reads).await?;
        match <[ReadValue; 2]>::try_from(done.reads) {
            Ok([ReadValue::Key(kv), ReadValue::Occupied(locked)]) => Ok((kv, locked)),
            _ => Err(Error::Store("register: the store answered other reads than asked".into())),
        }
    }

    /// The adaptive register's optimistic write: `new` only if the value is still at
    /// `expected` and nobody holds or waits for the register's lock, which must win over
    /// optimistic writers. It also says, when nothing was written, whether the lock was
    /// taken (advice for the next step: the caller yields to the queue), in the same round
    /// trip. `(revision of the write, if written; locked)`.
    async fn write_unlocked(&self, expected: Option<Revision>, new: Vec<u8>) -> Result<(Option<Revision>, bool)> {
        let backend = self.session.client().backend();
        let conditions = [
            Condition::Modified { key: self.key.clone(), revision: expected },
            Condition::PrefixEmpty { prefix: self.lock_prefix.clone() },
        ];
        let put = Write::Put { key: self.key.clone(), value: new, lease: None };
        let occupied = [Read::Occupied(self.lock_prefix.clone())];
        let locked = |done: &Transacted| match done.reads.as_slice() {
            [ReadValue::Occupied(locked)] => Ok(*locked),
            _ => Err(Error::Store("register: the store answered other reads than asked".into())),
        };
        let started = tokio::time::Instant::now();
        let done = backend.transact(&conditions, vec![put], &occupied).await?;
        self.adaptive.optimistic_write_took(started.elapsed());
        Ok((done.applied, done.applied.is_none() && locked(&done)?))
    }
}
