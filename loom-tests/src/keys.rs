//! Loom models of a session's doomed and owned keys (`src/local/cleanups.rs`): the state
//! that keeps an acquisition from taking over a key whose delete is pending, and the
//! session's audit from deleting a key an acquisition or a guard owns.

use crate::local::cleanups::Cleanups;
use crate::models::{check, poll_with, CountingWaker};
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Property: a key is doomed while any cleanup that deletes it runs, and a waiter for the
/// key (`Cleanups::key_idle`, what an acquisition of the key waits on) completes only once
/// none does and is always woken then. Two cleanups of one key end on two threads (each sets
/// its flag first) while a third thread polls the waiter once; if it completed, both had
/// ended; if not, it is woken after they end, and completes.
///
/// Preemption bound: 3 (module docs). Three threads, one to two lock acquisitions each.
#[test]
// Mutation `leasehold_loom_mutation_doom`: the first cleanup that ends forgets the key while
// the second still deletes it; loom must find the waiter done too early.
#[cfg_attr(leasehold_loom_mutation_doom, should_panic(expected = "a doomed key looked free"))]
fn a_key_stays_doomed_while_a_cleanup_of_it_runs() {
    check("a_key_stays_doomed_while_a_cleanup_of_it_runs", || {
        let cleanups = Arc::new(Cleanups::new());
        let ended = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
        let ending = |i: usize| {
            let (running, ended) = (Cleanups::start_for(&cleanups, "k"), ended.clone());
            move || {
                ended[i].store(true, Ordering::SeqCst);
                drop(running);
            }
        };
        let (first, second) = (ending(0), ending(1));
        let waker = std::sync::Arc::<CountingWaker>::default();
        let waiter = {
            let (cleanups, ended, waker) = (cleanups.clone(), ended.clone(), waker.clone());
            thread::spawn(move || {
                let mut idle = Box::pin(Cleanups::key_idle(&cleanups, "k"));
                let done = poll_with(idle.as_mut(), &waker);
                if done {
                    let both = ended.iter().all(|e| e.load(Ordering::SeqCst));
                    assert!(both, "a doomed key looked free");
                }
                (done, idle)
            })
        };
        let cleaner = thread::spawn(first);
        second();
        cleaner.join().unwrap();
        let (done, mut idle) = waiter.join().unwrap();
        assert!(!cleanups.is_doomed("k"));
        if !done {
            assert!(waker.wakes() >= 1, "the key's waiter was never woken");
            assert!(poll_with(idle.as_mut(), &waker), "woken but not done");
        }
    });
}

/// Property: a cleanup that has ended its key's doom (`Running::undoom`: its delete is done,
/// and it hands on the session's slot for the key next) still counts as running: waiting
/// for every cleanup (`Cleanups::idle`, what `Session::settle` waits on) completes only once
/// it is dropped, after the slot went on; and the key stays doomed while another cleanup of
/// it runs. One thread undooms the first cleanup, hands on (a flag) and drops it; another
/// polls `idle` once; the main thread checks the key, then drops the second cleanup.
///
/// Preemption bound: 3 (module docs). Three threads, one to three lock acquisitions each.
#[test]
// Mutation `leasehold_loom_mutation_doom`: the undoom forgets every doom of the key while
// the second cleanup still deletes it; loom must find the key free too early.
#[cfg_attr(leasehold_loom_mutation_doom, should_panic(expected = "a doomed key looked free"))]
// Mutation `leasehold_loom_mutation_cleanups` (the idle future reads the count and registers
// its waker in two steps) loses the idle waiter's wake-up here too.
#[cfg_attr(leasehold_loom_mutation_cleanups, should_panic(expected = "the idle waiter was never woken"))]
fn an_undoomed_cleanup_runs_until_it_is_dropped() {
    check("an_undoomed_cleanup_runs_until_it_is_dropped", || {
        let cleanups = Arc::new(Cleanups::new());
        let mut first = Cleanups::start_for(&cleanups, "k");
        let second = Cleanups::start_for(&cleanups, "k");
        let handed_on = Arc::new(AtomicBool::new(false));
        let waker = std::sync::Arc::<CountingWaker>::default();
        let waiter = {
            let (cleanups, handed_on, waker) = (cleanups.clone(), handed_on.clone(), waker.clone());
            thread::spawn(move || {
                let mut idle = Box::pin(Cleanups::idle(&cleanups));
                let done = poll_with(idle.as_mut(), &waker);
                if done {
                    assert!(handed_on.load(Ordering::SeqCst), "idle before the slot was handed on");
                }
                (done, idle)
            })
        };
        let cleaner = {
            let handed_on = handed_on.clone();
            thread::spawn(move || {
                first.undoom();
                handed_on.store(true, Ordering::SeqCst);
                drop(first);
            })
        };
        assert!(cleanups.is_doomed("k"), "a doomed key looked free");
        drop(second);
        cleaner.join().unwrap();
        let (done, mut idle) = waiter.join().unwrap();
        assert!(!cleanups.is_doomed("k"));
        if !done {
            assert!(waker.wakes() >= 1, "the idle waiter was never woken");
            assert!(poll_with(idle.as_mut(), &waker), "woken but not done");
        }
    });
}

/// Property: ending a cleanup's doom (`Running::undoom`) frees the key at once, before the
/// cleanup is dropped, and wakes a waiter for the key: an acquisition of the session that
/// waits for the key (`Cleanups::key_idle`) goes on while the cleanup still hands on the
/// slot. One thread undooms, checks the key and drops; another polls the key's waiter once.
///
/// Preemption bound: 3 (module docs). Two threads, one to two lock acquisitions each.
#[test]
// Mutation `leasehold_loom_mutation_undoom`: the undoom frees the key but wakes nobody (and
// the drop, its key gone, wakes no key waiter); loom must find the waiter queued first.
#[cfg_attr(leasehold_loom_mutation_undoom, should_panic(expected = "the key's waiter was not woken by the undoom"))]
fn undoom_frees_the_key_and_wakes_its_waiter() {
    check("undoom_frees_the_key_and_wakes_its_waiter", || {
        let cleanups = Arc::new(Cleanups::new());
        let mut running = Cleanups::start_for(&cleanups, "k");
        let waker = std::sync::Arc::<CountingWaker>::default();
        let waiter = {
            let (cleanups, waker) = (cleanups.clone(), waker.clone());
            thread::spawn(move || {
                let mut idle = Box::pin(Cleanups::key_idle(&cleanups, "k"));
                let done = poll_with(idle.as_mut(), &waker);
                (done, idle)
            })
        };
        running.undoom();
        assert!(!cleanups.is_doomed("k"), "still doomed after its undoom");
        let (done, mut idle) = waiter.join().unwrap();
        if !done {
            assert!(waker.wakes() >= 1, "the key's waiter was not woken by the undoom");
            assert!(poll_with(idle.as_mut(), &waker), "woken but not done");
        }
        drop(running);
    });
}

/// Property: an acquisition's claim on a key and the audit's doom of it (which deletes
/// keys nothing owns) exclude each other: of a thread that claims the key and one that
/// dooms it as unowned, at most one succeeds while both hold what they got; and a third
/// thread's plain doom (a guard's release) never stops the audit from seeing the key owned.
///
/// Preemption bound: 3 (module docs). Three threads, one to two lock acquisitions each.
#[test]
// Mutation `leasehold_loom_mutation_claim`: claim() does not look at the doomed keys; loom
// must find the key both claimed and doomed by the audit.
#[cfg_attr(leasehold_loom_mutation_claim, should_panic(expected = "a claimed key was doomed by the audit"))]
fn a_claimed_key_is_never_doomed_by_the_audit() {
    check("a_claimed_key_is_never_doomed_by_the_audit", || {
        let cleanups = Arc::new(Cleanups::new());
        let claimer = {
            let cleanups = cleanups.clone();
            thread::spawn(move || Cleanups::claim(&cleanups, "k"))
        };
        let auditor = {
            let cleanups = cleanups.clone();
            thread::spawn(move || Cleanups::doom_unowned(&cleanups, "k"))
        };
        // A release of another key meanwhile changes nothing for "k".
        drop(Cleanups::start_for(&cleanups, "j"));
        let (owned, doomed) = (claimer.join().unwrap(), auditor.join().unwrap());
        assert!(!(owned.is_some() && doomed.is_some()), "a claimed key was doomed by the audit");
        assert!(owned.is_some() || doomed.is_some(), "neither the claim nor the audit got the key");
    });
}
