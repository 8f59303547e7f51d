//! Checks of weighted permits ([`Semaphore::acquire_many`] and its kin) that run unchanged
//! on every backend, as the rest of the suite: fresh names, every wait on a signal and
//! bounded by [`LIMIT`](super::recipes::LIMIT), no sleeps.
#![allow(dead_code)] // each test binary runs the checks its backend supports

use super::recipes::{fresh, keys, poll_then_drop, sessions, until_keys, within, Mix};
use leasehold::{Client, Error, Permit, Semaphore, Strategy};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// 12 tasks on 4 sessions, asking for 1, 2, 3, 5, 2 or 4 permits, take a 5-permit
/// semaphore 3 times each: the permits held at once, summed in a shared counter by the
/// holders themselves, never exceed 5, and every acquisition completes. With
/// [`Mix::Mixed`] every other task is optimistic.
pub async fn limit_holds_under_contention(client: &Client, mix: Mix) {
    const PERMITS: u32 = 5;
    const WEIGHTS: [u32; 6] = [1, 2, 3, 5, 2, 4];
    const TASKS: usize = 12;
    let name = fresh("permits-contention");
    let sessions = sessions(client, 4).await;
    let holding = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let admitted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let mut sem = Semaphore::new(&sessions[i % sessions.len()], &name, PERMITS).unwrap();
        if matches!(mix, Mix::Mixed) && i % 2 == 1 {
            sem = sem.with_strategy(Strategy::Optimistic);
        }
        let weight = WEIGHTS[i % WEIGHTS.len()];
        let (holding, most, admitted) = (holding.clone(), most.clone(), admitted.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let permit = sem.acquire_many(weight).await.unwrap();
                assert_eq!(permit.permits(), weight);
                let now = holding.fetch_add(weight, Ordering::SeqCst) + weight;
                most.fetch_max(now, Ordering::SeqCst);
                assert!(now <= PERMITS, "{now} permits held of {PERMITS}");
                admitted.fetch_add(1, Ordering::SeqCst);
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                }
                holding.fetch_sub(weight, Ordering::SeqCst);
                permit.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        within("contending tasks", t).await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::SeqCst), TASKS * 3);
    assert!(most.load(Ordering::SeqCst) >= 5, "the task asking for all 5 held them");
    for s in &sessions {
        s.settle().await;
    }
    assert_eq!(keys(client, &client.prefix_of(&name).unwrap()).await, Vec::<String>::new());
}

/// With 3 of 5 permits held by one acquisition, a try for 3 is refused and a try for 2
/// takes the last two; then nothing is left, not even one; after the 3 are returned, a
/// try for 4 is refused and one for 3 succeeds. Each step decides at once (no waiting), for
/// `strategy`.
pub async fn weights_respected(client: &Client, strategy: Strategy) {
    let name = fresh("permits-weights");
    let (a, b) = (client.session().await.unwrap(), client.session().await.unwrap());
    let first = Semaphore::new(&a, &name, 5).unwrap().with_strategy(strategy);
    let other = Semaphore::new(&b, &name, 5).unwrap().with_strategy(strategy);
    let three = first.acquire_many(3).await.unwrap();
    assert_eq!(three.permits(), 3);
    let r = other.try_acquire_many(3).await.unwrap();
    assert!(r.is_none(), "{strategy:?}: a try for 3 took permits with 3 of 5 held");
    let two = other.try_acquire_many(2).await.unwrap().expect("2 of 5 are free");
    assert!(other.try_acquire().await.unwrap().is_none(), "{strategy:?}: a sixth permit");
    assert!(first.try_acquire().await.unwrap().is_none(), "{strategy:?}: a sixth permit");
    three.release().await.unwrap();
    assert!(other.try_acquire_many(4).await.unwrap().is_none(), "{strategy:?}: 4 with 2 of 5 held");
    let again = first.try_acquire_many(3).await.unwrap().expect("3 of 5 are free");
    assert!(again.fencing_token() > two.fencing_token());
    again.release().await.unwrap();
    two.release().await.unwrap();
    let all = other.try_acquire_many(5).await.unwrap().expect("all are free");
    all.release().await.unwrap();
    b.settle().await;
    a.settle().await;
    assert_eq!(keys(client, &client.prefix_of(&name).unwrap()).await, Vec::<String>::new());
}

/// FIFO with weights, as tokio's semaphore: with 2 of 4 permits held (two acquisitions), a
/// waiter for 3 queues; a try for 1 is refused although 2 are free (it would pass the big
/// waiter), and a later waiter for 1 queues behind it. Returning one permit admits the big
/// waiter first (1 + 3 = 4) and not the small one (1 + 3 + 1 > 4); returning the other
/// admits the small one. Tokens follow the queue.
pub async fn big_request_not_passed(client: &Client) {
    let name = fresh("permits-fifo");
    let prefix = client.prefix_of(&name).unwrap();
    let [h, w, t]: [leasehold::Session; 3] = sessions(client, 3).await.try_into().unwrap();
    let held = Semaphore::new(&h, &name, 4).unwrap();
    let (a1, a2) = (held.acquire().await.unwrap(), held.acquire().await.unwrap());
    let (tx, mut rx) = mpsc::unbounded_channel::<(&str, Permit)>();
    let big = Semaphore::new(&w, &name, 4).unwrap();
    let big_tx = tx.clone();
    tokio::spawn(async move { big_tx.send(("big", big.acquire_many(3).await.unwrap())).unwrap() });
    until_keys(client, &prefix, 3).await;
    let late = Semaphore::new(&t, &name, 4).unwrap();
    assert!(late.try_acquire().await.unwrap().is_none(), "a try for 1 passed a queued waiter for 3");
    let small = Semaphore::new(&w, &name, 4).unwrap();
    tokio::spawn(async move { tx.send(("small", small.acquire().await.unwrap())).unwrap() });
    until_keys(client, &prefix, 4).await;
    a1.release().await.unwrap();
    let (first, big) = within("the big waiter's permits", rx.recv()).await.unwrap();
    assert_eq!((first, big.permits()), ("big", 3), "the small waiter passed the big one");
    let usage = held.usage().await.unwrap();
    let holders: Vec<(u64, u32)> = usage.holders.iter().map(|h| (h.token, h.permits)).collect();
    assert_eq!(holders, [(a2.fencing_token(), 1), (big.fencing_token(), 3)]);
    assert_eq!((usage.held(), usage.available(), usage.waiting), (4, 0, 1));
    a2.release().await.unwrap();
    let (second, small) = within("the small waiter's permit", rx.recv()).await.unwrap();
    assert_eq!((second, small.permits()), ("small", 1));
    assert!(small.fencing_token() > big.fencing_token());
    big.release().await.unwrap();
    small.release().await.unwrap();
    assert_eq!(keys(client, &prefix).await, Vec::<String>::new());
}

/// Asking for 0 permits, or for more than the semaphore has, fails at once with
/// `InvalidArgument` from every kind of acquire and both strategies (never a wait, never a
/// panic) and writes nothing, not even the count; asking for exactly N works.
pub async fn bad_counts_refused(client: &Client) {
    let name = fresh("permits-bad");
    let prefix = client.prefix_of(&name).unwrap();
    let session = client.session().await.unwrap();
    for strategy in [Strategy::Pessimistic, Strategy::Optimistic] {
        let sem = Semaphore::new(&session, &name, 3).unwrap().with_strategy(strategy);
        for n in [0, 4, u32::MAX] {
            let invalid = |r: Result<(), Error>| matches!(r, Err(Error::InvalidArgument { what: "semaphore", .. }));
            let what = format!("{strategy:?}, {n} of 3");
            assert!(invalid(within(&what, sem.acquire_many(n)).await.map(drop)), "{what}");
            assert!(invalid(within(&what, sem.try_acquire_many(n)).await.map(drop)), "{what}");
            let timed = sem.acquire_many_timeout(n, Duration::from_secs(3600));
            assert!(invalid(within(&what, timed).await.map(drop)), "{what}");
        }
    }
    assert!(client.backend().get(prefix.trim_end_matches('/')).await.unwrap().is_none(), "a count was written");
    assert_eq!(keys(client, &prefix).await, Vec::<String>::new());
    let all = Semaphore::new(&session, &name, 3).unwrap().acquire_many(3).await.unwrap();
    assert_eq!(all.permits(), 3);
    all.release().await.unwrap();
}

/// With 2 of 3 permits held: a try for 2 returns `None`, a timeout fails with `Timeout`,
/// and `acquire_many(2)` futures dropped at any point (after 0..40 polls, or while queued)
/// leave no key once the session has settled; then 3 are taken at once. Both strategies.
pub async fn try_timeout_cancel_leave_nothing(client: &Client) {
    for strategy in [Strategy::Pessimistic, Strategy::Optimistic] {
        let name = fresh("permits-cancel");
        let prefix = client.prefix_of(&name).unwrap();
        let (h, o) = (client.session().await.unwrap(), client.session().await.unwrap());
        let held = Semaphore::new(&h, &name, 3).unwrap().acquire_many(2).await.unwrap();
        let sem = Semaphore::new(&o, &name, 3).unwrap().with_strategy(strategy);
        assert!(sem.try_acquire_many(2).await.unwrap().is_none());
        match sem.acquire_many_timeout(2, Duration::from_millis(50)).await {
            Err(Error::Timeout { what: "semaphore", .. }) => {}
            other => panic!("{strategy:?}: expected a timeout, got {other:?}"),
        }
        for polls in 0..40 {
            assert!(poll_then_drop(sem.acquire_many(2), polls).await.is_none(), "only 1 is free");
        }
        if strategy == Strategy::Pessimistic {
            let queued = tokio::spawn({
                let sem = sem.clone();
                async move { sem.acquire_many(2).await }
            });
            until_keys(client, &prefix, 2).await;
            queued.abort();
            assert!(queued.await.unwrap_err().is_cancelled());
        }
        o.settle().await;
        assert_eq!(keys(client, &prefix).await, [held.key().to_owned()], "{strategy:?}");
        held.release().await.unwrap();
        let all = sem.try_acquire_many(3).await.unwrap().expect("all 3 are free");
        all.release().await.unwrap();
        assert_eq!(keys(client, &prefix).await, Vec::<String>::new());
    }
}

/// `usage` (and the session-less `Client::semaphore_usage`) count weights: holders with
/// their permits, permits held and available, waiters. A single-permit key has an empty
/// value, as keys written before weights existed, and counts 1; a weighted key holds its
/// count as text. `reacquire` keeps the weight.
pub async fn usage_counts_weights(client: &Client) {
    let name = fresh("permits-usage");
    let prefix = client.prefix_of(&name).unwrap();
    let s = sessions(client, 2).await;
    let sem = Semaphore::new(&s[0], &name, 5).unwrap();
    let a = sem.acquire_many(3).await.unwrap();
    let b = Semaphore::new(&s[1], &name, 5).unwrap().acquire().await.unwrap();
    let value = |key: String| async move { client.backend().get(&key).await.unwrap().expect("a key").value };
    assert_eq!(value(a.key().to_owned()).await, b"3");
    assert_eq!(value(b.key().to_owned()).await, b"", "a single permit is stored as before weights");
    let third = Semaphore::new(&s[1], &name, 5).unwrap();
    let waiter = tokio::spawn(async move { third.acquire_many(2).await.unwrap() });
    until_keys(client, &prefix, 3).await;
    for usage in [sem.usage().await.unwrap(), client.semaphore_usage(&name).await.unwrap().expect("a count")] {
        let holders: Vec<(u64, u32)> = usage.holders.iter().map(|h| (h.token, h.permits)).collect();
        assert_eq!(holders, [(a.fencing_token(), 3), (b.fencing_token(), 1)]);
        assert_eq!((usage.permits, usage.held(), usage.available(), usage.waiting), (5, 4, 1, 1));
    }
    a.release().await.unwrap();
    let mut c = within("the waiter's 2 permits", waiter).await.unwrap();
    let after = sem.usage().await.unwrap();
    assert_eq!((after.held(), after.available(), after.waiting), (3, 2, 0));
    Semaphore::new(&s[1], &name, 5).unwrap().reacquire(&mut c).await.unwrap();
    assert_eq!(c.permits(), 2);
    assert_eq!(value(c.key().to_owned()).await, b"2");
    assert_eq!(sem.usage().await.unwrap().held(), 3);
    b.release().await.unwrap();
    c.release().await.unwrap();
    assert_eq!(sem.usage().await.unwrap().available(), 5);
}

/// A re-attached session takes over a leftover permit key only for an acquisition of the
/// same weight: a single permit does not adopt the earlier process's 3 permits (it gets a
/// new key, and waits behind them), an `acquire_many(3)` does (same key, same token).
pub async fn reattach_takes_over_by_weight(client: &Client) {
    let name = fresh("permits-reattach");
    let prefix = client.prefix_of(&name).unwrap();
    let before = client.session().await.unwrap();
    let three = Semaphore::new(&before, &name, 4).unwrap().acquire_many(3).await.unwrap();
    let old = (three.key().to_owned(), three.fencing_token());
    std::mem::forget(three); // the earlier process "crashes", its successor keeps the lease
    let lease = before.detach().unwrap();
    let after = client.session_builder().attach(lease).open().await.unwrap();
    assert_eq!(after.leftover_keys(), std::slice::from_ref(&old.0));
    let sem = Semaphore::new(&after, &name, 4).unwrap();
    let one = sem.try_acquire().await.unwrap().expect("1 of 4 is free");
    assert_ne!(one.key(), old.0, "a single permit took over 3");
    assert_eq!(after.leftover_keys(), std::slice::from_ref(&old.0));
    assert!(sem.try_acquire().await.unwrap().is_none(), "the leftover's 3 permits are held");
    let many = sem.try_acquire_many(3).await.unwrap().expect("took over the leftover");
    assert_eq!((many.key(), many.fencing_token(), many.permits()), (old.0.as_str(), old.1, 3));
    assert!(after.leftover_keys().is_empty());
    assert_eq!(keys(client, &prefix).await.len(), 2, "a takeover made a new key");
    many.release().await.unwrap();
    one.release().await.unwrap();
    after.close().await.unwrap();
    assert_eq!(keys(client, &prefix).await, Vec::<String>::new());
}
