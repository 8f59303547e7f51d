//! The contention sweep: optimistic vs pessimistic vs adaptive read-modify-write (a
//! [`Register`] increment) against etcd's own Lock RPC doing the same work, for 1 … 64
//! contenders and two critical-section lengths, all in one run on one etcd.
//!
//! ```text
//! cargo bench --bench sweep                                   # starts its own etcd
//! cargo bench --bench sweep -- --contenders 1,2,4,8,16,32,64 --cs-ms 0,2 --seconds 2 \
//!     --out docs/sweep.md --plot docs/sweep.svg
//! cargo bench --bench sweep -- --backend memory://            # no server
//! cargo bench --bench sweep -- --cs-ms 0 --rounds 3           # each row 3×, interleaved
//! cargo bench --bench sweep -- --recipe election              # leader elections instead
//! cargo bench --bench sweep -- --contenders 64 --only optimistic,pessimistic,adaptive
//! cargo bench --bench sweep -- --backend memory:// --cs-ms 0 --paired --rounds 100 --seconds 0.1
//! ```
//! With `--recipe election` an operation is one term of an [`Election`]: campaign, read the
//! counter, a fenced put of its increment (refused to a deposed leader), resign; the three
//! strategies are the election's (queued candidates, optimistic compare-and-swap campaigns,
//! adaptive), against etcd's Lock RPC doing the same work.
//! Each contender has its own client connection and session (like separate processes), or
//! with `--shared-client` all share one client (tasks of one process; each its own session).
//! The clock of a cell starts once every contender is connected. A cell runs for `--seconds`; its throughput is completed updates per second, its
//! latency the time of one update (acquire, read, critical section, write, release), its
//! fairness the fewest updates one contender completed against the mean. After each cell
//! the register must equal the number of completed updates (no lost update).
//!
//! With `--rounds R` every row is measured R times, the ways interleaved and their order
//! rotated each round, so that drift on a shared machine hits every way alike; the table
//! then shows each way's median over the rounds, and `adaptive / best` also the median,
//! lowest and highest of the per-round ratios (adaptive against the better mode *of the
//! same round*; the ratio of medians can pair cells from different rounds).
//!
//! With `--paired` a row's contenders of every way connect once and stay connected, and the
//! ways take turns: one way runs for `--seconds` while the others' contenders wait, `--rounds`
//! times, the order rotated each round (`support/gate.rs`). A turn ends when its last update
//! has ended, so nothing spills into the next. Adaptive's per-round ratio then pairs slices a
//! fraction of a second apart — on the embedded store, where a 2 s cell's rate drifts by
//! ±15 % with the machine, a much closer comparison — and no cell pays for connecting. The
//! price: every way idles between its turns, a bursty load. An adaptive client measuring
//! its compare-and-swap mode charges an idle spell inside an epoch to that mode
//! (`src/crowd.rs`), so at 2 or more contenders of one client it measures its queue again
//! more often than under steady load.

#[path = "support/commit.rs"]
mod commit;
#[path = "../tests/support/etcd.rs"]
#[allow(dead_code)]
mod etcd;
#[path = "support/gate.rs"]
mod gate;
#[path = "support/sweep_plot.rs"]
mod plot;

use clap::Parser;
use etcd_client::LockOptions;
use gate::Gate;
use indicatif::{ProgressBar, ProgressStyle};
use leasehold::{Client, Election, EtcdConfig, Register, Strategy};
use plotters::prelude::RGBColor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

#[derive(Parser, Debug)]
struct Args {
    /// memory:// for the embedded backend; default: an etcd started here.
    #[arg(long)]
    backend: Option<String>,
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    contenders: Vec<usize>,
    /// Critical-section lengths in milliseconds (time between read and write).
    #[arg(long, value_delimiter = ',', default_value = "0,2")]
    cs_ms: Vec<u64>,
    /// Seconds per cell.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Measure each row this many times, the ways interleaved; report medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Write the Markdown table here too.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Write the SVG plot here.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// All contenders share one client (tasks of one process) instead of one each (processes).
    #[arg(long)]
    shared_client: bool,
    /// The registers' requeue window in milliseconds (`Register::with_requeue_window`;
    /// 0 turns keeping a place off), for A/B runs. Default: the library's.
    #[arg(long)]
    requeue_window_ms: Option<f64>,
    /// What contends: `register` (read-modify-write) or `election` (terms of a leader).
    #[arg(long, default_value = "register", value_parser = ["register", "election"])]
    recipe: String,
    /// Run each row's ways in slices of `--seconds`, one way at a time, `--rounds` times,
    /// with every way's contenders connected throughout (a paired comparison: the ways'
    /// ratios pair slices seconds apart, and no cell pays for connecting or warming up).
    #[arg(long)]
    paired: bool,
    /// Only these ways (comma-separated), e.g. for an A/B run of one row; default: all.
    /// `adaptive / best` needs optimistic and pessimistic in the run.
    #[arg(long, value_delimiter = ',', value_parser = ["optimistic", "pessimistic", "adaptive", "grouped", "lock-rpc"])]
    only: Vec<String>,
    #[arg(long, hide = true)]
    bench: bool,
}

/// `--requeue-window-ms`, once parsed.
static REQUEUE_WINDOW: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    Register(Strategy),
    /// `Register::update_grouped` (adaptive): with `--shared-client` (or the embedded
    /// backend) all contenders share one handle, so their updates are grouped; otherwise each
    /// contender is its own handle (a process with one task: batches of one). Critical
    /// section 0 only: a grouped update function runs on the combiner and cannot wait.
    Grouped,
    /// Terms of an [`Election`] with this strategy (`--recipe election`).
    Election(Strategy),
    LockRpc,
}

impl Way {
    /// The way of `strategy` in the recipe the run measures.
    fn of(election: bool, strategy: Strategy) -> Way {
        if election {
            Way::Election(strategy)
        } else {
            Way::Register(strategy)
        }
    }
    fn name(self) -> &'static str {
        match self {
            Way::Register(strategy) | Way::Election(strategy) => strategy.name(),
            Way::Grouped => "grouped",
            Way::LockRpc => "etcd Lock RPC",
        }
    }
    /// Its name for `--only`.
    fn key(self) -> &'static str {
        match self {
            Way::LockRpc => "lock-rpc",
            w => w.name(),
        }
    }
    fn color(self) -> RGBColor {
        match self {
            Way::Register(Strategy::Optimistic) | Way::Election(Strategy::Optimistic) => RGBColor(31, 119, 180),
            Way::Register(Strategy::Pessimistic) | Way::Election(Strategy::Pessimistic) => RGBColor(214, 39, 40),
            Way::Register(Strategy::Adaptive) | Way::Election(Strategy::Adaptive) => RGBColor(44, 160, 44),
            Way::Register(_) | Way::Election(_) => RGBColor(23, 190, 207), // a strategy added later
            Way::Grouped => RGBColor(148, 103, 189),
            Way::LockRpc => RGBColor(127, 127, 127),
        }
    }
}

#[derive(Clone, Debug)]
struct Cell {
    way: Way,
    contenders: usize,
    cs_ms: u64,
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    conflicts_per_op: f64,
    /// Fewest updates one contender completed, as a share of the mean per contender (1.0:
    /// all alike; near 0: someone starved, which a p99 over all updates can hide when the
    /// starved contenders complete few updates).
    fairness: f64,
    /// Per round: adaptive / best of optimistic and pessimistic (adaptive's cells only).
    round_ratios: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One cell from the rounds of one way in one row: medians, and adaptive's per-round ratios.
fn merge(rounds: &[Vec<Cell>], way: Way) -> Cell {
    let of = |round: &Vec<Cell>, w: Way| round.iter().find(|c| c.way == w).cloned();
    let mine: Vec<Cell> = rounds.iter().filter_map(|r| of(r, way)).collect();
    let pick = |f: fn(&Cell) -> f64| median(mine.iter().map(f).collect());
    let round_ratios = match way {
        Way::Register(Strategy::Adaptive) | Way::Election(Strategy::Adaptive) => rounds
            .iter()
            .filter_map(|r| {
                let rate = |s| of(r, Way::of(matches!(way, Way::Election(_)), s)).map(|c| c.ops_per_s);
                Some(rate(Strategy::Adaptive)? / rate(Strategy::Optimistic)?.max(rate(Strategy::Pessimistic)?))
            })
            .collect(),
        _ => Vec::new(),
    };
    Cell {
        ops_per_s: pick(|c| c.ops_per_s),
        p50_ms: pick(|c| c.p50_ms),
        p99_ms: pick(|c| c.p99_ms),
        conflicts_per_op: pick(|c| c.conflicts_per_op),
        fairness: pick(|c| c.fairness),
        round_ratios,
        ..mine[0].clone()
    }
}

fn incr(v: Option<Vec<u8>>) -> Vec<u8> {
    let n: u64 = v.map_or(0, |b| String::from_utf8(b).unwrap().parse().unwrap());
    (n + 1).to_string().into_bytes()
}

/// One contender of way number `slot`, while the gate lets it: returns (latencies, conflicts).
async fn contend(
    target: Target,
    way: Way,
    name: String,
    cs: Duration,
    start: Arc<Barrier>,
    (gate, slot): (Arc<Gate>, usize),
    shared: Option<Register>,
) -> (Vec<Duration>, u64) {
    let mut latencies = Vec::new();
    let mut conflicts = 0;
    let mut published = 0;
    match way {
        Way::Grouped => {
            let own = match shared {
                Some(_) => None,
                None => Some(target.client().await.session().await.unwrap()),
            };
            let reg = match (&shared, &own) {
                (Some(r), _) => r.clone(),
                (None, Some(s)) => Register::new(s, &name).unwrap().with_strategy(Strategy::Adaptive),
                (None, None) => unreachable!(),
            };
            start.wait().await;
            while gate.go(slot, latencies.len(), &mut published).await {
                let t = Instant::now();
                reg.update_grouped(|v| Some(incr(v.map(<[u8]>::to_vec)))).await.unwrap();
                latencies.push(t.elapsed());
            }
            if let Some(s) = own {
                s.close().await.unwrap();
            }
        }
        Way::Register(strategy) => {
            let client = target.client().await;
            let session = client.session().await.unwrap();
            let window = REQUEUE_WINDOW.get().copied().unwrap_or(leasehold::DEFAULT_REQUEUE_WINDOW);
            let reg = Register::new(&session, &name).unwrap().with_strategy(strategy).with_requeue_window(window);
            start.wait().await;
            while gate.go(slot, latencies.len(), &mut published).await {
                let t = Instant::now();
                let u = reg
                    .update_async(|v, _| async move {
                        if !cs.is_zero() {
                            tokio::time::sleep(cs).await;
                        }
                        Some(incr(v))
                    })
                    .await
                    .unwrap();
                conflicts += u64::from(u.conflicts);
                latencies.push(t.elapsed());
            }
            session.close().await.unwrap();
        }
        Way::Election(strategy) => {
            let client = target.client().await;
            let session = client.session().await.unwrap();
            let election = Election::new(&session, &name).unwrap().with_strategy(strategy);
            let key = format!("{name}.value");
            start.wait().await;
            while gate.go(slot, latencies.len(), &mut published).await {
                let t = Instant::now();
                let leader = election.campaign("sweep").await.unwrap();
                let v = client.backend().get(&key).await.unwrap().map(|kv| kv.value);
                if !cs.is_zero() {
                    tokio::time::sleep(cs).await;
                }
                leader.fenced_put(key.as_str(), incr(v)).await.unwrap();
                leader.resign().await.unwrap();
                latencies.push(t.elapsed());
            }
            session.close().await.unwrap();
        }
        Way::LockRpc => {
            let mut c = match target {
                Target::Etcd(endpoints) => etcd_client::Client::connect(endpoints, None).await.unwrap(),
                Target::SharedEtcd(_, raw) => *raw,
                Target::Memory(..) => unreachable!("Lock RPC needs etcd"),
            };
            let lease = c.lease_grant(10, None).await.unwrap().id();
            let (mut keeper, mut stream) = c.lease_keep_alive(lease).await.unwrap();
            let keep = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    if keeper.keep_alive().await.is_err() || stream.message().await.is_err() {
                        return;
                    }
                }
            });
            let key = format!("{name}.value");
            start.wait().await;
            while gate.go(slot, latencies.len(), &mut published).await {
                let t = Instant::now();
                let lock =
                    c.lock(format!("{name}/").as_str(), Some(LockOptions::new().with_lease(lease))).await.unwrap();
                let v = c.get(key.as_str(), None).await.unwrap().kvs().first().map(|kv| kv.value().to_vec());
                if !cs.is_zero() {
                    tokio::time::sleep(cs).await;
                }
                c.put(key.as_str(), incr(v), None).await.unwrap();
                c.unlock(lock.key()).await.unwrap();
                latencies.push(t.elapsed());
            }
            keep.abort();
            c.lease_revoke(lease).await.unwrap();
        }
    }
    (latencies, conflicts)
}

#[derive(Clone)]
enum Target {
    /// The embedded store, the client shared if `true` (else one per contender, as etcd's).
    Memory(Client, bool),
    /// A client per contender.
    Etcd(Vec<String>),
    /// One client for all (and one etcd-client connection for the Lock RPC peer).
    SharedEtcd(Client, Box<etcd_client::Client>),
}

impl Target {
    async fn client(&self) -> Client {
        match self {
            Target::Memory(c, true) | Target::SharedEtcd(c, _) => c.clone(),
            Target::Memory(c, false) => Client::from_arc(c.backend().clone()),
            Target::Etcd(e) => Client::etcd(EtcdConfig::new(e.clone())).await.unwrap(),
        }
    }

    async fn read(&self, way: Way, name: &str) -> u64 {
        let c = self.client().await;
        let key = match way {
            Way::LockRpc | Way::Election(_) => format!("{name}.value"),
            Way::Register(_) | Way::Grouped => name.to_owned(),
        };
        c.backend().get(&key).await.unwrap().map_or(0, |kv| String::from_utf8(kv.value).unwrap().parse().unwrap())
    }
}

/// The contenders of one way in one row (and the session of their shared handle, if any).
struct Crew {
    way: Way,
    name: String,
    tasks: Vec<tokio::task::JoinHandle<(Vec<Duration>, u64)>>,
    session: Option<leasehold::Session>,
}

impl Crew {
    /// Spawns `contenders` contenders of `way` on the register `name`, behind `gate`'s slot.
    async fn spawn(
        target: &Target,
        way: Way,
        contenders: usize,
        cs: Duration,
        name: String,
        start: &Arc<Barrier>,
        gate: (&Arc<Gate>, usize),
    ) -> Crew {
        // Grouped with one client for all: one handle for all, so their updates are grouped.
        let session = match (way, target) {
            (Way::Grouped, Target::Memory(c, _) | Target::SharedEtcd(c, _)) => Some(c.session().await.unwrap()),
            _ => None,
        };
        let shared = session.as_ref().map(|s| Register::new(s, &name).unwrap().with_strategy(Strategy::Adaptive));
        let tasks = (0..contenders)
            .map(|_| {
                let gate = (gate.0.clone(), gate.1);
                let task = contend(target.clone(), way, name.clone(), cs, start.clone(), gate, shared.clone());
                tokio::spawn(task)
            })
            .collect();
        Crew { way, name, tasks, session }
    }

    /// Joins the contenders (once the gate has stopped them) and checks that no update was
    /// lost: the cell, at the rate of all their updates over `elapsed()` seconds.
    async fn finish(self, target: &Target, cs_ms: u64, elapsed: impl FnOnce() -> f64) -> Cell {
        let contenders = self.tasks.len();
        let mut all = Vec::new();
        let mut conflicts = 0;
        let mut fewest = usize::MAX;
        for t in self.tasks {
            let (l, c) = t.await.unwrap();
            fewest = fewest.min(l.len());
            all.extend(l);
            conflicts += c;
        }
        let elapsed = elapsed();
        if let Some(s) = self.session {
            s.close().await.unwrap();
        }
        let way = self.way;
        let stored = target.read(way, &self.name).await;
        assert_eq!(stored, all.len() as u64, "{} with {contenders} contenders lost an update", way.name());
        all.sort();
        let pct = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
        Cell {
            way,
            contenders,
            cs_ms,
            ops_per_s: all.len() as f64 / elapsed,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            conflicts_per_op: conflicts as f64 / all.len() as f64,
            fairness: fewest as f64 * contenders as f64 / all.len() as f64,
            round_ratios: Vec::new(),
        }
    }
}

async fn run_cell(target: &Target, way: Way, contenders: usize, cs_ms: u64, seconds: f64, id: usize) -> Cell {
    let gate = Arc::new(Gate::new(1, Some(0)));
    let start = Arc::new(Barrier::new(contenders + 1));
    let cs = Duration::from_millis(cs_ms);
    let crew = Crew::spawn(target, way, contenders, cs, format!("sweep-{id}"), &start, (&gate, 0)).await;
    start.wait().await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    gate.stop();
    crew.finish(target, cs_ms, || started.elapsed().as_secs_f64()).await
}

/// One row with `--paired`: every way's contenders connected at once, the ways running one
/// at a time in slices of `seconds`, `rounds` times (the order rotated each round), so that
/// the machine's drift hits every way alike and the ways' ratios pair slices seconds
/// apart. A cell's rate is the median of its slices' (each: its updates over the time
/// from the slice's start until its last update ended); its other columns are over all
/// its slices.
async fn run_row_paired(
    target: &Target,
    ways: &[Way],
    n: usize,
    cs_ms: u64,
    args: &Args,
    id: &mut usize,
    bar: &ProgressBar,
) -> Vec<Cell> {
    let gate = Arc::new(Gate::new(ways.len(), None));
    let start = Arc::new(Barrier::new(ways.len() * n + 1));
    let cs = Duration::from_millis(cs_ms);
    let mut crews = Vec::new();
    for (slot, &way) in ways.iter().enumerate() {
        *id += 1;
        crews.push(Crew::spawn(target, way, n, cs, format!("sweep-{id}"), &start, (&gate, slot)).await);
    }
    start.wait().await;
    let (mut counted, mut time) = (vec![0; ways.len()], vec![0.0; ways.len()]);
    let mut rounds = Vec::new();
    for r in 0..args.rounds as usize {
        let mut round = Vec::new();
        for i in 0..ways.len() {
            let slot = (i + r) % ways.len();
            bar.set_message(format!("{} × {n}, cs {cs_ms} ms, slice {}", ways[slot].name(), r + 1));
            let t = Instant::now();
            gate.activate(slot);
            tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
            gate.pause();
            let alive = || crews[slot].tasks.iter().all(|t| !t.is_finished());
            let Some((done, end)) = gate.drained(slot, n, alive).await else {
                // A contender ended (it panicked): its join says why.
                let ended = crews.swap_remove(slot).tasks.into_iter().find(|t| t.is_finished());
                ended.expect("a contender ended").await.unwrap();
                panic!("a contender of {} ended without an error", ways[slot].name());
            };
            let dt = end.saturating_duration_since(t).as_secs_f64().max(1e-9);
            let updates = done - std::mem::replace(&mut counted[slot], done);
            time[slot] += dt;
            let rate = updates as f64 / dt;
            round.push(Cell {
                way: ways[slot],
                contenders: n,
                cs_ms,
                ops_per_s: rate,
                p50_ms: 0.0,
                p99_ms: 0.0,
                conflicts_per_op: 0.0,
                fairness: 0.0,
                round_ratios: Vec::new(),
            });
            bar.inc(1);
        }
        rounds.push(round);
    }
    gate.stop();
    let mut cells = Vec::new();
    for (slot, crew) in crews.into_iter().enumerate() {
        let whole = crew.finish(target, cs_ms, || time[slot]).await;
        let sliced = merge(&rounds, ways[slot]);
        cells.push(Cell { ops_per_s: sliced.ops_per_s, round_ratios: sliced.round_ratios, ..whole });
    }
    cells
}

fn table(cells: &[Cell], ways: &[Way], args: &Args, backend: &str, commit_ms: Option<(f64, f64)>) -> String {
    let who = if args.shared_client {
        "All contenders share one client (tasks of one process), each with its own session"
    } else {
        "Each contender has its own connection and session (like separate processes)"
    };
    let rounds = if args.rounds > 1 {
        format!(
            " Each row was measured {} times with the ways interleaved; cells are medians. `adaptive / best`\n\
             is the ratio of those medians, and in brackets the median, lowest and highest of the ratios\n\
             within one round (adaptive against the better mode of the same round).",
            args.rounds
        )
    } else {
        String::new()
    };
    let what = if args.recipe == "election" {
        "a term of a leader election per operation (campaign, read, fenced put of the increment, resign)"
    } else {
        "a Register increment per operation"
    };
    let mut out = format!(
        "Contention sweep on {backend}: {what}, {} s per cell (the clock starts\n\
         once every contender is connected). {who}. `adaptive / best` compares adaptive with the\n\
         better of optimistic and pessimistic in the same row.{rounds} In the last table, `fewest per\n\
         contender / mean` is the fewest updates one contender completed against the mean (1: all\n\
         alike; near 0: a contender starved, which the p99 over all updates can hide).\n",
        args.seconds
    );
    if let Some((before, after)) = commit_ms {
        out += &format!(
            "\nThe hour's baseline: a lone commit (one put, nothing else running) took {before:.3} ms (median)\n\
             before the sweep and {after:.3} ms after it; `per update / lone commit` in the last table is the\n\
             time per update (1 / updates per second) in units of their mean, which does not swing with the\n\
             hour as `pessimistic / Lock RPC` does.\n"
        );
    }
    let commit = commit_ms.map(|(b, a)| (b + a) / 2.0);
    for &cs in &args.cs_ms {
        out += &format!("\n### Critical section {cs} ms\n\n| contenders |");
        for w in ways {
            out += &format!(" {} ops/s (p99 ms) |", w.name());
        }
        out += " adaptive / best | pessimistic / Lock RPC |\n|---:|";
        for _ in ways {
            out += "---:|";
        }
        out += "---:|---:|\n";
        for &n in &args.contenders {
            let get = |w: Way| cells.iter().find(|c| c.way == w && c.contenders == n && c.cs_ms == cs);
            out += &format!("| {n} |");
            for &w in ways {
                match get(w) {
                    Some(c) => out += &format!(" {:.0} ({:.1}) |", c.ops_per_s, c.p99_ms),
                    None => out += " – |",
                }
            }
            let election = args.recipe == "election";
            let rate = |s| get(Way::of(election, s)).map_or(0.0, |c| c.ops_per_s);
            let best = rate(Strategy::Optimistic).max(rate(Strategy::Pessimistic));
            out += &format!(" {:.2}", rate(Strategy::Adaptive) / best);
            match get(Way::of(election, Strategy::Adaptive)).map(|c| &c.round_ratios) {
                Some(r) if r.len() > 1 => {
                    let (lo, hi) = r.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
                    out += &format!(" ({:.2}; {lo:.2}–{hi:.2}) |", median(r.clone()));
                }
                _ => out += " |",
            }
            match get(Way::LockRpc) {
                Some(l) => out += &format!(" {:.2} |\n", rate(Strategy::Pessimistic) / l.ops_per_s),
                None => out += " – |\n",
            }
        }
    }
    out += "\n### Every cell\n\n| critical section ms | contenders | way | ops/s | p50 ms | p99 ms | conflicts/op | fewest per contender / mean | per update / lone commit |\n|---:|---:|---|---:|---:|---:|---:|---:|---:|\n";
    for c in cells {
        let per = commit.map_or("–".to_owned(), |ms| format!("{:.2}", 1e3 / c.ops_per_s / ms));
        out += &format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {per} |\n",
            c.cs_ms,
            c.contenders,
            c.way.name(),
            c.ops_per_s,
            c.p50_ms,
            c.p99_ms,
            c.conflicts_per_op,
            c.fairness
        );
    }
    out
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(ms) = args.requeue_window_ms {
        REQUEUE_WINDOW.set(Duration::from_secs_f64(ms / 1000.0)).expect("set once");
    }
    if !args.bench {
        println!("sweep: a benchmark; run it with `cargo bench --bench sweep`");
        return;
    }
    let mut _etcd = None;
    let (target, backend) = match args.backend.as_deref() {
        Some("memory://") => {
            (Target::Memory(Client::memory(), args.shared_client), "the embedded memory backend".to_owned())
        }
        Some(url) => {
            let eps: Vec<String> = url.trim_start_matches("etcd://").split(',').map(str::to_owned).collect();
            (Target::Etcd(eps), format!("etcd at {url}"))
        }
        None => {
            let c = etcd::EtcdCluster::single();
            let t = Target::Etcd(c.endpoints());
            _etcd = Some(c);
            (t, "a single-node etcd 3.5 on 127.0.0.1 (started by the bench)".to_owned())
        }
    };
    let endpoints = match &target {
        Target::Etcd(eps) => Some(eps.clone()),
        _ => None,
    };
    let commit_before = match &endpoints {
        Some(eps) => Some(commit::lone_commit_ms(eps, 200).await),
        None => None,
    };
    let target = match target {
        Target::Etcd(eps) if args.shared_client => {
            let client = Client::etcd(EtcdConfig::new(eps.clone())).await.unwrap();
            Target::SharedEtcd(client, Box::new(etcd_client::Client::connect(eps, None).await.unwrap()))
        }
        t => t,
    };
    let election = args.recipe == "election";
    let mut ways = vec![
        Way::of(election, Strategy::Optimistic),
        Way::of(election, Strategy::Pessimistic),
        Way::of(election, Strategy::Adaptive),
    ];
    if !election {
        ways.push(Way::Grouped);
    }
    if !matches!(target, Target::Memory(..)) {
        ways.push(Way::LockRpc);
    }
    ways.retain(|w| args.only.is_empty() || args.only.iter().any(|o| o == w.key()));
    // A grouped update function cannot wait: grouped runs at critical section 0 only.
    let ways_at = |cs: u64| -> Vec<Way> { ways.iter().copied().filter(|&w| cs == 0 || w != Way::Grouped).collect() };
    let total = args.cs_ms.iter().map(|&cs| ways_at(cs).len() * args.contenders.len()).sum::<usize>() as u64
        * u64::from(args.rounds);
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} cells, {elapsed} elapsed, ~{eta} left  {msg}").unwrap(),
    );
    let mut cells = Vec::new();
    let mut id = 0;
    for &cs in &args.cs_ms {
        let ways = ways_at(cs);
        for &n in &args.contenders {
            if args.paired {
                cells.extend(run_row_paired(&target, &ways, n, cs, &args, &mut id, &bar).await);
                continue;
            }
            let mut rounds = Vec::new();
            for r in 0..args.rounds as usize {
                let mut round = Vec::new();
                for i in 0..ways.len() {
                    // Rotate the order each round, so no way always runs first or last.
                    let w = ways[(i + r) % ways.len()];
                    bar.set_message(format!("{} × {n}, cs {cs} ms, round {}", w.name(), r + 1));
                    id += 1;
                    round.push(run_cell(&target, w, n, cs, args.seconds, id).await);
                    bar.inc(1);
                }
                rounds.push(round);
            }
            cells.extend(ways.iter().map(|&w| merge(&rounds, w)));
        }
    }
    bar.finish_and_clear();
    let commit_ms = match (&endpoints, commit_before) {
        (Some(eps), Some(before)) => Some((before, commit::lone_commit_ms(eps, 200).await)),
        _ => None,
    };
    let text = table(&cells, &ways, &args, &backend, commit_ms);
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, &text).unwrap();
    }
    if let Some(p) = &args.plot {
        plot::plot(&cells, &ways, &args, p).unwrap();
        println!("plot written to {}", p.display());
    }
}
