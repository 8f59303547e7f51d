//! Checks of the read-write lock, with every strategy, that run unchanged on every backend
//! (see `recipes.rs` for the conventions).
#![allow(dead_code)] // each test binary runs the checks its backend supports

use super::recipes::{fresh, keys, keys_stay_while, leftover_key, sessions, until_keys, within, Mix};
use leasehold::{Client, Error, RwLock, Session, Strategy};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Three readers hold at once; a writer can neither try nor time out its way in; once the
/// readers go it is admitted, and then readers cannot get in. Nothing is left behind.
pub async fn rwlock_readers_share_writer_excludes(client: &Client) {
    let name = fresh("rw-share");
    let prefix = client.prefix_of(&name).unwrap();
    let [a, b, c]: [Session; 3] = sessions(client, 3).await.try_into().unwrap();
    let r1 = RwLock::new(&a, &name).unwrap().read().await.unwrap();
    let r2 = RwLock::new(&b, &name).unwrap().read().await.unwrap();
    let r3 = RwLock::new(&c, &name).unwrap().try_read().await.unwrap().expect("readers share");
    assert!(r1.key().starts_with(&format!("{prefix}read/")));
    let writer = RwLock::new(&c, &name).unwrap();
    assert!(writer.try_write().await.unwrap().is_none());
    assert!(matches!(
        writer.write_timeout(Duration::from_millis(50)).await,
        Err(Error::Timeout { what: "rwlock", .. })
    ));
    for r in [r1, r2, r3] {
        r.unlock().await.unwrap();
    }
    c.settle().await;
    let w = writer.try_write().await.unwrap().expect("free once the readers went");
    assert!(w.key().starts_with(&format!("{prefix}write/")));
    let reader = RwLock::new(&a, &name).unwrap();
    assert!(reader.try_read().await.unwrap().is_none());
    assert!(matches!(reader.read_timeout(Duration::from_millis(50)).await, Err(Error::Timeout { what: "rwlock", .. })));
    assert!(RwLock::new(&b, &name).unwrap().try_write().await.unwrap().is_none());
    w.fenced_put(format!("{name}.data"), "v1").await.unwrap();
    a.settle().await;
    b.settle().await;
    assert_eq!(keys(client, &prefix).await, [w.key().to_owned()]);
    w.unlock().await.unwrap();
    assert_eq!(keys(client, &prefix).await, Vec::<String>::new());
}

/// 8 tasks on 4 sessions, 6 rounds each, a third of them writes: a writer never overlaps
/// a reader or another writer.
pub async fn rwlock_exclusion_under_contention(client: &Client, mix: Mix) {
    let name = fresh("rw-contention");
    let sessions = sessions(client, 4).await;
    let readers = Arc::new(AtomicUsize::new(0));
    let writers = Arc::new(AtomicUsize::new(0));
    let violated = Arc::new(AtomicBool::new(false));
    let (reads, writes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let strategy = match mix {
            Mix::Queued => Strategy::Pessimistic,
            Mix::Mixed => [Strategy::Pessimistic, Strategy::Optimistic, Strategy::Adaptive][i % 3],
        };
        let lock = RwLock::new(&sessions[i % sessions.len()], &name).unwrap().with_strategy(strategy);
        let (readers, writers, violated, reads, writes) =
            (readers.clone(), writers.clone(), violated.clone(), reads.clone(), writes.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..6 {
                if (i + round) % 3 == 0 {
                    let w = lock.write().await.unwrap();
                    if writers.fetch_add(1, Ordering::SeqCst) != 0 || readers.load(Ordering::SeqCst) != 0 {
                        violated.store(true, Ordering::SeqCst);
                    }
                    tokio::task::yield_now().await;
                    writers.fetch_sub(1, Ordering::SeqCst);
                    writes.fetch_add(1, Ordering::SeqCst);
                    w.unlock().await.unwrap();
                } else {
                    let r = lock.read().await.unwrap();
                    readers.fetch_add(1, Ordering::SeqCst);
                    if writers.load(Ordering::SeqCst) != 0 {
                        violated.store(true, Ordering::SeqCst);
                    }
                    tokio::task::yield_now().await;
                    readers.fetch_sub(1, Ordering::SeqCst);
                    reads.fetch_add(1, Ordering::SeqCst);
                    r.unlock().await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        within("rwlock tasks", t).await.unwrap();
    }
    assert!(!violated.load(Ordering::SeqCst), "a writer overlapped another holder");
    assert_eq!((reads.load(Ordering::SeqCst), writes.load(Ordering::SeqCst)), (32, 16));
}

/// A writer that queued behind a reader gets in before the readers that came after it:
/// they can neither try their way past it nor be admitted while it waits or holds.
pub async fn rwlock_writer_not_starved_by_later_readers(client: &Client) {
    let name = fresh("rw-fair");
    let prefix = client.prefix_of(&name).unwrap();
    let [a, b, c]: [Session; 3] = sessions(client, 3).await.try_into().unwrap();
    let first = RwLock::new(&a, &name).unwrap().read().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let writer = RwLock::new(&b, &name).unwrap();
    tokio::spawn({
        let tx = tx.clone();
        async move { tx.send(("writer", writer.write().await.unwrap().fencing_token(), None)).unwrap() }
    });
    until_keys(client, &prefix, 2).await;
    let late = RwLock::new(&c, &name).unwrap();
    assert!(late.try_read().await.unwrap().is_none(), "a later reader may not pass a queued writer");
    for n in 0..2 {
        let late = late.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = late.read().await.unwrap();
            tx.send(("reader", r.fencing_token(), Some(r))).unwrap();
        });
        until_keys(client, &prefix, 3 + n).await;
    }
    assert!(rx.try_recv().is_err(), "the writer waits for the first reader");
    let first_token = first.fencing_token();
    first.unlock().await.unwrap();
    let (who, writer_token, _) = within("the writer", rx.recv()).await.unwrap();
    assert_eq!(who, "writer");
    assert!(writer_token > first_token);
    // The writer's guard was dropped right after it was sent, releasing it.
    let mut late_readers = Vec::new();
    for _ in 0..2 {
        let (who, token, guard) = within("a later reader", rx.recv()).await.unwrap();
        assert_eq!(who, "reader");
        assert!(token > writer_token);
        late_readers.push(guard.unwrap()); // both hold together
    }
    assert!(late_readers.iter().all(|r| r.is_valid()));
}

/// Optimistic readers and writers write nothing while the lock is taken against them: a try
/// and a timed acquisition leave only the holder's key (sampled all through the timed one),
/// and the waiting acquisition gets in once the holder goes. A reader is not kept out by
/// another reader.
pub async fn rwlock_optimistic_waits_without_a_key(client: &Client) {
    let name = fresh("rw-optimistic");
    let prefix = client.prefix_of(&name).unwrap();
    let (a, b) = (client.session().await.unwrap(), client.session().await.unwrap());
    let holder = RwLock::new(&a, &name).unwrap();
    let optimistic = RwLock::new(&b, &name).unwrap().with_strategy(Strategy::Optimistic);
    for holder_writes in [true, false] {
        // The holder, and a release of it for later.
        let (key, release) = if holder_writes {
            let w = holder.write().await.unwrap();
            (
                w.key().to_owned(),
                Box::pin(async move { w.unlock().await.unwrap() })
                    as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
            )
        } else {
            let r = holder.read().await.unwrap();
            let shared = within("a reader beside a reader", optimistic.read()).await.unwrap();
            assert!(shared.fencing_token() > r.fencing_token());
            shared.unlock().await.unwrap();
            (
                r.key().to_owned(),
                Box::pin(async move { r.unlock().await.unwrap() })
                    as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
            )
        };
        let only_holder = vec![key];
        if holder_writes {
            assert!(optimistic.try_read().await.unwrap().is_none());
        }
        assert!(optimistic.try_write().await.unwrap().is_none());
        assert_eq!(keys(client, &prefix).await, only_holder);
        let timed = async {
            let after = Duration::from_millis(200);
            match holder_writes {
                true => optimistic.read_timeout(after).await.map(|g| g.fencing_token()),
                false => optimistic.write_timeout(after).await.map(|g| g.fencing_token()),
            }
        };
        let what = "an optimistic acquisition left a key while the lock was taken";
        let outcome = keys_stay_while(client, &prefix, &only_holder, what, timed).await;
        assert!(matches!(outcome, Err(Error::Timeout { what: "rwlock", .. })), "{outcome:?}");
        b.settle().await;
        assert_eq!(keys(client, &prefix).await, only_holder);

        let (tx, mut rx) = mpsc::unbounded_channel();
        let waiting = optimistic.clone();
        tokio::spawn(async move {
            match holder_writes {
                true => tx.send(waiting.read().await.unwrap().unlock().await).unwrap(),
                false => tx.send(waiting.write().await.unwrap().unlock().await).unwrap(),
            }
        });
        release.await;
        within("optimistic acquisition after the holder", rx.recv()).await.unwrap().unwrap();
        b.settle().await;
        assert_eq!(keys(client, &prefix).await, Vec::<String>::new());
    }
}

/// A re-attached lease's read key, older than a queued writer, is taken over by an
/// optimistic read of the successor session: the read is admitted at once (no writer is
/// older than it), instead of waiting for the younger writer that waits for it.
pub async fn rwlock_optimistic_reader_takes_over_its_leftover(client: &Client) {
    let name = fresh("rw-leftover");
    let prefix = client.prefix_of(&name).unwrap();
    let b = client.backend();
    let lease = b.grant_lease(Duration::from_secs(30)).await.unwrap().id;
    let leftover = format!("{prefix}read/{lease:x}-0");
    leftover_key(client, &leftover, lease, &prefix).await; // an earlier process's read lock
    let other = client.session().await.unwrap();
    let writer = RwLock::new(&other, &name).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move { tx.send(writer.write().await.unwrap().unlock().await).unwrap() });
    until_keys(client, &prefix, 2).await; // the writer waits behind the leftover
    let after = client.session_builder().attach(lease).open().await.unwrap();
    let lock = RwLock::new(&after, &name).unwrap().with_strategy(Strategy::Optimistic);
    let read = within("the leftover's read", lock.read()).await.unwrap();
    assert_eq!(read.key(), leftover);
    assert!(rx.try_recv().is_err(), "the writer waits for the read");
    read.unlock().await.unwrap();
    within("the writer after the read", rx.recv()).await.unwrap().unwrap();
    after.close().await.unwrap();
}
