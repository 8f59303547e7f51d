//! Metrics through the [`metrics`](https://docs.rs/metrics) facade, behind the `metrics`
//! feature (without it every function here is empty and compiles away). Install any
//! recorder (Prometheus exporter, StatsD…) in the application to collect them.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `leasehold_acquire_seconds` | histogram | `primitive` | time to acquire (lock, permit, read/write lock, leadership) |
//! | `leasehold_acquisitions_total` | counter | `primitive`, `contended` | acquisitions; `contended="true"` if it waited for another holder |
//! | `leasehold_conflicts_total` | counter | `primitive` | failed compare-and-swaps (optimistic retries) |
//! | `leasehold_batch_updates` | histogram | `primitive` | updates per grouped batch (`Register::update_grouped`: one store write each) |
//! | `leasehold_renewals_total` | counter | `outcome` (`ok`/`failed`) | lease renewals |
//! | `leasehold_sessions_lost_total` | counter | — | sessions lost (lease expired or not renewed in time) |

use std::time::Instant;

/// Times one acquisition; report it with [`Acquire::done`].
pub(crate) struct Acquire {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    primitive: &'static str,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    started: Instant,
}

impl Acquire {
    pub(crate) fn start(primitive: &'static str) -> Self {
        Self { primitive, started: Instant::now() }
    }

    /// The acquisition succeeded; `contended` if it waited for another holder.
    pub(crate) fn done(self, contended: bool) {
        #[cfg(feature = "metrics")]
        {
            let p = self.primitive;
            metrics::histogram!("leasehold_acquire_seconds", "primitive" => p)
                .record(self.started.elapsed().as_secs_f64());
            let c = if contended { "true" } else { "false" };
            metrics::counter!("leasehold_acquisitions_total", "primitive" => p, "contended" => c).increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = contended;
    }
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

/// A renewal attempt's outcome.
pub(crate) fn renewal(ok: bool) {
    #[cfg(feature = "metrics")]
    metrics::counter!("leasehold_renewals_total", "outcome" => if ok { "ok" } else { "failed" }).increment(1);
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
