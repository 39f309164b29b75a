//! The real-network read path against walrus-sim standing in for the whole network: TLS
//! storage nodes with their own P-256 keys and a simulated Sui full node serving the staking
//! objects. The gateway finds the committee on the chain (`--walrus-config` as walrus-sim writes
//! it), reads over HTTPS pinned to the on-chain keys, and follows epoch changes and node moves.

mod harness;

use bytes::Bytes;
use codec::BlobId;
use gateway::chain_reader::ChainReader;
use harness::chain_scene::{fast_policy, ChainScene};
use harness::{blob, config};
use http::Method;
use std::sync::Arc;
use std::time::Duration;
use storage_sim::sui::SuiSim;
use storage_sim::{ChainView, NodeFaults, SimConfig, SimNetwork};

/// The scene every test here starts: the chain-backed sim and a gateway reading it.
async fn start(sim: SimConfig) -> ChainScene {
    start_with(sim, config()).await
}

async fn start_with(sim: SimConfig, gateway_config: gateway::GatewayConfig) -> ChainScene {
    ChainScene::start(sim, gateway_config, fast_policy()).await
}

/// Per node, the primary sliver requests it has served so far.
fn primary_gets(s: &ChainScene) -> Vec<u64> {
    (0..s.net.chain_view().nodes.len())
        .map(|i| s.net.counters(i).primary_sliver_gets)
        .collect()
}

fn sim(n_shards: u16, nodes: usize) -> SimConfig {
    SimConfig {
        n_shards,
        nodes,
        tls: true,
        epoch_sync_ms: 1_500,
        ..SimConfig::default()
    }
}

/// Node index owning `shard` in a committee given as shards per node.
fn owner(committee: &[Vec<u16>], shard: u16) -> usize {
    committee
        .iter()
        .position(|s| s.contains(&shard))
        .expect("every shard has an owner")
}

/// The primary sliver requests per node that reading the systematic slivers of `id` from
/// `committee` makes (one per systematic pair).
fn expected_gets(view: &ChainView, committee: &[Vec<u16>], id: &BlobId) -> Vec<u64> {
    let config = codec::EncodingConfig::new(view.n_shards).unwrap();
    let mut gets = vec![0; view.nodes.len()];
    for pair in 0..config.n_primary_source_symbols() {
        gets[owner(committee, id.shard_for_pair(pair, view.n_shards))] += 1;
    }
    gets
}

fn diff(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_follow_the_chain_through_an_epoch_change() {
    let s = start(sim(10, 4)).await;
    s.wait_for_epoch(1, "EpochChangeDone").await;
    let before_data = blob(50_000, 1);
    let before = s.store(&before_data).await;
    // Blobs certified in epoch 1; some are first read during the change.
    let mut unread = Vec::new();
    for seed in 10..40 {
        let data = blob(20_000, seed);
        unread.push((s.store(&data).await, data));
    }
    let r = s.get(&format!("/v1/blobs/{before}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), &before_data[..]);

    let change = s.net.advance_epoch().await.expect("the epoch advances");
    assert_eq!(change.epoch, 2);
    assert!(change.moved_shards >= 3, "{change:?}");
    s.wait_for_epoch(2, "EpochChangeSync").await;

    // During the change a blob certified before it is read from the previous committee: pick
    // one whose systematic slivers sit on different nodes in the two committees, so the
    // requests tell which committee was read.
    let view = s.net.chain_view();
    assert!(view.state.is_transitioning(), "{:?}", view.state);
    let (id, data) = unread
        .iter()
        .find(|(id, _)| {
            expected_gets(&view, &view.previous, id) != expected_gets(&view, &view.current, id)
        })
        .expect("some blob reads differently from the two committees")
        .clone();
    let gets = primary_gets(&s);
    let r = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), &data[..]);
    assert_eq!(
        diff(&primary_gets(&s), &gets),
        expected_gets(&view, &view.previous, &id),
        "during EpochChangeSync the blob certified in epoch 1 is read from the previous committee"
    );

    // After the change and the next refresh: the current committee only, and no node is
    // asked for a shard it gave away.
    s.wait_for_epoch(2, "EpochChangeDone").await;
    let view = s.net.chain_view();
    let (id, data) = unread
        .iter()
        .rev()
        .find(|(id, _)| {
            expected_gets(&view, &view.previous, id) != expected_gets(&view, &view.current, id)
        })
        .unwrap()
        .clone();
    let gets = primary_gets(&s);
    let r = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), &data[..]);
    assert_eq!(
        diff(&primary_gets(&s), &gets),
        expected_gets(&view, &view.current, &id)
    );
    // And a blob stored after the change.
    let after_data = blob(70_000, 2);
    let after = s.store(&after_data).await;
    let r = s.get(&format!("/v1/blobs/{after}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), &after_data[..]);
    let metrics = s.metrics().await;
    // Failure series exist at 0 from the start (issue 20): none may have moved.
    assert!(
        !metrics.contains("SHARD_NOT_ASSIGNED")
            && !metrics
                .lines()
                .any(|l| l.contains("reason=\"status\"") && !l.ends_with(" 0")),
        "no sliver request failed: {metrics}"
    );
    assert!(metrics.contains("gateway_chain_epoch 2"), "{metrics}");
    assert!(metrics.contains("gateway_chain_refreshes_total{result=\"ok\"}"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_node_is_found_again_after_a_refresh() {
    let s = start(sim(10, 4)).await;
    let name = s.net.chain_view().nodes[1].name.clone();
    let old = s.net.chain_view().nodes[1].address.clone();
    let new = s.net.move_node(&name).await.expect("the node moves");
    assert_ne!(old, new);
    // Fresh blobs (never cached) whose systematic slivers include one on the moved node: once
    // the gateway's refresh has the pool's new address, the node serves it there.
    let mut served = false;
    for seed in 100..160 {
        let data = blob(30_000, seed);
        let id = s.store(&data).await;
        let view = s.net.chain_view();
        if !(0..4).any(|pair| owner(&view.current, id.shard_for_pair(pair, 10)) == 1) {
            continue;
        }
        let before = s.net.counters(1).primary_sliver_gets;
        let r = s.get(&format!("/v1/blobs/{id}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.bytes(), &data[..]);
        if s.net.counters(1).primary_sliver_gets > before {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served,
        "the moved node was never read at its new address {new}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_key_is_never_read_from() {
    let s = start(sim(10, 4)).await;
    s.net
        .apply_faults(
            2,
            NodeFaults {
                wrong_tls_key: true,
                ..NodeFaults::default()
            },
        )
        .await
        .unwrap();
    let name = s.net.chain_view().nodes[2].name.clone();
    for seed in 0..4 {
        let data = blob(30_000, 200 + seed);
        let id = s.store(&data).await;
        let r = s.get(&format!("/v1/blobs/{id}")).await;
        assert_eq!(r.status, 200, "the read succeeds from the other nodes");
        assert_eq!(r.bytes(), &data[..]);
    }
    let c = s.net.counters(2);
    assert_eq!(
        c.metadata_gets + c.primary_sliver_gets + c.secondary_sliver_gets,
        0,
        "no request reached the node behind the wrong certificate"
    );
    let metrics = s.metrics().await;
    let series = format!("gateway_node_tls_pin_failures_total{{node=\"{name}\"}}");
    let count: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {metrics}"));
    assert!(count >= 1.0);
    s.stop().await;
}

/// A stand-in Walrus publisher on loopback: answers `PUT /v1/blobs` as the real one does, with
/// the Blob ID of what it received (`honest`), of something else (a liar), or a 400.
struct FakePublisher {
    url: String,
    queries: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Copy)]
enum Publisher {
    Honest,
    Liar,
    Refuses,
}

impl FakePublisher {
    async fn start(kind: Publisher) -> Self {
        use http_body_util::{BodyExt, Full};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let queries = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = queries.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            seen.lock()
                                .unwrap()
                                .push(request.uri().query().unwrap_or("").to_owned());
                            let body = request.into_body().collect().await?.to_bytes();
                            let id = codec::blob_id(10, &body).unwrap();
                            let (status, json) = match kind {
                                Publisher::Honest => (
                                    200,
                                    serde_json::json!({"newlyCreated": {"blobObject": {"blobId": id.to_string(), "size": body.len()}, "cost": 42}}),
                                ),
                                Publisher::Liar => (
                                    200,
                                    serde_json::json!({"newlyCreated": {"blobObject": {"blobId": BlobId([9; 32]).to_string()}}}),
                                ),
                                Publisher::Refuses => (
                                    400,
                                    serde_json::json!({"error": {"code": 400, "message": "epochs too large"}}),
                                ),
                            };
                            let response = http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(json.to_string())))
                                .unwrap();
                            Ok::<_, hyper::Error>(response)
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Self { url, queries, task }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_go_through_the_publisher_and_are_cached_only_under_the_id_they_encode_to() {
    // Without --publisher: 403 naming the flag.
    let s = start(sim(10, 4)).await;
    let r = harness::send_body(s.addr, Method::PUT, "/v1/blobs", &[], blob(1000, 1)).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.reason(), "PUBLISHING_DISABLED");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--publisher"));
    s.stop().await;

    for kind in [Publisher::Honest, Publisher::Liar, Publisher::Refuses] {
        let publisher = FakePublisher::start(kind).await;
        let s = start_with(
            sim(10, 4),
            gateway::GatewayConfig {
                publisher: Some(publisher.url.parse().unwrap()),
                ..config()
            },
        )
        .await;
        let data = blob(30_000, 5);
        let id = codec::blob_id(10, &data).unwrap();
        let r =
            harness::send_body(s.addr, Method::PUT, "/v1/blobs?epochs=5", &[], data.clone()).await;
        assert_eq!(publisher.queries.lock().unwrap().as_slice(), ["epochs=5"]);
        let before = s.net.total_counters();
        let read = s.get(&format!("/v1/blobs/{id}")).await;
        match kind {
            Publisher::Honest => {
                assert_eq!(r.status, 200);
                assert_eq!(
                    r.json()["newlyCreated"]["cost"],
                    42,
                    "the publisher's answer, passed through"
                );
                assert_eq!(read.status, 200);
                assert_eq!(read.bytes(), &data[..]);
                assert_eq!(
                    s.net.total_counters(),
                    before,
                    "served from the cache, not the nodes"
                );
            }
            Publisher::Liar => {
                assert_eq!(r.status, 502);
                assert_eq!(r.reason(), "PUBLISHER_FAILED");
                assert!(r.json()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(&id.to_string()));
                assert_eq!(
                    read.status, 404,
                    "nothing was cached; the nodes never had it"
                );
            }
            Publisher::Refuses => {
                assert_eq!(r.status, 400);
                assert_eq!(r.json()["error"]["message"], "epochs too large");
                assert_eq!(read.status, 404);
            }
        }
        s.stop().await;
        publisher.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_of_another_chain_or_package_is_refused() {
    let net = SimNetwork::start(sim(10, 4)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sui = SuiSim::start(listener, net.chain_control()).await.unwrap();
    let ours = chain::network::parse_client_config(&sui.client_config(), None).unwrap();
    let read = |network: chain::network::NetworkConfig| async move {
        ChainReader::new(network, Duration::from_secs(5))
            .read()
            .await
    };
    // Mainnet's IDs and chain id, pointed at the simulator: the chain check stops the read.
    let mainnet = chain::network::NetworkConfig {
        rpc_urls: vec![sui.url()],
        ..chain::network::Preset::Mainnet.config()
    };
    match read(mainnet).await {
        Err(gateway::chain_reader::ChainError::WrongChain { got, .. }) => {
            assert_eq!(got, storage_sim::sui::CHAIN_ID)
        }
        other => panic!("expected WrongChain, got {other:?}"),
    }
    // The right objects under another package: refused on the first object's type.
    let other_package = chain::network::NetworkConfig {
        package: Some(chain::ObjectId([1; 32])),
        ..ours.clone()
    };
    assert!(matches!(
        read(other_package).await,
        Err(gateway::chain_reader::ChainError::WrongType { .. })
    ));
    // As configured: one read, 3 calls.
    let (committee, cost) = read(ours).await.unwrap();
    assert_eq!((committee.current.len(), cost.rpcs), (4, 3));
    sui.shutdown().await;
    net.shutdown().await;
}
