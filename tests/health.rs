//! `Session::status()`: the early warning before a session is lost, on the embedded
//! backend behind the fault-injecting decorator, on paused time (the store is cut off by
//! the decorator's stall, not by sleeps).
#[path = "support/faulty.rs"]
mod faulty;

use faulty::{Faults, Faulty};
use leasehold::{Client, Health, MemoryBackend};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

const LIMIT: Duration = Duration::from_secs(120);
const TTL: Duration = Duration::from_secs(3);

fn faulty(store: &MemoryBackend) -> (Client, Faults) {
    let faults = Faults::new();
    (Client::new(Faulty::new(Arc::new(store.clone()), faults.clone())), faults)
}

/// Every state the receiver sees until `last`, in order.
async fn states_until(rx: &mut watch::Receiver<Health>, last: Health) -> Vec<Health> {
    let mut seen = vec![*rx.borrow_and_update()];
    while *seen.last().unwrap() != last {
        timeout(LIMIT, rx.changed()).await.expect("a change in time").expect("the monitor ended early");
        seen.push(*rx.borrow_and_update());
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn a_late_renewal_is_at_risk_before_the_session_is_lost() {
    let store = MemoryBackend::new();
    let (client, faults) = faulty(&store);
    let session = client.session_builder().ttl(TTL).open().await.unwrap();
    let mut health = session.status();
    assert_eq!(*health.borrow(), Health::Healthy);

    // Cut off for two thirds of the TTL: renewals are late, then one gets through in time.
    faults.stall_until(Instant::now() + TTL * 2 / 3);
    assert_eq!(states_until(&mut health, Health::AtRisk).await, [Health::Healthy, Health::AtRisk]);
    let left = session.remaining();
    assert!(session.is_valid() && left > Duration::ZERO && left < TTL / 2, "at risk while still valid: {left:?}");
    assert_eq!(states_until(&mut health, Health::Healthy).await, [Health::AtRisk, Health::Healthy]);
    assert!(session.is_valid() && !session.is_lost());

    // Cut off for longer than the TTL: at risk first, then lost (final).
    faults.stall_until(Instant::now() + TTL * 3);
    let seen = states_until(&mut health, Health::Lost).await;
    assert_eq!(seen, [Health::Healthy, Health::AtRisk, Health::Lost]);
    assert!(session.is_lost());
    assert!(health.changed().await.is_err(), "nothing follows Lost: the monitor ended");

    // A second receiver of a lost session reads Lost at once.
    assert_eq!(*session.status().borrow(), Health::Lost);
}

#[tokio::test(start_paused = true)]
async fn closing_or_dropping_a_session_says_closed() {
    let store = MemoryBackend::new();
    let client = Client::new(store.clone());
    let session = client.session_builder().ttl(TTL).open().await.unwrap();
    let mut health = session.status();
    let other = session.status();
    session.close().await.unwrap();
    assert_eq!(states_until(&mut health, Health::Closed).await.last(), Some(&Health::Closed));
    assert_eq!(*other.borrow(), Health::Closed, "every receiver");

    let dropped = client.session_builder().ttl(TTL).open().await.unwrap();
    let mut health = dropped.status();
    assert_eq!(*health.borrow_and_update(), Health::Healthy);
    drop(dropped);
    assert_eq!(states_until(&mut health, Health::Closed).await.last(), Some(&Health::Closed));

    // Dropping the last handle while holding a read guard of the channel, in one
    // expression, does not deadlock (the final send runs in a task of the runtime).
    let held = client.session_builder().ttl(TTL).open().await.unwrap();
    let health = held.status();
    let was = {
        let guard = health.borrow();
        drop(held);
        *guard
    };
    assert_eq!(was, Health::Healthy);
    let mut health = health;
    assert_eq!(states_until(&mut health, Health::Closed).await.last(), Some(&Health::Closed));
}
