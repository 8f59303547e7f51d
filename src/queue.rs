//! The one wait engine every recipe uses.
//!
//! Every wait follows **one long-lived watch** per prefix per [`Client`](crate::Client),
//! opened the first time something waits there and shared by all local waiters. Why not a
//! watch per wait, as etcd's own recipe does: etcd puts a watch whose start revision is at
//! or below the current revision into its "unsynced" group, which is caught up every
//! 100 ms; under contention almost every hand-off pays that (see `docs/performance.md`). A
//! watch opened once, before it is needed, never does. There are two kinds:
//!
//! # Queue waiters: the delete feed
//!
//! A queued key is admitted by a [`Rule`] over the keys created before it, all of which
//! the create call read in the same transaction; from then on that set only shrinks. So a
//! queue waiter keeps its own snapshot and needs only deletions: the [`DeleteFeed`]
//! (module `deletes`) is a deletes-only watch (on etcd, filtered at the server), and a
//! release costs one event per waiting client and no extra round trip.
//!
//! # Prefix views
//!
//! A [`PrefixView`] is a live, exact copy of the keys under one prefix, ordered by create
//! revision, for the waits that need puts too: the optimistic [`Retry`] ("the holder is
//! gone") and the election observer. It is opened in the order that loses no event:
//! register the watch (it reports everything after its start revision), read the prefix at
//! some revision `S`, then apply only events newer than `S`. Waiters register a predicate;
//! the view re-evaluates predicates after each applied revision and wakes only the waiters
//! whose predicate now holds.
//!
//! A view proves a fact "at revision V" only once it has applied every event up to V.
//! Predicates therefore see [`View::revision`] and must not decide about a key created at
//! revision M before the view has reached M. If the watch breaks (compaction, a lost
//! connection), the view marks itself unsynced, evaluates nothing, and resynchronises from
//! a fresh watch and read; waiters simply keep waiting.
//!
//! # Cancellation-safe enqueue
//!
//! [`Pending`] runs the create RPC in its own task, so cancelling the caller never leaves
//! an RPC whose outcome nobody knows. If the caller is dropped before it turns the pending
//! key into a guard, the drop waits (in the background) for the RPC and deletes the key
//! if it was created, while still holding the session's local queue for that key.
//!
//! # The flows the recipes share
//!
//! | recipe | key | admission rule (on keys older than the waiter's) |
//! |---|---|---|
//! | `Mutex`, `Election` | `<prefix><lease hex>` | it is the oldest key |
//! | `Semaphore` | `<prefix><lease hex>-<n>` | the weights of the keys up to its own sum to at most N |
//! | `RwLock` | `<prefix>read/…`, `<prefix>write/…` | reader: no older write key; writer: oldest |
//!
//! - [`enqueue`] is the pessimistic (fair) acquisition: create the key, let the head read
//!   in the same call decide, else wait on the delete feed for the rule.
//! - [`Retry`] is the optimistic acquisition's wait: until a view predicate says the
//!   resource may be free, then a jittered pause.
//! - [`PrefixView::subscribe`] reports every distinct value of a function of the view (the
//!   election observer).

use crate::backend::{CreateRequest, CreateResponse, KeyValue, Replaced, Revision};
use crate::backoff::{Backoff, Delays};
use crate::error::{Error, Result};
use crate::guard::Holding;
use crate::local::waiter_queue::Slot;
use crate::Session;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

mod deletes;
mod exclusive;
pub(crate) mod parked;
mod pending;
mod view;
pub(crate) use deletes::DeleteFeed;
pub(crate) use exclusive::{acquire_cas, Cas, CasAttempt, Exclusive, Prepared};
pub(crate) use pending::{claim, create, local_slot, Pending};
pub(crate) use view::{revisions, PrefixView, Subscription, View, WatchTask};

/// Where a queued key stands in a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// The rule admits the key.
    Ready,
    /// The key is still there but must wait.
    Wait,
    /// The key is gone (its lease expired, or someone deleted it).
    Gone,
}

/// Evaluates `rule` for the key `(key, rev)` once the view has reached `rev`.
pub(crate) fn turn(view: &View, key: &str, rev: Revision, rule: &Rule) -> Option<Turn> {
    if view.revision() < rev {
        return None; // the view has not seen our key yet: decide nothing
    }
    match view.get(key) {
        Some(kv) if kv.create_revision == rev => Some(if rule.admits(view, rev) { Turn::Ready } else { Turn::Wait }),
        _ => Some(Turn::Gone),
    }
}

/// A queue recipe's admission rule. Every rule depends only on the keys created before the
/// waiter's own (so the head its create call read decides it whenever that head contains
/// the key, with no further read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rule {
    /// The oldest key: `Mutex`, `Election`, an `RwLock` writer.
    First,
    /// The weights of the keys created up to this one (its own included) sum to at most
    /// `n`: `Semaphore`, whose key's value is its weight (see [`weight_of`]). Monotone in
    /// deletions (a deletion only lowers the sum), and FIFO: a heavy key at the head is not
    /// passed by later light ones. With every weight 1 this is "among the `n` oldest keys";
    /// since every weight is at least 1, a key it admits is among the first `n`, so a head
    /// of `n` keys decides it (what a try reads).
    Weighted(u64),
    /// No older key starts with this prefix: an `RwLock` reader (no writer ahead).
    NoOlderUnder(String),
    /// Never: the key is already held, and only its deletion matters (a guard's
    /// [`lost`](crate::MutexGuard::lost) follows its own key this way).
    Held,
}

impl Rule {
    /// Whether the key created at `rev` is admitted in `view`.
    pub(crate) fn admits(&self, view: &View, rev: Revision) -> bool {
        match self {
            Rule::First => view.entries().next().is_some_and(|kv| kv.create_revision == rev),
            Rule::Weighted(n) => {
                let mut sum = 0u64;
                for kv in view.entries() {
                    #[cfg(not(leasehold_permits_mutation_unweighted))]
                    let weight = weight_of(&kv.value);
                    // Planted bug (see scripts/test.sh): the rule counts every key as 1.
                    #[cfg(leasehold_permits_mutation_unweighted)]
                    let weight = 1;
                    sum = sum.saturating_add(weight);
                    if sum > *n {
                        return false;
                    }
                    if kv.create_revision == rev {
                        return true;
                    }
                }
                false
            }
            Rule::NoOlderUnder(p) => {
                !view.entries().take_while(|kv| kv.create_revision < rev).any(|kv| kv.key.starts_with(p))
            }
            Rule::Held => false,
        }
    }
}

/// The weight of a semaphore key whose value is `value`: the permits it holds or waits for.
/// An empty value (every key of a single-permit acquisition, and every key written before
/// weights existed) weighs 1; a decimal count weighs that count; anything else (no version
/// writes it) weighs as much as any count, so it admits nobody behind it.
pub(crate) fn weight_of(value: &[u8]) -> u64 {
    if value.is_empty() {
        return 1;
    }
    std::str::from_utf8(value).ok().and_then(|s| s.parse::<u64>().ok()).filter(|&w| w > 0).unwrap_or(u64::MAX)
}

/// How long an acquisition may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Not at all: a try.
    No,
    /// Until this instant.
    Until(Instant),
    /// Until admitted (or the session is lost).
    Forever,
}

impl Wait {
    /// At most `timeout` from now.
    pub(crate) fn at_most(timeout: Duration) -> Self {
        // A timeout past what the clock can count is no limit at all.
        Instant::now().checked_add(timeout).map_or(Wait::Forever, Wait::Until)
    }
}

/// Runs `fut`, giving up (None) at the deadline of `wait` (`Wait::No` callers only pass
/// futures that do not wait).
pub(crate) async fn with_deadline<T>(wait: Wait, fut: impl Future<Output = T>) -> Option<T> {
    match wait {
        Wait::Forever => Some(fut.await),
        Wait::Until(at) => tokio::time::timeout_at(at, fut).await.ok(),
        Wait::No => Some(fut.await),
    }
}

/// Waits until `pred` returns `Some` on the live view of `prefix`. Fails with `SessionLost`
/// or `SessionClosed` if the session ends first.
pub(crate) async fn wait_view<R: Send + 'static>(
    session: &Session,
    prefix: &str,
    pred: impl FnMut(&View) -> Option<R> + Send + 'static,
) -> Result<R> {
    let view = session.client().view(prefix);
    let ended = session.ended();
    // Biased, here and in every `select!` of the library: the order never depends on a
    // random draw, so a simulation replays exactly from its seed.
    tokio::select! {
        biased;
        _ = ended => Err(session.ended_error()),
        r = view.wait_for(pred) => r,
    }
}

/// Waits for the key `(key, rev)` to be admitted by `rule`, starting from `head` (a read of
/// the whole prefix at or after `rev`) and following the prefix's [`DeleteFeed`]. Fails
/// with the session's ended error if it ends meanwhile, and with `NotHeld` if the key is
/// deleted (revoked) while the session lives ([`Session::gone_error`]). Returns the
/// revision of the deletion that admitted it.
///
/// Why not wait herd-free for the one key ahead, as ZooKeeper's lock recipe does: on etcd
/// that needs a new watch per wait, and a watch created while writes are in flight can land
/// in etcd's "unsynced" group and wait up to 100 ms (measured: the hand-off rate halved and
/// p99 went to ~100 ms). Registering those watches without a start revision on one
/// long-lived multiplexed stream did not help: their delete events still came 87–98 ms
/// late in bursts (625–766 hand-offs/s at 16 clients against the feed's 1,113; see
/// `docs/performance.md`): etcd's watch server turns "no start revision" into the current
/// revision + 1 before it registers the watcher, and a write landing in between sends the
/// watcher to the 100 ms catch-up all the same. One long-lived feed per prefix per client
/// never waits so; its cost is one event per deletion per client that waits on the prefix.
///
/// `register`: the key of the register whose lock this is, to follow the register's feed
/// (which also brings its values; see [`DeleteFeed::open_register`]).
pub(crate) async fn wait_turn(
    session: &Session,
    prefix: &str,
    key: &str,
    rev: Revision,
    head: View,
    rule: Rule,
    register: Option<&str>,
) -> Result<Revision> {
    let feed = match register {
        Some(register) => session.client().register_feed(prefix, register),
        None => session.client().delete_feed(prefix),
    };
    let ended = session.ended();
    let t = tokio::select! {
        biased;
        _ = ended => return Err(session.ended_error()),
        r = feed.wait_turn(head, key, rev, rule) => r?,
    };
    match t {
        (Turn::Ready, at) => Ok(at),
        // Its key went: with the lease, or deleted (revoked) while the session lives.
        _ => Err(session.gone_error("queue", key).await),
    }
}

/// A view predicate: the key `(key, rev)` that was seen is gone (deleted, or re-created with
/// another revision). The optimistic strategy's "the holder went".
pub(crate) fn gone(key: &str, rev: Revision) -> impl FnMut(&View) -> bool + Send + 'static {
    let key = key.to_owned();
    move |v| v.revision() >= rev && v.get(&key).is_none_or(|kv| kv.create_revision != rev)
}

/// One key to enqueue with [`enqueue`].
pub(crate) struct Ticket {
    /// The subsystem, for errors.
    pub(crate) what: &'static str,
    /// The create call (key, value, lease, prefix and how much of its head to read).
    pub(crate) req: CreateRequest,
    /// The session's local queue slot, for recipes whose key is one per session; released
    /// only once the key is gone or handed to the guard.
    pub(crate) local: Option<Slot>,
    /// What to do if the key already exists under this session's lease: take it over (a
    /// re-attached session reclaims its mutex), or leave it alone and return
    /// [`Admission::KeyTaken`] (recipes with one key per acquisition pick another key).
    pub(crate) adopt: bool,
    /// A guard this acquisition replaces (a mutex relock): its key is deleted in the create
    /// call's transaction. If that call fails, or the acquisition is cancelled before its
    /// answer, the guard is dropped and so released in the background as usual.
    pub(crate) replaces: Option<Holding>,
    /// A check of the create call's answer, before any wait: an error deletes the key again
    /// and fails the acquisition with it (a semaphore checks the permit count it read in
    /// the same transaction).
    pub(crate) check: Option<CreateCheck>,
    /// The key of the register whose lock this is: its waiter follows the register's feed,
    /// which also brings the register's values ([`DeleteFeed::open_register`]); any other
    /// waiter follows the prefix's deletes-only feed. (It was taken from the create's
    /// `read`, so a semaphore, which reads its count key there, followed a register's
    /// feed: an event per new waiter's key and per count write, to every waiting client.)
    pub(crate) register: Option<String>,
}

/// See [`Ticket::check`].
pub(crate) type CreateCheck = Box<dyn Fn(&CreateResponse) -> Result<()> + Send + Sync>;

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("what", &self.what).field("key", &self.req.key).finish_non_exhaustive()
    }
}

/// The outcome of [`enqueue`].
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // returned once per acquisition and taken apart at once
pub(crate) enum Admission {
    /// Admitted. The key as the create call saw it (an adopted key keeps its old value),
    /// and when it was admitted.
    Held(Holding, KeyValue, Admitted),
    /// A try that was not admitted at once, or a deadline that passed; the key is gone.
    NotAdmitted,
    /// The key already existed under this session's lease and `adopt` was false; nothing
    /// was written or deleted.
    KeyTaken,
}

/// When an [`enqueue`] was admitted, and what its create call read besides.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The revision from which the key holds: the create call's when admitted at once,
    /// otherwise that of the deletion that admitted it.
    pub(crate) at: Revision,
    /// [`CreateRequest::read`] as of `at`, when the key was admitted at once (`None` if it
    /// waited: the create call's read is older than its admission).
    pub(crate) read: Option<Option<KeyValue>>,
    /// How long it waited, for how many keys ahead (`None` if admitted at once).
    pub(crate) waited: Option<Waited>,
}

/// A queued key's wait from its create call's answer to its admission: `took` for the
/// `ahead` keys created before it that were in the queue then. `took /
/// ahead` is the queue's time per hand-off as this waiter saw it (the adaptive register
/// weighs it, `src/adaptive.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Waited {
    pub(crate) ahead: u32,
    pub(crate) took: std::time::Duration,
}

impl Waited {
    /// Starts timing a wait behind the keys of `head` created before `rev`.
    pub(crate) fn start(head: &View, rev: Revision) -> (u32, tokio::time::Instant) {
        let ahead = head.entries().take_while(|kv| kv.create_revision < rev).count();
        (u32::try_from(ahead).unwrap_or(u32::MAX), tokio::time::Instant::now())
    }

    /// The wait started by [`start`](Self::start), ended now.
    pub(crate) fn end((ahead, at): (u32, tokio::time::Instant)) -> Self {
        Self { ahead, took: at.elapsed() }
    }
}

/// The pessimistic (queued, fair) acquisition every queue recipe runs: create the key under
/// the session's lease through [`Pending`] (cancellation-safe), and unless `rule` admits it
/// at once, wait on the prefix's delete feed until it does. A try (`Wait::No`) or a deadline
/// that passes deletes the key again and returns [`Admission::NotAdmitted`].
///
/// A [`Rule`] depends only on the keys created before the waiter's: the head the create call
/// read (the whole prefix, when the caller may wait) decides it at once, and deletions are
/// all that can change it afterwards.
pub(crate) async fn enqueue(session: &Session, ticket: Ticket, wait: Wait, rule: Rule) -> Result<Admission> {
    let Ticket { what, mut req, local, adopt, replaces, check, register } = ticket;
    if wait != Wait::No {
        // A waiter follows only deletions from here on, so it needs every key ahead of it.
        req.head_limit = 0;
    }
    if let Some(old) = &replaces {
        req.replaces = Some(Replaced { key: old.key().to_owned(), revision: Some(old.revision()) });
    }
    let (key, prefix) = (req.key.clone(), req.prefix.clone());
    let Some((pending, resp)) = create(session, req, local, replaces, wait).await? else {
        return Ok(Admission::NotAdmitted); // its key was being deleted, and `wait` ran out
    };
    let Some(mine) = resp.mine.clone().filter(|kv| kv.lease == session.lease_id()) else {
        return Err(Error::Store(format!("{what}: {key} exists under another lease").into()));
    };
    if !resp.created && !adopt {
        drop(pending.leave()); // not this acquisition's key: leave it
        return Ok(Admission::KeyTaken);
    }
    if let Some(check) = check {
        if let Err(e) = check(&resp) {
            pending.abandon().await?;
            return Err(e);
        }
    }
    let rev = mine.create_revision;
    let head = View::snapshot(resp.head, resp.revision);
    let waited = turn(&head, &key, rev, &rule) != Some(Turn::Ready);
    let admitted = if waited {
        if wait == Wait::No {
            pending.abandon().await?;
            return Ok(Admission::NotAdmitted);
        }
        let started = Waited::start(&head, rev);
        match with_deadline(wait, wait_turn(session, &prefix, &key, rev, head, rule, register.as_deref())).await {
            Some(at) => Admitted { at: at?, read: None, waited: Some(Waited::end(started)) },
            None => {
                pending.abandon().await?;
                return Ok(Admission::NotAdmitted);
            }
        }
    } else {
        Admitted { at: resp.revision, read: Some(resp.read), waited: None }
    };
    Ok(Admission::Held(pending.into_holding(rev)?.contended(waited), mine, admitted))
}

/// The waiting half of an optimistic (compare-and-swap) acquisition. After an attempt that
/// found the resource busy, [`Retry::after`] waits until the live view says it may be free
/// and then a jittered pause from the recipe's [`Backoff`], so that waiters woken by the
/// same release do not all retry at once. Not fair: nobody keeps a place in a queue.
#[derive(Debug)]
pub(crate) struct Retry {
    wait: Wait,
    cap: Duration,
    delays: Delays,
}

impl Retry {
    pub(crate) fn new(wait: Wait, backoff: &Backoff) -> Self {
        Self { wait, cap: backoff.cap, delays: backoff.delays() }
    }

    /// Waits until `free` holds on the live view of `prefix`, then pauses. False when the
    /// caller must give up instead: a try, or the deadline passed.
    pub(crate) async fn after(
        &mut self,
        session: &Session,
        prefix: &str,
        mut free: impl FnMut(&View) -> bool + Send + 'static,
    ) -> Result<bool> {
        if self.wait == Wait::No {
            return Ok(false);
        }
        let pause = self.delays.next().unwrap_or(self.cap);
        let waited = async {
            wait_view(session, prefix, move |v| free(v).then_some(())).await?;
            tokio::time::sleep(pause).await;
            Ok::<(), Error>(())
        };
        match with_deadline(self.wait, waited).await {
            Some(r) => r.map(|()| true),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Precondition;

    fn kv(key: &str, rev: Revision, value: &str) -> KeyValue {
        KeyValue { key: key.into(), value: value.into(), create_revision: rev, mod_revision: rev, lease: 1 }
    }

    /// The weighted rule is a prefix sum of weights (empty = 1), FIFO, and a key whose
    /// value is not a weight admits nobody from it on.
    #[test]
    fn weighted_rule_is_a_prefix_sum() {
        let view = View::snapshot(vec![kv("a", 1, ""), kv("b", 2, "3"), kv("c", 3, ""), kv("d", 4, "x")], 4);
        let admitted = |n| (1..=4).filter(|&r| Rule::Weighted(n).admits(&view, r)).collect::<Vec<_>>();
        assert_eq!(admitted(3), [1], "b needs 1 + 3");
        assert_eq!(admitted(4), [1, 2], "c may not pass b");
        assert_eq!(admitted(5), [1, 2, 3]);
        assert_eq!(admitted(u32::MAX.into()), [1, 2, 3], "d weighs more than any count");
        assert!(!Rule::Weighted(4).admits(&view, 9), "a key not in the view");
    }

    /// A create request under `p/` (also used by the delete feed's tests).
    pub(crate) fn put(key: &str, lease: i64) -> CreateRequest {
        CreateRequest {
            key: key.into(),
            value: Vec::new(),
            lease,
            precondition: Precondition::KeyAbsent,
            prefix: "p/".into(),
            head_limit: 0,
            replaces: None,
            read: None,
            fence: None,
        }
    }
}
