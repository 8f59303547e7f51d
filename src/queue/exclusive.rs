//! One session's place in the one-holder queue of a name: the two keys it alternates
//! between, the queued acquisition, and the requeue made in a write's transaction.
//!
//! The [`Mutex`](crate::Mutex)'s queued strategy and relock and the
//! [`Register`](crate::Register)'s queued updates run on it, so the two recipes share the
//! keys and queue of a name (a register `stock` and a mutex `stock` exclude each other)
//! without either reaching into the other.
//!
//! Keys follow etcd's Go `concurrency.Mutex`: `<namespace><name>/<lease id in hex>`, the
//! holder being the oldest key ([`Rule::First`]). A session has a second key for the name,
//! `<key>-r` ([`Exclusive::relock_key`]): a relock, or a register update that keeps its
//! place, queues with the key it does not hold, because etcd cannot delete and create one
//! key in one transaction.

use super::{claim, create, enqueue, gone, local_slot, Admission, Admitted, Pending, Retry, Rule, Ticket, Wait};
use crate::backend::{Condition, CreateRequest, KeyValue, Precondition, Replaced, Revision, Write};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::guard::Holding;
use crate::local::waiter_queue::Slot;
use crate::Session;

/// A session's keys in the queue of one name, and the queue operations on them.
#[derive(Debug, Clone)]
pub(crate) struct Exclusive {
    session: Session,
    prefix: String,
    key: String,
}

/// What [`Exclusive::prepare`] gives an acquisition: the session's local slot for the key,
/// and a re-attached lease's relock key for its create to delete in the same step.
pub(crate) type Prepared = (Slot, Option<Replaced>);

/// A re-attached lease's relock key that an acquisition took over from the session's
/// leftovers ([`Exclusive::prepare`]) for its create to delete. If the acquisition ends
/// without holding — failed, timed out or dropped, before its create landed or after —
/// the key is deleted in the background by its create revision, which does nothing once
/// a create deleted it; one that holds says so ([`landed`](StaleKey::landed)). (Before, an acquisition dropped between the take-over and its create
/// left the key to nobody: the session's next key queued behind its own leftover, and so
/// did everyone else, until the session's audit deleted the key one TTL later.)
#[derive(Debug)]
pub(crate) struct StaleKey {
    session: Session,
    key: Option<String>,
    revision: Option<Revision>,
}

impl StaleKey {
    fn none(session: &Session) -> Self {
        Self { session: session.clone(), key: None, revision: None }
    }

    /// The acquisition holds: a create of it landed, and deleted the key in the same step
    /// (a create deletes what it replaces whether or not its own precondition held).
    pub(crate) fn landed(mut self) {
        self.key = None;
    }
}

impl Drop for StaleKey {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.session.delete_leftover_in_background(key, self.revision);
        }
    }
}

/// A place queued in the same transaction as a write: the new key, pending until someone
/// keeps it (see [`Exclusive::write_and_requeue`]).
pub(crate) type Requeued = (Pending, String);

impl Exclusive {
    /// The queue of `name` for `session`. Fails for an invalid name.
    pub(crate) fn new(session: &Session, name: &str) -> Result<Self> {
        let prefix = session.client().prefix_of(name)?;
        let key = format!("{prefix}{:x}", session.lease_id());
        Ok(Self { session: session.clone(), prefix, key })
    }

    /// The prefix of the queue's keys (`<namespace><name>/`).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The session's key for the name.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The session's second key for the name, `<key>-r`. (Lease ids are hex, so no other
    /// session's key can look like it.)
    pub(crate) fn relock_key(&self) -> String {
        format!("{}-r", self.key)
    }

    /// The session's key that `held` is not: where the next acquisition queues while `held`
    /// is still held.
    pub(crate) fn other_key(&self, held: &str) -> String {
        if held == self.key {
            self.relock_key()
        } else {
            self.key.clone()
        }
    }

    /// A create of the session's key under its lease, reading the head of the queue.
    pub(crate) fn request(&self, precondition: Precondition, replaces: Option<Replaced>) -> CreateRequest {
        CreateRequest {
            key: self.key.clone(),
            value: Vec::new(),
            lease: self.session.lease_id(),
            precondition,
            prefix: self.prefix.clone(),
            head_limit: 1,
            replaces,
            read: None,
            fence: None,
        }
    }

    /// What every acquisition of the name does first: waits for the session's local slot
    /// for the key (one acquisition per key per session at a time; `None` if `wait` ran
    /// out), and takes over a re-attached lease's relock key for the name (its other key,
    /// if a leftover, is taken over by the create that adopts it). The second value is
    /// that relock key as a key the create deletes in the same step:
    /// its earlier process may have held the lock with it, and the new key would
    /// otherwise queue behind it. By its revision, read now: a delete of "whatever it is"
    /// could land late, after a relock of this session made the key anew and holds with
    /// it.
    pub(crate) async fn prepare(&self, wait: Wait) -> Result<Option<(Prepared, StaleKey)>> {
        let Some(local) = local_slot(&self.session, &self.key, wait).await? else { return Ok(None) };
        // The session's own key, if a leftover, is taken over by the create that adopts it.
        let key = self.relock_key();
        #[cfg(not(leasehold_leftover_mutation_early))]
        let taken = self.session.take_leftover_key(&key);
        #[cfg(leasehold_leftover_mutation_early)]
        let taken = self.session.take_leftover_key(&key) | self.session.take_leftover_key(&self.key);
        if !taken {
            return Ok(Some(((local, None), StaleKey::none(&self.session))));
        }
        // From here the key is this acquisition's to delete, whenever it ends.
        #[cfg(not(leasehold_leftover_mutation_kept))]
        let mut stale_key = StaleKey { session: self.session.clone(), key: Some(key.clone()), revision: None };
        #[cfg(leasehold_leftover_mutation_kept)]
        let mut stale_key = StaleKey::none(&self.session);
        let backend = self.session.client().backend();
        let kv = Backoff::default().retry(|| backend.get(&key)).await?;
        let stale = kv
            .filter(|kv| kv.lease == self.session.lease_id())
            .map(|kv| Replaced { key, revision: Some(kv.create_revision) });
        match &stale {
            Some(replaced) => stale_key.revision = replaced.revision,
            None => stale_key.key = None, // gone, or not this lease's: nothing to delete
        }
        Ok(Some(((local, stale), stale_key)))
    }

    /// The queued (fair) acquisition with the slot and stale key [`prepare`](Self::prepare)
    /// gave, reading `read` in the create's transaction (a register's value). `what` names
    /// the recipe in errors.
    pub(crate) async fn queued(
        &self,
        what: &'static str,
        wait: Wait,
        (local, stale): Prepared,
        read: Option<&str>,
    ) -> Result<Option<(Holding, Admitted)>> {
        let ticket = Ticket {
            what,
            req: CreateRequest { read: read.map(str::to_owned), ..self.request(Precondition::KeyAbsent, stale) },
            local: Some(local),
            adopt: true,
            replaces: None,
            check: None,
            register: read.map(str::to_owned),
        };
        match enqueue(&self.session, ticket, wait, Rule::First).await? {
            Admission::Held(hold, _, admitted) => Ok(Some((hold, admitted))),
            Admission::NotAdmitted => Ok(None),
            Admission::KeyTaken => unreachable!("adopt is set"),
        }
    }

    /// Waits in the queue until the lock is held, reading `read` while queueing (a queued
    /// register update): when it was admitted and, if at once, what the read found.
    ///
    /// # Cancel safety
    /// As [`enqueue`]: a dropped call leaves no key behind.
    pub(crate) async fn lock_reading(&self, what: &'static str, read: &str) -> Result<(Holding, Admitted)> {
        self.session.check()?;
        let (prepared, stale_key) = self.prepare(Wait::Forever).await?.expect("waits until the slot is free");
        let held = self.queued(what, Wait::Forever, prepared, Some(read)).await?;
        stale_key.landed();
        Ok(held.expect("waits until held"))
    }

    /// Applies `writes` if `hold` still holds and `conditions` hold, releases `hold` and, in
    /// the same transaction, queues this session for the lock again with its other key (as
    /// a relock does): a register update that keeps its handle's place for the next one
    /// ([`parked`](super::parked)).
    ///
    /// `Ok(None)`: a condition failed, nothing was written, and `hold` still holds if it
    /// did. `Ok(Some((rev, place)))`: written at `rev` and `hold` released; `place` is the
    /// new key, or `None` when the other key still had a delete pending, so only the write
    /// and the release were made. An error leaves the outcome unknown: `hold` is left
    /// released, and both its key and the new one, if they exist, are deleted in the
    /// background.
    ///
    /// # Cancel safety
    /// As an error: both keys are deleted in the background if the outcome is not known.
    pub(crate) async fn write_and_requeue(
        &self,
        hold: &mut Holding,
        conditions: &[Condition],
        mut writes: Vec<Write>,
    ) -> Result<Option<(Revision, Option<Requeued>)>> {
        if !hold.is_valid() {
            return Err(Error::NotHeld { what: "mutex", reason: "already released".into() });
        }
        let (old, rev) = (hold.key().to_owned(), hold.revision());
        let key = self.other_key(&old);
        let Some(owned) = claim(&self.session, &key) else {
            // The other key is being deleted: no place can be kept with it.
            return Ok(hold.write_and_release(conditions, writes).await?.map(|rev| (rev, None)));
        };
        // Room for the session fence's condition too (`Pending::write` adds it).
        let mut all = Vec::with_capacity(3 + conditions.len());
        all.push(Condition::Created { key: old.clone(), revision: rev });
        all.push(Condition::Modified { key: key.clone(), revision: None });
        all.extend_from_slice(conditions);
        writes.push(Write::Delete { key: old });
        writes.push(Write::Put { key: key.clone(), value: Vec::new(), lease: Some(self.session.lease_id()) });
        // The old hold goes with the transaction (see `Pending`); until its outcome is known
        // `hold` is a released copy.
        let local = hold.take_local();
        let placeholder = hold.released_copy();
        let old_hold = std::mem::replace(hold, placeholder);
        let mut pending = Pending::write(&self.session, key.clone(), all, writes, local, Some(old_hold), owned);
        let resp = pending.response().await?;
        match resp.mine {
            Some(kv) if resp.created => Ok(Some((kv.create_revision, Some((pending, key))))),
            _ => {
                // A condition failed: nothing was written, and `hold` holds as before.
                let mut old = pending.take_replaced().expect("kept when nothing was written");
                old.restore_local(pending.leave());
                *hold = old;
                Ok(None)
            }
        }
    }
}

/// What an optimistic acquisition ([`acquire_cas`]) came to.
#[derive(Debug)]
pub(crate) enum Cas {
    /// Held: the holding (contended if it met a holder) and the key as the create call saw
    /// it (a key this session already had, a re-attached lease's, keeps its old value).
    Held(Holding, KeyValue),
    /// `wait` ran out: a try that found the resource taken, or a deadline. No key left.
    NotHeld,
    /// The key already existed under this session's lease and `adopt` was false: nothing
    /// was written (the caller picks another key).
    KeyTaken,
    /// The caller must queue instead: it met a holder and was asked to give way rather
    /// than wait (`give_way`: adaptive's switch), or this session's own key already exists
    /// behind a holder (a re-attached lease's key, adopted: it is queued already, and only
    /// a queued acquisition owns it — deletes it if it gives up). Nothing was written; the
    /// session's local slot for the key, if it had one, is handed back.
    Busy(Option<crate::local::waiter_queue::Slot>),
}

/// How [`acquire_cas`] goes about it.
#[derive(Debug)]
pub(crate) struct CasAttempt {
    /// The session's local slot for the key (recipes with one key per session).
    pub(crate) local: Option<crate::local::waiter_queue::Slot>,
    /// Whether a key of this session that exists already is taken over.
    pub(crate) adopt: bool,
    /// Whether to return [`Cas::Busy`] at the first holder met instead of waiting for it.
    pub(crate) give_way: bool,
}

/// The optimistic (compare-and-swap) acquisition, shared by the [`Mutex`](crate::Mutex),
/// the [`Election`](crate::Election) and the [`RwLock`](crate::RwLock): creates `req.key`
/// only if no key exists under `req.prefix` ([`Precondition::PrefixEmpty`], set here), and
/// otherwise waits until the oldest key it saw there is gone, pauses as `backoff` says
/// (jittered, so that acquirers woken by one release do not all retry at once) and tries
/// again. Not fair: it keeps no place in the queue, and a queued acquirer can pass it.
///
/// The prefix is what excludes the key: a one-holder name's own prefix (the key is under
/// it: held when it is the oldest there — created now, or this session's key from before),
/// or a read lock's writers' prefix (the key is elsewhere: held when no key is under the
/// prefix). A key of this session that exists already is taken over only if `adopt`.
///
/// Returns what it came to, and how many times it found the resource taken. With
/// `give_way` it never waits for a holder: the first one it meets ends it with
/// [`Cas::Busy`] (unless `wait` is a try, which ends with [`Cas::NotHeld`] as always).
///
/// # Cancel safety
/// As [`create`]: a dropped call leaves no key behind.
pub(crate) async fn acquire_cas(
    session: &Session,
    what: &'static str,
    mut req: CreateRequest,
    CasAttempt { mut local, adopt, give_way }: CasAttempt,
    wait: Wait,
    backoff: &Backoff,
) -> Result<(Cas, u32)> {
    req.precondition = Precondition::PrefixEmpty;
    // A planted bug for the conformance suite to catch (scripts/test.sh): create the key
    // whoever holds the name, and count it as held.
    #[cfg(leasehold_cas_mutation_blind)]
    let mut req = CreateRequest { precondition: Precondition::KeyAbsent, ..req };
    req.head_limit = 1;
    let under_prefix = req.key.starts_with(&req.prefix);
    let mut retry = Retry::new(wait, backoff);
    let mut conflicts = 0u32;
    loop {
        let Some((pending, resp)) = create(session, req.clone(), local.take(), None, wait).await? else {
            return Ok((Cas::NotHeld, conflicts)); // our key was being deleted, and `wait` ran out
        };
        let holder = resp.head.into_iter().next();
        let ours = resp.mine.filter(|kv| kv.lease == session.lease_id());
        if let Some(mine) = ours {
            if !resp.created && !adopt {
                drop(pending.leave()); // not this acquisition's key: leave it
                return Ok((Cas::KeyTaken, conflicts));
            }
            let held = match &holder {
                Some(h) => h.key == req.key,
                None => !under_prefix,
            };
            if held || cfg!(leasehold_cas_mutation_blind) {
                crate::metrics::conflicts(what, conflicts);
                let hold = pending.into_holding(mine.create_revision)?;
                return Ok((Cas::Held(hold.contended(conflicts > 0), mine), conflicts));
            }
            // This session's key exists (adopted, so not new) and waits behind a holder: it
            // is queued already. Waiting for it here would leave it to nobody if the wait
            // ran out; a queued acquisition owns it.
            return Ok((Cas::Busy(pending.leave()), conflicts));
        }
        local = pending.leave();
        let Some(h) = holder else { continue }; // freed in between: try again at once
        conflicts += 1;
        if give_way && wait != Wait::No {
            return Ok((Cas::Busy(local), conflicts));
        }
        if !retry.after(session, &req.prefix, gone(&h.key, h.create_revision)).await? {
            return Ok((Cas::NotHeld, conflicts));
        }
    }
}
