//! Reads of a name's state that need no session, so open no lease: who holds a mutex, how
//! a semaphore's permits are used, who leads an election, and an election's observer. A
//! monitor, a dashboard or `leasehold leader` reads with these; only what holds or waits
//! needs a [`Session`](crate::Session).

use crate::election::{Election, LeaderInfo, Observer};
use crate::error::Result;
use crate::guard::Holder;
use crate::semaphore::{self, Usage};
use crate::Client;

impl Client {
    /// The current holder of the mutex `name`, if any (a snapshot: it may change at once).
    /// The same as [`Mutex::holder`](crate::Mutex::holder), without a session.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Mutex};
    /// let client = Client::memory();
    /// assert!(client.holder("nightly-report").await?.is_none());
    /// let session = client.session().await?;
    /// let guard = Mutex::new(&session, "nightly-report")?.lock().await?;
    /// let holder = client.holder("nightly-report").await?.expect("held");
    /// assert_eq!((holder.token, holder.lease), (guard.fencing_token(), session.lease_id()));
    /// # guard.unlock().await?; Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: a read; dropping it changes nothing.
    pub async fn holder(&self, name: &str) -> Result<Option<Holder>> {
        let (kvs, _) = self.backend().range_prefix(&self.prefix_of(name)?, 1).await?;
        Ok(kvs.into_iter().next().map(Holder::of))
    }

    /// The current leader of the election `name`, if any (a snapshot). The same as
    /// [`Election::leader`], without a session.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Election};
    /// let client = Client::memory();
    /// let session = client.session().await?;
    /// let leadership = Election::new(&session, "scheduler")?.campaign("node-a").await?;
    /// let leader = client.leader("scheduler").await?.expect("a leader");
    /// assert_eq!((leader.value.as_slice(), leader.token), (&b"node-a"[..], leadership.fencing_token()));
    /// # leadership.resign().await?; Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: a read; dropping it changes nothing.
    pub async fn leader(&self, name: &str) -> Result<Option<LeaderInfo>> {
        let (kvs, _) = self.backend().range_prefix(&self.prefix_of(name)?, 1).await?;
        Ok(kvs.first().map(LeaderInfo::from))
    }

    /// How the permits of the semaphore `name` are used, by the permit count stored with
    /// it (as [`Semaphore::usage`](crate::Semaphore::usage) reads it, without a session
    /// or a count of its own). `None` if no semaphore of this name has stored a count:
    /// none was ever acquired, or its count key was deleted.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Semaphore};
    /// let client = Client::memory();
    /// assert!(client.semaphore_usage("encoders").await?.is_none());
    /// let session = client.session().await?;
    /// let permit = Semaphore::new(&session, "encoders", 3)?.acquire().await?;
    /// let usage = client.semaphore_usage("encoders").await?.expect("a stored count");
    /// assert_eq!((usage.permits, usage.holders.len(), usage.available()), (3, 1, 2));
    /// # permit.release().await?; Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: reads; dropping it changes nothing.
    pub async fn semaphore_usage(&self, name: &str) -> Result<Option<Usage>> {
        let prefix = self.prefix_of(name)?;
        let count_key = semaphore::count_key_of(&prefix);
        let Some(kv) = self.backend().get(count_key).await? else { return Ok(None) };
        let permits = semaphore::parse_count(count_key, &kv.value)?;
        semaphore::usage_of(&**self.backend(), &prefix, permits).await.map(Some)
    }
}

impl Election {
    /// Follows the leader of the election `name` without a session (see [`Observer`]): for
    /// processes that watch an election and never campaign.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
    /// use leasehold::{Client, Election};
    /// let client = Client::memory();
    /// let mut observer = Election::observer(&client, "scheduler")?;
    /// assert_eq!(observer.changed().await?, None, "no leader yet");
    /// let session = client.session().await?;
    /// let leadership = Election::new(&session, "scheduler")?.campaign("node-a").await?;
    /// assert_eq!(observer.changed().await?.map(|l| l.value), Some(b"node-a".to_vec()));
    /// # leadership.resign().await?; Ok(()) }
    /// ```
    pub fn observer(client: &Client, name: &str) -> Result<Observer> {
        Ok(Observer::new(client.clone(), client.prefix_of(name)?))
    }
}
