//! Metrics through the [`metrics`](https://docs.rs/metrics) facade, behind the `metrics`
//! feature (without it every function here is empty and compiles away). Install any
//! recorder (Prometheus exporter, StatsD…) in the application to collect them, and call
//! `leasehold::describe_metrics` once after installing it to give each
//! metric its unit and description.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `leasehold_acquire_seconds` | histogram | `primitive` | time to acquire (lock, permit, read/write lock, leadership), successful acquisitions only |
//! | `leasehold_acquisitions_total` | counter | `primitive`, `contended` | acquisitions; `contended="true"` if it waited for another holder |
//! | `leasehold_acquire_failures_total` | counter | `primitive`, `reason` | acquisitions that ended without holding: `reason` is `timeout` (its timeout ran out), `session_lost` (the session was lost or closed, or its key vanished), `store` (the store unavailable or failing), `cancelled` (the acquiring future was dropped), `invalid` (an argument or stored setting that cannot be used) |
//! | `leasehold_try_busy_total` | counter | `primitive` | tries (`try_lock`, `try_acquire`…) that found the name taken: not failures |
//! | `leasehold_waiting` | gauge | `primitive` | acquisitions in progress (from the call until it holds or gives up) |
//! | `leasehold_held` | gauge | `primitive` | acquisitions held (from admission until released, or until the guard is dropped: its release then runs in the background) |
//! | `leasehold_hold_seconds` | histogram | `primitive` | how long each acquisition was held, from admission to release (or drop) |
//! | `leasehold_conflicts_total` | counter | `primitive` | failed compare-and-swaps (optimistic retries) |
//! | `leasehold_batch_updates` | histogram | `primitive` | updates per grouped batch (`Register::update_grouped`: one store write each) |
//! | `leasehold_renewals_total` | counter | `outcome` (`ok`/`failed`) | lease renewals |
//! | `leasehold_renewal_seconds` | histogram | — | round trip of each successful lease renewal (keep-alive) |
//! | `leasehold_sessions_lost_total` | counter | — | sessions lost (lease expired or not renewed in time) |
//! | `leasehold_orphan_keys_deleted_total` | counter | — | keys under a session's lease that nothing owned, deleted by its audit |
//! | `leasehold_watch_resyncs_total` | counter | `kind` (`view`/`deletes`) | long-lived watches (queue views, delete feeds) that broke and are read again |
//!
//! `primitive` is `mutex` (a register's lock counts as a mutex, and a
//! [`MultiLock`](crate::MultiLock) as one mutex per name), `semaphore`, `rwlock` or
//! `election`. A relock or reacquire is a new acquisition: the old one's hold ends.
//!
//! Every started acquisition ends exactly once as an acquisition, a failure or a busy try;
//! both gauges are moved by RAII guards (see [`acquire`]), so they balance whatever way an
//! acquisition or a hold ends.

mod acquire;

pub(crate) use acquire::{Acquire, Held};

/// Gives every leasehold metric its unit and description through the `metrics` facade's
/// `describe_*` macros. Call it once after installing the recorder (exporters such as the
/// Prometheus one print the descriptions as `# HELP` lines); metrics work without it.
///
/// The metrics, their labels and meaning are listed in the README's *Metrics* section:
/// acquisition times, counts, failures by reason and busy tries; the `leasehold_held` and
/// `leasehold_waiting` gauges and hold times; conflicts, grouped batches; renewals and
/// their round trips, lost sessions, orphan keys deleted and watch resyncs.
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        "leasehold_acquire_seconds",
        Unit::Seconds,
        "Time to acquire a lock, permit, read/write lock or leadership (successful acquisitions)"
    );
    describe_counter!(
        "leasehold_acquisitions_total",
        Unit::Count,
        "Acquisitions; contended=\"true\" if it waited for another holder"
    );
    describe_counter!(
        "leasehold_acquire_failures_total",
        Unit::Count,
        "Acquisitions that ended without holding, by reason (timeout, session_lost, store, cancelled, invalid)"
    );
    describe_counter!("leasehold_try_busy_total", Unit::Count, "Tries that found the name taken");
    describe_gauge!("leasehold_waiting", Unit::Count, "Acquisitions in progress");
    describe_gauge!("leasehold_held", Unit::Count, "Acquisitions held (admitted and not yet released)");
    describe_histogram!("leasehold_hold_seconds", Unit::Seconds, "How long each acquisition was held");
    describe_counter!("leasehold_conflicts_total", Unit::Count, "Failed compare-and-swaps (optimistic retries)");
    describe_histogram!("leasehold_batch_updates", Unit::Count, "Updates per grouped register batch");
    describe_counter!("leasehold_renewals_total", Unit::Count, "Lease renewals, by outcome (ok, failed)");
    describe_histogram!("leasehold_renewal_seconds", Unit::Seconds, "Round trip of each successful lease renewal");
    describe_counter!("leasehold_sessions_lost_total", Unit::Count, "Sessions lost");
    describe_counter!(
        "leasehold_orphan_keys_deleted_total",
        Unit::Count,
        "Keys under a session's lease that nothing owned, deleted by its audit"
    );
    describe_counter!(
        "leasehold_watch_resyncs_total",
        Unit::Count,
        "Long-lived watches that broke and were read again, by kind (view, deletes)"
    );
}

/// `n` failed compare-and-swaps of `primitive`.
pub(crate) fn conflicts(primitive: &'static str, n: u32) {
    #[cfg(feature = "metrics")]
    if n > 0 {
        metrics::counter!("leasehold_conflicts_total", "primitive" => primitive).increment(u64::from(n));
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (primitive, n);
}

/// A grouped batch of `n` updates of `primitive` ran.
pub(crate) fn batch(primitive: &'static str, n: usize) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("leasehold_batch_updates", "primitive" => primitive).record(n as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = (primitive, n);
}

/// A renewal attempt's outcome: `Some(round trip)` if it succeeded.
pub(crate) fn renewal(ok: Option<std::time::Duration>) {
    #[cfg(feature = "metrics")]
    match ok {
        Some(took) => {
            metrics::counter!("leasehold_renewals_total", "outcome" => "ok").increment(1);
            metrics::histogram!("leasehold_renewal_seconds").record(took.as_secs_f64());
        }
        None => metrics::counter!("leasehold_renewals_total", "outcome" => "failed").increment(1),
    }
    #[cfg(not(feature = "metrics"))]
    let _ = ok;
}

/// A session's audit deleted a key under its lease that nothing owned (a request that
/// landed after its caller gave up).
pub(crate) fn orphan_deleted() {
    #[cfg(feature = "metrics")]
    metrics::counter!("leasehold_orphan_keys_deleted_total").increment(1);
}

/// A session was lost.
pub(crate) fn session_lost() {
    #[cfg(feature = "metrics")]
    metrics::counter!("leasehold_sessions_lost_total").increment(1);
}

/// A long-lived watch of `kind` (`view`, `deletes`) broke and is read again.
pub(crate) fn watch_resync(kind: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("leasehold_watch_resyncs_total", "kind" => kind).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = kind;
}
