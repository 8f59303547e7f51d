//! What a semaphore's keys say: its stored count, and who holds how many permits.

use crate::error::{Error, Result};
use crate::guard::Holder;
use crate::queue::weight_of;

/// Where a semaphore whose keys are under `prefix` stores its permit count: `<namespace><name>`.
pub(crate) fn count_key_of(prefix: &str) -> &str {
    prefix.strip_suffix('/').expect("prefixes end with '/'")
}

/// The use of `permits` permits by the keys under `prefix`: oldest first, a key holds while
/// the weights up to its own sum to at most `permits` (the queue's rule), the rest wait.
pub(crate) async fn usage_of(backend: &dyn crate::Backend, prefix: &str, permits: u32) -> Result<Usage> {
    let (kvs, _) = backend.range_prefix(prefix, 0).await?;
    let total = kvs.len();
    let mut held = 0u64;
    let mut holders = Vec::new();
    for kv in kvs {
        let weight = weight_of(&kv.value);
        if held.saturating_add(weight) > u64::from(permits) {
            break;
        }
        held += weight;
        // At most `permits`, so it fits.
        holders.push(Holder { permits: weight as u32, ..Holder::of(kv) });
    }
    let waiting = total - holders.len();
    Ok(Usage { permits, holders, waiting })
}

/// The permit count stored at `count_key`, if `value` is one.
pub(crate) fn parse_count(count_key: &str, value: &[u8]) -> Result<u32> {
    let stored = std::str::from_utf8(value).ok().and_then(|s| s.parse::<u32>().ok()).filter(|&n| n > 0);
    stored.ok_or_else(|| {
        let text = String::from_utf8_lossy(value);
        Error::Store(format!("semaphore: {count_key} holds {text:?}, not a permit count").into())
    })
}

/// The value of a semaphore key for an acquisition of `permits` permits: empty for one (as
/// every version writes it), else the count as decimal text.
pub(crate) fn weight_value(permits: u32) -> Vec<u8> {
    // Planted bug (see scripts/sim.sh): a key of two permits is written as one of one.
    #[cfg(leasehold_permits_mutation_light)]
    if permits == 2 {
        return Vec::new();
    }
    if permits == 1 {
        Vec::new()
    } else {
        permits.to_string().into_bytes()
    }
}

/// A [`Semaphore`](crate::Semaphore)'s permits in use, from
/// [`Semaphore::usage`](crate::Semaphore::usage).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
/// use leasehold::{Client, Semaphore};
/// let session = Client::memory().session().await?;
/// let gpus = Semaphore::new(&session, "gpus", 4)?;
/// let job = gpus.acquire_many(3).await?;
/// let usage = gpus.usage().await?;
/// assert_eq!((usage.holders.len(), usage.held(), usage.available()), (1, 3, 1));
/// assert_eq!(usage.holders[0].permits, 3);
/// # job.release().await?; Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// The permit count.
    pub permits: u32,
    /// The holders, in the order they were admitted (oldest token first), each with how
    /// many permits it holds ([`Holder::permits`]).
    pub holders: Vec<Holder>,
    /// How many acquisitions wait for permits (whatever each asks for).
    pub waiting: usize,
}

impl Usage {
    /// Permits held: the sum of the holders' [`permits`](Holder::permits).
    pub fn held(&self) -> u32 {
        self.holders.iter().map(|h| h.permits).sum()
    }

    /// Permits nobody holds.
    pub fn available(&self) -> u32 {
        self.permits.saturating_sub(self.held())
    }
}
