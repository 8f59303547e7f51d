//! The metrics of one acquisition and of its hold, as RAII guards: [`Acquire`] from the
//! call until it settles (held, failed, busy, or dropped: cancelled), keeping the
//! `leasehold_waiting` gauge up meanwhile; [`Held`], which a [`Holding`] keeps from
//! admission until it is released or dropped, keeping `leasehold_held` up and recording
//! `leasehold_hold_seconds` at the end. Both decrement in `Drop`, so every path balances.
//!
//! The acquiring span gets the fields `token` and `wait_ms` once admitted (with or without
//! the feature: they are tracing, not metrics).

use crate::error::{Error, Result};
use crate::guard::Holding;
use crate::queue::Wait;
// tokio's clock: std's outside tests, and the paused clock in tests that pause time.
use tokio::time::Instant;

/// One acquisition in progress; settle it with [`admitted`](Self::admitted),
/// [`settle`](Self::settle), [`failed`](Self::failed) or [`check`](Self::check). Dropped
/// unsettled, it counts as cancelled.
pub(crate) struct Acquire {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    primitive: &'static str,
    started: Instant,
    /// The `leasehold_waiting` gauge, incremented at the start and decremented on drop.
    #[cfg(feature = "metrics")]
    waiting: metrics::Gauge,
    #[cfg(feature = "metrics")]
    settled: bool,
}

impl Acquire {
    pub(crate) fn start(primitive: &'static str) -> Self {
        #[cfg(feature = "metrics")]
        let waiting = metrics::gauge!("leasehold_waiting", "primitive" => primitive);
        #[cfg(feature = "metrics")]
        waiting.increment(1.0);
        Self {
            primitive,
            started: Instant::now(),
            #[cfg(feature = "metrics")]
            waiting,
            #[cfg(feature = "metrics")]
            settled: false,
        }
    }

    /// Admitted: `hold` is held from now (its `leasehold_held` and hold time start), the
    /// acquisition is counted and timed, and `span` records the token and the wait.
    pub(crate) fn admitted(#[allow(unused_mut)] mut self, hold: &mut Holding, span: &tracing::Span) {
        let waited = self.started.elapsed();
        span.record("token", hold.token());
        span.record("wait_ms", waited.as_millis() as u64);
        #[cfg(feature = "metrics")]
        {
            self.settled = true;
            let p = self.primitive;
            metrics::histogram!("leasehold_acquire_seconds", "primitive" => p).record(waited.as_secs_f64());
            let c = if hold.was_contended() { "true" } else { "false" };
            metrics::counter!("leasehold_acquisitions_total", "primitive" => p, "contended" => c).increment(1);
            hold.holds_as(Held::start(p));
        }
    }

    /// Settles with what the acquisition came to: held ([`admitted`](Self::admitted), the
    /// holding reached through `hold`), not held (a try that found the name taken when
    /// `wait` is a try, else a timeout), or an error.
    pub(crate) fn settle<G>(
        self,
        wait: Wait,
        span: &tracing::Span,
        result: Result<Option<G>>,
        hold: impl FnOnce(&mut G) -> &mut Holding,
    ) -> Result<Option<G>> {
        match result {
            Ok(Some(mut g)) => {
                self.admitted(hold(&mut g), span);
                Ok(Some(g))
            }
            Ok(None) => {
                self.not_held(wait == Wait::No);
                Ok(None)
            }
            Err(e) => {
                self.failed(&e);
                Err(e)
            }
        }
    }

    /// Passes `result` on, settling as failed if it is an error (a later settle of an
    /// acquisition that already failed counts nothing more).
    pub(crate) fn check<T>(&mut self, result: Result<T>) -> Result<T> {
        #[cfg(feature = "metrics")]
        if let Err(e) = &result {
            self.fail(e);
        }
        result
    }

    /// Failed with `error`.
    pub(crate) fn failed(#[allow(unused_mut)] mut self, error: &Error) {
        #[cfg(feature = "metrics")]
        self.fail(error);
        #[cfg(not(feature = "metrics"))]
        let _ = error;
    }

    /// Ends without holding and without counting a failure: an inner attempt the caller
    /// follows with another acquisition (timed on its own).
    pub(crate) fn abandon(#[allow(unused_mut)] mut self) {
        #[cfg(feature = "metrics")]
        {
            self.settled = true;
        }
    }

    /// Not held: a try that found the name taken, or (`busy` false) a timeout.
    fn not_held(#[allow(unused_mut)] mut self, busy: bool) {
        #[cfg(feature = "metrics")]
        if !std::mem::replace(&mut self.settled, true) {
            if busy {
                metrics::counter!("leasehold_try_busy_total", "primitive" => self.primitive).increment(1);
            } else {
                self.count_failure("timeout");
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = busy;
    }

    #[cfg(feature = "metrics")]
    fn fail(&mut self, error: &Error) {
        if !std::mem::replace(&mut self.settled, true) {
            self.count_failure(reason(error));
        }
    }

    #[cfg(feature = "metrics")]
    fn count_failure(&self, reason: &'static str) {
        let p = self.primitive;
        metrics::counter!("leasehold_acquire_failures_total", "primitive" => p, "reason" => reason).increment(1);
    }
}

#[cfg(feature = "metrics")]
impl Drop for Acquire {
    fn drop(&mut self) {
        self.waiting.decrement(1.0);
        if !self.settled {
            self.count_failure("cancelled");
        }
    }
}

/// The `reason` label of a failed acquisition.
#[cfg(feature = "metrics")]
fn reason(error: &Error) -> &'static str {
    match error {
        Error::Timeout { .. } => "timeout",
        // The key an admission held vanished: its lease went.
        Error::SessionLost { .. }
        | Error::SessionClosed { .. }
        | Error::LeaseNotFound { .. }
        | Error::NotHeld { .. } => "session_lost",
        Error::Unavailable(_) | Error::Store(_) | Error::Connect { .. } | Error::Auth(_) | Error::Tls(_) => "store",
        Error::InvalidName { .. }
        | Error::TtlOutOfRange { .. }
        | Error::InvalidArgument { .. }
        | Error::PermitMismatch { .. }
        | Error::StaleToken { .. } => "invalid",
    }
}

/// What a [`Holding`] keeps while held: with the feature, the `leasehold_held` gauge
/// (decremented at the end) and the admission instant, boxed (one pointer in every
/// holding); without it, nothing.
#[derive(Debug, Default)]
pub(crate) struct Held {
    #[cfg(feature = "metrics")]
    inner: Option<Box<HeldSince>>,
}

#[cfg(feature = "metrics")]
struct HeldSince {
    primitive: &'static str,
    since: Instant,
    gauge: metrics::Gauge,
}

#[cfg(feature = "metrics")]
impl std::fmt::Debug for HeldSince {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldSince").field("primitive", &self.primitive).field("since", &self.since).finish()
    }
}

impl Held {
    /// Nothing held (yet): a holding not admitted through an [`Acquire`], or released.
    pub(crate) fn none() -> Self {
        Self::default()
    }

    #[cfg(feature = "metrics")]
    fn start(primitive: &'static str) -> Self {
        let gauge = metrics::gauge!("leasehold_held", "primitive" => primitive);
        gauge.increment(1.0);
        Self { inner: Some(Box::new(HeldSince { primitive, since: Instant::now(), gauge })) }
    }

    /// The hold ends now (released); later calls and the drop do nothing.
    pub(crate) fn end(&mut self) {
        #[cfg(feature = "metrics")]
        if let Some(held) = self.inner.take() {
            let HeldSince { primitive, since, gauge } = *held;
            gauge.decrement(1.0);
            metrics::histogram!("leasehold_hold_seconds", "primitive" => primitive)
                .record(since.elapsed().as_secs_f64());
        }
    }
}

#[cfg(feature = "metrics")]
impl Drop for Held {
    fn drop(&mut self) {
        self.end();
    }
}
