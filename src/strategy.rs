//! How an acquisition or an update contends: the strategies every recipe offers.

/// How an acquisition contends (for a [`Mutex`](crate::Mutex), a [`Semaphore`](crate::Semaphore),
/// an [`RwLock`](crate::RwLock) or an [`Election`](crate::Election)'s campaign), or an update of a
/// [`Register`](crate::Register) (see each for what the strategies mean for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// A fair FIFO queue (etcd's recipe): enqueue a key, wait for the one ahead to go.
    /// One write per acquisition; one waiter wakes per release.
    #[default]
    Pessimistic,
    /// Compare-and-swap: create the key only if nobody holds the name; on conflict wait for
    /// the holder to go and retry after a jittered delay. No queue, not fair; cheapest when
    /// contention is rare. (A semaphore creates its key and deletes it again at once if the
    /// weights of the keys up to its own exceed N.)
    Optimistic,
    /// Starts optimistic, queues once it sees conflicts, and goes back when queueing finds
    /// nobody ahead (the policy is in `src/adaptive.rs`). Per handle; clones share it. A
    /// mutex, read-write lock or election handle queues from the first holder it meets (the
    /// acquisition that met it included); a register measures both modes (see there); a
    /// semaphore treats it as `Pessimistic`.
    Adaptive,
}

impl Strategy {
    /// Its name in lower case: `optimistic`, `pessimistic` or `adaptive` (what the CLI and
    /// the examples take on their command lines).
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Pessimistic => "pessimistic",
            Strategy::Optimistic => "optimistic",
            Strategy::Adaptive => "adaptive",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
