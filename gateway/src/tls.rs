//! TLS for the HTTPS and HTTP/3 listeners: the server's identity (a certificate chain and its
//! key, from PEM files or generated self-signed for local use) and the rustls configurations
//! built from it. Only the `ring` crypto provider is compiled in; HTTPS offers TLS 1.3 and 1.2
//! with ALPN `h2` and `http/1.1`, QUIC offers TLS 1.3 with ALPN `h3` (QUIC requires 1.3).

use rustls::crypto::CryptoProvider;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a TLS identity or configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {source}")]
    Certificates {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("cannot read a private key from {path}: {source}")]
    Key {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key are not usable: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain (leaf first) and the leaf's private key.
pub struct TlsIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A freshly generated self-signed identity, with its certificate in PEM for clients to trust.
pub struct SelfSigned {
    pub identity: TlsIdentity,
    pub cert_pem: String,
}

impl TlsIdentity {
    /// Load a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsError::Certificates {
                path: cert.to_owned(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(cert.to_owned()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
            path: key.to_owned(),
            source,
        })?;
        let identity = Self { chain, key };
        // Fail at start, not at the first handshake, when the key does not match or is unusable.
        identity.server_config(&[])?;
        Ok(identity)
    }

    /// Generate a self-signed certificate for `names` (DNS names or IP addresses).
    pub fn self_signed(names: &[String]) -> Result<SelfSigned, TlsError> {
        let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        Ok(SelfSigned {
            cert_pem: certified.cert.pem(),
            identity: Self {
                chain: vec![certified.cert.der().clone()],
                key: key.into(),
            },
        })
    }

    /// The leaf certificate (DER), e.g. for a client to trust.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// SHA-256 of the leaf certificate, as colon-separated upper-case hex (what browsers and
    /// `openssl x509 -fingerprint -sha256` show).
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.certificate());
        digest
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// A rustls server configuration offering `alpn` (most preferred first), TLS 1.3 and 1.2.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// The HTTPS listener's configuration: HTTP/2 preferred, HTTP/1.1 otherwise.
    pub fn https_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        Ok(Arc::new(self.server_config(&[b"h2", b"http/1.1"])?))
    }

    /// The QUIC listener's configuration: TLS 1.3 only, ALPN `h3`, no 0-RTT (replayable).
    pub fn h3_config(&self) -> Result<ServerConfig, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h3".to_vec()];
        Ok(config)
    }
}

/// The one crypto provider the gateway uses (`ring`), whatever else is compiled into a process.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that trusts the web-PKI roots (ring; TLS 1.3 and 1.2): for HTTPS
/// upstreams, Sui full nodes and Walrus publishers. ALPN is left to the connector.
pub fn web_pki_client_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth()
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("TlsIdentity")
            .field("certificates", &self.chain.len())
            .field("sha256", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_files_load_and_fingerprint_matches_the_certificate() {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let loaded = TlsIdentity::from_pem_files(&cert, &key).expect("loads");
        assert_eq!(loaded.certificate(), generated.cert.der());
        let fingerprint = loaded.fingerprint();
        assert_eq!(fingerprint.len(), 32 * 3 - 1);
        assert!(fingerprint
            .bytes()
            .all(|c| c == b':' || c.is_ascii_hexdigit()));
        assert!(loaded.https_config().is_ok());
        assert!(loaded.h3_config().is_ok());
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
    }

    #[test]
    fn self_signed_pem_is_the_served_certificate() {
        let generated =
            TlsIdentity::self_signed(&["localhost".into(), "127.0.0.1".into()]).expect("generates");
        let from_pem = CertificateDer::from_pem_slice(generated.cert_pem.as_bytes()).unwrap();
        assert_eq!(&from_pem, generated.identity.certificate());
    }

    #[test]
    fn missing_empty_or_mismatched_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            TlsIdentity::from_pem_files(&dir.path().join("nope.pem"), &empty),
            Err(TlsError::Certificates { .. })
        ));
        assert!(matches!(
            TlsIdentity::from_pem_files(&empty, &empty),
            Err(TlsError::NoCertificate(_))
        ));
        let one = rcgen::generate_simple_self_signed(vec!["a".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["b".to_owned()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, one.cert.pem()).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        assert!(matches!(
            TlsIdentity::from_pem_files(&cert, &key),
            Err(TlsError::Rustls(_))
        ));
    }
}
