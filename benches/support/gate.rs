//! Which way's contenders may start an update now: all of one cell's until it stops, or
//! with `--paired` one way of a row at a time, in slices, while every way's contenders stay
//! connected.
//!
//! A contender asks [`Gate::go`] before each update. While its way is active that is one
//! atomic load (as the old stop flag was); otherwise it publishes its count of completed
//! updates, parks, and waits for its way's next slice or the end. The conductor ends a
//! slice by making no way active and waiting until all of the way's contenders are parked
//! ([`Gate::drained`]): then every update begun in the slice has ended and been counted,
//! and the slice's time runs to the moment the last of them parked, so nothing spills into
//! the next way's slice. (A queued way drains later than its updates end: a contender that
//! parks holding a kept place in the lock's queue releases it after the requeue window,
//! and one behind it mid-update waits that long.)

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::watch;

/// No way is active (between two slices).
const NONE: usize = usize::MAX - 1;
/// The run is over.
const STOP: usize = usize::MAX;

/// One row's gate (see the module docs); ways are numbered from 0.
pub struct Gate {
    active: AtomicUsize,
    tx: watch::Sender<usize>,
    /// By way: contenders parked now.
    parked: Vec<AtomicUsize>,
    /// By way: completed updates published by contenders when they parked.
    done: Vec<AtomicU64>,
    /// By way: when its last contender parked, in nanoseconds from `base`.
    parked_at: Vec<AtomicU64>,
    base: Instant,
}

impl Gate {
    /// A gate for `ways` ways, with `active` (a way's number) active from the start, or none.
    pub fn new(ways: usize, active: Option<usize>) -> Self {
        let active = active.unwrap_or(NONE);
        Self {
            active: AtomicUsize::new(active),
            tx: watch::Sender::new(active),
            parked: (0..ways).map(|_| AtomicUsize::new(0)).collect(),
            done: (0..ways).map(|_| AtomicU64::new(0)).collect(),
            parked_at: (0..ways).map(|_| AtomicU64::new(0)).collect(),
            base: Instant::now(),
        }
    }

    fn set(&self, active: usize) {
        self.active.store(active, Ordering::SeqCst);
        self.tx.send_replace(active);
    }

    /// Way `way` runs from now.
    pub fn activate(&self, way: usize) {
        self.set(way);
    }

    /// No way starts another update (those running end).
    pub fn pause(&self) {
        self.set(NONE);
    }

    /// The run is over: every contender's next `go` is false.
    pub fn stop(&self) {
        self.set(STOP);
    }

    /// Waits until all `contenders` of `way` are parked: the updates they have completed so
    /// far, and when the last of them parked (the end of its turn, to the nanosecond, however
    /// late this poll sees it). `None` once `alive()` says a contender has ended: it would
    /// never park.
    pub async fn drained(&self, way: usize, contenders: usize, alive: impl Fn() -> bool) -> Option<(u64, Instant)> {
        while self.parked[way].load(Ordering::SeqCst) < contenders {
            if !alive() {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
        let at = self.base + std::time::Duration::from_nanos(self.parked_at[way].load(Ordering::SeqCst));
        Some((self.done[way].load(Ordering::SeqCst), at))
    }

    /// Whether a contender of `way`, which has completed `completed` updates (of which
    /// `published` are published), may start another one; false once the run is over.
    pub async fn go(&self, way: usize, completed: usize, published: &mut usize) -> bool {
        match self.active.load(Ordering::Acquire) {
            a if a == way => return true,
            STOP => return false,
            _ => {}
        }
        let mut rx = self.tx.subscribe();
        // Published before it counts as parked: a drained way's count is complete.
        self.done[way].fetch_add((completed - *published) as u64, Ordering::SeqCst);
        *published = completed;
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.parked_at[way].fetch_max(now, Ordering::SeqCst);
        self.parked[way].fetch_add(1, Ordering::SeqCst);
        let next = rx.wait_for(|&a| a == way || a == STOP).await.map(|a| *a).unwrap_or(STOP);
        self.parked[way].fetch_sub(1, Ordering::SeqCst);
        next != STOP
    }
}
