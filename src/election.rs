//! Leader election with fenced leadership and an observer that also reports "no leader".

use crate::adaptive::Adaptive;
use crate::backend::{CreateRequest, KeyValue, LeaseId, Precondition, Write};
use crate::backoff::Backoff;
use crate::error::Result;
use crate::guard::{fenced_writes, held_accessors, Holding};
use crate::lock_delay::{self, LockDelay};
use crate::queue::{acquire_cas, enqueue, local_slot, Admission, Cas, CasAttempt, Rule, Subscription, Ticket, Wait};
use crate::strategy::Strategy;
use crate::{Client, Session};
use std::sync::Arc;
use tracing::Instrument;

/// The recipe's name in errors.
const WHAT: &str = "election";

/// A leader election.
///
/// Keys follow etcd's Go `concurrency.Election`: every candidate owns the key
/// `<namespace><name>/<lease id in hex>` with its proposal as the value, and the leader is
/// the candidate whose key has the lowest create revision. A leasehold election,
/// `etcdctl elect <name> <proposal>` and Go services using
/// `concurrency.NewElection(s, "<name>")` therefore elect one leader together, and each
/// side sees the other's proposals.
///
/// A leadership's **fencing token** is its key's create revision, so tokens strictly
/// increase from term to term.
///
/// One session campaigns once at a time: a second [`campaign`](Election::campaign) through
/// the same session waits until the first leadership is resigned (they would share a key).
///
/// # Strategies
/// With [`Strategy::Pessimistic`] (the default) candidates queue, as etcd's recipe does:
/// each keeps a key, the oldest leads, and the next in line takes over the moment the
/// leader's key goes (one write per campaign, fair). With [`Strategy::Optimistic`] a
/// candidate creates its key only while no candidate's key exists (one compare-and-swap);
/// otherwise it writes nothing, waits until the leader's key is gone, pauses (jittered, see
/// [`with_backoff`](Election::with_backoff)) and tries again — the lease-record election of
/// Kubernetes' client-go. It leaves no key while it waits (a re-attached lease's own key
/// excepted: that is queued already, and the campaign waits in the queue), so followers
/// cost the store nothing, but it is not fair and a new leader starts a pause later. [`Strategy::Adaptive`]
/// campaigns optimistically until a campaign that may wait meets a leader, then queues,
/// and goes back once its queued campaigns find nobody ahead (as the
/// [`Mutex`](crate::Mutex) does; per handle, shared by its clones). Every strategy elects by the same rule on the same keys,
/// so candidates with different strategies (and etcd's own) can mix: there is never more
/// than one leader.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
/// use leasehold::{Client, Election};
/// let client = Client::memory();
/// let session = client.session().await?;
/// let election = Election::new(&session, "scheduler")?;
/// let mut observer = election.observe();
/// assert_eq!(observer.changed().await?, None); // no leader yet
///
/// let leadership = election.campaign("node-1:8080").await?;
/// let leader = election.leader().await?.expect("elected");
/// assert_eq!((leader.value.as_slice(), leader.token), (&b"node-1:8080"[..], leadership.fencing_token()));
/// leadership.proclaim("node-1:9090").await?; // a new value, same term
///
/// assert_eq!(observer.changed().await?.map(|l| l.value), Some(b"node-1:8080".to_vec()));
/// assert_eq!(observer.changed().await?.map(|l| l.value), Some(b"node-1:9090".to_vec()));
/// leadership.resign().await?;
/// assert_eq!(observer.changed().await?, None);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Election {
    session: Session,
    name: String,
    prefix: String,
    key: String,
    lock_delay: Option<LockDelay>,
    strategy: Strategy,
    backoff: Backoff,
    adaptive: Arc<Adaptive>,
}

/// The leader of an election, as read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaderInfo {
    /// The leader's proposal (its key's value).
    pub value: Vec<u8>,
    /// The leadership's fencing token (its key's create revision).
    pub token: u64,
    /// The leader's key.
    pub key: String,
    /// The leader's lease.
    pub lease: LeaseId,
}

impl From<&KeyValue> for LeaderInfo {
    fn from(kv: &KeyValue) -> Self {
        Self { value: kv.value.clone(), token: kv.create_revision as u64, key: kv.key.clone(), lease: kv.lease }
    }
}

impl Election {
    /// An election on `name`. Fails for an invalid name.
    pub fn new(session: &Session, name: &str) -> Result<Self> {
        let prefix = session.client().prefix_of(name)?;
        let key = format!("{prefix}{:x}", session.lease_id());
        Ok(Self {
            session: session.clone(),
            name: name.to_owned(),
            prefix,
            key,
            lock_delay: None,
            strategy: Strategy::Pessimistic,
            backoff: Backoff::optimistic(),
            adaptive: Arc::default(),
        })
    }

    /// Chooses how this handle campaigns (see [Strategies](Election#strategies)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Election, Strategy};
    /// let client = Client::memory();
    /// let (a, b) = (client.session().await?, client.session().await?);
    /// let leader = Election::new(&a, "scheduler")?.campaign("a").await?;
    /// let follower = Election::new(&b, "scheduler")?.with_strategy(Strategy::Optimistic);
    /// assert!(follower.try_campaign("b").await?.is_none()); // writes nothing: a leads
    /// assert_eq!(follower.leader().await?.map(|l| l.value), Some(b"a".to_vec()));
    /// leader.resign().await?;
    /// let led = follower.campaign("b").await?; // one compare-and-swap once a is gone
    /// assert_eq!(follower.leader().await?.map(|l| l.token), Some(led.fencing_token()));
    /// # Ok(()) }
    /// ```
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The strategy (see [`with_strategy`](Election::with_strategy)).
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The pauses an optimistic campaign waits after seeing the leader go, before it tries
    /// again (jittered, so that candidates do not all try at once). The default: full
    /// jitter from 0.5 ms, doubling up to 50 ms.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Enables **lock-delay** (Chubby, Consul): after a leader loses leadership without a
    /// clean [`resign`](Leadership::resign) (its lease expired because it crashed, paused or
    /// was cut off; its session was closed; or its `Leadership` was dropped), the next
    /// leader waits `delay` before its campaign returns, counted from the moment it was
    /// elected (after the old key was gone), keeping its place meanwhile. A clean `resign`
    /// hands over with no delay. `Duration::ZERO` turns it off (the default).
    ///
    /// For leaders that act on resources which check no fencing token: choose `delay`
    /// longer than the old leader's actions can be in flight. The marker is the same one a
    /// [`Mutex`](crate::Mutex) of this name with lock-delay uses (`docs/guarantees.md`).
    pub fn with_lock_delay(mut self, delay: std::time::Duration) -> Self {
        self.lock_delay = (!delay.is_zero())
            .then(|| LockDelay::new(delay, self.session.client().reserved_key(lock_delay::AREA, &self.name)));
        self
    }

    /// The lock-delay, if enabled.
    pub fn lock_delay(&self) -> Option<std::time::Duration> {
        self.lock_delay.as_ref().map(LockDelay::delay)
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key this session campaigns with.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Becomes a candidate with `value` and waits until this session is the leader.
    ///
    /// If the session's key already exists (a re-attached session), it is taken over and
    /// its value replaced by `value` once elected.
    ///
    /// Fails with [`Error::SessionLost`](crate::Error::SessionLost) if the session is lost while waiting
    /// ([`Error::SessionClosed`](crate::Error::SessionClosed) if it is closed or detached through another handle).
    ///
    /// # Cancel safety
    /// Dropping the future at any point withdraws the candidacy: no key is left behind (see
    /// [`Session::settle`]).
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership> {
        Ok(self.campaign_with(value.into(), Wait::Forever).await?.expect("waits until elected"))
    }

    /// Campaigns, runs `work` while leading, and resigns when it returns: a singleton job in
    /// one call. If the session is lost while `work` runs, `work` is dropped at the await it
    /// is at — a deposed leader stops — and the call fails with
    /// [`Error::SessionLost`](crate::Error::SessionLost) (as
    /// [`Mutex::with_lock`](crate::Mutex::with_lock)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Election};
    /// let session = Client::memory().session().await?;
    /// let scheduler = Election::new(&session, "scheduler")?;
    /// let led = scheduler
    ///     .with_leadership("node-a", async |leader| {
    ///         leader.fenced_put("jobs/last-run", "2026-12-01").await?; // refused once deposed
    ///         Ok::<_, leasehold::Error>(leader.fencing_token())
    ///     })
    ///     .await??;
    /// assert!(led > 0);
    /// assert_eq!(scheduler.leader().await?, None, "resigned after the work");
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future drops `work` at the await it is at; what was acquired is
    /// released in the background, as for a dropped guard.
    pub async fn with_leadership<T>(
        &self,
        value: impl Into<Vec<u8>>,
        work: impl AsyncFnOnce(&Leadership) -> T,
    ) -> Result<T> {
        let leadership = self.campaign(value).await?;
        let lost = leadership.lost();
        crate::guard::run_held("election", leadership, lost, &self.session, work, async |l: Leadership| {
            l.resign().await
        })
        .await
    }

    /// Becomes the leader only if nobody leads now: `Ok(None)` otherwise, leaving no key.
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn try_campaign(&self, value: impl Into<Vec<u8>>) -> Result<Option<Leadership>> {
        self.campaign_with(value.into(), Wait::No).await
    }

    /// Campaigns for at most `timeout`; fails with [`Error::Timeout`](crate::Error::Timeout),
    /// withdrawing the candidacy.
    ///
    /// # Cancel safety
    /// Dropping the future at any point leaves nothing held and no key behind: a key that
    /// was (or may have been) created is deleted in the background, retried until it is
    /// gone or the session ends ([`Session::settle`](crate::Session::settle) waits for it).
    pub async fn campaign_timeout(
        &self,
        value: impl Into<Vec<u8>>,
        timeout: std::time::Duration,
    ) -> Result<Leadership> {
        self.campaign_with(value.into(), Wait::at_most(timeout))
            .await?
            .ok_or(crate::Error::Timeout { what: "election", after: timeout })
    }

    async fn campaign_with(&self, value: Vec<u8>, wait: Wait) -> Result<Option<Leadership>> {
        let timer = crate::metrics::Acquire::start("election");
        let span = tracing::debug_span!(
            "election.campaign",
            name = %self.name,
            strategy = ?self.strategy,
            token = tracing::field::Empty,
            wait_ms = tracing::field::Empty
        );
        let acquired = async {
            self.session.check()?;
            let Some(local) = local_slot(&self.session, &self.key, wait).await? else { return Ok(None) };
            // A re-attached lease's key is adopted by the create, which takes it over then.
            let req = CreateRequest {
                key: self.key.clone(),
                value: value.clone(),
                lease: self.session.lease_id(),
                precondition: Precondition::KeyAbsent,
                prefix: self.prefix.clone(),
                head_limit: 1,
                replaces: None,
                read: None,
                fence: None,
            };
            let adaptive = self.strategy == Strategy::Adaptive;
            let queued = match self.strategy {
                Strategy::Pessimistic => true,
                Strategy::Optimistic => false,
                Strategy::Adaptive => self.adaptive.queue_next(),
            };
            let mut local = Some(local);
            if !queued {
                // Adaptive gives way at the first leader it meets (not in a try), as the mutex
                // does: it queues instead, this campaign included — waiting without a place
                // it could starve behind the queued candidates.
                let attempt = CasAttempt { local: local.take(), adopt: true, give_way: adaptive };
                match acquire_cas(&self.session, WHAT, req.clone(), attempt, wait, &self.backoff).await?.0 {
                    Cas::Held(hold, kv) => {
                        if adaptive {
                            self.adaptive.optimistic(0);
                        }
                        return self.elected(hold, kv, value, wait).await;
                    }
                    Cas::NotHeld => return Ok(None),
                    Cas::Busy(slot) => {
                        if adaptive {
                            self.adaptive.force_queue();
                        }
                        local = slot;
                    }
                    Cas::KeyTaken => unreachable!("adopt is set"),
                }
            }
            let ticket = Ticket { what: WHAT, req, local, adopt: true, replaces: None, check: None, register: None };
            let (hold, kv) = match enqueue(&self.session, ticket, wait, Rule::First).await? {
                Admission::Held(hold, kv, _) => (hold, kv),
                Admission::NotAdmitted => return Ok(None),
                Admission::KeyTaken => unreachable!("adopt is set"),
            };
            if adaptive {
                self.adaptive.queued(hold.was_contended());
            }
            self.elected(hold, kv, value, wait).await
        }
        .instrument(span.clone())
        .await;
        timer.settle(wait, &span, acquired, |g| &mut g.hold)
    }

    /// What follows an admission: the lock-delay, if any, and the campaign's value.
    async fn elected(&self, hold: Holding, kv: KeyValue, value: Vec<u8>, wait: Wait) -> Result<Option<Leadership>> {
        let leadership = match &self.lock_delay {
            Some(delay) => match delay.hold("election", hold, wait).await? {
                Some((hold, marker)) => Leadership { hold, marker: Some(marker) },
                None => return Ok(None),
            },
            None => Leadership { hold, marker: None },
        };
        if kv.value != value {
            leadership.proclaim(value).await?;
            // Answered past the session's deadline: no leadership (dropped, released).
            self.session.check()?;
        }
        tracing::debug!(token = leadership.fencing_token(), "elected");
        Ok(Some(leadership))
    }

    /// The current leader, if any (a snapshot: it may change at once).
    ///
    /// # Cancel safety
    /// Cancel-safe: a read; dropping it changes nothing.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>> {
        let (kvs, _) = self.session.client().backend().range_prefix(&self.prefix, 1).await?;
        Ok(kvs.first().map(LeaderInfo::from))
    }

    /// Follows the leader: see [`Observer`].
    pub fn observe(&self) -> Observer {
        Observer::new(self.session.client().clone(), self.prefix.clone())
    }
}

/// Reports every change of an election's leader, including "no leader".
///
/// The first [`changed`](Observer::changed) returns the leader at the time the observer's
/// view synchronised (`None` if there is none); each later call returns the next state that
/// differs from the last one returned: a new leader, a new value [proclaimed](Leadership::proclaim)
/// by the same leader, or `None` when the last candidate went. States are queued, so none
/// is missed between calls.
///
/// The observer runs on the client's live view of the election prefix (no watch of its own).
/// If the watch breaks, the view resynchronises and the observer carries on from the state
/// it finds; it does not stop. Only a permanent store failure makes `changed` fail; the next
/// call then subscribes afresh.
#[derive(Debug)]
pub struct Observer {
    client: Client,
    prefix: String,
    last: Option<Option<LeaderInfo>>,
    sub: Option<Subscription<Option<LeaderInfo>>>,
}

impl Observer {
    pub(crate) fn new(client: Client, prefix: String) -> Self {
        Observer { client, prefix, last: None, sub: None }
    }

    /// Waits for the next leader state (see [`Observer`]).
    ///
    /// # Cancel safety
    /// Cancel-safe: a state is consumed only when this returns it.
    pub async fn changed(&mut self) -> Result<Option<LeaderInfo>> {
        let sub = match &mut self.sub {
            Some(sub) => sub,
            None => {
                let view = self.client.view(&self.prefix);
                self.sub.insert(view.subscribe(self.last.clone(), |v| v.entries().next().map(LeaderInfo::from)))
            }
        };
        match sub.next().await {
            Ok(now) => {
                self.last = Some(now.clone());
                Ok(now)
            }
            Err(e) => {
                self.sub = None;
                Err(e)
            }
        }
    }
}

/// Leadership of an election. Ends by [`resign`](Leadership::resign), in the background
/// on drop, or with the session.
///
/// It owns what it needs (a handle of its session, its key and token): it is `Send + Sync
/// + 'static`, so it can move into a spawned task and outlive the recipe handle that
/// acquired it, like tokio's `Owned*` guards (checked at compile time in `src/lib.rs`).
#[derive(Debug)]
#[must_use = "the leadership is released when this is dropped: bind it (`let guard = ...`) for as long as it must be held"]
pub struct Leadership {
    hold: Holding,
    /// With lock-delay: the marker a clean resign clears.
    marker: Option<String>,
}

impl Leadership {
    held_accessors!(
        token: "The fencing token: strictly greater than every earlier leader's token of this election.",
        key: "The leader key (`<prefix><lease hex>`)."
    );
    fenced_writes!("election", "candidate still leads");

    /// Announces a new value without a new election: a fenced write of the leader key that
    /// keeps its lease. Fails with [`Error::NotHeld`](crate::Error::NotHeld) if this is no longer the leader (its key
    /// is gone, e.g. the lease expired), writing nothing.
    ///
    /// # Cancel safety
    /// A write dropped while in flight may or may not have been applied; it is applied only
    /// while this is still the leadership.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let key = self.hold.key().to_owned();
        let lease = Some(self.hold.session().lease_id());
        self.hold.fenced("election", vec![Write::Put { key, value: value.into(), lease }]).await
    }

    /// Gives leadership up (deleting the key only if it is still this term's), so that the
    /// next candidate is elected. With [lock-delay](Election::with_lock_delay), this is the
    /// clean hand-over: the next leader does not wait (dropping the leadership is not).
    ///
    /// # Cancel safety
    /// Dropping the future does not leave it held: the release goes on in the session's
    /// background cleanup (as for a dropped guard), retried until the key is gone or the
    /// session ends.
    pub async fn resign(self) -> Result<()> {
        match self.marker {
            Some(marker) => self.hold.release_writing(WHAT, vec![Write::Delete { key: marker }]).await,
            None => self.hold.release(WHAT).await,
        }
    }
}
