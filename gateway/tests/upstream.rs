//! Upstreams (`--upstream`): an edge gateway reading through a parent gateway or an
//! aggregator-like server, never trusting either. Lying upstreams (wrong bytes, truncated
//! bodies, forged metadata, silence) are tried, rejected and counted; the read falls back to the
//! next upstream or the nodes, and only verified bytes are cached and served.

mod harness;

use bytes::Bytes;
use codec::BlobId;
use gateway::upstream::Upstream;
use gateway::{Gateway, GatewayConfig, RunningGateway};
use harness::{blob, config, Reply, Scenario};
use http::{Method, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use storage_sim::committee::Committee;
use storage_sim::SimConfig;

/// A gateway whose blobs come from `upstreams` (and the nodes of `nodes`, if given).
struct Edge {
    gateway: Option<RunningGateway>,
    client: Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
}

impl Edge {
    async fn start(
        n_shards: u16,
        upstreams: &[String],
        nodes: Option<Committee>,
        tune: impl FnOnce(&mut GatewayConfig),
    ) -> Self {
        let mut config = GatewayConfig {
            upstreams: upstreams.iter().map(|u| u.parse().unwrap()).collect(),
            upstream_hedge: Duration::from_secs(600),
            ..config()
        };
        tune(&mut config);
        let committee = nodes.unwrap_or(Committee {
            n_shards,
            nodes: Vec::new(),
        });
        let gateway = Gateway::bind(config, committee)
            .await
            .expect("edge binds")
            .spawn();
        let addr = gateway.addr();
        Edge {
            gateway: Some(gateway),
            client: Client::builder(TokioExecutor::new()).build_http(),
            addr,
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        harness::send(&self.client, self.addr, Method::GET, path, headers).await
    }

    async fn metrics(&self) -> String {
        let reply = self.get("/metrics", &[]).await;
        String::from_utf8(reply.bytes().to_vec()).unwrap()
    }

    /// `gateway_upstream_results_total` for `upstream` and `result`, 0 when absent.
    async fn upstream_results(&self, upstream: &str, result: &str) -> f64 {
        let series = format!(
            "gateway_upstream_results_total{{upstream=\"{upstream}\",result=\"{result}\"}} "
        );
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(&series)?.parse().ok())
            .unwrap_or(0.0)
    }

    async fn stop(mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await.expect("edge stops");
        }
    }
}

/// How a test upstream misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Behaviour {
    /// An honest aggregator: right bytes, no metadata endpoint.
    Aggregator,
    /// One flipped byte in the blob; no metadata endpoint.
    WrongBytes,
    /// Announces the full length, sends half, and closes.
    Truncated,
    /// Serves another blob's (valid) metadata as this blob's.
    ForgedMetadata,
    /// Serves the real metadata (copied from the parent) with a flipped blob byte.
    WrongRows,
    /// Answers nothing until the test ends.
    Silent,
}

/// A tiny HTTP server standing in for an aggregator, behaving as told for every blob it is
/// given; counts the requests it receives.
struct TestUpstream {
    url: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestUpstream {
    /// `blobs`: `(id, bytes, metadata BCS)`; `other_metadata`: a different blob's metadata.
    async fn start(
        behaviour: Behaviour,
        blobs: Vec<(BlobId, Bytes, Bytes)>,
        other_metadata: Bytes,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let blobs = Arc::new(blobs);
        let count = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (blobs, other, count) = (blobs.clone(), other_metadata.clone(), count.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let (blobs, other) = (blobs.clone(), other.clone());
                            count.fetch_add(1, Ordering::SeqCst);
                            async move {
                                Ok::<_, std::convert::Infallible>(
                                    answer(behaviour, &blobs, &other, request.uri().path()).await,
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestUpstream {
            url,
            requests,
            task,
        }
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    behaviour: Behaviour,
    blobs: &[(BlobId, Bytes, Bytes)],
    other_metadata: &Bytes,
    path: &str,
) -> Response<Full<Bytes>> {
    let status = |code: u16| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        r
    };
    if behaviour == Behaviour::Silent {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (id, metadata_route) = match segments.as_slice() {
        ["v1", "blobs", id] => (*id, false),
        ["v1", "blobs", id, "metadata"] => (*id, true),
        _ => return status(404),
    };
    let Some((_, bytes, metadata)) = blobs.iter().find(|(b, _, _)| b.to_string() == id) else {
        return status(404);
    };
    if metadata_route {
        return match behaviour {
            Behaviour::ForgedMetadata => Response::new(Full::new(other_metadata.clone())),
            Behaviour::WrongRows => Response::new(Full::new(metadata.clone())),
            _ => status(404),
        };
    }
    let mut body = bytes.to_vec();
    match behaviour {
        Behaviour::WrongBytes | Behaviour::WrongRows => {
            let last = body.len() - 1;
            body[last] ^= 1;
        }
        Behaviour::Truncated => {
            body.truncate(body.len() / 2);
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(http::header::CONTENT_LENGTH, bytes.len().into());
            return r;
        }
        _ => {}
    }
    Response::new(Full::new(Bytes::from(body)))
}

const N: u16 = 10;

async fn parent() -> Scenario {
    Scenario::with(
        SimConfig {
            n_shards: N,
            nodes: 4,
            ..SimConfig::default()
        },
        config(),
    )
    .await
}

/// The metadata BCS of `id` as the parent serves it.
async fn metadata_of(parent: &Scenario, id: &BlobId) -> Bytes {
    let reply = parent.get(&format!("/v1/blobs/{id}/metadata")).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.bytes().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_parent_nodes_chain_fills_each_tier_once() {
    let parent = parent().await;
    let small = blob(100_000, 1);
    let large = blob(1_000_000, 2);
    let (small_id, large_id) = (parent.store(&small).await, parent.store(&large).await);
    let parent_url = format!("http://{}", parent.addr);
    // The edge streams from the first verified row (stream_from 1 byte) and has no nodes.
    let edge = Edge::start(N, std::slice::from_ref(&parent_url), None, |c| {
        c.stream_from_bytes = 1;
    })
    .await;

    let first = edge.get(&format!("/v1/blobs/{large_id}"), &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.bytes().as_ref() == large.as_slice(), "wrong bytes");
    assert_eq!(first.header("x-cache"), Some("miss"));
    let second = edge.get(&format!("/v1/blobs/{large_id}"), &[]).await;
    assert!(second.bytes().as_ref() == large.as_slice(), "wrong bytes");
    assert_eq!(second.header("x-cache"), Some("hit-memory"));
    assert_eq!(
        parent.metric("gateway_fills_started_total").await,
        Some(1.0),
        "the parent filled the blob once"
    );
    assert_eq!(edge.upstream_results(&parent_url, "served").await, 1.0);

    // A range of a blob neither tier has: verified metadata and just the covering rows.
    let range = edge
        .get(
            &format!("/v1/blobs/{small_id}"),
            &[("range", "bytes=70000-70999")],
        )
        .await;
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert!(
        range.bytes().as_ref() == &small[70_000..71_000],
        "wrong bytes"
    );
    // The parent serves the metadata in the nodes' format, which verifies against the ID.
    let meta = metadata_of(&parent, &small_id).await;
    let config = codec::EncodingConfig::new(N).unwrap();
    assert!(codec::VerifiedMetadata::from_bcs(small_id, &meta, config).is_ok());
    // Publishing needs nodes; this edge has none.
    let reply = harness::send(&edge.client, edge.addr, Method::GET, "/status", &[]).await;
    assert_eq!(reply.header("x-walrus-n-shards"), Some("10"));
    edge.stop().await;
    parent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_upstreams_never_reach_a_cache_or_a_client() {
    let parent = parent().await;
    let data = blob(300_000, 3);
    let other = blob(5_000, 4);
    let (id, other_id) = (parent.store(&data).await, parent.store(&other).await);
    let entry = (
        id,
        Bytes::from(data.clone()),
        metadata_of(&parent, &id).await,
    );
    let other_meta = metadata_of(&parent, &other_id).await;
    let parent_url = format!("http://{}", parent.addr);
    for (behaviour, counted) in [
        (Behaviour::WrongBytes, "mismatch"),
        (Behaviour::Truncated, "transport"),
        (Behaviour::ForgedMetadata, "mismatch"),
        (Behaviour::WrongRows, "mismatch"),
    ] {
        let liar = TestUpstream::start(behaviour, vec![entry.clone()], other_meta.clone()).await;
        let edge = Edge::start(N, &[liar.url.clone(), parent_url.clone()], None, |_| {}).await;
        let reply = edge.get(&format!("/v1/blobs/{id}"), &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{behaviour:?}");
        assert!(
            reply.bytes().as_ref() == data.as_slice(),
            "wrong bytes: {behaviour:?}"
        );
        assert!(liar.requests.load(Ordering::SeqCst) >= 1, "{behaviour:?}");
        let failures = edge.upstream_results(&liar.url, counted).await
            + edge.upstream_results(&liar.url, "truncated").await;
        assert!(failures >= 1.0, "{behaviour:?}: {}", edge.metrics().await);
        assert_eq!(edge.upstream_results(&parent_url, "served").await, 1.0);
        // What was cached is the verified blob.
        let again = edge.get(&format!("/v1/blobs/{id}"), &[]).await;
        assert_eq!(again.header("x-cache"), Some("hit-memory"), "{behaviour:?}");
        assert!(
            again.bytes().as_ref() == data.as_slice(),
            "wrong bytes: {behaviour:?}"
        );
        edge.stop().await;
    }

    // A liar in front of the storage nodes: the nodes take over.
    let liar = TestUpstream::start(Behaviour::WrongBytes, vec![entry.clone()], other_meta).await;
    let edge = Edge::start(
        N,
        std::slice::from_ref(&liar.url),
        Some(parent.net.committee().clone()),
        |_| {},
    )
    .await;
    let reply = edge.get(&format!("/v1/blobs/{id}"), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.bytes().as_ref() == data.as_slice(), "wrong bytes");
    assert_eq!(edge.upstream_results(&liar.url, "mismatch").await, 1.0);
    edge.stop().await;
    parent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregators_are_verified_by_re_encoding_and_ranges_still_work() {
    let parent = parent().await;
    let data = blob(200_000, 5);
    let id = parent.store(&data).await;
    let entry = (
        id,
        Bytes::from(data.clone()),
        metadata_of(&parent, &id).await,
    );
    let aggregator = TestUpstream::start(Behaviour::Aggregator, vec![entry], Bytes::new()).await;
    let edge = Edge::start(N, std::slice::from_ref(&aggregator.url), None, |_| {}).await;
    // No metadata to verify a range with: the edge fills the whole blob, checks its ID, then
    // answers the range.
    let range = edge
        .get(&format!("/v1/blobs/{id}"), &[("range", "bytes=-1000")])
        .await;
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert!(
        range.bytes().as_ref() == &data[data.len() - 1000..],
        "wrong bytes"
    );
    let whole = edge.get(&format!("/v1/blobs/{id}"), &[]).await;
    assert!(whole.bytes().as_ref() == data.as_slice(), "wrong bytes");
    assert_eq!(whole.header("x-cache"), Some("hit-memory"));
    // Unknown everywhere: 404, as from the nodes.
    let unknown = codec::blob_id(N, b"never stored").unwrap();
    let reply = edge.get(&format!("/v1/blobs/{unknown}"), &[]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.reason(), "BLOB_NOT_FOUND");
    edge.stop().await;
    parent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_is_hedged_and_the_first_verified_answer_wins() {
    let parent = parent().await;
    let data = blob(150_000, 6);
    let id = parent.store(&data).await;
    let entry = (
        id,
        Bytes::from(data.clone()),
        metadata_of(&parent, &id).await,
    );
    let silent = TestUpstream::start(Behaviour::Silent, vec![entry], Bytes::new()).await;
    let parent_url = format!("http://{}", parent.addr);
    // The silent upstream would hold the read for 10 minutes (past the harness's 60 s request
    // deadline); only hedging to the parent lets it finish.
    let edge = Edge::start(N, &[silent.url.clone(), parent_url.clone()], None, |c| {
        c.upstream_hedge = Duration::from_millis(50);
        c.upstream_timeout = Duration::from_secs(600);
    })
    .await;
    let reply = edge.get(&format!("/v1/blobs/{id}"), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.bytes().as_ref() == data.as_slice(), "wrong bytes");
    assert_eq!(edge.upstream_results(&parent_url, "served").await, 1.0);
    assert!(silent.requests.load(Ordering::SeqCst) >= 1);
    edge.stop().await;
    parent.stop().await;
}

#[test]
fn upstream_urls_are_parsed_strictly() {
    assert!("https://aggregator.walrus-testnet.walrus.space"
        .parse::<Upstream>()
        .is_ok());
    assert!("file:///etc/passwd".parse::<Upstream>().is_err());
}
