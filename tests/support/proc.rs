//! Processes as the tests see them: signals sent with `kill(2)`, states, parents and
//! arguments read from `/proc`.

use std::time::{Duration, Instant};

/// Sends `sig` to `pid`; true if it was delivered.
pub fn signal(pid: u32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) on a pid; no memory is involved.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// The fields of `/proc/<pid>/stat` after the command name (state first), if it exists.
fn stat(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The process state (`R`, `S`, `T` stopped, `Z` zombie, …), `None` once it is gone.
pub fn state(pid: u32) -> Option<char> {
    stat(pid)?.first()?.chars().next()
}

/// Whether `pid` is a living process (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// Every process whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| stat(p).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(pid))
        .collect()
}

/// The arguments `pid` was started with.
pub fn args(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Polls `done` every 5 ms until it holds (true) or `limit` passes (false).
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}
