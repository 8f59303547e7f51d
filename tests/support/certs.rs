//! Test certificates made at run time with `rcgen` (on ring, the crypto etcd-client's TLS
//! already uses): a CA, a server certificate for 127.0.0.1/localhost, a client certificate,
//! and a second, unrelated CA with its own client certificate for the "wrong CA" cases.

use super::etcd::ServerTls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A CA able to sign certificates, with its certificate written to `<dir>/<name>-ca.pem`.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM file).
    pub cert: PathBuf,
    dir: PathBuf,
    name: String,
}

/// A certificate and its key (PEM files).
pub struct Pair {
    /// The certificate.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

impl Ca {
    /// A new self-signed CA named `name`, files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("leasehold test CA {name}"));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, cert.pem()).unwrap();
        Self { issuer: Issuer::new(params, key), cert: path, dir: dir.to_owned(), name: name.to_owned() }
    }

    /// A leaf certificate for `common_name` with these SANs, for server and client use.
    pub fn leaf(&self, common_name: &str, sans: &[&str]) -> Pair {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let base = self.dir.join(format!("{}-{common_name}", self.name));
        let pair = Pair { cert: base.with_extension("crt.pem"), key: base.with_extension("key.pem") };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }
}

/// Everything a TLS test needs: the cluster's TLS, and a foreign CA with a client
/// certificate it signed.
pub struct Pki {
    /// The cluster's CA and certificates.
    pub server: ServerTls,
    /// A CA the server does not trust (and that did not sign the server's certificate).
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca`.
    pub other_client: Pair,
}

/// Generates a [`Pki`] in `dir`.
pub fn pki(dir: &Path, client_cert_auth: bool) -> Pki {
    let ca = Ca::new(dir, "cluster");
    let server = ca.leaf("server", &["127.0.0.1", "localhost"]);
    let client = ca.leaf("client", &[]);
    let other = Ca::new(dir, "other");
    let other_client = other.leaf("client", &[]);
    Pki {
        server: ServerTls {
            ca: ca.cert.clone(),
            cert: server.cert,
            key: server.key,
            client_cert: client.cert,
            client_key: client.key,
            client_cert_auth,
        },
        other_ca: other.cert.clone(),
        other_client,
    }
}
