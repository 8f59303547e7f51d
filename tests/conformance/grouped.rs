//! Group update (`Register::update_grouped`) checks, the same on every backend.

use leasehold::{Client, GroupToken, GroupUpdated, Grouping, Register, Strategy};
use std::collections::BTreeSet;
use std::sync::Arc;

use super::register::counting;

fn incr(v: Option<&[u8]>) -> Option<Vec<u8>> {
    let n: u64 = v.map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
    Some((n + 1).to_string().into_bytes())
}

fn number(v: Option<&[u8]>) -> u64 {
    v.map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap())
}

/// `tasks` tasks × `rounds` increments of one counter through one handle (shared by
/// clones), with `strategy`: the final value is exact; taken in token order, the
/// outcomes saw 0, 1, 2, … (tokens order the updates as they were applied, each task's
/// own tokens increase); the updates were grouped (fewer batches than updates, none above
/// `max_batch`); and every batch cost one store write (optimistic, alone) or at most two
/// (queued: the lock's key, then the write that also releases it).
pub async fn grouped_updates_are_exact_and_ordered(client: &Client, strategy: Strategy, tasks: usize, rounds: usize) {
    let name = format!("grp-{strategy:?}").to_lowercase();
    let counts = Arc::new(counting::Counts::default());
    let counting = Client::new(counting::Counting { inner: client.backend().clone(), counts: counts.clone() });
    let s = counting.session().await.unwrap();
    let max_batch = 8;
    let grouping = Grouping::default().max_batch(max_batch);
    let reg = Register::new(&s, &name).unwrap().with_strategy(strategy).with_grouping(grouping);
    let before = counts.writes();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let reg = reg.clone();
            tokio::spawn(async move {
                let mut mine: Vec<GroupUpdated> = Vec::new();
                for _ in 0..rounds {
                    mine.push(reg.update_grouped(incr).await.unwrap());
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<GroupUpdated> = Vec::new();
    for h in handles {
        let mine = h.await.unwrap();
        assert!(mine.windows(2).all(|w| w[0].token < w[1].token), "a task's own tokens increase: {mine:?}");
        all.extend(mine);
    }
    let writes = counts.writes() - before;
    let total = (tasks * rounds) as u64;
    assert_eq!(number(reg.get().await.unwrap().as_deref()), total, "no update lost or applied twice");
    all.sort_by_key(|o| o.token);
    let tokens: BTreeSet<GroupToken> = all.iter().map(|o| o.token).collect();
    assert_eq!(tokens.len(), all.len(), "tokens are distinct");
    for (i, o) in all.iter().enumerate() {
        assert!(o.written);
        assert_eq!(number(o.previous.as_deref()), i as u64, "in token order, update {i} saw {i}: {o:?}");
        assert!(o.batch >= 1 && o.batch <= max_batch, "a batch within its bound: {o:?}");
        assert_eq!(o.lock_token.is_some(), strategy == Strategy::Pessimistic, "{o:?}");
    }
    let batches = all.iter().map(|o| o.token.revision).collect::<BTreeSet<_>>().len() as u64;
    assert!(batches < total, "the updates were grouped: {batches} batches for {total} updates");
    match strategy {
        Strategy::Optimistic => assert_eq!(writes, batches, "one store write per batch"),
        _ => assert!(writes <= 2 * batches, "{writes} store writes for {batches} batches"),
    }
    s.close().await.unwrap();
}

/// Callers that drop their futures at random moments: an update is applied at most once,
/// every update whose caller was answered is applied, and a batch goes on for the callers
/// that stay. Each update appends its own id to the value, so the value says exactly
/// which were applied.
pub async fn grouped_cancellation_loses_nothing_and_applies_nothing_twice(client: &Client) {
    let s = client.session().await.unwrap();
    let reg = Register::new(&s, "grp-cancel").unwrap().with_grouping(Grouping::default());
    let tasks = 6;
    let rounds = 10;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let reg = reg.clone();
            tokio::spawn(async move {
                let mut answered = Vec::new();
                for r in 0..rounds {
                    let id = format!("{t}.{r};");
                    let add = {
                        let id = id.clone();
                        move |v: Option<&[u8]>| {
                            let mut v = v.unwrap_or_default().to_vec();
                            v.extend_from_slice(id.as_bytes());
                            Some(v)
                        }
                    };
                    let update = reg.update_grouped(add);
                    if (t + r) % 3 == 0 {
                        // Dropped after its first poll (joined) or before: maybe applied.
                        let _ = futures::FutureExt::now_or_never(update);
                        tokio::task::yield_now().await;
                    } else {
                        update.await.unwrap();
                        answered.push(id);
                    }
                }
                answered
            })
        })
        .collect();
    let mut answered = Vec::new();
    for h in handles {
        answered.extend(h.await.unwrap());
    }
    // One more update through the same handle: the combiner still serves.
    reg.update_grouped(|v| Some([v.unwrap_or_default(), b"end;"].concat())).await.unwrap();
    let value = String::from_utf8(reg.get().await.unwrap().unwrap()).unwrap();
    let applied: Vec<&str> = value.split_terminator(';').collect();
    let distinct: BTreeSet<&str> = applied.iter().copied().collect();
    assert_eq!(distinct.len(), applied.len(), "an update applied twice: {value}");
    for id in &answered {
        assert!(distinct.contains(id.trim_end_matches(';')), "answered update {id} lost: {value}");
    }
    assert_eq!(applied.last(), Some(&"end"));
    s.close().await.unwrap();
}

/// An update function that panics fails only its own caller (the panic resumes in the
/// caller's task, as in a plain update); the other updates of its batch are applied, and
/// the handle's combiner goes on serving. (Before, the panic killed the combiner task:
/// the batch's other callers and every later update of the handle waited for good.)
pub async fn grouped_panicking_update_fails_only_its_caller(client: &Client) {
    let s = client.session().await.unwrap();
    let reg = Register::new(&s, "grp-panic").unwrap().with_grouping(Grouping::default());
    let run = async {
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let reg = reg.clone();
                tokio::spawn(async move {
                    let f = move |v: Option<&[u8]>| {
                        assert!(i != 3, "update {i} panics (on purpose)");
                        incr(v)
                    };
                    reg.update_grouped(f).await
                })
            })
            .collect();
        let (mut panicked, mut done) = (0, 0);
        for t in tasks {
            match t.await {
                Err(e) if e.is_panic() => panicked += 1,
                Ok(updated) => {
                    assert!(updated.unwrap().written);
                    done += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((panicked, done), (1, 5), "only the panicking update's caller failed");
        reg.update_grouped(incr).await.unwrap();
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), run).await.expect("the combiner still serves");
    assert_eq!(number(reg.get().await.unwrap().as_deref()), 6, "the five others and the later update applied");
    s.close().await.unwrap();
}

/// Batch sizes are bounds, not reservations: `max_batch(usize::MAX)` ("no limit") groups as
/// asked. (The combiner reserved room for `max_batch` outcomes up front: `usize::MAX` made
/// it panic, "capacity overflow", and every grouped update of the handle failed; `1 << 40`
/// would have aborted the process on the failed allocation. A review found it, 2026-12-05.)
pub async fn grouped_unbounded_batches(client: &Client) {
    let s = client.session().await.unwrap();
    let reg = Register::new(&s, "grp-unbounded").unwrap().with_grouping(Grouping::default().max_batch(usize::MAX));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let reg = reg.clone();
            tokio::spawn(async move { reg.update_grouped(incr).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap().written);
    }
    assert_eq!(number(reg.get().await.unwrap().as_deref()), 8);
    s.close().await.unwrap();
}
