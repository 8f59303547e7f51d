//! Regression tests of how a session ends and hands its lease on (close, detach, re-attach),
//! found by the reviews of 2026-12-05, each on the embedded backend — behind the
//! fault-injecting decorator where a fault makes the interleaving — on paused time. Each
//! failed on the code before its fix (the commit that fixed it says how). The session's
//! other safety regressions are in `tests/safety.rs`.
#[path = "support/faulty.rs"]
mod faulty;
#[path = "support/safety_helpers.rs"]
mod safety_helpers;

use faulty::{Fault, Op};
use leasehold::backend::Backend;
use leasehold::{Client, Error, MemoryBackend, Mutex, Semaphore};
use safety_helpers::{faulty, keys, other_session, until};
use std::time::Duration;

/// A close whose revoke fails leaves the session as dropping it does: once its last handle
/// is gone the lease is revoked in the background, not left to hold its keys for a TTL
/// (here an hour). (Found by a review, 2026-12-05: `close` marked the session closed before
/// it revoked, so the drop of the last handle found it closed and revoked nothing.)
#[tokio::test(start_paused = true)]
async fn a_close_whose_revoke_failed_still_revokes_when_the_last_handle_goes() {
    let store = MemoryBackend::new();
    let (client, faults) = faulty(&store);
    let s = client.session_builder().ttl(Duration::from_secs(3600)).open().await.unwrap();
    let lease = s.lease_id();
    faults.inject(Op::Revoke, None, Fault::FailBefore, Some(1));
    assert!(s.clone().close().await.is_err(), "the revoke failed");
    drop(s); // the last handle
    for _ in 0..6000 {
        if store.lease_ttl(lease).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the closed session's lease still lives a minute after its last handle went");
}

/// A session detached (its lease handed to a successor) is never revoked by the process
/// that detached it: a close through another handle after the detach revokes nothing and
/// fails with `SessionClosed`. And a session whose close began to revoke cannot be
/// detached (`SessionClosed`): that revoke may still land after a successor attached. (A
/// review found both, 2026-12-05: a revoke a failed close left owed was made when the last
/// handle went, after the detach; and before that, a late close revoked the successor's
/// lease.)
#[tokio::test(start_paused = true)]
async fn a_detached_lease_is_never_revoked_by_its_old_process() {
    let store = MemoryBackend::new();
    let (client, faults) = faulty(&store);
    let open = || client.session_builder().ttl(Duration::from_secs(3600)).open();
    // A close that failed: its revoke may yet land, so the lease is not handed on.
    let s = open().await.unwrap();
    faults.inject(Op::Revoke, None, Fault::FailBefore, Some(1));
    assert!(s.clone().close().await.is_err(), "the revoke failed");
    assert!(matches!(s.detach(), Err(Error::SessionClosed { .. })), "detached after a close began");
    // A session lost at its deadline, whose keep-alive then revoked the lease (its answer
    // lost here: the revoke may land any time): not handed on either.
    let s = open().await.unwrap();
    faults.inject(Op::Renew, None, Fault::FailBefore, None);
    faults.inject(Op::OpenKeepAlive, None, Fault::FailBefore, None);
    faults.inject(Op::Revoke, None, Fault::LoseAnswer, None);
    s.lost().await;
    until("the keep-alive revoked", || faults.calls(Op::Revoke) >= 2).await;
    faults.clear_all();
    assert!(matches!(s.detach(), Err(Error::SessionLost { .. })), "detached after its keep-alive's revoke");
    // A detach, then a close through another handle.
    let s = open().await.unwrap();
    let late = s.clone();
    let lease = s.detach().unwrap();
    assert!(matches!(late.close().await, Err(Error::SessionClosed { .. })), "closed after its detach");
    let successor = Client::new(store.clone()).session_builder().attach(lease).open().await.unwrap();
    let guard = Mutex::new(&successor, "m").unwrap().lock().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await; // what the old process left to run
    assert!(store.lease_ttl(lease).await.unwrap().is_some(), "the successor's lease was revoked");
    assert!(guard.is_valid());
    guard.unlock().await.unwrap();
    successor.close().await.unwrap();
}

/// `release_leftovers` stops once its session is detached through another handle: the
/// lease is then its successor's, and a leftover the successor takes over must not be
/// deleted under it. Here the first leftover's read fails a few times (retried), the
/// session is detached meanwhile, and neither leftover may go. (A review found it,
/// 2026-12-05: the loop retried and deleted on, whatever became of the session.)
#[tokio::test(start_paused = true)]
async fn release_leftovers_stops_at_a_detach() {
    let store = MemoryBackend::new();
    let before = Client::new(store.clone()).session().await.unwrap();
    for name in ["la", "lb"] {
        std::mem::forget(Mutex::new(&before, name).unwrap().lock().await.unwrap());
        // "crash"
    }
    let lease = before.detach().unwrap();
    let (client, faults) = faulty(&store);
    let again = client.session_builder().attach(lease).open().await.unwrap();
    assert_eq!(again.leftover_keys().len(), 2);
    faults.inject(Op::Get, Some("la/"), Fault::FailBefore, Some(3));
    let releasing = tokio::spawn({
        let again = again.clone();
        async move { again.release_leftovers().await }
    });
    until("the first leftover's read failed", || faults.calls(Op::Get) >= 1).await;
    let handed_on = again.detach().unwrap();
    let released = releasing.await.unwrap();
    assert!(matches!(released, Err(Error::SessionClosed { .. })), "{released:?}");
    assert_eq!(
        keys(&store, "la/").await.len() + keys(&store, "lb/").await.len(),
        2,
        "a leftover was deleted after the detach"
    );
    assert!(store.lease_ttl(handed_on).await.unwrap().is_some());
}

/// A guard of a detached session deletes and writes nothing any more: its key may be a
/// successor's now (adopted with the same create revision, so a release or fenced write
/// conditional on it would reach the successor's lock). Its `unlock` and fenced writes fail
/// with `SessionClosed` and leave the key to the successor. (A review found it,
/// 2026-12-05: the old guard's unlock deleted the successor's key, and a third session
/// took the lock while the successor's guard said it held.)
#[tokio::test(start_paused = true)]
async fn a_guard_of_a_detached_session_touches_nothing() {
    let store = MemoryBackend::new();
    let before = Client::new(store.clone()).session().await.unwrap();
    let old = Mutex::new(&before, "job").unwrap().lock().await.unwrap();
    let lease = before.clone().detach().unwrap();
    let after = Client::new(store.clone()).session_builder().attach(lease).open().await.unwrap();
    let new = Mutex::new(&after, "job").unwrap().lock().await.unwrap();
    assert_eq!(new.fencing_token(), old.fencing_token(), "taken over with its token");
    let wrote = old.fenced_put("job.out", "stale").await;
    assert!(matches!(wrote, Err(Error::SessionClosed { .. })), "{wrote:?}");
    assert!(store.get("job.out").await.unwrap().is_none(), "the old guard wrote under the successor's lock");
    let released = old.unlock().await;
    assert!(matches!(released, Err(Error::SessionClosed { .. })), "{released:?}");
    let c = other_session(&store).await;
    let third = Mutex::new(&c, "job").unwrap().try_lock().await.unwrap();
    assert!(third.is_none(), "two holders: the old guard's unlock freed the successor's lock");
    assert!(new.is_valid());
    new.unlock().await.unwrap();
}

/// The same for a session that was lost before it was detached (its status stays "lost",
/// not "closed"): a detach hands the lease on all the same, so its guards touch nothing
/// either. (The gate looked at the status alone: a detach that came after the loss left
/// the old guards free to write; a review found the race with the keep-alive's loss,
/// 2026-12-05. Here the loss is the server's "lease not found", so the keep-alive revokes
/// nothing and the detach succeeds.)
#[tokio::test(start_paused = true)]
async fn a_guard_of_a_session_lost_then_detached_touches_nothing() {
    let store = MemoryBackend::new();
    let s = Client::new(store.clone()).session().await.unwrap();
    let old = Mutex::new(&s, "job").unwrap().lock().await.unwrap();
    store.revoke_lease(s.lease_id()).await.unwrap(); // the server's "lease not found"
    s.lost().await;
    s.clone().detach().unwrap();
    let r = old.fenced_put("job.out", "stale").await;
    assert!(matches!(r, Err(Error::SessionClosed { .. })), "{r:?}");
    let r = old.unlock().await;
    assert!(matches!(r, Err(Error::SessionClosed { .. })), "{r:?}");
}

/// The same when the detach comes while a leftover's read is on its way: the delete that
/// would follow it is not sent (it was: the read's answer came after the detach, and the
/// delete by the revision it read removed the key the successor had taken over; a review
/// of `release_leftovers_stops_at_a_detach` found it, 2026-12-05).
#[tokio::test(start_paused = true)]
async fn release_leftovers_sends_no_delete_after_a_detach() {
    let store = MemoryBackend::new();
    let before = Client::new(store.clone()).session().await.unwrap();
    std::mem::forget(Mutex::new(&before, "la").unwrap().lock().await.unwrap()); // "crash"
    let lease = before.detach().unwrap();
    let (client, faults) = faulty(&store);
    let again = client.session_builder().attach(lease).open().await.unwrap();
    faults.inject(Op::Get, Some("la/"), Fault::DelayAnswer(Duration::from_secs(1)), Some(1));
    let releasing = tokio::spawn({
        let again = again.clone();
        async move { again.release_leftovers().await }
    });
    until("the leftover's read was sent", || faults.calls(Op::Get) >= 1).await;
    let handed_on = again.detach().unwrap();
    let successor = Client::new(store.clone()).session_builder().attach(handed_on).open().await.unwrap();
    let held = Mutex::new(&successor, "la").unwrap().lock().await.unwrap();
    let released = releasing.await.unwrap();
    assert!(matches!(released, Err(Error::SessionClosed { .. })), "{released:?}");
    assert!(store.get(held.key()).await.unwrap().is_some(), "the successor's key was deleted");
    held.unlock().await.unwrap();
}

/// Attaching to a lease whose TTL is past what a session takes (granted through the
/// backend by something else, here one that never expires) fails with `TtlOutOfRange`, as
/// opening a session with such a TTL does; it used to panic adding the TTL to the clock
/// (a review found it, 2026-12-05).
#[tokio::test(start_paused = true)]
async fn attaching_to_a_lease_with_a_huge_ttl_is_refused() {
    let store = MemoryBackend::new();
    let lease = store.grant_lease(Duration::MAX).await.unwrap().id;
    let attached = Client::new(store.clone()).session_builder().attach(lease).open().await;
    assert!(matches!(attached, Err(Error::TtlOutOfRange { .. })), "{attached:?}");
    assert!(store.lease_ttl(lease).await.unwrap().is_some(), "the lease is left as it was");
}

/// A re-attach whose lease holds a key of a recipe's shape numbered `u64::MAX` (written by
/// something else) opens all the same, and its acquisitions still get keys. (New keys are
/// numbered above the leftovers': `u64::MAX + 1` panicked in debug builds, "attempt to add
/// with overflow"; found by a review, 2026-12-05.)
#[tokio::test(start_paused = true)]
async fn a_leftover_numbered_u64_max_does_not_fail_the_attach() {
    let store = MemoryBackend::new();
    let client = Client::new(store.clone());
    let s = client.session().await.unwrap();
    let key = format!("slots/{:x}-{}", s.lease_id(), u64::MAX);
    let put = vec![leasehold::Write::Put { key: key.clone(), value: b"1".to_vec(), lease: Some(s.lease_id()) }];
    store.write_if(&[], put).await.unwrap();
    let lease = s.detach().unwrap();
    let again = client.session_builder().attach(lease).open().await.unwrap();
    assert_eq!(again.leftover_keys(), [key]);
    let permit = Semaphore::new(&again, "other", 1).unwrap().acquire().await.unwrap();
    permit.release().await.unwrap();
    assert_eq!(again.release_leftovers().await.unwrap(), 1);
}
