//! Register conformance checks.

use leasehold::{Client, Mutex, Register, Strategy};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[path = "../../examples/support/counting.rs"]
#[allow(dead_code)]
pub mod counting;

fn incr(v: Option<&[u8]>) -> Option<Vec<u8>> {
    let n: u64 = v.map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
    Some((n + 1).to_string().into_bytes())
}

/// Tasks using all three strategies at once increment one register; no update is lost,
/// and the queued updates carry strictly increasing fencing tokens.
pub async fn mixed_strategies_lose_no_update(client: &Client, tasks: usize, rounds: usize) {
    let name = "reg-mixed";
    let mut handles = Vec::new();
    for i in 0..tasks {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let s = client.session().await.unwrap();
            let strategy = [Strategy::Optimistic, Strategy::Pessimistic, Strategy::Adaptive][i % 3];
            let r = Register::new(&s, name).unwrap().with_strategy(strategy);
            let mut tokens = Vec::new();
            for _ in 0..rounds {
                let u = r.update(incr).await.unwrap();
                assert!(u.written);
                tokens.extend(u.token);
            }
            s.close().await.unwrap();
            tokens
        }));
    }
    let mut tokens = Vec::new();
    for h in handles {
        let mine = h.await.unwrap();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "one task's tokens must increase: {mine:?}");
        tokens.extend(mine);
    }
    let s = client.session().await.unwrap();
    let v = Register::new(&s, name).unwrap().get().await.unwrap().unwrap();
    assert_eq!(String::from_utf8(v).unwrap(), (tasks * rounds).to_string(), "lost update");
    tokens.sort();
    tokens.dedup();
    assert!(tokens.len() >= rounds, "the pessimistic task's updates all carry distinct tokens");
}

/// Alone, an adaptive register stays optimistic (no lock, no conflicts); under contention it
/// switches to the queue (some updates are made under the lock). Contention here: every
/// update spends 1 ms between its read and its write, so concurrent updates conflict on
/// most attempts (without it, in-process tasks on the memory backend conflict on ~0.2
/// attempts per update, which is not contention worth a queue). Each contender has a
/// client of its own on the same store, like separate processes: the tasks of one client
/// queue for each other without measuring (`adaptive_tasks_of_one_client_queue_for_each_other`).
pub async fn adaptive_follows_contention(client: &Client, contenders: usize, rounds: usize) {
    let s = client.session().await.unwrap();
    let alone = Register::new(&s, "reg-alone").unwrap().with_strategy(Strategy::Adaptive);
    for _ in 0..rounds {
        let u = alone.update(incr).await.unwrap();
        assert_eq!((u.conflicts, u.token), (0, None), "alone: optimistic, no conflict");
    }
    let mut handles = Vec::new();
    for _ in 0..contenders {
        let client = Client::from_arc(client.backend().clone());
        handles.push(tokio::spawn(async move {
            let s = client.session().await.unwrap();
            let r = Register::new(&s, "reg-busy").unwrap().with_strategy(Strategy::Adaptive);
            let mut queued = 0;
            for _ in 0..rounds {
                let slow = |v: Option<Vec<u8>>, _| async move {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    incr(v.as_deref())
                };
                queued += usize::from(r.update_async(slow).await.unwrap().token.is_some());
            }
            queued
        }));
    }
    let mut queued = 0;
    for h in handles {
        queued += h.await.unwrap();
    }
    assert!(queued > 0, "{contenders} contenders × {rounds} updates never switched to the queue");
    let v = Register::new(&s, "reg-busy").unwrap().get().await.unwrap().unwrap();
    assert_eq!(String::from_utf8(v).unwrap(), (contenders * rounds).to_string());
}

/// Adaptive handles of separate clients (like processes) that all went to the queue leave
/// it where a hand-off costs many store round trips: on the embedded store a
/// compare-and-swap takes a microsecond or two, a hand-off tens to hundreds, and a queue
/// every handle joined used to keep them all (0.01–0.13 times optimistic's updates per
/// second, `docs/performance.md`). First each handle's updates spend 1 ms between read and
/// write, so they conflict and switch to the queue (where that function is most of a
/// hand-off, and the queue stays); then the updates are instant. In their second half,
/// fewer than a tenth may still queue on the embedded store. On etcd a hand-off costs
/// about a commit, and the handles may stay queued. Nothing is lost on any backend.
pub async fn adaptive_leaves_a_dear_queue(client: &Client, clients: usize) {
    let name = "reg-dear";
    let memory = client.backend().kind() == "memory";
    let (slow, fast) = (10, if memory { 2_000 } else { 40 });
    let mut handles = Vec::new();
    for _ in 0..clients {
        let client = Client::from_arc(client.backend().clone());
        handles.push(tokio::spawn(async move {
            let s = client.session().await.unwrap();
            let r = Register::new(&s, name).unwrap().with_strategy(Strategy::Adaptive);
            let mut slow_queued = 0;
            for _ in 0..slow {
                let update = |v: Option<Vec<u8>>, _| async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    incr(v.as_deref())
                };
                slow_queued += usize::from(r.update_async(update).await.unwrap().token.is_some());
            }
            let mut late_queued = 0;
            for i in 0..fast {
                let queued = r.update(incr).await.unwrap().token.is_some();
                late_queued += usize::from(queued && i >= fast / 2);
            }
            s.close().await.unwrap();
            (slow_queued, late_queued)
        }));
    }
    let (mut slow_queued, mut late_queued) = (0, 0);
    for h in handles {
        let (s, l) = h.await.unwrap();
        (slow_queued, late_queued) = (slow_queued + s, late_queued + l);
    }
    assert!(slow_queued > 0, "{clients} clients' slow updates never queued: nothing to leave");
    let late = clients * (fast - fast / 2);
    if memory {
        assert!(
            late_queued * 10 < late,
            "{late_queued} of the last {late} updates queued: the handles stayed in a dear queue"
        );
    }
    let s = client.session().await.unwrap();
    let v = Register::new(&s, name).unwrap().get().await.unwrap().unwrap();
    assert_eq!(String::from_utf8(v).unwrap(), (clients * (slow + fast)).to_string(), "lost update");
    s.close().await.unwrap();
}

/// An adaptive update whose write fails while someone holds or waits for the register's
/// lock joins the queue at once, even when the value changed meanwhile (a busy queue keeps
/// changing it; retrying against it would starve the update).
pub async fn adaptive_yields_to_a_busy_queue(client: &Client) {
    let s = client.session().await.unwrap();
    let name = "reg-yield";
    Register::new(&s, name).unwrap().update(|_| Some(b"0".to_vec())).await.unwrap();
    let (read, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let adaptive = {
        let (client, read, go) = (client.clone(), read.clone(), go.clone());
        tokio::spawn(async move {
            let s = client.session().await.unwrap();
            let r = Register::new(&s, name).unwrap().with_strategy(Strategy::Adaptive);
            let mut first = true;
            let u = r
                .update_async(|v, _| {
                    let wait = std::mem::take(&mut first);
                    let (read, go) = (read.clone(), go.clone());
                    async move {
                        if wait {
                            read.notify_one(); // it has read the value ...
                            go.notified().await; // ... and writes only once the queue is busy
                        }
                        incr(v.as_deref())
                    }
                })
                .await
                .unwrap();
            s.close().await.unwrap();
            u
        })
    };
    read.notified().await;
    // The value changes under the adaptive update's feet, then the lock is held.
    Register::new(&s, name).unwrap().with_strategy(Strategy::Pessimistic).update(incr).await.unwrap();
    let holder = Mutex::new(&s, name).unwrap().lock().await.unwrap();
    go.notify_one();
    // The adaptive update must now queue behind the holder: its key appears in the lock's
    // prefix, and it cannot finish while the holder holds.
    let prefix = client.prefix_of(name).unwrap();
    let queued = async {
        while client.backend().range_prefix(&prefix, 0).await.unwrap().0.len() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), queued).await.expect("the adaptive update queued");
    assert!(!adaptive.is_finished(), "the adaptive update finished while the lock was held");
    holder.unlock().await.unwrap();
    let u = adaptive.await.unwrap();
    assert!(u.written && u.token.is_some(), "the update was made under the lock: {u:?}");
    assert_eq!(u.conflicts, 1, "it joined the queue after its first failed write: {u:?}");
    let v = Register::new(&s, name).unwrap().get().await.unwrap().unwrap();
    assert_eq!(v, b"2", "no update lost");
}

/// An update function that declines writes nothing.
pub async fn declined_update_writes_nothing(client: &Client) {
    let s = client.session().await.unwrap();
    let r = Register::new(&s, "reg-decline").unwrap().with_strategy(Strategy::Pessimistic);
    let u = r.update(|_| None).await.unwrap();
    assert!(!u.written && u.previous.is_none());
    assert!(r.get().await.unwrap().is_none());
    assert!(client.backend().range_prefix(&client.prefix_of("reg-decline").unwrap(), 0).await.unwrap().0.is_empty());
}

/// A queued update reads the value itself only when it cannot know it: the call that
/// queues reads it when the lock is free at once, and a holder's write (which releases the
/// lock in the same transaction) hands it to the next queued update of the same client.
/// Each of the updates below makes no read of its own, and none is lost.
pub async fn queued_update_reads_only_when_needed(client: &Client) {
    let counts = Arc::new(counting::Counts::default());
    let counting = Client::new(counting::Counting { inner: client.backend().clone(), counts: counts.clone() });
    let name = "reg-reads";
    let (a, b) = (counting.session().await.unwrap(), counting.session().await.unwrap());
    let first = Register::new(&a, name).unwrap().with_strategy(Strategy::Pessimistic);
    let second = Register::new(&b, name).unwrap().with_strategy(Strategy::Pessimistic);
    let before = counts.gets();
    assert!(first.update(incr).await.unwrap().token.is_some(), "queued");
    assert_eq!(counts.gets() - before, 0, "the lock was free: the queueing call read the value");
    // `first` holds the lock in its update while `second` queues behind it.
    let (inside, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let holder = {
        let (inside, go) = (inside.clone(), go.clone());
        tokio::spawn(async move {
            let slow = |v: Option<Vec<u8>>, _| {
                let (inside, go) = (inside.clone(), go.clone());
                async move {
                    inside.notify_one();
                    go.notified().await;
                    incr(v.as_deref())
                }
            };
            first.update_async(slow).await.unwrap()
        })
    };
    inside.notified().await;
    let waiter = tokio::spawn(async move { second.update(incr).await.unwrap() });
    let prefix = client.prefix_of(name).unwrap();
    let queued = async {
        while client.backend().range_prefix(&prefix, 0).await.unwrap().0.len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), queued).await.expect("the second update queued");
    let before = counts.gets();
    go.notify_one();
    let (held, waited) = (holder.await.unwrap(), waiter.await.unwrap());
    assert_eq!(held.previous.as_deref(), Some(&b"1"[..]));
    assert_eq!(waited.previous.as_deref(), Some(&b"2"[..]), "the waiter saw the holder's write");
    assert_eq!((held.conflicts, waited.conflicts), (0, 0));
    assert!(waited.token > held.token);
    assert_eq!(counts.gets() - before, 0, "the hand-off within one client made no read");
    let v = Register::new(&a, name).unwrap().get().await.unwrap().unwrap();
    assert_eq!(v, b"3", "no update lost");
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// An adaptive update that starts while another update of the same register by the same
/// client runs goes through the queue when the update functions are long against the
/// queue's hand-over (here [`FUNCTION`]; the client never even measures compare-and-swap
/// then, `src/crowd.rs`): however many tasks of one process update a register at once, at
/// most one of them is optimistic at a time, so no update fails more than once (an
/// optimistic one that meets the queue yields to it), and nothing is lost.
///
/// The function must be at least the queue's hand-over on every backend: the crowd
/// measures compare-and-swap where a function is under half the queue's time per update.
/// It was 1 ms, and on the TiKV test server (a debug build; about 17 ms per hand-over
/// between these tasks) the client measured compare-and-swap, rightly — six tasks with 1 or
/// 10 ms functions finished there in about half the queue's time, failing up to six times
/// each. With 8 rounds that came only at the last few updates; with 24, 2 of 3 runs failed.
pub async fn adaptive_tasks_of_one_client_queue_for_each_other(client: &Client, tasks: usize, rounds: usize) {
    /// Each update function's time: at least the queue's hand-over on every backend.
    const FUNCTION: Duration = Duration::from_millis(25);
    let name = "reg-local";
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let s = client.session().await.unwrap();
            let r = Register::new(&s, name).unwrap().with_strategy(Strategy::Adaptive);
            let mut queued = 0;
            for _ in 0..rounds {
                let slow = |v: Option<Vec<u8>>, _| async move {
                    tokio::time::sleep(FUNCTION).await;
                    incr(v.as_deref())
                };
                let u = r.update_async(slow).await.unwrap();
                assert!(u.written, "{u:?}");
                assert!(u.conflicts <= 1, "an update of one client's tasks failed more than once: {u:?}");
                queued += usize::from(u.token.is_some());
            }
            s.close().await.unwrap();
            queued
        }));
    }
    let mut queued = 0;
    for h in handles {
        queued += h.await.unwrap();
    }
    assert!(queued > 0, "{tasks} tasks of one client never queued for each other");
    let s = client.session().await.unwrap();
    let v = Register::new(&s, name).unwrap().get().await.unwrap().unwrap();
    assert_eq!(String::from_utf8(v).unwrap(), (tasks * rounds).to_string(), "lost update");
}

/// Adaptive tasks of one client whose updates are short — the embedded store measures
/// compare-and-swap cheaper than its queue for them and uses it (`src/crowd.rs`) — leave
/// another client's queued updates alone: once one is queued, the tasks' writes stop within
/// a few updates of each (each checks the queue every `CHECK_QUEUE_EVERY` = 8 updates, and
/// all check once one has seen it). The queued updates spend 2 ms between read and write,
/// so a writer that went on would fail each of them again and again (about a hundred times
/// each with the check left out: until the tasks next measured the queue); they fail at most
/// twice, and nothing is lost. Where the queue is the measured mode (etcd) nobody fails.
pub async fn adaptive_optimistic_mode_yields_to_a_queue(client: &Client, tasks: usize) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let name = "reg-crowd-yield";
    let setup = client.session().await.unwrap();
    Register::new(&setup, name).unwrap().update(|_| Some(b"0".to_vec())).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Tasks that made `STREAK` compare-and-swap updates in a row (no token: not queued).
    const STREAK: u32 = 20;
    let unqueued = Arc::new(AtomicUsize::new(0));
    // The tasks' own client (its own measurements), on the same store.
    let crowd = Client::from_arc(client.backend().clone());
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (crowd, stop, unqueued) = (crowd.clone(), stop.clone(), unqueued.clone());
        handles.push(tokio::spawn(async move {
            let s = crowd.session().await.unwrap();
            let r = Register::new(&s, name).unwrap().with_strategy(Strategy::Adaptive);
            let (mut n, mut streak, mut counted) = (0_u64, 0_u32, false);
            while !stop.load(Ordering::Relaxed) {
                let u = r.update(incr).await.unwrap();
                assert!(u.written);
                streak = if u.token.is_none() { streak + 1 } else { 0 };
                if streak == STREAK && !counted {
                    counted = true; // once per task
                    unqueued.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            s.close().await.unwrap();
            n
        }));
    }
    // Time to measure both modes and settle (epochs of at least 5 ms): where compare-and-
    // swap is measured cheaper (the embedded store), until every task has used it for a
    // while; where the queue is (etcd), that never comes, and 3 s are plenty. (A fixed
    // 300 ms before: a slow start on a loaded machine left the tasks queued, and the
    // planted check in `scripts/test.sh` would have had nothing to catch.)
    let settle = tokio::time::Instant::now() + Duration::from_secs(3);
    while unqueued.load(Ordering::Relaxed) < tasks && tokio::time::Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if client.backend().kind() == "memory" {
        // Else the check below would pass with nothing to catch.
        let n = unqueued.load(Ordering::Relaxed);
        assert_eq!(n, tasks, "only {n} of {tasks} tasks took compare-and-swap within 3 s on the embedded store");
    }
    let queued = Register::new(&setup, name).unwrap().with_strategy(Strategy::Pessimistic);
    let slow = |v: Option<Vec<u8>>, _| async move {
        tokio::time::sleep(Duration::from_millis(2)).await;
        incr(v.as_deref())
    };
    let mut failed = Vec::new();
    for _ in 0..10 {
        let u = queued.update_async(slow).await.unwrap();
        assert!(u.written && u.token.is_some(), "{u:?}");
        failed.push(u.conflicts);
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 10;
    for h in handles {
        total += h.await.unwrap();
    }
    // The tasks' unchecked writes after a queued update appeared fall in its first try.
    assert!(
        failed.iter().all(|&c| c <= 2),
        "the queued updates failed {failed:?} times (at most 2 each): optimistic writers barged past the queue"
    );
    let v = Register::new(&setup, name).unwrap().get().await.unwrap().unwrap();
    assert_eq!(String::from_utf8(v).unwrap(), total.to_string(), "lost update");
    setup.close().await.unwrap();
}

/// Adaptive tasks of one client keep updating while pessimistic loops of the same client
/// keep the register's lock busy. In the client's measured compare-and-swap mode an update
/// that finds the queue busy waits and joins it after a few tries; waiting for the client's
/// own queue without counting is only for the hand-over from the queue's mode (the updates
/// started in it), not for queued updates of another strategy, which never drain while the
/// loops run (the adaptive tasks then stood still).
pub async fn adaptive_tasks_progress_beside_pessimistic_loops(client: &Client, tasks: usize) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let name = "reg-crowd-beside-loops";
    let setup = client.session().await.unwrap();
    Register::new(&setup, name).unwrap().update(|_| Some(b"0".to_vec())).await.unwrap();
    let (stop, stop_loops) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    // One client for both: its own measurements, its own queue.
    let crowd = Client::from_arc(client.backend().clone());
    let done: Arc<Vec<AtomicU64>> = Arc::new((0..tasks).map(|_| AtomicU64::new(0)).collect());
    let mut handles = Vec::new();
    for i in 0..tasks {
        let (crowd, stop, done) = (crowd.clone(), stop.clone(), done.clone());
        handles.push(tokio::spawn(async move {
            let s = crowd.session().await.unwrap();
            let r = Register::new(&s, name).unwrap().with_strategy(Strategy::Adaptive);
            while !stop.load(Ordering::Relaxed) {
                assert!(r.update(incr).await.unwrap().written);
                done[i].fetch_add(1, Ordering::Relaxed);
            }
            s.close().await.unwrap();
        }));
    }
    // Time to measure both modes and settle (epochs of at least 5 ms).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (crowd, stop_loops) = (crowd.clone(), stop_loops.clone());
        loops.push(tokio::spawn(async move {
            let s = crowd.session().await.unwrap();
            let r = Register::new(&s, name).unwrap().with_strategy(Strategy::Pessimistic);
            let slow = |v: Option<Vec<u8>>, _| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                incr(v.as_deref())
            };
            let mut n = 0_u64;
            while !stop_loops.load(Ordering::Relaxed) {
                assert!(r.update_async(slow).await.unwrap().written);
                n += 1;
            }
            s.close().await.unwrap();
            n
        }));
    }
    // Every adaptive task completes updates while the loops run.
    let before: Vec<u64> = done.iter().map(|d| d.load(Ordering::Relaxed)).collect();
    let progressed = |done: &[AtomicU64]| done.iter().zip(&before).all(|(d, b)| d.load(Ordering::Relaxed) >= b + 3);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !progressed(&done) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let during: Vec<u64> = done.iter().zip(&before).map(|(d, b)| d.load(Ordering::Relaxed) - b).collect();
    stop_loops.store(true, Ordering::Relaxed);
    let mut total = 0;
    for l in loops {
        total += l.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    assert!(
        during.iter().all(|&n| n >= 3),
        "adaptive tasks' updates while pessimistic loops ran: {during:?} in 10 s (3 each wanted)"
    );
    total += done.iter().map(|d| d.load(Ordering::Relaxed)).sum::<u64>();
    let v = Register::new(&setup, name).unwrap().get().await.unwrap().unwrap();
    assert_eq!(String::from_utf8(v).unwrap(), total.to_string(), "lost update");
    setup.close().await.unwrap();
}

/// A queued update loop under contention keeps its place in the queue: the write that
/// ends one update also queues the handle's next one, so the loop costs one store write per
/// update instead of two (queue, then write and release), and fencing tokens still
/// increase. The value comes with the admission (the register queue's feed), so the
/// updates make no reads. An idle handle's unclaimed place is released (the lock comes free while the
/// handles live), and dropping the handles leaves no key. Each contender has its own
/// client, like separate processes (with `shared_client`, one client and a session each,
/// like tasks of one process); every update spends 1 ms under the lock, so the queue is
/// never empty while the loops run. Last, tasks sharing one session and one handle (one
/// local slot for the lock) all finish: a place is not kept while another task waits for it.
pub async fn queued_loop_keeps_its_place(client: &Client, contenders: usize, rounds: usize, shared_client: bool) {
    let name = if shared_client { "reg-keep-place-shared" } else { "reg-keep-place" };
    let counts = Arc::new(counting::Counts::default());
    let shared = Client::new(counting::Counting { inner: client.backend().clone(), counts: counts.clone() });
    let mut handles = Vec::new();
    for _ in 0..contenders {
        let counting = if shared_client {
            shared.clone()
        } else {
            Client::new(counting::Counting { inner: client.backend().clone(), counts: counts.clone() })
        };
        handles.push(tokio::spawn(async move {
            let s = counting.session().await.unwrap();
            let r = Register::new(&s, name)
                .unwrap()
                .with_strategy(Strategy::Pessimistic)
                .with_requeue_window(Duration::from_millis(200));
            let mut tokens = Vec::new();
            for _ in 0..rounds {
                let slow = |v: Option<Vec<u8>>, _| async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    incr(v.as_deref())
                };
                let u = r.update_async(slow).await.unwrap();
                assert!(u.written && u.conflicts == 0, "{u:?}");
                tokens.push(u.token.expect("queued"));
            }
            (s, r, tokens)
        }));
    }
    let mut kept = Vec::new();
    let mut all = Vec::new();
    for h in handles {
        let (s, r, tokens) = h.await.unwrap();
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "one handle's tokens must increase: {tokens:?}");
        all.extend(tokens);
        kept.push((s, r));
    }
    let updates = (contenders * rounds) as u64;
    let (writes, gets) = (counts.writes(), counts.gets());
    assert!(
        writes * 2 <= updates * 3,
        "{writes} store writes for {updates} contended updates: the loops did not keep their places"
    );
    // Admitted by a write and release, an update takes the value from its queue's feed.
    assert!(gets * 4 <= updates, "{gets} reads for {updates} queued updates: the feed brought no value");
    all.sort();
    all.dedup();
    assert_eq!(all.len() as u64, updates, "every update had a token of its own");
    let s = client.session().await.unwrap();
    let v = Register::new(&s, name).unwrap().get().await.unwrap().unwrap();
    assert_eq!(String::from_utf8(v).unwrap(), updates.to_string(), "lost update");
    // The handles are idle and alive: their parked places are released once they come to
    // the head unclaimed, so another session gets the lock.
    let other = Mutex::new(&s, name).unwrap();
    let guard = other.lock_timeout(Duration::from_secs(20)).await.expect("idle parked places are released");
    guard.unlock().await.unwrap();
    for (session, register) in kept {
        drop(register);
        session.settle().await;
    }
    let prefix = client.prefix_of(name).unwrap();
    assert_eq!(client.backend().range_prefix(&prefix, 0).await.unwrap().0, Vec::new(), "a key was left behind");
    // Tasks of one session, one handle: they take turns at the session's local slot, while
    // another session's loop keeps the lock contended. A place kept while another task of
    // the session waits for that slot would let one task run all its updates while the
    // others wait.
    let r = Register::new(&s, name)
        .unwrap()
        .with_strategy(Strategy::Pessimistic)
        .with_requeue_window(Duration::from_millis(200));
    let other = client.session().await.unwrap();
    let other_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The session's tasks start once the other session holds the lock (its first update
    // runs), so every task's first update queues behind it: a task polled first must not
    // count updates it made alone before the others, or the other session, were running
    // (on a loaded machine one did: [7, 6, 7, 20]).
    let (started, start) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..contenders {
        let (r, other_done, mut start) = (r.clone(), other_done.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait_for(|s| *s).await.unwrap();
            let mut while_contended = 0;
            for _ in 0..rounds {
                r.update(incr).await.unwrap();
                while_contended += usize::from(!other_done.load(std::sync::atomic::Ordering::SeqCst));
            }
            while_contended
        }));
    }
    let contender = {
        let r = Register::new(&other, name).unwrap().with_strategy(Strategy::Pessimistic);
        tokio::spawn(async move {
            for _ in 0..rounds {
                r.update_async(|v: Option<Vec<u8>>, _| {
                    started.send_replace(true);
                    async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        incr(v.as_deref())
                    }
                })
                .await
                .unwrap();
            }
            other_done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let all_done = async {
        contender.await.unwrap();
        let mut progressed = Vec::new();
        for t in tasks {
            progressed.push(t.await.unwrap());
        }
        progressed
    };
    // The session's last kept place, when its tasks are done, holds up the other loop for
    // one window (200 ms), by design.
    let progressed = tokio::time::timeout(Duration::from_secs(20), all_done).await.expect("all finished");
    // The session's tasks share the lock in the local slot's FIFO order while the other loop
    // runs (measured on 2026-12-03 under load: 30 of 30 runs within one update of each
    // other, e.g. [5, 5, 4, 5] or [20, 20, 20, 20]; once [1, 1, 16, 1] with a place kept
    // while others waited). Planting that again (the local-waiter and parking checks
    // removed from `keep_place`) is caught in only about 1 run in 8 today: the parked place
    // is handed to a waiting task of the handle first, so the checks rarely decide.
    let (least, most) = (progressed.iter().min().unwrap(), progressed.iter().max().unwrap());
    assert!(
        least * 2 >= *most,
        "tasks of one session made {progressed:?} updates while another session contended: one kept the slot"
    );
    let v = r.get().await.unwrap().unwrap();
    assert_eq!(String::from_utf8(v).unwrap(), (2 * updates + rounds as u64).to_string(), "lost update");
    drop(r);
    s.settle().await;
    other.close().await.unwrap();
    assert_eq!(client.backend().range_prefix(&prefix, 0).await.unwrap().0, Vec::new(), "a key was left behind");
    s.close().await.unwrap();
}

/// A parked place is the handle's own key in the queue; an update that claims it and is
/// cancelled while it waits leaves nothing behind, and the update is not applied.
pub async fn parked_place_cancelled_leaves_nothing(client: &Client) {
    let name = "reg-park-cancel";
    let prefix = client.prefix_of(name).unwrap();
    let keys = || async { client.backend().range_prefix(&prefix, 0).await.unwrap().0 };
    let (a, b, c) = (client.session().await.unwrap(), client.session().await.unwrap(), client.session().await.unwrap());
    let r = Register::new(&a, name)
        .unwrap()
        .with_strategy(Strategy::Pessimistic)
        .with_requeue_window(Duration::from_secs(30));
    r.update(incr).await.unwrap(); // alone: keeps no place
    assert_eq!(keys().await, Vec::new());
    // B holds the lock; A's next update queues behind it, then C behind A.
    let held = Mutex::new(&b, name).unwrap().lock().await.unwrap();
    let update = {
        let r = r.clone();
        tokio::spawn(async move { r.update(incr).await.unwrap() })
    };
    let until = |n: usize| async move {
        let wait = async {
            while keys().await.len() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait).await.expect("queued");
    };
    until(2).await;
    let third = {
        let c = c.clone();
        tokio::spawn(async move { Mutex::new(&c, name).unwrap().lock().await.unwrap() })
    };
    until(3).await;
    held.unlock().await.unwrap();
    let u = update.await.unwrap();
    assert!(u.written && u.token.is_some());
    // A waited and its next update followed closely: the write queued A again behind C.
    let queue = keys().await;
    assert_eq!(queue.len(), 2, "C's key and A's parked place: {queue:?}");
    assert_eq!(queue[1].lease, a.lease_id(), "A's place is at the back");
    // The next update claims the place and waits behind C; cancelled, it leaves nothing.
    let cancelled = tokio::time::timeout(Duration::from_millis(100), r.update(incr)).await;
    assert!(cancelled.is_err(), "C holds the lock: the update waited");
    a.settle().await;
    let queue = keys().await;
    assert_eq!(queue.len(), 1, "only C's key is left: {queue:?}");
    assert_eq!(queue[0].lease, c.lease_id());
    third.await.unwrap().unlock().await.unwrap();
    let v = r.get().await.unwrap().unwrap();
    assert_eq!(v, b"2", "the cancelled update wrote nothing");
    assert_eq!(keys().await, Vec::new());
    for s in [a, b, c] {
        s.close().await.unwrap();
    }
}
