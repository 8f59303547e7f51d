//! # leasehold
//!
//! Fenced distributed locks over real consensus stores: a [`Mutex`] (fair queue or
//! compare-and-swap), a counting [`Semaphore`], a read-write [`RwLock`] and leader
//! [`Election`], each acquisition with a **fencing token** the store or the resource can
//! check, under a [`Session`] whose lease is renewed in the background and whose loss is
//! reported.
//!
//! All of them run on one wait engine: every waiter owns a key under the session's lease,
//! ordered by create revision, and one shared deletes-only watch per prefix per client
//! wakes a waiter only when its admission rule holds.
//!
//! Backends: the embedded [`MemoryBackend`] (single process, demos, fast tests), etcd
//! (`EtcdConfig`, feature `etcd`, on by default) and TiKV (`TikvConfig`, feature `tikv`). Recipes are written once against the
//! narrow [`Backend`] trait and never name a store.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> leasehold::Result<()> {
//! use leasehold::{Client, FencedResource, Mutex};
//! let client = Client::memory(); // Client::connect("etcd://127.0.0.1:2379").await? for etcd
//! let session = client.session().await?;
//! let stock = FencedResource::new(100u32);
//!
//! let guard = Mutex::new(&session, "inventory")?.lock().await?;
//! stock.apply(guard.fencing_token(), |units| *units -= 1)?; // refused if a newer holder wrote
//! guard.unlock().await?;
//! assert_eq!(stock.read(|u| *u), 99);
//! # Ok(()) }
//! ```
//!
//! See `docs/architecture.md` for the layers and `docs/guarantees.md` for what a token
//! does and does not guarantee.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(rust_2018_idioms)]

mod adaptive;
pub mod backend;
mod backoff;
mod client;
mod crowd;
mod election;
mod error;
mod fencing;
mod guard;
mod leader_loop;
mod local;
mod lock_delay;
mod metrics;
mod multi_lock;
mod mutex;
mod name;
mod observe;
mod queue;
mod register;
mod revoke;
mod rwlock;
mod semaphore;
mod session;
mod strategy;

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use backend::etcd::{EtcdConfig, TlsConfig};
pub use backend::memory::MemoryBackend;
#[cfg(feature = "tikv")]
#[cfg_attr(docsrs, doc(cfg(feature = "tikv")))]
pub use backend::tikv::TikvConfig;
pub use backend::{Backend, Write};
pub use backoff::{deterministic_jitter, Backoff, Delays, Jitter};
pub use client::Client;
pub use election::{Election, LeaderInfo, Leadership, Observer};
pub use error::{Cause, Error, Result};
pub use fencing::FencedResource;
pub use guard::Holder;
pub use leader_loop::LeaderLoop;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use metrics::describe_metrics;
pub use multi_lock::{MultiGuard, MultiLock};
pub use mutex::{Mutex, MutexGuard};
pub use name::{validate_name, MAX_NAME_LEN};
pub use register::{GroupToken, GroupUpdated, Grouping, Register, Updated, DEFAULT_REQUEUE_WINDOW};
pub use rwlock::{ReadGuard, RwLock, WriteGuard};
pub use semaphore::{Permit, Semaphore, Usage};
pub use session::{Health, Session, SessionBuilder, DEFAULT_TTL, MAX_TTL, MIN_TTL};
pub use strategy::Strategy;

// Guards own what they need and handles are cheap clones: all of them can move into a
// spawned task and outlive the scope that made them (tokio's `Owned*` guards are the
// model). A field that broke this would fail the build here, not a user's.
const _: () = {
    const fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<MutexGuard>();
    send_sync_static::<MultiGuard>();
    send_sync_static::<Permit>();
    send_sync_static::<ReadGuard>();
    send_sync_static::<WriteGuard>();
    send_sync_static::<Leadership>();
    send_sync_static::<Client>();
    send_sync_static::<Session>();
    send_sync_static::<Mutex>();
    send_sync_static::<Semaphore>();
    send_sync_static::<RwLock>();
    send_sync_static::<Election>();
    send_sync_static::<Observer>();
    send_sync_static::<LeaderLoop>();
    send_sync_static::<Register>();
    send_sync_static::<Error>();
};

/// The futures of the waiting calls are `Send` (they can run on a multi-threaded runtime's
/// spawned task): checked by the compiler here, in a test that only has to build.
#[cfg(test)]
mod send_futures {
    fn send<T: Send>(_: &T) {}

    #[allow(dead_code, unused_must_use)]
    async fn waits_are_send(s: crate::Session) {
        let m = crate::Mutex::new(&s, "m").unwrap();
        send(&m.lock());
        send(&m.lock_timeout(std::time::Duration::ZERO));
        let sem = crate::Semaphore::new(&s, "s", 1).unwrap();
        send(&sem.acquire());
        let rw = crate::RwLock::new(&s, "rw").unwrap();
        send(&rw.read());
        send(&rw.write());
        let e = crate::Election::new(&s, "e").unwrap();
        send(&e.campaign("v"));
        let r = crate::Register::new(&s, "r").unwrap();
        send(&r.update(|v: Option<&[u8]>| v.map(<[u8]>::to_vec)));
        send(&r.update_grouped(|v: Option<&[u8]>| v.map(<[u8]>::to_vec)));
        send(&s.close());
    }
}
