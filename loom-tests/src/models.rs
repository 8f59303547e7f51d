//! One loom model per property of `src/local/` (compiled by path, see the crate docs).
//!
//! Each model explores every interleaving of its threads (and, for atomics, every older
//! store a load may still read) up to a preemption bound: the number of times the
//! scheduler may switch away from a thread that could have gone on. Unless
//! `LOOM_MAX_PREEMPTIONS` is set, a model uses [`DEFAULT_PREEMPTIONS`] (3), which
//! `scripts/loom.sh` also passes explicitly.
//!
//! Why 3: each model has three or four threads doing one to five synchronisation steps
//! each, and a bound of 3 lets three of those steps be cut into by another thread, which
//! is more than every bug we know of in this kind of code needs: the fence and deadline
//! mutations below are found with a bound of 1 and the release one with 0 (its second
//! caller's plain load may read the older `HELD`), and studies of real concurrency bugs
//! find nearly all of them within two or three preemptions. At 3, all eighteen models together
//! take about 8 s in release mode on two cores. Without a bound,
//! `lost_session_never_revives` alone needs over a million executions and
//! `lost_signal_reaches_every_waiter_once` did not finish in 6 minutes.
//!
//! # Mutations
//!
//! The library's local files carry deliberately broken variants behind cfgs, so that the
//! models are shown to catch the bugs they are about. Built with one of these cfgs (as
//! `scripts/loom.sh` does), the matching model is expected to fail, and its test carries
//! `#[should_panic]` with the message of the assertion that must trip (so a loom deadlock
//! or any other panic does not count as "caught"):
//!
//! | cfg | mutated code | model that must fail |
//! |---|---|---|
//! | `leasehold_loom_mutation_release` | `ReleaseOnce::begin` loads the state and, if it is `HELD`, stores `RELEASING`: check-then-set in two steps instead of one compare-exchange, so two callers can both see `HELD` and both win | [`release_happens_exactly_once`] |
//! | `leasehold_loom_mutation_fence` | `HighWater::apply` checks the token under the lock, releases it, and writes under a second acquisition, so a writer with a lower token that passed its check can write after a higher one | [`fence_never_accepts_lower_after_higher`] |
//! | `leasehold_loom_mutation_deadline` | `SessionState::renewed` stores the renewal's deadline even when it is earlier than the current one, so a renewal sent earlier but finishing later moves the deadline back | [`session_deadline_never_moves_back`] |
//! | `leasehold_loom_mutation_cleanups` | `Idle::poll` reads the running count under one acquisition of the lock and registers its waker under another, so the last cleanup can end in between and wake nobody | [`settle_waits_for_every_cleanup`] |
//! | `leasehold_loom_mutation_queue` | a dropped `WaiterQueue::acquire` future that had been granted the slot leaves the queue without passing the slot on | [`cancelled_local_waiter_passes_the_slot_on`] |
//! | `leasehold_loom_mutation_seen` | `ValueHints::seen` (a value a register queue's feed saw) replaces a write of this client still in flight, whose outcome then finds another entry and is dropped | [`watched_value_never_replaces_own_write`] |
//! | `leasehold_loom_mutation_hints` | `Announced::finish` wakes the waiters before it records the write, so a waiter can look again, still find the write in flight and give up | [`value_hint_reaches_the_next_holder`] |
//! | `leasehold_loom_mutation_doom` | a cleanup of a key that ends forgets every entry of the key, while another cleanup still deletes it | [`keys::a_key_stays_doomed_while_a_cleanup_of_it_runs`](crate::keys) |
//! | `leasehold_loom_mutation_claim` | `Cleanups::claim` does not look whether the key is doomed | [`keys::a_claimed_key_is_never_doomed_by_the_audit`](crate::keys) |
//! | `leasehold_loom_mutation_revive` | `SessionState::renewed` refuses only a closed session, and a success sets a lost one `Alive` again | [`lost_session_never_revives`] (and [`session_deadline_never_moves_back`]) |
//! | `leasehold_loom_mutation_arrival` | `WaiterQueue` grants a given-back slot to the newest waiter, not the oldest | [`local_waiters_served_in_arrival_order`] |
//! | `leasehold_loom_mutation_fire` | `Signal::fire` looks whether it fired under one acquisition of the lock and fires under another, so two callers can both win | [`lost_signal_reaches_every_waiter_once`] |
//! | `leasehold_loom_mutation_ids` | `Wakers::register` gives a new future the number of registered wakers as its id, which a removal makes the id of a future still registered | [`cancelled_signal_waiter_leaves_nothing`] |
//! | `leasehold_loom_mutation_unlanded` | `Announced` wakes the waiters only for a write that landed (`finish` with a revision): a failed or dropped one wakes nobody | [`unlanded_write_wakes_the_waiter_with_nothing`] |
//! | `leasehold_loom_mutation_undoom` | `Running::undoom` frees the key but wakes none of its waiters | [`keys::undoom_frees_the_key_and_wakes_its_waiter`](crate::keys) |

use crate::local::cleanups::Cleanups;
use crate::local::fence::HighWater;
use crate::local::release::ReleaseOnce;
use crate::local::session_state::{SessionState, SessionStatus};
use crate::local::signal::Signal;
use crate::local::value_hints::ValueHints;
use crate::local::waiter_queue::{Slot, WaiterQueue};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Preemption bound used when `LOOM_MAX_PREEMPTIONS` is not set; see the module docs.
pub(crate) const DEFAULT_PREEMPTIONS: usize = 3;

/// Runs `f` under loom and prints how many executions were explored (or after how many
/// a violation was found), with the preemption bound in force.
pub(crate) fn check<F>(name: &str, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(DEFAULT_PREEMPTIONS);
    }
    let bound = builder.preemption_bound.unwrap_or(DEFAULT_PREEMPTIONS);
    // Counted outside loom's view: loom runs executions one after another on one OS thread.
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = executions.clone();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        builder.check(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f();
        })
    }));
    let n = executions.load(std::sync::atomic::Ordering::Relaxed);
    match outcome {
        Ok(()) => println!("loom {name}: ok, {n} executions, preemption bound {bound}"),
        Err(panic) => {
            println!("loom {name}: VIOLATION found in execution {n}, preemption bound {bound}");
            std::panic::resume_unwind(panic)
        }
    }
}

/// Property: however an explicit `unlock()`, the guard's `Drop` and the session being
/// lost race, exactly one of them wins `ReleaseOnce::begin()` (and so sends the one
/// delete), and any caller that lost `begin()` sees the guard as no longer held.
///
/// Preemption bound: 3 (module docs). Three threads of two or three atomic steps each.
#[test]
// Mutation `leasehold_loom_mutation_release`: begin() loads, then stores (no CAS); loom must
// find two winners.
#[cfg_attr(leasehold_loom_mutation_release, should_panic(expected = "callers won begin()"))]
fn release_happens_exactly_once() {
    check("release_happens_exactly_once", || {
        let release = Arc::new(ReleaseOnce::new());
        let deletes = Arc::new(AtomicUsize::new(0));

        // What Holding::release (unlock) and Holding::drop do: win, delete, finish.
        let path = |release: Arc<ReleaseOnce>, deletes: Arc<AtomicUsize>| {
            move || {
                let won = release.begin();
                if won {
                    deletes.fetch_add(1, Ordering::Relaxed);
                    release.finish();
                } else {
                    assert!(!release.is_held(), "a caller lost begin() but the guard reads held");
                }
                won
            }
        };
        let unlock = thread::spawn(path(release.clone(), deletes.clone()));
        let drop = thread::spawn(path(release.clone(), deletes.clone()));

        // Session loss: nothing to delete, but the guard must stop claiming to hold.
        let lost = release.begin();
        if lost {
            release.finish();
        }
        assert!(!release.is_held(), "the guard reads held after the session-loss path ran");

        let won = [unlock.join().unwrap(), drop.join().unwrap(), lost];
        let winners = won.iter().filter(|w| **w).count();
        assert_eq!(winners, 1, "release: {winners} callers won begin() ({won:?})");
        assert_eq!(deletes.load(Ordering::Relaxed) + usize::from(lost), 1);
        assert!(!release.is_held());
        assert!(!release.begin(), "begin() won again after the release");
    });
}

/// Property: writers with different tokens racing through `HighWater::apply` never apply a
/// lower token after a higher one. The write closure records each applied token, so the
/// recorded sequence must be non-decreasing; every rejected token must have been below an
/// applied one (the `Err` names it); a token is recorded exactly when `apply` returned
/// `Ok`; and `highest()` ends as the last applied token.
///
/// Preemption bound: 3 (module docs). Three writers, each one or two lock acquisitions.
#[test]
// Mutation `leasehold_loom_mutation_fence`: apply() checks under one lock acquisition and
// writes under another; loom must find a lower token applied after a higher one.
#[cfg_attr(leasehold_loom_mutation_fence, should_panic(expected = "applied tokens went down"))]
fn fence_never_accepts_lower_after_higher() {
    check("fence_never_accepts_lower_after_higher", || {
        let resource = Arc::new(HighWater::new(Vec::<u64>::new()));
        let writer = |token: u64| {
            let resource = resource.clone();
            move || (token, resource.apply(token, |applied| applied.push(token)))
        };
        let low = thread::spawn(writer(5));
        let high = thread::spawn(writer(7));
        let middle = writer(6)();
        let outcomes = [low.join().unwrap(), high.join().unwrap(), middle];

        let applied = resource.read(|applied| applied.clone());
        assert!(applied.windows(2).all(|w| w[0] <= w[1]), "applied tokens went down: {applied:?}");
        for (token, outcome) in outcomes {
            match outcome {
                Ok(()) => assert!(applied.contains(&token), "{token} returned Ok but was not applied"),
                Err(highest) => {
                    assert!(!applied.contains(&token), "{token} was rejected but applied");
                    assert!(highest > token, "{token} rejected by a mark of {highest}");
                    assert!(applied.contains(&highest), "{token} rejected by {highest}, never applied");
                }
            }
        }
        assert_eq!(Some(&resource.highest()), applied.last(), "highest() is not the last applied token");
        assert!(applied.contains(&7), "the highest token was rejected");
    });
}

/// Property: the validity deadline never moves back. Two renewals whose requests were sent
/// at +1 s and +2 s (TTL 10 s, initial deadline +10 s) finish in either order, racing
/// `expire_if_due(+10.5 s)` and a reader. Every reading of `deadline()` is at least every
/// earlier one in the same thread and at least the deadline of any renewal that thread saw
/// succeed; at the end the deadline is the latest of the successful renewals' deadlines.
///
/// Preemption bound: 3 (module docs). Three threads, two to three lock acquisitions each.
#[test]
// Mutation `leasehold_loom_mutation_deadline`: renewed() stores its deadline even when it is
// earlier; loom must find the +1 s renewal finishing after the +2 s one.
#[cfg_attr(leasehold_loom_mutation_deadline, should_panic(expected = "deadline moved back"))]
// Mutation `leasehold_loom_mutation_revive` (renewed() revives a lost session) is caught here
// too: the expired session is renewed after all.
#[cfg_attr(leasehold_loom_mutation_revive, should_panic(expected = "a renewal succeeded after the session expired"))]
fn session_deadline_never_moves_back() {
    check("session_deadline_never_moves_back", || {
        let base = Instant::now();
        let at = move |ms: u64| base + Duration::from_millis(ms);
        let ttl = Duration::from_secs(10);
        let state = Arc::new(SessionState::new(at(10_000)));

        let renewal = |sent_ms: u64| {
            let state = state.clone();
            move || {
                let before = state.deadline();
                let ok = state.renewed(at(sent_ms), ttl);
                let after = state.deadline();
                assert!(after >= before, "deadline moved back across a renewal");
                if ok {
                    assert!(after >= at(sent_ms) + ttl, "deadline moved back below a renewal it saw succeed");
                }
                ok
            }
        };
        let first = thread::spawn(renewal(1_000));
        let second = thread::spawn(renewal(2_000));

        let d0 = state.deadline();
        let expired = state.expire_if_due(at(10_500));
        let d1 = state.deadline();
        assert!(d1 >= d0, "deadline moved back under a reader");

        let ok = [(first.join().unwrap(), 1_000), (second.join().unwrap(), 2_000)];
        let expected = ok.iter().filter(|(ok, _)| *ok).map(|(_, sent)| at(*sent) + ttl).max().unwrap_or(at(10_000));
        assert_eq!(state.deadline(), expected, "deadline moved back: not the latest successful renewal's");
        // expire_if_due(+10.5 s) can only win before any renewal, and then stops both.
        assert_eq!(expired, ok.iter().all(|(ok, _)| !ok), "a renewal succeeded after the session expired");
        assert_eq!(state.is_valid(at(10_500)), !expired);
    });
}

/// Property: a lost or closed session never becomes valid again. A renewer (two renewals
/// in a row) races `mark_lost()` and a thread doing `expire_if_due()` then `close()`.
/// Exactly one of `expire_if_due`/`mark_lost`/`close` makes the transition; after its own
/// `mark_lost` or `close` (whether or not that call made the transition), or a refused
/// renewal, a thread reads `is_valid == false` and a status other than `Alive`; once a
/// renewal returns false, later ones do too; at the end the status is the transition's,
/// and a renewal then returns false and leaves the session invalid.
///
/// Preemption bound: 3 (module docs). Three threads, two to four lock acquisitions each.
#[test]
// Mutation `leasehold_loom_mutation_revive`: renewed() refuses only a closed session and
// revives a lost one; loom must find the session lost twice (expired, renewed, marked lost).
#[cfg_attr(leasehold_loom_mutation_revive, should_panic(expected = "transitions:"))]
fn lost_session_never_revives() {
    check("lost_session_never_revives", || {
        let base = Instant::now();
        let at = move |ms: u64| base + Duration::from_millis(ms);
        let ttl = Duration::from_secs(10);
        // "now" for is_valid: before every possible deadline, so only the status decides.
        let now = at(500);
        let state = Arc::new(SessionState::new(at(10_000)));

        let renewer = {
            let state = state.clone();
            thread::spawn(move || {
                let r1 = state.renewed(at(1_000), ttl);
                if !r1 {
                    assert!(!state.is_valid(now), "a renewal was refused but the session reads valid");
                    assert_ne!(state.status(), SessionStatus::Alive, "a renewal was refused while alive");
                }
                let r2 = state.renewed(at(2_000), ttl);
                assert!(r1 || !r2, "a renewal succeeded after one was refused: the session revived");
            })
        };
        let loser = {
            let state = state.clone();
            thread::spawn(move || {
                let won = state.mark_lost();
                assert!(!state.is_valid(now), "valid after mark_lost");
                let status = state.status();
                assert_ne!(status, SessionStatus::Alive, "alive after mark_lost");
                if won {
                    assert_eq!(status, SessionStatus::Lost);
                }
                won
            })
        };

        // Only wins if no renewal ran yet (the deadline is then still +10 s).
        let expired = state.expire_if_due(at(10_500));
        if expired {
            assert!(!state.is_valid(now), "valid after expiring");
        }
        let closed = state.close();
        assert!(!state.is_valid(now), "valid after close");
        assert_ne!(state.status(), SessionStatus::Alive);

        renewer.join().unwrap();
        let lost = loser.join().unwrap();
        let transitions = [expired, lost, closed];
        assert_eq!(transitions.iter().filter(|t| **t).count(), 1, "transitions: {transitions:?}");
        let want = if closed { SessionStatus::Closed } else { SessionStatus::Lost };
        assert_eq!(state.status(), want);
        assert!(!state.renewed(at(3_000), ttl), "a renewal succeeded after the session ended");
        assert!(!state.is_valid(now), "the session revived");
        assert!(!state.expire_if_due(at(60_000)) && !state.mark_lost() && !state.close());
    });
}

/// Property: `Signal::fire` racing two waiters' `wait()` futures and a second `fire` wakes
/// every waiter, each waiter's future completes exactly once (loom reports a deadlock if a
/// waiter is never woken), `fire` returns true for exactly one caller, and a waiter that
/// starts after the signal fired completes at once.
///
/// Preemption bound: 3 (module docs). Four threads (two waiters, two firers), each with
/// one to three lock acquisitions; with no bound this model did not finish in 6 minutes.
#[test]
// Mutation `leasehold_loom_mutation_fire`: fire() checks under one lock acquisition and
// fires under another; loom must find both fire() calls returning true.
#[cfg_attr(leasehold_loom_mutation_fire, should_panic(expected = "fire() returned"))]
fn lost_signal_reaches_every_waiter_once() {
    check("lost_signal_reaches_every_waiter_once", || {
        let signal = Signal::new();
        let woken = Arc::new(AtomicUsize::new(0));
        let waiter = || {
            let wait = signal.wait();
            let woken = woken.clone();
            thread::spawn(move || {
                loom::future::block_on(wait);
                woken.fetch_add(1, Ordering::Relaxed);
            })
        };
        let waiters = [waiter(), waiter()];
        let second = {
            let signal = signal.clone();
            thread::spawn(move || signal.fire())
        };
        let first = signal.fire();

        for w in waiters {
            w.join().unwrap();
        }
        let fired = [first, second.join().unwrap()];
        assert_eq!(fired.iter().filter(|f| **f).count(), 1, "fire() returned {fired:?}");
        assert_eq!(woken.load(Ordering::Relaxed), 2);
        assert!(signal.is_fired());
        loom::future::block_on(signal.wait()); // a late waiter completes at once
        assert!(!signal.fire());
    });
}

/// A waker that counts its wake-ups. A plain `std` Arc, outside loom's view: the model
/// checks through its strong count whether the signal still holds a clone of it.
#[derive(Default)]
pub(crate) struct CountingWaker(std::sync::atomic::AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl CountingWaker {
    pub(crate) fn wakes(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Polls `wait` once with `waker`; true if it completed.
pub(crate) fn poll_with(
    wait: std::pin::Pin<&mut impl Future<Output = ()>>,
    waker: &std::sync::Arc<CountingWaker>,
) -> bool {
    wait.poll(&mut Context::from_waker(&Waker::from(waker.clone()))).is_ready()
}

/// Property: a `wait()` future that is polled, polled again with another waker (as a
/// `select!` loop does) and then dropped leaves no waker behind in the signal and never
/// disturbs another waiter. Two such cancelled waiters race a third waiter registering;
/// once they are gone, the signal holds no clone of their wakers, and the remaining
/// waiter's waker is still registered: `fire` then wakes it exactly once and its future
/// completes.
///
/// Preemption bound: 3 (module docs). Three threads, two to three lock acquisitions each.
#[test]
// Mutation `leasehold_loom_mutation_ids`: a waiter's id is the number of wakers registered;
// loom must find a dropped waiter's id given to a later one, whose drop takes the kept
// waiter's waker with it.
#[cfg_attr(leasehold_loom_mutation_ids, should_panic(expected = "the kept waiter's waker is not registered"))]
fn cancelled_signal_waiter_leaves_nothing() {
    check("cancelled_signal_waiter_leaves_nothing", || {
        let signal = Signal::new();
        let canceller = || {
            let signal = signal.clone();
            thread::spawn(move || {
                let wakers = [std::sync::Arc::<CountingWaker>::default(), std::sync::Arc::default()];
                let mut wait = pin!(signal.wait());
                assert!(!poll_with(wait.as_mut(), &wakers[0]), "completed before any fire");
                assert!(!poll_with(wait.as_mut(), &wakers[1]), "completed before any fire");
                wakers
            })
        };
        let cancelled = [canceller(), canceller()];

        let kept = std::sync::Arc::<CountingWaker>::default();
        let mut wait = pin!(signal.wait());
        assert!(!poll_with(wait.as_mut(), &kept), "completed before any fire");

        for handle in cancelled {
            for waker in handle.join().unwrap() {
                assert_eq!(std::sync::Arc::strong_count(&waker), 1, "a dropped waiter's waker is still held");
                assert_eq!(waker.wakes(), 0);
            }
        }
        assert_eq!(std::sync::Arc::strong_count(&kept), 2, "the kept waiter's waker is not registered");
        assert!(signal.fire());
        assert_eq!(kept.wakes(), 1, "the kept waiter was not woken exactly once");
        assert_eq!(std::sync::Arc::strong_count(&kept), 1, "fire kept a waker");
        assert!(poll_with(wait.as_mut(), &kept), "woken but not complete");
    });
}

/// Property: the local waiter queue (the tasks of one session that want one key) lets one
/// task hold the slot at a time, serves waiters in arrival order, and never loses a
/// wake-up. Waiter `a` queues first (polled once, then handed to its thread, whose
/// `block_on` polls it again with a new waker while the holder gives the slot back);
/// waiter `b` arrives later from its own thread. Every waiter completes (a lost wake-up
/// would be a loom deadlock), never two inside at once, `a` before `b`, and the slot ends
/// free.
///
/// Preemption bound: 3 (module docs). Three threads (the holder and two waiters), two to
/// four lock acquisitions each.
#[test]
// Mutation `leasehold_loom_mutation_arrival`: a given-back slot goes to the newest waiter;
// loom must find `b` queued before the holder gives the slot back, and served first.
#[cfg_attr(leasehold_loom_mutation_arrival, should_panic(expected = "waiters served out of arrival order"))]
fn local_waiters_served_in_arrival_order() {
    check("local_waiters_served_in_arrival_order", || {
        let queue = Arc::new(WaiterQueue::new());
        let held = WaiterQueue::try_acquire(&queue).expect("a new queue's slot is free");
        let inside = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(loom::sync::Mutex::new(Vec::new()));
        let hold = |slot: Slot, who: &'static str, inside: &AtomicUsize, order: &loom::sync::Mutex<Vec<&str>>| {
            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two tasks held the slot at once");
            order.lock().unwrap().push(who);
            inside.fetch_sub(1, Ordering::SeqCst);
            drop(slot);
        };
        let mut first = Box::pin(WaiterQueue::acquire(&queue));
        let early = std::sync::Arc::<CountingWaker>::default();
        let polled = first.as_mut().poll(&mut Context::from_waker(&Waker::from(early)));
        assert!(polled.is_pending(), "the slot is held: the first waiter must queue");
        let a = {
            let (inside, order) = (inside.clone(), order.clone());
            thread::spawn(move || hold(loom::future::block_on(first), "a", &inside, &order))
        };
        let b = {
            let (queue, inside, order) = (queue.clone(), inside.clone(), order.clone());
            thread::spawn(move || hold(loom::future::block_on(WaiterQueue::acquire(&queue)), "b", &inside, &order))
        };
        drop(held);
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["a", "b"], "waiters served out of arrival order");
        assert!(!queue.is_out() && queue.waiting() == 0, "the slot did not end free");
    });
}

/// Property: a waiter cancelled (its future dropped) while the holder gives the slot back
/// never strands the queue: whichever comes first, the slot ends with the next waiter,
/// which is woken, and a `try_acquire` racing them never gets the slot while anyone
/// waits. Waiters `a` and `b` queue in that order; then the holder's release, `a`'s
/// cancellation and a try run on three threads.
///
/// Preemption bound: 3 (module docs). Three threads, one to two lock acquisitions each.
#[test]
// Mutation `leasehold_loom_mutation_queue`: a granted waiter's drop forgets the slot; loom
// must find the release landing before the cancellation.
#[cfg_attr(leasehold_loom_mutation_queue, should_panic(expected = "the slot was stranded"))]
fn cancelled_local_waiter_passes_the_slot_on() {
    check("cancelled_local_waiter_passes_the_slot_on", || {
        let queue = Arc::new(WaiterQueue::new());
        let held = WaiterQueue::try_acquire(&queue).expect("a new queue's slot is free");
        let (wa, wb) = (std::sync::Arc::<CountingWaker>::default(), std::sync::Arc::<CountingWaker>::default());
        let mut a = Box::pin(WaiterQueue::acquire(&queue));
        let mut b = Box::pin(WaiterQueue::acquire(&queue));
        assert!(a.as_mut().poll(&mut Context::from_waker(&Waker::from(wa.clone()))).is_pending());
        assert!(b.as_mut().poll(&mut Context::from_waker(&Waker::from(wb.clone()))).is_pending());

        let release = thread::spawn(move || drop(held));
        let cancel = thread::spawn(move || drop(a));
        let barger = {
            let queue = queue.clone();
            thread::spawn(move || WaiterQueue::try_acquire(&queue).is_some())
        };
        release.join().unwrap();
        cancel.join().unwrap();
        assert!(!barger.join().unwrap(), "a try passed a waiter");

        assert!(wb.wakes() >= 1, "the slot was stranded: the next waiter was never woken");
        let slot = b.as_mut().poll(&mut Context::from_waker(&Waker::from(wb.clone())));
        let std::task::Poll::Ready(slot) = slot else { panic!("the slot was stranded: woken, but not granted") };
        assert_eq!(queue.waiting(), 0);
        drop(slot);
        assert!(!queue.is_out(), "the slot did not end free");
    });
}

/// Property: `Session::settle` (a `Cleanups::idle` future) completes only once every
/// background cleanup started before it has ended, and is always woken when the last one
/// ends. Two cleanups end on two threads (each sets its flag first) while a third thread
/// polls the idle future once; after both ended, a future that was pending must have been
/// woken and must then complete, and one that completed at once must have seen both
/// flags. Polled by hand with a counting waker (not `block_on`) so that a lost wake-up is
/// this model's assertion rather than a loom deadlock.
///
/// Preemption bound: 3 (module docs). Three threads, one to two lock acquisitions each.
#[test]
// Mutation `leasehold_loom_mutation_cleanups`: check and registration in two steps; loom
// must find the last cleanup ending in between.
#[cfg_attr(leasehold_loom_mutation_cleanups, should_panic(expected = "settle was never woken"))]
fn settle_waits_for_every_cleanup() {
    check("settle_waits_for_every_cleanup", || {
        let cleanups = Arc::new(Cleanups::new());
        let ended = Arc::new([loom::sync::atomic::AtomicBool::new(false), loom::sync::atomic::AtomicBool::new(false)]);
        let ending = |i: usize| {
            let (running, ended) = (Cleanups::start(&cleanups), ended.clone());
            move || {
                ended[i].store(true, Ordering::SeqCst);
                drop(running);
            }
        };
        let (first, second) = (ending(0), ending(1));
        let waker = std::sync::Arc::<CountingWaker>::default();
        let settler = {
            let (cleanups, ended, waker) = (cleanups.clone(), ended.clone(), waker.clone());
            thread::spawn(move || {
                let mut idle = Box::pin(Cleanups::idle(&cleanups));
                let done = poll_with(idle.as_mut(), &waker);
                if done {
                    let both = ended.iter().all(|e| e.load(Ordering::SeqCst));
                    assert!(both, "settle returned while a cleanup was running");
                }
                (done, idle)
            })
        };
        let cleaner = thread::spawn(first);
        second();
        cleaner.join().unwrap();
        let (done, mut idle) = settler.join().unwrap();
        assert_eq!(cleanups.running(), 0);
        if !done {
            assert_eq!(waker.wakes(), 1, "settle was never woken after the last cleanup ended");
            assert!(poll_with(idle.as_mut(), &waker), "woken but not complete");
        }
    });
}

/// How a writer's announced value ends in [`value_hint_model`].
#[derive(Clone, Copy, Debug)]
enum HintOutcome {
    Written,
    Failed,
    Dropped,
}

/// The writer announces before the waiter exists, as in the library (the waiter is
/// admitted by the write it announced), then settles `outcome` while the waiter takes.
/// For a write that landed the waiter runs under `block_on`, so that its second look races
/// the writer's answer (a lost wake-up would be a loom deadlock); for one that did not, it
/// polls once by hand with a counting waker (as `settle_waits_for_every_cleanup` does), so
/// that a waiter left waiting is this model's assertion rather than a loom deadlock.
fn value_hint_model(name: &str, outcome: HintOutcome) {
    check(name, move || {
        let hints = Arc::new(ValueHints::default());
        let waker = std::sync::Arc::<CountingWaker>::default();
        let writer = {
            let (hints, waker) = (hints.clone(), waker.clone());
            thread::spawn(move || {
                let announced = hints.announce("k", b"v".to_vec());
                let waiter = {
                    let hints = hints.clone();
                    thread::spawn(move || {
                        let mut take = Box::pin(async move { hints.take("k", 5).await });
                        let taken = match outcome {
                            HintOutcome::Written => Poll::Ready(loom::future::block_on(take.as_mut())),
                            _ => take.as_mut().poll(&mut Context::from_waker(&Waker::from(waker))),
                        };
                        (taken, take)
                    })
                };
                match outcome {
                    HintOutcome::Written => announced.finish(Some(5)),
                    HintOutcome::Failed => announced.finish(None),
                    HintOutcome::Dropped => drop(announced),
                }
                waiter.join().unwrap()
            })
        };
        let (taken, mut take) = writer.join().unwrap();
        let taken = match taken {
            Poll::Ready(taken) => taken,
            Poll::Pending => {
                assert!(waker.wakes() >= 1, "the waiter was left waiting for a write that did not land ({outcome:?})");
                let again = take.as_mut().poll(&mut Context::from_waker(&Waker::from(waker.clone())));
                let Poll::Ready(taken) = again else { panic!("woken, but still waiting ({outcome:?})") };
                taken
            }
        };
        match outcome {
            HintOutcome::Written => assert_eq!(taken.as_deref(), Some(&b"v"[..]), "the write was not handed over"),
            _ => assert_eq!(taken, None, "a write that did not land was handed over ({outcome:?})"),
        }
        assert_eq!(loom::future::block_on(hints.take("k", 5)), None, "a hint is taken once");
    });
}

/// Property: a queued register update admitted by its own client's write (the hint's
/// revision is its admission revision) is handed that write's value whether it looks before
/// or after the writer has its answer (`ValueHints`, `value_hints.rs`).
///
/// Preemption bound: 3 (module docs). Two threads, two to three lock acquisitions each.
#[test]
// Mutation `leasehold_loom_mutation_hints`: finish wakes before it records; loom must find
// a waiter that looks in between and gives up.
#[cfg_attr(leasehold_loom_mutation_hints, should_panic(expected = "the write was not handed over"))]
fn value_hint_reaches_the_next_holder() {
    value_hint_model("value_hint_reaches_the_next_holder", HintOutcome::Written);
}

/// Property: a waiter is never left waiting for a write that does not land: one that
/// failed, or whose announcement was dropped unfinished (a cancelled update), wakes it with
/// nothing to take.
///
/// Preemption bound: 3 (module docs). Checked once per outcome. The waiter polls by hand
/// (see [`value_hint_model`]), so a waiter nobody wakes fails an assertion.
#[test]
// Mutation `leasehold_loom_mutation_unlanded`: only a write that landed wakes the waiters;
// loom must find the waiter queued before the failed write's answer, and left waiting.
#[cfg_attr(
    leasehold_loom_mutation_unlanded,
    should_panic(expected = "the waiter was left waiting for a write that did not land")
)]
fn unlanded_write_wakes_the_waiter_with_nothing() {
    // Both under the test's name, which `scripts/loom.sh` looks for in a VIOLATION line;
    // the assertions name the outcome.
    value_hint_model("unlanded_write_wakes_the_waiter_with_nothing", HintOutcome::Failed);
    value_hint_model("unlanded_write_wakes_the_waiter_with_nothing", HintOutcome::Dropped);
}

/// Property: a value the register queue's feed saw (another client's write, at an older
/// revision) never replaces this client's own write, in flight or answered: the next
/// queued update admitted at the own write's revision is handed that write's value
/// (`ValueHints::seen`, `value_hints.rs`).
///
/// Preemption bound: 3 (module docs). Two threads, one to two lock acquisitions each.
#[test]
// Mutation `leasehold_loom_mutation_seen`: `seen` overwrites a write in flight; loom must
// find the feed landing between the announcement and its outcome.
#[cfg_attr(leasehold_loom_mutation_seen, should_panic(expected = "the client's own write was lost"))]
fn watched_value_never_replaces_own_write() {
    check("watched_value_never_replaces_own_write", || {
        let hints = Arc::new(ValueHints::default());
        let feed = {
            let hints = hints.clone();
            thread::spawn(move || hints.seen("k", b"theirs".to_vec(), 6))
        };
        hints.announce("k", b"own".to_vec()).finish(Some(7));
        feed.join().unwrap();
        let taken = loom::future::block_on(hints.take("k", 7));
        assert_eq!(taken.as_deref(), Some(&b"own"[..]), "the client's own write was lost");
    });
}
