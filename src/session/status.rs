//! Early warning: a session's health as a watch channel, so that a holder can wind down
//! while a renewal is late, before [`Session::lost`] says it is too late.
//!
//! The keep-alive task renews every TTL/3, so a healthy session always has more than two
//! thirds of its TTL of validity left, and one with less than half left has missed a
//! renewal: the store is slow or unreachable. A small monitor task per session (started by
//! the first [`Session::status`] call) reads the validity deadline every TTL/10 and on loss,
//! and publishes the changes. It holds the session weakly: it keeps nothing alive and ends
//! with the session, after publishing `Lost` or `Closed`.

use super::{Session, Shared};
use crate::local::session_state::SessionStatus;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// How a session stands, as [`Session::status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Renewed on time: at least half the TTL of validity left.
    Healthy,
    /// A renewal is late (the store is slow or cannot be reached): less than half the TTL
    /// of validity is left. What is held is still held, until [`remaining`](Session::remaining)
    /// runs out; finish or stop work that must not outlive it. It may recover.
    AtRisk,
    /// Lost: the lease expired or was not renewed before the deadline. What was held
    /// through the session must be treated as gone. Final.
    Lost,
    /// Closed by its owner. Final.
    Closed,
}

/// Where the monitor's channel lives (in the session's shared state).
pub(super) type HealthChannel = parking_lot::Mutex<Option<watch::Sender<Health>>>;

impl Session {
    /// Completes when the session ends: lost, [closed](Session::close) (through any
    /// handle) or [detached](Session::detach). What waits on the session's behalf, and a
    /// guard's `lost()`, follow this, not [`lost`](Session::lost) alone: a close revokes
    /// the lease and so ends everything held through it, but is no loss. (Until
    /// 2026-12-05 they followed the loss alone: a guard's `lost()` never completed after a
    /// close through another handle, and a compare-and-swap campaign of a closed session
    /// waited until the leader left.)
    pub(crate) fn ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (lost, ended) = (self.inner.shared.lost.wait(), self.inner.shared.ended.wait());
        async move {
            tokio::select! {
                biased;
                _ = lost => {}
                _ = ended => {}
            }
        }
    }

    /// Whether the session was closed or detached (through any handle). Detached counts
    /// whatever the status says: a session lost before its detach keeps the status
    /// "lost", and its lease has been handed on all the same.
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.shared.state.status() == crate::local::session_state::SessionStatus::Closed || self.is_detached()
    }

    /// The error for what waited on a session that [ended](Session::ended):
    /// `SessionClosed` once closed or detached, else `SessionLost`.
    pub(crate) fn ended_error(&self) -> crate::Error {
        self.check().err().unwrap_or(crate::Error::SessionLost { lease: self.inner.lease })
    }

    /// The error for an acquisition whose own key (`key`, of `what`) went before it held:
    /// the session's [ended error](Session::ended_error) if the session ended, or
    /// `SessionLost` if its lease is gone from the store (the key went with it; the session
    /// has yet to notice), else [`NotHeld`](crate::Error::NotHeld): the key was deleted
    /// from outside (revoked, `Client::revoke`) while the session lives on. A failed look at
    /// the lease says `SessionLost`, as before. (Until 2026-12-05 this said `SessionLost`
    /// in every case, and a caller that believed it threw away a healthy session.)
    pub(crate) async fn gone_error(&self, what: &'static str, key: &str) -> crate::Error {
        if self.check().is_err() || self.is_closed() {
            return self.ended_error();
        }
        match self.client().backend().lease_ttl(self.inner.lease).await {
            Ok(Some(_)) if self.check().is_ok() && !self.is_closed() => crate::Error::NotHeld {
                what,
                reason: format!("{key} was deleted (revoked) before it held; the session lives on"),
            },
            _ => self.ended_error(),
        }
    }

    /// The session's health as a watch channel: [`Health::Healthy`], [`Health::AtRisk`]
    /// while a renewal is late (less than half the TTL of validity left), then
    /// [`Health::Lost`] or [`Health::Closed`] (final: the channel then closes, and
    /// `changed()` fails). The receiver holds the current state at once; `changed()` waits
    /// for the next. A late renewal that succeeds turns `AtRisk` back into `Healthy`.
    ///
    /// The state is read every TTL/10 (and at once on loss), so it lags by at most that;
    /// decisions that must be exact use [`is_valid`](Session::is_valid) and
    /// [`remaining`](Session::remaining).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::Health;
    /// let session = leasehold::Client::memory().session().await?;
    /// let mut health = session.status();
    /// assert_eq!(*health.borrow(), Health::Healthy);
    /// session.clone().close().await?;
    /// health.changed().await.expect("a final state");
    /// assert_eq!(*health.borrow(), Health::Closed);
    /// # Ok(()) }
    /// ```
    ///
    /// Call it within a tokio runtime (the monitor is a task of it); outside one, the
    /// receiver holds the state of the moment and never changes.
    pub fn status(&self) -> watch::Receiver<Health> {
        let shared = &self.inner.shared;
        let mut channel = shared.health.lock();
        if let Some(tx) = channel.as_ref() {
            return tx.subscribe();
        }
        let ttl = self.inner.ttl;
        let (tx, rx) = watch::channel(health_of(shared, ttl));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(monitor(Arc::downgrade(shared), ttl, tx.clone()));
            *channel = Some(tx);
        }
        rx
    }
}

/// Publishes [`Health::Closed`] if the session closed (not lost) and someone follows it:
/// the owner closed, detached or dropped it.
///
/// The send runs in a task of the runtime when there is one: it takes the channel's write
/// lock, and the code closing or dropping the session may hold a read guard of that very
/// channel (`*health.borrow()` in the same expression), which a send from here would wait
/// for forever.
pub(super) fn closed(shared: &Shared) {
    if shared.state.status() == SessionStatus::Closed {
        if let Some(tx) = shared.health.lock().take() {
            let send = move || {
                tx.send_if_modified(|h| std::mem::replace(h, Health::Closed) != Health::Closed);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(async move { send() })),
                Err(_) => send(),
            }
        }
    }
}

/// The health the session's state says now.
fn health_of(shared: &Shared, ttl: Duration) -> Health {
    match shared.state.status() {
        SessionStatus::Lost => Health::Lost,
        SessionStatus::Closed => Health::Closed,
        SessionStatus::Alive => {
            let now = tokio::time::Instant::now().into_std(); // the clock `is_valid` reads (paused in tests)
            let left = shared.state.deadline().saturating_duration_since(now);
            if left.is_zero() {
                Health::Lost // past its deadline: the keep-alive task marks it lost at once
            } else if left < ttl / 2 {
                Health::AtRisk
            } else {
                Health::Healthy
            }
        }
    }
}

async fn monitor(shared: Weak<Shared>, ttl: Duration, tx: watch::Sender<Health>) {
    let every = ttl / 10;
    loop {
        let Some(strong) = shared.upgrade() else {
            // The session is gone: its last handle closed or dropped it.
            tx.send_if_modified(|h| std::mem::replace(h, Health::Closed) != Health::Closed);
            return;
        };
        let now = health_of(&strong, ttl);
        tx.send_if_modified(|h| std::mem::replace(h, now) != now);
        if matches!(now, Health::Lost | Health::Closed) {
            // Final: the channel closes once this task's sender goes too, so a receiver's
            // `changed()` returns an error rather than waiting forever.
            strong.health.lock().take();
            return;
        }
        let lost = strong.lost.wait();
        drop(strong);
        tokio::select! {
            biased;
            _ = lost => {}
            _ = tokio::time::sleep(every) => {}
        }
    }
}
