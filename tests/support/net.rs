//! Network hosts on one machine, for partition tests: each host is a network namespace with
//! its own address on a private bridge, which lives in a namespace of its own (the
//! "switch"); the test process is attached to the switch too, so it reaches every host.
//! Only addresses this harness made are used (a `/24` of `10.231.0.0/16` per [`Net`]).
//!
//! Faults: [`Net::cut`] takes a host off the switch (its link down: nothing in or out),
//! [`Net::cut_link`] drops the traffic between two hosts (iptables in one of them),
//! [`Net::cut_direction`] drops one direction only, and [`Proxy`] adds delay, jitter and
//! loss to one client's TCP connections (`tc netem` is not available on these kernels).
//!
//! Everything a [`Net`] made — namespaces, links, the processes still running in its
//! namespaces — is removed when it is dropped, also when the test panics. Without root (or
//! without network namespaces) [`Net::new`] fails with the reason; a test then fails in CI
//! (`CI=true`) and may skip elsewhere ([`Net::new_or_skip`]).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip` (or another tool) and says why if it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// One host of a [`Net`].
#[derive(Debug, Clone)]
pub struct Host {
    /// Its network namespace.
    pub ns: String,
    /// Its address on the switch.
    pub addr: Ipv4Addr,
    /// The switch's end of its link (down: the host is cut off).
    port: String,
}

/// A switch and its hosts; see the module docs.
#[derive(Debug)]
pub struct Net {
    switch: String,
    hosts: Vec<Host>,
    /// The test process's end of its link to the switch, and its address.
    root_link: String,
    pub root: Ipv4Addr,
}

impl Net {
    /// A switch with `hosts` hosts, the test process attached to it.
    pub fn new(hosts: usize) -> Result<Net, String> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = (std::process::id() as usize * 31 + n * 7) % 0xffff;
        let subnet = (std::process::id() as usize + n * 37) % 250 + 2;
        let switch = format!("lh{tag:04x}sw");
        let mut net = Net {
            switch: switch.clone(),
            hosts: Vec::new(),
            root_link: format!("l{tag:04x}r"),
            root: Ipv4Addr::new(10, 231, subnet as u8, 1),
        };
        // Dropped on any error below: what was made so far goes.
        run("ip", &["netns", "add", &switch])?;
        run("ip", &["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &switch, "link", "set", "br0", "up"])?;
        let root_port = format!("l{tag:04x}rs");
        run("ip", &["link", "add", &net.root_link, "type", "veth", "peer", "name", &root_port, "netns", &switch])?;
        run("ip", &["-n", &switch, "link", "set", &root_port, "master", "br0", "up"])?;
        run("ip", &["addr", "add", &format!("{}/24", net.root), "dev", &net.root_link])?;
        run("ip", &["link", "set", &net.root_link, "up"])?;
        for i in 0..hosts {
            let ns = format!("lh{tag:04x}h{i}");
            let addr = Ipv4Addr::new(10, 231, subnet as u8, 10 + i as u8);
            let (inner, port) = (format!("l{tag:04x}h{i}"), format!("l{tag:04x}s{i}"));
            run("ip", &["netns", "add", &ns])?;
            net.hosts.push(Host { ns: ns.clone(), addr, port: port.clone() });
            run("ip", &["-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", &inner, "netns", &ns])?;
            run("ip", &["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
            run("ip", &["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &inner])?;
            run("ip", &["-n", &ns, "link", "set", &inner, "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// [`Net::new`], or `None` with the reason printed where skipping is allowed: outside CI.
    /// In CI (`CI=true`) a harness that cannot be made is a failure.
    pub fn new_or_skip(hosts: usize, test: &str) -> Option<Net> {
        match Net::new(hosts) {
            Ok(net) => Some(net),
            Err(why) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("{test}: skipped: cannot make network namespaces here ({why}); run as root");
                None
            }
            Err(why) => panic!("{test}: cannot make network namespaces ({why}); CI runs as root and must"),
        }
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// `program args…` to run inside host `i`'s namespace.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i].ns]).arg(program);
        c
    }

    /// Host `i` loses its link: nothing reaches it or leaves it.
    pub fn cut(&self, i: usize) {
        run("ip", &["-n", &self.switch, "link", "set", &self.hosts[i].port, "down"]).unwrap();
    }

    /// Host `i`'s link is back.
    pub fn heal(&self, i: usize) {
        run("ip", &["-n", &self.switch, "link", "set", &self.hosts[i].port, "up"]).unwrap();
    }

    /// The traffic between hosts `a` and `b` is dropped, both ways (each keeps its other links).
    pub fn cut_link(&self, a: usize, b: usize) {
        let (ns, peer) = (&self.hosts[a].ns, self.hosts[b].addr.to_string());
        run("ip", &["netns", "exec", ns, "iptables", "-A", "INPUT", "-s", &peer, "-j", "DROP"]).unwrap();
        run("ip", &["netns", "exec", ns, "iptables", "-A", "OUTPUT", "-d", &peer, "-j", "DROP"]).unwrap();
    }

    /// What `from` sends to `to` is dropped; the other way still works.
    pub fn cut_direction(&self, from: usize, to: usize) {
        let (ns, peer) = (&self.hosts[from].ns, self.hosts[to].addr.to_string());
        run("ip", &["netns", "exec", ns, "iptables", "-A", "OUTPUT", "-d", &peer, "-j", "DROP"]).unwrap();
    }

    /// Every cut link and direction is healed (iptables flushed in every host).
    pub fn heal_links(&self) {
        for h in &self.hosts {
            run("ip", &["netns", "exec", &h.ns, "iptables", "-F"]).unwrap();
        }
    }

    /// Kills every process still running in the hosts' namespaces.
    pub fn kill_all(&self) {
        for h in &self.hosts {
            let out = Command::new("ip").args(["netns", "pids", &h.ns]).output();
            for pid in
                out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().split_whitespace()
            {
                let _ = Command::new("kill").args(["-CONT", pid]).status();
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.kill_all();
        for h in &self.hosts {
            let _ = run("ip", &["netns", "del", &h.ns]);
        }
        let _ = run("ip", &["link", "del", &self.root_link]);
        let _ = run("ip", &["netns", "del", &self.switch]);
    }
}

/// How a [`Proxy`] treats the bytes it forwards: each chunk arrives `delay` ± `jitter` late
/// (in order), and with probability `loss` a further `retransmit` late, as a lost segment
/// would after TCP's retransmission timeout.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub delay: Duration,
    pub jitter: Duration,
    pub loss: f64,
    pub retransmit: Duration,
}

impl Link {
    /// A link that adds nothing.
    pub const FAST: Link =
        Link { delay: Duration::ZERO, jitter: Duration::ZERO, loss: 0.0, retransmit: Duration::ZERO };
}

/// A TCP proxy on the test process's address: connections to it go on to `target`, both
/// directions slowed as its [`Link`] says ([`Proxy::set`] changes it, for the chunks read
/// from then on); [`Proxy::cut`] drops what the client sends. Stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    link: Arc<std::sync::Mutex<Link>>,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(bind: Ipv4Addr, target: SocketAddr, link: Link) -> Proxy {
        let link = Arc::new(std::sync::Mutex::new(link));
        let links = link.clone();
        let cut = Arc::new(AtomicBool::new(false));
        let cuts = cut.clone();
        let listener = TcpListener::bind((bind, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else { continue };
                        let _ = client.set_nonblocking(false);
                        let never = Arc::new(AtomicBool::new(false));
                        for (from, to, cut) in [
                            (client.try_clone(), server.try_clone(), cuts.clone()),
                            (server.try_clone(), client.try_clone(), never),
                        ] {
                            if let (Ok(from), Ok(to)) = (from, to) {
                                let (stopping, link) = (stopping.clone(), links.clone());
                                std::thread::spawn(move || pump(from, to, link, cut, stopping));
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { addr, stop, link, cut }
    }

    /// Drops every chunk from the client to the target from now on (`true`), those on their
    /// way included: requests get nowhere, while the answers to those that arrived still
    /// come back. `false` forwards again (a connection that lost chunks stays broken).
    pub fn cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }

    /// From now on, chunks are treated as `link` says.
    pub fn set(&self, link: Link) {
        *self.link.lock().unwrap() = link;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to`, each chunk delivered `link.delay` (± jitter, + a retransmission
/// when "lost") after it was read, in order: a slow link, not a slow reader.
fn pump(
    mut from: TcpStream,
    to: TcpStream,
    link: Arc<std::sync::Mutex<Link>>,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    use rand::Rng;
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    let cut_out = cut.clone();
    let writer = std::thread::spawn(move || {
        let mut to = to;
        let mut last = Instant::now();
        for (due, chunk) in rx {
            let due = due.max(last); // in order
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            last = due;
            if cut_out.load(Ordering::SeqCst) {
                continue; // lost on the cut link
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 64 * 1024];
    let mut rng = rand::rng();
    while !stop.load(Ordering::Relaxed) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(_) if cut.load(Ordering::SeqCst) => {} // lost on the cut link
            Ok(n) => {
                let link = *link.lock().unwrap();
                let jitter = link.jitter.as_secs_f64() * rng.random_range(-1.0..=1.0);
                let mut delay = (link.delay.as_secs_f64() + jitter).max(0.0);
                if rng.random_bool(link.loss.clamp(0.0, 1.0)) {
                    delay += link.retransmit.as_secs_f64();
                }
                if tx.send((Instant::now() + Duration::from_secs_f64(delay), buf[..n].to_vec())).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    drop(tx);
    let _ = writer.join();
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// Now on `CLOCK_MONOTONIC`, in nanoseconds: one clock for every process of the machine,
/// so that times printed by worker processes compare with the test's.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// etcd members on hosts of a [`Net`]: clients on `<host>:2379`, peers on `<host>:2380`.
/// Killed when dropped.
pub struct NetEtcd {
    hosts: Vec<usize>,
    addrs: Vec<Ipv4Addr>,
    children: Vec<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl NetEtcd {
    /// One member on each of `hosts`; waits until every member answers.
    pub fn start(net: &Net, hosts: &[usize]) -> NetEtcd {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<Ipv4Addr> = hosts.iter().map(|&h| net.host(h).addr).collect();
        let cluster: Vec<String> = addrs.iter().enumerate().map(|(i, a)| format!("m{i}=http://{a}:2380")).collect();
        let token = format!("part-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let mut children = Vec::new();
        for (i, (&h, addr)) in hosts.iter().zip(&addrs).enumerate() {
            let data = dir.path().join(format!("m{i}"));
            let log = std::fs::File::create(dir.path().join(format!("m{i}.log"))).unwrap();
            let child = net
                .command(h, super::etcd::bin_dir().join("etcd"))
                .args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(&data)
                .args(["--listen-client-urls", &format!("http://{addr}:2379")])
                .args(["--advertise-client-urls", &format!("http://{addr}:2379")])
                .args(["--listen-peer-urls", &format!("http://{addr}:2380")])
                .args(["--initial-advertise-peer-urls", &format!("http://{addr}:2380")])
                .args(["--initial-cluster", &cluster.join(","), "--initial-cluster-token", &token])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            children.push(child);
        }
        let etcd = NetEtcd { hosts: hosts.to_vec(), addrs, children, _dir: dir };
        let until = Instant::now() + Duration::from_secs(30);
        for i in 0..etcd.addrs.len() {
            loop {
                let ok = etcd.etcdctl(&[i]).args(["endpoint", "health"]).output().is_ok_and(|o| o.status.success());
                if ok {
                    break;
                }
                assert!(Instant::now() < until, "etcd member {i} did not become healthy");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        etcd
    }

    /// `host:port` of the given members (indices into the members, not hosts).
    pub fn endpoints(&self, members: &[usize]) -> Vec<String> {
        members.iter().map(|&m| format!("{}:2379", self.addrs[m])).collect()
    }

    /// `etcd://…` of the given members, for `Client::connect` and the CLI.
    pub fn url(&self, members: &[usize]) -> String {
        format!("etcd://{}", self.endpoints(members).join(","))
    }

    /// Every member.
    pub fn all(&self) -> Vec<usize> {
        (0..self.addrs.len()).collect()
    }

    /// The host member `m` runs on.
    pub fn host_of(&self, m: usize) -> usize {
        self.hosts[m]
    }

    /// `etcdctl`, from the test process, against the given members.
    pub fn etcdctl(&self, members: &[usize]) -> Command {
        let urls: Vec<String> = self.endpoints(members).iter().map(|e| format!("http://{e}")).collect();
        let mut c = Command::new(super::etcd::bin_dir().join("etcdctl"));
        c.env("ETCDCTL_API", "3").arg(format!("--endpoints={}", urls.join(","))).arg("--command-timeout=2s");
        c
    }

    /// The member that leads the raft group, as the members say.
    pub fn leader(&self) -> Option<usize> {
        for m in 0..self.addrs.len() {
            let out = self.etcdctl(&[m]).args(["endpoint", "status", "-w", "fields"]).output().ok()?;
            if super::etcd::says_it_leads(&out.stdout) {
                return Some(m);
            }
        }
        None
    }
}

impl Drop for NetEtcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
