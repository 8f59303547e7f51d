//! Singleton job scheduling: several scheduler instances, each a [`LeaderLoop`], campaign;
//! only the leader runs the job on each tick, writing to a fenced job log with its token. The leader is killed
//! (crashed: it stops renewing without resigning) and another instance takes over within
//! about one TTL. A "zombie" — the killed leader waking up later with its old token — tries
//! to write too. At the end the log is checked: no tick ran twice, no stale write was
//! accepted.
//!
//! ```text
//! cargo run --release --example singleton_scheduler
//! cargo run --release --example singleton_scheduler -- --backend etcd://127.0.0.1:2379 --kills 2
//! ```

use clap::Parser;
use leasehold::{Client, FencedResource, LeaderLoop, Session};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
struct Args {
    /// memory:// (embedded, default) or etcd://host:port[,…]
    #[arg(long, default_value = "memory://")]
    backend: String,
    /// Scheduler instances.
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Leaders to kill, one after the other.
    #[arg(long, default_value_t = 2)]
    kills: usize,
    /// Session TTL in seconds.
    #[arg(long, default_value_t = 2)]
    ttl: u64,
    /// Tick length in milliseconds.
    #[arg(long, default_value_t = 100)]
    tick_ms: u64,
}

/// Every accepted run: (tick, instance, token), in the order the log accepted them.
type JobLog = FencedResource<Vec<(u64, usize, u64)>>;

enum Event {
    Elected { instance: usize, token: u64, at: Instant },
}

/// What every instance shares.
#[derive(Clone)]
struct World {
    client: Client,
    ttl: Duration,
    tick: Duration,
    epoch: Instant,
    log: Arc<JobLog>,
    events: mpsc::UnboundedSender<Event>,
}

/// The session and token of the leadership an instance's work runs under, while it runs
/// (what a crash leaves behind).
type Leading = Arc<Mutex<Option<(Session, u64)>>>;

/// Clears the instance's [`Leading`] when the leader's work stops (deposed, or the loop
/// dropped).
struct LeadingNow(Leading);

impl Drop for LeadingNow {
    fn drop(&mut self) {
        self.0.lock().unwrap().take();
    }
}

/// One scheduler instance: a [`LeaderLoop`] whose work runs every tick not yet in the log
/// while it leads. Returns when told to crash: its session is detached (no resign, no
/// revoke) and the loop dropped, so the store sees a process that stopped renewing; the
/// token it led with, if it led.
async fn instance(id: usize, world: World, mut crash: mpsc::UnboundedReceiver<()>) -> Option<u64> {
    let World { client, ttl, tick, epoch, log, events } = world;
    let scheduler = LeaderLoop::new(&client, "nightly-report", format!("scheduler-{id}")).unwrap().ttl(ttl);
    let leading: Leading = Arc::default();
    let run = std::pin::pin!(scheduler.run(|leadership| {
        let (log, events, leading) = (log.clone(), events.clone(), leading.clone());
        async move {
            let token = leadership.fencing_token();
            *leading.lock().unwrap() = Some((leadership.session().clone(), token));
            let _now = LeadingNow(leading);
            events.send(Event::Elected { instance: id, token, at: Instant::now() }).unwrap();
            let mut ticker = tokio::time::interval(tick);
            loop {
                ticker.tick().await;
                let now = epoch.elapsed().as_millis() as u64 / tick.as_millis() as u64;
                // Run the job for this tick unless it already ran; the log refuses stale tokens.
                let _ = log.apply(token, |log| {
                    if log.last().is_none_or(|(last, _, _)| *last < now) {
                        log.push((now, id, token));
                    }
                });
            }
        }
    }));
    tokio::select! {
        r = run => match r {
            Ok(never) => match never {},
            Err(e) => panic!("instance {id}: {e}"),
        },
        _ = crash.recv() => {}
    }
    // Detached before the loop's future is dropped (at the return): the leadership it
    // drops then deletes nothing, and its key stays until the lease expires, as after a
    // crash.
    let (session, token) = leading.lock().unwrap().take()?;
    let _ = session.detach(); // fails only once a revoke began (then the key goes with the lease)
    Some(token)
}

#[tokio::main]
async fn main() -> leasehold::Result<()> {
    let args = Args::parse();
    let client = Client::connect(&args.backend).await?.with_namespace(format!("sched-{}/", std::process::id()));
    let (ttl, tick) = (Duration::from_secs(args.ttl), Duration::from_millis(args.tick_ms));
    let epoch = Instant::now();
    let log: Arc<JobLog> = Arc::new(FencedResource::new(Vec::new()));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let world = World { client: client.clone(), ttl, tick, epoch, log: log.clone(), events: events_tx };
    let mut crashes = Vec::new();
    let mut tasks = Vec::new();
    for id in 0..args.instances + args.kills {
        let (tx, rx) = mpsc::unbounded_channel();
        crashes.push(tx);
        tasks.push(tokio::spawn(instance(id, world.clone(), rx)));
        if id + 1 == args.instances {
            break; // spare instances join after each kill
        }
    }
    println!("singleton scheduler on {}: {} instances, TTL {:?}, tick {:?}", args.backend, args.instances, ttl, tick);
    let mut next_id = args.instances;
    let mut takeovers = Vec::new();
    let mut stale_tokens = Vec::new();
    let Some(Event::Elected { instance: mut leader, token, .. }) = events.recv().await else { unreachable!() };
    println!("  instance {leader} leads (token {token})");
    for _ in 0..args.kills {
        tokio::time::sleep(tick * 5).await; // let it run a few ticks
        let killed_at = Instant::now();
        crashes[leader].send(()).unwrap();
        let old = (&mut tasks[leader]).await.unwrap().expect("the leader crashed");
        stale_tokens.push(old);
        // Replace the crashed instance, as a supervisor would.
        let (tx, rx) = mpsc::unbounded_channel();
        crashes.push(tx);
        tasks.push(tokio::spawn(instance(next_id, world.clone(), rx)));
        next_id += 1;
        let Some(Event::Elected { instance, token, at }) = events.recv().await else { unreachable!() };
        let gap = at - killed_at;
        println!("  instance {leader} crashed; instance {instance} leads after {gap:.2?} (token {token})");
        takeovers.push(gap);
        leader = instance;
    }
    tokio::time::sleep(tick * 5).await;
    // The zombie: every crashed leader wakes up and runs "its" next tick with its old token.
    let mut refused = 0;
    for token in &stale_tokens {
        let now = epoch.elapsed().as_millis() as u64 / tick.as_millis() as u64 + 1000;
        if log.apply(*token, |log| log.push((now, usize::MAX, *token))).is_err() {
            refused += 1;
        }
    }
    for c in &crashes {
        let _ = c.send(());
    }
    let entries = log.read(|l| l.clone());
    let mut seen = std::collections::BTreeSet::new();
    let ran_twice = entries.iter().filter(|(tick, _, _)| !seen.insert(*tick)).count();
    let tokens_ok = entries.windows(2).all(|w| w[0].2 <= w[1].2);
    let by_token: BTreeMap<u64, usize> = entries.iter().fold(BTreeMap::new(), |mut m, (_, _, t)| {
        *m.entry(*t).or_default() += 1;
        m
    });
    println!(
        "\njob log: {} ticks run ({}..={}), ticks per leader token: {by_token:?}",
        entries.len(),
        entries[0].0,
        entries[entries.len() - 1].0
    );
    println!("takeover after a crash: {takeovers:.2?} (TTL {ttl:?})");
    println!("zombie writes with stale tokens: {} tried, {refused} refused", stale_tokens.len());
    let ok = ran_twice == 0 && tokens_ok && refused == stale_tokens.len();
    println!(
        "{}",
        if ok {
            "result: ok — no tick ran twice, no write with a stale token was accepted"
        } else {
            "result: VIOLATION"
        }
    );
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
