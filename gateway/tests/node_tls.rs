//! HTTPS storage nodes pinned to their network key (NETWORK.md §6.2–6.3), against a small
//! tokio-rustls + hyper node on `127.0.0.1:0` that presents a self-signed certificate for a
//! P-256 key, like a Walrus node without a CA certificate.

use bytes::Bytes;
use chain::network_key::{compress_p256_point, NetworkKey};
use codec::{BlobId, SliverKind};
use gateway::nodes::{NodeClient, NodeError, Topology};
use gateway::{Gateway, GatewayConfig};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::KeyPair;
use rustls_pki_types::PrivatePkcs8KeyDer;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage_sim::committee::{Committee, CommitteeNode};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

const METADATA: &[u8] = b"metadata bytes from a TLS node";
const TIMEOUT: Duration = Duration::from_secs(10);
/// Guard against a hung test.
const DEADLINE: Duration = Duration::from_secs(60);

/// An HTTPS node answering [`METADATA`] on `.../metadata` and 404 elsewhere, recording the
/// HTTP version of every request and counting completed handshakes.
struct TlsNode {
    addr: SocketAddr,
    versions: Arc<Mutex<Vec<Version>>>,
    handshakes: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl TlsNode {
    async fn start(key: &KeyPair, alpn: &[&[u8]]) -> Self {
        // Names that have nothing to do with how the client reaches it: they are not checked.
        let cert = rcgen::CertificateParams::new(vec!["2aff10.network.walrus.alt".to_owned()])
            .unwrap()
            .self_signed(key)
            .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(gateway::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let versions = Arc::new(Mutex::new(Vec::new()));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (seen, shaken) = (versions.clone(), handshakes.clone());
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen, shaken) = (acceptor.clone(), seen.clone(), shaken.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    shaken.fetch_add(1, Ordering::SeqCst);
                    let service = service_fn(move |request: Request<Incoming>| {
                        seen.lock().unwrap().push(request.version());
                        let mut response = Response::new(Full::new(Bytes::from_static(METADATA)));
                        if !request.uri().path().ends_with("/metadata") {
                            *response.body_mut() = Full::new(Bytes::new());
                            *response.status_mut() = StatusCode::NOT_FOUND;
                        }
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            versions,
            handshakes,
            accept,
        }
    }

    fn versions(&self) -> Vec<Version> {
        self.versions.lock().unwrap().clone()
    }
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

fn network_key(key: &KeyPair) -> NetworkKey {
    compress_p256_point(key.public_key_raw()).unwrap()
}

/// One `https://` node holding all 10 shards, pinned to `key`.
fn committee(addr: SocketAddr, key: &NetworkKey) -> Committee {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    Committee {
        n_shards: 10,
        nodes: vec![CommitteeNode {
            name: "node-0".to_owned(),
            url: format!("https://{addr}"),
            shards: (0..10).collect(),
            network_public_key: Some(hex),
        }],
    }
}

#[tokio::test]
async fn a_pinned_node_answers_over_one_http2_connection() {
    let key = p256();
    let node = TlsNode::start(&key, &[b"h2", b"http/1.1"]).await;
    let topology = Topology::new(committee(node.addr, &network_key(&key))).unwrap();
    let client = NodeClient::new();
    let id = BlobId([1; 32]);
    let run = async {
        let body = client.metadata(&topology, 0, &id, 1024, TIMEOUT).await;
        assert_eq!(body.unwrap().as_ref(), METADATA);
        // More requests share the connection (HTTP/2 multiplexing), concurrently.
        let mut more = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (client, topology) = (client.clone(), topology.clone());
            more.spawn(async move { client.metadata(&topology, 0, &id, 1024, TIMEOUT).await });
        }
        while let Some(body) = more.join_next().await {
            assert_eq!(body.unwrap().unwrap().as_ref(), METADATA);
        }
        let missing = client
            .sliver(&topology, &id, 0, SliverKind::Primary, 1024, TIMEOUT)
            .await;
        assert!(matches!(missing, Err(NodeError::NotFound)), "{missing:?}");
    };
    tokio::time::timeout(DEADLINE, run).await.unwrap();
    assert_eq!(node.versions(), vec![Version::HTTP_2; 10]);
    assert_eq!(node.handshakes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_node_with_another_key_is_a_pin_failure() {
    let node = TlsNode::start(&p256(), &[b"h2", b"http/1.1"]).await;
    let topology = Topology::new(committee(node.addr, &network_key(&p256()))).unwrap();
    let client = NodeClient::new();
    let id = BlobId([2; 32]);
    let run = async {
        let result = client.metadata(&topology, 0, &id, 1024, TIMEOUT).await;
        match result {
            Err(e @ NodeError::Pinning(_)) => {
                assert_eq!(e.kind(), "tls_pin");
                assert!(e.to_string().contains("does not match"), "{e}");
            }
            other => panic!("expected a pin failure, got {other:?}"),
        }
        let result = client
            .put_sliver(
                &topology,
                &id,
                3,
                SliverKind::Secondary,
                Bytes::from_static(b"x"),
                TIMEOUT,
            )
            .await;
        assert!(matches!(result, Err(NodeError::Pinning(_))), "{result:?}");
    };
    tokio::time::timeout(DEADLINE, run).await.unwrap();
    // The handshake failed on our side: no request ever reached the node.
    assert_eq!(node.versions(), Vec::<Version>::new());
}

#[tokio::test]
async fn an_http1_only_node_still_works() {
    let key = p256();
    let node = TlsNode::start(&key, &[b"http/1.1"]).await;
    let topology = Topology::new(committee(node.addr, &network_key(&key))).unwrap();
    let client = NodeClient::new();
    let run = client.metadata(&topology, 0, &BlobId([3; 32]), 1024, TIMEOUT);
    let body = tokio::time::timeout(DEADLINE, run).await.unwrap();
    assert_eq!(body.unwrap().as_ref(), METADATA);
    assert_eq!(node.versions(), vec![Version::HTTP_11]);
}

#[tokio::test]
async fn the_gateway_counts_pin_failures_per_node() {
    let node = TlsNode::start(&p256(), &[b"h2", b"http/1.1"]).await;
    let config = GatewayConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        metadata_timeout: TIMEOUT,
        sliver_timeout: TIMEOUT,
        shutdown_grace: Duration::from_secs(2),
        ..GatewayConfig::default()
    };
    let gateway = Gateway::bind(config, committee(node.addr, &network_key(&p256())))
        .await
        .unwrap()
        .spawn();
    let addr = gateway.addr();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let response = client
                .get(format!("http://{addr}{path}").parse().unwrap())
                .await
                .unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let run = async {
        let (status, _) = get(format!("/v1/blobs/{}", BlobId([4; 32]))).await;
        assert_ne!(status, StatusCode::OK);
        let (_, metrics) = get("/metrics".to_owned()).await;
        let pins = metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix("gateway_node_tls_pin_failures_total{node=\"node-0\"} ")
            })
            .unwrap_or_else(|| panic!("no pin failure counter in\n{metrics}"));
        assert!(pins.parse::<f64>().unwrap() >= 1.0, "{pins}");
        // The series exists at 0 from the start (issue 20): it must have moved.
        assert!(
            metrics
                .lines()
                .any(|l| l.contains("reason=\"tls_pin\"") && !l.ends_with(" 0")),
            "no tls_pin node failure in\n{metrics}"
        );
    };
    tokio::time::timeout(DEADLINE, run).await.unwrap();
    assert_eq!(node.versions(), Vec::<Version>::new());
    gateway.shutdown().await.unwrap();
}
