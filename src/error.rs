//! The error type shared by every recipe and backend.

use std::sync::Arc;
use std::time::Duration;

/// Result alias used across leasehold.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong. Messages start with the subsystem.
///
/// [`Error::is_transient`] tells the retry policy which errors are worth retrying: only
/// failures of the transport or of a store member, never the caller's own input, deadline
/// or a lost lease.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A lock, semaphore or election name that cannot be used.
    #[error("name: invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A lease TTL outside the allowed range.
    #[error("session: ttl {ttl:?} is out of range ({min:?} ..= {max:?})")]
    TtlOutOfRange {
        /// The TTL asked for.
        ttl: Duration,
        /// Smallest allowed TTL.
        min: Duration,
        /// Largest allowed TTL.
        max: Duration,
    },
    /// Any other argument that cannot be used (zero permits, an endpoint URL that does not parse…).
    #[error("{what}: invalid argument: {reason}")]
    InvalidArgument {
        /// The subsystem or parameter.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The session's lease expired on the server, or could not be renewed before the local
    /// validity deadline. Whatever was held through it must be treated as lost.
    #[error("session: lease {lease:x} lost (expired or not renewed before its deadline)")]
    SessionLost {
        /// The lease id.
        lease: i64,
    },
    /// The session was closed by its owner.
    #[error("session: lease {lease:x} is closed")]
    SessionClosed {
        /// The lease id.
        lease: i64,
    },
    /// A lease id given to re-attach a session does not exist on the server.
    #[error("session: lease {lease:x} not found")]
    LeaseNotFound {
        /// The lease id.
        lease: i64,
    },
    /// Waiting to acquire took longer than the caller allowed. Nothing was left behind.
    #[error("{what}: timed out after {after:?}")]
    Timeout {
        /// What was being waited for.
        what: &'static str,
        /// The timeout that ran out.
        after: Duration,
    },
    /// The caller no longer holds what it tried to use (a fenced write or proclaim after
    /// losing the lock or leadership), or its release found it already gone; or a waiting
    /// acquisition's key was revoked ([`Client::revoke`](crate::Client::revoke)) before it
    /// held, its session living on.
    #[error("{what}: not held: {reason}")]
    NotHeld {
        /// The subsystem.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A fenced resource refused a write whose token is below one it already accepted.
    #[error("fence: token {token} is stale (highest accepted is {highest})")]
    StaleToken {
        /// The rejected token.
        token: u64,
        /// The highest token the resource accepted.
        highest: u64,
    },
    /// The stored semaphore limit differs from the one the caller asked for.
    #[error("semaphore: {name:?} is stored with {stored} permits, not {requested}")]
    PermitMismatch {
        /// The semaphore name.
        name: String,
        /// The count stored with the semaphore.
        stored: u32,
        /// The count the caller gave.
        requested: u32,
    },
    /// The store could not be reached within the connect timeout.
    ///
    /// `reason` says why, with the store client's own error as its
    /// [`source`](std::error::Error::source) when there is one (as for [`Error::Unavailable`]):
    /// `Error -> Cause -> etcd_client::Error` (or `tikv_client::Error`, or the timeout's
    /// `tokio::time::error::Elapsed` when nothing answered).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # #[cfg(feature = "etcd")] {
    /// use std::error::Error as _;
    /// let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    /// let config = leasehold::EtcdConfig::new([format!("127.0.0.1:{port}")]) // closed once the listener is dropped
    ///     .connect_timeout(std::time::Duration::from_secs(2));
    /// let e = leasehold::Client::etcd(config).await.unwrap_err();
    /// assert!(matches!(e, leasehold::Error::Connect { .. }), "{e}");
    /// assert!(e.source().and_then(|cause| cause.source()).is_some(), "the client's error is kept");
    /// # } }
    /// ```
    #[error("connect: cannot reach {endpoints} within {timeout:?}: {reason}")]
    Connect {
        /// The endpoints tried.
        endpoints: String,
        /// The connect timeout.
        timeout: Duration,
        /// The underlying failure, with the store client's error as its source.
        #[source]
        reason: Cause,
    },
    /// Authentication or authorization failed (wrong password, no permission on a key).
    #[error("auth: {0}")]
    Auth(#[source] Cause),
    /// TLS set-up failed (unreadable certificate, wrong CA).
    #[error("tls: {0}")]
    Tls(#[source] Cause),
    /// A transient store failure: a member is unavailable, the leader changed, one RPC timed
    /// out. Worth retrying.
    #[error("store: unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// A store failure that retrying will not fix.
    #[error("store: {0}")]
    Store(#[source] Cause),
}

/// What a store, transport or TLS failure said, with the error that caused it when there is
/// one — the store client's own error (for etcd an `etcd_client::Error`, often a gRPC
/// status; for TiKV a `tikv_client::Error`) — as its [`source`](std::error::Error::source),
/// for error reporters that print the chain and for callers that downcast it. Cheap to
/// clone (the cause is shared).
///
/// ```
/// use std::error::Error as _;
/// let e = leasehold::Error::Unavailable(leasehold::Cause::with_source(
///     "etcd: io: connection reset",
///     std::io::Error::from(std::io::ErrorKind::ConnectionReset),
/// ));
/// assert_eq!(e.to_string(), "store: unavailable: etcd: io: connection reset");
/// let cause = e.source().unwrap(); // the Cause: its message ...
/// let io = cause.source().unwrap().downcast_ref::<std::io::Error>().unwrap(); // ... and what caused it
/// assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
/// ```
#[derive(Debug, Clone)]
pub struct Cause {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Cause {
    /// A cause with a message and no underlying error.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), source: None }
    }

    /// A cause with a message and the error that caused it.
    pub fn with_source(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { message: message.into(), source: Some(Arc::new(source)) }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same underlying error under another message (a connect failure recognised as a
    /// TLS one, say).
    #[cfg(feature = "etcd")]
    pub(crate) fn reworded(self, message: impl Into<String>) -> Self {
        Self { message: message.into(), source: self.source }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

impl Error {
    /// Whether retrying the same call may succeed: true only for [`Error::Unavailable`].
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { what, reason: reason.into() }
    }
}
