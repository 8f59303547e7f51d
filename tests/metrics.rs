//! With the `metrics` feature, acquisitions, conflicts, renewals and session losses are
//! reported through the `metrics` facade.

use leasehold::{Client, Election, MemoryBackend, Mutex, Register, RwLock, Semaphore, Strategy};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn acquisitions_renewals_and_losses_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // This thread's recorder (each test has its own; the runtime is this thread).
    let _local = metrics::set_default_local_recorder(&recorder);

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

/// What a [`DebuggingRecorder`] recorded, accumulated over snapshots (a snapshot resets
/// counters, gauges and histograms: gauges move by deltas, so their sum is the value).
struct Recorded {
    snapshotter: metrics_util::debugging::Snapshotter,
    counters: std::collections::HashMap<String, u64>,
    gauges: std::collections::HashMap<String, f64>,
    histograms: std::collections::HashMap<String, Vec<f64>>,
    units: std::collections::HashMap<String, Option<metrics::Unit>>,
}

impl Recorded {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Self {
            snapshotter: recorder.snapshotter(),
            counters: Default::default(),
            gauges: Default::default(),
            histograms: Default::default(),
            units: Default::default(),
        }
    }

    /// Takes what was recorded since the last call.
    fn take(&mut self) -> &mut Self {
        for (key, unit, desc, value) in self.snapshotter.snapshot().into_vec() {
            let labels: Vec<String> = key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            let name = format!("{}{{{}}}", key.key().name(), labels.join(","));
            if desc.is_some() {
                self.units.insert(key.key().name().to_owned(), unit);
            }
            match value {
                DebugValue::Counter(n) => *self.counters.entry(name).or_default() += n,
                DebugValue::Gauge(v) => *self.gauges.entry(name).or_default() += v.0,
                DebugValue::Histogram(h) => self.histograms.entry(name).or_default().extend(h.iter().map(|v| v.0)),
            }
        }
        self
    }

    fn counter(&self, k: &str) -> u64 {
        self.counters.get(k).copied().unwrap_or(0)
    }

    fn gauge(&self, k: &str) -> f64 {
        self.gauges.get(k).copied().unwrap_or(0.0)
    }

    fn histogram(&self, k: &str) -> usize {
        self.histograms.get(k).map_or(0, Vec::len)
    }

    /// Every gauge recorded is back at zero.
    fn gauges_at_zero(&self) {
        assert!(!self.gauges.is_empty(), "no gauge recorded");
        for (k, v) in &self.gauges {
            assert_eq!(*v, 0.0, "{k} is {v}, not 0: {:?}", self.gauges);
        }
    }
}

/// Polls `fut` until it waits, runs `meanwhile`, then drops `fut`: a cancelled acquisition.
async fn cancel_while_waiting<F: std::future::Future>(fut: F, meanwhile: impl FnOnce()) {
    let mut fut = Box::pin(fut);
    for _ in 0..10 {
        assert!(futures::poll!(fut.as_mut()).is_pending(), "expected to wait");
        tokio::task::yield_now().await;
    }
    meanwhile();
    drop(fut);
}

#[tokio::test(start_paused = true)]
async fn failures_by_reason_and_gauges_balance() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut rec = Recorded::new(&recorder);
    let backend = MemoryBackend::new();
    let client = Client::new(backend.clone());
    let a = client.session().await.unwrap();
    let b = client.session().await.unwrap();
    let (ma, mb) = (Mutex::new(&a, "m").unwrap(), Mutex::new(&b, "m").unwrap());

    let held = ma.lock().await.unwrap();
    assert_eq!(rec.take().gauge("leasehold_held{primitive=mutex}"), 1.0);
    assert!(mb.try_lock().await.unwrap().is_none());
    assert_eq!(rec.take().counter("leasehold_try_busy_total{primitive=mutex}"), 1);
    let timed_out = mb.lock_timeout(Duration::from_millis(100)).await.unwrap_err();
    assert!(matches!(timed_out, leasehold::Error::Timeout { .. }), "{timed_out}");
    assert_eq!(rec.take().counter("leasehold_acquire_failures_total{primitive=mutex,reason=timeout}"), 1);

    // A waiter counts as waiting; dropped, as cancelled.
    cancel_while_waiting(mb.lock(), || assert_eq!(rec.take().gauge("leasehold_waiting{primitive=mutex}"), 1.0)).await;
    assert_eq!(rec.take().gauge("leasehold_waiting{primitive=mutex}"), 0.0);
    assert_eq!(rec.counter("leasehold_acquire_failures_total{primitive=mutex,reason=cancelled}"), 1);

    // Dropped without unlock: the hold ends at the drop (the release runs in the background).
    drop(held);
    let mut g = mb.lock().await.unwrap();
    assert_eq!(rec.take().gauge("leasehold_held{primitive=mutex}"), 1.0);
    mb.relock(&mut g).await.unwrap(); // one hold ends, the next begins
    assert_eq!(rec.take().gauge("leasehold_held{primitive=mutex}"), 1.0);
    g.unlock().await.unwrap();
    assert_eq!(rec.take().gauge("leasehold_held{primitive=mutex}"), 0.0);
    assert_eq!(rec.histogram("leasehold_hold_seconds{primitive=mutex}"), 3);

    // Other primitives, and the other reasons.
    let sem = Semaphore::new(&a, "s", 2).unwrap();
    let mut p = sem.acquire().await.unwrap();
    sem.reacquire(&mut p).await.unwrap();
    let err = sem.acquire_many(3).await.unwrap_err();
    assert!(matches!(err, leasehold::Error::InvalidArgument { .. }), "{err}");
    assert_eq!(rec.take().gauge("leasehold_held{primitive=semaphore}"), 1.0);
    drop(p);
    let rw = RwLock::new(&a, "rw").unwrap();
    let r = rw.read().await.unwrap();
    assert!(RwLock::new(&b, "rw").unwrap().try_write().await.unwrap().is_none());
    r.unlock().await.unwrap();
    rw.write().await.unwrap().unlock().await.unwrap();
    let e = Election::new(&a, "e").unwrap();
    let leader = e.campaign("a").await.unwrap();
    let campaign = Election::new(&b, "e").unwrap();
    cancel_while_waiting(campaign.campaign("b"), || ()).await;
    leader.resign().await.unwrap();
    let r = Register::new(&a, "r").unwrap();
    r.update(|_| Some(b"1".to_vec())).await.unwrap();
    rec.take();
    assert_eq!(rec.counter("leasehold_acquire_failures_total{primitive=semaphore,reason=invalid}"), 1);
    assert_eq!(rec.counter("leasehold_try_busy_total{primitive=rwlock}"), 1);
    assert_eq!(rec.counter("leasehold_acquire_failures_total{primitive=election,reason=cancelled}"), 1);
    assert_eq!(rec.histogram("leasehold_hold_seconds{primitive=semaphore}"), 2);
    assert_eq!(rec.histogram("leasehold_hold_seconds{primitive=rwlock}"), 2);
    assert_eq!(rec.histogram("leasehold_hold_seconds{primitive=election}"), 1);

    // The store away: a lock waits, then fails when its session is lost; a try fails at once
    // (or after its retries) with the store's error.
    let held = ma.lock().await.unwrap();
    let waiting = tokio::spawn({
        let mb = mb.clone();
        async move { mb.lock().await.map(drop) }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(rec.take().gauge("leasehold_waiting{primitive=mutex}"), 1.0);
    backend.set_unavailable(true);
    let err = Mutex::new(&a, "other").unwrap().try_lock().await.unwrap_err();
    assert!(matches!(err, leasehold::Error::Unavailable(_) | leasehold::Error::SessionLost { .. }), "{err}");
    b.lost().await;
    let err = waiting.await.unwrap().unwrap_err();
    assert!(matches!(err, leasehold::Error::SessionLost { .. }), "{err}");
    drop(held);
    rec.take();
    let store = rec.counter("leasehold_acquire_failures_total{primitive=mutex,reason=store}");
    let lost = rec.counter("leasehold_acquire_failures_total{primitive=mutex,reason=session_lost}");
    assert!(lost >= 1 && store + lost == 2, "store {store}, session_lost {lost}");
    rec.gauges_at_zero();
}

#[tokio::test(start_paused = true)]
async fn renewals_are_timed_and_broken_watches_counted() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut rec = Recorded::new(&recorder);
    let backend = MemoryBackend::new();
    let client = Client::new(backend.clone());
    let a = client.session_builder().ttl(Duration::from_secs(3)).open().await.unwrap();
    let b = client.session().await.unwrap();
    let held = Mutex::new(&a, "m").unwrap().lock().await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { Mutex::new(&b, "m").unwrap().lock().await.unwrap().unlock().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await; // b waits on the queue's watches
    assert_eq!(rec.take().counters.keys().filter(|k| k.starts_with("leasehold_watch_resyncs_total")).count(), 0);
    backend.set_unavailable(true); // breaks every open watch
    backend.set_unavailable(false);
    tokio::time::sleep(Duration::from_millis(1500)).await; // resynchronised, and one renewal of `a`
    held.unlock().await.unwrap();
    waiter.await.unwrap();
    rec.take();
    let resyncs: u64 =
        rec.counters.iter().filter(|(k, _)| k.starts_with("leasehold_watch_resyncs_total{kind=")).map(|(_, n)| n).sum();
    assert!(resyncs >= 1, "{:?}", rec.counters);
    let ok = rec.counter("leasehold_renewals_total{outcome=ok}");
    assert!(ok >= 1);
    assert_eq!(rec.histogram("leasehold_renewal_seconds{}") as u64, ok);
}

#[tokio::test(start_paused = true)]
async fn every_metric_is_described_with_its_unit() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut rec = Recorded::new(&recorder);
    leasehold::describe_metrics();
    let backend = MemoryBackend::new();
    let client = Client::new(backend.clone());
    let a = client.session_builder().ttl(Duration::from_secs(3)).open().await.unwrap();
    let m = Mutex::new(&a, "m").unwrap().with_strategy(Strategy::Optimistic);
    let g = m.lock().await.unwrap();
    assert!(Mutex::new(&client.session().await.unwrap(), "m").unwrap().try_lock().await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    g.unlock().await.unwrap();
    let r = Register::new(&a, "r").unwrap();
    r.update(|_| Some(b"1".to_vec())).await.unwrap();
    r.update_grouped(|_| Some(b"2".to_vec())).await.unwrap();
    backend.set_unavailable(true);
    a.lost().await;
    rec.take();
    let names: std::collections::BTreeSet<String> = rec
        .counters
        .keys()
        .chain(rec.gauges.keys())
        .chain(rec.histograms.keys())
        .map(|k| k[..k.find('{').unwrap()].to_owned())
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    for name in &names {
        let unit = rec.units.get(name).unwrap_or_else(|| panic!("{name} not described"));
        let expected = if name.ends_with("_seconds") { metrics::Unit::Seconds } else { metrics::Unit::Count };
        assert_eq!(*unit, Some(expected), "{name}");
    }
}

/// Span fields recorded after creation (`Span::record`), by span name.
#[derive(Clone, Default)]
struct SpanRecords(std::sync::Arc<std::sync::Mutex<Spans>>);

/// The names of the spans made (the id is the index + 1), and the `u64` fields recorded:
/// span name, field, value.
type Spans = (Vec<String>, Vec<(String, String, u64)>);

impl tracing::Subscriber for SpanRecords {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut st = self.0.lock().unwrap();
        st.0.push(span.metadata().name().to_owned());
        tracing::span::Id::from_u64(st.0.len() as u64)
    }
    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        struct Fields(Vec<(String, u64)>);
        impl tracing::field::Visit for Fields {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                self.0.push((field.name().to_owned(), value));
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut fields = Fields(Vec::new());
        values.record(&mut fields);
        let mut st = self.0.lock().unwrap();
        let name = st.0[span.into_u64() as usize - 1].clone();
        st.1.extend(fields.0.into_iter().map(|(f, v)| (name.clone(), f, v)));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(start_paused = true)]
async fn acquire_spans_record_the_token_and_the_wait() {
    let spans = SpanRecords::default();
    let _default = tracing::subscriber::set_default(spans.clone());
    // While a single dispatcher is registered, tracing-core computes the interest of a
    // callsite first hit on another thread (another test's) from that thread's default
    // subscriber alone ("never"), and caches it. With two alive it asks them all.
    let _second = tracing::Dispatch::new(SpanRecords::default());
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let client = Client::memory();
    let (a, b) = (client.session().await.unwrap(), client.session().await.unwrap());
    let held = Mutex::new(&a, "m").unwrap().lock().await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { Mutex::new(&b, "m").unwrap().lock().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    held.unlock().await.unwrap();
    let got = waiter.await.unwrap();
    let e = Election::new(&a, "e").unwrap().campaign("a").await.unwrap();
    let recorded = spans.0.lock().unwrap().1.clone();
    let field = |span: &str, f: &str| -> Vec<u64> {
        recorded.iter().filter(|(s, n, _)| s == span && n == f).map(|(_, _, v)| *v).collect()
    };
    let tokens = field("mutex.acquire", "token");
    assert_eq!(tokens.len(), 2, "{recorded:?}");
    assert_eq!(tokens[1], got.fencing_token());
    let waits = field("mutex.acquire", "wait_ms");
    assert!(waits[0] < 250 && waits[1] >= 250, "{waits:?}");
    assert_eq!(field("election.campaign", "token"), [e.fencing_token()]);
}
