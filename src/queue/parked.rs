//! A place in a queue kept between two acquisitions: the next one is already queued when
//! the previous one releases.
//!
//! A queued [`Register`](crate::Register) update costs two commits: one to take a place in
//! the lock's queue, one to write the value and release. When the same handle updates again
//! at once (a worker draining a stock, a counter bumped in a loop) and others are queued,
//! the write can also take the handle's next place, at the back of the queue, in the same
//! transaction (as [`Mutex::relock`](crate::Mutex::relock) does for a mutex): one commit
//! per update instead of two, with the queue's order unchanged — everyone queued before
//! the write still goes first.
//!
//! The place is *parked* in the handle ([`Parking`]) until the next update claims it. A
//! task follows it meanwhile (a read of the queue, then the register's feed, as any
//! waiter does), so a place that comes to the head unclaimed is noticed: it is released
//! at once if another task of the session waits for the session's local slot (which the
//! place holds), otherwise after a grace of the handle's window
//! ([`Register::with_requeue_window`](crate::Register::with_requeue_window)), and an unclaimed place never holds the lock longer
//! than that. Dropping the handle, or the update that claimed the place while it waits,
//! deletes the key in the background ([`Pending`]), like any cancelled acquisition.

use super::{turn, wait_turn, Pending, Rule, Turn, View, Waited};
use crate::backend::Revision;
use crate::error::{Error, Result};
use crate::guard::Holding;
use crate::local::waiter_queue::WaiterQueue;
use crate::Session;
use parking_lot::{Mutex, MutexGuard};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::futures::Notified;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// Where a handle keeps its parked place, and when its last update ended.
#[derive(Debug)]
pub(crate) struct Parking {
    place: Arc<Place>,
    /// When the handle's last update returned: the next one parks only if it started
    /// within [`window`](Self::window) of it.
    last_end: Mutex<Option<Instant>>,
    window: Duration,
    next_id: AtomicU64,
    /// Woken when a place is parked: a task of the handle waiting for the session's local
    /// slot (which the place holds) claims the place instead.
    parked: Notify,
    /// Tasks of the handle waiting for the lock (at the session's slot or for a place): while
    /// one waits, no place is kept, so the holder cannot claim the next one before it.
    waiting: Arc<AtomicUsize>,
}

/// One task of the handle counted as waiting for the lock; see [`Parking::wait`].
#[derive(Debug)]
pub(crate) struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Parking {
    /// Parking for a handle whose next update must follow within `window` for its place
    /// to be kept (and a place admitted unclaimed is released after `window`).
    /// `Duration::ZERO` never parks.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            place: Arc::default(),
            last_end: Mutex::new(None),
            window,
            next_id: AtomicU64::new(0),
            parked: Notify::new(),
            waiting: Arc::default(),
        }
    }

    /// Counts the caller as waiting for the lock until the token is dropped.
    pub(crate) fn wait(&self) -> Waiting {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(self.waiting.clone())
    }

    /// How many tasks of the handle wait for the lock.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// An update starts: whether it follows the previous one closely enough that the next
    /// may keep a place.
    pub(crate) fn begin(&self) -> bool {
        !self.window.is_zero() && self.last_end.lock().is_some_and(|end| end.elapsed() < self.window)
    }

    /// An update ended (successfully or not).
    pub(crate) fn end(&self) {
        *self.last_end.lock() = Some(Instant::now());
    }

    /// Whether a place is parked.
    pub(crate) fn is_parked(&self) -> bool {
        self.place.parked.load(Ordering::Acquire)
    }

    /// Takes the parked place, if any (it may have been released meanwhile).
    pub(crate) fn claim(&self) -> Option<Parked> {
        self.place.lock().take()
    }

    /// Completes when a place is parked after this call (create it before looking with
    /// [`claim`](Self::claim), so that none is missed in between: a `Notified` receives
    /// `notify_waiters` from its creation on, polled or not).
    pub(crate) fn parked(&self) -> Notified<'_> {
        self.parked.notified()
    }

    /// Parks `pending`, a key of `session` created at `rev` under `prefix` (the lock of the
    /// register at `register`), and starts following it. `local` is the session's local
    /// queue for the lock, whose slot the place holds: a place that comes to the head
    /// unclaimed while a task waits there is released at once. A place parked before is
    /// dropped (and so deleted).
    pub(crate) fn park(
        &self,
        session: &Session,
        (prefix, register): (String, String),
        (pending, local): (Pending, Arc<WaiterQueue>),
        key: String,
        rev: Revision,
    ) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, admitted) = oneshot::channel();
        let place = Arc::downgrade(&self.place);
        let (follower, grace) = (session.clone(), self.window);
        let follow_key = key.clone();
        let previous = {
            // The follower is spawned under the lock, so its `expire` (which takes the lock)
            // cannot run before the place is in: a place admitted at once, with a task of the
            // session waiting, is released at once and not left parked for good.
            let mut parked = self.place.lock();
            let task = tokio::spawn(async move {
                let outcome = wait_for_place(&follower, (&prefix, &register), &follow_key, rev).await;
                let ok = outcome.is_ok();
                let _ = tx.send(outcome);
                if ok && local.waiting() == 0 {
                    tokio::time::sleep(grace).await;
                }
                expire(&place, id);
            });
            parked.replace(Parked { id, pending: Some(pending), key, rev, admitted, task })
        };
        drop(previous);
        self.parked.notify_waiters();
    }
}

impl Drop for Parking {
    fn drop(&mut self) {
        drop(self.place.lock().take());
    }
}

/// A handle's parked place, if any, and whether there is one, read without the lock
/// ([`Parking::is_parked`]: every adaptive update asks, and on the embedded store, where
/// an update takes a microsecond or two, taking the lock each time was measurable).
#[derive(Debug, Default)]
struct Place {
    slot: Mutex<Option<Parked>>,
    parked: AtomicBool,
}

impl Place {
    /// The slot, locked; dropping the guard records whether a place is in it.
    fn lock(&self) -> PlaceGuard<'_> {
        PlaceGuard { slot: self.slot.lock(), parked: &self.parked }
    }
}

/// [`Place`]'s slot, locked.
struct PlaceGuard<'a> {
    slot: MutexGuard<'a, Option<Parked>>,
    parked: &'a AtomicBool,
}

impl Deref for PlaceGuard<'_> {
    type Target = Option<Parked>;
    fn deref(&self) -> &Option<Parked> {
        &self.slot
    }
}

impl DerefMut for PlaceGuard<'_> {
    fn deref_mut(&mut self) -> &mut Option<Parked> {
        &mut self.slot
    }
}

impl Drop for PlaceGuard<'_> {
    fn drop(&mut self) {
        self.parked.store(self.slot.is_some(), Ordering::Release);
    }
}

/// Releases the place `id` if it is still parked (nobody claimed it).
fn expire(place: &Weak<Place>, id: u64) {
    let Some(place) = place.upgrade() else { return };
    let unclaimed = {
        let mut parked = place.lock();
        if parked.as_ref().is_some_and(|p| p.id == id) {
            parked.take()
        } else {
            None
        }
    };
    if let Some(p) = unclaimed {
        tracing::debug!(key = %p.key, "parked queue place unclaimed: released");
        // Dropping it aborts this very task, which has nothing left to do, and deletes the
        // key in the background.
        drop(p);
    }
}

/// Reads the queue, then follows the delete feed until the key `(key, rev)` is first:
/// the revision from which it holds, and its wait if it had to wait for another holder.
async fn wait_for_place(
    session: &Session,
    (prefix, register): (&str, &str),
    key: &str,
    rev: Revision,
) -> Result<(Revision, Option<Waited>)> {
    let backend = session.client().backend().clone();
    let (kvs, at) = crate::Backoff::default().retry(|| backend.range_prefix(prefix, 0)).await?;
    let head = View::snapshot(kvs, at);
    match turn(&head, key, rev, &Rule::First) {
        Some(Turn::Ready) => Ok((at, None)),
        // Gone: with the lease, or revoked while the session lives (the caller queues anew).
        Some(Turn::Gone) => Err(session.gone_error("register", key).await),
        _ => {
            let started = Waited::start(&head, rev);
            let at = wait_turn(session, prefix, key, rev, head, Rule::First, Some(register)).await?;
            Ok((at, Some(Waited::end(started))))
        }
    }
}

/// A parked place (see the module docs). Dropped unclaimed, its key is deleted in the
/// background.
#[derive(Debug)]
pub(crate) struct Parked {
    id: u64,
    pending: Option<Pending>,
    key: String,
    rev: Revision,
    admitted: oneshot::Receiver<Result<(Revision, Option<Waited>)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Parked {
    /// Waits until the place is first in the queue: the held key, the revision from
    /// which it holds, and its wait if it waited for another holder.
    pub(crate) async fn admitted(mut self) -> Result<(Holding, Revision, Option<Waited>)> {
        let outcome = (&mut self.admitted).await;
        let (at, waited) = outcome.map_err(|_| Error::Store("parked queue place: follower ended".into()))??;
        let pending = self.pending.take().ok_or_else(|| Error::Store("parked queue place: claimed twice".into()))?;
        let hold = pending.into_holding(self.rev)?.contended(waited.is_some());
        Ok((hold, at, waited))
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.task.abort();
        // `pending`, if still here, deletes the key in the background.
    }
}
