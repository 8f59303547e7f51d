//! Tests of the register's internals that its public API cannot reach.

use super::*;
use crate::Client;
use tokio::sync::Notify;

/// An adaptive handle `r` (no kept places) of one client, and a pessimistic `holder` of
/// another client over the same embedded store, both of the register `reg`.
struct Pair {
    client: Client,
    s: crate::Session,
    r: Register,
    other_session: crate::Session,
    holder: Register,
}

impl Pair {
    async fn new() -> Self {
        let client = Client::memory();
        let s = client.session().await.unwrap();
        let r = Register::new(&s, "reg").unwrap().with_strategy(Strategy::Adaptive).with_requeue_window(Duration::ZERO);
        let other = Client::from_arc(client.backend().clone());
        let other_session = other.session().await.unwrap();
        let holder = Register::new(&other_session, "reg").unwrap().with_strategy(Strategy::Pessimistic);
        Self { client, s, r, other_session, holder }
    }
}

/// A handle that stays queued renews its round trips with its queued writes: the round
/// trips its optimistic writes timed while every contender competed for the runtime
/// (here 1 ms) do not make a queue whose hand-offs are many times dearer than its writes
/// look cheap. (Before, the least of those stale writes was the round trip: at 64 clients
/// over one embedded store some sweep rounds kept every handle queued, at 0.05 times
/// optimistic's updates per second.) The clock is paused: another client's holder takes
/// 2 ms per hand-off, and a write takes no time.
#[tokio::test(start_paused = true)]
async fn a_queued_handle_times_its_writes_as_round_trips() {
    let Pair { s, r, other_session, holder, .. } = Pair::new().await;
    for _ in 0..crate::adaptive::TRIPS {
        r.adaptive.write_took(Duration::from_millis(1));
    }
    r.adaptive.force_queue();
    for round in 0..2 {
        assert!(
            r.adaptive.queue_next() && !r.adaptive.queue_is_dear(),
            "round {round}: queued (one measurement is no verdict)"
        );
        update_behind_a_holder(&r, &holder).await;
    }
    assert!(
        r.adaptive.queue_is_dear() && !r.adaptive.queue_next(),
        "2 ms per hand-off against writes that take no time: the queue is dear and left"
    );
    other_session.close().await.unwrap();
    s.close().await.unwrap();
}

/// One update of `r` that queues behind `holder` (a pessimistic handle of another client),
/// which holds the lock for 2 ms.
async fn update_behind_a_holder(r: &Register, holder: &Register) {
    let holding = Arc::new(Notify::new());
    let held = {
        let (holder, holding) = (holder.clone(), holding.clone());
        tokio::spawn(async move {
            holder
                .update_async(|v, _| {
                    let holding = holding.clone();
                    async move {
                        holding.notify_one();
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        Some(v.unwrap_or_default())
                    }
                })
                .await
                .unwrap();
        })
    };
    holding.notified().await;
    assert!(r.update(|v| Some(v.unwrap_or_default().to_vec())).await.unwrap().token.is_some(), "queued");
    held.await.unwrap();
}

/// Makes the handle's queue measure dear and leave, as several clients over one embedded
/// store do, then lets the verdict run out and sends the handle back to the queue on
/// conflicts (paused clock).
async fn dear_then_back_in_the_queue(r: &Register) {
    r.adaptive.write_took(Duration::from_micros(2));
    r.adaptive.force_queue();
    for _ in 0..2 {
        r.adaptive.queue_measured(Duration::from_micros(400), 1, Duration::ZERO);
    }
    assert!(r.adaptive.queue_is_dear() && !r.adaptive.queue_next(), "left a dear queue");
    tokio::time::advance(crate::adaptive::DEAR_FOR).await;
    for _ in 0..30 {
        r.adaptive.optimistic(3);
    }
    assert!(r.adaptive.queue_next() && !r.adaptive.queue_is_dear(), "back in the queue on conflicts");
}

/// A handle back in the queue once its last verdict that the queue is dear ran out finds
/// the queue empty (the others stayed optimistic): its update is admitted at once and
/// measures no hand-off. While the ratios it keeps still say dear it leaves at once, and
/// closes its client's register feed. (Before, it stayed queued until its probes won, at
/// least 24 updates, its queue key making the others' checked writes yield and its feed
/// bringing an event per write.)
#[tokio::test(start_paused = true)]
async fn an_empty_queue_still_dear_is_left_at_once() {
    let Pair { client, s, r, other_session, holder } = Pair::new().await;
    r.adaptive.force_queue();
    // Opens the feed. Its queued write is the first round trip timed (0 s on the paused
    // clock): one measurement, no verdict yet.
    update_behind_a_holder(&r, &holder).await;
    dear_then_back_in_the_queue(&r).await;
    assert!(client.register_feed_is_open(&r.key), "waiting in the queue opened the feed");
    let updated = r.update(|v| Some(v.unwrap_or_default().to_vec())).await.unwrap();
    assert!(updated.token.is_some(), "the update queued");
    assert!(!r.adaptive.queue_next() && r.adaptive.queue_is_dear(), "the verdict renewed: the queue is left");
    assert!(!client.register_feed_is_open(&r.key), "the feed is closed once the handle is out");
    let updated = r.update(|v| Some(v.unwrap_or_default().to_vec())).await.unwrap();
    assert!(updated.token.is_none(), "the next update compare-and-swaps");
    other_session.close().await.unwrap();
    s.close().await.unwrap();
}

/// A queued handle whose probes win goes back to optimistic and closes its client's
/// register feed: its compare-and-swaps have no use for an event per write.
#[tokio::test(start_paused = true)]
async fn a_handle_that_leaves_the_queue_by_probes_closes_its_feed() {
    let Pair { client, s, r, other_session, holder } = Pair::new().await;
    r.adaptive.force_queue();
    update_behind_a_holder(&r, &holder).await;
    assert!(r.adaptive.queue_next(), "still queued");
    assert!(client.register_feed_is_open(&r.key), "waiting in the queue opened the feed");
    let mut updates = 0;
    while r.adaptive.queue_next() {
        updates += 1;
        assert!(updates <= 64, "the probes of a lone handle win");
        r.update(|v| Some(v.unwrap_or_default().to_vec())).await.unwrap();
    }
    assert!(!client.register_feed_is_open(&r.key), "out of the queue: the feed is closed");
    other_session.close().await.unwrap();
    s.close().await.unwrap();
}

/// Tasks of one client that queued by the in-process rule (another update of the register
/// by the client was running) leave the queue when the client's mode turns to
/// compare-and-swap before the lock admits them, and compare-and-swap. (Before, they
/// stayed and drained one hand-off at a time while the mode's own updates waited for
/// them: on the TiKV test server's flash sale 90–130 ms of a 1.4 s sale.) An update that
/// queued by its handle's own policy (the lock was another client's) stays. No update is
/// lost or applied twice. The clock is paused and the holder holds until told.
#[tokio::test(start_paused = true)]
async fn tasks_queued_by_the_in_process_rule_leave_when_the_mode_turns() {
    // A leave is no failed acquisition in the metrics (nobody cancelled it).
    #[cfg(feature = "metrics")]
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    #[cfg(feature = "metrics")]
    let _local = metrics::set_default_local_recorder(&recorder);
    let Pair { s, r, other_session, holder, .. } = Pair::new().await;
    let (held, release, updates) = three_behind_a_holder(&r, &holder).await;
    r.crowd().turn_optimistic();
    assert!(
        queued_now(&r, 1).await,
        "the two queued by the in-process rule left the queue; {} still queued",
        r.crowd().queued()
    );
    release.notify_one();
    assert!(held.await.unwrap().token.is_some());
    let mut tokens = Vec::new();
    for u in updates {
        let updated = u.await.unwrap();
        assert!(updated.written);
        tokens.push(updated.token.is_some());
    }
    tokens.sort();
    assert_eq!(tokens, [false, false, true], "two compare-and-swapped, the one of the handle's policy stayed queued");
    assert_eq!(r.get().await.unwrap().as_deref(), Some(&b"4"[..]), "four updates, none lost or applied twice");
    other_session.close().await.unwrap();
    s.close().await.unwrap();
    #[cfg(feature = "metrics")]
    {
        let failures: Vec<_> = (recorder.snapshotter().snapshot().into_vec().into_iter())
            .filter(|(key, ..)| key.key().name() == "leasehold_acquire_failures_total")
            .map(|(key, _, _, value)| (key.key().labels().map(|l| l.value().to_owned()).collect::<Vec<_>>(), value))
            .collect();
        assert!(failures.is_empty(), "acquisitions counted as failed: {failures:?}");
    }
}

/// An update that left the queue at the turn is the new mode's: it no longer counts as a
/// queued update whose end the mode's hand-over waits for (`Crowd::left_queue`). (Counted
/// until it ended, the hand-over lasted until the slowest leaver's compare-and-swap
/// succeeded: on etcd, sixteen tasks of one process, 0.15–0.2 s in which the mode's
/// updates were not timed.) The clock is paused; another client's holder holds until told.
#[tokio::test(start_paused = true)]
async fn updates_that_left_the_queue_do_not_hold_up_the_hand_over() {
    let Pair { s, r, other_session, holder, .. } = Pair::new().await;
    let (held, release, updates) = three_behind_a_holder(&r, &holder).await;
    assert_eq!(r.crowd().running(), 3);
    // A queue was seen: the leavers look at the lock, find it taken, and wait.
    r.crowd().saw_queue(true);
    r.crowd().turn_optimistic();
    assert!(queued_now(&r, 1).await, "two left the queue");
    for _ in 0..1_000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(r.crowd().running(), 1, "the leavers, waiting to compare-and-swap, still count as queued updates");
    release.notify_one();
    assert!(held.await.unwrap().token.is_some());
    for u in updates {
        assert!(u.await.unwrap().written);
    }
    assert_eq!(r.crowd().running(), 0);
    assert_eq!(r.get().await.unwrap().as_deref(), Some(&b"4"[..]), "four updates, none lost or applied twice");
    other_session.close().await.unwrap();
    s.close().await.unwrap();
}

/// When the mode turns back to the queue, an update that began as a compare-and-swap and
/// is waiting for this client's queue to drain is woken by the turn and joins the queue:
/// that queue is the mode's now, and fed by every new update it would not drain. It counts
/// as a queued update of the mode again (`Crowd::rejoined_queue`), until it leaves at a
/// turn to compare-and-swap, as the in-process rule's updates do. (It used to wait
/// through up to `HANDOVER_TRIES` backoff pauses: on etcd, sixteen tasks of one process
/// after an exploration of compare-and-swap slept 0.2–0.5 s of tasks' time per epoch, for
/// four epochs.) The clock is paused: no time passes between the turn and the join.
/// Another client's holder holds until told.
#[tokio::test(start_paused = true)]
async fn an_update_waiting_for_its_own_queue_joins_it_when_the_mode_turns_back() {
    let Pair { s, r, other_session, holder, .. } = Pair::new().await;
    // Pauses of 10 ms each: the waiting update's tries are counted by the clock.
    let pause = Duration::from_millis(10);
    let r = r.with_backoff(Backoff::new(pause, pause).jitter(crate::backoff::Jitter::None));
    let (held, release) = hold(&holder).await;
    // One update of this client queued by its handle's policy (the lock is the other
    // client's): this client's own queue.
    let queued = tokio::spawn({
        let r = r.clone();
        async move { r.update(|v| Some(increment(v))).await.unwrap() }
    });
    assert!(queued_now(&r, 1).await, "the handle's update queues behind the other client's holder");
    r.crowd().turn_optimistic();
    // A queue was seen: the update looks at the lock before it writes.
    r.crowd().saw_queue(true);
    let waiting = tokio::spawn({
        let r = r.clone();
        async move { r.update(|v| Some(increment(v))).await.unwrap() }
    });
    // It compare-and-swaps, finds the lock taken, and waits for this client's queue.
    for _ in 0..1_000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(r.crowd().queued(), 1, "the compare-and-swap waits, not queued yet");
    assert_eq!(r.crowd().running(), 1, "the compare-and-swap is no queued update of the mode");
    r.crowd().turn_queue();
    assert!(queued_now(&r, 2).await, "not woken by the turn back: it waits out its pause of {pause:?}");
    assert_eq!(r.crowd().running(), 2, "joined, it counts as a queued update of the mode");
    // Should the mode turn to compare-and-swap again before the lock admits it, it leaves
    // again, and no longer counts.
    r.crowd().turn_optimistic();
    assert!(queued_now(&r, 1).await, "it left the queue at the turn");
    assert_eq!(r.crowd().running(), 1, "having left, it still counts as a queued update");
    release.notify_one();
    assert!(held.await.unwrap().token.is_some());
    assert!(queued.await.unwrap().token.is_some());
    let updated = waiting.await.unwrap();
    assert!(updated.written && updated.token.is_none(), "written by compare-and-swap: {updated:?}");
    assert_eq!(r.get().await.unwrap().as_deref(), Some(&b"3"[..]), "three updates, none lost or applied twice");
    other_session.close().await.unwrap();
    s.close().await.unwrap();
}

/// `holder` (a pessimistic handle of another client) takes the lock and holds it, in an
/// increment, until `release` is notified: its update's task, and `release`.
async fn hold(holder: &Register) -> (tokio::task::JoinHandle<Updated>, Arc<Notify>) {
    let (holding, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let held = {
        let (holder, holding, release) = (holder.clone(), holding.clone(), release.clone());
        tokio::spawn(async move {
            holder
                .update_async(|v, _| {
                    let (holding, release) = (holding.clone(), release.clone());
                    async move {
                        holding.notify_one();
                        release.notified().await;
                        Some(increment(v.as_deref()))
                    }
                })
                .await
                .unwrap()
        })
    };
    holding.notified().await;
    (held, release)
}

/// `holder` holds the lock ([`hold`]) and three increments of `r` queue behind it: the
/// first by its handle's own policy (the lock is another client's), the other two by the
/// in-process rule. The holder's task, its `release`, and the three updates' tasks.
async fn three_behind_a_holder(
    r: &Register,
    holder: &Register,
) -> (tokio::task::JoinHandle<Updated>, Arc<Notify>, Vec<tokio::task::JoinHandle<Updated>>) {
    let (held, release) = hold(holder).await;
    let updates: Vec<_> = (0..3)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.update(|v| Some(increment(v))).await.unwrap() })
        })
        .collect();
    assert!(queued_now(r, 3).await, "the three updates queue behind the other client's holder");
    (held, release, updates)
}

/// A counter's next value.
fn increment(v: Option<&[u8]>) -> Vec<u8> {
    let n: u64 = v.and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()).unwrap_or(0);
    (n + 1).to_string().into_bytes()
}

/// Whether `n` queued updates of `r`'s client run, within a bounded number of yields (no
/// time passes: the test's task never lets the runtime idle).
async fn queued_now(r: &Register, n: usize) -> bool {
    for _ in 0..10_000 {
        if r.crowd().queued() == n {
            return true;
        }
        tokio::task::yield_now().await;
    }
    false
}

/// Once the client's updates of the key turned to compare-and-swap, a place the handle
/// kept in the queue is given up, not used: its next update compare-and-swaps, and the
/// place's key goes. (Before, the next update used the place: one more hand-off that the
/// mode's updates waited for.) Paused clock; the handle keeps places (the default window).
#[tokio::test(start_paused = true)]
async fn a_kept_place_is_given_up_once_the_mode_turns() {
    let Pair { client, s, other_session, holder, .. } = Pair::new().await;
    let r = Register::new(&s, "reg").unwrap().with_strategy(Strategy::Adaptive);
    r.adaptive.force_queue();
    for _ in 0..2 {
        update_behind_a_holder(&r, &holder).await;
    }
    assert!(r.parking.is_parked(), "an update that waited and followed the last closely kept a place");
    r.crowd().turn_optimistic();
    let updated = r.update(|v| Some(increment(v))).await.unwrap();
    assert!(updated.written && updated.token.is_none(), "compare-and-swapped, not queued: {updated:?}");
    assert!(!r.parking.is_parked(), "the place was given up");
    let mut gone = false;
    for _ in 0..10_000 {
        if client.backend().range_prefix(&r.lock_prefix, 1).await.unwrap().0.is_empty() {
            gone = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(gone, "the place's key is deleted");
    other_session.close().await.unwrap();
    s.close().await.unwrap();
}
