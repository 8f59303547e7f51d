//! Register conformance checks.

use leasehold::{Client, Register, Strategy};

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
/// switches to the queue (some updates are made under the lock).
pub async fn adaptive_follows_contention(client: &Client, contenders: usize, rounds: usize) {
    let s = client.session().await.unwrap();
    let alone = Register::new(&s, "reg-alone").unwrap().with_strategy(Strategy::Adaptive);
    for _ in 0..rounds {
        let u = alone.update(incr).await.unwrap();
        assert_eq!((u.conflicts, u.token), (0, None), "alone: optimistic, no conflict");
    }
    let mut handles = Vec::new();
    for _ in 0..contenders {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let s = client.session().await.unwrap();
            let r = Register::new(&s, "reg-busy").unwrap().with_strategy(Strategy::Adaptive);
            let mut queued = 0;
            for _ in 0..rounds {
                queued += usize::from(r.update(incr).await.unwrap().token.is_some());
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

/// An update function that declines writes nothing.
pub async fn declined_update_writes_nothing(client: &Client) {
    let s = client.session().await.unwrap();
    let r = Register::new(&s, "reg-decline").unwrap().with_strategy(Strategy::Pessimistic);
    let u = r.update(|_| None).await.unwrap();
    assert!(!u.written && u.previous.is_none());
    assert!(r.get().await.unwrap().is_none());
    assert!(client.backend().range_prefix(&client.prefix_of("reg-decline").unwrap(), 0).await.unwrap().0.is_empty());
}
