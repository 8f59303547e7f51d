//! The [`Backend`] implementation on top of [`attempts`]: leases, keep-alive, reads,
//! creates, conditional writes and watches, each one transaction.

use super::*;

impl TikvBackend {
    /// Connects through the PD endpoints and checks that the cluster answers (a timestamp
    /// round trip) within the connect timeout.
    pub async fn connect(config: TikvConfig) -> Result<Self> {
        if config.pd_endpoints.is_empty() {
            return Err(Error::invalid("tikv", "no PD endpoints given"));
        }
        if config.root.is_empty() {
            return Err(Error::invalid("tikv", "the key root must not be empty"));
        }
        // TiKV keeps a TxnLock 20 s past its last heartbeat: one interval must leave room.
        if config.txn_lock_heartbeat.is_zero() || config.txn_lock_heartbeat > MAX_TXN_LOCK_HEARTBEAT {
            return Err(Error::invalid(
                "tikv",
                format!("txn_lock_heartbeat must be above 0 and at most {MAX_TXN_LOCK_HEARTBEAT:?}"),
            ));
        }
        let endpoints: Vec<String> = config
            .pd_endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://").trim_start_matches("https://").to_owned())
            .collect();
        let joined = endpoints.join(",");
        let tikv_config = tikv_client::Config::default().with_timeout(config.request_timeout);
        let attempt = async {
            let client = TransactionClient::new_with_config(endpoints.clone(), tikv_config).await?;
            client.current_timestamp().await?;
            Ok::<_, tikv_client::Error>(client)
        };
        let connect_error =
            |reason: Cause| Error::Connect { endpoints: joined.clone(), timeout: config.connect_timeout, reason };
        let client = match tokio::time::timeout(config.connect_timeout, attempt).await {
            Ok(Ok(client)) => client,
            // The TiKV client's error stays the source.
            Ok(Err(e)) => return Err(connect_error(Cause::with_source(e.to_string(), e))),
            Err(elapsed) => return Err(connect_error(Cause::with_source("no answer", elapsed))),
        };
        let keys = Keys { root: config.root.clone().into_bytes() };
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                cfg: config,
                keys,
                watches: Mutex::new(Vec::new()),
                poke: Arc::new(Notify::new()),
                reap_now: Arc::new(Notify::new()),
                tasks_started: Mutex::new(false),
                write_turn: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &TikvConfig {
        &self.inner.cfg
    }

    /// Starts the poller and the reaper (once).
    pub(super) fn start_tasks(&self) {
        let mut started = self.inner.tasks_started.lock();
        if !*started {
            *started = true;
            tokio::spawn(poller(Arc::downgrade(&self.inner)));
            tokio::spawn(reaper(Arc::downgrade(&self.inner)));
        }
    }

    /// Runs `body` as one transaction (retried on conflicts) in its own task, bounded by
    /// the request timeout.
    pub(super) async fn run<T: Send + 'static>(&self, reap_inline: bool, body: Body<T>) -> Result<T> {
        Ok(self.run_flagged(reap_inline, body).await?.0)
    }

    /// [`run`](Self::run), also telling whether the transaction met an expired lease.
    pub(super) async fn run_flagged<T: Send + 'static>(&self, reap_inline: bool, body: Body<T>) -> Result<(T, bool)> {
        self.start_tasks();
        let timeout = self.inner.cfg.request_timeout;
        let now = tokio::time::Instant::now();
        // A timeout past what the clock can count: no limit (30 years, tokio's "never").
        let stop_at =
            now.checked_add(timeout.saturating_mul(3) / 4).unwrap_or(now + Duration::from_secs(86_400 * 365 * 30));
        let task = tokio::spawn(attempts(self.inner.clone(), reap_inline, stop_at, body));
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(Error::Store(format!("tikv: request task failed: {e}").into())),
            Err(_) => Err(Error::Unavailable(format!("tikv: no answer within {timeout:?}").into())),
        }
    }

    /// A read-only body. If it meets a key whose lease has expired, it runs again as a
    /// write that reaps the lease first, and answers from that run.
    ///
    /// Leaving an expired lease's keys out without reaping would not be safe: a renewal
    /// that started before the expiry (its start timestamp decides "alive") can commit
    /// after the read, and the lease and its keys would be back after a reader was told
    /// they were gone — and may have admitted another holder on it. A reap writes the
    /// lease record, as every renewal does, so the two conflict and only one commits:
    /// either the read sees the renewed lease, or the renewal fails.
    pub(super) async fn read<T: Send + 'static>(&self, body: Body<T>) -> Result<T> {
        let (v, met_expired) = self.run_flagged(false, body.clone()).await?;
        #[cfg(not(leasehold_sim_mutation_tikv_read))]
        if met_expired {
            return self.run(true, body).await;
        }
        // Mutation (scripts/sim.sh): issue 17's bug 3, the read answers without reaping.
        #[cfg(leasehold_sim_mutation_tikv_read)]
        if met_expired {
            self.inner.reap_now.notify_one();
        }
        Ok(v)
    }

    pub(super) async fn renew(&self, lease: LeaseId) -> Result<Duration> {
        self.run(
            true,
            Arc::new(move |tx| {
                Box::pin(async move {
                    let Some(rec) = tx.lease(lease).await? else {
                        return Err(Error::LeaseNotFound { lease }.into());
                    };
                    if rec.expires_ms <= tx.now_ms {
                        tx.reap(lease).await?;
                        return Ok(None);
                    }
                    let renewed = LeaseRec { ttl_ms: rec.ttl_ms, expires_ms: tx.now_ms.saturating_add(rec.ttl_ms) };
                    tx.txn.delete(tx.keys().expiry(rec.expires_ms, lease)).await?;
                    tx.txn.put(tx.keys().expiry(renewed.expires_ms, lease), Vec::new()).await?;
                    tx.txn.put(tx.keys().lease(lease), encode_lease(renewed)).await?;
                    tx.dirty = true;
                    Ok(Some(Duration::from_millis(rec.ttl_ms)))
                })
            }),
        )
        .await?
        .ok_or(Error::LeaseNotFound { lease })
    }
}

/// Keeps a lease alive by renewing its record.
pub(super) struct TikvKeepAlive {
    pub(super) backend: TikvBackend,
    pub(super) lease: LeaseId,
}

#[async_trait]
impl KeepAlive for TikvKeepAlive {
    async fn renew(&mut self) -> Result<Duration> {
        self.backend.renew(self.lease).await
    }
}

pub(super) struct TikvWatch {
    pub(super) start: Revision,
    pub(super) rx: mpsc::UnboundedReceiver<Result<Vec<WatchEvent>>>,
}

#[async_trait]
impl WatchStream for TikvWatch {
    fn start_revision(&self) -> Revision {
        self.start
    }

    async fn next(&mut self) -> Result<Vec<WatchEvent>> {
        match self.rx.recv().await {
            Some(r) => r,
            None => Err(Error::Unavailable("tikv: watch closed".into())),
        }
    }
}

#[async_trait]
impl Backend for TikvBackend {
    fn kind(&self) -> &'static str {
        "tikv"
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        // Saturating: a TTL past what the clock counts is a lease that never expires.
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let id = self
            .run(
                true,
                Arc::new(move |tx| {
                    Box::pin(async move {
                        let id = tx.txn.start_timestamp().version() as LeaseId;
                        let rec = LeaseRec { ttl_ms, expires_ms: tx.now_ms.saturating_add(ttl_ms) };
                        tx.txn.put(tx.keys().lease(id), encode_lease(rec)).await?;
                        tx.txn.put(tx.keys().expiry(rec.expires_ms, id), Vec::new()).await?;
                        tx.dirty = true;
                        Ok(id)
                    })
                }),
            )
            .await?;
        Ok(Lease { id, ttl: Duration::from_millis(ttl_ms) })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Box<dyn KeepAlive>> {
        Ok(Box::new(TikvKeepAlive { backend: self.clone(), lease }))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.run(true, Arc::new(move |tx| Box::pin(tx.reap(lease)))).await
    }

    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<Duration>> {
        self.read(Arc::new(move |tx| {
            Box::pin(async move {
                if !tx.alive(lease).await? {
                    return Ok(None);
                }
                let now = tx.now_ms;
                Ok(tx.lease(lease).await?.map(|l| Duration::from_millis(l.expires_ms.saturating_sub(now))))
            })
        }))
        .await
    }

    async fn lease_keys(&self, lease: LeaseId) -> Result<Vec<String>> {
        self.read(Arc::new(move |tx| {
            Box::pin(async move {
                if !tx.alive(lease).await? {
                    return Ok(Vec::new());
                }
                let start = tx.keys().with("x/", format!("{}/", hex16(lease as u64)).as_bytes());
                let end = prefix_end(&start);
                let skip = start.len();
                let indexed: Vec<Vec<u8>> = tx.txn.scan_keys(start..end, u32::MAX).await?.map(Into::into).collect();
                let mut keys = Vec::new();
                for raw in indexed {
                    let key = String::from_utf8(raw[skip..].to_vec()).map_err(|_| corrupt("lease index"))?;
                    // The index may name a key since deleted or moved to another lease.
                    if tx.raw_kv(&key).await?.is_some_and(|kv| kv.lease == lease) {
                        keys.push(key);
                    }
                }
                Ok(keys)
            })
        }))
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.read(Arc::new(move |tx| {
            let key = key.clone();
            Box::pin(async move { tx.get(&key).await })
        }))
        .await
    }

    async fn range_prefix(&self, prefix: &str, limit: usize) -> Result<(Vec<KeyValue>, Revision)> {
        let prefix = prefix.to_owned();
        self.read(Arc::new(move |tx| {
            let prefix = prefix.clone();
            Box::pin(async move {
                let mut kvs = tx.scan(&prefix).await?;
                if limit > 0 {
                    kvs.truncate(limit);
                }
                Ok((kvs, tx.base))
            })
        }))
        .await
    }

    async fn create(&self, req: CreateRequest) -> Result<CreateResponse> {
        self.run(
            true,
            Arc::new(move |tx| {
                let req = req.clone();
                Box::pin(async move {
                    let fence_moved = match &req.fence {
                        Some(fence) => {
                            let now = tx.get(&fence.key).await?.map(|kv| kv.mod_revision);
                            (now != fence.revision).then_some(now.unwrap_or(0))
                        }
                        None => None,
                    };
                    let ok = fence_moved.is_none()
                        && match req.precondition {
                            Precondition::KeyAbsent => tx.get(&req.key).await?.is_none(),
                            Precondition::PrefixEmpty => {
                                tx.get(&req.key).await?.is_none() && tx.scan(&req.prefix).await?.is_empty()
                            }
                        };
                    if let Some(Replaced { key, revision }) = req.replaces.as_ref().filter(|_| fence_moved.is_none()) {
                        let current = tx.get(key).await?.map(|kv| kv.create_revision);
                        if current.is_some() && (revision.is_none() || current == *revision) {
                            tx.delete(key).await?;
                        }
                    }
                    if ok {
                        tx.put(&req.key, req.value.clone(), req.lease).await?;
                    }
                    let mine = tx.get(&req.key).await?;
                    let mut head = tx.scan(&req.prefix).await?;
                    if req.head_limit > 0 {
                        head.truncate(req.head_limit);
                    }
                    let read = match &req.read {
                        Some(k) => tx.get(k).await?,
                        None => None,
                    };
                    Ok(CreateResponse { created: ok, mine, head, revision: tx.rev, read, fence_moved })
                })
            }),
        )
        .await
    }

    async fn delete_if_created(&self, key: &str, create_revision: Revision) -> Result<bool> {
        let key = key.to_owned();
        self.run(
            true,
            Arc::new(move |tx| {
                let key = key.clone();
                Box::pin(async move {
                    if tx.get(&key).await?.is_some_and(|kv| kv.create_revision == create_revision) {
                        return tx.delete(&key).await;
                    }
                    Ok(false)
                })
            }),
        )
        .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<CasResponse> {
        let key = key.to_owned();
        self.run(
            true,
            Arc::new(move |tx| {
                let (key, value) = (key.clone(), value.clone());
                Box::pin(async move {
                    let swapped = tx.get(&key).await?.map(|kv| kv.mod_revision) == expected;
                    if swapped {
                        tx.put(&key, value, lease.unwrap_or(0)).await?;
                    }
                    let current = tx.get(&key).await?;
                    Ok(CasResponse { swapped, current, revision: tx.rev })
                })
            }),
        )
        .await
    }

    async fn transact(&self, conditions: &[Condition], writes: Vec<Write>, reads: &[Read]) -> Result<Transacted> {
        crate::backend::distinct_keys(&writes)?;
        let read_only = conditions.is_empty() && writes.is_empty();
        let (conditions, reads) = (conditions.to_vec(), reads.to_vec());
        let body: Body<Transacted> = Arc::new(move |tx| {
            let (conditions, writes, reads) = (conditions.clone(), writes.clone(), reads.clone());
            Box::pin(async move {
                let mut holds = true;
                for c in &conditions {
                    holds = match c {
                        Condition::Created { key, revision } => {
                            tx.get(key).await?.is_some_and(|kv| kv.create_revision == *revision)
                        }
                        Condition::Modified { key, revision } => {
                            tx.get(key).await?.map(|kv| kv.mod_revision) == *revision
                        }
                        Condition::PrefixEmpty { prefix } => tx.scan(prefix).await?.is_empty(),
                    };
                    if !holds {
                        break;
                    }
                }
                let applied = if holds {
                    // A key under an expired lease is gone: reap first (a reap is a revision
                    // of its own), so that every write below shares one revision.
                    let mut present = Vec::with_capacity(writes.len());
                    for w in &writes {
                        let key = match w {
                            Write::Put { key, .. } | Write::Delete { key } => key,
                        };
                        present.push(tx.get(key).await?.is_some());
                    }
                    for (w, present) in writes.into_iter().zip(present) {
                        match w {
                            Write::Put { key, value, lease } => {
                                tx.put(&key, value, lease.unwrap_or(0)).await?;
                            }
                            Write::Delete { key } if present => {
                                tx.delete(&key).await?;
                            }
                            Write::Delete { .. } => {}
                        }
                    }
                    Some(tx.rev)
                } else {
                    None
                };
                let mut found = Vec::with_capacity(reads.len());
                for r in &reads {
                    found.push(match r {
                        Read::Key(key) => ReadValue::Key(tx.get(key).await?),
                        Read::Occupied(prefix) => ReadValue::Occupied(!tx.scan(prefix).await?.is_empty()),
                    });
                }
                Ok(Transacted { applied, reads: found })
            })
        });
        // Without conditions and writes, a read (which reaps only when it meets an expired
        // lease, like every read).
        if read_only {
            self.read(body).await
        } else {
            self.run(true, body).await
        }
    }

    async fn watch_prefix(&self, prefix: &str) -> Result<Box<dyn WatchStream>> {
        let start = self.read(Arc::new(|tx| Box::pin(async move { Ok(tx.base) }))).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.watches.lock().push(Slot { prefix: prefix.to_owned(), cursor: start, tx });
        self.inner.poke.notify_one();
        Ok(Box::new(TikvWatch { start, rx }))
    }
}
