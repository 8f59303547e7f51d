//! Lock-delay checks (`Mutex::with_lock_delay`, `Election::with_lock_delay`), run by every
//! backend's test file.
//!
//! Times are lower bounds: "not acquired before the delay", a correctness property. The
//! memory backend runs them with paused time and also checks the upper bounds the checks
//! return. `crash(lease)` makes a lease vanish on the server as if its holder had died.

use leasehold::{Client, Election, Error, Mutex, Strategy};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Makes a lease vanish on the server, as if its holder had crashed.
pub type Crash<'a> = &'a (dyn Fn(i64) + Sync);

/// Bound on every wait that is not the delay itself (liveness, not speed).
const LIMIT: Duration = Duration::from_secs(30);

fn fresh(base: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{base}-{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

async fn keys(client: &Client, name: &str) -> usize {
    let prefix = client.prefix_of(name).unwrap();
    client.backend().range_prefix(&prefix, 0).await.unwrap().0.len()
}

/// Waits (bounded) until `n` keys exist under the name's prefix.
async fn until_keys(client: &Client, name: &str, n: usize) {
    for _ in 0..3000 {
        if keys(client, name).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name}: never {n} keys");
}

/// A clean unlock hands the lock to the waiter without the delay, and a newcomer after it
/// gets the lock at once. Returns how long the hand-off took.
pub async fn clean_unlock_has_no_delay(client: &Client, strategy: Strategy, delay: Duration) -> Duration {
    let name = fresh("ld-clean");
    let (a, b, c) = (client.session().await.unwrap(), client.session().await.unwrap(), client.session().await.unwrap());
    let held = Mutex::new(&a, &name).unwrap().with_lock_delay(delay).lock().await.unwrap();
    let mb = Mutex::new(&b, &name).unwrap().with_lock_delay(delay).with_strategy(strategy);
    assert_eq!(mb.lock_delay(), Some(delay));
    let waiting = tokio::spawn(async move { mb.lock().await.map(|g| (Instant::now(), g)) });
    if strategy == Strategy::Pessimistic {
        until_keys(client, &name, 2).await;
    }
    let released = Instant::now();
    held.unlock().await.unwrap();
    let (got, guard) = tokio::time::timeout(LIMIT, waiting).await.expect("waiter got the lock").unwrap().unwrap();
    let handoff = got - released;
    assert!(handoff < delay, "a clean unlock delayed the next holder by {handoff:?}");
    guard.unlock().await.unwrap();
    let mc = Mutex::new(&c, &name).unwrap().with_lock_delay(delay).with_strategy(strategy);
    let again = mc.try_lock().await.unwrap().expect("free at once after a clean unlock");
    again.unlock().await.unwrap();
    assert_eq!(keys(client, &name).await, 0);
    handoff
}

/// The holder's lease expires while another waits: the waiter is not given the lock before
/// the delay has passed since the expiry, nobody else gets it meanwhile, the old holder's
/// fenced writes are refused, and the new holder's clean unlock ends the delay for others.
/// Returns how long after the expiry the waiter got the lock.
pub async fn expiry_delays_the_waiter(
    client: &Client,
    crash: Crash<'_>,
    strategy: Strategy,
    delay: Duration,
) -> Duration {
    let name = fresh("ld-expiry");
    let (a, b, c) = (client.session().await.unwrap(), client.session().await.unwrap(), client.session().await.unwrap());
    let old = Mutex::new(&a, &name).unwrap().with_lock_delay(delay).lock().await.unwrap();
    let mb = Mutex::new(&b, &name).unwrap().with_lock_delay(delay).with_strategy(strategy);
    let waiting = tokio::spawn(async move { mb.lock().await.map(|g| (Instant::now(), g)) });
    if strategy == Strategy::Pessimistic {
        until_keys(client, &name, 2).await;
    }
    let crashed = Instant::now();
    crash(a.lease_id());
    let mc = Mutex::new(&c, &name).unwrap().with_lock_delay(delay);
    assert!(mc.try_lock().await.unwrap().is_none(), "a third session got the lock during the delay");
    let (got, guard) =
        tokio::time::timeout(LIMIT + delay, waiting).await.expect("waiter got the lock").unwrap().unwrap();
    let waited = got - crashed;
    assert!(waited >= delay, "the waiter got the lock {waited:?} after the expiry (delay {delay:?})");
    assert!(guard.fencing_token() > old.fencing_token());
    let r = old.fenced_put(format!("{name}.data"), "stale").await;
    assert!(matches!(r, Err(Error::NotHeld { .. })), "{r:?}");
    guard.fenced_put(format!("{name}.data"), "new").await.unwrap();
    guard.unlock().await.unwrap();
    let again = mc.try_lock().await.unwrap().expect("free at once after the new holder's clean unlock");
    again.unlock().await.unwrap();
    waited
}

/// A newcomer after an expiry (nobody was waiting): a try is refused during the delay
/// leaving no key, a timeout shorter than the delay fails at once leaving no key, a
/// `lock()` dropped during the delay leaves no key, and
/// `lock` gets it no earlier than the delay after the newcomer first saw the expiry.
/// Returns how long after its first try the newcomer got the lock.
pub async fn expiry_delays_a_newcomer(
    client: &Client,
    crash: Crash<'_>,
    strategy: Strategy,
    delay: Duration,
) -> Duration {
    let name = fresh("ld-newcomer");
    let (a, c) = (client.session().await.unwrap(), client.session().await.unwrap());
    let old = Mutex::new(&a, &name).unwrap().with_lock_delay(delay).lock().await.unwrap();
    crash(a.lease_id());
    until_keys(client, &name, 0).await;
    let mc = Mutex::new(&c, &name).unwrap().with_lock_delay(delay).with_strategy(strategy);
    let first_try = Instant::now();
    assert!(mc.try_lock().await.unwrap().is_none(), "got the lock within the delay");
    assert_eq!(keys(client, &name).await, 0, "a refused try left its key");
    let r = mc.lock_timeout(delay / 4).await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(first_try.elapsed() < delay, "a timeout shorter than the delay did not fail at once");
    c.settle().await;
    assert_eq!(keys(client, &name).await, 0, "a timed-out acquisition left its key");
    // Dropping lock() while it waits out the delay leaves nothing behind either.
    assert!(tokio::time::timeout(delay / 4, mc.lock()).await.is_err(), "got the lock within the delay");
    c.settle().await;
    assert_eq!(keys(client, &name).await, 0, "a cancelled acquisition left its key");
    let guard = mc.lock().await.unwrap();
    let waited = first_try.elapsed();
    assert!(waited >= delay, "got the lock {waited:?} after the expiry was seen (delay {delay:?})");
    assert!(guard.fencing_token() > old.fencing_token());
    guard.unlock().await.unwrap();
    waited
}

/// Dropping a guard is not a clean release: the next acquirer waits the delay.
pub async fn dropped_guard_is_not_clean(client: &Client, delay: Duration) {
    let name = fresh("ld-drop");
    let (a, b) = (client.session().await.unwrap(), client.session().await.unwrap());
    drop(Mutex::new(&a, &name).unwrap().with_lock_delay(delay).lock().await.unwrap());
    a.settle().await;
    let mb = Mutex::new(&b, &name).unwrap().with_lock_delay(delay);
    let started = Instant::now();
    assert!(mb.try_lock().await.unwrap().is_none(), "a dropped guard counted as a clean unlock");
    mb.lock().await.unwrap().unlock().await.unwrap();
    assert!(started.elapsed() >= delay);
    // Without lock-delay the same drop hands over at once.
    let plain = Mutex::new(&a, &format!("{name}-plain")).unwrap();
    drop(plain.lock().await.unwrap());
    a.settle().await;
    assert!(Mutex::new(&b, &format!("{name}-plain")).unwrap().try_lock().await.unwrap().is_some());
}

/// An acquirer whose key is revoked during the delay fails with `NotHeld`: its session
/// lives on (the old code said `SessionLost`).
pub async fn revoked_during_the_delay(client: &Client, delay: Duration) {
    let name = fresh("ld-revoked");
    let (a, b) = (client.session().await.unwrap(), client.session().await.unwrap());
    drop(Mutex::new(&a, &name).unwrap().with_lock_delay(delay).lock().await.unwrap());
    a.settle().await; // not a clean release: the next acquirer waits the delay
    let mb = Mutex::new(&b, &name).unwrap().with_lock_delay(delay);
    let waiting = tokio::spawn(async move { mb.lock().await.map(|g| g.fencing_token()) });
    until_keys(client, &name, 1).await; // b is admitted and waiting out the delay
    let holder = client.holder(&name).await.unwrap().expect("b's key");
    assert_eq!(holder.lease, b.lease_id());
    assert!(client.revoke(&name, &holder).await.unwrap());
    let r = tokio::time::timeout(LIMIT + delay, waiting).await.expect("returned").unwrap();
    assert!(matches!(r, Err(Error::NotHeld { .. })), "{r:?}");
    assert!(b.is_valid(), "the acquirer's session lives on");
    assert_eq!(keys(client, &name).await, 0);
}

/// An acquirer whose own lease expires during the delay fails with `SessionLost`, leaving
/// nothing behind.
pub async fn session_lost_during_the_delay(client: &Client, crash: Crash<'_>, delay: Duration) {
    let name = fresh("ld-lost");
    let a = client.session().await.unwrap();
    let b = client.session_builder().ttl(Duration::from_secs(2)).open().await.unwrap();
    let _old = Mutex::new(&a, &name).unwrap().with_lock_delay(delay).lock().await.unwrap();
    crash(a.lease_id());
    until_keys(client, &name, 0).await;
    let mb = Mutex::new(&b, &name).unwrap().with_lock_delay(delay);
    let waiting = tokio::spawn(async move { mb.lock().await.map(|g| g.fencing_token()) });
    until_keys(client, &name, 1).await; // b is admitted and waiting out the delay
    crash(b.lease_id());
    let r = tokio::time::timeout(LIMIT + delay, waiting).await.expect("returned").unwrap();
    assert!(matches!(r, Err(Error::SessionLost { .. })), "{r:?}");
    assert_eq!(keys(client, &name).await, 0);
}

/// `Election::with_lock_delay`: a clean resign hands leadership over without the delay; a
/// leader whose lease expires delays the next leader by the delay, nobody else leads
/// meanwhile, and the next leader's clean resign ends it. Returns how long after the
/// expiry the next leader was elected.
pub async fn election_expiry_delays_the_next_leader(client: &Client, crash: Crash<'_>, delay: Duration) -> Duration {
    let name = fresh("ld-elect");
    let (a, b, c) = (client.session().await.unwrap(), client.session().await.unwrap(), client.session().await.unwrap());
    let ea = Election::new(&a, &name).unwrap().with_lock_delay(delay);
    assert_eq!(ea.lock_delay(), Some(delay));
    let first = ea.campaign("a").await.unwrap();
    let eb = Election::new(&b, &name).unwrap().with_lock_delay(delay);
    let waiting = tokio::spawn(async move { eb.campaign("b").await.map(|l| (Instant::now(), l)) });
    until_keys(client, &name, 2).await;
    let resigned = Instant::now();
    first.resign().await.unwrap();
    let (got, second) = tokio::time::timeout(LIMIT, waiting).await.expect("b was elected").unwrap().unwrap();
    assert!(got - resigned < delay, "a clean resign delayed the next leader by {:?}", got - resigned);

    let ec = Election::new(&c, &name).unwrap().with_lock_delay(delay);
    let waiting = tokio::spawn(async move { ec.campaign("c").await.map(|l| (Instant::now(), l)) });
    until_keys(client, &name, 2).await;
    let crashed = Instant::now();
    crash(b.lease_id());
    let again = Election::new(&a, &name).unwrap().with_lock_delay(delay);
    assert!(again.try_campaign("a").await.unwrap().is_none(), "a third candidate led during the delay");
    let (got, third) = tokio::time::timeout(LIMIT + delay, waiting).await.expect("c was elected").unwrap().unwrap();
    let waited = got - crashed;
    assert!(waited >= delay, "the next leader was elected {waited:?} after the expiry (delay {delay:?})");
    assert!(third.fencing_token() > second.fencing_token());
    assert_eq!(again.leader().await.unwrap().map(|l| l.value), Some(b"c".to_vec()));
    let r = second.proclaim("stale").await;
    assert!(matches!(r, Err(Error::NotHeld { .. })), "{r:?}");
    third.resign().await.unwrap();
    let fourth = again.try_campaign("a").await.unwrap().expect("free at once after a clean resign");
    fourth.resign().await.unwrap();
    assert_eq!(keys(client, &name).await, 0);
    waited
}
