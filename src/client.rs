//! The entry point: a backend plus a key namespace, shared by sessions and recipes.

use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, KeyValue, Revision};
use crate::backoff::Backoff;
use crate::crowd::{Crowd, Mode, Ticket};
use crate::error::{Error, Result};
use crate::local::value_hints::ValueHints;
use crate::name::{reserved_key, validate_name};
use crate::queue::{DeleteFeed, PrefixView, Rule, Turn, View};
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
    /// This client's running register updates of each key and how its adaptive ones go
    /// ([`Crowd`]), shared by the key's handles and kept after the last one is dropped (the
    /// least recently used idle one goes past [`KEPT_VIEWS`] keys): a handle made per
    /// request starts from what the client measured, not from the queue again. (Gone with
    /// the last handle, each sale of the TiKV test server's flash sale began with a
    /// queue epoch and its hand-over, 0.2 s of a 1.3 s sale.)
    register_updates: Mutex<Kept<Crowd>>,
}

/// How many prefix watches of each kind (queue feeds, views) a client keeps open after
/// their waiters are gone. A watch is opened the first time something waits on a prefix
/// and then kept, so the next wait costs no watch creation (the point of the engine); past
/// this many prefixes the least recently used idle one is closed. Registers' [`Crowd`]s are
/// kept the same way, by key.
pub(crate) const KEPT_VIEWS: usize = 256;

#[derive(Debug, Default)]
struct Views {
    views: Kept<PrefixView>,
    feeds: Kept<DeleteFeed>,
    /// Register queues' feeds, by register key (see [`Client::register_feed`]).
    register_feeds: Kept<DeleteFeed>,
}

/// Open watches of one kind by prefix (or registers' crowds by key), the least recently used
/// idle one closed past [`KEPT_VIEWS`].
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
        let (value_hints, register_updates) = (Arc::default(), Mutex::default());
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
    #[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
    pub async fn etcd(config: crate::EtcdConfig) -> Result<Self> {
        Ok(Self::new(crate::backend::etcd::EtcdBackend::connect(config).await?))
    }

    /// Connects to TiKV through its PD endpoints.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is left behind.
    #[cfg(feature = "tikv")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tikv")))]
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

    /// Whether the register feed of `key` is open (tests).
    #[cfg(test)]
    pub(crate) fn register_feed_is_open(&self, key: &str) -> bool {
        self.inner.views.lock().register_feeds.open.contains_key(key)
    }

    /// The open deletes-only feeds' prefixes and register feeds' keys (tests).
    #[cfg(test)]
    pub(crate) fn open_feeds(&self) -> (Vec<String>, Vec<String>) {
        let views = self.inner.views.lock();
        let (mut deletes, mut registers): (Vec<String>, Vec<String>) =
            (views.feeds.open.keys().cloned().collect(), views.register_feeds.open.keys().cloned().collect());
        deletes.sort();
        registers.sort();
        (deletes, registers)
    }

    /// Closes the register feed of `key` if it is open and nobody waits on it (its watch
    /// brings an event per write, a cost for nothing while this client's updates of the
    /// register compare-and-swap). Whether none is open now.
    pub(crate) fn close_idle_register_feed(&self, key: &str) -> bool {
        let mut views = self.inner.views.lock();
        let open = &mut views.register_feeds.open;
        match open.get(key) {
            Some((feed, _)) if Arc::strong_count(feed) > 1 => false,
            Some(_) => {
                open.remove(key);
                true
            }
            None => true,
        }
    }

    /// The running updates of the register at `key` by this client and the measured mode
    /// of its adaptive ones: one [`Crowd`] per key, shared by the key's handles and kept
    /// while idle (see `register_updates`).
    pub(crate) fn register_crowd(&self, key: &str) -> Arc<Crowd> {
        self.inner.register_updates.lock().get_or_open(key, |_| false, || Arc::new(Crowd::default()))
    }

    /// Completes once the key `(key, rev)` of a recipe is gone (deleted, or created again
    /// with another revision); never while it exists. It follows the key on this client's
    /// shared delete feed of the name's prefix (see `guard/gone.rs`); a feed that fails is
    /// opened again after a pause.
    pub(crate) async fn until_gone(&self, key: &str, rev: Revision) {
        let prefix = name_prefix(self.namespace(), key).to_owned();
        let backoff = Backoff::default();
        let mut delays = backoff.delays();
        loop {
            let feed = self.delete_feed(&prefix);
            // A view of only the key, as of its creation: the rule looks at nothing else, and
            // a feed that cannot replay from `rev` reads the prefix again.
            let mine =
                KeyValue { key: key.to_owned(), value: Vec::new(), create_revision: rev, mod_revision: rev, lease: 0 };
            match feed.wait_turn(View::snapshot(vec![mine], rev), key, rev, Rule::Held).await {
                Ok((Turn::Gone, _)) => return,
                Ok(_) => unreachable!("Rule::Held admits nothing"),
                Err(e) => {
                    tracing::debug!(%key, error = %e, "the watch of a held key failed; again after a pause");
                    tokio::time::sleep(delays.next().unwrap_or(backoff.cap)).await;
                }
            }
        }
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

/// The name's prefix `<namespace><name>/` of a recipe key `<namespace><name>/<suffix>`
/// (names have no `/`; see `name.rs`).
fn name_prefix<'a>(namespace: &str, key: &'a str) -> &'a str {
    let rest = key.get(namespace.len()..).unwrap_or("");
    match rest.find('/') {
        Some(i) => &key[..namespace.len() + i + 1],
        None => key,
    }
}

/// One running queued or adaptive register update of a client, counted in its key's
/// [`Crowd`] until dropped (see `Register`).
#[derive(Debug)]
pub(crate) struct RunningUpdate<'a> {
    crowd: &'a Crowd,
    ticket: Ticket,
    completed: bool,
}

impl<'a> RunningUpdate<'a> {
    /// Counts an update of `crowd`'s key as running; `sampler` counts its handle's updates.
    pub(crate) fn start(crowd: &'a Crowd, sampler: &crate::crowd::Sampler) -> Self {
        Self { ticket: crowd.start(sampler), crowd, completed: false }
    }

    /// Updates of the same key by this client that were running when this one started.
    pub(crate) fn others(&self) -> usize {
        self.ticket.others
    }

    /// Its number among its handle's updates.
    pub(crate) fn seq(&self) -> u32 {
        self.ticket.seq
    }

    /// How this client's adaptive updates of the key go now.
    pub(crate) fn mode(&self) -> Mode {
        self.ticket.mode
    }

    /// It left the queue at a turn to compare-and-swap ([`Crowd::left_queue`]).
    pub(crate) fn left_queue(&mut self) {
        self.crowd.left_queue(&mut self.ticket);
    }

    /// It joined the queue after a turn back to it ([`Crowd::rejoined_queue`]).
    pub(crate) fn rejoined_queue(&mut self) {
        self.crowd.rejoined_queue(&mut self.ticket);
    }

    /// The update returned its outcome: its time counts for its mode.
    pub(crate) fn completed(mut self) {
        self.completed = true;
    }
}

impl Drop for RunningUpdate<'_> {
    fn drop(&mut self) {
        self.crowd.finish(self.ticket, self.completed, tokio::time::Instant::now);
    }
}

#[cfg(test)]
mod tests {
    use super::{name_prefix, Client, KEPT_VIEWS};

    /// What a client measured for a register outlives the key's handles (a handle made per
    /// request must not start from the queue each time), and idle keys' crowds are bounded.
    #[test]
    fn a_registers_crowd_outlives_its_handles_and_idle_ones_are_bounded() {
        let client = Client::memory();
        let _ = client.register_crowd("stock").sampler();
        let again = client.register_crowd("stock");
        assert_eq!(again.handles_made(), 1, "the crowd measured before the last handle went is kept");
        drop(again);
        for i in 0..2 * KEPT_VIEWS {
            let _ = client.register_crowd(&format!("item-{i}"));
        }
        let kept = client.inner.register_updates.lock().open.len();
        assert!(kept <= KEPT_VIEWS, "{kept} idle crowds kept, at most {KEPT_VIEWS} wanted");
    }

    #[test]
    fn the_name_prefix_of_recipe_keys() {
        assert_eq!(name_prefix("", "lock/7a"), "lock/");
        assert_eq!(name_prefix("app/x/", "app/x/rw/read/7a-1"), "app/x/rw/");
        assert_eq!(name_prefix("app/", "app/sem/7a-2"), "app/sem/");
    }
}
