//! A leader loop: campaign, run the leader's work, and campaign again — on a new session
//! after one is lost — for as long as it runs, with a watch channel that says whether this
//! process leads. Curator's `LeaderSelector` with auto-requeue, client-go's leader
//! election callbacks and kube-lease-manager do the same for their stores.

use crate::backoff::Backoff;
use crate::election::{Election, Leadership};
use crate::error::{Error, Result};
use crate::strategy::Strategy;
use crate::{Client, DEFAULT_TTL};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Keeps campaigning for an election and runs the leader's work whenever this process
/// leads (see [`run`](LeaderLoop::run)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
/// use leasehold::{Client, LeaderLoop};
/// let client = Client::memory();
/// let scheduler = LeaderLoop::new(&client, "scheduler", "node-a")?;
/// let mut leading = scheduler.leading();
/// let looping = scheduler.run(|leader| async move {
///     // The leader's work, fenced by the leadership's token; here it runs until stopped.
///     leader.fenced_put("jobs/owner", "node-a").await?;
///     std::future::pending::<()>().await;
///     Ok::<_, leasehold::Error>(())
/// });
/// tokio::select! {
///     r = looping => { r?; }
///     _ = leading.wait_for(|&leads| leads) => {}
/// }
/// // Dropping the loop's future (here, by the select) stops it: what it held is released,
/// // and `leading` says so right after.
/// leading.wait_for(|&leads| !leads).await.expect("the loop's handle lives");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LeaderLoop {
    client: Client,
    name: String,
    value: Vec<u8>,
    ttl: Duration,
    lock_delay: Duration,
    strategy: Strategy,
    retry: Backoff,
    leading: watch::Sender<bool>,
    /// Counts the times it led (see `Leading`).
    generations: Arc<AtomicU64>,
    /// Whether a [`run`](LeaderLoop::run) is running (one at a time; see `Running`).
    running: AtomicBool,
}

impl LeaderLoop {
    /// A loop campaigning for `name` with `value` (what [`Client::leader`] shows), on
    /// sessions of the default TTL. Fails for an invalid name.
    pub fn new(client: &Client, name: &str, value: impl Into<Vec<u8>>) -> Result<Self> {
        client.prefix_of(name)?;
        Ok(Self {
            client: client.clone(),
            name: name.to_owned(),
            value: value.into(),
            ttl: DEFAULT_TTL,
            lock_delay: Duration::ZERO,
            strategy: Strategy::Pessimistic,
            retry: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            leading: watch::Sender::new(false),
            generations: Arc::default(),
            running: AtomicBool::new(false),
        })
    }

    /// The TTL of the sessions it opens (checked when one is opened).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The lock-delay of its campaigns (see [`Election::with_lock_delay`]).
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = delay;
        self
    }

    /// How it campaigns (see [`Election::with_strategy`]): queued by default; optimistic
    /// candidates write nothing while another leads.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// How long it waits before trying again after the store could not be reached (to
    /// open a session or campaign); by default 100 ms growing to 5 s, without end.
    pub fn retry(mut self, retry: Backoff) -> Self {
        self.retry = retry;
        self
    }

    /// Whether this process leads, as a watch channel: `true` from the moment a campaign
    /// wins until the work is stopped or returns (the loop has then resigned, or the
    /// session is lost). Like [`Session::status`](crate::Session::status), a view for
    /// monitoring and for winding down: the work itself should rely on the fencing token
    /// of the [`Leadership`] it is given.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Campaigns and runs `work` with the [`Leadership`] each time it wins, for as long as
    /// the future is polled:
    /// - when `work`'s future completes, the leadership is resigned and the loop campaigns
    ///   again, at the back of the queue: candidates already waiting lead first;
    /// - when the session is lost while it runs, `work`'s future is dropped at the await it
    ///   is at (a deposed leader stops), and the loop campaigns again on a new session;
    /// - when its leadership's key is revoked by an operator
    ///   ([`Client::revoke`](crate::Client::revoke)) while the session lives, `work`'s future
    ///   is dropped likewise and the loop campaigns again on the same session (on a new
    ///   one if `work` kept a clone of the leadership, see below); so it does, after the
    ///   retry policy's delay, when the key of its waiting campaign is revoked;
    /// - when the store cannot be reached, it tries again after the [`retry`](Self::retry)
    ///   policy's delays, without end.
    ///
    /// `work` gets the leadership as an `Arc`, so its future owns what it uses and can be
    /// `Send` (the loop can run in a spawned task). It should not keep a clone past its
    /// end: the leadership can be resigned only once the last one is gone. (If one is kept,
    /// the loop leaves that leadership to it, released when the clone is dropped, and
    /// campaigns on a new session, queued behind it.)
    ///
    /// It returns only with an error that retrying cannot fix (authentication, a TTL out
    /// of range); its `Ok` type is `Infallible`.
    ///
    /// # Concurrent calls
    /// One `run` at a time per `LeaderLoop`: a call made while another one's future is
    /// alive (polled at least once and not yet dropped or returned) fails at once with
    /// [`Error::InvalidArgument`] (`what: "leader loop"`), campaigning for nothing and
    /// leaving the running one alone. Two runs would be two candidates of this process
    /// sharing one [`leading`](Self::leading) channel, which could then say `false` while
    /// one of them leads (the other's work ending after it was deposed). For two candidates,
    /// make two `LeaderLoop`s. Once the running call returns or is dropped, `run` may be
    /// called again.
    ///
    /// # Cancel safety
    /// Dropping the future stops the loop: `work`'s future is dropped at the await it is
    /// at, the leadership is released in the background (as for a dropped guard), the
    /// session is closed with its last handle, and [`leading`](Self::leading) says `false`.
    pub async fn run<T, F, Fut>(&self, mut work: F) -> Result<Infallible>
    where
        F: FnMut(Arc<Leadership>) -> Fut,
        Fut: Future<Output = T>,
    {
        let _running = Running::claim(&self.running)?;
        let mut delays = self.retry.delays();
        loop {
            let session = match self.client.session_builder().ttl(self.ttl).open().await {
                Ok(s) => s,
                Err(e) if e.is_transient() => {
                    tracing::debug!(name = %self.name, error = %e, "leader loop: no session; trying again");
                    tokio::time::sleep(delays.next().unwrap_or(self.retry.cap)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let election =
                Election::new(&session, &self.name)?.with_lock_delay(self.lock_delay).with_strategy(self.strategy);
            // Campaign on this session until it ends.
            loop {
                let leadership = match election.campaign(self.value.clone()).await {
                    Ok(l) => Arc::new(l),
                    Err(e) if e.is_transient() => {
                        tokio::time::sleep(delays.next().unwrap_or(self.retry.cap)).await;
                        continue;
                    }
                    Err(Error::SessionLost { .. } | Error::SessionClosed { .. } | Error::LeaseNotFound { .. }) => {
                        break;
                    }
                    // Its waiting key was revoked while the session lives: campaign again
                    // on it, as after a revoked leadership.
                    Err(Error::NotHeld { .. }) if session.is_valid() => {
                        tracing::warn!(name = %self.name, "leader loop: campaign revoked; campaigning again");
                        tokio::time::sleep(delays.next().unwrap_or(self.retry.cap)).await;
                        continue;
                    }
                    // Revoked as the session was lost meanwhile: a new session.
                    Err(Error::NotHeld { .. }) => break,
                    Err(e) => return Err(e),
                };
                delays = self.retry.delays();
                let lost = leadership.lost();
                let leads = Leading::new(&self.leading, &self.generations);
                let done = tokio::select! {
                    biased;
                    _ = lost => false,
                    _ = work(leadership.clone()) => true,
                };
                leads.end();
                if !done && session.is_valid() && Arc::strong_count(&leadership) == 1 {
                    // Its key was revoked while the session lives: campaign again on it.
                    tracing::warn!(name = %self.name, "leader loop: leadership revoked; campaigning again");
                    continue;
                }
                if !done && session.is_valid() {
                    // Revoked, but the work kept a clone, which keeps the session's one
                    // place for the key: a campaign on this session would wait for it.
                    // (Until 2026-12-05 it did, and the loop hung until the clone went.)
                    tracing::warn!(
                        name = %self.name,
                        "leader loop: leadership revoked and kept by the work; campaigning on a new session"
                    );
                    break;
                }
                if !done {
                    tracing::info!(name = %self.name, "leader loop: session lost while leading; a new session");
                    break; // the leadership goes with the lost lease
                }
                let Some(leadership) = Arc::into_inner(leadership) else {
                    tracing::warn!(name = %self.name, "leader loop: the work kept its leadership; campaigning on a new session");
                    break;
                };
                if let Err(e) = leadership.resign().await {
                    tracing::warn!(name = %self.name, error = %e, "leader loop: resign failed; the lease frees the key");
                }
                if !session.is_valid() {
                    break;
                }
            }
        }
    }
}

/// A running [`LeaderLoop::run`]: claims the loop's `running` flag, and clears it when the
/// call returns or its future is dropped.
struct Running<'a>(&'a AtomicBool);

impl<'a> Running<'a> {
    fn claim(running: &'a AtomicBool) -> Result<Self> {
        if running.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
            let reason =
                "run is already running on this LeaderLoop (one run at a time; make a LeaderLoop per candidate)";
            return Err(Error::invalid("leader loop", reason));
        }
        Ok(Self(running))
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Says `true` on the loop's channel while alive, `false` when it ends: at once when the
/// work stops ([`end`](Leading::end)), and, when the loop's future is dropped while the
/// work runs, from a task of the runtime (a send takes the channel's write lock, and the
/// code dropping the loop may hold a read guard of that very channel — as a `select!` on
/// `leading().wait_for(..)` does — so sending from `drop` could deadlock). A stale `false`
/// never overwrites a later `true`: each `Leading` has a generation.
struct Leading {
    tx: watch::Sender<bool>,
    generations: Arc<AtomicU64>,
    generation: u64,
    ended: bool,
}

impl Leading {
    fn new(tx: &watch::Sender<bool>, generations: &Arc<AtomicU64>) -> Self {
        let generation = generations.fetch_add(1, Ordering::AcqRel) + 1;
        tx.send_replace(true);
        Self { tx: tx.clone(), generations: generations.clone(), generation, ended: false }
    }

    /// The work stopped (returned, or its session was lost): `false` now.
    fn end(mut self) {
        self.ended = true;
        self.tx.send_replace(false);
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let (tx, generations, generation) = (self.tx.clone(), self.generations.clone(), self.generation);
        let send = move || {
            tx.send_if_modified(|leads| {
                let stale = generations.load(Ordering::Acquire) != generation;
                !stale && std::mem::replace(leads, false)
            });
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move { send() })),
            Err(_) => send(), // no runtime: nobody can be polling a receiver here either
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    /// Polls `fut` once.
    async fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
    }

    /// A second `run` while one runs is refused at once (a typed error), and leaves the
    /// running one leading; once that one is dropped, `run` is accepted again.
    #[tokio::test]
    async fn a_concurrent_run_is_refused() {
        let client = Client::memory();
        let leader = LeaderLoop::new(&client, "solo", "a").unwrap();
        let mut leading = leader.leading();
        let mut first = Box::pin(leader.run(|_| std::future::pending::<()>()));
        tokio::select! {
            r = &mut first => panic!("the loop ended: {r:?}"),
            _ = leading.wait_for(|&leads| leads) => {}
        }
        let second = poll_once(leader.run(|_| async {})).await;
        assert!(
            matches!(second, Poll::Ready(Err(Error::InvalidArgument { what: "leader loop", .. }))),
            "a second run was not refused: {second:?}"
        );
        assert!(*leading.borrow(), "the running loop still leads");
        assert_eq!(client.entries("solo").await.unwrap().len(), 1, "the second run left a candidate");

        drop(first);
        leading.wait_for(|&leads| !leads).await.unwrap();
        let again = leader.run(|_| std::future::pending::<()>());
        tokio::select! {
            r = again => panic!("the loop ended: {r:?}"),
            _ = leading.wait_for(|&leads| leads) => {}
        }
    }
}
