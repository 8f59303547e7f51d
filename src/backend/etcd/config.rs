//! How to reach etcd: endpoints, timeouts, credentials and TLS. `Debug` never shows a
//! password or a private key (configurations end up in logs).

use std::time::Duration;

/// How to reach etcd. Its `Debug` output never shows the password (nor, in [`TlsConfig`],
/// the client's private key): configurations end up in logs.
#[derive(Clone)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// `host:port` or `http(s)://host:port`, one per member.
    pub endpoints: Vec<String>,
    /// The first contact must succeed within this (default 5 s), else [`Error::Connect`](crate::Error::Connect).
    pub connect_timeout: Duration,
    /// Each unary request fails with [`Error::Unavailable`](crate::Error::Unavailable) after this (default 5 s).
    pub request_timeout: Duration,
    /// User name and password, if etcd auth is enabled.
    pub user: Option<(String, String)>,
    /// TLS settings; `None` for plain HTTP.
    pub tls: Option<TlsConfig>,
}

/// TLS for the etcd connection, from PEM bytes. Its `Debug` output shows sizes, never the
/// private key.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct TlsConfig {
    /// CA certificate(s) to trust.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, for client-certificate auth.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Server name to verify, if it differs from the endpoint host.
    pub domain: Option<String>,
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("user", &self.user.as_ref().map(|(name, _)| (name, "<redacted>")))
            .field("tls", &self.tls)
            .finish()
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = |b: &Vec<u8>| format!("<{} bytes>", b.len());
        f.debug_struct("TlsConfig")
            .field("ca_pem", &self.ca_pem.as_ref().map(bytes))
            .field("identity_pem", &self.identity_pem.as_ref().map(|(cert, _)| (bytes(cert), "<redacted key>")))
            .field("domain", &self.domain)
            .finish()
    }
}

impl TlsConfig {
    /// No CA, no client identity, no domain override: the system's roots are not loaded,
    /// so set at least [`ca_pem`](TlsConfig::ca_pem).
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA certificate(s) in `pem`.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Presents this client certificate and key (PEM), for client-certificate auth.
    pub fn identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity_pem = Some((cert.into(), key.into()));
        self
    }

    /// Verifies the server's certificate for `name` instead of the endpoint's host.
    pub fn domain(mut self, name: impl Into<String>) -> Self {
        self.domain = Some(name.into());
        self
    }
}

impl EtcdConfig {
    /// Defaults for these endpoints.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            user: None,
            tls: None,
        }
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the per-request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets user and password.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }

    /// Sets TLS.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_credentials() {
        let tls = TlsConfig::new()
            .ca_pem(b"CA-CERTIFICATE".to_vec())
            .identity_pem(b"CLIENT-CERTIFICATE".to_vec(), b"PRIVATE-KEY-BYTES".to_vec())
            .domain("etcd.internal");
        let config = EtcdConfig::new(["127.0.0.1:2379"]).user("root", "s3cret-pa55").tls(tls);
        for shown in [format!("{config:?}"), format!("{config:#?}"), format!("{:?}", config.tls)] {
            for secret in ["s3cret-pa55", "PRIVATE-KEY-BYTES", "CA-CERTIFICATE", "CLIENT-CERTIFICATE"] {
                assert!(!shown.contains(secret), "{secret:?} shown in {shown}");
            }
            assert!(shown.contains("<redacted"), "{shown}");
        }
        let shown = format!("{config:?}");
        for kept in ["127.0.0.1:2379", "root", "etcd.internal", "<14 bytes>", "<18 bytes>"] {
            assert!(shown.contains(kept), "{kept:?} missing from {shown}");
        }
    }
}
