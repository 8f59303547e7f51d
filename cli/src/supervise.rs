//! Runs a child command while something is held, and makes sure it is dead before the
//! lease can have expired on the server — also when `leasehold` itself cannot act.
//!
//! Timing budget (TTL = the session's granted TTL, default 10 s):
//! - the session renews every TTL/3; its local deadline is the send time of the last
//!   successful renewal + TTL, which the server's expiry cannot precede;
//! - `grace` = min(--grace, TTL/4); `margin` = min(500 ms, TTL/10);
//! - at deadline − margin − grace the child's process group gets SIGTERM, at
//!   deadline − margin SIGKILL, so it is dead by the deadline. A renewal that succeeds in
//!   between moves the deadline and cancels the countdown (SIGTERM is not undone);
//! - if the server says the lease is gone (the session is lost), SIGKILL at once.
//!
//! Two processes keep that budget: this supervisor, and a watchdog (`watchdog.rs`) that
//! gets every new deadline and acts on it whether or not the supervisor runs. The command
//! starts only once the watchdog guards its process group (the gate), so no moment exists
//! in which it runs unguarded.
//!
//! When the command exits, the rest of its process group (`sh -c 'worker &'`) is ended
//! (SIGTERM, then SIGKILL after the grace) **before** the lock is released; while any of
//! it lives, the lock is held (and renewed), however long that takes. If supervising fails
//! (the watchdog cannot be restarted, a signal cannot be set up), the command's group is
//! killed and ended the same way before anything is released.
//!
//! Ctrl-Z (SIGTSTP) stops the command's process group and then the supervisor; the lease is
//! not renewed meanwhile, so if it is not resumed before the lease could expire, the
//! watchdog kills the command at the deadline.

use crate::hold::Signals;
use crate::watchdog::{self, group_alive, signal_group, SendError, Watchdog};
use leasehold::Session;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

/// How a supervised run ended.
pub enum Outcome {
    /// The child exited on its own (or after a forwarded signal) with this exit code;
    /// `by_signal` if a signal ended it (its writes may have been cut off mid-way).
    Exited { code: i32, by_signal: bool },
    /// The lease was (about to be) lost; the child was killed.
    Lost,
    /// The lease had too little time left to start the command; it did not run.
    NotStarted,
    /// The lock's key was revoked (`leasehold release`), or the session lost, before the
    /// command started; it did not run.
    RevokedBeforeStart,
    /// Supervising failed; the command's group was killed and ended (the lock is still held
    /// and may be released).
    Failed(String),
    /// Starting failed (the watchdog, or the last look at the key): the command did not run.
    NotStartedFailed(String),
    /// SIGINT, SIGTERM or SIGHUP came before the gate opened: the command did not run.
    Interrupted(&'static str, u8),
}

/// A guard's `lost()`: completes when the session is lost or the key is revoked.
pub type Lost = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What the child learns about its holding, and how to learn it is gone.
pub struct Held<'a> {
    pub name: &'a str,
    pub key: &'a str,
    pub token: u64,
    pub session: &'a Session,
    /// The guard's `lost()`.
    pub lost: &'a (dyn Fn() -> Lost + Sync),
}

/// The command, started behind its gate: it runs only once [`Started::open`] is called.
pub struct Started {
    pub child: Child,
    pub pgid: i32,
    gate: OwnedFd,
}

impl Started {
    /// Lets the command run (the gate process execs it).
    fn open(&self) -> std::io::Result<()> {
        // SAFETY: writing one byte to the pipe we own.
        let n = unsafe { libc::write(self.gate.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        if n != 1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Starts `cmd` in its own process group with the holding in its environment, waiting at
/// its gate. The gate reads a pipe on an fd the supervisor had free, so every fd the
/// command inherits (systemd's socket activation starts at 3) reaches it unchanged.
pub fn spawn(cmd: &[std::ffi::OsString], held: &Held<'_>) -> std::io::Result<Started> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds, both close-on-exec.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned here.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let read_fd = read_end.as_raw_fd();
    let mut c = Command::new(watchdog::self_exe());
    c.arg(watchdog::GATE)
        .arg(read_fd.to_string())
        .arg("--")
        .args(cmd)
        .env("LEASEHOLD_FENCING_TOKEN", held.token.to_string())
        .env("LEASEHOLD_KEY", held.key)
        .env("LEASEHOLD_NAME", held.name)
        .env("LEASEHOLD_LEASE", format!("{:x}", held.session.lease_id()))
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: fcntl is async-signal-safe. In the child only, the read end loses
    // close-on-exec (the gate reads it, then closes it); the write end keeps it, so only
    // the supervisor holds it: if the supervisor dies before opening the gate, the gate
    // reads end-of-file.
    unsafe {
        c.pre_exec(move || {
            if libc::fcntl(read_fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = c.spawn()?;
    drop(read_end);
    let pgid = child.id().map(|p| p as i32).ok_or_else(|| std::io::Error::other("the command has no pid"))?;
    Ok(Started { child, pgid, gate: write_end })
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Ends what is left of the process group `pgid` (the command exited, a `worker &` it
/// started may not have; or it was killed): SIGTERM, then SIGKILL after `grace`, and waits
/// until no process of the group lives. True once none does while the lock still held;
/// false if the session was lost or `lost` (the guard's) completed first — then what is
/// left is killed at once, without waiting out the grace (the lock may be another's
/// already), and nothing may be released. (Until 2026-12-05 a lost session made it return
/// at once with the group alive, and the watchdog was disarmed after it.)
pub async fn end_group(pgid: i32, grace: Duration, session: &Session, lost: Lost) -> bool {
    if !group_alive(pgid) {
        return true;
    }
    let mut lost = lost;
    let mut held = session.is_valid();
    if held {
        signal_group(pgid, libc::SIGTERM);
        signal_group(pgid, libc::SIGCONT);
        say!("leasehold: ending what is left of the command's process group before the release");
        let until = Instant::now() + grace;
        while held && group_alive(pgid) && Instant::now() < until {
            tokio::select! {
                biased;
                _ = &mut lost => held = false,
                _ = tokio::time::sleep(Duration::from_millis(20)) => held = session.is_valid(),
            }
        }
    }
    let mut next_word = Instant::now() + Duration::from_secs(10);
    while group_alive(pgid) {
        signal_group(pgid, libc::SIGKILL);
        if Instant::now() >= next_word {
            let why = if held { "the lock is kept until they end" } else { "the lock is lost" };
            say!("leasehold: processes of the command's group still live after SIGKILL; {why}");
            next_word += Duration::from_secs(10);
        }
        tokio::select! {
            biased;
            _ = &mut lost, if held => held = false,
            _ = tokio::time::sleep(Duration::from_millis(20)) => held &= session.is_valid(),
        }
    }
    held
}

/// The two stages of the kill budget.
#[derive(Clone, Copy)]
struct Budget {
    grace: Duration,
    margin: Duration,
}

impl Budget {
    fn term_at(&self, deadline: Instant) -> Instant {
        deadline.checked_sub(self.margin + self.grace).unwrap_or(deadline)
    }

    fn kill_at(&self, deadline: Instant) -> Instant {
        deadline.checked_sub(self.margin).unwrap_or(deadline)
    }
}

/// How long a watchdog may take to arm.
const ARM_WITHIN: Duration = Duration::from_secs(10);

/// Starts the watchdog of `pgid` with the session's current deadline, allowing it `within`
/// to arm.
async fn guard(pgid: i32, budget: Budget, session: &Session, within: Duration) -> std::io::Result<Watchdog> {
    Watchdog::start(pgid, budget.grace, within, session.deadline(), budget.margin).await
}

/// Replaces a watchdog while the command runs. The supervisor does not watch the deadline
/// meanwhile, so the new one must be armed before the kill time; if it is not, supervising
/// fails (and the command is killed).
async fn replace(pgid: i32, budget: Budget, session: &Session) -> std::io::Result<Watchdog> {
    let kill_at = budget.kill_at(Instant::from_std(session.deadline()));
    let within = kill_at.saturating_duration_since(Instant::now()).min(ARM_WITHIN);
    guard(pgid, budget, session, within).await
}

/// Runs the command: starts the watchdog for its process group, opens its gate if the lease
/// has time enough left, and waits for it, forwarding SIGINT/SIGTERM/SIGHUP, stopping with
/// it on Ctrl-Z, and killing it before the session's deadline if renewals stop succeeding.
/// When it exits, is killed, or supervising fails, the rest of its process group is ended;
/// the watchdog is disarmed only then.
pub async fn supervise(mut started: Started, held: &Held<'_>, grace: Duration, signals: &mut Signals) -> Outcome {
    let session = held.session;
    let ttl = session.ttl();
    let budget = Budget { grace: grace.min(ttl / 4), margin: Duration::from_millis(500).min(ttl / 10) };
    let pgid = started.pgid;
    // Followed from before the watchdog arms: a revocation from here on keeps the command
    // from starting, or ends it (until 2026-12-05 the key was first followed once the
    // command ran, so one revoked while the watchdog armed, or while the supervisor was
    // stopped, started all the same, after the next holder's).
    let mut lost = (held.lost)();
    if poll_once(&mut lost) {
        return Outcome::RevokedBeforeStart;
    }
    // The deadline the watchdog is armed with: it kills at this one until it is sent a
    // later one, so the look at the key below must end within it.
    let armed_with = session.deadline();
    let mut dog = match guard(pgid, budget, session, ARM_WITHIN).await {
        Ok(dog) => dog,
        // The gate never opens: dropping it ends the gate process; the command never runs.
        Err(e) => return Outcome::NotStartedFailed(format!("cannot start the watchdog: {e}")),
    };
    let start = Start { held, session, budget, armed_with, pgid };
    if let Some(outcome) = start.checked(&mut dog, &mut lost, signals).await {
        // The gate never opens: dropping it ends the gate process; the command never runs.
        drop(started);
        dog.disarm().await;
        return outcome;
    }
    let watched = match started.open() {
        Ok(()) => watch(&mut started.child, pgid, &mut dog, session, lost, budget, signals).await,
        Err(e) => Err(std::io::Error::other(format!("cannot open the command's gate: {e}"))),
    };
    let outcome = match watched {
        Ok(Some(outcome)) => outcome,
        Ok(None) if session.is_valid() => {
            signal_group(pgid, libc::SIGKILL);
            say!("leasehold: the lock's key was revoked (leasehold release); killed the command");
            Outcome::Lost
        }
        Ok(None) => {
            signal_group(pgid, libc::SIGKILL);
            say!("leasehold: lease lost or about to expire; killed the command");
            Outcome::Lost
        }
        Err(e) => {
            signal_group(pgid, libc::SIGKILL);
            say!("leasehold: supervising the command failed ({e}); killed it");
            Outcome::Failed(e.to_string())
        }
    };
    let _ = started.child.wait().await;
    let ended = end_group(pgid, budget.grace, session, (held.lost)()).await;
    dog.disarm().await;
    match outcome {
        _ if !ended => Outcome::Lost,
        outcome => outcome,
    }
}

/// What the last looks before the gate opens need ([`Start::checked`]): with the watchdog
/// armed, `Some` with the outcome if the command must not start.
///
/// Read once more, right before the gate opens: still this acquisition's key? (A failed
/// read is tried again while the lease has time for the command; each read is bounded by
/// that time.) Then not seen going meanwhile, and time enough left to end the command
/// before the deadline. A revocation the store applies after this read reaches the `lost`
/// future and ends the command as soon as it is seen: no check-then-start closes that
/// window; fencing tokens cover it. A signal that came meanwhile keeps the command from
/// starting (it is not forwarded to a command that has not run). And the watchdog, armed
/// with the deadline before that read, is sent the current one (a renewal meanwhile moved
/// it; the supervision sends only later changes): one that does not take it is replaced
/// (stopped) or ends the start (gone), so the command never runs unguarded.
struct Start<'a, 'h> {
    held: &'a Held<'h>,
    session: &'a Session,
    budget: Budget,
    /// The deadline the watchdog was armed with.
    armed_with: std::time::Instant,
    pgid: i32,
}

impl Start<'_, '_> {
    async fn checked(&self, dog: &mut Watchdog, lost: &mut Lost, signals: &mut Signals) -> Option<Outcome> {
        let Start { held, session, budget, armed_with, pgid } = *self;
        let still = still_held(held, session, budget, armed_with).await;
        let revoked = matches!(still, Ok(Some(false))) || poll_once(lost);
        let left = session.deadline().saturating_duration_since(std::time::Instant::now());
        if revoked || !matches!(still, Ok(Some(true))) || !session.is_valid() || left <= budget.margin + budget.grace {
            return Some(match still {
                _ if revoked => Outcome::RevokedBeforeStart,
                Err(e) => {
                    Outcome::NotStartedFailed(format!("cannot confirm the lock before starting the command: {e}"))
                }
                Ok(_) => Outcome::NotStarted,
            });
        }
        if let Some((what, code)) = signals.pending().await {
            return Some(Outcome::Interrupted(what, code));
        }
        match dog.deadline(session.deadline(), budget.margin) {
            Ok(()) => None,
            Err(SendError::Stuck) => match replace(pgid, budget, session).await {
                Ok(new) => {
                    std::mem::replace(dog, new).abandon().await;
                    None
                }
                Err(e) => Some(Outcome::NotStartedFailed(format!("cannot replace a stopped watchdog: {e}"))),
            },
            Err(SendError::Io(e)) => Some(Outcome::NotStartedFailed(format!("the watchdog is gone: {e}"))),
        }
    }
}

/// Whether the lock's key is still this acquisition's (read from the store): `None` if the
/// lease (or the watchdog's deadline, `armed_with`) has no time left to run the command
/// before an answer came (each read is bounded by that time; a failed one is tried again
/// every 100 ms within it).
async fn still_held(
    held: &Held<'_>,
    session: &Session,
    budget: Budget,
    armed_with: std::time::Instant,
) -> Result<Option<bool>, leasehold::Error> {
    loop {
        // Within the watchdog's deadline, which may be older than the session's.
        let left = session.deadline().min(armed_with).saturating_duration_since(std::time::Instant::now());
        let Some(time) = left.checked_sub(budget.margin + budget.grace).filter(|t| !t.is_zero()) else {
            return Ok(None);
        };
        match tokio::time::timeout(time, session.client().backend().get(held.key)).await {
            Err(_) => return Ok(None),
            Ok(Ok(kv)) => {
                return Ok(Some(kv.is_some_and(|kv| u64::try_from(kv.create_revision).ok() == Some(held.token))));
            }
            Ok(Err(e)) if !e.is_transient() => return Err(e),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100).min(time)).await,
        }
    }
}

/// Polls `lost` once (which also starts its following of the key): whether it completed.
fn poll_once(lost: &mut Lost) -> bool {
    let waker = std::task::Waker::noop();
    lost.as_mut().poll(&mut std::task::Context::from_waker(waker)).is_ready()
}

/// Waits for the command while the lease lasts. `Some` when it exited, `None` when it must
/// be killed because the lease is (about to be) lost or `lost` (the guard's) completed.
async fn watch(
    child: &mut Child,
    pgid: i32,
    dog: &mut Watchdog,
    session: &Session,
    lost: Lost,
    budget: Budget,
    signals: &mut Signals,
) -> std::io::Result<Option<Outcome>> {
    let mut sigtstp = signal(SignalKind::from_raw(libc::SIGTSTP))?;
    tokio::pin!(lost);
    // The deadline a SIGTERM was sent for: a renewal that moves the deadline past it
    // re-arms the countdown.
    let mut termed_for: Option<Instant> = None;
    let mut told = session.deadline();
    let tick = (session.ttl() / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        let deadline = Instant::from_std(session.deadline());
        let (term_at, kill_at) = (budget.term_at(deadline), budget.kill_at(deadline));
        let termed = termed_for.is_some_and(|d| d >= deadline);
        tokio::select! {
            biased;
            _ = &mut lost => return Ok(None),
            status = child.wait() => {
                let status = status?;
                // Past the SIGTERM time of the deadline as it stands now (ours or the
                // watchdog's), the command ended because the lease was going.
                let now_term_at = budget.term_at(Instant::from_std(session.deadline()));
                let gone = !session.is_valid() || Instant::now() >= now_term_at;
                return Ok(Some(if gone { Outcome::Lost } else { Outcome::Exited { code: exit_code(status), by_signal: status.code().is_none() } }));
            }
            _ = signals.int.recv() => { signal_group(pgid, libc::SIGINT); }
            _ = signals.term.recv() => { signal_group(pgid, libc::SIGTERM); }
            _ = crate::hold::hangup(&mut signals.hup) => { signal_group(pgid, libc::SIGHUP); }
            _ = sigtstp.recv() => {
                // Ctrl-Z: the command's group stops, then this process (as the default
                // action would). The watchdog, in a session of its own, runs on.
                signal_group(pgid, libc::SIGTSTP);
                // SAFETY: raise(2) stops this process; SIGCONT resumes it.
                unsafe { libc::raise(libc::SIGSTOP) };
                signal_group(pgid, libc::SIGCONT);
            }
            ended = dog.ended() => {
                let status = ended?;
                if status.code() == Some(1) {
                    return Ok(None); // it killed the command: the deadline passed while we were stopped
                }
                say!("leasehold: the watchdog ended ({status}); starting another");
                *dog = replace(pgid, budget, session).await?;
                told = session.deadline();
            }
            _ = tokio::time::sleep_until(kill_at) => {
                if Instant::from_std(session.deadline()) <= deadline {
                    return Ok(None); // not renewed in time
                }
            }
            _ = tokio::time::sleep_until(term_at), if !termed => {
                if Instant::from_std(session.deadline()) <= deadline {
                    signal_group(pgid, libc::SIGTERM);
                    termed_for = Some(deadline);
                    say!("leasehold: lease renewals failing; sent SIGTERM to the command");
                }
            }
            _ = tokio::time::sleep(tick) => {}
        }
        // Each renewal moves the deadline: the watchdog gets the new one, without waiting.
        let now = session.deadline();
        if now != told {
            match dog.deadline(now, budget.margin) {
                Ok(()) => told = now,
                Err(SendError::Stuck) => {
                    // A stopped watchdog fills its pipe; one that cannot read a deadline
                    // cannot keep it. A new one is armed before the old one is ended.
                    say!("leasehold: the watchdog does not read its input (stopped?); starting another");
                    let old = std::mem::replace(dog, replace(pgid, budget, session).await?);
                    old.abandon().await;
                    told = session.deadline();
                }
                // It exited: `ended` above sees to it on the next turn.
                Err(SendError::Io(e)) => say!("leasehold: cannot reach the watchdog ({e})"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// A process group whose members ignore SIGTERM (`sh` sets the trap, then says so; the
    /// `sleep` it starts inherits the ignored signal).
    fn stubborn_group() -> (std::process::Child, i32) {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; echo ready; sleep 30"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        let pgid = child.id() as i32;
        (child, pgid)
    }

    /// Kills and reaps what a test started, whatever it asserted.
    struct Reap(std::process::Child, i32);
    impl Drop for Reap {
        fn drop(&mut self) {
            signal_group(self.1, libc::SIGKILL);
            let _ = self.0.wait();
        }
    }

    /// What is left of the command's group is killed when the session is lost (the server
    /// said the lease is gone), not left running because nothing may be released: the lock
    /// may be another's already. It used to return at once without a SIGKILL, and the
    /// watchdog was disarmed after it.
    #[tokio::test]
    async fn a_lost_session_kills_what_is_left_of_the_group() {
        let client = leasehold::Client::memory();
        let session = client.session_builder().ttl(Duration::from_secs(1)).open().await.unwrap();
        let (child, pgid) = stubborn_group();
        let _reap = Reap(child, pgid);
        client.backend().revoke_lease(session.lease_id()).await.unwrap();
        session.lost().await;
        let never: Lost = Box::pin(std::future::pending());
        assert!(!end_group(pgid, Duration::from_millis(300), &session, never).await, "the session was lost");
        assert!(!group_alive(pgid), "the group lives on after the session was lost");
    }

    /// The same when the guard's key is revoked (`leasehold release`) while the group is
    /// given its grace: it is killed at once, and the run counts as lost.
    #[tokio::test]
    async fn a_revoked_key_during_the_grace_kills_the_group_at_once() {
        let client = leasehold::Client::memory();
        let session = client.session().await.unwrap();
        let (child, pgid) = stubborn_group();
        let _reap = Reap(child, pgid);
        let revoked: Lost = Box::pin(tokio::time::sleep(Duration::from_millis(50)));
        let start = Instant::now();
        assert!(!end_group(pgid, Duration::from_secs(20), &session, revoked).await, "the key was revoked");
        assert!(!group_alive(pgid));
        assert!(start.elapsed() < Duration::from_secs(20), "waited out the grace");
    }
}
