//! With the `metrics` feature, acquisitions, conflicts, renewals and session losses are
//! reported through the `metrics` facade.

use leasehold::{Client, MemoryBackend, Mutex, Register, Strategy};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn acquisitions_renewals_and_losses_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let backend = MemoryBackend::new();
    let client = Client::new(backend.clone());
    let a = client.session_builder().ttl(Duration::from_secs(3)).open().await.unwrap();
    let b = client.session().await.unwrap();
    let held = Mutex::new(&a, "m").unwrap().lock().await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { Mutex::new(&b, "m").unwrap().lock().await.unwrap().unlock().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await; // one renewal of `a`
    held.unlock().await.unwrap();
    waiter.await.unwrap();
    let r = Register::new(&b, "r").unwrap().with_strategy(Strategy::Optimistic);
    r.update(|_| Some(b"1".to_vec())).await.unwrap();
    backend.set_unavailable(true);
    a.lost().await;

    let mut values = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        values.insert(format!("{}{{{}}}", key.key().name(), labels.join(",")), value);
    }
    let counter = |k: &str| match values.get(k) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{k}: {other:?} in {:?}", values.keys().collect::<Vec<_>>()),
    };
    assert_eq!(counter("leasehold_acquisitions_total{primitive=mutex,contended=false}"), 1);
    assert_eq!(counter("leasehold_acquisitions_total{primitive=mutex,contended=true}"), 1);
    assert!(counter("leasehold_renewals_total{outcome=ok}") >= 1);
    assert!(counter("leasehold_renewals_total{outcome=failed}") >= 1);
    assert_eq!(counter("leasehold_sessions_lost_total{}"), 1);
    match values.get("leasehold_acquire_seconds{primitive=mutex}") {
        Some(DebugValue::Histogram(h)) => assert_eq!(h.len(), 2),
        other => panic!("histogram missing: {other:?}"),
    }
}
