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
//! (SIGTERM, then SIGKILL after the grace) **before** the lock is released.
//!
//! Ctrl-Z (SIGTSTP) stops the command's process group and then the supervisor; the lease is
//! not renewed meanwhile, so if it is not resumed before the lease could expire, the
//! watchdog kills the command at the deadline.

use crate::watchdog::{self, group_alive, signal_group, Watchdog};
use leasehold::Session;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

/// How a supervised run ended.
pub enum Outcome {
    /// The child exited on its own (or after a forwarded signal) with this exit code.
    Exited(i32),
    /// The lease was (about to be) lost; the child was killed.
    Lost,
}

/// What the child learns about its holding.
pub struct Held<'a> {
    pub name: &'a str,
    pub key: &'a str,
    pub token: u64,
    pub session: &'a Session,
}

/// The fd number the gate process reads from.
const GATE_FD: i32 = 3;

/// The command, started behind its gate: it runs only once [`Gate::open`] is called.
pub struct Started {
    pub child: Child,
    pub pgid: i32,
    gate: OwnedFd,
}

impl Started {
    /// Lets the command run (the gate process execs it).
    pub fn open(self) -> std::io::Result<(Child, i32)> {
        // SAFETY: writing one byte to the pipe we own.
        let n = unsafe { libc::write(self.gate.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        if n != 1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((self.child, self.pgid))
    }
}

/// Starts `cmd` in its own process group with the holding in its environment, waiting at
/// its gate.
pub fn spawn(cmd: &[String], held: &Held<'_>) -> std::io::Result<Started> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds, both close-on-exec.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned here.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let read_fd = read_end.as_raw_fd();
    let mut c = Command::new(std::env::current_exe()?);
    c.arg(watchdog::GATE)
        .arg(GATE_FD.to_string())
        .arg("--")
        .args(cmd)
        .env("LEASEHOLD_FENCING_TOKEN", held.token.to_string())
        .env("LEASEHOLD_KEY", held.key)
        .env("LEASEHOLD_NAME", held.name)
        .env("LEASEHOLD_LEASE", format!("{:x}", held.session.lease_id()))
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: dup2 is async-signal-safe. The read end becomes fd 3 without close-on-exec
    // (the gate reads it); the write end is close-on-exec, so only the supervisor keeps it:
    // if the supervisor dies before opening the gate, the gate reads end-of-file.
    unsafe {
        c.pre_exec(move || {
            // (dup2 onto itself would keep close-on-exec: clear it then.)
            let rc =
                if read_fd == GATE_FD { libc::fcntl(GATE_FD, libc::F_SETFD, 0) } else { libc::dup2(read_fd, GATE_FD) };
            if rc < 0 {
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
/// started may not have): SIGTERM, then SIGKILL after `grace`, and waits until no process
/// of the group lives (at most 10 s more).
pub async fn end_group(pgid: i32, grace: Duration) {
    if !group_alive(pgid) {
        return;
    }
    eprintln!("leasehold: the command exited; ending the rest of its process group before the release");
    signal_group(pgid, libc::SIGTERM);
    signal_group(pgid, libc::SIGCONT);
    let until = Instant::now() + grace;
    while group_alive(pgid) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let until = Instant::now() + Duration::from_secs(10);
    while group_alive(pgid) && Instant::now() < until {
        signal_group(pgid, libc::SIGKILL);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the watchdog of `pgid` with the session's current deadline.
async fn guard(pgid: i32, grace: Duration, margin: Duration, session: &Session) -> std::io::Result<Watchdog> {
    let mut dog = Watchdog::start(pgid, grace).await?;
    dog.deadline(session.deadline(), margin).await?;
    Ok(dog)
}

/// Runs the command: starts the watchdog for its process group, opens its gate, and waits
/// for it, forwarding SIGINT/SIGTERM/SIGHUP, stopping with it on Ctrl-Z, and killing it
/// before the session's deadline if renewals stop succeeding. When it exits, the rest of
/// its process group is ended. The watchdog is disarmed only then.
pub async fn supervise(started: Started, held: &Held<'_>, grace: Duration) -> std::io::Result<Outcome> {
    let ttl = held.session.ttl();
    let grace = grace.min(ttl / 4);
    let margin = Duration::from_millis(500).min(ttl / 10);
    let mut dog = match guard(started.pgid, grace, margin, held.session).await {
        Ok(dog) => dog,
        Err(e) => {
            drop(started); // the gate never opens: the command does not run
            return Err(std::io::Error::other(format!("cannot start the watchdog: {e}")));
        }
    };
    let (mut child, pgid) = started.open()?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigtstp = signal(SignalKind::from_raw(libc::SIGTSTP))?;
    let lost = held.session.lost();
    tokio::pin!(lost);
    let mut termed = false;
    let mut told = held.session.deadline();
    let tick = (ttl / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let outcome = loop {
        let deadline = Instant::from_std(held.session.deadline());
        let term_at = deadline.checked_sub(margin + grace).unwrap_or(deadline);
        let kill_at = deadline.checked_sub(margin).unwrap_or(deadline);
        tokio::select! {
            biased;
            _ = &mut lost => break None,
            status = child.wait() => {
                let status = status?;
                // Past the SIGTERM time (ours or the watchdog's, on the same deadline), the
                // command ended because the lease was going.
                let gone = termed || !held.session.is_valid() || Instant::now() >= term_at;
                break Some(if gone { Outcome::Lost } else { Outcome::Exited(exit_code(status)) });
            }
            _ = sigint.recv() => { signal_group(pgid, libc::SIGINT); }
            _ = sigterm.recv() => { signal_group(pgid, libc::SIGTERM); }
            _ = sighup.recv() => { signal_group(pgid, libc::SIGHUP); }
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
                    break None; // it killed the command: the deadline passed while we were stopped
                }
                eprintln!("leasehold: the watchdog ended ({status}); starting another");
                dog = guard(pgid, grace, margin, held.session).await?;
            }
            _ = tokio::time::sleep_until(kill_at) => {
                if Instant::from_std(held.session.deadline()) <= kill_at + margin {
                    break None; // not renewed in time
                }
            }
            _ = tokio::time::sleep_until(term_at), if !termed => {
                if Instant::from_std(held.session.deadline()) <= term_at + margin + grace {
                    eprintln!("leasehold: lease renewals failing; sending SIGTERM to the command");
                    signal_group(pgid, libc::SIGTERM);
                    termed = true;
                }
            }
            _ = tokio::time::sleep(tick) => {}
        }
        // Each renewal moves the deadline: the watchdog gets the new one.
        let now = held.session.deadline();
        if now != told {
            told = now;
            if let Err(e) = dog.deadline(now, margin).await {
                eprintln!("leasehold: cannot reach the watchdog ({e})");
            }
        }
    };
    let outcome = match outcome {
        Some(outcome) => outcome,
        None => {
            eprintln!("leasehold: lease lost or about to expire; killing the command");
            signal_group(pgid, libc::SIGKILL);
            let _ = child.wait().await;
            Outcome::Lost
        }
    };
    end_group(pgid, grace).await;
    dog.disarm().await;
    Ok(outcome)
}
