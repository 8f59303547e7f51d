//! A session's background cleanups (a release on drop, a cancelled acquisition's delete)
//! and waiting until none is left ([`Session::settle`](crate::Session::settle), which
//! `close` runs before it revokes the lease).
//!
//! Each cleanup holds a [`Running`] token for as long as it runs; dropping the last token
//! wakes every [`Idle`] waiter. A waiter checks the count and registers its waker in one
//! step under the lock, so a cleanup that ends in between cannot be missed, and it
//! completes only once it *sees* the count at zero, never merely because it was woken.
//!
//! A cleanup that deletes a key of the session names it ([`Cleanups::start_for`]): the key
//! is **doomed** until the token drops. An acquisition of the same session must not take
//! such a key over as its own (the delete would take it away from under it); it waits for
//! [`Cleanups::key_idle`] and creates the key afresh. The same one-step rule holds there.
//!
//! The keys the session has a use for are **owned** ([`Owned`]): an acquisition claims its
//! key before it creates it ([`Cleanups::claim`], refused while the key is doomed), and the
//! guard keeps the claim until its key is gone or its delete is pending. The session's
//! audit deletes keys under its lease that nothing owns (a create that landed after its
//! caller gave up, a predecessor's request that landed after a takeover); it dooms such a
//! key only if nobody owns it ([`Cleanups::doom_unowned`]). Claim and doom are decided
//! under one lock, so an owned key is never doomed by the audit, and a key the audit
//! doomed is not claimed until its delete is done.

use super::sync::{Arc, Mutex};
use super::wakers::Wakers;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct Inner {
    running: usize,
    idle_waiters: Wakers,
    /// The keys of running cleanups that delete one (a key may be in several).
    doomed: Vec<String>,
    key_waiters: Wakers,
    /// The keys claimed by an acquisition, a guard or the leftovers (a key may be in several).
    owned: Vec<String>,
}

/// The count of running cleanups, shared by a session's handles.
#[derive(Debug, Default)]
pub(crate) struct Cleanups {
    inner: Mutex<Inner>,
}

impl Cleanups {
    /// No cleanup running.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Counts one more running cleanup until the token is dropped.
    #[cfg(any(test, leasehold_loom))]
    pub(crate) fn start(cleanups: &Arc<Self>) -> Running {
        cleanups.inner.lock().running += 1;
        Running { cleanups: cleanups.clone(), key: None }
    }

    /// Counts one more running cleanup, one that deletes `key`, until the token is dropped:
    /// the key is doomed until then.
    pub(crate) fn start_for(cleanups: &Arc<Self>, key: &str) -> Running {
        let mut inner = cleanups.inner.lock();
        inner.running += 1;
        inner.doomed.push(key.to_owned());
        Running { cleanups: cleanups.clone(), key: Some(key.to_owned()) }
    }

    /// Claims `key` for an acquisition: `None` while it is doomed (wait for
    /// [`key_idle`](Self::key_idle), then claim again).
    pub(crate) fn claim(cleanups: &Arc<Self>, key: &str) -> Option<Owned> {
        let mut inner = cleanups.inner.lock();
        #[cfg(not(leasehold_loom_mutation_claim))]
        if inner.doomed.iter().any(|k| k == key) {
            return None;
        }
        inner.owned.push(key.to_owned());
        Some(Owned { cleanups: cleanups.clone(), key: key.to_owned() })
    }

    /// Claims `key` whether or not it is doomed (a re-attached session's leftovers, which
    /// nothing else of the session can have touched yet).
    pub(crate) fn own(cleanups: &Arc<Self>, key: &str) -> Owned {
        cleanups.inner.lock().owned.push(key.to_owned());
        Owned { cleanups: cleanups.clone(), key: key.to_owned() }
    }

    /// Dooms `key` for a cleanup only if nothing owns it and no cleanup deletes it yet (the
    /// audit's delete of a key nothing has a use for).
    pub(crate) fn doom_unowned(cleanups: &Arc<Self>, key: &str) -> Option<Running> {
        let mut inner = cleanups.inner.lock();
        if inner.owned.iter().any(|k| k == key) || inner.doomed.iter().any(|k| k == key) {
            return None;
        }
        inner.running += 1;
        inner.doomed.push(key.to_owned());
        Some(Running { cleanups: cleanups.clone(), key: Some(key.to_owned()) })
    }

    /// Whether a cleanup that deletes `key` is running.
    pub(crate) fn is_doomed(&self, key: &str) -> bool {
        self.inner.lock().doomed.iter().any(|k| k == key)
    }

    /// Completes once no cleanup is running.
    pub(crate) fn idle(cleanups: &Arc<Self>) -> Idle {
        Idle { cleanups: cleanups.clone(), id: None }
    }

    /// Completes once no cleanup that deletes `key` is running.
    pub(crate) fn key_idle(cleanups: &Arc<Self>, key: &str) -> KeyIdle {
        KeyIdle { cleanups: cleanups.clone(), key: key.to_owned(), id: None }
    }

    /// How many cleanups are running.
    #[cfg(any(test, leasehold_loom))]
    pub(crate) fn running(&self) -> usize {
        self.inner.lock().running
    }
}

/// One running cleanup; see [`Cleanups::start_for`].
#[derive(Debug)]
pub(crate) struct Running {
    cleanups: Arc<Cleanups>,
    key: Option<String>,
}

impl Running {
    /// Ends the doom of its key (every key waiter looks again) while the cleanup still
    /// counts as running: what the cleanup must do after its delete — hand on the
    /// session's local slot for the key — is done before [`Cleanups::idle`] completes, and
    /// the next task to get the slot finds the key no longer doomed.
    pub(crate) fn undoom(&mut self) {
        if self.key.is_none() {
            return;
        }
        let waiters = self.cleanups.inner.lock().undoom(&mut self.key);
        // Mutation for the loom suite: the undoom frees the key but wakes none of its
        // waiters (and the drop, its key gone, wakes none either).
        #[cfg(leasehold_loom_mutation_undoom)]
        drop(waiters);
        #[cfg(not(leasehold_loom_mutation_undoom))]
        for waker in waiters {
            waker.wake();
        }
    }

    /// Ends the cleanup, handing on `slot` (the session's local slot for its key) in
    /// between: the key is no longer doomed when the next task gets the slot, and the slot
    /// is free when [`Cleanups::idle`] completes.
    pub(crate) fn end_handing_on<T>(mut self, slot: T) {
        self.undoom();
        drop(slot);
    }
}

impl Inner {
    /// Removes one doom of `key` (taken) and returns the key waiters to wake.
    fn undoom(&mut self, key: &mut Option<String>) -> Vec<Waker> {
        let Some(key) = key.take() else { return Vec::new() };
        #[cfg(not(leasehold_loom_mutation_doom))]
        if let Some(at) = self.doomed.iter().position(|k| *k == key) {
            self.doomed.remove(at);
        }
        // Mutation (loom-tests): every entry of the key goes with the first cleanup
        // that ends, while another may still be deleting it.
        #[cfg(leasehold_loom_mutation_doom)]
        self.doomed.retain(|k| *k != key);
        // Every key waiter looks again (each for its own key).
        self.key_waiters.take_all()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let waiters = {
            let mut inner = self.cleanups.inner.lock();
            inner.running -= 1;
            let mut waiters = inner.undoom(&mut self.key);
            if inner.running == 0 {
                waiters.extend(inner.idle_waiters.take_all());
            }
            waiters
        };
        for waker in waiters {
            waker.wake();
        }
    }
}

/// A claim on a key; see [`Cleanups::claim`].
#[derive(Debug)]
pub(crate) struct Owned {
    cleanups: Arc<Cleanups>,
    key: String,
}

impl Drop for Owned {
    fn drop(&mut self) {
        let mut inner = self.cleanups.inner.lock();
        if let Some(at) = inner.owned.iter().position(|k| *k == self.key) {
            inner.owned.remove(at);
        }
    }
}

/// Future returned by [`Cleanups::key_idle`].
#[derive(Debug)]
pub(crate) struct KeyIdle {
    cleanups: Arc<Cleanups>,
    key: String,
    id: Option<u64>,
}

impl Future for KeyIdle {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut inner = this.cleanups.inner.lock();
        if !inner.doomed.contains(&this.key) {
            inner.key_waiters.remove(this.id.take());
            return Poll::Ready(());
        }
        inner.key_waiters.register(&mut this.id, cx.waker());
        Poll::Pending
    }
}

impl Drop for KeyIdle {
    fn drop(&mut self) {
        if self.id.is_some() {
            self.cleanups.inner.lock().key_waiters.remove(self.id);
        }
    }
}

/// Future returned by [`Cleanups::idle`].
#[derive(Debug)]
pub(crate) struct Idle {
    cleanups: Arc<Cleanups>,
    id: Option<u64>,
}

impl Future for Idle {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        #[cfg(leasehold_loom_mutation_cleanups)]
        {
            // Mutation (loom-tests): the count is read under one acquisition of the lock and
            // the waker registered under another, so the last cleanup can end in between.
            if this.cleanups.inner.lock().running == 0 {
                return Poll::Ready(());
            }
        }
        let mut inner = this.cleanups.inner.lock();
        #[cfg(not(leasehold_loom_mutation_cleanups))]
        if inner.running == 0 {
            inner.idle_waiters.remove(this.id.take());
            return Poll::Ready(());
        }
        // Also after a wake-up whose cleanup was followed by another: wait again.
        inner.idle_waiters.register(&mut this.id, cx.waker());
        Poll::Pending
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        if self.id.is_some() {
            self.cleanups.inner.lock().idle_waiters.remove(self.id);
        }
    }
}

#[cfg(all(test, not(leasehold_loom)))]
mod tests {
    use super::*;
    use crate::local::CountingWaker;

    #[test]
    fn idle_only_once_every_cleanup_ended() {
        let c = Arc::new(Cleanups::new());
        let waker = CountingWaker::new();
        assert!(waker.poll(Box::pin(Cleanups::idle(&c)).as_mut()).is_ready(), "idle with none running");
        let (one, two) = (Cleanups::start(&c), Cleanups::start(&c));
        let mut idle = Box::pin(Cleanups::idle(&c));
        assert!(waker.poll(idle.as_mut()).is_pending());
        drop(one);
        assert_eq!(waker.wakes(), 0, "woken with one still running");
        assert!(waker.poll(idle.as_mut()).is_pending());
        drop(two);
        assert_eq!(waker.wakes(), 1);
        // Woken, but a new cleanup started before the waiter looked: it waits again.
        let three = Cleanups::start(&c);
        assert!(waker.poll(idle.as_mut()).is_pending());
        drop(three);
        assert_eq!(waker.wakes(), 2);
        assert!(waker.poll(idle.as_mut()).is_ready());
        assert_eq!(c.running(), 0);
        assert_eq!(c.inner.lock().idle_waiters.len(), 0, "a finished waiter left its waker");
    }

    #[test]
    fn a_key_is_doomed_while_any_cleanup_of_it_runs() {
        let c = Arc::new(Cleanups::new());
        let waker = CountingWaker::new();
        assert!(waker.poll(Box::pin(Cleanups::key_idle(&c, "k")).as_mut()).is_ready());
        let (one, two, other) = (Cleanups::start_for(&c, "k"), Cleanups::start_for(&c, "k"), Cleanups::start(&c));
        assert!(c.is_doomed("k") && !c.is_doomed("j"));
        let mut idle = Box::pin(Cleanups::key_idle(&c, "k"));
        assert!(waker.poll(idle.as_mut()).is_pending());
        drop(one);
        assert!(c.is_doomed("k"), "another cleanup of the key still runs");
        assert!(waker.poll(idle.as_mut()).is_pending());
        drop(two);
        assert!(!c.is_doomed("k"));
        assert!(waker.wakes() >= 1);
        assert!(waker.poll(idle.as_mut()).is_ready());
        assert_eq!(c.running(), 1);
        drop(other);
        assert_eq!(c.inner.lock().key_waiters.len(), 0);
    }

    #[test]
    fn owned_keys_are_never_doomed_by_the_audit_and_doomed_ones_never_claimed() {
        let c = Arc::new(Cleanups::new());
        let owned = Cleanups::claim(&c, "k").expect("not doomed");
        assert!(Cleanups::doom_unowned(&c, "k").is_none(), "doomed while owned");
        let twice = Cleanups::claim(&c, "k").expect("two claims");
        drop(owned);
        assert!(Cleanups::doom_unowned(&c, "k").is_none(), "still owned once");
        drop(twice);
        let doom = Cleanups::doom_unowned(&c, "k").expect("nothing owns it");
        assert!(Cleanups::doom_unowned(&c, "k").is_none(), "doomed twice by the audit");
        assert!(Cleanups::claim(&c, "k").is_none(), "claimed while doomed");
        drop(doom);
        assert!(Cleanups::claim(&c, "k").is_some());
    }
}
