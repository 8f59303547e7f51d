//! Reads a recorded history and finds violations. Pure: the unit tests feed it by hand.

use crate::HIST;
use leasehold::backend::KeyValue;
use std::collections::{BTreeMap, HashMap};

/// One accepted history entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The store revision that accepted it.
    pub rev: i64,
    /// The writer's fencing token.
    pub token: u64,
    /// The worker process that wrote it.
    pub worker: usize,
}

/// Entries under `<HIST><resource>/`, in store order.
pub fn parse(resource: &str, kvs: &[KeyValue]) -> Vec<Entry> {
    let prefix = format!("{HIST}{resource}/");
    let mut entries: Vec<Entry> = kvs
        .iter()
        .map(|kv| {
            let rest = kv.key.strip_prefix(&prefix).unwrap_or_else(|| panic!("foreign key {}", kv.key));
            let parts: Vec<&str> = rest.split('/').collect();
            assert_eq!(parts.len(), 4, "malformed history key {}", kv.key);
            Entry { rev: kv.mod_revision, token: parts[0].parse().unwrap(), worker: parts[1].parse().unwrap() }
        })
        .collect();
    entries.sort_by_key(|e| e.rev);
    entries
}

/// What the checker found for one resource.
#[derive(Debug, Default)]
pub struct Report {
    /// Accepted entries.
    pub writes: usize,
    /// Distinct holders (tokens) that had writes accepted.
    pub holders: usize,
    /// Entries accepted with a token below one accepted before (exclusive resources).
    pub stale: Vec<String>,
    /// The most holders "in" at one revision.
    pub max_at_once: usize,
    /// Entries at whose revision more holders than the limit were in.
    pub over_limit: Vec<String>,
}

impl Report {
    pub fn violations(&self) -> usize {
        self.stale.len() + self.over_limit.len()
    }
}

/// Checks `entries` (store order) of a resource that admits `limit` holders at once;
/// `exclusive` also demands non-decreasing tokens (a mutex).
///
/// "At once": a holder (token) is in from the revision of its first accepted entry to
/// that of its last, inclusive. With fenced writes that interval lies inside the time
/// its key existed; a semaphore admitting more than `limit` would show as more than
/// `limit` intervals covering one revision.
pub fn check(entries: &[Entry], limit: usize, exclusive: bool) -> Report {
    let mut report = Report { writes: entries.len(), ..Report::default() };
    let mut span: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
    let mut highest = 0;
    for e in entries {
        if exclusive && e.token < highest {
            report
                .stale
                .push(format!("rev {}: token {} (worker {}) accepted after token {highest}", e.rev, e.token, e.worker));
        }
        highest = highest.max(e.token);
        let s = span.entry(e.token).or_insert((e.rev, e.rev));
        s.0 = s.0.min(e.rev);
        s.1 = s.1.max(e.rev);
    }
    report.holders = span.len();
    let mut firsts: Vec<i64> = span.values().map(|s| s.0).collect();
    let mut lasts: Vec<i64> = span.values().map(|s| s.1).collect();
    firsts.sort_unstable();
    lasts.sort_unstable();
    for e in entries {
        let started = firsts.partition_point(|&f| f <= e.rev);
        let ended = lasts.partition_point(|&l| l < e.rev);
        let inside = started - ended;
        report.max_at_once = report.max_at_once.max(inside);
        if inside > limit {
            report.over_limit.push(format!("rev {}: {inside} holders in (limit {limit})", e.rev));
        }
    }
    report
}

/// What a worker saw of one of its writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Said {
    /// Acknowledged: the store applied it.
    Acked,
    /// Refused with `NotHeld`: the store did not apply it.
    Refused,
    /// Failed with a transient error: it may or may not have been applied.
    Unknown,
}

impl Said {
    pub fn word(self) -> &'static str {
        match self {
            Said::Acked => "acked",
            Said::Refused => "refused",
            Said::Unknown => "unknown",
        }
    }

    pub fn parse(word: &str) -> Option<Said> {
        [Said::Acked, Said::Refused, Said::Unknown].into_iter().find(|s| s.word() == word)
    }
}

/// What the key-by-key check of the writes found.
#[derive(Debug, Default)]
pub struct WriteReport {
    pub acked: usize,
    pub refused: usize,
    pub unknown: usize,
    /// Writes of unknown outcome found in the store.
    pub unknown_stored: usize,
    /// Acknowledged writes not in the store.
    pub lost: Vec<String>,
    /// Refused writes in the store.
    pub refused_stored: Vec<String>,
    /// Stored entries no worker reported (or a key reported twice).
    pub unaccounted: Vec<String>,
}

impl WriteReport {
    pub fn violations(&self) -> usize {
        self.lost.len() + self.refused_stored.len() + self.unaccounted.len()
    }
}

/// Checks what the workers `said` of each write against the `stored` history keys, key by
/// key: every acknowledged write is stored, no refused one is, and every stored entry was
/// reported acknowledged or of unknown outcome.
///
/// Key by key, not in counts per worker: with counts, one lost acknowledged write hides
/// behind one write of unknown outcome that landed (stored = acknowledged, and at most
/// acknowledged + unknown), which is what [`Plant::LostAck`](crate::worker::Plant::LostAck) plants.
pub fn writes(said: &[(Said, String)], stored: &[String]) -> WriteReport {
    let mut report = WriteReport::default();
    let stored: std::collections::HashSet<&str> = stored.iter().map(String::as_str).collect();
    let mut by_key: HashMap<&str, Said> = HashMap::new();
    for (s, key) in said {
        if by_key.insert(key, *s).is_some() {
            report.unaccounted.push(format!("{key}: reported twice"));
        }
        let in_store = stored.contains(key.as_str());
        match s {
            Said::Acked => {
                report.acked += 1;
                if !in_store {
                    report.lost.push(format!("{key}: acknowledged, not in the store"));
                }
            }
            Said::Refused => {
                report.refused += 1;
                if in_store {
                    report.refused_stored.push(format!("{key}: refused, yet in the store"));
                }
            }
            Said::Unknown => {
                report.unknown += 1;
                report.unknown_stored += usize::from(in_store);
            }
        }
    }
    let mut unreported: Vec<&str> = stored.iter().copied().filter(|k| !by_key.contains_key(k)).collect();
    unreported.sort_unstable();
    report.unaccounted.extend(unreported.into_iter().map(|k| format!("{k}: in the store, reported by no worker")));
    report
}

// ---- the checker on hand-made histories ----------------------------------------------

/// The checker fed by hand: clean and corrupted histories, and write reports.
mod tests {
    use super::*;
    use crate::checker;

    fn entries(list: &[(i64, u64)]) -> Vec<checker::Entry> {
        list.iter().map(|&(rev, token)| checker::Entry { rev, token, worker: 0 }).collect()
    }

    #[test]
    fn checker_accepts_a_clean_mutex_history() {
        // Three holders one after another (tokens 10, 14, 20), two writes each.
        let r = checker::check(&entries(&[(11, 10), (12, 10), (15, 14), (16, 14), (21, 20), (22, 20)]), 1, true);
        assert_eq!((r.violations(), r.holders, r.max_at_once), (0, 3, 1));
    }

    #[test]
    fn checker_catches_a_stale_write() {
        // Holder 10 paused; holder 14 wrote; then 10's late write was accepted.
        let r = checker::check(&entries(&[(11, 10), (15, 14), (16, 14), (17, 10)]), 1, true);
        assert_eq!(r.stale.len(), 1, "{r:?}");
        assert!(r.stale[0].contains("token 10") && r.stale[0].contains("after token 14"));
        assert!(!r.over_limit.is_empty(), "10 is in from 11 to 17, overlapping 14: {r:?}");
    }

    #[test]
    fn checker_catches_two_holders_at_once_even_with_increasing_tokens() {
        // 10 writes at 11 and 13; 12 writes at 12 (tokens never go down, but the holds overlap).
        let r = checker::check(&entries(&[(11, 10), (12, 12), (13, 12), (14, 10)]), 1, true);
        assert!(!r.over_limit.is_empty(), "{r:?}");
    }

    #[test]
    fn checker_counts_semaphore_holders_at_once() {
        // Limit 2: holders 5 and 6 overlap (fine); 7 enters while both are in (not fine).
        let ok = checker::check(&entries(&[(8, 5), (9, 6), (10, 5), (11, 6), (12, 7), (13, 7)]), 2, false);
        assert_eq!((ok.violations(), ok.max_at_once), (0, 2));
        let bad = checker::check(&entries(&[(8, 5), (9, 6), (10, 7), (11, 5), (12, 6), (13, 7)]), 2, false);
        assert_eq!(bad.max_at_once, 3);
        assert!(!bad.over_limit.is_empty());
        assert!(bad.stale.is_empty(), "tokens are not ordered for a semaphore");
    }

    #[test]
    fn checker_parses_history_keys_in_store_order() {
        let kv = |key: &str, rev| KeyValue {
            key: key.into(),
            value: b"enter".to_vec(),
            create_revision: rev,
            mod_revision: rev,
            lease: 0,
        };
        let kvs = [kv(&format!("{HIST}m/{:020}/3/0/2", 14), 16), kv(&format!("{HIST}m/{:020}/1/0/1", 10), 11)];
        let parsed = checker::parse("m", &kvs);
        assert_eq!(
            parsed,
            vec![checker::Entry { rev: 11, token: 10, worker: 1 }, checker::Entry { rev: 16, token: 14, worker: 3 },]
        );
    }

    fn said(list: &[(checker::Said, &str)]) -> Vec<(checker::Said, String)> {
        list.iter().map(|&(s, k)| (s, k.to_owned())).collect()
    }

    #[test]
    fn checker_finds_a_lost_ack_that_per_worker_counts_hide() {
        use checker::Said::{Acked, Unknown};
        // One worker: "a" acknowledged and stored, "b" of unknown outcome and stored, "c"
        // acknowledged and lost. Per-worker counts balance: 2 stored, 2 acknowledged, 1 unknown.
        let stored = ["a".to_owned(), "b".to_owned()];
        let r = checker::writes(&said(&[(Acked, "a"), (Unknown, "b"), (Acked, "c")]), &stored);
        let (acked, unknown) = (2, 1);
        assert!(stored.len() >= acked && stored.len() <= acked + unknown, "the counts see nothing");
        assert_eq!(r.lost, vec!["c: acknowledged, not in the store".to_owned()]);
        assert_eq!((r.violations(), r.acked, r.unknown, r.unknown_stored), (1, 2, 1, 1));
    }

    #[test]
    fn checker_finds_refused_writes_stored_and_stored_entries_unreported() {
        use checker::Said::{Acked, Refused, Unknown};
        let stored = ["a".to_owned(), "r".to_owned(), "x".to_owned()];
        let r = checker::writes(&said(&[(Acked, "a"), (Refused, "r"), (Unknown, "u"), (Refused, "s")]), &stored);
        assert_eq!(r.refused_stored, vec!["r: refused, yet in the store".to_owned()]);
        assert_eq!(r.unaccounted, vec!["x: in the store, reported by no worker".to_owned()]);
        assert!(r.lost.is_empty());
        assert_eq!((r.violations(), r.unknown_stored), (2, 0));
        let twice = checker::writes(&said(&[(Acked, "a"), (Unknown, "a")]), &stored[..1]);
        assert_eq!(twice.unaccounted, vec!["a: reported twice".to_owned()]);
    }
}
