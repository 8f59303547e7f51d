//! A backend decorator that counts calls: every write (conditional or not) and every read,
//! so examples can report store writes per operation exactly.

use async_trait::async_trait;
use leasehold::backend::{
    Backend, CasResponse, Condition, CreateRequest, CreateResponse, KeepAlive, KeyValue, Lease, LeaseId, Read,
    Revision, Transacted, WatchStream, Write,
};
use leasehold::Result;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counts of calls that reached the store.
#[derive(Debug, Default)]
pub struct Counts {
    pub writes: AtomicU64,
    pub reads: AtomicU64,
    /// Reads of one key (`get`), a subset of `reads`.
    pub gets: AtomicU64,
}

impl Counts {
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
    #[allow(dead_code)] // the conformance suite's check of queued register reads uses it
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }
}

/// Wraps a backend and counts what goes through it.
#[derive(Debug)]
pub struct Counting {
    pub inner: Arc<dyn Backend>,
    pub counts: Arc<Counts>,
}

impl Counting {
    fn write(&self) {
        self.counts.writes.fetch_add(1, Ordering::Relaxed);
    }
    fn read(&self) {
        self.counts.reads.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl Backend for Counting {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<Box<dyn KeepAlive>> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.inner.revoke_lease(lease).await
    }
    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<Duration>> {
        self.inner.lease_ttl(lease).await
    }
    async fn lease_keys(&self, lease: LeaseId) -> Result<Vec<String>> {
        self.read();
        self.inner.lease_keys(lease).await
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.read();
        self.counts.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }
    async fn range_prefix(&self, prefix: &str, limit: usize) -> Result<(Vec<KeyValue>, Revision)> {
        self.read();
        self.inner.range_prefix(prefix, limit).await
    }
    async fn create(&self, req: CreateRequest) -> Result<CreateResponse> {
        self.write();
        self.inner.create(req).await
    }
    async fn delete_if_created(&self, key: &str, create_revision: Revision) -> Result<bool> {
        self.write();
        self.inner.delete_if_created(key, create_revision).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<CasResponse> {
        self.write();
        self.inner.compare_and_swap(key, expected, value, lease).await
    }
    async fn transact(&self, conditions: &[Condition], writes: Vec<Write>, reads: &[Read]) -> Result<Transacted> {
        if conditions.is_empty() && writes.is_empty() {
            self.read();
        } else {
            self.write();
        }
        self.inner.transact(conditions, writes, reads).await
    }
    async fn watch_prefix(&self, prefix: &str) -> Result<Box<dyn WatchStream>> {
        self.inner.watch_prefix(prefix).await
    }
    async fn watch_prefix_deletes(&self, prefix: &str) -> Result<Box<dyn WatchStream>> {
        self.inner.watch_prefix_deletes(prefix).await
    }
    async fn watch_key_and_prefix(&self, key: &str, prefix: &str) -> Result<Box<dyn WatchStream>> {
        self.inner.watch_key_and_prefix(key, prefix).await
    }
}
