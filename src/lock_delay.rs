//! Lock-delay, in the style of Chubby and Consul, for a [`Mutex`](crate::Mutex) and an
//! [`Election`](crate::Election): after a holder's lease *expires* (rather
//! than the holder releasing cleanly), nobody gets the name for a configured delay, so that
//! writes the old holder sent just before it lost the lock, to resources that check no
//! token, have time to land (or die) before the next holder starts.
//!
//! # Design
//! One marker per name, in the namespace leasehold reserves for itself (no recipe name can
//! produce it, see `name.rs`): `<namespace>~leasehold/lock-delay/<name>`, with no lease.
//!
//! - An acquirer that has been **admitted** writes its token to the marker (a fenced write:
//!   applied only while its key still exists) **before** it returns the guard.
//! - A clean [`unlock`](crate::MutexGuard::unlock) (or [`resign`](crate::Leadership::resign))
//!   deletes its key **and** the marker in one fenced transaction.
//! - So an admitted acquirer that finds the marker holding another (older) token knows that
//!   holder got its guard and did not unlock: its lease expired (a crash, a pause, a
//!   partition), its session was closed, or its guard was dropped (perhaps by a panic in the
//!   middle of a write). It then waits `delay` **keeping its key** (its place: nobody else is
//!   admitted meanwhile), measured from the moment it was admitted, which is after the old
//!   key was gone, hence after the old holder's lease ended and after its local validity
//!   deadline. Then it takes the marker over and returns the guard.
//!
//! The delay is measured on the acquirer's monotonic clock from when *it* learned of the
//! expiry; no wall clocks are compared. One that arrives long after a crash therefore still
//! waits the delay once (conservative). A handle remembers the stale token it saw and when,
//! so repeated `try_lock`s or timeouts do not restart the delay.
//!
//! A session that re-attaches a lease ([`SessionBuilder::attach`](crate::SessionBuilder::attach))
//! and takes over its key finds the marker holding its own token: it is the same holder
//! going on, and waits nothing. That is right for the hand-over it is made for (the
//! earlier process detached, and sent nothing after), and wrong after a crash whose
//! unfenced writes may still be on their way: re-attach a crashed process's lease only
//! once they cannot land, or let it expire instead.

use crate::backend::Write;
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::guard::Holding;
use crate::queue::Wait;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The reserved area of the markers: `<namespace>~leasehold/lock-delay/<name>`.
pub(crate) const AREA: &str = "lock-delay";

/// A recipe's lock-delay setting and what its handle has seen.
#[derive(Debug, Clone)]
pub(crate) struct LockDelay {
    delay: Duration,
    marker: String,
    /// The stale token this handle (and its clones) first found in the marker, and when.
    seen: Arc<Mutex<Option<(u64, Instant)>>>,
}

/// What [`LockDelay::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// The guard may be returned: no delay was due, or it has passed. The marker now holds
    /// this acquisition's token.
    Hold,
    /// The caller's wait (`try`, or a deadline before the delay ends) ran out: release the
    /// key (plainly: the marker must stay) and report "not acquired".
    GiveUp,
}

impl LockDelay {
    pub(crate) fn new(delay: Duration, marker: String) -> Self {
        Self { delay, marker, seen: Arc::new(Mutex::new(None)) }
    }

    /// The delay.
    pub(crate) fn delay(&self) -> Duration {
        self.delay
    }

    /// Lock-delay for a recipe's fresh acquisition: `hold` and the marker key its clean
    /// release must clear, or `None` (the key released again) if the caller's wait ran out
    /// before the delay did.
    pub(crate) async fn hold(
        &self,
        what: &'static str,
        hold: Holding,
        wait: Wait,
    ) -> Result<Option<(Holding, String)>> {
        match self.admit(what, &hold, wait).await? {
            Admit::Hold => {
                // The marker's read and write may have been answered past the session's
                // deadline: then no guard (as for an acquisition's create); the key is
                // released in the background.
                hold.session().check()?;
                Ok(Some((hold, self.marker.clone())))
            }
            Admit::GiveUp => {
                hold.release(what).await?;
                Ok(None)
            }
        }
    }

    /// Runs once `hold` has been admitted: waits out the delay if the previous holder did
    /// not release cleanly (see the [module docs](self)), then records `hold` as the holder.
    /// Fails with the session's ended error if it ends meanwhile, and with
    /// [`Error::NotHeld`] if the key is revoked while the session lives.
    async fn admit(&self, what: &'static str, hold: &Holding, wait: Wait) -> Result<Admit> {
        let admitted = Instant::now();
        let backend = hold.session().client().backend().clone();
        let token = hold.token();
        let marker = Backoff::default().retry(|| backend.get(&self.marker)).await?;
        let previous = marker.map(|kv| parse_token(&kv.value)).filter(|&t| t != Some(token));
        if let Some(previous) = previous {
            // An unreadable marker counts as an unclean release too (it must not unlock early).
            let stale = previous.unwrap_or(0);
            let since = {
                let mut seen = self.seen.lock();
                match *seen {
                    Some((t, at)) if t == stale => at,
                    _ => {
                        *seen = Some((stale, admitted));
                        admitted
                    }
                }
            };
            // A delay past what the clock can count never ends.
            let until = since.checked_add(self.delay);
            if until.is_none_or(|until| until > Instant::now()) {
                let gives_up = match (wait, until) {
                    (Wait::No, _) => true,
                    (Wait::Until(deadline), until) => until.is_none_or(|until| deadline < until),
                    (Wait::Forever, _) => false,
                };
                tracing::debug!(
                    marker = self.marker,
                    previous = stale,
                    remaining = ?until.map(|until| until.saturating_duration_since(Instant::now())),
                    gives_up,
                    "lock-delay: the previous holder did not release cleanly"
                );
                if gives_up {
                    return Ok(Admit::GiveUp);
                }
                let lost = hold.lost();
                let delay = async {
                    match until {
                        Some(until) => tokio::time::sleep_until(until).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    // Its key went: with the lease, or revoked while the session lives.
                    _ = lost => return Err(hold.session().gone_error("lock-delay", hold.key()).await),
                    _ = delay => {}
                }
            }
        }
        let record = || Write::Put { key: self.marker.clone(), value: token.to_string().into_bytes(), lease: None };
        match Backoff::default().retry(|| hold.fenced(what, vec![record()])).await {
            Ok(()) => Ok(Admit::Hold),
            // Our key is gone: the lease expired while we waited, or it was revoked.
            Err(Error::NotHeld { .. }) => Err(hold.session().gone_error("lock-delay", hold.key()).await),
            Err(e) => Err(e),
        }
    }
}

/// The token in a marker's value (decimal), if it is one.
fn parse_token(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}
