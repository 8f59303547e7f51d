//! Sessions: one lease, renewed in the background, with a local validity deadline.

use crate::backend::LeaseId;
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::local::cleanups::{Cleanups, Owned, Running};
use crate::local::session_state::{SessionState, SessionStatus};
use crate::local::signal::Signal;
use crate::local::waiter_queue::WaiterQueue;
use crate::Client;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

mod cleanup;
mod end;
mod fence;
mod status;

pub(crate) use cleanup::Target;
pub(crate) use fence::{move_fence, FenceState};
pub use status::Health;

/// Default lease TTL: 10 s, renewed every TTL/3 (3.3 s), so two renewals can fail in a row
/// before the session is lost.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Shortest accepted TTL.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest accepted TTL (one hour): a longer lease keeps a crashed holder's locks that long.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// Options for a [`Session`]; made by [`Client::session_builder`].
#[derive(Debug, Clone)]
pub struct SessionBuilder {
    client: Client,
    ttl: Duration,
    attach: Option<LeaseId>,
}

impl SessionBuilder {
    pub(crate) fn new(client: Client) -> Self {
        Self { client, ttl: DEFAULT_TTL, attach: None }
    }

    /// The lease TTL ([`MIN_TTL`] ..= [`MAX_TTL`]; default [`DEFAULT_TTL`]).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Re-attach to an existing lease instead of granting a new one: a restarted process
    /// reclaims the keys it held. Fails with [`Error::LeaseNotFound`] if the lease expired.
    ///
    /// The keys a recipe made under the lease (in this client's namespace) that it still
    /// holds when the session opens are its [leftovers](Session::leftover_keys); keys the
    /// application attached to the lease itself are not. Each acquisition takes one over
    /// where it would otherwise create a key of that kind (a mutex or a leadership of the same name; a
    /// semaphore permit, or a read or write lock, of the same name and mode, oldest first),
    /// keeping its place in the queue and its fencing token. Leftovers nobody takes over
    /// keep what they hold (a permit, a place) until
    /// [`release_leftovers`](Session::release_leftovers) or the end of the session.
    pub fn attach(mut self, lease: LeaseId) -> Self {
        self.attach = Some(lease);
        self
    }

    /// Grants (or attaches to) the lease and starts renewing it.
    ///
    /// # Cancel safety
    /// A lease granted just before the future was dropped is left to expire after its TTL
    /// (nothing is held under it).
    pub async fn open(self) -> Result<Session> {
        if !(MIN_TTL..=MAX_TTL).contains(&self.ttl) {
            return Err(Error::TtlOutOfRange { ttl: self.ttl, min: MIN_TTL, max: MAX_TTL });
        }
        let backend = self.client.backend().clone();
        let mut leftovers = Vec::new();
        let fence = |lease| FenceState::new(self.client.namespace(), lease);
        let (lease, ttl, sent, fence) = match self.attach {
            None => {
                let sent = Instant::now();
                let l = Backoff::default().retry(|| backend.grant_lease(self.ttl)).await?;
                (l.id, l.ttl, sent, fence(l.id))
            }
            Some(id) => {
                let left = backend.lease_ttl(id).await?.ok_or(Error::LeaseNotFound { lease: id })?;
                // A lease granted by something else may run longer than a session takes
                // (the deadline is the clock plus its TTL).
                let too_long = |ttl| Error::TtlOutOfRange { ttl, min: MIN_TTL, max: MAX_TTL };
                if left > MAX_TTL {
                    return Err(too_long(left));
                }
                // Renew at once so the deadline is a full TTL from now.
                let mut keeper = backend.keep_alive(id).await?;
                let sent = Instant::now();
                let ttl = match keeper.renew().await {
                    Err(Error::LeaseNotFound { .. }) => return Err(Error::LeaseNotFound { lease: id }),
                    other => other?,
                };
                if ttl > MAX_TTL {
                    return Err(too_long(ttl));
                }
                // A create of the earlier process may still be on its way: fence it off
                // (`session/fence.rs`) before the keys are listed, so that none lands after
                // the list without being a leftover.
                let fence = fence(id);
                move_fence(&*backend, &fence, id).await?;
                leftovers = Backoff::default().retry(|| backend.lease_keys(id)).await?;
                // Only keys leasehold makes: keys the application attached to the lease
                // itself are not its to take over or release.
                let namespace = self.client.namespace();
                leftovers.retain(|key| is_recipe_key(namespace, id, key));
                (id, ttl, sent, fence)
            }
        };
        // Keys numbered by an earlier process on this lease (`…<lease hex>-<n>`): new ones
        // start above them. Oldest first within a name, so takeovers go in that order.
        let numbered = format!("{lease:x}-");
        let number = |key: &str| -> Option<u64> { key.rsplit_once(&numbered)?.1.parse().ok() };
        // Numbers from 2^63 up are no process's (a session numbers from 0): a foreign key
        // numbered u64::MAX must neither fail the attach (`n + 1` overflowed) nor start the
        // numbers where they wrap round to reuse one.
        let next_seq = leftovers.iter().filter_map(|k| number(k)).filter(|&n| n < 1 << 63).max().map_or(0, |n| n + 1);
        leftovers.sort_by(|a, b| (number(a), a).cmp(&(number(b), b)));
        let cleanups = Arc::new(Cleanups::new());
        // The leftovers are owned until taken over or released: the audit leaves them alone.
        let leftovers: Vec<(String, Owned)> =
            leftovers.into_iter().map(|key| (key.clone(), Cleanups::own(&cleanups, &key))).collect();
        let shared = Arc::new(Shared {
            state: SessionState::new((sent + ttl).into_std()),
            lost: Signal::new(),
            ended: Signal::new(),
            end: AtomicU8::new(end::END_OPEN),
            cleanups,
            audit: Mutex::new(cleanup::Audit::default()),
            health: Mutex::new(None),
            fence,
        });
        let inner = Arc::new(SessionInner {
            client: self.client.clone(),
            lease,
            ttl,
            shared: shared.clone(),
            locals: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(next_seq),
            leftovers: Mutex::new(leftovers),
            keepalive: Mutex::new(None),
        });
        let span = tracing::info_span!("session", lease = format_args!("{lease:x}"));
        let task = tokio::spawn(keep_alive(self.client.clone(), lease, ttl, shared).instrument(span));
        *inner.keepalive.lock() = Some(task);
        tracing::debug!(lease = format_args!("{lease:x}"), ?ttl, "session opened");
        let session = Session { inner };
        if self.attach.is_some() {
            // A request of the earlier process may still land under the lease: look again
            // later (its creates are fenced off; a key one made meanwhile is not).
            session.schedule_audit();
        }
        Ok(session)
    }
}

/// Whether `key` has the shape of a key a recipe of a client in `namespace` makes under
/// `lease`: `<namespace><name>/[read/|write/]<lease hex>[-<n>|-r]` for a valid name.
fn is_recipe_key(namespace: &str, lease: LeaseId, key: &str) -> bool {
    let Some(rest) = key.strip_prefix(namespace) else { return false };
    let Some((name, below)) = rest.split_once('/') else { return false };
    if crate::name::validate_name(name).is_err() {
        return false;
    }
    let last = below.strip_prefix("read/").or_else(|| below.strip_prefix("write/")).unwrap_or(below);
    let Some(tail) = last.strip_prefix(&format!("{lease:x}")) else { return false };
    match tail.strip_prefix('-') {
        None => tail.is_empty(),
        Some(n) => n == "r" || (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
    }
}

/// A lease kept alive in the background. Every lock, permit and leadership taken through a
/// session lives under its lease and is lost with it.
///
/// The session keeps a **local validity deadline**: the monotonic instant at which the last
/// successful renewal was *sent*, plus the TTL. The server cannot expire the lease before
/// then, so while [`is_valid`](Session::is_valid) is true, nothing held through the
/// session can have been taken by someone else (given clocks that run at the same rate).
/// If renewals keep failing until the deadline, the session is lost: [`lost`](Session::lost)
/// completes and every guard reports invalid.
///
/// Dropping the last handle (guards hold one) stops renewing and revokes the lease in the
/// background; [`close`](Session::close) does it and waits.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
/// use std::time::Duration;
/// let client = leasehold::Client::memory();
/// let session = client.session_builder().ttl(Duration::from_secs(5)).open().await?;
/// assert!(session.is_valid());
/// let lease = session.lease_id();
/// session.close().await?;
/// # let _ = lease; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

#[derive(Debug)]
struct SessionInner {
    client: Client,
    lease: LeaseId,
    ttl: Duration,
    shared: Arc<Shared>,
    /// Local FIFO queues, one per key this session acquires: two tasks of one session
    /// never race for the same key (they would share `<prefix>/<lease>`).
    locals: Mutex<HashMap<String, Weak<WaiterQueue>>>,
    /// Numbers the keys of recipes that take one key per acquisition (semaphore permits,
    /// read/write locks): `<lease hex>-<n>`.
    seq: AtomicU64,
    /// Keys of a re-attached lease that no acquisition has taken over yet (owned meanwhile).
    leftovers: Mutex<Vec<(String, Owned)>>,
    keepalive: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// State shared with the keep-alive task.
#[derive(Debug)]
struct Shared {
    state: SessionState,
    lost: Signal,
    /// Fired by `close` and `detach` (see [`Session::ended`]).
    ended: Signal,
    /// Whether a `close` owes the lease's revoke (it began it and has not seen it done: the
    /// drop of the last handle makes it) or the session was detached (its lease is its
    /// successor's: never revoked here). `END_*`.
    end: AtomicU8,
    /// Background cleanups (releases on drop, cancelled acquisitions), doomed and owned keys.
    cleanups: Arc<Cleanups>,
    /// When the audit of the lease's keys runs next (see `session/cleanup.rs`).
    audit: Mutex<cleanup::Audit>,
    /// The channel of [`Session::status`], once asked for (see `session/status.rs`).
    health: status::HealthChannel,
    /// The fence every create of the session carries (see `session/fence.rs`).
    fence: FenceState,
}

impl Session {
    /// The lease id (hex of it is the key suffix of this session's locks).
    pub fn lease_id(&self) -> LeaseId {
        self.inner.lease
    }

    /// The TTL the server granted.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The session's fence key, `<namespace>~leasehold/fence/<lease hex>`: a key under the lease
    /// that no recipe reads as a lock, permit or place. The session writes it only after a
    /// create's outcome was unknown (or when it re-attaches a lease), so that a late copy
    /// of that create can never land; every create of the session is conditional on it.
    /// A check for keys left under a live lease should pass over it.
    pub fn fence_key(&self) -> &str {
        self.inner.shared.fence.key()
    }

    /// The fence state shared with background tasks.
    pub(crate) fn fence(&self) -> &FenceState {
        &self.inner.shared.fence
    }

    /// The client this session belongs to.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Whether the session is alive and before its local validity deadline.
    pub fn is_valid(&self) -> bool {
        self.inner.shared.state.is_valid(Instant::now().into_std())
    }

    /// Time left before the local validity deadline (zero once invalid).
    pub fn remaining(&self) -> Duration {
        if !self.is_valid() {
            return Duration::ZERO;
        }
        self.inner.shared.state.deadline().saturating_duration_since(Instant::now().into_std())
    }

    /// The monotonic instant after which the lease may have expired on the server.
    pub fn deadline(&self) -> std::time::Instant {
        self.inner.shared.state.deadline()
    }

    /// Completes when the session is lost (lease expired, or not renewed in time). It does
    /// not complete on [`close`](Session::close).
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.inner.shared.lost.wait()
    }

    /// Whether the session has been lost.
    pub fn is_lost(&self) -> bool {
        self.inner.shared.lost.is_fired()
    }

    /// Fails with the reason the session can no longer be used, if any.
    pub(crate) fn check(&self) -> Result<()> {
        match self.inner.shared.state.status() {
            SessionStatus::Closed => Err(Error::SessionClosed { lease: self.inner.lease }),
            SessionStatus::Lost => Err(Error::SessionLost { lease: self.inner.lease }),
            SessionStatus::Alive if !self.is_valid() => Err(Error::SessionLost { lease: self.inner.lease }),
            SessionStatus::Alive => Ok(()),
        }
    }

    /// Waits until every background cleanup has finished: a release on drop (or of a
    /// release whose future was dropped or that failed for the whole retry budget), a
    /// cancelled acquisition's key, a create whose outcome was unknown. Each is retried
    /// until it is done or the session ends, so this waits as long as the store fails them
    /// and the session lives.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping it stops the waiting, not the cleanups.
    pub async fn settle(&self) {
        Cleanups::idle(&self.inner.shared.cleanups).await
    }

    /// The keys of a [re-attached](SessionBuilder::attach) lease that no acquisition of this
    /// session has taken over yet (none for a session on a new lease). Each still holds
    /// what it held for the earlier process: a lock, a permit, or a place in a queue.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Semaphore};
    /// let client = Client::memory();
    /// let before = client.session().await?;
    /// std::mem::forget(Semaphore::new(&before, "slots", 2)?.acquire().await?); // "crash"
    /// let lease = before.detach()?;
    /// let after = client.session_builder().attach(lease).open().await?;
    /// assert_eq!(after.leftover_keys().len(), 1);
    /// let permit = Semaphore::new(&after, "slots", 2)?.acquire().await?; // takes it over
    /// assert!(after.leftover_keys().is_empty());
    /// # permit.release().await?; Ok(()) }
    /// ```
    pub fn leftover_keys(&self) -> Vec<String> {
        self.inner.leftovers.lock().iter().map(|(key, _)| key.clone()).collect()
    }

    /// Deletes the [leftover keys](Session::leftover_keys) no acquisition has taken over,
    /// freeing what they held, and returns how many it deleted. A key is deleted only while
    /// it is still this lease's (with the create revision it was read with). Keys the
    /// application attached to the lease itself are never among them.
    ///
    /// A leftover whose delete fails for the whole retry budget (10 s of store failures) is
    /// deleted in the background, retried until done or the session ends
    /// ([`settle`](Session::settle) waits for it), and the call fails with the error. An
    /// acquisition of this session never takes over a key being deleted. Once the session
    /// ends (detached through another handle: its lease is a successor's), nothing more is
    /// deleted, and the call fails with `SessionClosed` or `SessionLost`.
    ///
    /// # Cancel safety
    /// Dropping the future hands the deletes not yet done to the background: the keys are
    /// no longer leftovers once the call starts.
    pub async fn release_leftovers(&self) -> Result<usize> {
        // Doomed under the leftovers' lock: an acquisition that did not take a key over
        // before this point finds it doomed and does not adopt it.
        let doomed: Vec<(String, Running)> = {
            let mut left = self.inner.leftovers.lock();
            std::mem::take(&mut *left).into_iter().map(|(key, _owned)| (key.clone(), self.doom(&key))).collect()
        };
        // Whatever is still listed when this future ends (dropped) goes to the background.
        struct Handover<'a>(&'a Session, Vec<(String, Running)>);
        impl Drop for Handover<'_> {
            fn drop(&mut self) {
                for (key, doom) in self.1.drain(..) {
                    self.0.delete_in_background(doom, Target::IfOurs(key), None);
                }
            }
        }
        let mut rest = Handover(self, doomed);
        let backend = self.inner.client.backend();
        let (mut deleted, mut failed) = (0, None);
        while let Some((key, _)) = rest.1.first() {
            let key = key.clone();
            // Not once the session ended: detached, its lease is a successor's, which may
            // have taken this key over (lost or closed, the lease takes it anyway).
            // Looked at again between the read and the delete: a detach while the read was
            // on its way must not be followed by a delete of what the read found.
            let outcome = Backoff::default()
                .retry(|| async {
                    let still = || if self.is_ended() { Err(self.ended_error()) } else { Ok(()) };
                    still()?;
                    match backend.get(&key).await? {
                        Some(kv) if kv.lease == self.inner.lease => {
                            still()?;
                            backend.delete_if_created(&key, kv.create_revision).await
                        }
                        _ => Ok(false),
                    }
                })
                .await;
            let (key, doom) = rest.1.remove(0);
            match outcome {
                Ok(gone) => deleted += usize::from(gone),
                Err(e) => {
                    // This one goes on in the background; the others are tried here.
                    self.delete_in_background(doom, Target::IfOurs(key), None);
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(deleted),
        }
    }

    /// Takes over the oldest leftover key starting with `prefix`, if any: the caller
    /// acquires with it instead of a new key.
    pub(crate) fn take_leftover(&self, prefix: &str) -> Option<String> {
        let mut left = self.inner.leftovers.lock();
        let at = left.iter().position(|(k, _)| k.starts_with(prefix))?;
        Some(left.remove(at).0)
    }

    /// Takes over the leftover `key` itself, if it is still one (false: it is not, or
    /// another acquisition took it first).
    pub(crate) fn take_leftover_key(&self, key: &str) -> bool {
        let mut left = self.inner.leftovers.lock();
        let Some(at) = left.iter().position(|(k, _)| k == key) else { return false };
        left.remove(at);
        true
    }

    /// The key for an acquisition that takes one numbered key (`<own><n>`, `own` ending in
    /// `<lease hex>-`): the oldest leftover of a re-attached lease with that start (`true`:
    /// take it over), else a number this session has not used.
    pub(crate) fn numbered_key(&self, own: &str) -> (String, bool) {
        match self.take_leftover(own) {
            Some(key) => (key, true),
            None => (format!("{own}{}", self.next_seq()), false),
        }
    }

    /// A number this session has not handed out before, for per-acquisition keys. A
    /// re-attached session starts above the numbers of its leftover keys; a key made from
    /// it can still exist if an earlier process of the lease made keys after the session
    /// read them (acquisitions create with a precondition that never overwrites one).
    pub(crate) fn next_seq(&self) -> u64 {
        self.inner.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The local FIFO queue for `key` (shared by every handle of this session on it).
    pub(crate) fn local_queue(&self, key: &str) -> Arc<WaiterQueue> {
        let mut locals = self.inner.locals.lock();
        if let Some(q) = locals.get(key).and_then(Weak::upgrade) {
            return q;
        }
        locals.retain(|_, w| w.strong_count() > 0);
        let q = Arc::new(WaiterQueue::new());
        locals.insert(key.to_owned(), Arc::downgrade(&q));
        q
    }
}

/// The renewal loop. Renews every TTL/3 (the first a third into the grant's validity);
/// after a failure it retries every TTL/10 (at least 100 ms) until the deadline. The
/// deadline only moves with a renewal that succeeded, by the time **that** renewal was sent
/// (on etcd, opening a stream is such a renewal: `renewed_on_open`).
///
/// A keep-alive stream pairs answers with requests by order only (etcd's carries no request
/// id). So a stream whose request was abandoned — the deadline came first — is dropped,
/// never read again: its late answer would be credited to the next request, and a session
/// whose lease expired while the process was paused would come back valid. Every `select!`
/// here is biased towards the deadline: past it the session is lost, whatever else is ready,
/// and no renewal is sent after it.
async fn keep_alive(client: Client, lease: LeaseId, ttl: Duration, shared: Arc<Shared>) {
    let backend = client.backend().clone();
    let interval = ttl / 3;
    let retry = (ttl / 10).max(Duration::from_millis(100));
    let mut keeper = None;
    // The first renewal a third into the validity the grant gave, counted (as the deadline
    // is) from the grant's request: not a third of a TTL after its answer, which on a slow
    // link leaves too little time for the renewal's own round trip.
    let first = Instant::from_std(shared.state.deadline());
    let mut next = first.checked_sub(ttl - interval).unwrap_or(first).max(Instant::now());
    let expired = || {
        if !shared.state.expire_if_due(Instant::now().into_std()) {
            return false;
        }
        if shared.lost.fire() {
            crate::metrics::session_lost();
            tracing::warn!(lease = format_args!("{lease:x}"), "session lost: not renewed before the validity deadline");
        }
        true
    };
    // Best effort, once lost at the deadline: if the server still has the lease, free its
    // keys now (not once detached: the lease is then a successor's).
    let revoke_expired = || async {
        if end::begin_revoke(&shared.end) {
            if let Ok(answer) = tokio::time::timeout(ttl, backend.revoke_lease(lease)).await {
                end::revoked(&shared.end, &answer);
            }
        }
    };
    loop {
        let deadline = Instant::from_std(shared.state.deadline());
        if let Due::Deadline = first_due(deadline, next).await {
            if expired() {
                revoke_expired().await;
                return;
            }
            continue; // renewed meanwhile (or closed: `renewed` below tells)
        }
        #[cfg(not(leasehold_sim_mutation_keepalive))]
        if expired() {
            revoke_expired().await;
            return;
        }
        let sent = Instant::now();
        let attempt = async {
            if keeper.is_none() {
                let opened = backend.keep_alive(lease).await?;
                let renewed = opened.renewed_on_open();
                keeper = Some(opened);
                if renewed {
                    return Ok(ttl); // etcd: the open was a renewal, answered
                }
            }
            keeper.as_mut().expect("set above").renew().await
        };
        // Mutation for the partition suite (scripts/partitions.sh): a renewal given up on
        // after one renewal interval, and then (below) counted as one that succeeded.
        #[cfg(leasehold_part_mutation_renew_on_error)]
        let deadline = deadline.min(sent + interval);
        #[cfg(not(leasehold_sim_mutation_keepalive))]
        let outcome = tokio::select! {
            biased;
            _ = tokio::time::sleep_until(deadline) => None,
            r = attempt => Some(r),
        };
        // Mutation for the simulator (scripts/sim.sh): the code of issue 17's bug 1, whose
        // unbiased selects took their branches at random (here from leasehold's RNG, so a
        // seed replays it), with no expiry check before a send and the stream of an
        // abandoned request kept (below).
        #[cfg(leasehold_sim_mutation_keepalive)]
        let outcome = if crate::backoff::with_rng(|rng| rng.next_u32() % 2 == 0) {
            tokio::select! { biased; r = attempt => Some(r), _ = tokio::time::sleep_until(deadline) => None }
        } else {
            tokio::select! { biased; _ = tokio::time::sleep_until(deadline) => None, r = attempt => Some(r) }
        };
        match outcome {
            Some(Ok(granted)) if !granted.is_zero() => {
                crate::metrics::renewal(Some(sent.elapsed()));
                // Mutation for the partition suite (scripts/partitions.sh): the deadline
                // counted from the answer instead of the request.
                #[cfg(leasehold_part_mutation_answer_time)]
                let sent = Instant::now();
                if !shared.state.renewed(sent.into_std(), granted) {
                    return; // closed or lost meanwhile
                }
                next = sent + interval;
            }
            Some(Ok(_)) | Some(Err(Error::LeaseNotFound { .. })) => {
                if shared.state.mark_lost() && shared.lost.fire() {
                    crate::metrics::session_lost();
                    tracing::warn!(lease = format_args!("{lease:x}"), "session lost: lease expired on the server");
                }
                return;
            }
            Some(Err(e)) => {
                // Mutation for the partition suite: a renewal that failed (connection
                // refused, reset) counted as one that succeeded.
                #[cfg(leasehold_part_mutation_renew_on_error)]
                shared.state.renewed(sent.into_std(), ttl);
                crate::metrics::renewal(None);
                tracing::debug!(error = %e, "renewal failed; retrying");
                keeper = None;
                next = Instant::now() + retry;
            }
            None => {
                // Mutation for the partition suite: no answer in time taken for a
                // renewal.
                #[cfg(leasehold_part_mutation_renew_on_error)]
                shared.state.renewed(sent.into_std(), ttl);
                // The request may still be answered on this stream: never read that answer.
                #[cfg(not(leasehold_sim_mutation_keepalive))]
                {
                    keeper = None;
                }
                // The deadline branch at the top decides (it is due now).
            }
        }
    }
}

/// What the renewal loop waits for next.
enum Due {
    Deadline,
    Renewal,
}

/// Waits for the validity deadline or the next renewal, whichever comes first; the
/// deadline when both are due.
async fn first_due(deadline: Instant, next: Instant) -> Due {
    #[cfg(not(leasehold_sim_mutation_keepalive))]
    tokio::select! {
        biased;
        _ = tokio::time::sleep_until(deadline) => Due::Deadline,
        _ = tokio::time::sleep_until(next) => Due::Renewal,
    }
    #[cfg(leasehold_sim_mutation_keepalive)]
    if crate::backoff::with_rng(|rng| rng.next_u32() % 2 == 0) {
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(next) => Due::Renewal,
            _ = tokio::time::sleep_until(deadline) => Due::Deadline,
        }
    } else {
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(deadline) => Due::Deadline,
            _ = tokio::time::sleep_until(next) => Due::Renewal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_recipe_key;

    #[test]
    fn recipe_keys_are_told_from_the_applications_own() {
        let lease = 0x694d_1f2a;
        for ours in [
            "app/jobs/694d1f2a",
            "app/jobs/694d1f2a-r",
            "app/slots/694d1f2a-0",
            "app/slots/694d1f2a-17",
            "app/cfg/read/694d1f2a-3",
            "app/cfg/write/694d1f2a-4",
        ] {
            assert!(is_recipe_key("app/", lease, ours), "{ours}");
        }
        for theirs in [
            "app/registration",          // no name segment
            "app/svc/instance-1",        // not the lease
            "app/jobs/694d1f2a-x",       // not a number
            "app/jobs/694d1f2a-",        // empty number
            "app/jobs/694d1f2ab",        // another lease's prefix
            "app/jobs/x/694d1f2a",       // deeper than a recipe's key
            "other/jobs/694d1f2a",       // another namespace
            "app/~leasehold/x/694d1f2a", // the reserved area
            "app/a b/694d1f2a",          // not a valid name
        ] {
            assert!(!is_recipe_key("app/", lease, theirs), "{theirs}");
        }
        assert!(is_recipe_key("", lease, "jobs/694d1f2a"));
    }
}
