//! An in-process PD + TiKV **test server** for leasehold's TiKV backend tests. Not a product.
//!
//! It speaks the real gRPC protocol (types generated at build time from the `.proto` files
//! that `tikv-client` ships), so the unmodified `tikv-client` crate talks to it over
//! 127.0.0.1. It answers only what that client needs for transactions:
//!
//! - **PD**: `GetMembers`, `Tso` (bidirectional stream; monotonic timestamps whose physical
//!   part is wall-clock milliseconds), `GetRegion`, `GetRegionByID`, `GetStore`. One region
//!   covers every key; one store holds it.
//! - **TiKV** (transactional API): `KvGet`, `KvBatchGet`, `KvScan`, `KvPrewrite`, `KvCommit`,
//!   `KvBatchRollback`, `KvPessimisticLock` (with lock waiting: `wait_timeout` 0 waits up to
//!   [`DEFAULT_LOCK_WAIT`], as TiKV's default), `KVPessimisticRollback`, `KvTxnHeartBeat`,
//!   `KvCheckTxnStatus`, `KvResolveLock`. The semantics are TiKV's Percolator MVCC (see
//!   [`mvcc`]): start and commit timestamps, write conflicts, lock errors, lock TTLs measured
//!   against the TSO's physical time, rollback records.
//!
//! Every other method (the raw API among them) answers gRPC `Unimplemented`.
//! [`TestServer::set_unavailable`] makes every RPC fail with `Unavailable`, as a cut-off
//! cluster would, and [`TestServer::calls`] counts the RPCs received by method name.
//!
//! Everything is behind the feature `server` (off by default): without it this crate is
//! empty, so that depending on it costs nothing to builds that do not test TiKV.
#![cfg(feature = "server")]
// The protocol's error messages (KeyError, LockInfo, Status) are large and are passed by
// value from the store to the response, as the protocol does.
#![allow(clippy::result_large_err)]

pub mod mvcc;

/// Generated protobuf types (`kvrpcpb`, `pdpb`, `metapb`, …).
#[allow(missing_docs, clippy::all, rustdoc::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/protos.rs"));
}

#[allow(missing_docs, clippy::all)]
mod tikv_service {
    include!(concat!(env!("OUT_DIR"), "/tikvpb.Tikv.rs"));
}

#[allow(missing_docs, clippy::all)]
mod pd_service {
    include!(concat!(env!("OUT_DIR"), "/pdpb.PD.rs"));
}

use mvcc::{locked, LockOutcome, Mvcc};
use proto::{kvrpcpb, metapb, pdpb};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tonic::{Request, Response, Status, Streaming};

/// How long a pessimistic lock request with `wait_timeout` 0 waits for a conflicting lock
/// (TiKV's `wait-for-lock-timeout` default).
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(1);

const CLUSTER_ID: u64 = 0x1ea5e;

/// A running test server; stops when dropped.
#[derive(Debug)]
pub struct TestServer {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    mvcc: Mutex<Mvcc>,
    /// Signalled whenever a lock may have been released.
    released: Notify,
    tso: Mutex<(u64, u64)>,
    unavailable: AtomicBool,
    calls: Mutex<HashMap<&'static str, u64>>,
    failing: Mutex<Vec<String>>,
    /// Prewrites to hold (see [`TestServer::hold_next_prewrite`]), oldest first.
    holds: Mutex<Vec<(Vec<u8>, Held)>>,
    store_addr: String,
}

/// A prewrite held by [`TestServer::hold_next_prewrite`]: it reaches the store only once
/// [`release`](Held::release)d.
#[derive(Debug, Clone)]
pub struct Held {
    reached: Arc<tokio::sync::watch::Sender<bool>>,
    released: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Held {
    /// Completes once a matching prewrite arrived (and is being held).
    pub async fn reached(&self) {
        let _ = self.reached.subscribe().wait_for(|r| *r).await;
    }

    /// Whether a matching prewrite arrived.
    pub fn is_reached(&self) -> bool {
        *self.reached.borrow()
    }

    /// Lets the held prewrite (and any later one it would have caught) through.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
}

impl TestServer {
    /// Starts a server with one endpoint (serving both PD and TiKV) on 127.0.0.1.
    pub async fn start() -> Self {
        Self::start_with(1).await
    }

    /// Starts a server with `endpoints` listeners on 127.0.0.1 that all serve the same
    /// cluster (several PD endpoints); the first one is also the TiKV store's address.
    pub async fn start_with(endpoints: usize) -> Self {
        let mut listeners = Vec::new();
        for _ in 0..endpoints.max(1) {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1"));
        }
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().expect("address")).collect();
        let shared = Arc::new(Shared {
            mvcc: Mutex::new(Mvcc::default()),
            released: Notify::new(),
            tso: Mutex::new((0, 0)),
            unavailable: AtomicBool::new(false),
            calls: Mutex::new(HashMap::new()),
            failing: Mutex::new(Vec::new()),
            holds: Mutex::new(Vec::new()),
            store_addr: addrs[0].to_string(),
        });
        let tasks = listeners
            .into_iter()
            .map(|listener| {
                let node = Node { shared: shared.clone() };
                // TCP_NODELAY: without it small gRPC replies wait for delayed ACKs (~40 ms).
                let incoming =
                    tonic::transport::server::TcpIncoming::from_listener(listener, true, None).expect("listener");
                tokio::spawn(async move {
                    let _ = tonic::transport::Server::builder()
                        .add_service(tikv_service::tikv_server::TikvServer::new(node.clone()))
                        .add_service(pd_service::p_d_server::PDServer::new(node))
                        .serve_with_incoming(incoming)
                        .await;
                })
            })
            .collect();
        Self { shared, addrs, tasks }
    }

    /// The PD endpoints, as `127.0.0.1:port`.
    pub fn pd_endpoints(&self) -> Vec<String> {
        self.addrs.iter().map(ToString::to_string).collect()
    }

    /// While `true`, every RPC fails with gRPC `Unavailable` (a cluster cut off).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// While `fail` is set, RPCs of `method` (e.g. `"KvCommit"`) fail with `Unavailable`.
    pub fn fail_method(&self, method: &str, fail: bool) {
        let mut failing = self.shared.failing.lock().expect("failing");
        failing.retain(|m| m != method);
        if fail {
            failing.push(method.to_owned());
        }
    }

    /// Holds the next `KvPrewrite` that writes a key containing `key_part` before it
    /// reaches the store, until [`Held::release`]: a transaction caught between its reads
    /// and its commit, to make a chosen interleaving of two transactions. Holds are taken
    /// in the order they were made, one prewrite each.
    pub fn hold_next_prewrite(&self, key_part: &[u8]) -> Held {
        let held = Held {
            reached: Arc::new(tokio::sync::watch::channel(false).0),
            released: Arc::new(tokio::sync::watch::channel(false).0),
        };
        self.shared.holds.lock().expect("holds").push((key_part.to_vec(), held.clone()));
        held
    }

    /// How many RPCs of `method` (e.g. `"KvCheckTxnStatus"`) the server has received.
    pub fn calls(&self, method: &str) -> u64 {
        self.shared.calls.lock().expect("calls").get(method).copied().unwrap_or(0)
    }

    /// How many keys are locked right now.
    pub fn lock_count(&self) -> usize {
        self.shared.mvcc.lock().expect("mvcc").lock_count()
    }

    /// Stops serving: every later RPC fails and the listeners close.
    pub fn stop(&mut self) {
        self.set_unavailable(true);
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone)]
struct Node {
    shared: Arc<Shared>,
}

type Reply<T> = Result<Response<T>, Status>;

impl Node {
    /// Counts the call; fails it while the server is unavailable.
    fn enter(&self, method: &'static str) -> Result<(), Status> {
        *self.shared.calls.lock().expect("calls").entry(method).or_default() += 1;
        if self.shared.unavailable.load(Ordering::SeqCst) {
            return Err(Status::unavailable("test server: unavailable"));
        }
        if self.shared.failing.lock().expect("failing").iter().any(|m| m == method) {
            return Err(Status::unavailable(format!("test server: {method} fails")));
        }
        Ok(())
    }

    fn mvcc(&self) -> std::sync::MutexGuard<'_, Mvcc> {
        self.shared.mvcc.lock().expect("mvcc")
    }

    /// Runs `f` on the store, then wakes lock waiters (`f` may have released locks).
    fn releasing<T>(&self, f: impl FnOnce(&mut Mvcc) -> T) -> T {
        let out = f(&mut self.mvcc());
        self.shared.released.notify_waiters();
        out
    }

    /// `count` timestamps; returns the last one. Physical time never goes back.
    fn timestamps(&self, count: u32) -> pdpb::Timestamp {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
        let mut tso = self.shared.tso.lock().expect("tso");
        if now > tso.0 {
            *tso = (now, 0);
        }
        if tso.1 + u64::from(count) >= 1 << 18 {
            *tso = (tso.0 + 1, 0);
        }
        tso.1 += u64::from(count);
        pdpb::Timestamp { physical: tso.0 as i64, logical: tso.1 as i64, suffix_bits: 0 }
    }

    fn header(&self) -> Option<pdpb::ResponseHeader> {
        Some(pdpb::ResponseHeader { cluster_id: CLUSTER_ID, error: None })
    }

    fn region(&self) -> (metapb::Region, metapb::Peer) {
        let peer = metapb::Peer { id: 1, store_id: 1, ..Default::default() };
        let region = metapb::Region {
            id: 1,
            start_key: Vec::new(),
            end_key: Vec::new(),
            region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
            peers: vec![peer.clone()],
            ..Default::default()
        };
        (region, peer)
    }

    fn region_response(&self) -> pdpb::GetRegionResponse {
        let (region, leader) = self.region();
        pdpb::GetRegionResponse {
            header: self.header(),
            region: Some(region),
            leader: Some(leader),
            ..Default::default()
        }
    }
}

#[tonic::async_trait]
impl pd_service::p_d_server::PD for Node {
    async fn get_members(&self, _: Request<pdpb::GetMembersRequest>) -> Reply<pdpb::GetMembersResponse> {
        self.enter("GetMembers")?;
        let member = pdpb::Member {
            name: "test-pd".into(),
            member_id: 1,
            client_urls: vec![format!("http://{}", self.shared.store_addr)],
            peer_urls: vec![format!("http://{}", self.shared.store_addr)],
            ..Default::default()
        };
        Ok(Response::new(pdpb::GetMembersResponse {
            header: self.header(),
            members: vec![member.clone()],
            leader: Some(member.clone()),
            etcd_leader: Some(member),
            ..Default::default()
        }))
    }

    type TsoStream = Pin<Box<dyn futures::Stream<Item = Result<pdpb::TsoResponse, Status>> + Send + 'static>>;

    async fn tso(&self, request: Request<Streaming<pdpb::TsoRequest>>) -> Reply<Self::TsoStream> {
        self.enter("Tso")?;
        let node = self.clone();
        let mut requests = request.into_inner();
        let stream = async_stream(move |tx| async move {
            while let Ok(Some(req)) = requests.message().await {
                let reply = match node.enter("Tso") {
                    Ok(()) => Ok(pdpb::TsoResponse {
                        header: node.header(),
                        count: req.count,
                        timestamp: Some(node.timestamps(req.count)),
                    }),
                    Err(status) => Err(status),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_region(&self, _: Request<pdpb::GetRegionRequest>) -> Reply<pdpb::GetRegionResponse> {
        self.enter("GetRegion")?;
        Ok(Response::new(self.region_response()))
    }

    async fn get_region_by_id(&self, _: Request<pdpb::GetRegionByIdRequest>) -> Reply<pdpb::GetRegionResponse> {
        self.enter("GetRegionByID")?;
        Ok(Response::new(self.region_response()))
    }

    async fn get_store(&self, _: Request<pdpb::GetStoreRequest>) -> Reply<pdpb::GetStoreResponse> {
        self.enter("GetStore")?;
        let store = metapb::Store { id: 1, address: self.shared.store_addr.clone(), ..Default::default() };
        Ok(Response::new(pdpb::GetStoreResponse { header: self.header(), store: Some(store), ..Default::default() }))
    }
}

/// A stream fed by a task through a channel (so the TSO stream needs no extra crate).
fn async_stream<T: Send + 'static, F, Fut>(f: F) -> impl futures::Stream<Item = T> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl tikv_service::tikv_server::Tikv for Node {
    async fn kv_get(&self, request: Request<kvrpcpb::GetRequest>) -> Reply<kvrpcpb::GetResponse> {
        self.enter("KvGet")?;
        let req = request.into_inner();
        let mut resp = kvrpcpb::GetResponse::default();
        match self.mvcc().get(&req.key, req.version) {
            Ok(Some(v)) => resp.value = v,
            Ok(None) => resp.not_found = true,
            Err(lock) => resp.error = Some(locked(lock)),
        }
        Ok(Response::new(resp))
    }

    async fn kv_batch_get(&self, request: Request<kvrpcpb::BatchGetRequest>) -> Reply<kvrpcpb::BatchGetResponse> {
        self.enter("KvBatchGet")?;
        let req = request.into_inner();
        let mut resp = kvrpcpb::BatchGetResponse::default();
        let mvcc = self.mvcc();
        for key in req.keys {
            match mvcc.get(&key, req.version) {
                Ok(Some(value)) => resp.pairs.push(kvrpcpb::KvPair { key, value, ..Default::default() }),
                Ok(None) => {}
                Err(lock) => {
                    resp.pairs.clear();
                    resp.error = Some(locked(lock));
                    break;
                }
            }
        }
        Ok(Response::new(resp))
    }

    async fn kv_scan(&self, request: Request<kvrpcpb::ScanRequest>) -> Reply<kvrpcpb::ScanResponse> {
        self.enter("KvScan")?;
        let req = request.into_inner();
        let mut resp = kvrpcpb::ScanResponse::default();
        match self.mvcc().scan(&req.start_key, &req.end_key, req.limit as usize, req.version, req.reverse) {
            Ok(pairs) => {
                resp.pairs = pairs
                    .into_iter()
                    .map(|(key, value)| kvrpcpb::KvPair {
                        key,
                        value: if req.key_only { Vec::new() } else { value },
                        ..Default::default()
                    })
                    .collect()
            }
            Err(lock) => resp.error = Some(locked(lock)),
        }
        Ok(Response::new(resp))
    }

    async fn kv_prewrite(&self, request: Request<kvrpcpb::PrewriteRequest>) -> Reply<kvrpcpb::PrewriteResponse> {
        self.enter("KvPrewrite")?;
        let req = request.into_inner();
        let held = {
            let mut holds = self.shared.holds.lock().expect("holds");
            let caught = holds.iter().position(|(part, _)| {
                req.mutations.iter().any(|m| m.key.windows(part.len().max(1)).any(|w| w == part.as_slice()))
            });
            caught.map(|at| holds.remove(at).1)
        };
        if let Some(held) = held {
            held.reached.send_replace(true);
            let _ = held.released.subscribe().wait_for(|r| *r).await;
        }
        let errors = self.mvcc().prewrite(&req);
        Ok(Response::new(kvrpcpb::PrewriteResponse { errors, ..Default::default() }))
    }

    async fn kv_commit(&self, request: Request<kvrpcpb::CommitRequest>) -> Reply<kvrpcpb::CommitResponse> {
        self.enter("KvCommit")?;
        let req = request.into_inner();
        let error = self.releasing(|m| m.commit(&req.keys, req.start_version, req.commit_version));
        let commit_version = if error.is_none() { req.commit_version } else { 0 };
        Ok(Response::new(kvrpcpb::CommitResponse { error, commit_version, ..Default::default() }))
    }

    async fn kv_batch_rollback(
        &self,
        request: Request<kvrpcpb::BatchRollbackRequest>,
    ) -> Reply<kvrpcpb::BatchRollbackResponse> {
        self.enter("KvBatchRollback")?;
        let req = request.into_inner();
        let error = self.releasing(|m| m.rollback(&req.keys, req.start_version));
        Ok(Response::new(kvrpcpb::BatchRollbackResponse { error, ..Default::default() }))
    }

    async fn kv_pessimistic_lock(
        &self,
        request: Request<kvrpcpb::PessimisticLockRequest>,
    ) -> Reply<kvrpcpb::PessimisticLockResponse> {
        self.enter("KvPessimisticLock")?;
        let req = request.into_inner();
        let wait = match req.wait_timeout {
            0 => DEFAULT_LOCK_WAIT,
            t if t < 0 => Duration::ZERO,
            t => Duration::from_millis(t as u64),
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for the wake-up before looking, so a release in between is not missed.
            let released = self.shared.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let outcome = self.mvcc().pessimistic_lock(&req);
            let mut resp = kvrpcpb::PessimisticLockResponse::default();
            match outcome {
                LockOutcome::Locked { values, not_founds } => {
                    resp.values = values;
                    resp.not_founds = not_founds;
                }
                LockOutcome::Failed(errors) => resp.errors = errors,
                LockOutcome::Blocked(info) => {
                    if tokio::time::Instant::now() < deadline
                        && tokio::time::timeout_at(deadline, released).await.is_ok()
                        && !self.shared.unavailable.load(Ordering::SeqCst)
                    {
                        continue;
                    }
                    resp.errors = vec![locked(info)];
                }
            }
            return Ok(Response::new(resp));
        }
    }

    async fn kv_pessimistic_rollback(
        &self,
        request: Request<kvrpcpb::PessimisticRollbackRequest>,
    ) -> Reply<kvrpcpb::PessimisticRollbackResponse> {
        self.enter("KVPessimisticRollback")?;
        let req = request.into_inner();
        self.releasing(|m| m.pessimistic_rollback(&req.keys, req.start_version, req.for_update_ts));
        Ok(Response::new(kvrpcpb::PessimisticRollbackResponse::default()))
    }

    async fn kv_txn_heart_beat(
        &self,
        request: Request<kvrpcpb::TxnHeartBeatRequest>,
    ) -> Reply<kvrpcpb::TxnHeartBeatResponse> {
        self.enter("KvTxnHeartBeat")?;
        let req = request.into_inner();
        let mut resp = kvrpcpb::TxnHeartBeatResponse::default();
        match self.mvcc().heart_beat(&req.primary_lock, req.start_version, req.advise_lock_ttl) {
            Ok(ttl) => resp.lock_ttl = ttl,
            Err(e) => resp.error = Some(e),
        }
        Ok(Response::new(resp))
    }

    async fn kv_check_txn_status(
        &self,
        request: Request<kvrpcpb::CheckTxnStatusRequest>,
    ) -> Reply<kvrpcpb::CheckTxnStatusResponse> {
        self.enter("KvCheckTxnStatus")?;
        let req = request.into_inner();
        let mut resp = kvrpcpb::CheckTxnStatusResponse::default();
        match self.releasing(|m| m.check_txn_status(&req)) {
            Ok((lock_ttl, commit_version, action, lock_info)) => {
                resp.lock_ttl = lock_ttl;
                resp.commit_version = commit_version;
                resp.action = action as i32;
                resp.lock_info = lock_info;
            }
            Err(e) => resp.error = Some(e),
        }
        Ok(Response::new(resp))
    }

    async fn kv_resolve_lock(
        &self,
        request: Request<kvrpcpb::ResolveLockRequest>,
    ) -> Reply<kvrpcpb::ResolveLockResponse> {
        self.enter("KvResolveLock")?;
        let req = request.into_inner();
        self.releasing(|m| {
            if req.txn_infos.is_empty() {
                m.resolve_lock(req.start_version, req.commit_version, &req.keys);
            }
            for info in &req.txn_infos {
                m.resolve_lock(info.txn, info.status, &[]);
            }
        });
        Ok(Response::new(kvrpcpb::ResolveLockResponse::default()))
    }
}
