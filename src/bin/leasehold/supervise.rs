//! Runs a child command while something is held, and kills it before the lease can have
//! expired on the server.
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
//! With the default TTL, renewals must fail for about 7.5 s before SIGTERM. A supervisor
//! that is itself paused (SIGSTOP, a VM freeze) cannot kill in time; it kills on resume,
//! and the fencing token is what protects the resource meanwhile.

use leasehold::Session;
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

/// Spawns `cmd` in its own process group with the holding in its environment.
pub fn spawn(cmd: &[String], held: &Held<'_>) -> std::io::Result<Child> {
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..])
        .env("LEASEHOLD_FENCING_TOKEN", held.token.to_string())
        .env("LEASEHOLD_KEY", held.key)
        .env("LEASEHOLD_NAME", held.name)
        .env("LEASEHOLD_LEASE", format!("{:x}", held.session.lease_id()))
        .process_group(0)
        .kill_on_drop(true);
    c.spawn()
}

fn kill_group(child: &Child, sig: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
        unsafe {
            libc::kill(-(pid as i32), sig);
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Waits for the child, forwarding SIGINT/SIGTERM/SIGHUP, and kills it before the session's
/// deadline if renewals stop succeeding.
pub async fn supervise(mut child: Child, held: &Held<'_>, grace: Duration) -> std::io::Result<Outcome> {
    let ttl = held.session.ttl();
    let grace = grace.min(ttl / 4);
    let margin = Duration::from_millis(500).min(ttl / 10);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let lost = held.session.lost();
    tokio::pin!(lost);
    let mut termed = false;
    loop {
        let deadline = Instant::from_std(held.session.deadline());
        let term_at = deadline.checked_sub(margin + grace).unwrap_or(deadline);
        let kill_at = deadline.checked_sub(margin).unwrap_or(deadline);
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                // After our own SIGTERM the command ended because the lease was going.
                return Ok(if termed { Outcome::Lost } else { Outcome::Exited(exit_code(status)) });
            }
            _ = sigint.recv() => kill_group(&child, libc::SIGINT),
            _ = sigterm.recv() => kill_group(&child, libc::SIGTERM),
            _ = sighup.recv() => kill_group(&child, libc::SIGHUP),
            _ = &mut lost => break,
            _ = tokio::time::sleep_until(kill_at) => {
                if Instant::from_std(held.session.deadline()) <= kill_at + margin {
                    break; // not renewed in time
                }
            }
            _ = tokio::time::sleep_until(term_at), if !termed => {
                if Instant::from_std(held.session.deadline()) <= term_at + margin + grace {
                    eprintln!("leasehold: lease renewals failing; sending SIGTERM to the command");
                    kill_group(&child, libc::SIGTERM);
                    termed = true;
                }
            }
        }
    }
    eprintln!("leasehold: lease lost or about to expire; killing the command");
    kill_group(&child, libc::SIGKILL);
    let _ = child.wait().await;
    Ok(Outcome::Lost)
}
