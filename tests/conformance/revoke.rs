//! Revocation checks ([`Client::revoke`]): an operator releases a holder's key, checked by
//! lease and create revision. Every wait is on a signal (a watch, a task's end) bounded by
//! [`LIMIT`]; no check sleeps to let something happen.

use leasehold::{Client, Election, Error, Holder, Mutex, RwLock, Semaphore, Strategy};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// No single wait in a check may take longer.
const LIMIT: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no progress within {LIMIT:?}"),
    }
}

/// A name no earlier run used.
fn fresh(base: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{base}-{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Waits (on a watch, not by polling) until exactly `n` keys exist under `name`.
async fn until_entries(client: &Client, name: &str, n: usize) {
    let prefix = client.prefix_of(name).unwrap();
    let backend = client.backend();
    let mut watch = backend.watch_prefix(&prefix).await.unwrap();
    within(&format!("{n} keys under {prefix}"), async {
        while client.entries(name).await.unwrap().len() != n {
            watch.next().await.unwrap();
        }
    })
    .await
}

/// The one entry of `name` under `lease`.
async fn entry_of(client: &Client, name: &str, lease: i64) -> Holder {
    let mut mine: Vec<_> = client.entries(name).await.unwrap().into_iter().filter(|h| h.lease == lease).collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    mine.pop().unwrap()
}

/// A revoked mutex holder learns it (`lost()` completes, the guard turns invalid, its
/// fenced write is refused and writes nothing) while its session lives on; the waiter is
/// admitted. A stale revocation — a wrong token or lease, or the revoked acquisition's
/// token once the same session holds the lock again under the same key — removes nothing.
pub async fn revoke_mutex(client: &Client) {
    let name = fresh("revoke-mx");
    let (a, b) = (client.session().await.unwrap(), client.session().await.unwrap());
    let ma = Mutex::new(&a, &name).unwrap();
    let held = ma.lock().await.unwrap();
    let lost = tokio::spawn(held.lost()); // following the key from before the revocation
    let mb = Mutex::new(&b, &name).unwrap();
    let waiter = tokio::spawn(async move { mb.lock().await });
    until_entries(client, &name, 2).await;
    let holder = client.holder(&name).await.unwrap().expect("held");
    assert_eq!((holder.token, holder.lease, holder.key.as_str()), (held.fencing_token(), a.lease_id(), held.key()));

    let mut wrong_token = holder.clone();
    wrong_token.token -= 1;
    let mut wrong_lease = holder.clone();
    wrong_lease.lease = b.lease_id();
    for stale in [&wrong_token, &wrong_lease] {
        assert!(!client.revoke(&name, stale).await.unwrap(), "a stale revocation removed the holder: {stale:?}");
    }
    held.fenced_put(format!("{name}.data"), "1").await.expect("a stale revocation removed the holder");
    assert!(held.is_valid());

    assert!(client.revoke(&name, &holder).await.unwrap(), "the holder was revoked");
    within("the revoked holder learns it", lost).await.unwrap();
    assert!(!held.is_valid());
    assert!(a.is_valid() && !a.is_lost(), "revoking a key leaves the session alone");
    let r = held.fenced_put(format!("{name}.data"), "2").await;
    assert!(matches!(r, Err(Error::NotHeld { .. })), "{r:?}");
    let data = client.backend().get(&format!("{name}.data")).await.unwrap().expect("the first write");
    assert_eq!(data.value, b"1", "a revoked holder's fenced write applied");
    let next = within("the waiter is admitted", waiter).await.unwrap().unwrap();
    assert!(next.fencing_token() > held.fencing_token());
    assert!(!client.revoke(&name, &holder).await.unwrap(), "revoking twice does nothing");
    next.unlock().await.unwrap();
    assert!(matches!(held.unlock().await, Err(Error::NotHeld { .. })), "unlock says it was lost");

    // The same session holds again, under the same key: the old token must not remove it.
    let again = ma.lock().await.unwrap();
    assert_eq!(again.key(), holder.key);
    assert!(!client.revoke(&name, &holder).await.unwrap(), "a stale revocation removed a newer holder");
    again.fenced_put(format!("{name}.data"), "3").await.expect("a stale revocation removed a newer holder");
    assert_eq!(client.holder(&name).await.unwrap().map(|h| h.token), Some(again.fencing_token()));

    // Bad input is a typed error.
    let mut foreign = holder.clone();
    foreign.key = format!("{name}-other/1");
    let r = client.revoke(&name, &foreign).await;
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    assert!(matches!(client.revoke("no/slash", &holder).await, Err(Error::InvalidName { .. })));
    again.unlock().await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Revocation works on every recipe's keys: an election's leader, a semaphore's permit, a
/// read-write lock's writer each learn it and are refused, and the next in line is admitted.
pub async fn revoke_each_recipe(client: &Client) {
    let (a, b) = (client.session().await.unwrap(), client.session().await.unwrap());

    let name = fresh("revoke-el");
    let leader = Election::new(&a, &name).unwrap().campaign("a").await.unwrap();
    let lost = tokio::spawn(leader.lost());
    let eb = Election::new(&b, &name).unwrap();
    let next = tokio::spawn(async move { eb.campaign("b").await });
    until_entries(client, &name, 2).await;
    assert!(client.revoke(&name, &entry_of(client, &name, a.lease_id()).await).await.unwrap());
    within("the deposed leader learns it", lost).await.unwrap();
    assert!(matches!(leader.proclaim("again").await, Err(Error::NotHeld { .. })));
    let next = within("the next candidate leads", next).await.unwrap().unwrap();
    assert_eq!(client.leader(&name).await.unwrap().unwrap().value, b"b");
    next.resign().await.unwrap();

    let name = fresh("revoke-sem");
    let permit = Semaphore::new(&a, &name, 1).unwrap().acquire().await.unwrap();
    let lost = tokio::spawn(permit.lost());
    let sb = Semaphore::new(&b, &name, 1).unwrap();
    let next = tokio::spawn(async move { sb.acquire().await });
    until_entries(client, &name, 2).await;
    assert!(client.revoke(&name, &entry_of(client, &name, a.lease_id()).await).await.unwrap());
    within("the revoked permit learns it", lost).await.unwrap();
    assert!(matches!(permit.fenced_put(format!("{name}.data"), "x").await, Err(Error::NotHeld { .. })));
    within("the next permit is granted", next).await.unwrap().unwrap().release().await.unwrap();

    let name = fresh("revoke-rw");
    let writer = RwLock::new(&a, &name).unwrap().write().await.unwrap();
    let lost = tokio::spawn(writer.lost());
    let rb = RwLock::new(&b, &name).unwrap();
    let next = tokio::spawn(async move { rb.read().await });
    until_entries(client, &name, 2).await;
    assert!(client.revoke(&name, &entry_of(client, &name, a.lease_id()).await).await.unwrap());
    within("the revoked writer learns it", lost).await.unwrap();
    assert!(matches!(writer.fenced_put(format!("{name}.data"), "x").await, Err(Error::NotHeld { .. })));
    within("the reader is admitted", next).await.unwrap().unwrap().unlock().await.unwrap();

    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// A `LeaderLoop` whose leadership is revoked drops the work and leads again on the same
/// session (its lease lives), with a newer token.
pub async fn revoke_leader_loop(client: &Client) {
    let name = fresh("revoke-loop");
    let leader = leasehold::LeaderLoop::new(client, &name, "a").unwrap();
    let (tx, mut led) = tokio::sync::mpsc::unbounded_channel();
    let mut run = Box::pin(leader.run(|l| {
        let tx = tx.clone();
        async move {
            tx.send((l.fencing_token(), l.session().lease_id())).unwrap();
            std::future::pending::<()>().await
        }
    }));
    let mut next = async || {
        within("the loop leads", async {
            tokio::select! {
                r = &mut run => panic!("the loop ended: {r:?}"),
                got = led.recv() => got.unwrap(),
            }
        })
        .await
    };
    let (first, lease) = next().await;
    let holder = client.holder(&name).await.unwrap().expect("a leader");
    assert_eq!((holder.token, holder.lease), (first, lease));
    assert!(client.revoke(&name, &holder).await.unwrap());
    let (second, again) = next().await;
    assert!(second > first, "{second} after {first}");
    assert_eq!(again, lease, "campaigned again on the same session");
}

/// Revoking a waiter's key fails its acquisition with `NotHeld` — not `SessionLost`, since
/// its session lives on (the old code said `SessionLost`, and a caller that followed it
/// threw away a healthy session; a `LeaderLoop` did). Queued waiters of a mutex, a
/// semaphore and an election.
pub async fn revoking_a_waiter_fails_it_with_not_held(client: &Client) {
    let (a, b) = (client.session().await.unwrap(), client.session().await.unwrap());
    for recipe in ["mutex", "semaphore", "election"] {
        let name = fresh(&format!("revoke-waiter-{recipe}"));
        let held: Box<dyn std::any::Any + Send> = match recipe {
            "mutex" => Box::new(Mutex::new(&a, &name).unwrap().lock().await.unwrap()),
            "semaphore" => Box::new(Semaphore::new(&a, &name, 1).unwrap().acquire().await.unwrap()),
            _ => Box::new(Election::new(&a, &name).unwrap().campaign("a").await.unwrap()),
        };
        let waiter = {
            let (b, name) = (b.clone(), name.clone());
            tokio::spawn(async move {
                match recipe {
                    "mutex" => {
                        Mutex::new(&b, &name).unwrap().with_strategy(Strategy::Pessimistic).lock().await.map(drop)
                    }
                    "semaphore" => Semaphore::new(&b, &name, 1)
                        .unwrap()
                        .with_strategy(Strategy::Pessimistic)
                        .acquire()
                        .await
                        .map(drop),
                    _ => Election::new(&b, &name)
                        .unwrap()
                        .with_strategy(Strategy::Pessimistic)
                        .campaign("b")
                        .await
                        .map(drop),
                }
            })
        };
        until_entries(client, &name, 2).await;
        assert!(client.revoke(&name, &entry_of(client, &name, b.lease_id()).await).await.unwrap());
        let ended = within(&format!("{recipe}: the revoked waiter's acquisition ends"), waiter).await.unwrap();
        assert!(matches!(ended, Err(Error::NotHeld { .. })), "{recipe}: {ended:?}");
        assert!(b.is_valid(), "{recipe}: the waiter's session lives on");
        drop(held);
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// A `LeaderLoop` whose waiting campaign is revoked campaigns again (the old code ended the
/// loop with `SessionLost`); and one whose work kept a clone of a revoked leadership leads
/// again, on a new session (the old code campaigned on the same session, behind the clone's
/// place for the key, and hung until the clone went).
pub async fn revoke_leader_loop_waiting_or_kept(client: &Client) {
    let name = fresh("revoke-loop2");
    let other = client.session().await.unwrap();
    let first = Election::new(&other, &name).unwrap().campaign("other").await.unwrap();
    let leader = leasehold::LeaderLoop::new(client, &name, "loop").unwrap();
    let (tx, mut led) = tokio::sync::mpsc::unbounded_channel();
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = kept.clone();
    let mut run = Box::pin(leader.run(|l| {
        let (tx, keep) = (tx.clone(), keep.clone());
        async move {
            tx.send((l.fencing_token(), l.session().lease_id())).unwrap();
            keep.lock().unwrap().push(l); // a clone kept past the work
            std::future::pending::<()>().await
        }
    }));
    let mut next = async |what: &str| {
        within(what, async {
            tokio::select! {
                r = &mut run => panic!("{what}: the loop ended: {r:?}"),
                got = led.recv() => got.unwrap(),
            }
        })
        .await
    };
    // The loop's campaign waits behind `other`: revoke its key.
    let waiting = async {
        until_entries(client, &name, 2).await;
        let holders = client.entries(&name).await.unwrap();
        let mine = holders.into_iter().find(|h| h.lease != other.lease_id()).expect("the loop's key");
        assert!(client.revoke(&name, &mine).await.unwrap());
        // It campaigns again: its key comes back; then the leader leaves.
        until_entries(client, &name, 2).await;
        first.resign().await.unwrap();
        std::future::pending::<()>().await
    };
    let (token, lease) = tokio::select! {
        got = next("the loop leads after its campaign was revoked") => got,
        _ = waiting => unreachable!(),
    };
    // Revoke the leadership the work kept a clone of.
    let holder = client.holder(&name).await.unwrap().expect("a leader");
    assert_eq!((holder.token, holder.lease), (token, lease));
    assert!(client.revoke(&name, &holder).await.unwrap());
    let (again, new_lease) = next("the loop leads again after a revoke, its work keeping a clone").await;
    assert!(again > token, "{again} after {token}");
    assert_ne!(new_lease, lease, "a new session: the old one's place is the clone's");
    drop(run);
    kept.lock().unwrap().clear();
    other.close().await.unwrap();
}
