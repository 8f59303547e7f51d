//! Jittered exponential backoff that retries only transient errors.
//!
//! The three jitter kinds are those of the AWS Architecture Blog's "Exponential Backoff
//! and Jitter" (with `exp = min(cap, base · 2^attempt)`):
//!
//! | [`Jitter`] | delay |
//! |---|---|
//! | `None` | `exp` |
//! | `Full` | uniform in `[0, exp]` |
//! | `Equal` | `exp/2 + uniform in [0, exp/2]` |
//! | `Decorrelated` | `min(cap, uniform in [base, 3 · previous])` |
//!
//! [`Backoff::retry`] calls an operation until it succeeds, fails with an error for which
//! [`Error::is_transient`](crate::Error::is_transient) is false, or the policy runs out of
//! attempts or elapsed time.

#[cfg(test)]
use crate::error::Error;
use crate::error::Result;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

thread_local! {
    /// A seeded generator for this thread, if [`deterministic_jitter`] set one.
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Makes leasehold's random draws on this thread (the jitter of every [`Backoff`], its own
/// retries included) a function of `seed`, or, with `None`, of the OS's entropy again (the
/// default). For deterministic simulation: on a single-threaded runtime with paused time,
/// the same seed and the same inputs then give the same run. Nothing else changes.
///
/// ```
/// use leasehold::{deterministic_jitter, Backoff};
/// use std::time::Duration;
/// let draws = |seed| {
///     deterministic_jitter(Some(seed));
///     Backoff::new(Duration::from_millis(1), Duration::from_secs(1)).delays().take(5).collect::<Vec<_>>()
/// };
/// assert_eq!(draws(7), draws(7));
/// deterministic_jitter(None);
/// ```
pub fn deterministic_jitter(seed: Option<u64>) {
    SEEDED.with(|s| *s.borrow_mut() = seed.map(StdRng::seed_from_u64));
}

/// Runs `f` with this thread's generator: the seeded one, if any, else the OS-seeded one.
pub(crate) fn with_rng<T>(f: impl FnOnce(&mut dyn RngCore) -> T) -> T {
    SEEDED.with(|s| match s.borrow_mut().as_mut() {
        Some(rng) => f(rng),
        None => f(&mut rand::rng()),
    })
}

/// How a delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// Plain exponential delays (not recommended under contention).
    None,
    /// Uniform in `[0, exp]`: the least total work under contention.
    #[default]
    Full,
    /// Half fixed, half random: never retries immediately.
    Equal,
    /// Each delay drawn from `[base, 3 × previous]`, capped.
    Decorrelated,
}

/// A retry policy. Cheap to clone; each [`delays`](Backoff::delays) call starts afresh.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// The first delay's scale.
    pub base: Duration,
    /// No delay exceeds this.
    pub cap: Duration,
    /// Stop after this many attempts in all (the first try counts); `None` for no limit.
    pub max_attempts: Option<u32>,
    /// Stop retrying once this much time has passed since the first try; `None` for no limit.
    pub max_elapsed: Option<Duration>,
    /// How delays are randomised.
    pub jitter: Jitter,
}

impl Default for Backoff {
    /// 50 ms base, 1 s cap, full jitter, retrying for up to 10 s (no attempt limit).
    ///
    /// The budget is time, not a count of attempts: an outage lasts a time (a raft leader
    /// election in a default etcd takes one to two election timeouts of 1 s), while the
    /// total of a fixed number of fully jittered delays is random and can be far shorter.
    /// With this policy a transient failure that ends within 9 s is always ridden out: the
    /// policy gives up only when the next try would start after 10 s, and no delay exceeds
    /// the 1 s cap, so the last try starts after 9 s.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(1),
            max_attempts: None,
            max_elapsed: Some(Duration::from_secs(10)),
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// The pauses of an optimistic acquisition or update after it saw the holder go, before
    /// it tries again: full jitter from 0.5 ms, doubling up to 50 ms (every recipe's default).
    pub(crate) fn optimistic() -> Self {
        Backoff::new(Duration::from_micros(500), Duration::from_millis(50)).jitter(Jitter::Full)
    }

    /// A policy with the given base and cap, full jitter and no attempt or time limit.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap, max_attempts: None, max_elapsed: None, jitter: Jitter::Full }
    }

    /// Sets the jitter kind.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the attempt limit (the first try counts as one).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Sets the elapsed-time limit.
    pub fn max_elapsed(mut self, elapsed: Duration) -> Self {
        self.max_elapsed = Some(elapsed);
        self
    }

    /// The sequence of delays between attempts (ends when `max_attempts` is reached).
    pub fn delays(&self) -> Delays {
        Delays { policy: self.clone(), attempt: 0, previous: self.base }
    }

    /// Runs `op` until it succeeds or fails permanently, sleeping a jittered delay after
    /// each transient failure. Returns the last error when the policy gives up.
    ///
    /// # Cancel safety
    /// Dropping the future stops the retries; an attempt in progress is dropped with it, as
    /// that operation's own cancel safety says.
    pub async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let started = tokio::time::Instant::now();
        let mut delays = self.delays();
        loop {
            let err = match op().await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => e,
            };
            let Some(delay) = delays.next() else {
                return Err(err);
            };
            if let Some(limit) = self.max_elapsed {
                if started.elapsed().saturating_add(delay) > limit {
                    return Err(err);
                }
            }
            tracing::debug!(error = %err, ?delay, "retrying transient failure");
            tokio::time::sleep(delay).await;
        }
    }
}

/// Iterator over a policy's delays; see [`Backoff::delays`].
#[derive(Debug, Clone)]
pub struct Delays {
    policy: Backoff,
    attempt: u32,
    previous: Duration,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let p = &self.policy;
        self.attempt += 1;
        if let Some(max) = p.max_attempts {
            if self.attempt >= max {
                return None;
            }
        }
        let exp = p.base.saturating_mul(1u32 << (self.attempt - 1).min(30)).min(p.cap);
        let previous = self.previous;
        let d = with_rng(|rng| match p.jitter {
            Jitter::None => exp,
            Jitter::Full => uniform(rng, Duration::ZERO, exp),
            Jitter::Equal => exp / 2 + uniform(rng, Duration::ZERO, exp / 2),
            Jitter::Decorrelated => {
                let hi = previous.saturating_mul(3).max(p.base);
                uniform(rng, p.base, hi).min(p.cap)
            }
        });
        self.previous = d;
        Some(d)
    }
}

fn uniform(rng: &mut dyn RngCore, lo: Duration, hi: Duration) -> Duration {
    if hi <= lo {
        return lo;
    }
    // Delays beyond 584 years are drawn as 584 years.
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(nanos(lo)..=nanos(hi)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const BASE: Duration = Duration::from_millis(10);
    const CAP: Duration = Duration::from_millis(500);

    fn exp(attempt: u32) -> Duration {
        (BASE * (1 << attempt)).min(CAP)
    }

    #[test]
    fn delays_stay_within_each_jitter_kinds_bounds() {
        for _ in 0..200 {
            let p = Backoff::new(BASE, CAP).max_attempts(12);
            for (i, d) in p.clone().jitter(Jitter::None).delays().enumerate() {
                assert_eq!(d, exp(i as u32));
            }
            for (i, d) in p.clone().jitter(Jitter::Full).delays().enumerate() {
                assert!(d <= exp(i as u32), "full #{i}: {d:?}");
            }
            for (i, d) in p.clone().jitter(Jitter::Equal).delays().enumerate() {
                assert!(d >= exp(i as u32) / 2 && d <= exp(i as u32), "equal #{i}: {d:?}");
            }
            let mut prev = BASE;
            for d in p.clone().jitter(Jitter::Decorrelated).delays() {
                assert!(d >= BASE.min(CAP) && d <= CAP && d <= (prev * 3).max(BASE), "{d:?}");
                prev = d;
            }
            assert_eq!(p.delays().count(), 11, "12 attempts means 11 delays");
        }
    }

    #[test]
    fn full_jitter_actually_varies() {
        let p = Backoff::new(BASE, CAP);
        let firsts: std::collections::HashSet<_> = (0..50).map(|_| p.delays().nth(3)).collect();
        assert!(firsts.len() > 10, "50 draws gave only {} distinct delays", firsts.len());
    }

    #[test]
    fn classifies_errors() {
        assert!(Error::Unavailable("leader changed".into()).is_transient());
        for e in [
            Error::invalid("x", "bad"),
            Error::Auth("denied".into()),
            Error::SessionLost { lease: 1 },
            Error::Timeout { what: "mutex", after: BASE },
            Error::Store("corrupt".into()),
        ] {
            assert!(!e.is_transient(), "{e} must not be retried");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_only_and_gives_up() {
        let calls = AtomicU32::new(0);
        let p = Backoff::new(BASE, CAP).max_attempts(4);
        let r: Result<()> = p
            .retry(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::Unavailable("down".into()))
            })
            .await;
        assert!(matches!(r, Err(Error::Unavailable(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        calls.store(0, Ordering::SeqCst);
        let r: Result<()> = p
            .retry(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::Auth("no".into()))
            })
            .await;
        assert!(matches!(r, Err(Error::Auth(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "permanent errors are not retried");

        calls.store(0, Ordering::SeqCst);
        let v = p
            .retry(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Error::Unavailable("blip".into()))
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!((v, calls.load(Ordering::SeqCst)), (7, 3));
    }

    /// The default policy rides out any outage shorter than 9 s, whatever the jitter draws
    /// (a policy bounded by a count of fully jittered attempts gave up after ~1 s in some
    /// draws and lost a lock acquisition to an etcd leader election).
    #[tokio::test(start_paused = true)]
    async fn default_policy_rides_out_an_outage_by_time() {
        let outage = Duration::from_millis(8900);
        for _ in 0..100 {
            let started = tokio::time::Instant::now();
            let calls = AtomicU32::new(0);
            let r = Backoff::default()
                .retry(|| async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    if started.elapsed() < outage {
                        Err(Error::Unavailable("etcdserver: no leader".into()))
                    } else {
                        Ok(())
                    }
                })
                .await;
            assert!(r.is_ok(), "gave up after {:?} and {} calls", started.elapsed(), calls.load(Ordering::SeqCst));
            assert!(
                started.elapsed() < outage + Duration::from_secs(1),
                "noticed the end late: {:?}",
                started.elapsed()
            );
        }
        // And it does give up: a store that stays down fails the call within the budget.
        let started = tokio::time::Instant::now();
        let r: Result<()> = Backoff::default().retry(|| async { Err(Error::Unavailable("down".into())) }).await;
        assert!(r.is_err());
        assert!(started.elapsed() <= Duration::from_secs(10), "{:?}", started.elapsed());
        assert!(started.elapsed() > Duration::from_secs(9), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn max_elapsed_stops_retrying() {
        let calls = AtomicU32::new(0);
        let p = Backoff::new(Duration::from_secs(1), Duration::from_secs(1))
            .jitter(Jitter::None)
            .max_elapsed(Duration::from_millis(2500));
        let r: Result<()> = p
            .retry(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::Unavailable("down".into()))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3, "tries at 0 s, 1 s, 2 s; a 3 s try exceeds 2.5 s");
    }
}
