//! `tls`: every node serves HTTPS with h2 and http/1.1 by ALPN, presenting a self-signed
//! certificate of its network key named as real nodes name theirs; the committee and the chain
//! view carry the keys; `wrong_tls_key` presents another key.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chain::network_key::compress_p256_point;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use storage_sim::{server_name_from_public_key, Committee, NodeFaults, SimConfig, SimNetwork};

// ---- a minimal DER walk: just what a certificate check needs ----

/// One TLV: (tag, contents, rest).
fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, header) = match input[1] {
        l if l < 0x80 => (usize::from(l), 2),
        l => {
            let n = usize::from(l & 0x7f);
            let len = input[2..2 + n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + n)
        }
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// All TLVs of a constructed value's contents.
fn children(mut input: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (tag, value, rest) = tlv(input);
        out.push((tag, value));
        input = rest;
    }
    out
}

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

#[derive(Debug, PartialEq)]
struct CertInfo {
    subject_cn: String,
    issuer_cn: String,
    dns: Vec<String>,
    ips: Vec<Vec<u8>>,
    /// The SPKI's uncompressed P-256 point.
    point: Vec<u8>,
}

fn common_name(name: &[u8]) -> String {
    for (_, set) in children(name) {
        for (_, attribute) in children(set) {
            let parts = children(attribute);
            if parts[0].1 == OID_CN {
                return String::from_utf8(parts[1].1.to_vec()).unwrap();
            }
        }
    }
    panic!("no CN")
}

fn parse_cert(der: &[u8]) -> CertInfo {
    let (_, cert, _) = tlv(der);
    let (_, tbs, _) = tlv(cert);
    let mut fields = children(tbs);
    if fields[0].0 == 0xa0 {
        fields.remove(0); // version
    }
    // serial, signature, issuer, validity, subject, spki, then optional [1] [2] [3].
    let issuer_cn = common_name(fields[2].1);
    let subject_cn = common_name(fields[4].1);
    let spki = children(fields[5].1);
    let algorithm = children(spki[0].1);
    assert_eq!(algorithm[0].1, OID_EC_PUBLIC_KEY);
    assert_eq!(algorithm[1].1, OID_P256);
    assert_eq!(spki[1].0, 0x03);
    assert_eq!(spki[1].1[0], 0, "no unused bits");
    let point = spki[1].1[1..].to_vec();
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    if let Some((_, extensions)) = fields.iter().find(|(tag, _)| *tag == 0xa3) {
        let (_, list, _) = tlv(extensions);
        for (_, extension) in children(list) {
            let parts = children(extension);
            if parts[0].1 != OID_SAN {
                continue;
            }
            let (_, names, _) = tlv(parts.last().unwrap().1);
            for (tag, value) in children(names) {
                match tag {
                    0x82 => dns.push(String::from_utf8(value.to_vec()).unwrap()),
                    0x87 => ips.push(value.to_vec()),
                    other => panic!("unexpected SAN tag {other:#x}"),
                }
            }
        }
    }
    CertInfo {
        subject_cn,
        issuer_cn,
        dns,
        ips,
        point,
    }
}

// ---- a TLS client that records the certificate and verifies handshake signatures ----

/// Accepts any certificate (or only one whose key is `pinned`), but checks the handshake
/// signature against it, so the server proved it holds the presented key.
#[derive(Debug)]
struct Recorder {
    provider: Arc<CryptoProvider>,
    pinned: Option<[u8; 33]>,
    seen: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.to_vec());
        if let Some(pinned) = self.pinned {
            let point = parse_cert(end_entity).point;
            if compress_p256_point(&point) != Some(pinned) {
                return Err(rustls::Error::General(
                    "does not match the pinned public key".into(),
                ));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS connection to `url` offering `alpn`.
struct Tls {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    cert: Vec<u8>,
}

impl Tls {
    fn alpn(&self) -> Option<&[u8]> {
        self.stream.get_ref().1.alpn_protocol()
    }
}

async fn connect(url: &str, alpn: &[&[u8]], pinned: Option<[u8; 33]>) -> std::io::Result<Tls> {
    let authority = url.strip_prefix("https://").expect("https URL");
    let addr: SocketAddr = authority.parse().unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder {
        provider: provider.clone(),
        pinned,
        seen: Mutex::new(None),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?;
    let cert = recorder.seen.lock().unwrap().take().unwrap();
    Ok(Tls { stream, cert })
}

/// One request over HTTP/1.1 on `tls`.
async fn http1(tls: Tls, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Bytes) {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls.stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "127.0.0.1")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_11);
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

fn key_of(committee: &Committee, node: usize) -> [u8; 33] {
    storage_sim::committee::parse_network_key(
        committee.nodes[node].network_public_key.as_deref().unwrap(),
    )
    .unwrap()
}

async fn tls_network() -> (SimNetwork, Vectors) {
    let net = SimNetwork::start(SimConfig {
        tls: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let v = Vectors::load();
    net.store(&v.blob()).unwrap();
    (net, v)
}

fn pem_blocks(pem: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    pem.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|block| {
            let body: String = block
                .split("-----END CERTIFICATE-----")
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn tls_nodes_serve_h2_and_http1_with_their_network_key() {
    let (net, v) = tls_network().await;
    let committee = net.committee();
    committee.validate().unwrap();
    let view = net.chain_view();
    let bundle = pem_blocks(&net.certificates_pem());
    assert_eq!(bundle.len(), 4);
    let mut names = std::collections::HashSet::new();
    for (i, node) in committee.nodes.iter().enumerate() {
        assert!(node.url.starts_with("https://127.0.0.1:"), "{}", node.url);
        let key = key_of(&committee, i);
        assert_eq!(view.nodes[i].network_public_key, key);
        assert_eq!(
            node.url,
            format!("https://{}", view.nodes[i].address),
            "committee and chain agree"
        );
        let server_name = server_name_from_public_key(&key);
        assert!(names.insert(server_name.clone()), "distinct subject names");

        // HTTP/2 by ALPN.
        let tls = connect(&node.url, &[b"h2", b"http/1.1"], Some(key))
            .await
            .unwrap();
        assert_eq!(tls.alpn(), Some(&b"h2"[..]));
        let info = parse_cert(&tls.cert);
        assert_eq!(compress_p256_point(&info.point), Some(key));
        assert_eq!(info.subject_cn, server_name);
        assert_eq!(info.issuer_cn, server_name, "self-signed");
        assert_eq!(info.dns, vec![server_name.clone()]);
        assert_eq!(info.ips, vec![vec![127, 0, 0, 1]]);
        assert_eq!(
            bundle[i], tls.cert,
            "the bundle holds the served certificate"
        );
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls.stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = Request::builder()
            .uri(format!("{}{}", node.url, metadata_path(&v.blob_id())))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.as_ref(), v.metadata_with_id().as_slice());

        // HTTP/1.1 by ALPN (what Node's fetch offers), and with no ALPN at all.
        for alpn in [&[&b"http/1.1"[..]][..], &[]] {
            let tls = connect(&node.url, alpn, Some(key)).await.unwrap();
            assert_eq!(tls.alpn(), alpn.first().copied());
            let (status, body) =
                http1(tls, Method::GET, &metadata_path(&v.blob_id()), vec![]).await;
            assert_eq!(status, 200);
            assert_eq!(body.as_ref(), v.metadata_with_id().as_slice());
        }
    }
    // Slivers from their owners, over HTTPS too.
    let (owner, _) = owner_and_other(&net, &v, 2);
    let owner_index = committee.nodes.iter().position(|n| n.url == owner).unwrap();
    let tls = connect(
        &owner,
        &[b"http/1.1"],
        Some(key_of(&committee, owner_index)),
    )
    .await
    .unwrap();
    let (status, body) = http1(
        tls,
        Method::GET,
        &sliver_path(&v.blob_id(), 2, "primary"),
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), v.sliver_bcs(2, "primary").as_slice());
    net.shutdown().await;
}

#[tokio::test]
async fn wrong_tls_key_presents_another_key_with_the_same_names() {
    let (net, v) = tls_network().await;
    let committee = net.committee();
    let url = committee.nodes[1].url.clone();
    let key = key_of(&committee, 1);
    let real = parse_cert(&connect(&url, &[b"h2"], None).await.unwrap().cert);

    // Live, through the admin endpoint (over HTTPS, from another node).
    let admin = connect(&committee.nodes[0].url, &[b"http/1.1"], None)
        .await
        .unwrap();
    let (status, _) = http1(
        admin,
        Method::POST,
        "/sim/faults?node=1",
        br#"{"wrong_tls_key": true}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let wrong = connect(&url, &[b"h2"], None).await.unwrap();
    let presented = parse_cert(&wrong.cert);
    assert_ne!(compress_p256_point(&presented.point), Some(key));
    assert_eq!(presented.subject_cn, real.subject_cn);
    assert_eq!(presented.dns, real.dns);
    assert_eq!(presented.ips, real.ips);
    // A client pinning the on-chain key refuses the handshake.
    let refused = connect(&url, &[b"h2"], Some(key)).await;
    assert!(refused.is_err());
    // The node still holds the other key (the handshake signature verified) and serves.
    let (status, _) = http1(
        connect(&url, &[b"http/1.1"], None).await.unwrap(),
        Method::GET,
        &metadata_path(&v.blob_id()),
        vec![],
    )
    .await;
    assert_eq!(status, 200);

    // Cleared through the library: new connections get the real key again.
    net.apply_faults(1, NodeFaults::default()).await.unwrap();
    let again = connect(&url, &[b"h2"], Some(key)).await.unwrap();
    assert_eq!(parse_cert(&again.cert), real);
    net.shutdown().await;

    // Set at start.
    let net = SimNetwork::start(SimConfig {
        tls: true,
        faults: vec![NodeFaults {
            wrong_tls_key: true,
            ..NodeFaults::default()
        }],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let committee = net.committee();
    assert!(connect(
        &committee.nodes[0].url,
        &[b"h2"],
        Some(key_of(&committee, 0))
    )
    .await
    .is_err());
    assert!(connect(
        &committee.nodes[1].url,
        &[b"h2"],
        Some(key_of(&committee, 1))
    )
    .await
    .is_ok());
    net.shutdown().await;
}

#[tokio::test]
async fn plain_http_stays_the_default_and_still_has_keys_on_chain() {
    let net = SimNetwork::start(SimConfig::default()).await.unwrap();
    let committee = net.committee();
    let view = net.chain_view();
    for (node, chain) in committee.nodes.iter().zip(&view.nodes) {
        assert!(node.url.starts_with("http://"));
        assert_eq!(node.network_public_key, None);
        assert!(matches!(chain.network_public_key[0], 2 | 3));
        assert_eq!(chain.bls_public_key.len(), 96);
    }
    assert_eq!(pem_blocks(&net.certificates_pem()).len(), 4);
    let ids: std::collections::HashSet<_> = view.nodes.iter().map(|n| n.node_id).collect();
    assert_eq!(ids.len(), 4);
    net.shutdown().await;
}
