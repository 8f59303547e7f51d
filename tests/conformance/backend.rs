//! Checks of the backend contract itself (`src/backend/mod.rs`) that the recipes rest on.

use leasehold::backend::{Condition, Read, ReadValue, Write};
use leasehold::{Client, Mutex};

fn key_read(v: &ReadValue) -> Option<(Vec<u8>, i64)> {
    match v {
        ReadValue::Key(kv) => kv.as_ref().map(|kv| (kv.value.clone(), kv.mod_revision)),
        other => panic!("a key read answered {other:?}"),
    }
}

fn occupied(v: &ReadValue) -> bool {
    match v {
        ReadValue::Occupied(o) => *o,
        other => panic!("an occupancy read answered {other:?}"),
    }
}

/// `Backend::transact` (rule 4): the check, the writes and the reads are one step. Writes
/// apply only when every condition holds, all at one revision; the reads come back in the
/// order asked, after the writes when they applied, and as the store is when a condition
/// failed (nothing written). Also the adaptive register's write that yields to a queue: a
/// compare-and-swap on the value and an empty lock prefix, whose failure says whether the
/// lock was taken.
pub async fn transact_contract(client: &Client) {
    let b = client.backend();
    let name = "txn-contract";
    let prefix = client.prefix_of(name).unwrap();
    let (x, y) = (format!("{prefix}x"), format!("{prefix}y"));
    let lock = client.prefix_of("txn-contract-lock").unwrap();
    let value = lock.trim_end_matches('/').to_owned();

    // Unconditional writes of two keys: one revision, and the reads see them.
    let put = |k: &str, v: &[u8]| Write::Put { key: k.to_owned(), value: v.to_vec(), lease: None };
    let reads = [Read::Key(x.clone()), Read::Occupied(prefix.clone()), Read::Key(format!("{prefix}absent"))];
    let done = b.transact(&[], vec![put(&x, b"1"), put(&y, b"1")], &reads).await.unwrap();
    let rev = done.applied.expect("no condition: applied");
    assert_eq!(done.reads.len(), 3, "one answer per read: {done:?}");
    assert_eq!(key_read(&done.reads[0]), Some((b"1".to_vec(), rev)), "the read sees the write, at its revision");
    assert!(occupied(&done.reads[1]));
    assert_eq!(key_read(&done.reads[2]), None);
    assert_eq!(b.get(&y).await.unwrap().map(|kv| kv.mod_revision), Some(rev), "both writes at one revision");

    // A failed condition writes nothing; the reads show the store as it is.
    let stale = [Condition::Modified { key: x.clone(), revision: Some(rev - 1) }];
    let done = b.transact(&stale, vec![put(&x, b"2"), Write::Delete { key: y.clone() }], &reads).await.unwrap();
    assert_eq!(done.applied, None, "stale revision: {done:?}");
    assert_eq!(key_read(&done.reads[0]), Some((b"1".to_vec(), rev)));
    assert!(b.get(&y).await.unwrap().is_some(), "no write of a failed step applied");
    // Every condition must hold: one failing among holding ones fails the step.
    let mixed = [
        Condition::Modified { key: x.clone(), revision: Some(rev) },
        Condition::Created { key: y.clone(), revision: rev },
        Condition::PrefixEmpty { prefix: prefix.clone() },
    ];
    assert_eq!(b.transact(&mixed, vec![put(&x, b"2")], &[]).await.unwrap().applied, None);
    let holding = &mixed[..2];
    let at = b.write_if(holding, vec![put(&x, b"2"), Write::Delete { key: y.clone() }]).await.unwrap();
    let at = at.expect("conditions hold: applied");
    assert!(at > rev);
    assert_eq!(b.get(&x).await.unwrap().map(|kv| (kv.value, kv.mod_revision)), Some((b"2".to_vec(), at)));
    assert!(b.get(&y).await.unwrap().is_none());
    let absent = [Condition::Modified { key: y.clone(), revision: None }];
    assert!(b.write_if(&absent, vec![]).await.unwrap().is_some(), "absent key: `Modified {{ None }}` holds");

    // Read-only: a consistent read of several things at once.
    let done = b.transact(&[], vec![], &[Read::Key(x.clone()), Read::Occupied(lock.clone())]).await.unwrap();
    assert!(done.applied.is_some_and(|r| r >= at), "a read-only step reflects the latest writes: {done:?}");
    assert_eq!(key_read(&done.reads[0]), Some((b"2".to_vec(), at)));
    assert!(!occupied(&done.reads[1]));

    // The adaptive register's write: only while nobody holds or waits for the lock.
    let unlocked = |expected| {
        [
            Condition::Modified { key: value.clone(), revision: expected },
            Condition::PrefixEmpty { prefix: lock.clone() },
        ]
    };
    let occupancy = [Read::Occupied(lock.clone())];
    let first = b.transact(&unlocked(None), vec![put(&value, b"1")], &occupancy).await.unwrap();
    let v1 = first.applied.expect("absent value, free lock: written");
    assert!(!occupied(&first.reads[0]));
    let s = client.session().await.unwrap();
    let guard = Mutex::new(&s, "txn-contract-lock").unwrap().lock().await.unwrap();
    let held = b.transact(&unlocked(Some(v1)), vec![put(&value, b"2")], &occupancy).await.unwrap();
    assert_eq!(held.applied, None, "lock held: nothing written");
    assert!(occupied(&held.reads[0]), "the failure says the lock was taken");
    guard.unlock().await.unwrap();
    let stale = b.transact(&unlocked(None), vec![put(&value, b"x")], &occupancy).await.unwrap();
    assert_eq!(stale.applied, None);
    assert!(!occupied(&stale.reads[0]), "a stale value with the lock free: not taken");
    let free = b.transact(&unlocked(Some(v1)), vec![put(&value, b"2")], &occupancy).await.unwrap();
    assert!(free.applied.is_some(), "lock released: written");
    assert_eq!(b.get(&value).await.unwrap().map(|kv| kv.value), Some(b"2".to_vec()));
    s.close().await.unwrap();

    // Writes naming a key twice: refused by every backend as etcd refuses them, with a
    // typed error, writing nothing (the embedded store applied them in order).
    let twice = vec![put(&x, b"dup"), Write::Delete { key: x.clone() }];
    let r = b.transact(&[], twice, &[]).await;
    assert!(matches!(r, Err(leasehold::Error::InvalidArgument { .. })), "a key named twice: {r:?}");
    assert_ne!(b.get(&x).await.unwrap().map(|kv| kv.value), Some(b"dup".to_vec()), "nothing written");
}

/// A write under a lease that is gone fails with `LeaseNotFound` naming that lease (etcd's
/// answer does not say which; the backend must), and writes nothing.
pub async fn write_under_a_gone_lease(client: &Client) {
    let backend = client.backend();
    let lease = backend.grant_lease(std::time::Duration::from_secs(5)).await.unwrap().id;
    backend.revoke_lease(lease).await.unwrap();
    let put = vec![leasehold::Write::Put { key: "gone-lease.key".into(), value: b"x".to_vec(), lease: Some(lease) }];
    let r = backend.write_if(&[], put).await;
    assert!(matches!(r, Err(leasehold::Error::LeaseNotFound { lease: l }) if l == lease), "{r:?}");
    assert!(backend.get("gone-lease.key").await.unwrap().is_none(), "nothing written");
}

/// `Backend::lease_ttl` and `lease_keys` of a lease with less than a second left: it still
/// exists, with its keys (`None` and no keys are for a lease that is gone). (etcd answers a
/// TimeToLive in whole seconds, rounded down, so such a lease read TTL 0, and the etcd
/// backend took that for gone: a guard whose key an operator deleted while renewals were
/// late then waited for a session loss that never came.)
pub async fn lease_ttl_in_its_last_second(client: &Client) {
    let backend = client.backend();
    let granted = backend.grant_lease(std::time::Duration::from_secs(2)).await.unwrap();
    let start = tokio::time::Instant::now();
    let put = vec![Write::Put { key: "last-second.key".into(), value: b"x".to_vec(), lease: Some(granted.id) }];
    backend.write_if(&[], put).await.unwrap();
    // Into the lease's last second, unrenewed (a granted TTL is at least the one asked).
    tokio::time::sleep_until(start + granted.ttl - std::time::Duration::from_millis(700)).await;
    let ttl = backend.lease_ttl(granted.id).await.unwrap();
    let keys = backend.lease_keys(granted.id).await.unwrap();
    assert!(start.elapsed() < granted.ttl, "too late to tell: {:?} of {:?}", start.elapsed(), granted.ttl);
    assert!(ttl.is_some_and(|t| t < std::time::Duration::from_secs(1)), "a live lease in its last second: {ttl:?}");
    assert_eq!(keys, ["last-second.key"], "its keys");
    backend.revoke_lease(granted.id).await.unwrap();
}

/// `Backend::create` with `Precondition::PrefixEmpty` for a key outside the prefix (an
/// optimistic read lock: its key is created while no writer's key exists): it creates a new
/// key, and never overwrites one that exists — `created` is false and `mine` is the key as
/// it was, with its own create revision (an overwrite on etcd kept the old create revision
/// while the answer reported the transaction's).
pub async fn create_prefix_empty_never_overwrites(client: &Client) {
    use leasehold::backend::{CreateRequest, Precondition};
    let b = client.backend();
    let lease = b.grant_lease(std::time::Duration::from_secs(30)).await.unwrap().id;
    let name = format!("create-prefix-empty-{}", std::process::id());
    let base = client.prefix_of(&name).unwrap();
    let (writers, key) = (format!("{base}write/"), format!("{base}read/{lease:x}-0"));
    let req = |value: &[u8]| CreateRequest {
        key: key.clone(),
        value: value.to_vec(),
        lease,
        precondition: Precondition::PrefixEmpty,
        prefix: writers.clone(),
        head_limit: 1,
        replaces: None,
        read: None,
        fence: None,
    };
    let first = b.create(req(b"first")).await.unwrap();
    assert!(first.created && first.head.is_empty(), "{first:?}");
    let stored = b.get(&key).await.unwrap().unwrap();
    assert_eq!(first.mine.as_ref().map(|kv| kv.create_revision), Some(stored.create_revision));
    let again = b.create(req(b"second")).await.unwrap();
    assert!(!again.created, "an existing key was overwritten: {again:?}");
    let mine = again.mine.expect("the key as it is");
    assert_eq!((mine.value.as_slice(), mine.create_revision), (&b"first"[..], stored.create_revision));
    assert_eq!(b.get(&key).await.unwrap().unwrap().value, b"first");
    b.revoke_lease(lease).await.unwrap();
}

/// `Backend::create` with a fence (`CreateRequest::fence`): while the fence key has the
/// revision the request names (absent: `None`) the create works as without one; once it has
/// moved, the request changes nothing — no key, no delete of `replaces`, no new revision —
/// and says where the fence is now, so the caller can send it again. This is what keeps a
/// late copy of a create whose outcome was unknown from making a key nothing owns.
pub async fn create_with_a_moved_fence_changes_nothing(client: &Client) {
    use leasehold::backend::{CreateRequest, Fence, Precondition, Replaced};
    let b = client.backend();
    let lease = b.grant_lease(std::time::Duration::from_secs(30)).await.unwrap().id;
    let base = client.prefix_of(&format!("fenced-create-{}", std::process::id())).unwrap();
    let fence_key = format!("{base}fence");
    let queue = format!("{base}q/");
    let req = |n: u32, fence: Option<i64>, replaces: Option<Replaced>| CreateRequest {
        key: format!("{queue}{lease:x}-{n}"),
        value: b"v".to_vec(),
        lease,
        precondition: Precondition::KeyAbsent,
        prefix: queue.clone(),
        head_limit: 0,
        replaces,
        read: Some(fence_key.clone()),
        fence: Some(Fence { key: fence_key.clone(), revision: fence }),
    };
    // The fence is absent and the request says so: created, as without a fence.
    let first = b.create(req(0, None, None)).await.unwrap();
    assert!(first.created && first.fence_moved.is_none(), "{first:?}");
    // The fence moves; a copy of a request sent before that is refused whole.
    let put = Write::Put { key: fence_key.clone(), value: Vec::new(), lease: Some(lease) };
    let moved = b.write_if(&[], vec![put.clone()]).await.unwrap().expect("unconditional");
    let old = Replaced { key: format!("{queue}{lease:x}-0"), revision: None };
    let late = b.create(req(1, None, Some(old.clone()))).await.unwrap();
    assert!(!late.created, "a create past a moved fence wrote its key: {late:?}");
    assert_eq!(late.fence_moved, Some(moved), "the refusal says where the fence is: {late:?}");
    assert_eq!(late.revision, moved, "a refused create advanced the revision: {late:?}");
    let (keys, _) = b.range_prefix(&queue, 0).await.unwrap();
    let names: Vec<&str> = keys.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(names, [old.key.as_str()], "a refused create deleted what it replaces, or made its key");
    // With the fence's new revision the same request goes through, replaces included.
    let again = b.create(req(1, Some(moved), Some(old.clone()))).await.unwrap();
    assert!(again.created && again.fence_moved.is_none(), "{again:?}");
    assert!(b.get(&old.key).await.unwrap().is_none(), "the replaced key stayed");
    // A key that exists is reported as without a fence (created false, no fence moved).
    let exists = b.create(req(1, Some(moved), None)).await.unwrap();
    assert!(!exists.created && exists.fence_moved.is_none() && exists.mine.is_some(), "{exists:?}");
    // A fence expected present but absent (deleted with its lease) has moved too: to 0.
    b.write_if(&[], vec![Write::Delete { key: fence_key.clone() }]).await.unwrap();
    let gone = b.create(req(2, Some(moved), None)).await.unwrap();
    assert!(!gone.created && gone.fence_moved == Some(0), "{gone:?}");
    b.revoke_lease(lease).await.unwrap();
}

/// `Backend::watch_key_and_prefix` (a register's feed: its value `<name>` and its lock's
/// queue `<name>/`) reports the key and the keys under the prefix, in revision order, and
/// none of the other names that start with the key (`<name>2`, `<name>x`, `<name>-x`,
/// `<name>+x`), put or deleted in between; a step that writes the value and hands the lock
/// on comes whole in one batch (the hand-off the feed serves); a prefix that does not
/// extend the key is refused.
pub async fn watch_key_and_prefix_is_narrow(client: &Client) {
    use leasehold::backend::WatchEvent;
    let b = client.backend();
    let prefix = client.prefix_of("feed-narrow").unwrap();
    let key = prefix.trim_end_matches('/').to_owned();
    let mut watch = b.watch_key_and_prefix(&key, &prefix).await.unwrap();
    let put = |k: &str| Write::Put { key: k.to_owned(), value: b"v".to_vec(), lease: None };
    let others = [format!("{key}2"), format!("{key}x/y"), format!("{key}-x"), format!("{key}.x/y"), format!("{key}+x")];
    let mut wanted = Vec::new();
    for (i, mine) in [key.clone(), format!("{prefix}q"), format!("{prefix}r")].into_iter().enumerate() {
        // Every write of a wanted key is followed and preceded by writes of other names.
        for other in &others {
            b.write_if(&[], vec![put(other)]).await.unwrap();
        }
        let at = b.write_if(&[], vec![put(&mine)]).await.unwrap().unwrap();
        wanted.push((format!("put {mine}"), at));
        for other in &others {
            b.write_if(&[], vec![Write::Delete { key: other.clone() }]).await.unwrap();
        }
        if i == 2 {
            let at = b.write_if(&[], vec![Write::Delete { key: mine.clone() }]).await.unwrap().unwrap();
            wanted.push((format!("delete {mine}"), at));
        }
    }
    let mut seen = Vec::new();
    while seen.len() < wanted.len() {
        let batch = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next()).await;
        for event in batch.expect("the wanted events arrive").unwrap() {
            seen.push(match event {
                WatchEvent::Put(kv) => (format!("put {}", kv.key), kv.mod_revision),
                WatchEvent::Delete { key, revision } => (format!("delete {key}"), revision),
            });
        }
    }
    assert_eq!(seen, wanted, "only the key and the prefix's keys, in order");

    // A write and release in one step, with another name's write in it too: one batch.
    let (q, s) = (format!("{prefix}q"), format!("{prefix}s"));
    let step = vec![put(&key), Write::Delete { key: q.clone() }, put(&s), put(&others[0])];
    let at = b.write_if(&[], step).await.unwrap().unwrap();
    let batch = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next()).await;
    let batch: Vec<_> = batch
        .expect("the step's events arrive")
        .unwrap()
        .into_iter()
        .map(|e| match e {
            WatchEvent::Put(kv) => (format!("put {}", kv.key), kv.mod_revision),
            WatchEvent::Delete { key, revision } => (format!("delete {key}"), revision),
        })
        .collect();
    let mut step_seen = batch.clone();
    step_seen.sort();
    let mut step_wanted = vec![(format!("put {key}"), at), (format!("delete {q}"), at), (format!("put {s}"), at)];
    step_wanted.sort();
    assert_eq!(step_seen, step_wanted, "the value, the release and the next place in one batch: {batch:?}");

    let refused = b.watch_key_and_prefix(&key, "elsewhere/").await;
    assert!(matches!(refused, Err(leasehold::Error::InvalidArgument { .. })), "a prefix not extending the key");
    for k in [key, s, others[0].clone()] {
        b.write_if(&[], vec![Write::Delete { key: k }]).await.unwrap();
    }
}
