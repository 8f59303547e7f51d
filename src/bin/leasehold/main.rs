//! `leasehold`: run a command under a distributed lock, and kill it before the lock's
//! lease can expire.
//!
//! Exit codes: the command's own status when it ran (128 + N if a signal N ended it);
//! 2 bad usage; 122 the lock was lost and the command was killed; 123 `--try` and the lock
//! is taken; 124 `--timeout` ran out; 125 leasehold itself failed (connect, store, auth);
//! 126 the command cannot be run; 127 the command was not found.

mod supervise;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use leasehold::{
    Client, Election, Error, EtcdConfig, LeaderInfo, Leadership, Mutex, MutexGuard, Permit, Semaphore, Session,
    Strategy, TlsConfig,
};
use std::process::ExitCode;
use std::time::Duration;
use supervise::{Held, Outcome};

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
  leasehold semaphore --permits 3 encoder -- ffmpeg -i in.mp4 out.webm
  leasehold elect scheduler --value \"$(hostname)\" -- ./run-scheduler
  leasehold elect scheduler --observe --json
  leasehold leader scheduler
  leasehold status nightly-report
  leasehold --endpoints etcd://10.0.0.1:2379,10.0.0.2:2379 lock --timeout 30s db-migrate -- ./migrate
  leasehold lock --try cron -- ./job.sh || echo \"another node runs it\"
  LEASEHOLD_ENDPOINTS=memory:// leasehold lock demo -- sh -c 'echo token=$LEASEHOLD_FENCING_TOKEN'

The command gets LEASEHOLD_FENCING_TOKEN, LEASEHOLD_KEY, LEASEHOLD_NAME and LEASEHOLD_LEASE.
If lease renewals fail, the command gets SIGTERM, then SIGKILL, before the lease can expire.

Exit codes: the command's status; 2 usage; 122 lock lost (command killed); 123 busy (--try);
124 timed out (--timeout); 125 leasehold failed; 126 command cannot run; 127 command not found.";

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
    /// Store URL list: etcd://host:port[,host:port…] or memory:// (demos).
    #[arg(long, global = true, env = "LEASEHOLD_ENDPOINTS", default_value = "etcd://127.0.0.1:2379")]
    endpoints: String,
    /// Give up connecting after this long (e.g. 5s, 500ms).
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
    /// Optimistic until conflicts rise, then queued (semaphores queue).
    Adaptive,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Acquire a lock, run CMD, release when it exits.
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
        /// The command and its arguments (after --).
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Take one of N permits, run CMD, release when it exits.
    Semaphore {
        /// Semaphore name.
        name: String,
        /// Number of permits (must match the count stored with the semaphore).
        #[arg(long)]
        permits: u32,
        #[arg(long, value_enum, default_value = "pessimistic")]
        strategy: StrategyArg,
        #[command(flatten)]
        hold: Hold,
        /// The command and its arguments (after --).
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
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
        #[command(flatten)]
        hold: Hold,
        /// The command and its arguments (after --).
        #[arg(last = true, required_unless_present = "observe")]
        cmd: Vec<String>,
    },
    /// Print who holds a name and who waits for it, oldest first (any recipe's name,
    /// and `etcdctl lock`'s).
    Status {
        /// Lock, semaphore, election or read-write lock name.
        name: String,
        /// For a semaphore: its permit count (the first N entries hold).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        permits: Option<u32>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
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

/// Whatever the command runs under.
enum Guard {
    Mutex(MutexGuard),
    Permit(Permit),
    Leader(Leadership),
}

impl Guard {
    fn key(&self) -> &str {
        match self {
            Guard::Mutex(g) => g.key(),
            Guard::Permit(p) => p.key(),
            Guard::Leader(l) => l.key(),
        }
    }

    fn token(&self) -> u64 {
        match self {
            Guard::Mutex(g) => g.fencing_token(),
            Guard::Permit(p) => p.fencing_token(),
            Guard::Leader(l) => l.fencing_token(),
        }
    }

    async fn release(self) -> leasehold::Result<()> {
        match self {
            Guard::Mutex(g) => g.unlock().await,
            Guard::Permit(p) => p.release().await,
            Guard::Leader(l) => l.resign().await,
        }
    }
}

fn strategy(s: StrategyArg) -> Strategy {
    match s {
        StrategyArg::Pessimistic => Strategy::Pessimistic,
        StrategyArg::Optimistic => Strategy::Optimistic,
        StrategyArg::Adaptive => Strategy::Adaptive,
    }
}

/// How to wait, from `--try` and `--timeout`.
enum How {
    Try,
    Within(Duration),
    Forever,
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

/// Waits for `fut` unless Ctrl-C comes first (exit 130).
async fn interruptible<T>(fut: impl std::future::Future<Output = leasehold::Result<T>>) -> Result<T, Fail> {
    tokio::select! {
        r = fut => Ok(r?),
        _ = tokio::signal::ctrl_c() => Err(Fail(130, "interrupted while waiting".into())),
    }
}

/// A `--try` that found the name taken: exit 123.
fn taken<T>(got: Option<T>, what: &str, name: &str) -> Result<T, Fail> {
    got.ok_or_else(|| Fail(EXIT_BUSY, format!("{what} {name:?} is taken")))
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn describe(leader: &Option<LeaderInfo>, json: bool) -> String {
    match (leader, json) {
        (None, false) => "no leader".into(),
        (None, true) => r#"{"leader":null}"#.into(),
        (Some(l), false) => format!("leader {} token={} key={}", String::from_utf8_lossy(&l.value), l.token, l.key),
        (Some(l), true) => format!(
            r#"{{"leader":{},"token":{},"key":{},"lease":"{:x}"}}"#,
            json_str(&String::from_utf8_lossy(&l.value)),
            l.token,
            json_str(&l.key),
            l.lease
        ),
    }
}

/// How many of a name's entries (oldest first) hold it: the first `permits` for a
/// semaphore; for a read-write lock (keys under `read/` and `write/`) the readers at the
/// head, or the one writer there; otherwise the first (a lock's holder, an election's
/// leader).
fn holding(entries: &[leasehold::backend::KeyValue], prefix: &str, permits: Option<u32>) -> usize {
    fn rest<'k>(kv: &'k leasehold::backend::KeyValue, prefix: &str) -> &'k str {
        &kv.key[prefix.len()..]
    }
    let rest = |kv| rest(kv, prefix);
    if let Some(n) = permits {
        return entries.len().min(n as usize);
    }
    if entries.iter().any(|kv| rest(kv).starts_with("read/") || rest(kv).starts_with("write/")) {
        return match entries.first() {
            Some(kv) if rest(kv).starts_with("write/") => 1,
            _ => entries.iter().take_while(|kv| rest(kv).starts_with("read/")).count(),
        };
    }
    entries.len().min(1)
}

/// `leasehold status`: a summary line and one line per entry, or one JSON object.
fn status(name: &str, entries: &[leasehold::backend::KeyValue], holding: usize, json: bool) -> String {
    let (held, waiting) = entries.split_at(holding);
    if json {
        let list = |kvs: &[leasehold::backend::KeyValue]| {
            let items: Vec<String> = kvs
                .iter()
                .map(|kv| {
                    format!(
                        r#"{{"token":{},"lease":"{:x}","key":{}}}"#,
                        kv.create_revision,
                        kv.lease,
                        json_str(&kv.key)
                    )
                })
                .collect();
            format!("[{}]", items.join(","))
        };
        return format!(r#"{{"name":{},"holding":{},"waiting":{}}}"#, json_str(name), list(held), list(waiting));
    }
    let mut out = if entries.is_empty() {
        format!("{name}: free")
    } else {
        format!("{name}: {} holding, {} waiting", held.len(), waiting.len())
    };
    for (role, kvs) in [("holding", held), ("waiting", waiting)] {
        for kv in kvs {
            out.push_str(&format!("\n{role} token={} lease={:x} key={}", kv.create_revision, kv.lease, kv.key));
        }
    }
    out
}

/// "500ms", "10s", "2m", "1h", or plain seconds ("1.5").
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?} (use e.g. 500ms, 10s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {s:?} (from 0 to about 584 years)"))
}

/// A failure with its exit code.
struct Fail(u8, String);

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        let code = match e {
            Error::Timeout { .. } => EXIT_TIMEOUT,
            Error::SessionLost { .. } => EXIT_LOST,
            Error::InvalidName { .. } | Error::InvalidArgument { .. } | Error::TtlOutOfRange { .. } => EXIT_USAGE,
            _ => EXIT_FAILED,
        };
        Fail(code, e.to_string())
    }
}

async fn connect(conn: &Conn) -> Result<Client, Fail> {
    let client = if let Some(rest) = conn.endpoints.strip_prefix("etcd://") {
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

/// Runs `cmd` under `guard`, then releases it (unless it was lost) and closes the session.
async fn run_guarded(name: &str, session: Session, guard: Guard, cmd: &[String], grace: Duration) -> Result<u8, Fail> {
    let held = Held { name, key: guard.key(), token: guard.token(), session: &session };
    let result = run_held(cmd, held, grace).await;
    finish(session.clone(), guard.release(), &result).await;
    result
}

async fn run_held(cmd: &[String], held: Held<'_>, grace: Duration) -> Result<u8, Fail> {
    let child = supervise::spawn(cmd, &held).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound { EXIT_NOT_FOUND } else { EXIT_CANNOT_RUN };
        Fail(code, format!("cannot run {:?}: {e}", cmd[0]))
    })?;
    match supervise::supervise(child, &held, grace).await {
        Ok(Outcome::Exited(code)) => Ok(code.clamp(0, 255) as u8),
        Ok(Outcome::Lost) => Err(Fail(EXIT_LOST, format!("lock {:?} lost; the command was killed", held.name))),
        Err(e) => Err(Fail(EXIT_FAILED, format!("supervising the command: {e}"))),
    }
}

/// Releases what was held and closes the session, unless the lock was lost (then the
/// lease is gone or going, and the store may be unreachable): bounded either way.
async fn finish(
    session: leasehold::Session,
    release: impl std::future::Future<Output = leasehold::Result<()>>,
    result: &Result<u8, Fail>,
) {
    if matches!(result, Err(Fail(EXIT_LOST, _))) {
        return;
    }
    let bound = Duration::from_secs(5);
    if let Err(e) = tokio::time::timeout(bound, async {
        release.await?;
        session.close().await
    })
    .await
    .unwrap_or(Ok(()))
    {
        eprintln!("leasehold: warning: release failed ({e}); the lease expires on its own");
    }
}

async fn run(cli: Cli) -> Result<u8, Fail> {
    let client = connect(&cli.conn).await?;
    match cli.command {
        Cmd::Lock { name, strategy: st, lock_delay, hold, cmd } => {
            let session = client.session_builder().ttl(hold.ttl).open().await?;
            let mutex = Mutex::new(&session, &name)?
                .with_strategy(strategy(st))
                .with_lock_delay(lock_delay.unwrap_or(Duration::ZERO));
            let guard = Guard::Mutex(match hold.how() {
                How::Try => taken(mutex.try_lock().await?, "lock", &name)?,
                How::Within(t) => interruptible(mutex.lock_timeout(t)).await?,
                How::Forever => interruptible(mutex.lock()).await?,
            });
            run_guarded(&name, session, guard, &cmd, hold.grace).await
        }
        Cmd::Semaphore { name, permits, strategy: st, hold, cmd } => {
            let session = client.session_builder().ttl(hold.ttl).open().await?;
            let sem = Semaphore::new(&session, &name, permits)?.with_strategy(strategy(st));
            let guard = Guard::Permit(match hold.how() {
                How::Try => taken(sem.try_acquire().await?, "semaphore", &name)?,
                How::Within(t) => interruptible(sem.acquire_timeout(t)).await?,
                How::Forever => interruptible(sem.acquire()).await?,
            });
            run_guarded(&name, session, guard, &cmd, hold.grace).await
        }
        Cmd::Elect { name, observe: true, json, .. } => {
            let session = client.session().await?;
            let mut observer = Election::new(&session, &name)?.observe();
            loop {
                tokio::select! {
                    change = observer.changed() => println!("{}", describe(&change?, json)),
                    _ = tokio::signal::ctrl_c() => return Ok(0),
                }
            }
        }
        Cmd::Elect { name, value, lock_delay, hold, cmd, .. } => {
            let session = client.session_builder().ttl(hold.ttl).open().await?;
            let election = Election::new(&session, &name)?.with_lock_delay(lock_delay.unwrap_or(Duration::ZERO));
            let value = value.unwrap_or_else(|| format!("pid-{}", std::process::id()));
            let guard = Guard::Leader(match hold.how() {
                How::Try => taken(election.try_campaign(value).await?, "election", &name)?,
                How::Within(t) => interruptible(election.campaign_timeout(value, t)).await?,
                How::Forever => interruptible(election.campaign(value)).await?,
            });
            run_guarded(&name, session, guard, &cmd, hold.grace).await
        }
        Cmd::Status { name, permits, json } => {
            let prefix = client.prefix_of(&name)?;
            let (entries, _) = client.backend().range_prefix(&prefix, 0).await?;
            let holding = holding(&entries, &prefix, permits);
            println!("{}", status(&name, &entries, holding, json));
            Ok(0)
        }
        Cmd::Leader { name, json } => {
            let session = client.session().await?;
            let leader = Election::new(&session, &name)?.leader().await?;
            println!("{}", describe(&leader, json));
            let _ = session.close().await;
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
            eprintln!("leasehold: {} (see --help)", line.trim_start_matches("error: "));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leasehold: cannot start runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(Fail(code, msg)) => {
            eprintln!("leasehold: {msg}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold::backend::KeyValue;

    fn entries(suffixes: &[&str]) -> Vec<KeyValue> {
        suffixes
            .iter()
            .enumerate()
            .map(|(i, s)| KeyValue {
                key: format!("ns/x/{s}"),
                value: Vec::new(),
                create_revision: 10 + i as i64,
                mod_revision: 10 + i as i64,
                lease: 0x1f,
            })
            .collect()
    }

    #[test]
    fn holding_follows_each_recipes_rule() {
        let p = "ns/x/";
        assert_eq!(holding(&entries(&[]), p, None), 0);
        assert_eq!(holding(&entries(&["a", "b", "c"]), p, None), 1, "a lock or an election: the first");
        assert_eq!(holding(&entries(&["a", "b", "c"]), p, Some(2)), 2, "a semaphore: the first N");
        assert_eq!(holding(&entries(&["a"]), p, Some(3)), 1);
        let rw = entries(&["read/a-0", "read/b-0", "write/c-0", "read/d-0"]);
        assert_eq!(holding(&rw, p, None), 2, "readers at the head share; a reader behind a writer waits");
        assert_eq!(holding(&entries(&["write/a-0", "read/b-0"]), p, None), 1, "a writer at the head holds alone");
        let text = status("x", &rw, 2, false);
        assert_eq!(text.lines().next(), Some("x: 2 holding, 2 waiting"));
        assert_eq!(text.lines().nth(3), Some("waiting token=12 lease=1f key=ns/x/write/c-0"));
    }
}
