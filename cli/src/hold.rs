//! Holding something: waiting for it (interruptibly), running the command under it or,
//! without a command, holding until told to stop, and releasing it.

use crate::supervise::{self, Held, Lost, Outcome};
use crate::{Fail, EXIT_BUSY, EXIT_CANNOT_RUN, EXIT_FAILED, EXIT_LOST, EXIT_NOT_FOUND};
use leasehold::{Leadership, MutexGuard, Permit, ReadGuard, Session, WriteGuard};
use std::future::Future;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Whatever the command runs under.
pub enum Guard {
    Mutex(MutexGuard),
    Permit(Permit),
    Leader(Leadership),
    Read(ReadGuard),
    Write(WriteGuard),
}

impl Guard {
    fn key(&self) -> &str {
        match self {
            Guard::Mutex(g) => g.key(),
            Guard::Permit(g) => g.key(),
            Guard::Leader(g) => g.key(),
            Guard::Read(g) => g.key(),
            Guard::Write(g) => g.key(),
        }
    }

    fn token(&self) -> u64 {
        match self {
            Guard::Mutex(g) => g.fencing_token(),
            Guard::Permit(g) => g.fencing_token(),
            Guard::Leader(g) => g.fencing_token(),
            Guard::Read(g) => g.fencing_token(),
            Guard::Write(g) => g.fencing_token(),
        }
    }

    /// Completes when the session is lost or the key is revoked.
    fn lost(&self) -> Lost {
        match self {
            Guard::Mutex(g) => Box::pin(g.lost()),
            Guard::Permit(g) => Box::pin(g.lost()),
            Guard::Leader(g) => Box::pin(g.lost()),
            Guard::Read(g) => Box::pin(g.lost()),
            Guard::Write(g) => Box::pin(g.lost()),
        }
    }

    async fn release(self) -> leasehold::Result<()> {
        match self {
            Guard::Mutex(g) => g.unlock().await,
            Guard::Permit(g) => g.release().await,
            Guard::Leader(g) => g.resign().await,
            Guard::Read(g) => g.unlock().await,
            Guard::Write(g) => g.unlock().await,
        }
    }
}

/// How to wait, from `--try` and `--timeout`.
pub enum How {
    Try,
    Within(Duration),
    Forever,
}

/// SIGINT, SIGTERM and SIGHUP, listened to from before the acquisition until the release:
/// one that comes in between is not lost (the command does not start then). (SIGHUP was
/// listened to only while the command ran, until 2026-12-05: one before, a terminal
/// closed, killed `leasehold` with nothing released, its key held or queued for a TTL.)
///
/// A SIGHUP ignored when leasehold started (`nohup`) stays ignored: leasehold does not
/// listen to it, and the command inherits the ignoring, as `nohup` means.
pub struct Signals {
    pub int: Signal,
    pub term: Signal,
    /// `None` if SIGHUP was ignored at the start (see [`hangup`]).
    pub hup: Option<Signal>,
}

impl Signals {
    /// Starts listening.
    pub fn new() -> Result<Self, Fail> {
        let listen = |kind| signal(kind).map_err(|e| Fail(EXIT_FAILED, format!("signals: {e}")));
        Ok(Self {
            int: listen(SignalKind::interrupt())?,
            term: listen(SignalKind::terminate())?,
            hup: if hangup_ignored() { None } else { Some(listen(SignalKind::hangup())?) },
        })
    }

    /// A SIGINT (130), SIGTERM (143) or SIGHUP (129) that came and was not handled yet;
    /// does not wait.
    pub async fn pending(&mut self) -> Option<(&'static str, u8)> {
        tokio::select! {
            biased;
            _ = self.int.recv() => Some(("interrupted", 130)),
            _ = self.term.recv() => Some(("terminated", 143)),
            _ = hangup(&mut self.hup) => Some(("hung up", 129)),
            _ = std::future::ready(()) => None,
        }
    }
}

/// The next SIGHUP of [`Signals::hup`] (never, if it is ignored).
pub async fn hangup(hup: &mut Option<Signal>) {
    match hup {
        Some(hup) => {
            hup.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Whether SIGHUP is ignored in this process (started under `nohup`).
fn hangup_ignored() -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Waits for `fut` unless SIGINT, SIGTERM or SIGHUP comes first: then the session is
/// closed — its lease revoked, so a queued key goes at once, not a TTL later — and the exit
/// is 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP).
pub async fn interruptible<T>(
    session: &Session,
    signals: &mut Signals,
    fut: impl Future<Output = leasehold::Result<T>>,
) -> Result<T, Fail> {
    let (interrupted, code) = tokio::select! {
        r = fut => return Ok(r?),
        _ = signals.int.recv() => ("interrupted", 130),
        _ = signals.term.recv() => ("terminated", 143),
        _ = hangup(&mut signals.hup) => ("hung up", 129),
    };
    // The acquisition was dropped: its key is deleted in the background; closing the
    // session waits for that and revokes the lease.
    let closed = tokio::time::timeout(Duration::from_secs(5), session.clone().close()).await;
    if !matches!(closed, Ok(Ok(()))) {
        say!("leasehold: warning: could not release the queued key; it goes with the lease (TTL)");
    }
    Err(Fail(code, format!("{interrupted} while waiting")))
}

/// A `--try` that found the name taken: exit 123.
pub fn taken<T>(got: Option<T>, what: &str, name: &str) -> Result<T, Fail> {
    got.ok_or_else(|| Fail(EXIT_BUSY, format!("{what} {name:?} is taken")))
}

/// Runs `cmd` under `guard`, then releases it (unless it was lost) and closes the session.
/// With no command, holds until SIGINT, SIGTERM or SIGHUP (as `etcdctl lock NAME` does).
pub async fn run_guarded(
    name: &str,
    session: Session,
    guard: Guard,
    cmd: &[std::ffi::OsString],
    grace: Duration,
    signals: &mut Signals,
) -> Result<u8, Fail> {
    let (result, clean) = if let Some((interrupted, code)) = signals.pending().await {
        (Err(Fail(code, format!("{interrupted} while acquiring; the command did not run"))), true)
    } else if cmd.is_empty() {
        (hold_until_signal(&session, &guard, signals).await, true)
    } else {
        let lost = || guard.lost();
        let held = Held { name, key: guard.key(), token: guard.token(), session: &session, lost: &lost };
        run_held(cmd, held, grace, signals).await
    };
    finish(session.clone(), guard.release(), &result, clean, session.ttl()).await;
    result
}

/// `leasehold lock NAME` without a command: prints the key and the fencing token, and holds
/// until SIGINT, SIGTERM or SIGHUP (exit 0), or until the lock is lost or revoked (exit 122).
async fn hold_until_signal(session: &Session, guard: &Guard, signals: &mut Signals) -> Result<u8, Fail> {
    // Holding goes on whether anyone reads this or not (`out!`: no panic on a closed pipe).
    let _ = out!("{}", guard.key());
    let _ = out!("token {}", guard.token());
    tokio::select! {
        _ = signals.int.recv() => Ok(0),
        _ = signals.term.recv() => Ok(0),
        _ = hangup(&mut signals.hup) => Ok(0),
        _ = guard.lost() => {
            let why = if session.is_valid() { "revoked" } else { "lost" };
            Err(Fail(EXIT_LOST, format!("{} {why}", guard.key())))
        }
    }
}

/// Runs the command under `held`: its exit code (or why not), and whether its end was clean:
/// not by a signal, which may have cut its writes off mid-way (then the release is not
/// clean either, and a `--lock-delay` holds the next holder back).
async fn run_held(
    cmd: &[std::ffi::OsString],
    held: Held<'_>,
    grace: Duration,
    signals: &mut Signals,
) -> (Result<u8, Fail>, bool) {
    let started = match supervise::spawn(cmd, &held) {
        Ok(started) => started,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound { EXIT_NOT_FOUND } else { EXIT_CANNOT_RUN };
            return (Err(Fail(code, format!("cannot run {:?}: {e}", cmd[0]))), true);
        }
    };
    let outcome = supervise::supervise(started, &held, grace, signals).await;
    // A command killed by leasehold (supervising failed: its group got SIGKILL) is no clean
    // end either; one that never ran is.
    let clean = matches!(
        outcome,
        Outcome::Exited { by_signal: false, .. }
            | Outcome::NotStarted
            | Outcome::RevokedBeforeStart
            | Outcome::NotStartedFailed(_)
            | Outcome::Interrupted(..)
    );
    let result = match outcome {
        Outcome::Exited { code, .. } => Ok(code.clamp(0, 255) as u8),
        Outcome::Lost => Err(Fail(EXIT_LOST, format!("lock {:?} lost; the command was killed", held.name))),
        Outcome::NotStarted => Err(Fail(
            EXIT_LOST,
            format!("lock {:?}: too little of its lease left to start the command; it did not run", held.name),
        )),
        Outcome::RevokedBeforeStart => Err(Fail(
            EXIT_LOST,
            format!(
                "lock {:?} lost or revoked (leasehold release) before the command started; it did not run",
                held.name
            ),
        )),
        Outcome::Failed(e) => Err(Fail(EXIT_FAILED, format!("supervising the command: {e}"))),
        Outcome::NotStartedFailed(e) => Err(Fail(EXIT_FAILED, format!("{e}; the command did not run"))),
        Outcome::Interrupted(what, code) => {
            Err(Fail(code, format!("{what} before the command started; it did not run")))
        }
    };
    (result, clean)
}

/// Releases what was held and closes the session, unless the lock was lost (then the
/// lease is gone or going, and the store may be unreachable). Bounded; a release that does
/// not finish in time, or fails, is reported.
async fn finish(
    session: Session,
    release: impl Future<Output = leasehold::Result<()>>,
    result: &Result<u8, Fail>,
    clean: bool,
    ttl: Duration,
) {
    if !clean && !matches!(result, Err(Fail(EXIT_LOST, _))) {
        // A command ended by a signal (an OOM kill, say) may have had writes on their way:
        // no clean release, so that a lock-delay holds the next holder back. The guard,
        // dropped, deletes its key in the background; closing the session waits for that
        // and revokes the lease. (Until 2026-12-05 such an end was released cleanly, and
        // the next holder skipped the delay.)
        drop(release);
        match tokio::time::timeout(Duration::from_secs(5), session.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => say!("leasehold: warning: release failed ({e}); the lease expires on its own within {ttl:?}"),
            Err(_) => say!("leasehold: warning: release did not finish; the lease expires on its own within {ttl:?}"),
        }
        return;
    }
    if matches!(result, Err(Fail(EXIT_LOST, _))) {
        if session.is_valid() {
            // Revoked (`leasehold release`): the key is gone but the lease lives; end it now
            // rather than a TTL later. (The guard, dropped first, deletes nothing: its key
            // is gone.)
            drop(release);
            let _ = tokio::time::timeout(Duration::from_secs(5), session.close()).await;
        }
        return;
    }
    let bound = Duration::from_secs(5);
    let done = tokio::time::timeout(bound, async {
        release.await?;
        session.close().await
    })
    .await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            say!("leasehold: warning: release failed ({e}); the lease expires on its own within {ttl:?}")
        }
        Err(_) => say!(
            "leasehold: warning: release did not finish within {bound:?}; the lease expires on its own within {ttl:?}"
        ),
    }
}
