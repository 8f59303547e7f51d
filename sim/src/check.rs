//! The checker: judges the store's history, not what clients believe.
//!
//! - **History** (a watch of every key of the store, without faults): applies each revision
//!   to a replica and checks, per revision, that every fenced write (`data/<name>`, whose
//!   value is the writer's token) was accepted from a key that held `<name>` at that
//!   revision (the first key of a mutex, election or write lock; among the first N of a
//!   semaphore, or, for the weighted one, the weights up to its own at most N; no older
//!   writer for a reader); and that each write of the counter register adds one to the
//!   count it replaced and is an increment not written before.
//! - **Beliefs**: whenever a client's guard says `is_valid()`, the workload asks at once
//!   (no await in between) whether the store, at that instant, has the guard's key with its
//!   token and admits it. A guard that believes it holds while the store says otherwise is
//!   a violation: that is when two processes act as holders.
//! - **Quiescence** and **liveness** are checked by the world at the end (`world.rs`).

use leasehold::backend::{KeyValue, Revision, WatchEvent};
use leasehold::MemoryBackend;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// How a name admits its holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The first key (mutex, election).
    First,
    /// Among the first `n` keys (semaphore).
    AmongFirst(usize),
    /// The weights of the keys up to its own (its own included) sum to at most `n` (a
    /// semaphore whose acquisitions take several permits: a key's value is its weight).
    Weighted(u64),
    /// A reader of a read-write lock: no older key under `<prefix>write/`.
    Reader,
    /// A writer of a read-write lock: the first key.
    Writer,
}

/// One guarded name of the workload.
#[derive(Debug, Clone)]
pub struct Name {
    pub name: &'static str,
    /// The keys of its holders and waiters.
    pub prefix: String,
    /// The key its holders write to with fenced writes (their token as the value).
    pub data: String,
    /// The rule a fenced writer of the name must meet (a read-write lock's: `Writer`).
    pub writes: Kind,
}

/// Whether `key` (created at `rev`) holds under `kind`, with `keys` the prefix's keys, oldest
/// first.
fn admits(kind: Kind, keys: &[KeyValue], prefix: &str, key: &str, rev: Revision) -> bool {
    let Some(at) = keys.iter().position(|kv| kv.key == key && kv.create_revision == rev) else { return false };
    match kind {
        Kind::First | Kind::Writer => at == 0,
        Kind::AmongFirst(n) => at < n,
        Kind::Weighted(n) => {
            keys[..=at].iter().map(|kv| weight(&kv.value)).try_fold(0u64, u64::checked_add).is_some_and(|sum| sum <= n)
        }
        Kind::Reader => {
            let writers = format!("{prefix}write/");
            !keys[..at].iter().any(|kv| kv.key.starts_with(&writers))
        }
    }
}

/// The permits a semaphore key stands for, as the checker reads it (not the library's
/// reading, which it checks): an empty value is one permit, a positive decimal that many;
/// anything else more than any count.
fn weight(value: &[u8]) -> u64 {
    if value.is_empty() {
        return 1;
    }
    match std::str::from_utf8(value).ok().and_then(|s| s.parse::<u64>().ok()) {
        Some(n) if n > 0 => n,
        _ => u64::MAX,
    }
}

/// The counter register the workers increment (`workload.rs`).
pub const COUNTER: &str = "ctr";

/// The count in a value of the counter register (`<count> <increment number>`).
pub fn count(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.split(' ').next()?.parse().ok()
}

/// The increment number in a value of the counter register.
fn increment(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.split(' ').nth(1)?.parse().ok()
}

#[derive(Debug, Default)]
struct Inner {
    violations: Vec<String>,
    events: u64,
    /// FNV-1a over every event (kind, key, revision) in order: two runs of one seed must
    /// end with the same digest.
    digest: u64,
    /// The store as of the last revision applied, by key.
    replica: BTreeMap<String, KeyValue>,
    /// The counter's writes in the history: increment number -> revision.
    increments: BTreeMap<u64, Revision>,
}

/// Shared by the world, the workload and the history task.
#[derive(Debug, Clone)]
pub struct Checker {
    store: MemoryBackend,
    names: Arc<Vec<Name>>,
    inner: Arc<Mutex<Inner>>,
    /// Print the history as it goes (`LEASEHOLD_SIM_TRACE=1` with a replayed seed).
    pub trace: bool,
}

impl Checker {
    pub fn new(store: MemoryBackend, names: Vec<Name>) -> Self {
        let trace = std::env::var_os("LEASEHOLD_SIM_TRACE").is_some();
        Self { store, names: Arc::new(names), inner: Arc::default(), trace }
    }

    pub fn name(&self, name: &str) -> &Name {
        self.names.iter().find(|n| n.name == name).expect("a name of the workload")
    }

    pub fn violation(&self, what: String) {
        self.inner.lock().unwrap().violations.push(what);
    }

    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().unwrap().violations.clone()
    }

    /// The revision the history wrote increment `id` of the counter at, if it did.
    pub fn increment_written(&self, id: u64) -> Option<Revision> {
        self.inner.lock().unwrap().increments.get(&id).copied()
    }

    /// Writes of the counter in the history.
    pub fn increments(&self) -> u64 {
        self.inner.lock().unwrap().increments.len() as u64
    }

    pub fn events(&self) -> u64 {
        self.inner.lock().unwrap().events
    }

    pub fn digest(&self) -> u64 {
        self.inner.lock().unwrap().digest
    }

    /// A client's guard of `name` says `is_valid()`: the store must agree, now.
    pub fn believes(&self, who: &str, name: &Name, kind: Kind, key: &str, token: u64) {
        let (keys, rev) = self.store.snapshot(&name.prefix);
        if self.trace {
            println!("{:>10.3} {who} believes it holds {} with {key}@{token}", now(), name.name);
        }
        if !admits(kind, &keys, &name.prefix, key, token as i64) {
            let holders: Vec<String> =
                keys.iter().take(3).map(|kv| format!("{}@{}", kv.key, kv.create_revision)).collect();
            self.violation(format!(
                "{who} believes it holds {} with {key}@{token} (is_valid() true) but at revision {rev} the store has {holders:?}",
                name.name
            ));
        }
    }

    /// A guard of the weighted semaphore `name` that asked for `n` permits: its key, if the
    /// store has it, must weigh `n` (the checker's own reading of the value), or the rule is
    /// checked against weights nobody asked for.
    pub fn weighs(&self, who: &str, name: &Name, key: &str, n: u32) {
        let (keys, rev) = self.store.snapshot(&name.prefix);
        if let Some(kv) = keys.iter().find(|kv| kv.key == key) {
            let stored = weight(&kv.value);
            if stored != u64::from(n) {
                self.violation(format!(
                    "{who} asked {} for {n} permits but at revision {rev} its key {key} weighs {stored} ({:?})",
                    name.name,
                    String::from_utf8_lossy(&kv.value)
                ));
            }
        }
    }

    /// Applies one batch of the history watch (revisions in order) and checks it.
    pub fn apply(&self, batch: Vec<WatchEvent>) {
        let mut inner = self.inner.lock().unwrap();
        let mut i = 0;
        while i < batch.len() {
            let rev = batch[i].revision();
            let mut j = i;
            while j < batch.len() && batch[j].revision() == rev {
                j += 1;
            }
            inner.events += (j - i) as u64;
            // Fenced writes are judged on the state before their revision (when the
            // transaction's conditions were checked).
            for event in &batch[i..j] {
                if let WatchEvent::Put(kv) = event {
                    if let Some(name) = self.names.iter().find(|n| n.data == kv.key) {
                        self.check_fenced(&mut inner, name, kv, rev);
                    }
                    if kv.key == COUNTER {
                        check_increment(&mut inner, kv, rev);
                    }
                }
            }
            for event in &batch[i..j] {
                let (tag, key) = match event {
                    WatchEvent::Put(kv) => (b'p', &kv.key),
                    WatchEvent::Delete { key, .. } => (b'd', key),
                };
                if self.trace {
                    let lease = match event {
                        WatchEvent::Put(kv) => format!(" lease {:x} created {}", kv.lease, kv.create_revision),
                        WatchEvent::Delete { .. } => String::new(),
                    };
                    println!("{:>10.3} rev {rev} {} {key}{lease}", now(), if tag == b'p' { "put" } else { "del" });
                }
                for byte in [tag].iter().chain(key.as_bytes()).chain(&rev.to_le_bytes()) {
                    inner.digest = (inner.digest ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
                }
                match event {
                    WatchEvent::Put(kv) => {
                        inner.replica.insert(kv.key.clone(), kv.clone());
                    }
                    WatchEvent::Delete { key, .. } => {
                        inner.replica.remove(key);
                    }
                }
            }
            i = j;
        }
    }

    fn check_fenced(&self, inner: &mut Inner, name: &Name, kv: &KeyValue, rev: Revision) {
        let token = std::str::from_utf8(&kv.value).ok().and_then(|v| v.parse::<i64>().ok());
        let keys = keys_under(&inner.replica, &name.prefix);
        let writer = token.and_then(|t| keys.iter().find(|k| k.create_revision == t));
        let ok = match (token, writer) {
            (Some(t), Some(w)) => admits(name.writes, &keys, &name.prefix, &w.key, t),
            _ => false,
        };
        if !ok {
            inner.violations.push(format!(
                "{}: fenced write {:?} accepted at revision {rev} from a token that did not hold then (keys {:?})",
                name.name,
                String::from_utf8_lossy(&kv.value),
                keys.iter().take(3).map(|k| format!("{}@{}", k.key, k.create_revision)).collect::<Vec<_>>()
            ));
        }
    }
}

/// A write of the counter at `rev` (judged on the value before it): it must add one to the
/// count it replaced (else it was computed from a stale value: an increment lost) and be an
/// increment not written before (else one increment counted twice).
fn check_increment(inner: &mut Inner, kv: &KeyValue, rev: Revision) {
    let before = inner.replica.get(COUNTER).map_or(Some(0), |kv| count(&kv.value));
    let (n, id) = (count(&kv.value), increment(&kv.value));
    if before.is_none() || n.is_none() || n != before.map(|b| b + 1) {
        inner.violations.push(format!(
            "register: write {:?} at revision {rev} replaced count {before:?}: not one more (an increment lost)",
            String::from_utf8_lossy(&kv.value)
        ));
    }
    match id {
        Some(id) => {
            if let Some(earlier) = inner.increments.insert(id, rev) {
                inner.violations.push(format!(
                    "register: increment {id} written twice, at revisions {earlier} and {rev} (counted twice)"
                ));
            }
        }
        None => inner.violations.push(format!(
            "register: write {:?} at revision {rev} names no increment",
            String::from_utf8_lossy(&kv.value)
        )),
    }
}

/// Simulated seconds since the start of the run (for traces).
pub fn now() -> f64 {
    use std::sync::OnceLock;
    static START: OnceLock<std::sync::Mutex<Option<tokio::time::Instant>>> = OnceLock::new();
    let start = START.get_or_init(Default::default);
    let mut start = start.lock().unwrap();
    let t0 = *start.get_or_insert_with(tokio::time::Instant::now);
    tokio::time::Instant::now().duration_since(t0).as_secs_f64()
}

/// The keys under `prefix` in `replica`, oldest create revision first.
fn keys_under(replica: &BTreeMap<String, KeyValue>, prefix: &str) -> Vec<KeyValue> {
    let mut keys: Vec<KeyValue> = replica
        .range(prefix.to_owned()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(_, kv)| kv.clone())
        .collect();
    keys.sort_by_key(|kv| kv.create_revision);
    keys
}
