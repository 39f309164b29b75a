//! TLS to storage nodes, pinned to their on-chain key (NETWORK.md §6.2).
//!
//! A Walrus storage node serves HTTPS with its *network key pair* (ECDSA P-256) as its TLS key,
//! usually in a self-signed certificate that no root store knows. Its `network_public_key` is on
//! chain, so the gateway pins it: [`PinnedKeyVerifier`] accepts exactly the certificates whose
//! SubjectPublicKeyInfo is `id-ecPublicKey`/`prime256v1` holding that point, and ignores the
//! chain, the validity period and the names. That is secure because the handshake signature,
//! checked as usual with the ring provider's algorithms against the same certificate, proves
//! the server holds the pinned key's private half.
//!
//! A rejection is a [`PinError`] inside `rustls::Error::InvalidCertificate(Other(..))`, so a
//! caller can tell it from other transport failures with [`pin_failure`].

pub use chain::network_key::NetworkKey;
use chain::network_key::{compress_p256_point, to_hex};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::error::Error as StdError;
use std::sync::Arc;

/// The DER of a P-256 SubjectPublicKeyInfo up to its point, for an uncompressed point:
/// `SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits) 04 ‖ X ‖ Y }`.
/// DER has one encoding per value, so every such SPKI starts with exactly these bytes.
const SPKI_P256_UNCOMPRESSED: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The same for a compressed point (`02|03 ‖ X`), which a certificate may carry too.
const SPKI_P256_COMPRESSED: [u8; 26] = [
    0x30, 0x39, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x22, 0x00,
];

/// Why a node's certificate was refused: it does not carry the pinned key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("the node's certificate does not parse: {0}")]
    Unparseable(String),
    #[error("the node's certificate key is not an EC P-256 key")]
    NotP256,
    #[error("the node's certificate key {found} does not match its pinned network key {pinned}")]
    Mismatch { found: String, pinned: String },
}

/// The compressed P-256 point of a DER SubjectPublicKeyInfo, or `None` for any other key (another
/// curve or algorithm, explicit curve parameters, a hybrid point, trailing bytes).
///
/// An uncompressed point whose Y is not on the curve still compresses; it cannot pass the
/// handshake, whose signature check (ring) rejects points off the curve. On the curve, X and
/// the parity of Y name exactly one point, so equal compressed forms mean equal points.
pub fn spki_network_key(spki: &[u8]) -> Option<NetworkKey> {
    if let Some(point) = spki.strip_prefix(&SPKI_P256_UNCOMPRESSED[..]) {
        return compress_p256_point(point);
    }
    let point = spki.strip_prefix(&SPKI_P256_COMPRESSED[..])?;
    let key: NetworkKey = point.try_into().ok()?;
    matches!(key[0], 0x02 | 0x03).then_some(key)
}

/// The compressed P-256 key of a DER certificate.
pub fn certificate_network_key(cert: &CertificateDer<'_>) -> Result<NetworkKey, PinError> {
    let parsed =
        webpki::EndEntityCert::try_from(cert).map_err(|e| PinError::Unparseable(e.to_string()))?;
    spki_network_key(parsed.subject_public_key_info().as_ref()).ok_or(PinError::NotP256)
}

/// Check that `cert` carries `pinned`, and nothing else about it.
pub fn check_certificate(cert: &CertificateDer<'_>, pinned: &NetworkKey) -> Result<(), PinError> {
    let found = certificate_network_key(cert)?;
    if found == *pinned {
        Ok(())
    } else {
        Err(PinError::Mismatch {
            found: to_hex(&found),
            pinned: to_hex(pinned),
        })
    }
}

/// The [`PinError`] somewhere in an error chain (through `io::Error` wrappers and rustls's
/// `InvalidCertificate(Other(..))`), if a certificate was refused for not carrying the key.
pub fn pin_failure<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a PinError> {
    let mut current = Some(error);
    // Bounded: error chains are short; a cycle cannot make this loop forever.
    for _ in 0..32 {
        let error = current?;
        if let Some(pin) = error.downcast_ref::<PinError>() {
            return Some(pin);
        }
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
            error.downcast_ref::<rustls::Error>()
        {
            return other.0.downcast_ref::<PinError>();
        }
        // `io::Error::source` skips the error it wraps; `get_ref` does not.
        let wrapped = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn StdError + 'static));
        current = wrapped.or_else(|| error.source());
    }
    None
}

/// A rustls server-certificate verifier that accepts exactly the certificates carrying one
/// P-256 key (see the module documentation).
#[derive(Debug)]
pub struct PinnedKeyVerifier {
    key: NetworkKey,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedKeyVerifier {
    pub fn new(key: NetworkKey) -> Self {
        Self {
            key,
            algorithms: crate::tls::provider().signature_verification_algorithms,
        }
    }

    pub fn key(&self) -> &NetworkKey {
        &self.key
    }
}

impl ServerCertVerifier for PinnedKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_certificate(end_entity, &self.key).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A rustls client configuration (ring, TLS 1.3 and 1.2) that trusts only `key`. ALPN is left
/// empty for the connector to fill in.
pub fn client_config(key: NetworkKey) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedKeyVerifier::new(key)))
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};
    use rustls_pki_types::pem::PemObject;

    /// A 1024-bit RSA self-signed certificate (`openssl req -x509 -newkey rsa:1024`): ring cannot
    /// generate RSA keys, and only the key type matters here.
    const RSA_CERT: &str = "-----BEGIN CERTIFICATE-----
MIICCjCCAXOgAwIBAgIUATwz2bvpvoTGAJq0i4yrtdyFKvYwDQYJKoZIhvcNAQEL
BQAwFjEUMBIGA1UEAwwLcnNhLmV4YW1wbGUwIBcNMjYxMjA2MDE1MTUxWhgPMjEy
NjExMTIwMTUxNTFaMBYxFDASBgNVBAMMC3JzYS5leGFtcGxlMIGfMA0GCSqGSIb3
DQEBAQUAA4GNADCBiQKBgQDL2v+lRrMV9HtC6w8gKe2Svq92X/2BwkJUc5Y07plL
spJcGbzLweucUtydXWujMlLzJKl5zspeuAmLwlnNLZH7UUDjfB1U3im2qvt8hr2t
wNu7Qe3jzmoLT8mo9FCR892XYYfbOFa8mpd48+uH57lr/sWVRs6YOsOASCVfFLkT
ewIDAQABo1MwUTAdBgNVHQ4EFgQUxwGd3G1q/iWDFmN7h2Lru3vqUJswHwYDVR0j
BBgwFoAUxwGd3G1q/iWDFmN7h2Lru3vqUJswDwYDVR0TAQH/BAUwAwEB/zANBgkq
hkiG9w0BAQsFAAOBgQB1LV8OVKmi1lnnYZt89y1IaDFehhUsJWbtmn6ZqvdPOoo5
fTjyLRcavgtc/HSjJ+yEIrmrENYqKqnoPYrpAG9AcNTObYlTJTh99qrtPIXWG3U+
2S/NuIcXvqLUOYEQcI6bP2/pNfytbemDo68EJqQz1H90T490iPKUYdAbRS0+fw==
-----END CERTIFICATE-----
";

    fn p256() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }

    fn network_key(key: &KeyPair) -> NetworkKey {
        compress_p256_point(key.public_key_raw())
            .expect("a P-256 key pair has an uncompressed point")
    }

    /// A self-signed certificate for `key` naming `name`, as a storage node might present.
    fn certificate(key: &KeyPair, name: &str) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.self_signed(key).unwrap().der().clone()
    }

    fn verify(verifier: &PinnedKeyVerifier, cert: &CertificateDer<'_>) -> Result<(), PinError> {
        let name = ServerName::try_from("node.example").unwrap();
        match verifier.verify_server_cert(cert, &[], &name, &[], UnixTime::now()) {
            Ok(_) => Ok(()),
            Err(e) => Err(pin_failure(&e)
                .expect("a rejection is a pin failure")
                .clone()),
        }
    }

    #[test]
    fn the_pinned_key_is_accepted_whatever_the_names_and_validity() {
        let key = p256();
        let verifier = PinnedKeyVerifier::new(network_key(&key));
        assert_eq!(
            verify(&verifier, &certificate(&key, "unrelated.example")),
            Ok(())
        );

        let mut expired = CertificateParams::new(vec!["127.0.0.9".to_owned()]).unwrap();
        expired.not_before = rcgen::date_time_ymd(2000, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let expired = expired.self_signed(&key).unwrap();
        assert_eq!(verify(&verifier, expired.der()), Ok(()));
    }

    #[test]
    fn another_key_is_a_mismatch() {
        let pinned = p256();
        let verifier = PinnedKeyVerifier::new(network_key(&pinned));
        let other = p256();
        assert!(matches!(
            verify(&verifier, &certificate(&other, "node.example")),
            Err(PinError::Mismatch { .. })
        ));
        // The same X with the other Y (the negated point) is another key too.
        let mut negated = network_key(&pinned);
        negated[0] ^= 1;
        assert!(matches!(
            verify(
                &PinnedKeyVerifier::new(negated),
                &certificate(&pinned, "node.example")
            ),
            Err(PinError::Mismatch { .. })
        ));
    }

    #[test]
    fn keys_other_than_p256_are_refused() {
        let verifier = PinnedKeyVerifier::new(network_key(&p256()));
        for alg in [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P384_SHA384] {
            let key = KeyPair::generate_for(alg).unwrap();
            assert_eq!(
                verify(&verifier, &certificate(&key, "node.example")),
                Err(PinError::NotP256)
            );
        }
        let rsa = CertificateDer::from_pem_slice(RSA_CERT.as_bytes()).unwrap();
        assert_eq!(verify(&verifier, &rsa), Err(PinError::NotP256));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let key = p256();
        let verifier = PinnedKeyVerifier::new(network_key(&key));
        let good = certificate(&key, "node.example");
        let mut inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![0x30],
            vec![0x30, 0x82, 0xff, 0xff],
            vec![0xff; 300],
            b"-----BEGIN CERTIFICATE-----".to_vec(),
        ];
        // Every truncation, and the certificate with trailing bytes.
        inputs.extend((0..good.len()).map(|len| good[..len].to_vec()));
        inputs.push([good.as_ref(), &[0]].concat());
        for input in inputs {
            let result = verify(&verifier, &CertificateDer::from(input));
            assert!(
                matches!(result, Err(PinError::Unparseable(_))),
                "{result:?}"
            );
        }
        // Single flipped bytes (bounded): refused or, when the flip is somewhere that does not
        // matter to us (the signature, a name), accepted — never a panic.
        for at in (0..good.len()).step_by(7) {
            let mut flipped = good.to_vec();
            flipped[at] ^= 0x5a;
            let _ = verify(&verifier, &CertificateDer::from(flipped));
        }
    }

    #[test]
    fn spki_points_compress_to_the_onchain_key_for_both_parities() {
        // The P-256 generator: Y is odd, so it compresses to 03 ‖ X.
        let g = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
        let g: Vec<u8> = (0..g.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&g[i..i + 2], 16).unwrap())
            .collect();
        let compressed = compress_p256_point(&g).unwrap();
        assert_eq!(compressed[0], 0x03);
        assert_eq!(compressed[1..], g[1..33]);
        let spki = [&SPKI_P256_UNCOMPRESSED[..], &g].concat();
        assert_eq!(spki_network_key(&spki), Some(compressed));
        // A certificate may carry the compressed point itself.
        let spki = [&SPKI_P256_COMPRESSED[..], &compressed].concat();
        assert_eq!(spki_network_key(&spki), Some(compressed));
        // Not a point, or the wrong length.
        assert_eq!(
            spki_network_key(&[&SPKI_P256_UNCOMPRESSED[..], &[0x06; 65]].concat()),
            None
        );
        assert_eq!(
            spki_network_key(&[&SPKI_P256_COMPRESSED[..], &[0x04; 33]].concat()),
            None
        );
        assert_eq!(spki_network_key(&spki[..spki.len() - 1]), None);

        // Generated keys, until both parities were seen (each is 1/2 per key).
        let mut seen = [false; 2];
        for _ in 0..64 {
            let key = p256();
            let raw = key.public_key_raw();
            let expected = network_key(&key);
            assert_eq!(expected[0], 0x02 | (raw[64] & 1));
            let cert = certificate(&key, "node.example");
            assert_eq!(certificate_network_key(&cert), Ok(expected));
            seen[usize::from(expected[0] & 1)] = true;
            if seen == [true, true] {
                break;
            }
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn the_provider_schemes_include_ecdsa_p256() {
        let verifier = PinnedKeyVerifier::new(network_key(&p256()));
        assert!(verifier
            .supported_verify_schemes()
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256));
    }
}
