//! The etcd backend (crate `etcd-client`), for etcd 3.4 and 3.5.
//!
//! Every conditional write is one etcd Txn; a prefix read is a Range sorted by create
//! revision; a prefix watch is one gRPC watch stream, opened with no start revision (so
//! etcd registers it as "synced", avoiding the 100 ms catch-up of unsynced watchers) and
//! returned only after etcd confirms its creation. Connections use `require_leader`, so a
//! member cut off from the leader cancels our watches instead of going silent.

use super::*;
use crate::error::{Cause, Error};

mod config;
mod streams;
pub use config::{EtcdConfig, TlsConfig};
use etcd_client::{
    Certificate, Compare, CompareOp, ConnectOptions, GetOptions, Identity, LeaseTimeToLiveOptions,
    LeaseTimeToLiveResponse, PutOptions, SortOrder, SortTarget, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
    WatchFilterType, WatchOptions,
};
use streams::{EtcdKeepAlive, EtcdWatch};

/// The etcd backend. Cheap to clone.
#[derive(Clone)]
pub struct EtcdBackend {
    client: etcd_client::Client,
    request_timeout: Duration,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend").finish_non_exhaustive()
    }
}

/// Maps an etcd-client error to leasehold's: transport and availability problems are
/// transient; auth problems are [`Error::Auth`]; the rest is permanent.
pub(crate) fn map_err(e: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    let (kind, msg): (fn(Cause) -> Error, String) = match &e {
        E::GRpcStatus(status) => {
            use tonic_code::*;
            let code = status.code() as i32;
            let msg = with_causes(status.message(), status);
            let lower = msg.to_lowercase();
            if lower.contains("authentication failed")
                || lower.contains("permission denied")
                || lower.contains("invalid auth token")
                || lower.contains("user name is empty")
                || matches!(code, PERMISSION_DENIED | UNAUTHENTICATED)
            {
                (Error::Auth, msg)
            } else if lower.contains("requested lease not found") {
                return Error::LeaseNotFound { lease: 0 };
            } else {
                match code {
                    UNAVAILABLE | DEADLINE_EXCEEDED | CANCELLED | ABORTED | UNKNOWN | RESOURCE_EXHAUSTED => {
                        (Error::Unavailable, format!("etcd: {msg}"))
                    }
                    _ => (Error::Store, format!("etcd: {msg} ({:?})", status.code())),
                }
            }
        }
        E::TransportError(t) => (Error::Unavailable, format!("etcd: transport: {}", with_causes(&t.to_string(), t))),
        E::IoError(io) => (Error::Unavailable, format!("etcd: io: {io}")),
        E::WatchError(w) => (Error::Unavailable, format!("etcd: watch: {w}")),
        E::LeaseKeepAliveError(l) => (Error::Unavailable, format!("etcd: keep-alive: {l}")),
        other => (Error::Store, format!("etcd: {other}")),
    };
    // The client's own error stays the cause (`Error::source`).
    kind(Cause::with_source(msg, e))
}

/// Names the lease in a "lease not found" answer: etcd's message does not say which, so
/// [`map_err`] leaves it 0, and each call that sent a lease fills it in here. A call that
/// sent none (it cannot get that answer) reports it as a store error, never lease 0.
fn for_lease(e: Error, lease: Option<LeaseId>) -> Error {
    match (e, lease) {
        (Error::LeaseNotFound { lease: 0 }, Some(lease)) => Error::LeaseNotFound { lease },
        (Error::LeaseNotFound { lease: 0 }, None) => Error::Store("etcd: requested lease not found".into()),
        (e, _) => e,
    }
}

/// gRPC status codes, by number, so the mapping does not depend on tonic's version.
mod tonic_code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

fn kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }
}

fn revision(resp: &TxnResponse) -> Revision {
    resp.header().map_or(0, |h| h.revision())
}

/// A [`Condition`] as an etcd comparison.
fn compare(c: &Condition) -> Compare {
    match c {
        Condition::Created { key, revision } => Compare::create_revision(key.clone(), CompareOp::Equal, *revision),
        Condition::Modified { key, revision: Some(r) } => Compare::mod_revision(key.clone(), CompareOp::Equal, *r),
        Condition::Modified { key, revision: None } => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
        // Over a range the comparison must hold for every key; an empty range passes.
        Condition::PrefixEmpty { prefix } => {
            Compare::create_revision(prefix.clone(), CompareOp::Equal, 0).with_prefix()
        }
    }
}

fn head_options(limit: usize) -> GetOptions {
    let opts = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend);
    if limit > 0 {
        opts.with_limit(limit as i64)
    } else {
        opts
    }
}

/// The key-values of the Range response at `index` of a Txn response.
fn range_at(resp: &TxnResponse, index: usize) -> Vec<KeyValue> {
    match resp.op_responses().into_iter().nth(index) {
        Some(TxnOpResponse::Get(g)) => g.kvs().iter().map(kv).collect(),
        _ => Vec::new(),
    }
}

impl EtcdBackend {
    /// Connects and checks that the cluster answers within the connect timeout.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is left behind.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(Error::invalid("etcd", "no endpoints given"));
        }
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        let endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| if e.contains("://") { e.clone() } else { format!("{scheme}://{e}") })
            .collect();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_require_leader(true)
            // HTTP/2 pings find a dead connection under a quiet watch. etcd closes the
            // connection of a client that pings more often than every 5 s while it sends
            // nothing itself (`--grpc-keepalive-min-time`, "too many pings"): stay well
            // above that.
            .with_keep_alive(KEEP_ALIVE_INTERVAL, Duration::from_secs(5));
        if let Some((user, password)) = &config.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &config.tls {
            check_pem(tls)?;
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                t = t.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity_pem {
                t = t.identity(Identity::from_pem(cert, key));
            }
            if let Some(domain) = &tls.domain {
                t = t.domain_name(domain.clone());
            }
            options = options.with_tls(t);
        }
        let joined = endpoints.join(",");
        let connect_error =
            |reason: Cause| Error::Connect { endpoints: joined.clone(), timeout: config.connect_timeout, reason };
        let attempt = async {
            let mut client = etcd_client::Client::connect(&endpoints, Some(options)).await.map_err(map_err)?;
            // The channel connects lazily: make one real round trip now. A user who may not
            // read the probe key (etcd auth with permissions on a prefix only) is refused,
            // which is an authenticated answer all the same (`etcdctl endpoint health`
            // counts it as healthy too).
            match client.get("\0leasehold-probe", None).await.map_err(map_err) {
                Ok(_) => {}
                Err(Error::Auth(msg)) if msg.message().to_lowercase().contains("permission denied") => {}
                Err(e) => return Err(e),
            }
            Ok::<_, Error>(client)
        };
        let client = match tokio::time::timeout(config.connect_timeout, attempt).await {
            Ok(Ok(client)) => client,
            Ok(Err(Error::Auth(msg))) => return Err(Error::Auth(msg)),
            Ok(Err(e)) => {
                // The etcd client's error stays the source, whatever the message says.
                let cause = match e {
                    Error::Unavailable(m) | Error::Store(m) => m,
                    other => Cause::with_source(other.to_string(), other),
                };
                let reason = cause.message().to_owned();
                let lower = reason.to_lowercase();
                if let Some(tls) = &config.tls {
                    // A TLS alert from the server (etcd 3.5.16 sends `UnknownCA` for a client
                    // certificate it does not trust) is a TLS failure too.
                    let tls_words = ["certificate", "tls", "handshake", "alert"];
                    if tls_words.iter().any(|w| lower.contains(w)) {
                        return Err(Error::Tls(cause.reworded(format!("{joined}: {reason}{}", tls_hint(&lower)))));
                    }
                    // etcd 3.4 drops a client whose certificate it refuses without a TLS
                    // alert: the first request then finds the connection closed, reset or
                    // cancelled (the words vary with the moment the close is seen).
                    let dropped = [
                        "connection closed",
                        "connection reset",
                        "broken pipe",
                        "stream closed",
                        "operation was canceled",
                    ];
                    if dropped.iter().any(|d| lower.contains(d)) {
                        let which = match tls.identity_pem {
                            None => "none was given",
                            Some(_) => "perhaps it is not signed by a CA the server trusts",
                        };
                        return Err(Error::Tls(cause.reworded(format!(
                            "{joined}: {reason} (the server closed the connection right after the TLS \
                             handshake; it probably refused the client certificate: {which})"
                        ))));
                    }
                }
                return Err(connect_error(cause));
            }
            Err(elapsed) => return Err(connect_error(Cause::with_source("no answer", elapsed))),
        };
        Ok(Self { client, request_timeout: config.request_timeout })
    }

    /// Sends `txn`; `lease` is the lease its puts name, if any (see [`for_lease`]).
    async fn txn(&self, txn: Txn, lease: Option<LeaseId>) -> Result<TxnResponse> {
        unsent_retry(|| {
            let txn = txn.clone();
            let mut kv = self.client.kv_client();
            async move { kv.txn(txn).await }
        })
        .await
        .map_err(|e| for_lease(e, lease))
    }
}

/// `text` followed by the distinct messages of `e`'s causes: tonic reports a failed
/// connection as "transport error" and keeps the reason (a TLS alert, a reset) in its
/// sources.
fn with_causes(text: &str, e: &dyn std::error::Error) -> String {
    let mut out = text.to_owned();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !m.is_empty() && !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cause = c.source();
    }
    out
}

/// How often an idle connection with open streams is pinged (see [`EtcdBackend::connect`]).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Refuses TLS material that holds no PEM block of the expected kind, before connecting
/// (rustls would otherwise just trust nothing and report an unknown issuer).
fn check_pem(tls: &TlsConfig) -> Result<()> {
    let has = |pem: &[u8], what: &str| String::from_utf8_lossy(pem).contains(&format!("-----BEGIN {what}"));
    if let Some(ca) = &tls.ca_pem {
        if !has(ca, "CERTIFICATE-----") {
            return Err(Error::Tls("CA certificate: no PEM \"CERTIFICATE\" block found".into()));
        }
    }
    if let Some((cert, key)) = &tls.identity_pem {
        if !has(cert, "CERTIFICATE-----") {
            return Err(Error::Tls("client certificate: no PEM \"CERTIFICATE\" block found".into()));
        }
        if !String::from_utf8_lossy(key).contains("PRIVATE KEY-----") {
            return Err(Error::Tls("client key: no PEM private key block found".into()));
        }
    }
    Ok(())
}

/// A short explanation of a TLS failure rustls reports tersely (`lower` is lowercase).
fn tls_hint(lower: &str) -> &'static str {
    if lower.contains("unknownissuer") {
        " (the server's certificate is not signed by the configured CA)"
    } else if ["badcertificate", "certificaterequired", "unknownca"].iter().any(|w| lower.contains(w)) {
        " (the server refused the client certificate: none was given, or it is not signed by a CA the server trusts)"
    } else {
        ""
    }
}

/// Whether a request failed before it reached any server (no connection could be made):
/// such a request is safe to send again, whatever it does.
fn unsent(e: &etcd_client::Error) -> bool {
    let msg = match e {
        etcd_client::Error::TransportError(_) => return true,
        etcd_client::Error::GRpcStatus(s) if s.code() as i32 == tonic_code::UNAVAILABLE => s.message().to_lowercase(),
        _ => return false,
    };
    ["connect error", "connection refused", "error trying to connect", "dns error"].iter().any(|p| msg.contains(p))
}

/// Runs a request, re-sending it (briefly, with jitter) while it fails before reaching a
/// server, e.g. while the balancer still picks a member that just died.
async fn unsent_retry<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let mut delays = crate::Backoff::new(Duration::from_millis(5), Duration::from_millis(250)).max_attempts(8).delays();
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if unsent(&e) => match delays.next() {
                Some(d) => tokio::time::sleep(d).await,
                None => return Err(map_err(e)),
            },
            Err(e) => return Err(map_err(e)),
        }
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        let secs = ttl.as_secs_f64().ceil() as i64;
        let resp = unsent_retry(|| {
            let mut c = self.client.lease_client();
            async move { c.grant(secs, None).await }
        })
        .await?;
        Ok(Lease { id: resp.id(), ttl: Duration::from_secs(resp.ttl().max(0) as u64) })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Box<dyn KeepAlive>> {
        let mut leases = self.client.lease_client();
        let open = leases.keep_alive(lease);
        // etcd-client opens the stream with a renewal and waits for its answer: a positive
        // TTL (else "lease not found"). That answer is the lease renewed (`renewed_on_open`).
        let (keeper, stream) = tokio::time::timeout(self.request_timeout, open)
            .await
            .map_err(|_| Error::Unavailable("etcd: keep-alive open timed out".into()))?
            .map_err(|e| match e {
                etcd_client::Error::LeaseKeepAliveError(m) if m.contains("lease not found") => {
                    Error::LeaseNotFound { lease }
                }
                e => for_lease(map_err(e), Some(lease)),
            })?;
        Ok(Box::new(EtcdKeepAlive { lease, timeout: self.request_timeout, keeper, stream, abandoned: false }))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let revoked = unsent_retry(|| {
            let mut c = self.client.lease_client();
            async move { c.revoke(lease).await }
        });
        match revoked.await {
            Ok(_) | Err(Error::LeaseNotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<Duration>> {
        Ok(self.time_to_live(lease, false).await?.map(|r| Duration::from_secs(r.ttl() as u64)))
    }

    async fn lease_keys(&self, lease: LeaseId) -> Result<Vec<String>> {
        let Some(r) = self.time_to_live(lease, true).await? else { return Ok(Vec::new()) };
        Ok(r.keys().iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect())
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = unsent_retry(|| {
            let mut c = self.client.kv_client();
            async move { c.get(key, None).await }
        })
        .await?;
        Ok(resp.kvs().first().map(kv))
    }

    async fn range_prefix(&self, prefix: &str, limit: usize) -> Result<(Vec<KeyValue>, Revision)> {
        let resp = unsent_retry(|| {
            let mut c = self.client.kv_client();
            async move { c.get(prefix, Some(head_options(limit))).await }
        })
        .await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        Ok((resp.kvs().iter().map(kv).collect(), rev))
    }

    async fn create(&self, req: CreateRequest) -> Result<CreateResponse> {
        let absent = compare(&Condition::Modified { key: req.key.clone(), revision: None });
        let mut conds = match req.precondition {
            Precondition::KeyAbsent => vec![absent],
            Precondition::PrefixEmpty => vec![absent, compare(&Condition::PrefixEmpty { prefix: req.prefix.clone() })],
        };
        let fence =
            req.fence.as_ref().map(|f| compare(&Condition::Modified { key: f.key.clone(), revision: f.revision }));
        conds.extend(fence.clone());
        let head = || TxnOp::get(req.prefix.clone(), Some(head_options(req.head_limit)));
        let put = TxnOp::put(req.key.clone(), req.value.clone(), Some(PutOptions::new().with_lease(req.lease)));
        // The replaced key is deleted first in both branches (a nested Txn when the delete
        // has its own condition, or when a fence must hold for it in the failure branch), so
        // the head read after it no longer lists it.
        let delete = |with: Vec<Compare>, key: &str| match with.is_empty() {
            true => TxnOp::delete(key.to_owned(), None),
            false => TxnOp::txn(Txn::new().when(with).and_then([TxnOp::delete(key.to_owned(), None)])),
        };
        let replace = |fenced: bool| -> Vec<TxnOp> {
            let Some(Replaced { key, revision }) = &req.replaces else { return Vec::new() };
            let owned = revision.map(|r| Compare::create_revision(key.clone(), CompareOp::Equal, r));
            let with = owned.into_iter().chain(fence.clone().filter(|_| fenced)).collect();
            vec![delete(with, key)]
        };
        let skip = usize::from(req.replaces.is_some());
        let read = || req.read.iter().map(|k| TxnOp::get(k.clone(), None));
        let then: Vec<TxnOp> = replace(false).into_iter().chain([put, head()]).chain(read()).collect();
        // The failure branch also reads the fence key, last, to tell a moved fence apart.
        let fence_get = req.fence.iter().map(|f| TxnOp::get(f.key.clone(), None));
        let otherwise: Vec<TxnOp> = replace(true)
            .into_iter()
            .chain([TxnOp::get(req.key.clone(), None), head()])
            .chain(read())
            .chain(fence_get)
            .collect();
        // On success the key is exactly what was put, at the Txn's revision: no need to read it.
        let txn = Txn::new().when(conds).and_then(then).or_else(otherwise);
        let resp = self.txn(txn, Some(req.lease).filter(|&l| l != 0)).await?;
        let created = resp.succeeded();
        let at = revision(&resp);
        let mine = if created {
            Some(KeyValue { key: req.key, value: req.value, create_revision: at, mod_revision: at, lease: req.lease })
        } else {
            range_at(&resp, skip).into_iter().next()
        };
        let read = if req.read.is_some() { range_at(&resp, skip + 2).into_iter().next() } else { None };
        let fence_moved = match &req.fence {
            Some(f) if !created => {
                let now = range_at(&resp, skip + 2 + usize::from(req.read.is_some())).into_iter().next();
                let now = now.map(|kv| kv.mod_revision);
                (now != f.revision).then_some(now.unwrap_or(0))
            }
            _ => None,
        };
        Ok(CreateResponse { created, mine, head: range_at(&resp, skip + 1), revision: at, read, fence_moved })
    }

    async fn delete_if_created(&self, key: &str, create_revision: Revision) -> Result<bool> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, create_revision)])
            .and_then([TxnOp::delete(key, None)]);
        Ok(self.txn(txn, None).await?.succeeded())
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<CasResponse> {
        let unchanged = compare(&Condition::Modified { key: key.to_owned(), revision: expected });
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        let txn = Txn::new()
            .when([unchanged])
            .and_then([TxnOp::put(key, value, opts), TxnOp::get(key, None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn, lease).await?;
        let swapped = resp.succeeded();
        Ok(CasResponse {
            swapped,
            current: range_at(&resp, usize::from(swapped)).into_iter().next(),
            revision: revision(&resp),
        })
    }

    async fn transact(&self, conditions: &[Condition], writes: Vec<Write>, reads: &[Read]) -> Result<Transacted> {
        crate::backend::distinct_keys(&writes)?;
        let compares: Vec<Compare> = conditions.iter().map(compare).collect();
        let skip = writes.len();
        let lease = writes.iter().find_map(|w| match w {
            Write::Put { lease: Some(l), .. } => Some(*l),
            _ => None,
        });
        let ops = writes.into_iter().map(|w| match w {
            Write::Put { key, value, lease } => TxnOp::put(key, value, lease.map(|l| PutOptions::new().with_lease(l))),
            Write::Delete { key } => TxnOp::delete(key, None),
        });
        // The reads in both branches; a prefix is counted, not read. Without writes the Txn is
        // read-only, and etcd answers it without a raft entry.
        let read_ops = || {
            reads.iter().map(|r| match r {
                Read::Key(key) => TxnOp::get(key.clone(), None),
                Read::Occupied(prefix) => {
                    TxnOp::get(prefix.clone(), Some(GetOptions::new().with_prefix().with_count_only()))
                }
            })
        };
        let mut txn = Txn::new().when(compares).and_then(ops.chain(read_ops()).collect::<Vec<_>>());
        if !reads.is_empty() {
            txn = txn.or_else(read_ops().collect::<Vec<_>>());
        }
        let resp = self.txn(txn, lease).await?;
        let applied = resp.succeeded().then(|| revision(&resp));
        let skip = if applied.is_some() { skip } else { 0 };
        let answers = resp.op_responses();
        let mut found = Vec::with_capacity(reads.len());
        for (i, r) in reads.iter().enumerate() {
            let Some(TxnOpResponse::Get(g)) = answers.get(skip + i) else {
                return Err(Error::Store(format!("etcd: read {i} of a transaction missing from its answer").into()));
            };
            found.push(match r {
                Read::Key(_) => ReadValue::Key(g.kvs().first().map(kv)),
                Read::Occupied(_) => ReadValue::Occupied(g.count() > 0),
            });
        }
        Ok(Transacted { applied, reads: found })
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<Box<dyn WatchStream>> {
        self.watch(prefix, WatchOptions::new().with_prefix()).await
    }

    async fn watch_prefix_deletes(&self, prefix: &str) -> Result<Box<dyn WatchStream>> {
        // NOPUT: etcd filters at the server, so a waiter's stream carries no puts at all.
        self.watch(prefix, WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoPut])).await
    }

    async fn watch_key_and_prefix(&self, key: &str, prefix: &str) -> Result<Box<dyn WatchStream>> {
        // The range [key, end of prefix): the key, the prefix's keys, and only the names that
        // sort between them (`<name>+x`, `<name>-x`, `<name>.x` before `<name>/`) — not
        // `<name>2` or `<name>x`, which a prefix watch of the key would bring. Those few are
        // sent and dropped here.
        KeyAndPrefix::check(key, prefix)?;
        let watch = self.watch(key, WatchOptions::new().with_range(prefix_end(prefix))).await?;
        Ok(Box::new(KeyAndPrefix::new(watch, key, prefix)))
    }
}

impl EtcdBackend {
    /// The lease's TimeToLive answer (with its keys if `keys`), or `None` if it is gone.
    /// etcd answers -1 for a lease it does not know, and whole seconds rounded down for one
    /// it does: 0 in its last second (taken for gone until 2026-12-05, conformance check
    /// `lease_ttl_in_its_last_second`).
    async fn time_to_live(&self, lease: LeaseId, keys: bool) -> Result<Option<LeaseTimeToLiveResponse>> {
        let ttl = unsent_retry(|| {
            let mut c = self.client.lease_client();
            let options = keys.then(|| LeaseTimeToLiveOptions::new().with_keys());
            async move { c.time_to_live(lease, options).await }
        });
        match ttl.await {
            Ok(r) if r.ttl() >= 0 => Ok(Some(r)),
            Ok(_) | Err(Error::LeaseNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens a watch and waits for etcd to confirm it (only then is it registered).
    async fn watch(&self, prefix: &str, options: WatchOptions) -> Result<Box<dyn WatchStream>> {
        let open = async {
            let mut stream = self.client.watch_client().watch(prefix, Some(options)).await.map_err(map_err)?;
            // Wait for etcd to confirm the watch: only then is it registered (and synced).
            loop {
                match stream.message().await.map_err(map_err)? {
                    Some(resp) if resp.created() => {
                        let start = resp.header().map_or(0, |h| h.revision());
                        return Ok::<_, Error>(EtcdWatch { start, stream });
                    }
                    Some(resp) if resp.canceled() => {
                        return Err(Error::Store(format!("etcd: watch refused: {}", resp.cancel_reason()).into()));
                    }
                    Some(_) => continue,
                    None => return Err(Error::Unavailable("etcd: watch stream ended".into())),
                }
            }
        };
        let watch = tokio::time::timeout(self.request_timeout, open)
            .await
            .map_err(|_| Error::Unavailable("etcd: watch creation timed out".into()))??;
        Ok(Box::new(watch))
    }
}

/// The end of the key range of `prefix` (exclusive): the prefix with its last byte below
/// 0xff raised by one, as etcd's own `with_prefix` computes it (`\0`, every key, if none is).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
#[test]
fn the_end_of_a_prefix_range() {
    assert_eq!(prefix_end("app/stock/"), b"app/stock0");
    assert_eq!(prefix_end("a\u{7f}"), b"a\x80");
    assert_eq!(prefix_end(""), b"\0");
}
