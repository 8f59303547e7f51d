//! Tests of the register's internals that its public API cannot reach.

use super::*;
use crate::Client;
use tokio::sync::Notify;

/// A handle that stays queued renews its round trips with its queued writes: the round
/// trips its optimistic writes timed while every contender competed for the runtime
/// (here 1 ms) do not make a queue whose hand-offs are many times dearer than its writes
/// look cheap. (Before, the least of those stale writes was the round trip: at 64 clients
/// over one embedded store some sweep rounds kept every handle queued, at 0.05 times
/// optimistic's updates per second.) The clock is paused: another client's holder takes
/// 2 ms per hand-off, and a write takes no time.
#[tokio::test(start_paused = true)]
async fn a_queued_handle_times_its_writes_as_round_trips() {
    let client = Client::memory();
    let s = client.session().await.unwrap();
    let r = Register::new(&s, "reg").unwrap().with_strategy(Strategy::Adaptive).with_requeue_window(Duration::ZERO);
    for _ in 0..crate::adaptive::TRIPS {
        r.adaptive.write_took(Duration::from_millis(1));
    }
    r.adaptive.force_queue();
    let other = Client::from_arc(client.backend().clone());
    let other_session = other.session().await.unwrap();
    let holder = Register::new(&other_session, "reg").unwrap().with_strategy(Strategy::Pessimistic);
    for round in 0..2 {
        assert!(
            r.adaptive.queue_next() && !r.adaptive.queue_is_dear(),
            "round {round}: queued (one measurement is no verdict)"
        );
        // The other client holds the lock for 2 ms while this handle's update queues behind it.
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
    assert!(
        r.adaptive.queue_is_dear() && !r.adaptive.queue_next(),
        "2 ms per hand-off against writes that take no time: the queue is dear and left"
    );
    other_session.close().await.unwrap();
    s.close().await.unwrap();
}
