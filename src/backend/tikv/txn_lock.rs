//! [`TxnLock`]: a lock held by a TiKV pessimistic transaction, the TiKV-specific strategy.

use super::*;

/// A lock held by a TiKV **pessimistic transaction**: the TiKV-specific strategy.
///
/// [`lock`](TxnLock::lock) begins a pessimistic transaction and locks the key
/// `<root>t/<name>` with `lock_keys`; while another transaction holds it, the request
/// waits in TiKV's lock-wait queue (and the client retries after TiKV's wait timeout), so
/// a release wakes the next waiter at once. The transaction's heartbeat keeps the lock
/// ([`TikvConfig::txn_lock_heartbeat`]); if the holder dies, TiKV lets others resolve the
/// lock 20 s after its last heartbeat (tikv-client's fixed lock TTL). TiKV counts that TTL
/// from the transaction's start, so a waiting acquisition begins a fresh transaction every
/// few seconds and renews a granted lock before it returns it. Unlock rolls the
/// transaction back.
///
/// The fencing token is a TSO timestamp fetched after the lock was granted: the previous
/// holder fetched its own before it released, so tokens strictly increase per name. They
/// are TSO versions, not revisions: do not compare them with the tokens of
/// [`Mutex`](crate::Mutex) guards.
///
/// Unlike the session-based recipes there is no lease and no loss notification: the
/// holder learns it lost the lock only when a fenced write is refused. There is no
/// `try_lock`: tikv-client 0.4 always asks TiKV to wait (its default lock wait, 1 s), so
/// `lock_timeout` checks its deadline between lock requests and may return up to about
/// two TiKV lock waits late.
///
/// ```no_run
/// # async fn demo(backend: leasehold::backend::tikv::TikvBackend) -> leasehold::Result<()> {
/// use leasehold::backend::tikv::TxnLock;
/// let lock = TxnLock::new(&backend, "inventory")?;
/// let guard = lock.lock().await?;
/// let token = guard.fencing_token();
/// guard.unlock().await?;
/// # let _ = token; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TxnLock {
    backend: TikvBackend,
    name: String,
}

/// A held [`TxnLock`]. Dropping it rolls the transaction back in the background.
pub struct TxnLockGuard {
    txn: Option<Transaction>,
    token: u64,
    name: String,
}

impl std::fmt::Debug for TxnLockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnLockGuard").field("name", &self.name).field("token", &self.token).finish_non_exhaustive()
    }
}

impl TxnLock {
    /// A lock named `name` (same rules as every recipe name).
    pub fn new(backend: &TikvBackend, name: &str) -> Result<Self> {
        crate::validate_name(name)?;
        Ok(Self { backend: backend.clone(), name: name.to_owned() })
    }

    /// Waits until the lock is held.
    ///
    /// # Cancel safety
    /// The acquisition runs in a task of its own: if the future is dropped, a lock it got
    /// is rolled back at once.
    pub async fn lock(&self) -> Result<TxnLockGuard> {
        self.acquire(None).await
    }

    /// Waits at most (about) `timeout`; [`Error::Timeout`] after it.
    ///
    /// # Cancel safety
    /// As for [`lock`](Self::lock).
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<TxnLockGuard> {
        self.acquire(Some(timeout)).await
    }

    /// Runs the acquisition in its own task: a cancelled caller never leaves a lock behind
    /// (the task rolls back what it got once it sees nobody is waiting).
    async fn acquire(&self, timeout: Option<Duration>) -> Result<TxnLockGuard> {
        let client = self.backend.inner.client.clone();
        let key = self.backend.inner.keys.txn_lock(&self.name);
        let heartbeat = self.backend.inner.cfg.txn_lock_heartbeat;
        let name = self.name.clone();
        let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<TxnLockGuard>>();
        tokio::spawn(async move {
            let got = lock_in_txn(&client, key, heartbeat, deadline, timeout).await;
            let got = got.map(|(txn, token)| TxnLockGuard { txn: Some(txn), token, name });
            if let Err(Ok(guard)) = tx.send(got) {
                let _ = guard.unlock().await; // the caller went away
            }
        });
        rx.await.map_err(|_| Error::Store("txn lock: acquisition task failed".into()))?
    }
}

/// How long a waiting acquisition keeps one pessimistic transaction before it begins a new
/// one (see `lock_in_txn`).
const FRESH_FOR: Duration = Duration::from_secs(4);

/// Whether a heartbeat failed because the transaction's lock is no longer there (resolved
/// by another transaction after it expired).
fn is_lock_gone(e: &tikv_client::Error) -> bool {
    use tikv_client::Error as E;
    match e {
        E::TxnNotFound(_) => true,
        E::KeyError(k) => k.txn_not_found.is_some() || k.abort.contains("not exist") || k.abort.contains("not found"),
        E::ExtractedErrors(v) | E::MultipleKeyErrors(v) => v.iter().any(is_lock_gone),
        _ => false,
    }
}

async fn lock_in_txn(
    client: &TransactionClient,
    key: Vec<u8>,
    heartbeat: Duration,
    deadline: Option<tokio::time::Instant>,
    timeout: Option<Duration>,
) -> Result<(Transaction, u64)> {
    // One lock request waits in TiKV (1 s by default); a lock still held after that is
    // checked once (and cleaned up if its holder is gone), then this loop asks again, so
    // the deadline is looked at about once per TiKV lock wait.
    //
    // TiKV measures a pessimistic lock's TTL (tikv-client's fixed 20 s) from its
    // transaction's start, and the first heartbeat comes one interval after the grant. So
    // the transaction is begun afresh every `FRESH_FOR` while waiting, and a granted lock is
    // renewed from now before anyone is told it is held: a waiter whose transaction had
    // begun more than 15 s before its grant got a lock already expired, which another
    // acquisition resolved and took while it held (until 2026-12-05; test
    // `txn_lock_granted_after_a_long_wait_is_not_already_expired`).
    let begin = || {
        let mut retry = RetryOptions::default_pessimistic();
        retry.lock_backoff = tikv_client::Backoff::no_jitter_backoff(1, 1, 1);
        let options = TransactionOptions::new_pessimistic()
            .drop_check(CheckLevel::Warn)
            .heartbeat_option(HeartbeatOption::FixedTime(heartbeat))
            .retry_options(retry);
        client.begin_with_options(options)
    };
    let mut txn = begin().await.map_err(map_err)?;
    let mut begun = tokio::time::Instant::now();
    let mut pause = Backoff::new(Duration::from_millis(1), Duration::from_millis(20)).delays();
    loop {
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            let _ = txn.rollback().await;
            return Err(Error::Timeout { what: "txn lock", after: timeout.unwrap_or_default() });
        }
        if begun.elapsed() >= FRESH_FOR {
            let _ = txn.rollback().await;
            txn = begin().await.map_err(map_err)?;
            begun = tokio::time::Instant::now();
        }
        let got = match txn.lock_keys(vec![key.clone()]).await {
            // (`send_heart_beat` is public but hidden in tikv-client 0.4: it sets the
            // lock's TTL to the transaction's age plus 20 s.)
            Ok(()) => txn.send_heart_beat().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match got {
            Ok(()) => break,
            Err(e) if is_conflict(&e) || is_lock_gone(&e) => {
                if is_lock_gone(&e) {
                    // Resolved by another before the renewal: this transaction holds nothing.
                    let _ = txn.rollback().await;
                    txn = begin().await.map_err(map_err)?;
                    begun = tokio::time::Instant::now();
                }
                tokio::time::sleep(pause.next().unwrap_or(Duration::from_millis(20))).await
            }
            Err(e) => {
                let _ = txn.rollback().await;
                return Err(map_err(e));
            }
        }
    }
    match client.current_timestamp().await {
        Ok(ts) => Ok((txn, ts.version())),
        Err(e) => {
            let _ = txn.rollback().await;
            Err(map_err(e))
        }
    }
}

impl TxnLockGuard {
    /// The fencing token: a TSO timestamp taken after the lock was granted.
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Releases the lock (rolls the pessimistic transaction back).
    ///
    /// # Cancel safety
    /// The rollback runs in a task of its own: dropping the future does not stop it.
    pub async fn unlock(mut self) -> Result<()> {
        let Some(mut txn) = self.txn.take() else { return Ok(()) };
        let rollback = tokio::spawn(async move { txn.rollback().await.map_err(map_err) });
        rollback.await.map_err(|e| Error::Store(format!("txn lock: rollback task failed: {e}").into()))?
    }
}

impl Drop for TxnLockGuard {
    fn drop(&mut self) {
        if let Some(mut txn) = self.txn.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(async move {
                        let _ = txn.rollback().await;
                    });
                }
                Err(_) => tracing::warn!("txn lock dropped outside a runtime: TiKV frees it after its lock TTL"),
            }
        }
    }
}
