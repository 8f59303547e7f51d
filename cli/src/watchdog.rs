//! The dead-man's switch: a second, small process that kills the command's process group
//! when the supervisor cannot, so the command never outlives the lock, even while the
//! supervisor (`leasehold` itself) is stopped, killed or not scheduled.
//!
//! The supervisor starts it (`leasehold __watchdog`) in a session of its own — no terminal
//! signal reaches it, Ctrl-Z and Ctrl-C included — and talks to it over its stdin, one
//! line per message, with deadlines on `CLOCK_BOOTTIME`, the clock that keeps counting while
//! the host is suspended (Rust's `Instant` does not):
//!
//! | message | meaning |
//! |---|---|
//! | `arm <pgid> <grace ns>` | the command's process group; answered `armed` on stdout |
//! | `at <term ns> <kill ns>` | SIGTERM to the group at `term`, SIGKILL at `kill` (moved with each renewal) |
//! | `disarm` | the supervisor ended the group itself: exit |
//! | end of input | the supervisor is gone: SIGTERM now, SIGKILL after the grace (never after `kill`) |
//!
//! It waits on the pipe and on a `timerfd` set to the next deadline on `CLOCK_BOOTTIME`, so
//! a deadline that passed while the host slept fires as soon as it wakes. If it dies
//! itself, the supervisor (which keeps its own copy of the deadlines) starts a new one.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// The hidden subcommand that runs the watchdog.
pub const SUBCOMMAND: &str = "__watchdog";

/// Now on `CLOCK_BOOTTIME`, in nanoseconds.
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we pass; CLOCK_BOOTTIME exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Time the host spent suspended since boot (`CLOCK_BOOTTIME` − `CLOCK_MONOTONIC`), in
/// nanoseconds; it grows only across a suspend.
pub fn suspended_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    let boot = boottime_ns();
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    boot.saturating_sub(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// The watchdog's log: lines go to stderr from a thread of their own, so that a stderr
/// that blocks (a pipe nobody reads) or fails (a terminal that hung up) never delays or
/// stops a kill. A line that does not fit the queue is dropped.
mod log {
    use std::io::Write;
    use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
    use std::sync::Mutex;
    use std::time::Duration;

    static QUEUE: Mutex<Option<(SyncSender<String>, Receiver<()>)>> = Mutex::new(None);

    pub fn start() {
        let (tx, rx) = sync_channel::<String>(32);
        let (done_tx, done_rx) = sync_channel(1);
        let spawned = std::thread::Builder::new().name("watchdog-log".into()).spawn(move || {
            for line in rx {
                let _ = writeln!(std::io::stderr(), "leasehold: watchdog: {line}");
            }
            let _ = done_tx.send(());
        });
        if spawned.is_ok() {
            *QUEUE.lock().unwrap_or_else(|e| e.into_inner()) = Some((tx, done_rx));
        }
    }

    pub fn say(line: String) {
        if let Some((tx, _)) = QUEUE.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.try_send(line);
        }
    }

    /// Gives the queued lines a moment to be written before the process exits.
    pub fn finish() {
        let queue = QUEUE.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((tx, done)) = queue {
            drop(tx);
            let _ = done.recv_timeout(Duration::from_millis(200));
        }
    }
}

/// Signals a process group; false if it has no process left.
pub fn signal_group(pgid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// What the watchdog process knows.
struct State {
    pgid: Option<i32>,
    grace_ns: u64,
    term_at: Option<u64>,
    kill_at: Option<u64>,
    termed: bool,
}

impl State {
    fn term(&mut self) {
        if let (Some(pgid), false) = (self.pgid, self.termed) {
            // Signals first, words after: nothing may delay the signal.
            signal_group(pgid, libc::SIGTERM);
            signal_group(pgid, libc::SIGCONT); // a stopped command must run to take its SIGTERM
            self.termed = true;
            log::say("the lease can no longer be counted on; sent SIGTERM to the command".into());
        }
    }

    /// The next instant something is due, if any.
    fn next(&self) -> Option<u64> {
        match (self.termed, self.term_at, self.kill_at) {
            (false, Some(t), Some(k)) => Some(t.min(k)),
            (_, _, k) => k,
        }
    }
}

/// Sets `timer` to go off at `at` on `CLOCK_BOOTTIME` (disarmed if `None`).
fn set_timer(timer: &OwnedFd, at: Option<u64>) -> io::Result<()> {
    let at = at.map_or(0, |t| t.max(1)); // 0 would disarm it
    let spec = libc::itimerspec {
        it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
        it_value: libc::timespec { tv_sec: (at / 1_000_000_000) as i64, tv_nsec: (at % 1_000_000_000) as i64 },
    };
    // SAFETY: a valid timerfd and a valid itimerspec; the old value is not asked for.
    let rc = unsafe { libc::timerfd_settime(timer.as_raw_fd(), libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The watchdog process's main; returns its exit code.
pub fn run() -> i32 {
    log::start();
    let mut state = State { pgid: None, grace_ns: 0, term_at: None, kill_at: None, termed: false };
    let code = match watch(&mut state) {
        Ok(code) => code,
        Err(e) => {
            log::say(e.to_string());
            // Armed, it cannot guard the group any more: the group goes now, rather than
            // run on unguarded.
            if let Some(pgid) = state.pgid {
                signal_group(pgid, libc::SIGKILL);
                log::say("killed the command: the watchdog cannot go on".into());
            }
            3
        }
    };
    log::finish();
    code
}

fn watch(state: &mut State) -> io::Result<i32> {
    // SAFETY: plain signal dispositions, set before anything else runs.
    unsafe {
        for sig in [libc::SIGPIPE, libc::SIGINT, libc::SIGHUP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    // SAFETY: timerfd_create returns a new fd or -1; we own it from here.
    let raw = unsafe { libc::timerfd_create(libc::CLOCK_BOOTTIME, libc::TFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh, valid fd nobody else owns.
    let timer = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut input = BufReader::new(io::stdin().lock());
    let mut supervisor_gone = false;
    loop {
        set_timer(&timer, state.next())?;
        let mut fds = [
            libc::pollfd { fd: timer.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if supervisor_gone { -1 } else { 0 }, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfd entries (a negative fd is skipped by poll).
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[0].revents != 0 {
            let mut expirations = [0u8; 8];
            // SAFETY: reading 8 bytes into an 8-byte buffer from our timerfd.
            unsafe { libc::read(timer.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
        }
        if fds[1].revents != 0 {
            // Every complete line read so far (poll only tells of data not yet buffered).
            loop {
                let mut line = String::new();
                if input.read_line(&mut line)? == 0 {
                    supervisor_gone = true;
                    let Some(_) = state.pgid else { return Ok(0) }; // the command never ran
                    let now = boottime_ns();
                    state.term();
                    let soon = now.saturating_add(state.grace_ns);
                    state.kill_at = Some(state.kill_at.map_or(soon, |k| k.min(soon)));
                    log::say("the supervisor is gone".into());
                    break;
                }
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["arm", pgid, grace] => {
                        state.pgid = pgid.parse().ok().filter(|&p: &i32| p > 1);
                        state.grace_ns = grace.parse().unwrap_or(0);
                        // A supervisor gone before this answer (killed while a replacement
                        // started) closed its end: the write fails, and the group is still
                        // this watchdog's to guard (it used to exit 3 here, the command
                        // running on unguarded).
                        let mut out = io::stdout().lock();
                        let _ = writeln!(out, "armed").and_then(|()| out.flush());
                    }
                    ["at", term, kill] => {
                        state.term_at = term.parse().ok();
                        state.kill_at = kill.parse().ok();
                    }
                    ["disarm"] => return Ok(0),
                    _ => log::say(format!("ignored {:?}", line.trim_end())),
                }
                if !input.buffer().contains(&b'\n') {
                    break;
                }
            }
        }
        let now = boottime_ns();
        if state.term_at.is_some_and(|t| t <= now) || (supervisor_gone && !state.termed) {
            state.term();
        }
        if let (Some(pgid), Some(k)) = (state.pgid, state.kill_at) {
            if k <= now {
                signal_group(pgid, libc::SIGKILL);
                log::say("killed the command before the lease could expire".into());
                return Ok(1);
            }
        }
    }
}

/// This program, for starting the helper processes: `/proc/self/exe` still names it after
/// the file was replaced or removed (an upgrade in place), when `current_exe()` does not.
pub fn self_exe() -> std::path::PathBuf {
    let proc = std::path::Path::new("/proc/self/exe");
    if proc.exists() {
        proc.to_path_buf()
    } else {
        std::env::current_exe().unwrap_or_else(|_| proc.to_path_buf())
    }
}

/// The supervisor's end of a watchdog process.
pub struct Watchdog {
    child: tokio::process::Child,
    /// Its stdin, non-blocking: a watchdog that does not read (it is stopped) must not
    /// block the supervisor, which then replaces it.
    input: OwnedFd,
    grace: Duration,
    /// [`suspended_ns`] when the last deadline was sent.
    suspended: u64,
}

/// A line the watchdog could not take: its pipe is full (it is not reading) or closed (it
/// is gone).
#[derive(Debug)]
pub enum SendError {
    /// The pipe is full: the watchdog is stopped or starved.
    Stuck,
    /// Any other failure (the watchdog exited: broken pipe).
    Io(io::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Stuck => f.write_str("the watchdog does not read its input (stopped?)"),
            SendError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Writes `line` (shorter than `PIPE_BUF`, so all of it or nothing) to the non-blocking
/// pipe `fd` without ever waiting.
fn send_line(fd: &OwnedFd, line: &str) -> Result<(), SendError> {
    debug_assert!(line.len() < 512);
    // SAFETY: writing from a valid buffer of the given length to an fd we own.
    let n = unsafe { libc::write(fd.as_raw_fd(), line.as_ptr().cast(), line.len()) };
    if n == line.len() as isize {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if n < 0 && e.kind() == io::ErrorKind::WouldBlock {
        return Err(SendError::Stuck);
    }
    Err(SendError::Io(if n < 0 { e } else { io::Error::other("short write to the watchdog") }))
}

/// The kill instant on `CLOCK_BOOTTIME` for a deadline `left` ahead (on the monotonic clock,
/// measured right after `boot_now` was read). A suspend since the last deadline was sent
/// (`suspended_now` > `suspended_before`) is taken off: the renewal behind this deadline may
/// have been sent before the host slept, and the monotonic clock did not count the sleep
/// that the server's clock did.
pub fn kill_instant(boot_now: u64, left: Duration, suspended_now: u64, suspended_before: u64) -> u64 {
    boot_now.saturating_add(left.as_nanos() as u64).saturating_sub(suspended_now.saturating_sub(suspended_before))
}

impl Watchdog {
    /// Starts a watchdog for the process group `pgid`, armed from birth with the session's
    /// validity `deadline` less `margin`, and waits (at most `within`) until it says so.
    ///
    /// The arming and the first deadline are written into the watchdog's input pipe
    /// **before** the process exists, so it finds them whenever it starts reading: a
    /// supervisor stopped right after the spawn (SIGSTOP, a suspended host) cannot leave a
    /// replacement watchdog without a deadline while the command runs. (Sent after the
    /// spawn, as they were, a supervisor stopped in between left the new watchdog waiting
    /// for its instructions and the command writing after the lock was lost: CI,
    /// 2026-12-03, `a_watchdog_is_replaced_after_the_binary_was_removed`, 3.7 s.)
    pub async fn start(
        pgid: i32,
        grace: Duration,
        within: Duration,
        deadline: std::time::Instant,
        margin: Duration,
    ) -> io::Result<Self> {
        let (read_end, input) = pipe()?;
        let suspended = suspended_ns();
        let (term, kill) = Self::kill_times(grace, deadline, margin, suspended, suspended);
        // Two short lines fit in the pipe's buffer: this write does not wait.
        write_all(&input, format!("arm {pgid} {}\nat {term} {kill}\n", grace.as_nanos()).as_bytes())?;
        let mut cmd = tokio::process::Command::new(self_exe());
        cmd.arg(SUBCOMMAND).stdin(std::process::Stdio::from(read_end)).stdout(std::process::Stdio::piped());
        // SAFETY: setsid is async-signal-safe; it detaches the watchdog from the terminal
        // and from the supervisor's process group, so no terminal signal reaches it.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        drop(cmd); // the parent's copy of the read end: the watchdog must see EOF when we die
                   // SAFETY: fcntl on an fd we own; O_NONBLOCK only changes how writes wait.
        unsafe {
            let flags = libc::fcntl(input.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(input.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let stdout = child.stdout.take().ok_or_else(|| io::Error::other("watchdog: no stdout"))?;
        let mut answer = String::new();
        let mut stdout = tokio::io::BufReader::new(stdout);
        let read = tokio::time::timeout(within, stdout.read_line(&mut answer)).await;
        if !matches!(read, Ok(Ok(_))) || answer.trim() != "armed" {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(io::Error::other(format!("watchdog did not arm within {within:?} (answer {answer:?})")));
        }
        Ok(Self { child, input, grace, suspended })
    }

    /// The SIGTERM and SIGKILL instants on `CLOCK_BOOTTIME` for a validity `deadline` less
    /// `margin`.
    fn kill_times(
        grace: Duration,
        deadline: std::time::Instant,
        margin: Duration,
        suspended_now: u64,
        suspended_before: u64,
    ) -> (u64, u64) {
        // CLOCK_BOOTTIME first: a pause between the two readings then makes the kill
        // earlier, never later.
        let boot = boottime_ns();
        let left = deadline.saturating_duration_since(std::time::Instant::now()).saturating_sub(margin);
        let kill = kill_instant(boot, left, suspended_now, suspended_before);
        // Mutation (docs/cli.md): the kill 1.5 s late, past the lease; the kill-margin test
        // must catch it.
        #[cfg(leasehold_cli_mutation_late_kill)]
        let kill = kill + 1_500_000_000;
        (kill.saturating_sub(grace.as_nanos() as u64), kill)
    }

    /// Tells the watchdog the session's validity `deadline` (a monotonic instant), less
    /// `margin`: SIGKILL then, SIGTERM `grace` before. Never waits.
    pub fn deadline(&mut self, deadline: std::time::Instant, margin: Duration) -> Result<(), SendError> {
        // A stopped watchdog reads nothing; its pipe fills only after some 2,000 deadlines
        // (hours at the default TTL), and a supervisor killed meanwhile would leave the
        // command unguarded. So it counts as stuck at once (replaced by the caller).
        if self.child.id().is_some_and(is_stopped) {
            return Err(SendError::Stuck);
        }
        let suspended = suspended_ns();
        let (term, kill) = Self::kill_times(self.grace, deadline, margin, suspended, self.suspended);
        send_line(&self.input, &format!("at {term} {kill}\n"))?;
        self.suspended = suspended;
        Ok(())
    }

    /// Completes when the watchdog process ends (it was killed, or it killed the command).
    pub async fn ended(&mut self) -> io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Ends a watchdog that no longer reads its input (its replacement is already armed).
    pub async fn abandon(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
    }

    /// Tells the watchdog the group was ended by the supervisor; it exits.
    pub async fn disarm(mut self) {
        if send_line(&self.input, "disarm\n").is_err() {
            let _ = self.child.start_kill();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
    }
}

/// Whether process `pid` is stopped (state `T`, or `t` under a tracer, in
/// `/proc/<pid>/stat`); false if it cannot be read.
fn is_stopped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // "pid (comm) state …": comm may hold spaces and parentheses.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some("T" | "t"))
}

/// A pipe whose both ends close on exec (the write end must never reach the watchdog, or
/// it would not see the supervisor die); the read end becomes the watchdog's stdin.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success; we take ownership of both at once.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes all of `bytes` to a blocking fd.
fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: writing from a valid buffer of `bytes.len()` bytes to an fd we own.
        let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// The hidden subcommand that runs a command once the supervisor opens its gate.
pub const GATE: &str = "__gate";

/// The gate process's main: waits for the supervisor to write a byte on fd `fd` (it does
/// once the watchdog guards this process's group), then becomes the command (`exec`, same
/// pid and process group). If the supervisor is gone first, the command never runs. The
/// gate's fd is closed before the `exec`; every other inherited fd reaches the command.
pub fn gate(fd: i32, cmd: &[std::ffi::OsString]) -> i32 {
    use std::os::unix::process::CommandExt;
    let mut byte = [0u8; 1];
    // SAFETY: a blocking one-byte read from the fd the supervisor passed us.
    let n = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
    // SAFETY: closing our copy of the gate; nothing else uses it.
    unsafe { libc::close(fd) };
    if n != 1 {
        let _ =
            writeln!(io::stderr(), "leasehold: the supervisor ended before the command could start; it did not run");
        return 122;
    }
    let Some((program, args)) = cmd.split_first() else { return 2 };
    let err = std::process::Command::new(program).args(args).exec();
    let code = if err.kind() == io::ErrorKind::NotFound { 127 } else { 126 };
    let _ = writeln!(io::stderr(), "leasehold: cannot run {program:?}: {err}");
    code
}

/// Whether the process group `pgid` has a living process (zombies do not count: nobody may
/// reap an orphan's in a container).
pub fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else { return signal_group(pgid, 0) };
    dir.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { return false };
        // "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else { return false };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("Z");
        let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(pgid) && state != "Z" && state != "X"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boottime_moves_forward() {
        let a = boottime_ns();
        std::thread::sleep(Duration::from_millis(2));
        assert!(boottime_ns() >= a + 1_000_000);
    }

    #[test]
    fn a_full_pipe_is_reported_not_waited_on() {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 fills two fresh fds, which we own from here.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) }, 0);
        // SAFETY: as above.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let line = "at 1000000000000 2000000000000\n";
        let mut sent = 0;
        let stuck = loop {
            match send_line(&write, line) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 1_000_000, "the pipe never filled");
        };
        assert!(matches!(stuck, SendError::Stuck), "{stuck}");
        assert!(sent * line.len() >= 4096, "only {sent} lines fit");
        // Whole lines only: what is in the pipe is a multiple of the line.
        let mut queued = 0i32;
        // SAFETY: FIONREAD writes an int.
        unsafe { libc::ioctl(read.as_raw_fd(), libc::FIONREAD, &mut queued) };
        assert_eq!(queued as usize, sent * line.len());
        drop(read);
        assert!(matches!(send_line(&write, line), Err(SendError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe));
    }

    #[test]
    fn a_suspend_since_the_last_deadline_is_taken_off() {
        let s = Duration::from_secs(1);
        assert_eq!(kill_instant(100_000_000_000, s, 7, 7), 101_000_000_000);
        // Slept 3 s since the last deadline went out: that renewal may predate the sleep.
        assert_eq!(kill_instant(100_000_000_000, s, 3_000_000_007, 7), 98_000_000_000);
        assert_eq!(kill_instant(1, s, u64::MAX, 0), 0);
    }

    #[test]
    fn the_next_due_instant() {
        let mut s = State { pgid: Some(12345), grace_ns: 5, term_at: Some(10), kill_at: Some(20), termed: false };
        assert_eq!(s.next(), Some(10));
        s.termed = true;
        assert_eq!(s.next(), Some(20));
        s.kill_at = None;
        assert_eq!(s.next(), None);
    }
}
