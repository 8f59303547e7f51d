//! What this client last wrote to a register under its lock, so that the next queued update
//! of the same client, admitted by that very write, skips its read.
//!
//! A queued [`Register`](crate::Register) update ends with one transaction that writes the
//! value and deletes the lock key, at revision R. The next waiter is admitted by that
//! deletion, at R, and then needs the value at R: exactly what was written. When writer and
//! waiter are tasks of one client, the writer leaves the value here and the waiter takes it
//! if it was written at the waiter's admission revision; otherwise the waiter reads.
//!
//! The writer [announces](ValueHints::announce) the write before sending it, because the
//! waiter's admission (a watch event) may arrive before the writer's own response: a waiter
//! that finds the write in flight waits for its outcome (a response already on its way;
//! an announcement dropped unfinished, say by a cancelled update, counts as failed), once.
//!
//! A hint only saves a read. Safety never rests on it: the waiter's write is still
//! conditional on the value's revision, so a wrong hint costs a failed write and a read.

use super::signal::Signal;
use super::sync::Mutex;
use std::collections::HashMap;

type Revision = i64;

/// Past this many keys, or [`KEPT_BYTES`] of values, the written hints nobody took are
/// dropped (a client that writes many or large registers keeps no value per register).
const KEPT: usize = 256;
/// See [`KEPT`].
const KEPT_BYTES: usize = 1 << 20;

#[derive(Debug)]
enum Entry {
    /// Announced, not answered yet.
    InFlight { id: u64, value: Vec<u8>, done: Signal },
    /// Written at this revision.
    Written { value: Vec<u8>, at: Revision },
}

impl Entry {
    fn len(&self) -> usize {
        match self {
            Entry::InFlight { value, .. } | Entry::Written { value, .. } => value.len(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    by_key: HashMap<String, Entry>,
}

/// The hints of one client, by register key (one entry per key at most).
#[derive(Debug, Default)]
pub(crate) struct ValueHints {
    inner: Mutex<Inner>,
}

/// A write announced by [`ValueHints::announce`]; [`finish`](Announced::finish) it with its
/// outcome. Dropping it unfinished counts as a failed write.
#[derive(Debug)]
pub(crate) struct Announced<'a> {
    hints: &'a ValueHints,
    key: String,
    id: u64,
    done: Signal,
}

impl ValueHints {
    /// Announces a write of `value` to `key` (replacing what was known of the key).
    pub(crate) fn announce(&self, key: &str, value: Vec<u8>) -> Announced<'_> {
        let mut inner = self.inner.lock();
        let bytes: usize = inner.by_key.values().map(Entry::len).sum();
        if inner.by_key.len() >= KEPT || bytes >= KEPT_BYTES {
            // Hints of keys nobody of this client took: forget them (at most a read each).
            inner.by_key.retain(|_, e| matches!(e, Entry::InFlight { .. }));
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let done = Signal::new();
        inner.by_key.insert(key.to_owned(), Entry::InFlight { id, value, done: done.clone() });
        Announced { hints: self, key: key.to_owned(), id, done }
    }

    /// The value of `key` at revision `at`, if this client wrote it at exactly `at`; waits
    /// for the outcome of a write to `key` still in flight (once). Takes the hint: the next
    /// update of the key is admitted at a later revision.
    pub(crate) async fn take(&self, key: &str, at: Revision) -> Option<Vec<u8>> {
        let mut waited = false;
        loop {
            let done = {
                let mut inner = self.inner.lock();
                match inner.by_key.get(key) {
                    Some(Entry::Written { at: written, .. }) if *written == at => {
                        return match inner.by_key.remove(key) {
                            Some(Entry::Written { value, .. }) => Some(value),
                            _ => None,
                        };
                    }
                    Some(Entry::InFlight { done, .. }) if !waited => done.clone(),
                    _ => return None,
                }
            };
            done.wait().await;
            waited = true;
        }
    }

    /// Records that `key` had `value` at revision `at`, as a watch saw it (another client's
    /// write, a register queue's feed): unless this client has a write of the key in flight
    /// (its own outcome will say) or knows a later one.
    pub(crate) fn seen(&self, key: &str, value: Vec<u8>, at: Revision) {
        let mut inner = self.inner.lock();
        match inner.by_key.get(key) {
            // Mutation for the loom suite: a watched value replaces a write in flight.
            #[cfg(not(leasehold_loom_mutation_seen))]
            Some(Entry::InFlight { .. }) => {}
            Some(Entry::Written { at: known, .. }) if *known >= at => {}
            known => {
                if known.is_none() && inner.by_key.len() >= KEPT {
                    return; // a key nobody of this client updates any more would crowd the others
                }
                inner.by_key.insert(key.to_owned(), Entry::Written { value, at });
            }
        }
    }

    fn settle(&self, key: &str, id: u64, at: Option<Revision>) {
        let mut inner = self.inner.lock();
        if !matches!(inner.by_key.get(key), Some(Entry::InFlight { id: current, .. }) if *current == id) {
            return; // a newer announcement replaced this one
        }
        if let (Some(Entry::InFlight { value, .. }), Some(at)) = (inner.by_key.remove(key), at) {
            inner.by_key.insert(key.to_owned(), Entry::Written { value, at });
        }
    }
}

impl Announced<'_> {
    /// Records the outcome: `Some(revision)` the write was applied at, `None` if it was not.
    pub(crate) fn finish(self, at: Option<Revision>) {
        // Mutation for the loom suite: wake the waiters before recording the outcome.
        #[cfg(leasehold_loom_mutation_hints)]
        self.done.fire();
        self.hints.settle(&self.key, self.id, at);
        // Drop fires the signal.
        // (Mutation `unlanded`, with `drop`'s: only a write that landed wakes the waiters.)
        #[cfg(leasehold_loom_mutation_unlanded)]
        if at.is_some() {
            self.done.fire();
        }
    }
}

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        // Settle as failed unless `finish` already settled (then this finds a newer entry or
        // a written one, and leaves it), and wake whoever waits for the outcome.
        self.hints.settle(&self.key, self.id, None);
        // Mutation for the loom suite: a write that failed or was dropped leaves nothing to
        // take, so nobody is woken (only `finish` with a revision wakes the waiters).
        #[cfg(not(leasehold_loom_mutation_unlanded))]
        self.done.fire();
    }
}

#[cfg(all(test, not(leasehold_loom)))]
mod tests {
    use super::*;
    use crate::local::CountingWaker;
    use std::task::Poll;

    /// What `take` answers without waiting (it must not wait here).
    fn now(hints: &ValueHints, key: &str, at: Revision) -> Option<Vec<u8>> {
        let waker = CountingWaker::new();
        match waker.poll(std::pin::pin!(hints.take(key, at))) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("take waited with no write in flight"),
        }
    }

    #[test]
    fn a_write_at_the_admission_revision_is_taken_once() {
        let hints = ValueHints::default();
        hints.announce("k", b"1".to_vec()).finish(Some(7));
        assert_eq!(now(&hints, "k", 6), None, "another revision: read instead");
        assert_eq!(now(&hints, "k", 7).as_deref(), Some(&b"1"[..]));
        assert_eq!(now(&hints, "k", 7), None, "taken");
        assert_eq!(now(&hints, "other", 7), None);
    }

    #[test]
    fn a_waiter_waits_for_the_write_in_flight() {
        let hints = ValueHints::default();
        let announced = hints.announce("k", b"2".to_vec());
        let waker = CountingWaker::new();
        let mut take = std::pin::pin!(hints.take("k", 9));
        assert!(waker.poll(take.as_mut()).is_pending(), "the outcome is not known yet");
        announced.finish(Some(9));
        assert_eq!(waker.wakes(), 1, "the outcome wakes the waiter");
        assert_eq!(waker.poll(take.as_mut()), Poll::Ready(Some(b"2".to_vec())));
    }

    #[test]
    fn a_failed_or_dropped_write_is_no_hint() {
        let hints = ValueHints::default();
        hints.announce("k", b"3".to_vec()).finish(None);
        assert_eq!(now(&hints, "k", 1), None);
        let dropped = hints.announce("k", b"4".to_vec());
        let waker = CountingWaker::new();
        let mut take = std::pin::pin!(hints.take("k", 1));
        assert!(waker.poll(take.as_mut()).is_pending());
        drop(dropped);
        assert_eq!(waker.wakes(), 1, "a dropped announcement wakes the waiter");
        assert_eq!(waker.poll(take.as_mut()), Poll::Ready(None), "and leaves nothing");
        // An older announcement settling late does not overwrite a newer one.
        let old = hints.announce("k", b"5".to_vec());
        hints.announce("k", b"6".to_vec()).finish(Some(3));
        old.finish(Some(2));
        assert_eq!(now(&hints, "k", 2), None);
        assert_eq!(now(&hints, "k", 3).as_deref(), Some(&b"6"[..]));
    }

    #[test]
    fn a_value_seen_by_a_watch_is_a_hint_unless_this_client_knows_better() {
        let hints = ValueHints::default();
        hints.seen("k", b"1".to_vec(), 5);
        hints.seen("k", b"0".to_vec(), 4); // an older event changes nothing
        assert_eq!(now(&hints, "k", 5).as_deref(), Some(&b"1"[..]));
        let own = hints.announce("k", b"2".to_vec());
        hints.seen("k", b"2".to_vec(), 7); // this client's own write, seen before its answer
        own.finish(Some(7));
        assert_eq!(now(&hints, "k", 7).as_deref(), Some(&b"2"[..]));
        hints.announce("k", b"3".to_vec()).finish(Some(9));
        hints.seen("k", b"x".to_vec(), 8);
        assert_eq!(now(&hints, "k", 9).as_deref(), Some(&b"3"[..]), "a later own write is kept");
    }

    #[test]
    fn hints_nobody_takes_are_bounded() {
        let hints = ValueHints::default();
        for i in 0..(3 * KEPT as i64) {
            hints.announce(&format!("k{i}"), vec![1]).finish(Some(i));
        }
        assert!(hints.inner.lock().by_key.len() <= KEPT);
        let last = 3 * KEPT as i64 - 1;
        assert!(now(&hints, &format!("k{last}"), last).is_some(), "the newest is kept");
        let big = vec![0; KEPT_BYTES / 4];
        for i in 0..8 {
            hints.announce(&format!("big{i}"), big.clone()).finish(Some(i));
        }
        let bytes: usize = hints.inner.lock().by_key.values().map(Entry::len).sum();
        assert!(bytes <= KEPT_BYTES + big.len(), "{bytes} bytes kept");
    }
}
