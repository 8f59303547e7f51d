//! `leasehold`: run a command under a distributed lock, and kill it before the lock's
//! lease can expire — also when `leasehold` itself is stopped or killed (a watchdog
//! process does it then).
//!
//! Exit codes: the command's own status when it ran (128 + N if a signal N ended it);
//! 1 `release` found nothing to release; 2 bad usage; 122 the lock was lost and the command was killed; 123 `--try` and the lock
//! is taken; 124 `--timeout` ran out; 125 leasehold itself failed (connect, store, auth);
//! 126 the command cannot be run; 127 the command was not found; 130 (143, 129) interrupted
//! by SIGINT (SIGTERM, SIGHUP) while waiting.

/// `eprintln!` that never panics: a stderr that fails (a closed pipe, a terminal that hung
/// up) must not stop leasehold in the middle of ending or releasing something.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// A line to standard output: its `io::Result`, not a panic (`println!` panics when stdout
/// is a pipe whose reader went: `leasehold lock NAME | head -1`, `elect --observe | head`,
/// and a `release` piped into `grep -q` then left its later keys unrevoked, or a holder
/// exited 101 with its lock held until the TTL; until 2026-12-05).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

mod duration;
mod hold;
mod show;
mod supervise;
mod watchdog;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use duration::parse_duration;
use hold::{interruptible, run_guarded, taken, Guard, How, Signals};
use leasehold::{Client, Election, Error, EtcdConfig, Mutex, RwLock, Semaphore, Strategy, TlsConfig};
use std::process::ExitCode;
use std::time::Duration;

/// `release` found nothing to release.
const EXIT_NOTHING: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_LOST: u8 = 122;
const EXIT_BUSY: u8 = 123;
const EXIT_TIMEOUT: u8 = 124;
const EXIT_FAILED: u8 = 125;
const EXIT_CANNOT_RUN: u8 = 126;
const EXIT_NOT_FOUND: u8 = 127;

const AFTER_HELP: &str = "\
Examples:
  leasehold lock nightly-report -- ./make-report.sh
  leasehold lock nightly-report                 # hold until Ctrl-C; prints the key and token
  leasehold rwlock --read catalog -- ./export.sh
  leasehold semaphore --permits 3 encoder -- ffmpeg -i in.mp4 out.webm
  leasehold elect scheduler --value \"$(hostname)\" -- ./run-scheduler
  leasehold elect scheduler --observe --json
  leasehold leader scheduler
  leasehold status nightly-report
  leasehold release nightly-report --lease 694d7a1b2c3d4e5f   # an operator frees a stuck holder
  leasehold --endpoints 10.0.0.1:2379,10.0.0.2:2379 lock --timeout 1m30s db-migrate -- ./migrate
  leasehold lock --try cron -- ./job.sh || echo \"another node runs it\"
  LEASEHOLD_ENDPOINTS=memory:// leasehold lock demo -- sh -c 'echo token=$LEASEHOLD_FENCING_TOKEN'

The command gets LEASEHOLD_FENCING_TOKEN, LEASEHOLD_KEY, LEASEHOLD_NAME and LEASEHOLD_LEASE.
If lease renewals fail, the command gets SIGTERM, then SIGKILL, before the lease can expire,
also if leasehold itself is stopped or killed (a watchdog process sees to it).

Exit codes: the command's status; 1 nothing to release (release); 2 usage; 122 lock lost
or revoked (command killed); 123 busy (--try); 124 timed out (--timeout); 125 leasehold
failed; 126 command cannot run; 127 command not found; 130 (143, 129) interrupted (SIGINT,
SIGTERM, SIGHUP) while waiting.";

#[derive(Parser, Debug)]
#[command(
    name = "leasehold",
    version,
    about = "Run a command under a distributed lock, a semaphore permit or leadership",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(ClapArgs, Debug)]
struct Conn {
    /// Store endpoints: host:port[,host:port…] or etcd://host:port[,…] (etcd), or memory:// (demos).
    #[arg(long, global = true, env = "LEASEHOLD_ENDPOINTS", default_value = "etcd://127.0.0.1:2379")]
    endpoints: String,
    /// Give up connecting after this long (e.g. 5s, 500ms, 1m30s).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// CA certificate (PEM) to verify etcd's TLS certificate.
    #[arg(long, global = true)]
    cacert: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for TLS client authentication (with --key).
    #[arg(long, global = true, requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// Client key (PEM) for TLS client authentication (with --cert).
    #[arg(long, global = true, requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// etcd user, as NAME or NAME:PASSWORD.
    #[arg(long, global = true, env = "LEASEHOLD_USER")]
    user: Option<String>,
    /// etcd password (if not given in --user).
    #[arg(long, global = true, env = "LEASEHOLD_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Key namespace prefix (e.g. "app1/").
    #[arg(long, global = true, default_value = "")]
    namespace: String,
}

#[derive(ClapArgs, Debug)]
struct Hold {
    /// Lease TTL (1s ..= 1h).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    ttl: Duration,
    /// Stop waiting after this long (exit 124).
    #[arg(long, value_parser = parse_duration, conflicts_with = "try_")]
    timeout: Option<Duration>,
    /// Do not wait at all (exit 123 if taken).
    #[arg(long = "try", id = "try_")]
    try_: bool,
    /// Time between SIGTERM and SIGKILL when the lease is about to expire (capped at TTL/4).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    grace: Duration,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum StrategyArg {
    Pessimistic,
    Optimistic,
    /// Optimistic until it meets a holder, then queued (semaphores queue).
    Adaptive,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Acquire a lock, run CMD, release when it exits. Without CMD, print the key and the
    /// fencing token and hold until SIGINT, SIGTERM or SIGHUP.
    Lock {
        /// Lock name (A-Z a-z 0-9 . _ - : @ + =).
        name: String,
        #[arg(long, value_enum, default_value = "pessimistic")]
        strategy: StrategyArg,
        /// After a holder that did not release cleanly (killed, or paused past its TTL),
        /// wait this long before running CMD (Chubby's lock-delay; off by default).
        #[arg(long, value_parser = parse_duration)]
        lock_delay: Option<Duration>,
        #[command(flatten)]
        hold: Hold,
        /// The command and its arguments (after --); none: hold until interrupted.
        #[arg(last = true)]
        cmd: Vec<std::ffi::OsString>,
    },
    /// Take a read or a write lock, run CMD, release when it exits (fair: readers do not
    /// starve a writer).
    Rwlock {
        /// Read-write lock name.
        name: String,
        /// Share the lock with other readers.
        #[arg(long, conflicts_with = "write", required_unless_present = "write")]
        read: bool,
        /// Take the lock alone.
        #[arg(long)]
        write: bool,
        #[arg(long, value_enum, default_value = "pessimistic")]
        strategy: StrategyArg,
        #[command(flatten)]
        hold: Hold,
        /// The command and its arguments (after --); none: hold until interrupted.
        #[arg(last = true)]
        cmd: Vec<std::ffi::OsString>,
    },
    /// Take one of N permits, run CMD, release when it exits.
    Semaphore {
        /// Semaphore name.
        name: String,
        /// Number of permits (must match the count stored with the semaphore).
        #[arg(long)]
        permits: u32,
        /// How many of the permits this command takes at once (1 ..= the count).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        weight: u32,
        #[arg(long, value_enum, default_value = "pessimistic")]
        strategy: StrategyArg,
        #[command(flatten)]
        hold: Hold,
        /// The command and its arguments (after --).
        #[arg(last = true, required = true)]
        cmd: Vec<std::ffi::OsString>,
    },
    /// Campaign, run CMD while leading (a singleton job), resign when it exits.
    /// With --observe, print every leader change instead (one line each).
    Elect {
        /// Election name.
        name: String,
        /// The value this candidate proclaims (default: pid-<pid>).
        #[arg(long)]
        value: Option<String>,
        /// Print leader changes, including "no leader", until interrupted.
        #[arg(long, conflicts_with_all = ["cmd", "value"])]
        observe: bool,
        /// With --observe: one JSON object per line.
        #[arg(long, requires = "observe")]
        json: bool,
        /// After a leader that did not release cleanly (killed, or paused past its TTL),
        /// the next leader waits this long before running CMD (Chubby's lock-delay; off by default).
        #[arg(long, value_parser = parse_duration, conflicts_with = "observe")]
        lock_delay: Option<Duration>,
        /// How to campaign: queued (pessimistic, the default), by compare-and-swap
        /// (optimistic: no key while another leads), or adaptive.
        #[arg(long, value_enum, default_value = "pessimistic", conflicts_with = "observe")]
        strategy: StrategyArg,
        #[command(flatten)]
        hold: Hold,
        /// The command and its arguments (after --).
        #[arg(last = true, required_unless_present = "observe")]
        cmd: Vec<std::ffi::OsString>,
    },
    /// Print who holds a name and who waits for it, oldest first (any recipe's name,
    /// and `etcdctl lock`'s).
    Status {
        /// Lock, semaphore, election or read-write lock name.
        name: String,
        /// For a semaphore: its permit count (the first N entries hold). Read from the
        /// semaphore's stored count when not given.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        permits: Option<u32>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Release a stuck holder's key on an operator's behalf (revocation): delete the
    /// key(s) of lease ID under NAME, each only if it still has that lease and the token it
    /// had when read, so a newer holder is never removed. Prints what it released; exits 1
    /// if nothing matched. The holder sees its lock lost (a supervised command is killed).
    Release {
        /// Lock, semaphore, election or read-write lock name.
        name: String,
        /// The holder's lease id, in hex as `status` prints it (the holder's LEASEHOLD_LEASE).
        #[arg(long, value_parser = parse_lease)]
        lease: i64,
        /// Only the acquisition with this fencing token (its key's create revision, as
        /// `status` prints it): nothing is released if that acquisition is gone.
        #[arg(long)]
        token: Option<u64>,
    },
    /// Print the current leader of an election and its fencing token.
    Leader {
        /// Election name.
        name: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn strategy(s: StrategyArg) -> Strategy {
    match s {
        StrategyArg::Pessimistic => Strategy::Pessimistic,
        StrategyArg::Optimistic => Strategy::Optimistic,
        StrategyArg::Adaptive => Strategy::Adaptive,
    }
}

impl Hold {
    fn how(&self) -> How {
        match (self.try_, self.timeout) {
            (true, _) => How::Try,
            (false, Some(t)) => How::Within(t),
            (false, None) => How::Forever,
        }
    }
}

/// A failure with its exit code.
struct Fail(u8, String);

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        let code = match e {
            Error::Timeout { .. } => EXIT_TIMEOUT,
            // Lost, or revoked (`release`): a holder's, or a waiter's before it held.
            Error::SessionLost { .. } | Error::NotHeld { .. } => EXIT_LOST,
            Error::InvalidName { .. }
            | Error::InvalidArgument { .. }
            | Error::TtlOutOfRange { .. }
            | Error::PermitMismatch { .. } => EXIT_USAGE,
            _ => EXIT_FAILED,
        };
        Fail(code, e.to_string())
    }
}

/// The etcd endpoints in `--endpoints`: `etcd://a,b`, or as etcdctl takes them (`host:port`,
/// `http://host:port`, comma-separated); `None` for another scheme (`memory://`, `tikv://`).
fn etcd_endpoints(endpoints: &str) -> Option<&str> {
    if let Some(rest) = endpoints.strip_prefix("etcd://") {
        return Some(rest);
    }
    let first = endpoints.split(',').next().unwrap_or("").trim();
    let plain = !first.contains("://") && !first.is_empty();
    (plain || first.starts_with("http://") || first.starts_with("https://")).then_some(endpoints)
}

async fn connect(conn: &Conn) -> Result<Client, Fail> {
    let client = if let Some(rest) = etcd_endpoints(&conn.endpoints) {
        let mut config = EtcdConfig::new(rest.split(',').map(str::trim).filter(|s| !s.is_empty()))
            .connect_timeout(conn.connect_timeout);
        if let Some(user) = &conn.user {
            let (name, password) = match user.split_once(':') {
                Some((n, p)) => (n.to_owned(), p.to_owned()),
                None => (user.clone(), conn.password.clone().unwrap_or_default()),
            };
            config = config.user(name, password);
        }
        if conn.cacert.is_some() || conn.cert.is_some() {
            let read = |p: &std::path::PathBuf| {
                std::fs::read(p).map_err(|e| Fail(EXIT_USAGE, format!("cannot read {}: {e}", p.display())))
            };
            let mut tls = TlsConfig::default();
            if let Some(ca) = &conn.cacert {
                tls.ca_pem = Some(read(ca)?);
            }
            if let (Some(cert), Some(key)) = (&conn.cert, &conn.key) {
                tls.identity_pem = Some((read(cert)?, read(key)?));
            }
            config = config.tls(tls);
        }
        Client::etcd(config).await?
    } else {
        Client::connect(&conn.endpoints).await?
    };
    Ok(if conn.namespace.is_empty() { client } else { client.with_namespace(conn.namespace.clone()) })
}

async fn run(cli: Cli) -> Result<u8, Fail> {
    let client = connect(&cli.conn).await?;
    match cli.command {
        Cmd::Lock { name, strategy: st, lock_delay, hold, cmd } => {
            let session = client.session_builder().ttl(hold.ttl).open().await?;
            let mut signals = Signals::new()?;
            let mutex = Mutex::new(&session, &name)?
                .with_strategy(strategy(st))
                .with_lock_delay(lock_delay.unwrap_or(Duration::ZERO));
            let guard = Guard::Mutex(match hold.how() {
                How::Try => taken(interruptible(&session, &mut signals, mutex.try_lock()).await?, "lock", &name)?,
                How::Within(t) => interruptible(&session, &mut signals, mutex.lock_timeout(t)).await?,
                How::Forever => interruptible(&session, &mut signals, mutex.lock()).await?,
            });
            run_guarded(&name, session, guard, &cmd, hold.grace, &mut signals).await
        }
        Cmd::Rwlock { name, read, strategy: st, hold, cmd, .. } => {
            let session = client.session_builder().ttl(hold.ttl).open().await?;
            let mut signals = Signals::new()?;
            let lock = RwLock::new(&session, &name)?.with_strategy(strategy(st));
            let guard = match (read, hold.how()) {
                (true, How::Try) => Guard::Read(taken(
                    interruptible(&session, &mut signals, lock.try_read()).await?,
                    "read lock",
                    &name,
                )?),
                (true, How::Within(t)) => {
                    Guard::Read(interruptible(&session, &mut signals, lock.read_timeout(t)).await?)
                }
                (true, How::Forever) => Guard::Read(interruptible(&session, &mut signals, lock.read()).await?),
                (false, How::Try) => Guard::Write(taken(
                    interruptible(&session, &mut signals, lock.try_write()).await?,
                    "write lock",
                    &name,
                )?),
                (false, How::Within(t)) => {
                    Guard::Write(interruptible(&session, &mut signals, lock.write_timeout(t)).await?)
                }
                (false, How::Forever) => Guard::Write(interruptible(&session, &mut signals, lock.write()).await?),
            };
            run_guarded(&name, session, guard, &cmd, hold.grace, &mut signals).await
        }
        Cmd::Semaphore { name, permits, weight, strategy: st, hold, cmd } => {
            let session = client.session_builder().ttl(hold.ttl).open().await?;
            let mut signals = Signals::new()?;
            let sem = Semaphore::new(&session, &name, permits)?.with_strategy(strategy(st));
            let guard = Guard::Permit(match hold.how() {
                How::Try => taken(
                    interruptible(&session, &mut signals, sem.try_acquire_many(weight)).await?,
                    "semaphore",
                    &name,
                )?,
                How::Within(t) => interruptible(&session, &mut signals, sem.acquire_many_timeout(weight, t)).await?,
                How::Forever => interruptible(&session, &mut signals, sem.acquire_many(weight)).await?,
            });
            run_guarded(&name, session, guard, &cmd, hold.grace, &mut signals).await
        }
        Cmd::Elect { name, observe: true, json, .. } => {
            // A read: no session (no lease) to follow the election.
            let mut observer = Election::observer(&client, &name)?;
            loop {
                tokio::select! {
                    change = observer.changed() => {
                        // Nobody reads any more (`| head -1`): done.
                        if out!("{}", show::describe(&change?, json)).is_err() {
                            return Ok(0);
                        }
                    }
                    _ = tokio::signal::ctrl_c() => return Ok(0),
                }
            }
        }
        Cmd::Elect { name, value, lock_delay, strategy: st, hold, cmd, .. } => {
            let session = client.session_builder().ttl(hold.ttl).open().await?;
            let mut signals = Signals::new()?;
            let election = Election::new(&session, &name)?
                .with_lock_delay(lock_delay.unwrap_or(Duration::ZERO))
                .with_strategy(strategy(st));
            let value = value.unwrap_or_else(|| format!("pid-{}", std::process::id()));
            let guard = Guard::Leader(match hold.how() {
                How::Try => taken(
                    interruptible(&session, &mut signals, election.try_campaign(value)).await?,
                    "election",
                    &name,
                )?,
                How::Within(t) => interruptible(&session, &mut signals, election.campaign_timeout(value, t)).await?,
                How::Forever => interruptible(&session, &mut signals, election.campaign(value)).await?,
            });
            run_guarded(&name, session, guard, &cmd, hold.grace, &mut signals).await
        }
        Cmd::Status { name, permits, json } => {
            let prefix = client.prefix_of(&name)?;
            let (entries, _) = client.backend().range_prefix(&prefix, 0).await?;
            // A semaphore stores its count at `<namespace><name>`.
            let permits = match permits {
                Some(n) => Some(n),
                None => show::stored_permits(client.backend().get(prefix.trim_end_matches('/')).await?.as_ref()),
            };
            let holding = show::holding(&entries, &prefix, permits);
            let _ = out!("{}", show::status(&name, &entries, holding, permits, json));
            Ok(0)
        }
        Cmd::Release { name, lease, token } => release(&client, &name, lease, token).await,
        Cmd::Leader { name, json } => {
            // A read: no session, so no lease to open and close.
            let leader = client.leader(&name).await?;
            let _ = out!("{}", show::describe(&leader, json));
            Ok(0)
        }
    }
}

/// A lease id as `status` prints it and LEASEHOLD_LEASE carries it: hex, `0x` optional.
fn parse_lease(text: &str) -> Result<i64, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    match i64::from_str_radix(digits, 16) {
        Ok(id) if id > 0 && !digits.starts_with(['+', '-']) => Ok(id),
        _ => Err(format!("{text:?} is not a lease id (hex, as `leasehold status` prints it)")),
    }
}

/// `leasehold release`: revokes the keys of `lease` under `name` (only the one with `token`
/// if given), each checked by lease and create revision; prints one line per key released.
async fn release(client: &Client, name: &str, lease: i64, token: Option<u64>) -> Result<u8, Fail> {
    let entries = client.entries(name).await?;
    let mut released = 0;
    for holder in entries.iter().filter(|h| h.lease == lease && token.is_none_or(|t| h.token == t)) {
        if client.revoke(name, holder).await? {
            // Every matching key is revoked, read or not.
            let _ = out!("released token={} lease={:x} key={}", holder.token, holder.lease, holder.key);
            released += 1;
        }
    }
    if released == 0 {
        let which = token.map_or(String::new(), |t| format!(" with token {t}"));
        return Err(Fail(
            EXIT_NOTHING,
            format!("release: nothing to release: no key of lease {lease:x}{which} under {name:?}"),
        ));
    }
    Ok(0)
}

fn main() -> ExitCode {
    // The two helper processes leasehold starts itself (see watchdog.rs); not for users.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some(watchdog::SUBCOMMAND) => return ExitCode::from(watchdog::run() as u8),
        Some(watchdog::GATE) => {
            let fd = args.get(2).and_then(|f| f.to_str()?.parse().ok()).unwrap_or(-1);
            let cmd = args.get(4..).unwrap_or_default();
            return ExitCode::from(watchdog::gate(fd, cmd) as u8);
        }
        _ => {}
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: the message and any details clap lists under it, without usage.
            let text = e.to_string();
            let parts: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            let line = parts.join(" ");
            say!("leasehold: {} (see --help)", line.trim_start_matches("error: "));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            say!("leasehold: cannot start runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(Fail(code, msg)) => {
            say!("leasehold: {msg}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::etcd_endpoints;

    #[test]
    fn endpoints_as_etcdctl_takes_them() {
        assert_eq!(etcd_endpoints("etcd://a:1,b:2"), Some("a:1,b:2"));
        assert_eq!(etcd_endpoints("127.0.0.1:2379"), Some("127.0.0.1:2379"));
        assert_eq!(etcd_endpoints("10.0.0.1:2379,10.0.0.2:2379"), Some("10.0.0.1:2379,10.0.0.2:2379"));
        assert_eq!(etcd_endpoints("http://h:2379"), Some("http://h:2379"));
        assert_eq!(etcd_endpoints("memory://"), None);
        assert_eq!(etcd_endpoints("tikv://pd:2379"), None);
        assert_eq!(etcd_endpoints(""), None);
    }
}
