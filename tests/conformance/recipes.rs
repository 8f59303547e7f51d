//! Checks of the recipes (semaphore, read-write lock, election) that run unchanged on every
//! backend: each is a `pub async fn` taking a [`Client`] on a store that may be shared (the
//! names are fresh on every call). Backend differences are parameters, not branches:
//! `crash(lease)` makes a lease vanish on the server as if its holder had died (memory:
//! `MemoryBackend::expire_lease`; etcd: revoke it behind the session's back), and
//! `cut(true/false)` cuts the client off from the store and reconnects it.
//!
//! Every wait is on a signal (a channel, a watch, a barrier) and bounded by [`LIMIT`]; no
//! check sleeps to let something happen.
#![allow(dead_code)] // each test binary runs the checks its backend supports

use leasehold::{Client, Election, Error, Permit, RwLock, Semaphore, Session, Strategy};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{mpsc, Barrier};

/// No single wait in a check may take longer.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Makes a lease vanish on the server, as if its holder had crashed.
pub type Crash<'a> = &'a (dyn Fn(i64) + Sync);

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no progress within {LIMIT:?}"),
    }
}

/// A name no earlier run used.
pub fn fresh(base: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{base}-{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

pub async fn keys(client: &Client, prefix: &str) -> Vec<String> {
    client.backend().range_prefix(prefix, 0).await.unwrap().0.into_iter().map(|kv| kv.key).collect()
}

/// Waits (on a watch, not by polling) until exactly `n` keys exist under `prefix`.
pub async fn until_keys(client: &Client, prefix: &str, n: usize) {
    let backend = client.backend();
    let mut watch = backend.watch_prefix(prefix).await.unwrap();
    within(&format!("{n} keys under {prefix}"), async {
        while backend.range_prefix(prefix, 0).await.unwrap().0.len() != n {
            watch.next().await.unwrap();
        }
    })
    .await
}

/// Runs `fut` while reading the keys under `prefix` over and over: every read must find
/// exactly `expected` (`what` names the failure), and at least one read is made.
pub async fn keys_stay_while<T>(
    client: &Client,
    prefix: &str,
    expected: &[String],
    what: &str,
    fut: impl Future<Output = T>,
) -> T {
    let mut fut = std::pin::pin!(fut);
    let mut samples = 0;
    let out = loop {
        tokio::select! {
            biased;
            r = &mut fut => break r,
            k = keys(client, prefix) => {
                assert_eq!(k, expected, "{what}");
                samples += 1;
            }
        }
    };
    assert!(samples > 0);
    out
}

/// Creates `key` under `lease` as an earlier process of that lease would have left it (a
/// re-attached session's leftover).
pub async fn leftover_key(client: &Client, key: &str, lease: i64, prefix: &str) {
    use leasehold::backend::{CreateRequest, Precondition};
    let create = CreateRequest {
        key: key.to_owned(),
        value: Vec::new(),
        lease,
        precondition: Precondition::KeyAbsent,
        prefix: prefix.to_owned(),
        head_limit: 1,
        replaces: None,
        read: None,
        fence: None,
    };
    assert!(client.backend().create(create).await.unwrap().created);
}

/// Polls `fut` `polls` times (yielding in between) and drops it if it is not done by then.
pub async fn poll_then_drop<T>(fut: impl Future<Output = T>, polls: usize) -> Option<T> {
    let mut fut = std::pin::pin!(fut);
    for _ in 0..polls {
        if let Poll::Ready(v) = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
            return Some(v);
        }
        tokio::task::yield_now().await;
    }
    None
}

pub async fn sessions(client: &Client, n: usize) -> Vec<Session> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(client.session().await.unwrap());
    }
    out
}

// ---------------------------------------------------------------------------------------
// Semaphore

/// Which strategies the contending tasks use.
#[derive(Debug, Clone, Copy)]
pub enum Mix {
    /// All pessimistic (fair queue).
    Queued,
    /// Every other task optimistic.
    Mixed,
}

/// 12 tasks on 4 sessions take 3 rounds each of a 3-permit semaphore: never more than 3
/// hold at once, and 3 do hold at once (the first three admitted wait for each other while
/// holding, which only completes if the semaphore lets three in together).
pub async fn semaphore_limit_holds_under_contention(client: &Client, mix: Mix) {
    const TASKS: usize = 12;
    const PERMITS: u32 = 3;
    let name = fresh("sem-contention");
    let sessions = sessions(client, 4).await;
    let holding = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let admitted = Arc::new(AtomicUsize::new(0));
    let first_three = Arc::new(Barrier::new(PERMITS as usize));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let mut sem = Semaphore::new(&sessions[i % sessions.len()], &name, PERMITS).unwrap();
        if matches!(mix, Mix::Mixed) && i % 2 == 1 {
            sem = sem.with_strategy(Strategy::Optimistic);
        }
        let (holding, most, admitted, first_three) =
            (holding.clone(), most.clone(), admitted.clone(), first_three.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let permit = sem.acquire().await.unwrap();
                let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                assert!(now <= PERMITS as usize, "{now} holders of {PERMITS} permits");
                if admitted.fetch_add(1, Ordering::SeqCst) < PERMITS as usize {
                    first_three.wait().await;
                }
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                holding.fetch_sub(1, Ordering::SeqCst);
                permit.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        within("contending tasks", t).await.unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), PERMITS as usize, "the limit was reached");
    assert_eq!(admitted.load(Ordering::SeqCst), TASKS * 3);
    for s in &sessions {
        s.settle().await;
    }
    assert_eq!(keys(client, &client.prefix_of(&name).unwrap()).await, Vec::<String>::new());
}

/// Waiters are admitted in the order they arrived: with 2 permits held and 5 waiters
/// queued one after another, releasing the oldest permit each time admits exactly the next
/// waiter, and tokens grow in that order.
pub async fn semaphore_admits_in_arrival_order(client: &Client) {
    let name = fresh("sem-fifo");
    let prefix = client.prefix_of(&name).unwrap();
    let (holder, waiter) = (client.session().await.unwrap(), client.session().await.unwrap());
    let sem = Semaphore::new(&holder, &name, 2).unwrap();
    let mut held: VecDeque<(Option<usize>, Permit)> = VecDeque::new();
    held.push_back((None, sem.acquire().await.unwrap()));
    held.push_back((None, sem.acquire().await.unwrap()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..5 {
        let sem = Semaphore::new(&waiter, &name, 2).unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            let permit = sem.acquire().await.unwrap();
            tx.send((i, permit)).unwrap();
        });
        until_keys(client, &prefix, 2 + i + 1).await; // waiter i is queued before i + 1 starts
    }
    let mut order = Vec::new();
    let mut last_token = held.back().unwrap().1.fencing_token();
    for _ in 0..5 {
        let (_, oldest) = held.pop_front().unwrap();
        oldest.release().await.unwrap();
        let (i, permit) = within("next admission", rx.recv()).await.unwrap();
        assert!(permit.fencing_token() > last_token, "tokens grow with arrival");
        last_token = permit.fencing_token();
        order.push(i);
        held.push_back((Some(i), permit));
    }
    assert_eq!(order, [0, 1, 2, 3, 4]);
    assert!(rx.try_recv().is_err(), "nobody else was admitted");
    assert_eq!(held.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [Some(3), Some(4)]);
}

/// A holder that crashes (its lease vanishes) gives its permits back: two waiters behind
/// the two permits of the crashed session are both admitted, the crashed holder is told
/// it lost them, and its fenced writes are refused while the new holder's apply.
pub async fn semaphore_crashed_holder_permits_return(client: &Client, crash: Crash<'_>) {
    let name = fresh("sem-crash");
    let prefix = client.prefix_of(&name).unwrap();
    let doomed = client.session_builder().ttl(Duration::from_secs(2)).open().await.unwrap();
    let survivor = client.session().await.unwrap();
    let sem = Semaphore::new(&doomed, &name, 2).unwrap();
    let (a1, a2) = (sem.acquire().await.unwrap(), sem.acquire().await.unwrap());
    let (tx, mut rx) = mpsc::unbounded_channel();
    for _ in 0..2 {
        let sem = Semaphore::new(&survivor, &name, 2).unwrap();
        let tx = tx.clone();
        tokio::spawn(async move { tx.send(sem.acquire().await.unwrap()).unwrap() });
    }
    until_keys(client, &prefix, 4).await;
    assert!(rx.try_recv().is_err(), "no permit is free before the crash");
    crash(doomed.lease_id());
    let b1 = within("first returned permit", rx.recv()).await.unwrap();
    let b2 = within("second returned permit", rx.recv()).await.unwrap();
    assert!(b1.fencing_token().min(b2.fencing_token()) > a1.fencing_token().max(a2.fencing_token()));
    within("the crashed holder learns it", a1.lost()).await;
    assert!(!a1.is_valid() && !a2.is_valid());
    assert!(b1.is_valid() && b2.is_valid());
    // Permits fence writes too: the crashed holder's are refused, the new holder's applied.
    let data = format!("{name}.data");
    let r = a1.fenced_put(data.clone(), "stale").await;
    assert!(matches!(r, Err(Error::NotHeld { what: "semaphore", .. })), "{r:?}");
    b1.fenced_put(data.clone(), "fresh").await.unwrap();
    let kv = client.backend().get(&data).await.unwrap().expect("the holder's write");
    assert_eq!(kv.value, b"fresh");
}

/// `usage` reports the stored count, the holders (oldest first, with tokens and leases) and
/// how many wait, and writes nothing.
pub async fn semaphore_usage(client: &Client) {
    let name = fresh("sem-usage");
    let prefix = client.prefix_of(&name).unwrap();
    let s = sessions(client, 2).await;
    let sem = Semaphore::new(&s[0], &name, 2).unwrap();
    let unused = sem.usage().await.unwrap();
    assert_eq!((unused.permits, unused.holders.len(), unused.waiting, unused.available()), (2, 0, 0, 2));
    let count_key = prefix.trim_end_matches('/');
    assert!(client.backend().get(count_key).await.unwrap().is_none(), "usage wrote the count");

    let a = sem.acquire().await.unwrap();
    let b = Semaphore::new(&s[1], &name, 2).unwrap().acquire().await.unwrap();
    let third = Semaphore::new(&s[1], &name, 2).unwrap();
    let waiter = tokio::spawn(async move { third.acquire().await.unwrap() });
    until_keys(client, &prefix, 3).await;
    // Even a handle that asks for another count reads the stored one.
    let full = Semaphore::new(&s[1], &name, 5).unwrap().usage().await.unwrap();
    assert_eq!((full.permits, full.waiting, full.available()), (2, 1, 0));
    let seen: Vec<(u64, i64)> = full.holders.iter().map(|h| (h.token, h.lease)).collect();
    assert_eq!(seen, [(a.fencing_token(), s[0].lease_id()), (b.fencing_token(), s[1].lease_id())]);
    assert_eq!(full.holders[0].key, a.key());

    a.release().await.unwrap();
    let c = within("the waiter's permit", waiter).await.unwrap();
    let after = sem.usage().await.unwrap();
    let tokens: Vec<u64> = after.holders.iter().map(|h| h.token).collect();
    assert_eq!((tokens, after.waiting), (vec![b.fencing_token(), c.fencing_token()], 0));
    b.release().await.unwrap();
    c.release().await.unwrap();
    assert_eq!(sem.usage().await.unwrap().available(), 2);
}

/// Zero permits is refused; the first user's count is stored at `<ns><name>`; a client
/// that asks for another count (more or fewer) gets `PermitMismatch` from every kind of
/// acquire and leaves no key.
pub async fn semaphore_permit_count_mismatch(client: &Client) {
    let name = fresh("sem-count");
    let prefix = client.prefix_of(&name).unwrap();
    let (s1, s2) = (client.session().await.unwrap(), client.session().await.unwrap());
    assert!(matches!(Semaphore::new(&s1, &name, 0), Err(Error::InvalidArgument { what: "semaphore", .. })));
    let permit = Semaphore::new(&s1, &name, 3).unwrap().acquire().await.unwrap();
    let count = client.backend().get(prefix.trim_end_matches('/')).await.unwrap().expect("count stored");
    assert_eq!((count.value.as_slice(), count.lease), (&b"3"[..], 0));
    for asked in [5, 1] {
        for strategy in [Strategy::Pessimistic, Strategy::Optimistic] {
            let wrong = Semaphore::new(&s2, &name, asked).unwrap().with_strategy(strategy);
            let mismatch = |r: Result<(), Error>| match r {
                Err(Error::PermitMismatch { name: n, stored: 3, requested }) => n == name && requested == asked,
                _ => false,
            };
            assert!(mismatch(wrong.acquire().await.map(drop)));
            assert!(mismatch(wrong.try_acquire().await.map(drop)));
            assert!(mismatch(wrong.acquire_timeout(Duration::from_millis(50)).await.map(drop)));
        }
    }
    // The same count is accepted.
    let second = Semaphore::new(&s2, &name, 3).unwrap().try_acquire().await.unwrap().expect("2 of 3 free");
    s2.settle().await;
    let mut expected = vec![permit.key().to_owned(), second.key().to_owned()];
    expected.sort();
    let mut found = keys(client, &prefix).await;
    found.sort();
    assert_eq!(found, expected, "mismatching clients left no key");
}

/// With the only permit held: a try returns `None`, a timeout fails with `Timeout`, and
/// acquisitions dropped at any point (after 0..40 polls, or while queued) leave no key
/// behind once the session has settled. For both strategies.
pub async fn semaphore_try_timeout_cancel_leave_nothing(client: &Client) {
    for strategy in [Strategy::Pessimistic, Strategy::Optimistic] {
        let name = fresh("sem-cancel");
        let prefix = client.prefix_of(&name).unwrap();
        let (h, o) = (client.session().await.unwrap(), client.session().await.unwrap());
        let held = Semaphore::new(&h, &name, 1).unwrap().acquire().await.unwrap();
        let sem = Semaphore::new(&o, &name, 1).unwrap().with_strategy(strategy);
        assert!(sem.try_acquire().await.unwrap().is_none());
        match sem.acquire_timeout(Duration::from_millis(50)).await {
            Err(Error::Timeout { what: "semaphore", .. }) => {}
            other => panic!("{strategy:?}: expected a timeout, got {other:?}"),
        }
        for polls in 0..40 {
            assert!(poll_then_drop(sem.acquire(), polls).await.is_none(), "the permit is held");
        }
        if strategy == Strategy::Pessimistic {
            let queued = tokio::spawn({
                let sem = sem.clone();
                async move { sem.acquire().await }
            });
            until_keys(client, &prefix, 2).await;
            queued.abort();
            assert!(queued.await.unwrap_err().is_cancelled());
        }
        o.settle().await;
        assert_eq!(keys(client, &prefix).await, [held.key().to_owned()], "{strategy:?}");
        held.release().await.unwrap();
        // And the semaphore still works: the next acquisition is admitted at once.
        let next = sem.try_acquire().await.unwrap().expect("the permit is free");
        next.release().await.unwrap();
        assert_eq!(keys(client, &prefix).await, Vec::<String>::new());
    }
}

// ---------------------------------------------------------------------------------------
// Cancellation of the other recipes

/// Read, write and campaign futures dropped at any point (after 0..30 polls) while the
/// name is taken leave no key behind; tries and timeouts neither.
pub async fn rwlock_and_election_cancel_leave_nothing(client: &Client) {
    let (h, o) = (client.session().await.unwrap(), client.session().await.unwrap());
    let lock_name = fresh("rw-cancel");
    let lock_prefix = client.prefix_of(&lock_name).unwrap();
    let held = RwLock::new(&h, &lock_name).unwrap().write().await.unwrap();
    let lock = RwLock::new(&o, &lock_name).unwrap();
    let elect_name = fresh("elect-cancel");
    let elect_prefix = client.prefix_of(&elect_name).unwrap();
    let leader = Election::new(&h, &elect_name).unwrap().campaign("h").await.unwrap();
    let election = Election::new(&o, &elect_name).unwrap();
    for polls in 0..30 {
        assert!(poll_then_drop(lock.read(), polls).await.is_none());
        assert!(poll_then_drop(lock.write(), polls).await.is_none());
        assert!(poll_then_drop(election.campaign("o"), polls).await.is_none());
    }
    assert!(lock.try_read().await.unwrap().is_none() && lock.try_write().await.unwrap().is_none());
    assert!(lock.read_timeout(Duration::from_millis(20)).await.is_err());
    o.settle().await;
    assert_eq!(keys(client, &lock_prefix).await, [held.key().to_owned()]);
    assert_eq!(keys(client, &elect_prefix).await, [leader.key().to_owned()]);
    // Both still work: the next acquisitions are admitted once the holders go.
    held.unlock().await.unwrap();
    leader.resign().await.unwrap();
    let w = within("write after cancellations", lock.write()).await.unwrap();
    let l = within("campaign after cancellations", election.campaign("o")).await.unwrap();
    assert!(w.is_valid() && l.is_valid());
}

/// Reacquire returns a permit and queues again in one transaction: with a permit free it
/// holds again at once (a new key, a greater token; the old key's delete and the new key's
/// put share one revision); with every permit taken and a waiter queued, the waiter goes
/// first. Misuse is a typed error that leaves the permit held.
pub async fn semaphore_reacquire(client: &Client) {
    let name = fresh("sem-reacquire");
    let prefix = client.prefix_of(&name).unwrap();
    let s = sessions(client, 3).await;
    let sem: Vec<Semaphore> = s.iter().map(|s| Semaphore::new(s, &name, 2).unwrap()).collect();
    let mut permit = sem[0].acquire().await.unwrap();
    for _ in 0..3 {
        let mut watch = client.backend().watch_prefix(&prefix).await.unwrap();
        let (old_key, old_token) = (permit.key().to_owned(), permit.fencing_token());
        sem[0].reacquire(&mut permit).await.unwrap();
        assert!(permit.is_valid() && permit.fencing_token() > old_token);
        assert_ne!(permit.key(), old_key);
        assert_eq!(keys(client, &prefix).await, vec![permit.key().to_owned()], "old key left behind");
        let batch = within("the reacquire's events", watch.next()).await.unwrap();
        let deleted =
            batch.iter().any(|e| matches!(e, leasehold::backend::WatchEvent::Delete { key, .. } if *key == old_key));
        let put = batch.iter().any(|e| matches!(e, leasehold::backend::WatchEvent::Put(kv) if kv.key == permit.key()));
        assert!(deleted && put, "the delete and the put are not one revision: {batch:?}");
    }

    // Misuse leaves the permit held.
    let other = Semaphore::new(&s[0], &fresh("sem-reacquire-other"), 2).unwrap();
    let r = other.reacquire(&mut permit).await;
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    let r = sem[1].reacquire(&mut permit).await;
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    assert!(permit.is_valid());

    // Both permits taken, a waiter queued: the waiter is admitted before the reacquire.
    let second = sem[1].acquire().await.unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let third = sem[2].clone();
    let waiter = tokio::spawn(async move {
        let p = third.acquire().await.unwrap();
        got_tx.send(p.fencing_token()).unwrap();
        go_rx.await.unwrap();
        p.release().await.unwrap();
    });
    until_keys(client, &prefix, 3).await;
    let before = permit.fencing_token();
    let first = sem[0].clone();
    let reacquiring = tokio::spawn(async move {
        first.reacquire(&mut permit).await.unwrap();
        permit
    });
    let waiter_token = within("the waiter's admission", got_rx).await.unwrap();
    assert!(waiter_token > before);
    assert!(!reacquiring.is_finished(), "reacquired while both permits were held by others");
    second.release().await.unwrap();
    let permit = within("the reacquire", reacquiring).await.unwrap();
    assert!(permit.fencing_token() > waiter_token);
    go_tx.send(()).unwrap();
    waiter.await.unwrap();
    permit.release().await.unwrap();

    // Optimistic: release + acquire.
    let opt = Semaphore::new(&s[0], &name, 2).unwrap().with_strategy(Strategy::Optimistic);
    let mut p = opt.acquire().await.unwrap();
    let t = p.fencing_token();
    opt.reacquire(&mut p).await.unwrap();
    assert!(p.is_valid() && p.fencing_token() > t);
    p.release().await.unwrap();
    assert!(keys(client, &prefix).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Re-attached leases

/// A session re-attached to a lease takes over what the earlier process held through it:
/// an acquisition adopts a leftover key of its kind (same key, same fencing token, same
/// place), the rest stays held until `release_leftovers`, and new keys do not collide with
/// the old ones.
pub async fn reattach_takes_over_leftovers(client: &Client) {
    let (sem, rw, el) = (fresh("reattach-sem"), fresh("reattach-rw"), fresh("reattach-el"));
    let sem_prefix = client.prefix_of(&sem).unwrap();
    let rw_prefix = client.prefix_of(&rw).unwrap();
    let before = client.session().await.unwrap();
    let p0 = Semaphore::new(&before, &sem, 2).unwrap().acquire().await.unwrap();
    let p1 = Semaphore::new(&before, &sem, 2).unwrap().acquire().await.unwrap();
    let read = RwLock::new(&before, &rw).unwrap().read().await.unwrap();
    let lead = Election::new(&before, &el).unwrap().campaign("v1").await.unwrap();
    let old = [
        (p0.key().to_owned(), p0.fencing_token()),
        (p1.key().to_owned(), p1.fencing_token()),
        (read.key().to_owned(), read.fencing_token()),
        (lead.key().to_owned(), lead.fencing_token()),
    ];
    // The application attached a key of its own to the same lease (a registration).
    let own = format!("{}-registration", client.prefix_of(&el).unwrap().trim_end_matches('/'));
    let put = client.backend().compare_and_swap(&own, None, b"svc-1".to_vec(), Some(before.lease_id())).await;
    assert!(put.unwrap().swapped);
    // The earlier process "crashes": nothing released, the lease kept by its successor.
    std::mem::forget((p0, p1, read, lead));
    let lease = before.detach().unwrap();

    // Someone else waits for a permit: both are held by the leftovers.
    let other = client.session().await.unwrap();
    let theirs = Semaphore::new(&other, &sem, 2).unwrap();
    let waiting = tokio::spawn(async move { theirs.acquire().await });
    until_keys(client, &sem_prefix, 3).await;

    let after = client.session_builder().attach(lease).open().await.unwrap();
    let mut left = after.leftover_keys();
    left.sort();
    let mut expected: Vec<String> = old.iter().map(|(k, _)| k.clone()).collect();
    expected.sort();
    assert_eq!(left, expected);

    let permit = Semaphore::new(&after, &sem, 2).unwrap().try_acquire().await.unwrap().expect("took over a permit");
    assert_eq!((permit.key(), permit.fencing_token()), (old[0].0.as_str(), old[0].1), "not the oldest leftover");
    let read = RwLock::new(&after, &rw).unwrap().try_read().await.unwrap().expect("took over the read lock");
    assert_eq!((read.key(), read.fencing_token()), (old[2].0.as_str(), old[2].1));
    let lead = Election::new(&after, &el).unwrap().try_campaign("v2").await.unwrap().expect("took over leadership");
    assert_eq!(lead.fencing_token(), old[3].1);
    assert_eq!(after.leftover_keys(), vec![old[1].0.clone()]);
    assert_eq!(keys(client, &sem_prefix).await.len(), 3, "a takeover made a new key");
    assert!(!waiting.is_finished(), "admitted while both permits were held");

    // The leftover nobody took over is released on request: the waiter gets its permit.
    assert_eq!(after.release_leftovers().await.unwrap(), 1);
    assert!(after.leftover_keys().is_empty());
    let kept = client.backend().get(&own).await.unwrap().expect("the application's own key was released");
    assert_eq!((kept.value.as_slice(), kept.lease), (b"svc-1".as_slice(), lease));
    let theirs = within("the waiter's permit", waiting).await.unwrap().unwrap();
    assert!(theirs.fencing_token() > old[1].1);

    // New acquisitions of the re-attached session number their keys past the old ones.
    permit.release().await.unwrap();
    let fresh_permit = Semaphore::new(&after, &sem, 2).unwrap().try_acquire().await.unwrap().expect("a free permit");
    assert!(old.iter().all(|(k, _)| k != fresh_permit.key()), "{} reuses an old key", fresh_permit.key());
    fresh_permit.release().await.unwrap();
    theirs.release().await.unwrap();
    read.unlock().await.unwrap();
    lead.resign().await.unwrap();
    for prefix in [&sem_prefix, &rw_prefix, &client.prefix_of(&el).unwrap()] {
        assert!(keys(client, prefix).await.is_empty(), "left behind under {prefix}");
    }
    after.close().await.unwrap();
    other.close().await.unwrap();
}

/// `Semaphore::with_permit` runs the work holding a permit and releases it after;
/// `Election::with_leadership` runs it while leading, resigns after, and stops a deposed
/// leader's work at its await (SessionLost), after which another candidate leads with a
/// higher token.
pub async fn with_permit_and_with_leadership(client: &Client) {
    let (sem, el) = (fresh("with-permit"), fresh("with-leadership"));
    let s = client.session_builder().ttl(Duration::from_secs(2)).open().await.unwrap();
    let slots = Semaphore::new(&s, &sem, 2).unwrap();
    let usage = slots.with_permit(async |p| (p.fencing_token(), slots.usage().await.unwrap())).await.unwrap();
    assert_eq!(usage.1.holders.iter().map(|h| h.token).collect::<Vec<_>>(), vec![usage.0], "ran without the permit");
    assert!(keys(client, &client.prefix_of(&sem).unwrap()).await.is_empty(), "permit not released");

    let election = Election::new(&s, &el).unwrap();
    let led = election.with_leadership("a", async |l| l.fencing_token()).await.unwrap();
    assert_eq!(election.leader().await.unwrap(), None, "did not resign after the work");

    let deposed_went_on = AtomicBool::new(false);
    let work = election.with_leadership("a", async |l| {
        client.backend().revoke_lease(l.session().lease_id()).await.unwrap(); // what expiry does
        std::future::pending::<()>().await;
        deposed_went_on.store(true, Ordering::SeqCst);
    });
    let r = within("the deposed leader's work to stop", work).await;
    assert!(matches!(r, Err(Error::SessionLost { .. })), "{r:?}");
    assert!(!deposed_went_on.load(Ordering::SeqCst));
    let other = client.session().await.unwrap();
    let next = within("a new leader", Election::new(&other, &el).unwrap().campaign("b")).await.unwrap();
    assert!(next.fencing_token() > led);
    next.resign().await.unwrap();
}

/// Reads without a session: a mutex's holder, an election's leader (and an observer that
/// follows it), a semaphore's use by its stored count, all from a `Client` alone, agreeing
/// with what the holders' sessions say.
pub async fn reads_without_a_session(client: &Client) {
    assert!(client.holder("rws-mx").await.unwrap().is_none());
    assert!(client.leader("rws-el").await.unwrap().is_none());
    assert!(client.semaphore_usage("rws-sem").await.unwrap().is_none(), "no count stored yet");
    let mut observer = Election::observer(client, "rws-el").unwrap();
    assert_eq!(observer.changed().await.unwrap(), None);

    let s = client.session().await.unwrap();
    let guard = leasehold::Mutex::new(&s, "rws-mx").unwrap().lock().await.unwrap();
    let holder = client.holder("rws-mx").await.unwrap().expect("held");
    assert_eq!((holder.token, holder.lease, holder.key.as_str()), (guard.fencing_token(), s.lease_id(), guard.key()));
    let leading = Election::new(&s, "rws-el").unwrap().campaign("a").await.unwrap();
    let leader = client.leader("rws-el").await.unwrap().expect("a leader");
    assert_eq!((leader.token, leader.value.as_slice()), (leading.fencing_token(), &b"a"[..]));
    let seen =
        tokio::time::timeout(super::mutex::SOON, observer.changed()).await.unwrap().unwrap().expect("the new leader");
    assert_eq!(seen.token, leading.fencing_token());
    let sem = Semaphore::new(&s, "rws-sem", 2).unwrap();
    let permit = sem.acquire().await.unwrap();
    let usage = client.semaphore_usage("rws-sem").await.unwrap().expect("a stored count");
    assert_eq!(usage, sem.usage().await.unwrap());
    assert_eq!((usage.permits, usage.holders[0].token), (2, permit.fencing_token()));

    permit.release().await.unwrap();
    leading.resign().await.unwrap();
    guard.unlock().await.unwrap();
    assert!(client.holder("rws-mx").await.unwrap().is_none());
    assert!(client.leader("rws-el").await.unwrap().is_none());
    assert_eq!(tokio::time::timeout(super::mutex::SOON, observer.changed()).await.unwrap().unwrap(), None);
    assert!(client.semaphore_usage("rws-sem").await.unwrap().expect("the count stays").holders.is_empty());
    assert!(matches!(client.holder("bad\0name").await, Err(Error::InvalidName { .. })));
    s.close().await.unwrap();
}

/// A leader loop: one of two loops leads at a time. When the leader's session is lost its
/// work is stopped and the other leads, while the first campaigns again on a new session;
/// work that returns hands over to the next in line; a stopped loop releases at once.
pub async fn leader_loop(client: &Client) {
    use leasehold::LeaderLoop;
    use tokio::sync::Notify;
    let soon = super::mutex::SOON;
    let name = fresh("leader-loop");
    let ttl = Duration::from_secs(1);
    let (started, mut starts) = mpsc::unbounded_channel::<(&'static str, u64)>();
    let a_dropped = Arc::new(AtomicUsize::new(0));
    let b_done = Arc::new(Notify::new());
    struct Dropped(Arc<AtomicUsize>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    let a = LeaderLoop::new(client, &name, "a").unwrap().ttl(ttl);
    let mut la = a.leading();
    let a_task = {
        let (started, a_dropped) = (started.clone(), a_dropped.clone());
        tokio::spawn(async move {
            a.run(|l| {
                let (started, a_dropped) = (started.clone(), a_dropped.clone());
                async move {
                    let _stopped = Dropped(a_dropped);
                    started.send(("a", l.fencing_token())).unwrap();
                    std::future::pending::<()>().await // leads until deposed or stopped
                }
            })
            .await
        })
    };
    tokio::time::timeout(soon, la.wait_for(|&x| x)).await.unwrap().unwrap();
    let (who, t1) = starts.recv().await.unwrap();
    assert_eq!(who, "a");

    let b = LeaderLoop::new(client, &name, "b").unwrap().ttl(ttl);
    let mut lb = b.leading();
    let b_task = {
        let (started, b_done) = (started.clone(), b_done.clone());
        tokio::spawn(async move {
            b.run(|l| {
                let (started, b_done) = (started.clone(), b_done.clone());
                async move {
                    started.send(("b", l.fencing_token())).unwrap();
                    b_done.notified().await // leads until told to return
                }
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!*lb.borrow(), "b waits while a leads");
    let leader = client.leader(&name).await.unwrap().expect("a leads");
    assert_eq!((leader.value.as_slice(), leader.token), (&b"a"[..], t1));

    // a's lease goes (as when its process stops past the TTL): a's work is stopped, b leads,
    // and a campaigns again on a new session.
    client.backend().revoke_lease(leader.lease).await.unwrap();
    tokio::time::timeout(soon, lb.wait_for(|&x| x)).await.unwrap().unwrap();
    let (who, t2) = starts.recv().await.unwrap();
    assert_eq!(who, "b");
    assert!(t2 > t1);
    tokio::time::timeout(soon, la.wait_for(|&x| !x)).await.unwrap().unwrap();
    assert_eq!(a_dropped.load(Ordering::SeqCst), 1, "a's work was stopped when its session was lost");

    // b's work returns: b resigns and queues again; a, queued on its new session, leads.
    // (Once a is queued: before that, b's new campaign would come first and lead again.)
    let prefix = client.prefix_of(&name).unwrap();
    let queued = async {
        while client.backend().range_prefix(&prefix, 0).await.unwrap().0.len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(soon, queued).await.expect("a campaigns again on a new session");
    b_done.notify_one();
    tokio::time::timeout(soon, la.wait_for(|&x| x)).await.unwrap().unwrap();
    let (who, t3) = starts.recv().await.unwrap();
    assert_eq!(who, "a");
    assert!(t3 > t2);
    assert_ne!(client.leader(&name).await.unwrap().unwrap().lease, leader.lease, "a new session");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!*lb.borrow(), "b waits behind a");

    // Stopping a's loop releases at once: b leads again.
    a_task.abort();
    tokio::time::timeout(soon, lb.wait_for(|&x| x)).await.unwrap().unwrap();
    let (who, t4) = starts.recv().await.unwrap();
    assert_eq!(who, "b");
    assert!(t4 > t3);
    assert!(!*la.borrow());
    b_task.abort();
    tokio::time::timeout(soon, lb.wait_for(|&x| !x)).await.unwrap().unwrap();
    let gone = async {
        while client.leader(&name).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(soon, gone).await.expect("no leader once both loops stopped");
}
