//! Who a simulated node is: its node ID, its P-256 network key, its (fake) BLS key, and the
//! self-signed TLS certificate a real node makes from its network key (NETWORK.md §6.2 (b)).
//!
//! * Node ID: `BLAKE2b-256("walrus-sim node" ‖ index as u64 little-endian)`, so it is stable
//!   across restarts without being stored, and distinct per node index.
//! * Network key: ECDSA P-256, generated at start; with a data directory it is kept as PKCS#8
//!   PEM in `<data-dir>/keys/<node name>.pem` (written atomically, mode 0600) and reused by a
//!   restarted network. On chain (and in the committee file) it is the 33-byte SEC1-compressed
//!   point.
//! * Certificate: self-signed by the network key, `CN = SAN DNS =
//!   server_name_from_public_key(key)`, plus `SAN IP:127.0.0.1` (the address clients dial);
//!   rcgen's default validity. Made anew at every start (the signature differs, the key does
//!   not).
//! * BLS key: 96 bytes derived from the node name; stable, not a curve point, only there so
//!   the chain's `StorageNodeInfo.public_key` and `/v1/health`'s `publicKey` have a value.
//!
//! Guarantee: the TLS listener presents the certificate of the node's network key, unless the
//! `wrong_tls_key` fault is set; then it presents a certificate made from another P-256 key
//! (generated once per node, on first use) with the very same CN and SANs (those of the node's
//! real key), so nothing but the key itself gives it away: only a client pinning the on-chain
//! key refuses it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::faults::FaultRng;
use chain::network_key::{compress_p256_point, to_hex as hex};

/// The TLS server name a real node derives from its network key: the first 4 bytes of the
/// compressed key, each as Rust `{:x}` (no zero padding), then `.network.walrus.alt`.
pub fn server_name_from_public_key(key: &[u8; 33]) -> String {
    format!(
        "{:x}{:x}{:x}{:x}.network.walrus.alt",
        key[0], key[1], key[2], key[3]
    )
}

/// The stable node ID of node `index`.
pub(crate) fn node_id(index: usize) -> [u8; 32] {
    let hash = blake2b_simd::Params::new()
        .hash_length(32)
        .to_state()
        .update(b"walrus-sim node")
        .update(&(index as u64).to_le_bytes())
        .finalize();
    let mut id = [0u8; 32];
    id.copy_from_slice(hash.as_bytes());
    id
}

/// 96 fixed bytes derived from the node name (FNV-1a seed, then SplitMix64).
pub(crate) fn fake_bls_key(name: &str) -> Vec<u8> {
    let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let rng = FaultRng::new(seed);
    (0..12).flat_map(|_| rng.next().to_le_bytes()).collect()
}

/// A P-256 key pair and its compressed public key.
pub(crate) struct NetworkKey {
    pair: KeyPair,
    public: [u8; 33],
}

impl std::fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkKey")
            .field("public", &hex(&self.public))
            .finish_non_exhaustive()
    }
}

impl NetworkKey {
    pub(crate) fn generate() -> Result<NetworkKey, String> {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("cannot generate a P-256 key: {e}"))?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: KeyPair) -> Result<NetworkKey, String> {
        if pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err("the key is not an ECDSA P-256 key".into());
        }
        let public = compress_p256_point(pair.public_key_raw())
            .ok_or("the public key is not an uncompressed P-256 point")?;
        Ok(NetworkKey { pair, public })
    }

    /// The key stored at `path` (PKCS#8 PEM), or a new one written there atomically.
    pub(crate) fn load_or_create(path: &Path) -> Result<NetworkKey, String> {
        match std::fs::read_to_string(path) {
            Ok(pem) => KeyPair::from_pem(&pem)
                .map_err(|e| e.to_string())
                .and_then(Self::from_pair)
                .map_err(|e| format!("{} is not a P-256 PKCS#8 PEM key: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                crate::persist::write_atomic_private(path, key.pair.serialize_pem().as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Ok(key)
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    pub(crate) fn public(&self) -> [u8; 33] {
        self.public
    }
}

/// A certificate and the rustls acceptor presenting it.
struct Presented {
    pem: String,
    acceptor: TlsAcceptor,
}

impl Presented {
    /// A certificate of `key`, named after `named_for` (the on-chain key).
    fn new(key: &NetworkKey, named_for: &[u8; 33]) -> Result<Presented, String> {
        let name = server_name_from_public_key(named_for);
        let mut params = CertificateParams::new(vec![name.clone()]).map_err(|e| e.to_string())?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let cert = params
            .self_signed(&key.pair)
            .map_err(|e| format!("cannot sign the node certificate: {e}"))?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pair.serialize_der()));
        let config = server_config(cert.der().clone(), private)
            .map_err(|e| format!("cannot build the TLS configuration: {e}"))?;
        Ok(Presented {
            pem: cert.pem(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// TLS 1.3 and 1.2 with the `ring` provider; ALPN `h2`, then `http/1.1`, as real nodes
/// (axum-server's rustls defaults).
fn server_config(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Everything that identifies one node.
pub(crate) struct NodeIdentity {
    pub node_id: [u8; 32],
    pub network_public_key: [u8; 33],
    pub bls_public_key: Vec<u8>,
    real: Presented,
    wrong: OnceLock<Presented>,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node_id", &hex(&self.node_id))
            .field("network_public_key", &hex(&self.network_public_key))
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    pub(crate) fn new(index: usize, name: &str, key: &NetworkKey) -> Result<Self, String> {
        Ok(NodeIdentity {
            node_id: node_id(index),
            network_public_key: key.public(),
            bls_public_key: fake_bls_key(name),
            real: Presented::new(key, &key.public())?,
            wrong: OnceLock::new(),
        })
    }

    /// The node's certificate, PEM.
    pub(crate) fn certificate_pem(&self) -> &str {
        &self.real.pem
    }

    /// The acceptor for a new connection: the real certificate, or with `wrong_key` one made
    /// from another key.
    pub(crate) fn acceptor(&self, wrong_key: bool) -> Result<TlsAcceptor, String> {
        if !wrong_key {
            return Ok(self.real.acceptor.clone());
        }
        if let Some(wrong) = self.wrong.get() {
            return Ok(wrong.acceptor.clone());
        }
        let made = Presented::new(&NetworkKey::generate()?, &self.network_public_key)?;
        Ok(self.wrong.get_or_init(|| made).acceptor.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_follow_the_real_rule() {
        let mut key = [0u8; 33];
        key[..4].copy_from_slice(&[0x02, 0x0a, 0xff, 0x10]);
        assert_eq!(
            server_name_from_public_key(&key),
            "2aff10.network.walrus.alt"
        );
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id(3), node_id(3));
        assert_ne!(node_id(0), node_id(1));
        assert_eq!(fake_bls_key("node-0").len(), 96);
    }

    #[test]
    fn keys_are_stored_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("node-0.pem");
        let first = NetworkKey::load_or_create(&path).unwrap();
        let again = NetworkKey::load_or_create(&path).unwrap();
        assert_eq!(first.public(), again.public());
        assert!(matches!(first.public()[0], 2 | 3));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        std::fs::write(&path, "junk").unwrap();
        assert!(NetworkKey::load_or_create(&path).is_err());
    }
}
