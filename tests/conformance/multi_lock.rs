//! Checks of the multi-lock (several mutexes all-or-nothing) that run unchanged on every
//! backend (see `recipes.rs` for the conventions).
#![allow(dead_code)] // each test binary runs the checks its backend supports

use super::recipes::{fresh, keys, poll_then_drop, sessions, within};
use leasehold::{Client, Error, MultiLock, Mutex, Strategy};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Six sessions lock overlapping sets of four names, each set given in another order (some
/// reversed): no name ever has two holders, and every task finishes (a multi-lock that took
/// its names in the order given would deadlock here: one task holding `a` waiting for `b`,
/// another holding `b` waiting for `a`).
pub async fn multi_lock_excludes_and_never_deadlocks(client: &Client, strategy: Strategy, rounds: usize) {
    let base = fresh("multi");
    let names: Vec<String> = (0..4).map(|i| format!("{base}-{i}")).collect();
    let inside: Arc<Vec<AtomicUsize>> = Arc::new((0..4).map(|_| AtomicUsize::new(0)).collect());
    let mut tasks = Vec::new();
    for (t, s) in sessions(client, 6).await.into_iter().enumerate() {
        // Task t locks names t % 4 and (t + 1) % 4, plus (t + 2) % 4 on odd tasks; even
        // tasks list them backwards.
        let mut mine: Vec<usize> = (0..2 + t % 2).map(|k| (t + k) % 4).collect();
        if t % 2 == 0 {
            mine.reverse();
        }
        let lock = MultiLock::new(&s, mine.iter().map(|&i| names[i].as_str())).unwrap().with_strategy(strategy);
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                let held = lock.lock().await.unwrap();
                assert_eq!(held.guards().len(), mine.len());
                for &i in &mine {
                    assert_eq!(inside[i].fetch_add(1, Ordering::SeqCst), 0, "two holders of name {i}");
                }
                tokio::task::yield_now().await;
                for &i in &mine {
                    inside[i].fetch_sub(1, Ordering::SeqCst);
                }
                held.unlock().await.unwrap();
            }
            s
        }));
    }
    for t in tasks {
        within("multi-lock tasks (a deadlock?)", t).await.unwrap();
    }
    for n in &names {
        assert_eq!(keys(client, &client.prefix_of(n).unwrap()).await, Vec::<String>::new());
    }
}

/// All or nothing: with one name taken, a try and a timed lock hold none of the others
/// afterwards and leave no key, and so does a `lock()` dropped at any point; once the name
/// is free every name is held, in name order, and a fenced write applies only while all
/// are held. Bad input is a typed error.
pub async fn multi_lock_all_or_nothing(client: &Client) {
    let base = fresh("multi-aon");
    let names: Vec<String> = (0..3).map(|i| format!("{base}-{i}")).collect();
    let prefixes: Vec<String> = names.iter().map(|n| client.prefix_of(n).unwrap()).collect();
    let (a, b) = (client.session().await.unwrap(), client.session().await.unwrap());
    let blocker = Mutex::new(&b, &names[1]).unwrap().lock().await.unwrap();
    // Given in another order, with a repeat: taken once each, by name.
    let lock = MultiLock::new(&a, [&names[2], &names[0], &names[1], &names[0]]).unwrap();
    assert_eq!(lock.names().collect::<Vec<_>>(), names.iter().map(String::as_str).collect::<Vec<_>>());

    let nothing_left = async || {
        a.settle().await;
        for (i, p) in prefixes.iter().enumerate() {
            let expected = if i == 1 { vec![blocker.key().to_owned()] } else { Vec::new() };
            assert_eq!(keys(client, p).await, expected, "name {i} after a failed multi-lock");
        }
    };
    assert!(lock.try_lock().await.unwrap().is_none());
    nothing_left().await;
    let timed = lock.lock_timeout(Duration::from_millis(100)).await;
    assert!(matches!(timed, Err(Error::Timeout { what: "multilock", .. })), "{timed:?}");
    nothing_left().await;
    for polls in 0..20 {
        assert!(poll_then_drop(lock.lock(), polls).await.is_none());
    }
    nothing_left().await;

    let b_token = blocker.fencing_token();
    blocker.unlock().await.unwrap();
    let held = within("multi-lock once free", lock.lock()).await.unwrap();
    let tokens = held.fencing_tokens();
    assert!(tokens[1] > b_token && held.is_valid());
    for (g, p) in held.guards().iter().zip(&prefixes) {
        assert!(g.key().starts_with(p.as_str()));
    }
    assert!(Mutex::new(&b, &names[2]).unwrap().try_lock().await.unwrap().is_none());
    let key = format!("{base}.moved");
    held.fenced_put(key.as_str(), "all three").await.unwrap();
    // One of its names is taken away (an operator's revocation, an expiry): no fenced write.
    let gone = &held.guards()[2];
    assert!(client.backend().delete_if_created(gone.key(), gone.fencing_token() as i64).await.unwrap());
    match held.fenced_put(key.as_str(), "two of three").await {
        Err(Error::NotHeld { what: "multilock", .. }) => {}
        other => panic!("a fenced write without every name must fail with NotHeld: {other:?}"),
    }
    let stored = client.backend().get(&key).await.unwrap().unwrap();
    assert_eq!(stored.value, b"all three");
    // The unlock releases the two it still holds and says one was lost.
    let unlocked = held.unlock().await;
    assert!(matches!(unlocked, Err(Error::NotHeld { what: "mutex", .. })), "{unlocked:?}");
    for p in &prefixes {
        assert_eq!(keys(client, p).await, Vec::<String>::new());
    }

    let none: [&str; 0] = [];
    assert!(matches!(MultiLock::new(&a, none), Err(Error::InvalidArgument { .. })));
    assert!(matches!(MultiLock::new(&a, ["ok", ""]), Err(Error::InvalidName { .. })));
}
