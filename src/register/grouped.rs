//! Group update of a register (flat combining): the updates that tasks of one handle make
//! while a write is in flight are applied together, in arrival order, and committed with
//! one conditional write.
//!
//! A hot register (the flash sale's stock) otherwise pays at least one store commit per
//! update, so it sells at the store's commit or hand-off rate. Databases built for flash
//! sales group the updates of a hot row (PolarDB's hot-row optimization, AliSQL's
//! statement queue); this is the same idea one level up, the technique of Hendler, Incze,
//! Shavit and Tzafrir (SPAA 2010): one task, the combiner, applies everyone's pending
//! operations. The local state (who joined, what was taken, whose outcome is whose) is
//! [`Combining`], model-checked with loom.
//!
//! Each handle (and its clones) has one combiner, a task spawned by the update that finds
//! none running; it takes a batch, runs it as **one** [`Register::update`] with the
//! handle's strategy — the composed function applies each update's function in turn —
//! hands each caller its own outcome, and goes on while updates wait. The batch is closed
//! only when its function runs (after the read, or once the lock is held): updates that
//! arrive while the combiner waits in the lock's queue still join it; those that arrive
//! while its write is in flight join the next. Across processes
//! (or handles) each combiner is one contender like any other updater.

use super::{Register, Updated};
use crate::backend::Revision;
use crate::error::{Error, Result};
use crate::local::combining::{Batch, Combining};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// An update function of a grouped update, run by the handle's combiner on its own task.
pub(crate) type GroupFn = Box<dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + Send>;

/// How a [`Register`] handle groups the updates of
/// [`update_grouped`](Register::update_grouped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Grouping {
    /// At most this many updates in one batch, that is in one store write (at least 1;
    /// default [`Grouping::DEFAULT_MAX_BATCH`]).
    pub max_batch: usize,
    /// How long the combiner waits for more updates to join a batch that is not full before
    /// it takes it (default zero: a batch is what arrived while the previous batch's write,
    /// and its wait in the queue, was in flight). Bounds the extra latency of an update.
    pub linger: Duration,
}

impl Grouping {
    /// The default [`max_batch`](Grouping::max_batch).
    pub const DEFAULT_MAX_BATCH: usize = 256;

    /// Sets [`max_batch`](Grouping::max_batch).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// Sets [`linger`](Grouping::linger).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }
}

impl Default for Grouping {
    fn default() -> Self {
        Self { max_batch: Self::DEFAULT_MAX_BATCH, linger: Duration::ZERO }
    }
}

/// Orders the grouped updates of a handle: the revision of the batch's write and the
/// update's index in its batch. Strictly increasing, per handle, in the order the updates
/// were applied; tokens of updates that wrote also order them among every write of the
/// register (the revision is the store's). The updates of a batch in which every function
/// declined write nothing; they are ordered after the handle's previous update (its
/// revision, with the indexes following on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct GroupToken {
    /// The revision of the batch's write (for a batch that wrote nothing, that of the
    /// handle's last batch that did, or 0).
    pub revision: Revision,
    /// The update's place in its batch (continuing after the last index for a batch that
    /// wrote nothing).
    pub index: u64,
}

/// What one [`update_grouped`](Register::update_grouped) did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupUpdated {
    /// Whether this update's function returned a new value (false when it declined). Its
    /// value was stored as the batch's write, or overwritten by a later update of the same
    /// batch.
    pub written: bool,
    /// The value this update's function saw: the stored value after the updates before it
    /// in its batch.
    pub previous: Option<Vec<u8>>,
    /// Its place among the handle's updates.
    pub token: GroupToken,
    /// How many updates its batch had.
    pub batch: usize,
    /// The fencing token of the lock the batch was written under, if it was queued.
    pub lock_token: Option<u64>,
    /// Failed compare-and-swaps of the batch's write (conflicts with other writers).
    pub conflicts: u32,
}

/// What the combiner hands a caller: its outcome, or the panic of its update function,
/// which resumes in the caller's task (as it would have in a plain `update`).
enum Outcome {
    Done(Result<GroupUpdated>),
    Panicked(Box<dyn std::any::Any + Send>),
}

/// A handle's combining state: the queue, the settings and the last token handed out.
pub(crate) struct Group {
    queue: Arc<Combining<GroupFn, Outcome>>,
    grouping: Grouping,
    last: Mutex<GroupToken>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("grouping", &self.grouping)
            .field("pending", &self.queue.pending())
            .finish_non_exhaustive()
    }
}

impl Group {
    pub(crate) fn new(grouping: Grouping) -> Self {
        let grouping = Grouping { max_batch: grouping.max_batch.max(1), ..grouping };
        Self { queue: Arc::default(), grouping, last: Mutex::new(GroupToken { revision: 0, index: 0 }) }
    }
}

impl Register {
    /// Chooses how [`update_grouped`](Self::update_grouped) groups updates (see
    /// [`Grouping`]). Clones made afterwards share the combiner; a handle made before keeps
    /// its own.
    pub fn with_grouping(mut self, grouping: Grouping) -> Self {
        self.group = Arc::new(Group::new(grouping));
        self
    }

    /// Applies `f` to the value like [`update`](Self::update), grouped with the updates
    /// other tasks make through this handle (or its clones) at the same time: updates that
    /// arrive until a batch's function runs (while the combiner reads, or waits in the
    /// lock's queue) join that batch, and those that arrive while its write is in flight
    /// join the next; the handle's combiner applies each function in arrival order, each to the value the one before
    /// it left, and commits the result with **one** conditional write, with the handle's
    /// [strategy](Self::with_strategy) (a compare-and-swap, or a write under the lock; a
    /// conflict runs the whole batch again on the newer value). So a hot register takes many
    /// updates per store commit. `f` returns the new value, or `None` to decline (sold out):
    /// a declined update writes nothing and is ordered at its place in the batch.
    ///
    /// `f` runs on the combiner's task, not the caller's, hence `Send + 'static`; it may
    /// run more than once (again after a conflict, on the newer value), and it should be
    /// quick: the whole batch waits for it. Errors of the batch's write reach every caller
    /// of the batch, and as for [`update`](Self::update) the outcome is then unknown: a
    /// write whose answer was lost may have been applied, so a caller that retries on an
    /// error may apply its update twice. Clones share the combiner, and a batch is written
    /// with the [strategy](Self::with_strategy) of the handle whose update started it. If `f` panics, its update counts as declined in its batch, the rest of
    /// the batch goes on, and the panic resumes in the caller's task.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Register};
    /// let session = Client::memory().session().await?;
    /// let stock = Register::new(&session, "stock")?;
    /// stock.update(|_| Some(b"100".to_vec())).await?;
    /// let sell = |v: Option<&[u8]>| {
    ///     let n: u32 = std::str::from_utf8(v?).ok()?.parse().ok()?;
    ///     (n > 0).then(|| (n - 1).to_string().into_bytes())
    /// };
    /// let orders: Vec<_> = (0..10).map(|_| stock.update_grouped(sell)).collect();
    /// let sold = futures::future::try_join_all(orders).await?;
    /// assert!(sold.iter().all(|o| o.written));
    /// assert!(sold.windows(2).all(|w| w[0].token < w[1].token));
    /// assert_eq!(stock.get().await?.as_deref(), Some(&b"90"[..]));
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future withdraws the update if the combiner has not taken it into a
    /// batch yet: it is never applied. Once taken, it is in a batch in flight and is applied
    /// if and only if that batch's write commits; the caller that dropped its future does
    /// not learn which (as for a dropped [`update`](Self::update) whose write was in
    /// flight), and the other updates of the batch are not affected. No update is ever
    /// applied twice, and none is lost while its caller waits: every joined update is in
    /// the queue, in a batch, or answered.
    pub async fn update_grouped<F>(&self, f: F) -> Result<GroupUpdated>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>> + Send + 'static,
    {
        // The combiner is a task of the caller's runtime: without one, fail before joining.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(Error::invalid("register", "update_grouped needs a tokio runtime"));
        };
        let (joined, start) = Combining::join(&self.group.queue, Box::new(f) as GroupFn);
        if start {
            runtime.spawn(self.clone().combine());
        }
        match joined.await {
            Outcome::Done(updated) => updated,
            Outcome::Panicked(payload) => std::panic::resume_unwind(payload),
        }
    }

    /// The combiner: takes batches until none waits. Should its task end before it is done
    /// (cancelled with its runtime, even before its first poll), every caller still waiting
    /// is answered and the next update starts a new combiner.
    fn combine(self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopping = Stopping { group: self.group.clone(), done: false };
        async move {
            let Grouping { max_batch, linger } = stopping.group.grouping;
            loop {
                if !linger.is_zero() && stopping.group.queue.pending() < max_batch {
                    tokio::time::sleep(linger).await;
                }
                let Some(batch) = stopping.group.queue.take(max_batch) else {
                    stopping.finish();
                    return;
                };
                let outcomes = self.apply_batch(batch).await;
                stopping.group.queue.deliver(outcomes);
            }
        }
    }

    /// Runs one batch as one update; the outcomes, in batch order. Updates that arrive
    /// before the batch's function runs (the value is known only then: after the read, or
    /// once the lock is held) join it, up to `max_batch`.
    async fn apply_batch(&self, batch: Batch<GroupFn>) -> Vec<(u64, Outcome)> {
        let max_batch = self.group.grouping.max_batch;
        let (mut ids, mut fns): (Vec<u64>, Vec<GroupFn>) = batch.into_iter().unzip();
        // Room for the batch as it is: `max_batch` is a bound, not a size (reserved up
        // front, `usize::MAX` panicked and a huge one aborted the allocation).
        let reserve = fns.len();
        // The panic of each update function that panicked (never called again).
        let mut panicked: Vec<Option<Box<dyn std::any::Any + Send>>> = Vec::with_capacity(reserve);
        // Per update of the last run of the batch: the value it saw, and whether it wrote.
        let mut seen: Vec<(Option<Vec<u8>>, bool)> = Vec::with_capacity(reserve);
        let span = tracing::debug_span!("register.batch", key = %self.key);
        let queue = &self.group.queue;
        let run = self.update_with_token(|value, _| {
            for (id, f) in queue.top_up(max_batch - fns.len()) {
                ids.push(id);
                fns.push(f);
            }
            panicked.resize_with(fns.len(), || None);
            seen.clear();
            let mut current = value.map(<[u8]>::to_vec);
            let mut any = false;
            for (f, panic) in fns.iter_mut().zip(&mut panicked) {
                // A panicking update declines; the rest of the batch goes on.
                let new = match panic {
                    Some(_) => None,
                    None => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(current.as_deref())))
                        .unwrap_or_else(|payload| {
                            *panic = Some(payload);
                            None
                        }),
                };
                seen.push((current.clone(), new.is_some()));
                if let Some(v) = new {
                    current = Some(v);
                    any = true;
                }
            }
            any.then_some(current).flatten()
        });
        let updated: Result<Updated> = tracing::Instrument::instrument(run, span).await;
        let n = ids.len();
        crate::metrics::batch("register", n);
        panicked.resize_with(n, || None);
        let updated = match updated {
            Ok(u) => u,
            Err(e) => {
                let outcome =
                    |panic: Option<_>| panic.map_or_else(|| Outcome::Done(Err(e.duplicate())), Outcome::Panicked);
                return ids.into_iter().zip(panicked).map(|(id, panic)| (id, outcome(panic))).collect();
            }
        };
        let first = {
            let mut last = self.group.last.lock();
            let first = match updated.revision {
                Some(revision) => GroupToken { revision, index: 0 },
                None => GroupToken { revision: last.revision, index: last.index + 1 },
            };
            *last = GroupToken { revision: first.revision, index: first.index + n as u64 - 1 };
            first
        };
        ids.into_iter()
            .zip(seen)
            .zip(panicked)
            .enumerate()
            .map(|(i, ((id, (previous, written)), panic))| {
                if let Some(payload) = panic {
                    return (id, Outcome::Panicked(payload));
                }
                let token = GroupToken { revision: first.revision, index: first.index + i as u64 };
                let (lock_token, conflicts) = (updated.token, updated.conflicts);
                (id, Outcome::Done(Ok(GroupUpdated { written, previous, token, batch: n, lock_token, conflicts })))
            })
            .collect()
    }
}

/// See [`Register::combine`].
struct Stopping {
    group: Arc<Group>,
    done: bool,
}

impl Stopping {
    /// The combiner stopped as it should (nothing waits): nothing to answer.
    fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for Stopping {
    fn drop(&mut self) {
        if !self.done {
            let why = "register: the grouped updates' combiner stopped before it answered (its runtime shut down?)";
            self.group.queue.abandon(|| Outcome::Done(Err(Error::Store(why.into()))));
        }
    }
}

impl Error {
    /// The same error for another caller (a grouped batch's error reaches each of its
    /// callers). Every variant is plain data.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::InvalidName { name, reason } => Error::InvalidName { name: name.clone(), reason },
            Error::TtlOutOfRange { ttl, min, max } => Error::TtlOutOfRange { ttl: *ttl, min: *min, max: *max },
            Error::InvalidArgument { what, reason } => Error::InvalidArgument { what, reason: reason.clone() },
            Error::SessionLost { lease } => Error::SessionLost { lease: *lease },
            Error::SessionClosed { lease } => Error::SessionClosed { lease: *lease },
            Error::LeaseNotFound { lease } => Error::LeaseNotFound { lease: *lease },
            Error::Timeout { what, after } => Error::Timeout { what, after: *after },
            Error::NotHeld { what, reason } => Error::NotHeld { what, reason: reason.clone() },
            Error::StaleToken { token, highest } => Error::StaleToken { token: *token, highest: *highest },
            Error::PermitMismatch { name, stored, requested } => {
                Error::PermitMismatch { name: name.clone(), stored: *stored, requested: *requested }
            }
            Error::Connect { endpoints, timeout, reason } => {
                Error::Connect { endpoints: endpoints.clone(), timeout: *timeout, reason: reason.clone() }
            }
            Error::Auth(s) => Error::Auth(s.clone()),
            Error::Tls(s) => Error::Tls(s.clone()),
            Error::Unavailable(s) => Error::Unavailable(s.clone()),
            Error::Store(s) => Error::Store(s.clone()),
        }
    }
}
