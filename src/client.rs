//! The entry point: a backend plus a key namespace, shared by sessions and recipes.

use crate::backend::memory::MemoryBackend;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::local::value_hints::ValueHints;
use crate::name::{reserved_key, validate_name};
use crate::queue::{DeleteFeed, PrefixView};
use crate::session::SessionBuilder;
use crate::Session;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// A handle on one store. Cheap to clone; clones share the connection and the watches.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
/// let client = leasehold::Client::memory();            // or Client::connect("etcd://127.0.0.1:2379")
/// let session = client.session().await?;              // one lease, renewed in the background
/// let mutex = leasehold::Mutex::new(&session, "inventory")?;
/// let guard = mutex.lock().await?;
/// assert!(guard.fencing_token() > 0);
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    backend: Arc<dyn Backend>,
    namespace: String,
    /// Delete feeds and live prefix views (one watch each), shared by every waiter of this client.
    views: Mutex<Views>,
    /// What this client's register updates wrote (saves the next one's read).
    value_hints: Arc<ValueHints>,
    /// How many of this client's queued or adaptive updates of each register key are running.
    register_updates: Arc<Mutex<HashMap<String, usize>>>,
}

/// How many prefix watches of each kind (queue feeds, views) a client keeps open after
/// their waiters are gone. A watch is opened the first time something waits on a prefix
/// and then kept, so the next wait costs no watch creation (the point of the engine); past
/// this many prefixes the least recently used idle one is closed.
pub(crate) const KEPT_VIEWS: usize = 256;

#[derive(Debug, Default)]
struct Views {
    views: Kept<PrefixView>,
    feeds: Kept<DeleteFeed>,
    /// Register queues' feeds, by register key (see [`Client::register_feed`]).
    register_feeds: Kept<DeleteFeed>,
}

/// Open watches of one kind by prefix, the least recently used idle one closed past
/// [`KEPT_VIEWS`].
#[derive(Debug)]
struct Kept<T> {
    open: HashMap<String, (Arc<T>, u64)>,
    tick: u64,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Self { open: HashMap::new(), tick: 0 }
    }
}

impl<T> Kept<T> {
    fn get_or_open(&mut self, prefix: &str, failed: impl Fn(&T) -> bool, open: impl FnOnce() -> Arc<T>) -> Arc<T> {
        self.tick += 1;
        let tick = self.tick;
        if let Some((v, used)) = self.open.get_mut(prefix) {
            if !failed(v) {
                *used = tick;
                return v.clone();
            }
        }
        if self.open.len() >= KEPT_VIEWS {
            let idle = self
                .open
                .iter()
                .filter(|(_, (v, _))| Arc::strong_count(v) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = idle {
                self.open.remove(&k);
            }
        }
        let v = open();
        self.open.insert(prefix.to_owned(), (v.clone(), tick));
        v
    }
}

impl Client {
    /// A client over any backend.
    pub fn new(backend: impl Backend) -> Self {
        Self::from_arc(Arc::new(backend))
    }

    /// A client over a shared backend.
    pub fn from_arc(backend: Arc<dyn Backend>) -> Self {
        Self::with_backend(backend, String::new())
    }

    fn with_backend(backend: Arc<dyn Backend>, namespace: String) -> Self {
        let views = Mutex::new(Views::default());
        let (value_hints, register_updates) = (Arc::default(), Arc::default());
        Self { inner: Arc::new(ClientInner { backend, namespace, views, value_hints, register_updates }) }
    }

    /// A client over a fresh embedded in-memory store (single process).
    pub fn memory() -> Self {
        Self::new(MemoryBackend::new())
    }

    /// Connects by URL: `memory://`, `etcd://host:port[,host:port…]` (feature `etcd`; see
    /// `EtcdConfig` for timeouts, TLS and auth) or `tikv://pd-host:port[,pd-host:port…]`
    /// (feature `tikv`; see `TikvConfig`).
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is left behind.
    pub async fn connect(url: &str) -> Result<Self> {
        if url == "memory://" || url == "memory" {
            return Ok(Self::memory());
        }
        #[cfg(feature = "etcd")]
        if let Some(rest) = url.strip_prefix("etcd://") {
            let config = crate::EtcdConfig::new(rest.split(',').map(str::trim).filter(|s| !s.is_empty()));
            return Self::etcd(config).await;
        }
        #[cfg(feature = "tikv")]
        if let Some(rest) = url.strip_prefix("tikv://") {
            let config = crate::TikvConfig::new(rest.split(',').map(str::trim).filter(|s| !s.is_empty()));
            return Self::tikv(config).await;
        }
        Err(Error::invalid(
            "connect",
            format!(
                "unsupported endpoint URL {url:?} (expected memory://, etcd://host:port,… or tikv://pd-host:port,…)"
            ),
        ))
    }

    /// Connects to etcd.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is left behind.
    #[cfg(feature = "etcd")]
    pub async fn etcd(config: crate::EtcdConfig) -> Result<Self> {
        Ok(Self::new(crate::backend::etcd::EtcdBackend::connect(config).await?))
    }

    /// Connects to TiKV through its PD endpoints.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is left behind.
    #[cfg(feature = "tikv")]
    pub async fn tikv(config: crate::TikvConfig) -> Result<Self> {
        Ok(Self::new(crate::backend::tikv::TikvBackend::connect(config).await?))
    }

    /// The same store with every key under `namespace` (for example `"app1/locks/"`).
    pub fn with_namespace(&self, namespace: impl Into<String>) -> Self {
        Self::with_backend(self.inner.backend.clone(), namespace.into())
    }

    /// Opens a session with the default TTL; see [`SessionBuilder`] for options.
    ///
    /// # Cancel safety
    /// A lease granted just before the future was dropped is left to expire after its TTL
    /// (nothing is held under it).
    pub async fn session(&self) -> Result<Session> {
        self.session_builder().open().await
    }

    /// Starts building a session.
    pub fn session_builder(&self) -> SessionBuilder {
        SessionBuilder::new(self.clone())
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// This client's key namespace (`""` for none).
    pub(crate) fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The key prefix of a recipe name: `<namespace><name>/`. Fails for invalid names.
    pub fn prefix_of(&self, name: &str) -> Result<String> {
        Ok(format!("{}{}/", self.inner.namespace, validate_name(name)?))
    }

    /// A key leasehold keeps for itself about the (valid) recipe name `name`, in this
    /// client's namespace: `<namespace>~leasehold/<area>/<name>` (see `name.rs`).
    pub(crate) fn reserved_key(&self, area: &str, name: &str) -> String {
        reserved_key(&self.inner.namespace, area, name)
    }

    /// What this client's register updates wrote (see [`ValueHints`]).
    pub(crate) fn value_hints(&self) -> &ValueHints {
        &self.inner.value_hints
    }

    /// Counts a queued or adaptive update of the register at `key` as running until the returned
    /// guard is dropped; the guard says how many others of this client were running when
    /// it started (see `Register`).
    pub(crate) fn register_update(&self, key: &str) -> RunningUpdate {
        let others = {
            let mut running = self.inner.register_updates.lock();
            let n = running.entry(key.to_owned()).or_insert(0);
            *n += 1;
            *n - 1
        };
        RunningUpdate { running: self.inner.register_updates.clone(), key: key.to_owned(), others }
    }

    /// The shared live view of `prefix`, opening it (one watch) if it is not open yet.
    pub(crate) fn view(&self, prefix: &str) -> Arc<PrefixView> {
        let mut views = self.inner.views.lock();
        let backend = &self.inner.backend;
        views.views.get_or_open(prefix, PrefixView::is_failed, || PrefixView::open(backend.clone(), prefix.to_owned()))
    }

    /// The shared deletes-only feed of `prefix` for queue waiters, opening it (one watch)
    /// if it is not open yet.
    pub(crate) fn delete_feed(&self, prefix: &str) -> Arc<DeleteFeed> {
        let mut views = self.inner.views.lock();
        let backend = &self.inner.backend;
        views.feeds.get_or_open(prefix, DeleteFeed::is_failed, || DeleteFeed::open(backend.clone(), prefix.to_owned()))
    }

    /// The feed of the register at `key`, whose lock's queue is `prefix`: the queue's
    /// deletions and the register's values, which it leaves in this client's value hints,
    /// so a queued update admitted by a write and release needs no read (one watch; see
    /// [`DeleteFeed::open_register`]).
    pub(crate) fn register_feed(&self, prefix: &str, key: &str) -> Arc<DeleteFeed> {
        let mut views = self.inner.views.lock();
        let (backend, hints) = (&self.inner.backend, &self.inner.value_hints);
        views.register_feeds.get_or_open(key, DeleteFeed::is_failed, || {
            DeleteFeed::open_register(backend.clone(), prefix.to_owned(), key.to_owned(), hints.clone())
        })
    }
}

/// One running queued or adaptive register update of a client (see [`Client::register_update`]).
#[derive(Debug)]
pub(crate) struct RunningUpdate {
    running: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
    /// Updates of the same key by this client that were running when this one started.
    pub(crate) others: usize,
}

impl Drop for RunningUpdate {
    fn drop(&mut self) {
        let mut running = self.running.lock();
        if let Some(n) = running.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.key);
            }
        }
    }
}
