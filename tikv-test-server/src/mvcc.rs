//! The test server's transactional store: Percolator-style MVCC as TiKV keeps it, in memory.
//!
//! Every key has at most one lock and a history of write records keyed by commit timestamp
//! (a rollback record sits at its transaction's start timestamp). Reads at a timestamp see
//! the newest committed value at or below it, and fail with the lock when a prewrite lock
//! at or below it may still commit. Prewrite detects write conflicts against newer
//! commits, pessimistic locks detect them against `for_update_ts`, and expired locks are
//! rolled back by `check_txn_status` and cleaned by `resolve_lock`, as in TiKV.
//!
//! All functions are synchronous; the service layer holds one mutex around the store and
//! implements lock waiting on top of [`Mvcc::pessimistic_lock`].

use crate::proto::kvrpcpb::{
    self, write_conflict, Action, AlreadyExist, KeyError, LockInfo, Mutation, Op, TxnNotFound, WriteConflict,
};
use std::collections::{BTreeMap, HashMap};

/// The physical part (milliseconds) of a TSO timestamp.
pub fn physical(ts: u64) -> u64 {
    ts >> 18
}

#[derive(Debug, Clone)]
enum LockKind {
    /// A pessimistic lock: blocks writers, not readers.
    Pessimistic { for_update_ts: u64 },
    /// A prewrite lock carrying the mutation to commit.
    Prewrite { op: Op, value: Vec<u8> },
}

#[derive(Debug, Clone)]
struct Lock {
    ts: u64,
    primary: Vec<u8>,
    ttl: u64,
    kind: LockKind,
}

#[derive(Debug, Clone, PartialEq)]
enum WriteKind {
    Put(Vec<u8>),
    Delete,
    Lock,
    Rollback,
}

#[derive(Debug, Clone)]
struct Record {
    start_ts: u64,
    kind: WriteKind,
}

#[derive(Debug, Default)]
struct Entry {
    lock: Option<Lock>,
    /// Write records by commit timestamp (rollbacks at their start timestamp).
    writes: BTreeMap<u64, Record>,
    /// The key in `writes` of each transaction's record, by its start timestamp: finding
    /// it by a walk over `writes` made every prewrite of a key cost one step per version
    /// of it, and a long flash sale ran a fifth slower than a fresh one.
    by_start: HashMap<u64, u64>,
}

/// The outcome of a pessimistic lock request.
#[derive(Debug)]
pub enum LockOutcome {
    /// Locked; values (and not-found flags) in request order if asked for.
    Locked { values: Vec<Vec<u8>>, not_founds: Vec<bool> },
    /// Another transaction holds a lock on a key; wait for it or report it.
    Blocked(LockInfo),
    /// The request failed (write conflict, key exists…); nothing was locked.
    Failed(Vec<KeyError>),
}

/// The in-memory MVCC store.
#[derive(Debug, Default)]
pub struct Mvcc {
    keys: BTreeMap<Vec<u8>, Entry>,
}

fn lock_info(key: &[u8], lock: &Lock) -> LockInfo {
    let (lock_type, for_update_ts) = match &lock.kind {
        LockKind::Pessimistic { for_update_ts } => (Op::PessimisticLock, *for_update_ts),
        LockKind::Prewrite { op, .. } => (*op, 0),
    };
    LockInfo {
        primary_lock: lock.primary.clone(),
        lock_version: lock.ts,
        key: key.to_vec(),
        lock_ttl: lock.ttl,
        txn_size: 1,
        lock_type: lock_type as i32,
        lock_for_update_ts: for_update_ts,
        ..Default::default()
    }
}

/// A key error carrying a lock.
pub fn locked(info: LockInfo) -> KeyError {
    KeyError { locked: Some(info), ..Default::default() }
}

fn abort(msg: impl Into<String>) -> KeyError {
    KeyError { abort: msg.into(), ..Default::default() }
}

fn conflict(start_ts: u64, key: &[u8], primary: &[u8], commit_ts: u64, rec: &Record, reason: i32) -> KeyError {
    KeyError {
        conflict: Some(WriteConflict {
            start_ts,
            conflict_ts: rec.start_ts,
            key: key.to_vec(),
            primary: primary.to_vec(),
            conflict_commit_ts: commit_ts,
            reason,
        }),
        ..Default::default()
    }
}

impl Entry {
    /// The newest data-changing commit (put, delete or lock record), if any.
    fn latest_commit(&self) -> Option<(u64, &Record)> {
        self.writes.iter().rev().find(|(_, r)| r.kind != WriteKind::Rollback).map(|(ts, r)| (*ts, r))
    }

    /// The value visible at `ts`, ignoring locks.
    fn value_at(&self, ts: u64) -> Option<&Vec<u8>> {
        self.writes.range(..=ts).rev().find_map(|(_, r)| match &r.kind {
            WriteKind::Put(v) => Some(Some(v)),
            WriteKind::Delete => Some(None),
            WriteKind::Lock | WriteKind::Rollback => None,
        })?
    }

    /// The commit timestamp of the transaction that started at `start_ts`, or `Some(0)` if it
    /// was rolled back here.
    fn status_of(&self, start_ts: u64) -> Option<u64> {
        let ts = *self.by_start.get(&start_ts)?;
        self.writes.get(&ts).filter(|r| r.start_ts == start_ts).map(|r| match r.kind {
            WriteKind::Rollback => 0,
            _ => ts,
        })
    }

    /// Adds a write record at `ts` (one already there is replaced).
    fn record(&mut self, ts: u64, rec: Record) {
        let start = rec.start_ts;
        if let Some(old) = self.writes.insert(ts, rec) {
            if old.start_ts != start && self.by_start.get(&old.start_ts) == Some(&ts) {
                self.by_start.remove(&old.start_ts);
            }
        }
        self.by_start.insert(start, ts);
    }
}

impl Mvcc {
    /// A snapshot read of one key: the value at `ts`, or the lock that hides it.
    pub fn get(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>, LockInfo> {
        let Some(e) = self.keys.get(key) else { return Ok(None) };
        if let Some(lock) = &e.lock {
            // A prewrite lock at or below the read timestamp may commit below it: the reader
            // must resolve it first. Pessimistic and Lock-op locks never hide data.
            if let LockKind::Prewrite { op: Op::Put | Op::Del | Op::Insert, .. } = lock.kind {
                if lock.ts <= ts {
                    return Err(lock_info(key, lock));
                }
            }
        }
        Ok(e.value_at(ts).cloned())
    }

    /// A snapshot scan of `[start, end)` (end empty: unbounded), at most `limit` pairs.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize, ts: u64, reverse: bool) -> ScanResult {
        let in_range = |k: &[u8]| end.is_empty() || k < end;
        let keys: Box<dyn Iterator<Item = &Vec<u8>>> = if reverse {
            // For a reverse scan TiKV reads [end_key, start_key): start is the upper bound.
            let upper = start;
            Box::new(
                self.keys
                    .keys()
                    .rev()
                    .filter(move |k| (upper.is_empty() || k.as_slice() < upper) && k.as_slice() >= end),
            )
        } else {
            Box::new(self.keys.range(start.to_vec()..).map(|(k, _)| k).take_while(move |k| in_range(k)))
        };
        let mut pairs = Vec::new();
        for k in keys {
            if pairs.len() >= limit {
                break;
            }
            match self.get(k, ts) {
                Ok(Some(v)) => pairs.push((k.clone(), v)),
                Ok(None) => {}
                Err(lock) => return Err(lock),
            }
        }
        Ok(pairs)
    }

    /// The first phase of two-phase commit: all mutations are locked, or none.
    pub fn prewrite(&mut self, req: &kvrpcpb::PrewriteRequest) -> Vec<KeyError> {
        let start = req.start_version;
        let pessimistic = req.for_update_ts != 0;
        let mut errors = Vec::new();
        for (i, m) in req.mutations.iter().enumerate() {
            let e = self.keys.get(&m.key);
            let must_be_locked = req.pessimistic_actions.get(i).copied()
                == Some(kvrpcpb::prewrite_request::PessimisticAction::DoPessimisticCheck as i32);
            let mine = match e.and_then(|e| e.lock.as_ref()) {
                Some(l) if l.ts != start => {
                    errors.push(locked(lock_info(&m.key, l)));
                    continue;
                }
                Some(l) => Some(l),
                None => None,
            };
            if let Some(l) = mine {
                if matches!(l.kind, LockKind::Prewrite { .. }) {
                    continue; // a retried prewrite
                }
            } else if pessimistic && must_be_locked {
                errors.push(abort(format!("pessimistic lock not found for txn {start}")));
                continue;
            }
            let Some(e) = e else { continue };
            if e.status_of(start).is_some() {
                let rec = Record { start_ts: start, kind: WriteKind::Rollback };
                errors.push(conflict(
                    start,
                    &m.key,
                    &req.primary_lock,
                    0,
                    &rec,
                    write_conflict::Reason::SelfRolledBack as i32,
                ));
                continue;
            }
            if mine.is_none() {
                let bound = if pessimistic { req.for_update_ts } else { start };
                if let Some((ts, rec)) = e.latest_commit().filter(|(ts, _)| *ts > bound) {
                    errors.push(conflict(
                        start,
                        &m.key,
                        &req.primary_lock,
                        ts,
                        rec,
                        write_conflict::Reason::Optimistic as i32,
                    ));
                    continue;
                }
            }
            let op = Op::try_from(m.op).unwrap_or(Op::Put);
            if matches!(op, Op::Insert | Op::CheckNotExists) && e.value_at(u64::MAX).is_some() {
                errors
                    .push(KeyError { already_exist: Some(AlreadyExist { key: m.key.clone() }), ..Default::default() });
            }
        }
        if !errors.is_empty() {
            return errors;
        }
        for m in &req.mutations {
            let op = Op::try_from(m.op).unwrap_or(Op::Put);
            if op == Op::CheckNotExists {
                continue;
            }
            let op = if op == Op::Insert { Op::Put } else { op };
            let entry = self.keys.entry(m.key.clone()).or_default();
            entry.lock = Some(Lock {
                ts: start,
                primary: req.primary_lock.clone(),
                ttl: req.lock_ttl,
                kind: LockKind::Prewrite { op, value: m.value.clone() },
            });
        }
        Vec::new()
    }

    /// The second phase: turns this transaction's prewrite locks into write records.
    pub fn commit(&mut self, keys: &[Vec<u8>], start: u64, commit_ts: u64) -> Option<KeyError> {
        for key in keys {
            let e = self.keys.get(key);
            match e.and_then(|e| e.lock.as_ref()) {
                Some(Lock { ts, kind: LockKind::Prewrite { .. }, .. }) if *ts == start => {}
                _ => match e.and_then(|e| e.status_of(start)) {
                    Some(0) => return Some(abort(format!("txn {start} already rolled back"))),
                    Some(_) => {}
                    None => return Some(abort(format!("txn {start}: lock not found"))),
                },
            }
        }
        for key in keys {
            let e = self.keys.get_mut(key).expect("checked");
            if e.lock.as_ref().is_some_and(|l| l.ts == start) {
                let Some(Lock { kind: LockKind::Prewrite { op, value }, .. }) = e.lock.take() else { continue };
                let kind = match op {
                    Op::Put => WriteKind::Put(value),
                    Op::Del => WriteKind::Delete,
                    _ => WriteKind::Lock,
                };
                e.record(commit_ts, Record { start_ts: start, kind });
            }
        }
        None
    }

    /// Removes this transaction's locks on `keys` and leaves rollback records.
    pub fn rollback(&mut self, keys: &[Vec<u8>], start: u64) -> Option<KeyError> {
        for key in keys {
            if let Some(ts) = self.keys.get(key).and_then(|e| e.status_of(start)).filter(|ts| *ts > 0) {
                return Some(abort(format!("txn {start} already committed at {ts}")));
            }
        }
        for key in keys {
            self.rollback_key(key, start);
        }
        None
    }

    fn rollback_key(&mut self, key: &[u8], start: u64) {
        let e = self.keys.entry(key.to_vec()).or_default();
        if e.lock.as_ref().is_some_and(|l| l.ts == start) {
            e.lock = None;
        }
        if e.status_of(start).is_none() {
            e.record(start, Record { start_ts: start, kind: WriteKind::Rollback });
        }
    }

    /// Tries to take pessimistic locks on every mutation's key (all or none).
    pub fn pessimistic_lock(&mut self, req: &kvrpcpb::PessimisticLockRequest) -> LockOutcome {
        let start = req.start_version;
        let mut errors = Vec::new();
        for m in &req.mutations {
            let Some(e) = self.keys.get(&m.key) else { continue };
            match &e.lock {
                Some(l) if l.ts != start => return LockOutcome::Blocked(lock_info(&m.key, l)),
                Some(_) => continue, // already ours
                None => {}
            }
            if e.status_of(start) == Some(0) {
                errors.push(abort(format!("txn {start} already rolled back")));
            } else if let Some((ts, rec)) = e.latest_commit().filter(|(ts, _)| *ts > req.for_update_ts) {
                errors.push(conflict(
                    start,
                    &m.key,
                    &req.primary_lock,
                    ts,
                    rec,
                    write_conflict::Reason::PessimisticRetry as i32,
                ));
            } else if m.assertion == kvrpcpb::Assertion::NotExist as i32 && e.value_at(u64::MAX).is_some() {
                errors
                    .push(KeyError { already_exist: Some(AlreadyExist { key: m.key.clone() }), ..Default::default() });
            }
        }
        if !errors.is_empty() {
            return LockOutcome::Failed(errors);
        }
        let (mut values, mut not_founds) = (Vec::new(), Vec::new());
        for m in &req.mutations {
            let e = self.keys.entry(m.key.clone()).or_default();
            match &mut e.lock {
                Some(Lock { kind: LockKind::Pessimistic { for_update_ts }, .. }) => {
                    *for_update_ts = (*for_update_ts).max(req.for_update_ts)
                }
                Some(_) => {}
                None => {
                    e.lock = Some(Lock {
                        ts: start,
                        primary: req.primary_lock.clone(),
                        ttl: req.lock_ttl,
                        kind: LockKind::Pessimistic { for_update_ts: req.for_update_ts },
                    })
                }
            }
            if req.return_values {
                let v = e.value_at(u64::MAX).cloned();
                not_founds.push(v.is_none());
                values.push(v.unwrap_or_default());
            }
        }
        LockOutcome::Locked { values, not_founds }
    }

    /// Releases this transaction's pessimistic locks (not its prewrite locks).
    pub fn pessimistic_rollback(&mut self, keys: &[Vec<u8>], start: u64, for_update_ts: u64) {
        for key in keys {
            if let Some(e) = self.keys.get_mut(key) {
                if let Some(Lock { ts, kind: LockKind::Pessimistic { for_update_ts: f }, .. }) = &e.lock {
                    if *ts == start && *f <= for_update_ts {
                        e.lock = None;
                    }
                }
            }
        }
    }

    /// Extends the TTL of the transaction's primary lock; returns the TTL it now has.
    pub fn heart_beat(&mut self, primary: &[u8], start: u64, advise_ttl: u64) -> Result<u64, KeyError> {
        match self.keys.get_mut(primary).and_then(|e| e.lock.as_mut()) {
            Some(l) if l.ts == start => {
                l.ttl = l.ttl.max(advise_ttl);
                Ok(l.ttl)
            }
            _ => Err(KeyError {
                txn_not_found: Some(TxnNotFound { start_ts: start, primary_key: primary.to_vec() }),
                ..Default::default()
            }),
        }
    }

    /// The status of the transaction whose primary is `req.primary_key`: rolls back its
    /// primary lock if its TTL ran out by `current_ts`.
    /// Returns (lock_ttl, commit_version, action, lock_info).
    pub fn check_txn_status(
        &mut self,
        req: &kvrpcpb::CheckTxnStatusRequest,
    ) -> Result<(u64, u64, Action, Option<LockInfo>), KeyError> {
        let key = &req.primary_key;
        let start = req.lock_ts;
        if let Some(l) = self.keys.get(key).and_then(|e| e.lock.as_ref()).filter(|l| l.ts == start) {
            if physical(l.ts) + l.ttl <= physical(req.current_ts) {
                let pessimistic = matches!(l.kind, LockKind::Pessimistic { .. });
                if pessimistic {
                    self.keys.get_mut(key).expect("present").lock = None;
                    return Ok((0, 0, Action::TtlExpirePessimisticRollback, None));
                }
                self.rollback_key(key, start);
                return Ok((0, 0, Action::TtlExpireRollback, None));
            }
            return Ok((l.ttl, 0, Action::NoAction, Some(lock_info(key, l))));
        }
        match self.keys.get(key).and_then(|e| e.status_of(start)) {
            Some(commit_ts) => Ok((0, commit_ts, Action::NoAction, None)),
            None if req.rollback_if_not_exist => {
                self.rollback_key(key, start);
                Ok((0, 0, Action::LockNotExistRollback, None))
            }
            None => Err(KeyError {
                txn_not_found: Some(TxnNotFound { start_ts: start, primary_key: key.clone() }),
                ..Default::default()
            }),
        }
    }

    /// Commits (`commit_ts > 0`) or rolls back the locks of transaction `start` on `keys`, or
    /// on every key when `keys` is empty. Pessimistic locks are only removed.
    pub fn resolve_lock(&mut self, start: u64, commit_ts: u64, keys: &[Vec<u8>]) {
        let keys: Vec<Vec<u8>> = if keys.is_empty() {
            self.keys
                .iter()
                .filter(|(_, e)| e.lock.as_ref().is_some_and(|l| l.ts == start))
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            keys.to_vec()
        };
        for key in keys {
            let pessimistic = match self.keys.get(&key).and_then(|e| e.lock.as_ref()) {
                Some(l) if l.ts == start => matches!(l.kind, LockKind::Pessimistic { .. }),
                _ => continue,
            };
            if pessimistic {
                self.keys.get_mut(&key).expect("present").lock = None;
            } else if commit_ts > 0 {
                let _ = self.commit(std::slice::from_ref(&key), start, commit_ts);
            } else {
                self.rollback_key(&key, start);
            }
        }
    }

    /// Number of keys that have a lock (for tests).
    pub fn lock_count(&self) -> usize {
        self.keys.values().filter(|e| e.lock.is_some()).count()
    }
}

/// A scan's pairs, or the lock that stopped it.
pub type ScanResult = Result<Vec<(Vec<u8>, Vec<u8>)>, LockInfo>;

/// A mutation (for unit tests).
pub fn mutation(op: Op, key: &[u8], value: &[u8]) -> Mutation {
    Mutation { op: op as i32, key: key.to_vec(), value: value.to_vec(), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prewrite(m: &mut Mvcc, start: u64, muts: Vec<Mutation>) -> Vec<KeyError> {
        let primary = muts[0].key.clone();
        m.prewrite(&kvrpcpb::PrewriteRequest {
            mutations: muts,
            primary_lock: primary,
            start_version: start,
            lock_ttl: 3000,
            ..Default::default()
        })
    }

    #[test]
    fn snapshot_reads_see_commits_at_or_below_their_timestamp() {
        let mut m = Mvcc::default();
        assert!(prewrite(&mut m, 10, vec![mutation(Op::Put, b"k", b"v1")]).is_empty());
        assert_eq!(m.get(b"k", 11).unwrap_err().lock_version, 10, "a pending prewrite hides the key");
        assert_eq!(m.get(b"k", 9).unwrap(), None, "older readers do not wait");
        assert!(m.commit(&[b"k".to_vec()], 10, 20).is_none());
        assert_eq!(m.get(b"k", 19).unwrap(), None);
        assert_eq!(m.get(b"k", 20).unwrap(), Some(b"v1".to_vec()));
        assert!(prewrite(&mut m, 30, vec![mutation(Op::Del, b"k", b"")]).is_empty());
        assert!(m.commit(&[b"k".to_vec()], 30, 31).is_none());
        assert_eq!(m.get(b"k", 25).unwrap(), Some(b"v1".to_vec()));
        assert_eq!(m.get(b"k", 40).unwrap(), None);
    }

    #[test]
    fn prewrite_detects_write_conflicts_and_locks() {
        let mut m = Mvcc::default();
        assert!(prewrite(&mut m, 10, vec![mutation(Op::Put, b"a", b"1")]).is_empty());
        let errs = prewrite(&mut m, 12, vec![mutation(Op::Put, b"a", b"2")]);
        assert_eq!(errs[0].locked.as_ref().unwrap().lock_version, 10);
        assert!(m.commit(&[b"a".to_vec()], 10, 15).is_none());
        let errs = prewrite(&mut m, 12, vec![mutation(Op::Put, b"b", b"x"), mutation(Op::Put, b"a", b"2")]);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].conflict.as_ref().unwrap().conflict_commit_ts, 15);
        assert_eq!(m.lock_count(), 0, "a failed prewrite locks nothing");
        let errs = prewrite(&mut m, 16, vec![mutation(Op::Insert, b"a", b"3")]);
        assert!(errs[0].already_exist.is_some());
    }

    /// A transaction's record is found by its start timestamp among many versions of the
    /// key (the index `by_start`), and a record replaced at the same timestamp no longer
    /// answers for its transaction.
    #[test]
    fn a_transactions_record_is_found_among_many_versions() {
        let mut m = Mvcc::default();
        for i in 0..1000u64 {
            let start = 10 * i + 1;
            assert!(prewrite(&mut m, start, vec![mutation(Op::Put, b"k", &i.to_be_bytes())]).is_empty());
            assert!(m.commit(&[b"k".to_vec()], start, start + 2).is_none());
        }
        let e = &m.keys[b"k".as_slice()];
        assert_eq!(e.status_of(1), Some(3));
        assert_eq!(e.status_of(9991), Some(9993));
        assert_eq!(e.status_of(5), None, "no transaction started at 5");
        assert!(m.rollback(&[b"k".to_vec()], 9995).is_none());
        let e = &m.keys[b"k".as_slice()];
        assert_eq!(e.status_of(9995), Some(0), "rolled back");
        let mut e = Entry::default();
        e.record(7, Record { start_ts: 5, kind: WriteKind::Put(Vec::new()) });
        e.record(7, Record { start_ts: 7, kind: WriteKind::Rollback });
        assert_eq!((e.status_of(5), e.status_of(7)), (None, Some(0)), "the replaced record answers no more");
    }

    #[test]
    fn rollback_blocks_a_late_prewrite_and_commit() {
        let mut m = Mvcc::default();
        assert!(m.rollback(&[b"k".to_vec()], 10).is_none());
        let errs = prewrite(&mut m, 10, vec![mutation(Op::Put, b"k", b"v")]);
        assert_eq!(errs[0].conflict.as_ref().unwrap().reason, write_conflict::Reason::SelfRolledBack as i32);
        assert!(m.commit(&[b"k".to_vec()], 10, 11).is_some());
    }

    #[test]
    fn pessimistic_locks_block_writers_and_detect_newer_commits() {
        let mut m = Mvcc::default();
        let lock = |start, for_update_ts| kvrpcpb::PessimisticLockRequest {
            mutations: vec![mutation(Op::PessimisticLock, b"k", b"")],
            primary_lock: b"k".to_vec(),
            start_version: start,
            for_update_ts,
            lock_ttl: 20_000,
            return_values: true,
            ..Default::default()
        };
        assert!(
            matches!(m.pessimistic_lock(&lock(10, 10)), LockOutcome::Locked { ref not_founds, .. } if not_founds == &[true])
        );
        assert!(matches!(m.pessimistic_lock(&lock(11, 11)), LockOutcome::Blocked(ref l) if l.lock_version == 10));
        assert_eq!(m.get(b"k", 100).unwrap(), None, "readers pass a pessimistic lock");
        m.pessimistic_rollback(&[b"k".to_vec()], 10, 10);
        assert!(prewrite(&mut m, 12, vec![mutation(Op::Put, b"k", b"v")]).is_empty());
        assert!(m.commit(&[b"k".to_vec()], 12, 13).is_none());
        assert!(matches!(m.pessimistic_lock(&lock(11, 11)), LockOutcome::Failed(ref e) if e[0].conflict.is_some()));
        assert!(
            matches!(m.pessimistic_lock(&lock(11, 14)), LockOutcome::Locked { ref values, .. } if values == &[b"v".to_vec()])
        );
    }

    #[test]
    fn check_txn_status_rolls_back_only_expired_locks() {
        let mut m = Mvcc::default();
        let start = 1000 << 18;
        assert!(prewrite(&mut m, start, vec![mutation(Op::Put, b"p", b"v")]).is_empty());
        let check = |current_ms: u64| kvrpcpb::CheckTxnStatusRequest {
            primary_key: b"p".to_vec(),
            lock_ts: start,
            current_ts: current_ms << 18,
            ..Default::default()
        };
        let (ttl, commit, action, info) = m.check_txn_status(&check(2000)).unwrap();
        assert_eq!((ttl, commit, action, info.is_some()), (3000, 0, Action::NoAction, true));
        assert_eq!(m.heart_beat(b"p", start, 10_000).unwrap(), 10_000);
        assert_eq!(m.check_txn_status(&check(9000)).unwrap().2, Action::NoAction, "the heartbeat extended it");
        assert_eq!(m.check_txn_status(&check(11_000)).unwrap().2, Action::TtlExpireRollback);
        assert_eq!(m.lock_count(), 0);
        assert_eq!(m.check_txn_status(&check(11_000)).unwrap().1, 0, "now known as rolled back");
        assert!(m.commit(&[b"p".to_vec()], start, start + 1).is_some(), "a rolled-back txn cannot commit");
        let unknown = kvrpcpb::CheckTxnStatusRequest { lock_ts: 5, ..check(11_000) };
        assert!(m.check_txn_status(&unknown).unwrap_err().txn_not_found.is_some());
    }

    #[test]
    fn resolve_lock_commits_or_rolls_back_every_lock_of_a_txn() {
        let mut m = Mvcc::default();
        assert!(prewrite(&mut m, 10, vec![mutation(Op::Put, b"a", b"1"), mutation(Op::Put, b"b", b"2")]).is_empty());
        m.resolve_lock(10, 20, &[]);
        assert_eq!((m.get(b"a", 30).unwrap(), m.get(b"b", 30).unwrap()), (Some(b"1".to_vec()), Some(b"2".to_vec())));
        assert!(prewrite(&mut m, 40, vec![mutation(Op::Put, b"a", b"x")]).is_empty());
        m.resolve_lock(40, 0, &[]);
        assert_eq!(m.get(b"a", 50).unwrap(), Some(b"1".to_vec()));
        assert_eq!(m.lock_count(), 0);
    }

    #[test]
    fn scans_are_bounded_and_ordered() {
        let mut m = Mvcc::default();
        let muts = ["a", "b", "c", "d"].iter().map(|k| mutation(Op::Put, k.as_bytes(), b"v")).collect();
        assert!(prewrite(&mut m, 10, muts).is_empty());
        m.resolve_lock(10, 11, &[]);
        let keys =
            |r: ScanResult| r.unwrap().into_iter().map(|(k, _)| String::from_utf8(k).unwrap()).collect::<Vec<_>>();
        assert_eq!(keys(m.scan(b"b", b"d", 10, 20, false)), ["b", "c"]);
        assert_eq!(keys(m.scan(b"a", b"", 3, 20, false)), ["a", "b", "c"]);
        assert_eq!(keys(m.scan(b"d", b"a", 10, 20, true)), ["c", "b", "a"]);
        assert!(keys(m.scan(b"a", b"z", 10, 5, false)).is_empty());
    }
}
