//! Whole-blob reads through the gateway: byte-identical results, tolerance of faulty and
//! offline nodes up to what the encoding allows, 503 beyond it, and one fill per blob however
//! many clients ask.

mod harness;

use harness::{blob, config, Scenario};
use http::{Method, StatusCode};
use std::time::Duration;
use storage_sim::{NodeFaults, SimConfig};

async fn reads_back(n_shards: u16, nodes: usize, sizes: &[usize]) {
    let s = Scenario::start(n_shards, nodes).await;
    for (i, &len) in sizes.iter().enumerate() {
        let data = blob(len, i as u64 + 1);
        let id = s.store(&data).await;
        let cold = s.get(&format!("/v1/blobs/{id}")).await;
        assert_eq!(cold.status, StatusCode::OK, "{len} bytes");
        assert_eq!(cold.header("x-cache"), Some("miss"));
        assert_eq!(cold.bytes().as_ref(), &data[..], "{len} bytes, cold");
        let warm = s.get(&format!("/v1/blobs/{id}")).await;
        assert_eq!(warm.header("x-cache"), Some("hit-memory"));
        assert_eq!(warm.bytes().as_ref(), &data[..], "{len} bytes, warm");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_read_back_byte_identical_at_n10() {
    reads_back(10, 4, &[0, 1, 2, 27, 1000, 10_007, 300_000]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_read_back_byte_identical_at_n100() {
    reads_back(100, 10, &[0, 1, 5_000, 1_000_003]).await;
}

/// Node 0 holds shards {0, 4, 8}: f = 3 of 10 shards, and always one systematic sliver.
async fn survives_faulty_node(faults: NodeFaults, hedge: bool) -> Scenario {
    let mut cfg = config();
    if hedge {
        cfg.hedge_after = Duration::from_millis(200);
    }
    let s = Scenario::with(SimConfig::default(), cfg).await;
    assert_eq!(s.shards_of(0).len(), 3);
    let data = blob(50_000, 7);
    let id = s.store(&data).await;
    s.faults(0, faults).await;
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_shards_offline() {
    let faults = NodeFaults {
        offline: true,
        ..NodeFaults::default()
    };
    survives_faulty_node(faults, false).await.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_shards_answer_500() {
    let faults = NodeFaults {
        error_rate: 1.0,
        error_status: Some(500),
        ..NodeFaults::default()
    };
    survives_faulty_node(faults, false).await.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_shards_answer_503() {
    let faults = NodeFaults {
        error_rate: 1.0,
        ..NodeFaults::default()
    };
    survives_faulty_node(faults, false).await.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_shards_stall_and_are_hedged() {
    let faults = NodeFaults {
        stall: true,
        ..NodeFaults::default()
    };
    survives_faulty_node(faults, true).await.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_shards_are_slow_and_are_hedged() {
    let faults = NodeFaults {
        latency_ms: 3_000,
        ..NodeFaults::default()
    };
    survives_faulty_node(faults, true).await.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_shards_are_bandwidth_limited() {
    let faults = NodeFaults {
        bandwidth_bytes_per_sec: Some(20_000),
        ..NodeFaults::default()
    };
    survives_faulty_node(faults, true).await.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_shards_truncate_bodies() {
    let faults = NodeFaults {
        truncate: true,
        ..NodeFaults::default()
    };
    survives_faulty_node(faults, false).await.stop().await;
}

/// A node that serves bad slivers is named in the metrics as having served invalid data.
async fn lying_node(faults: NodeFaults, reason: &str) {
    let s = survives_faulty_node(faults, false).await;
    let series = format!(
        "gateway_node_failures_total{{node=\"{}\",reason=\"{reason}\"}}",
        s.node_name(0)
    );
    assert!(
        s.metric(&series).await.unwrap_or(0.0) >= 1.0,
        "{series} missing from:\n{}",
        s.metrics_text().await
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_shards_serve_corrupt_slivers() {
    let faults = NodeFaults {
        corrupt_slivers: true,
        ..NodeFaults::default()
    };
    lying_node(faults, "invalid_sliver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_shards_serve_wrong_indices() {
    let faults = NodeFaults {
        wrong_index: true,
        ..NodeFaults::default()
    };
    lying_node(faults, "wrong_index").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_shards_serve_wrong_symbol_sizes() {
    let faults = NodeFaults {
        wrong_symbol_size: true,
        ..NodeFaults::default()
    };
    lying_node(faults, "invalid_sliver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_shards_serve_wrong_metadata() {
    let faults = NodeFaults {
        wrong_metadata: true,
        ..NodeFaults::default()
    };
    survives_faulty_node(faults, false).await.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_shards_lie_not_found() {
    let faults = NodeFaults {
        lie_not_found: true,
        ..NodeFaults::default()
    };
    survives_faulty_node(faults, false).await.stop().await;
}

fn offline() -> NodeFaults {
    NodeFaults {
        offline: true,
        ..NodeFaults::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_f_shards_offline_still_read_and_more_is_503() {
    let s = Scenario::start(10, 4).await;
    let data = blob(80_000, 3);
    let id = s.store(&data).await;
    // Nodes 0 and 1 hold 6 = 2f shards: the other 4 = kp primaries must be decoded from.
    s.faults(0, offline()).await;
    s.faults(1, offline()).await;
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &data[..]);

    let other = blob(80_000, 4);
    let other_id = s.store(&other).await;
    s.faults(2, offline()).await;
    let reply = s.get(&format!("/v1/blobs/{other_id}")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.reason(), "BLOB_UNAVAILABLE");
    assert_eq!(reply.header("retry-after"), Some("1"));
    // Failures are not cached: with the nodes back, the blob reads.
    for node in 0..3 {
        s.faults(node, NodeFaults::default()).await;
    }
    let reply = s.get(&format!("/v1/blobs/{other_id}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &other[..]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_data_is_never_served() {
    let s = Scenario::start(10, 4).await;
    let data = blob(40_000, 5);
    let id = s.store(&data).await;
    for node in 0..4 {
        s.faults(
            node,
            NodeFaults {
                corrupt_slivers: true,
                ..NodeFaults::default()
            },
        )
        .await;
    }
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.reason(), "BLOB_UNAVAILABLE");
    let ranged = s
        .request(
            Method::GET,
            &format!("/v1/blobs/{id}"),
            &[("range", "bytes=0-9")],
        )
        .await;
    assert_eq!(ranged.status, StatusCode::SERVICE_UNAVAILABLE);
    for node in 0..4 {
        s.faults(
            node,
            NodeFaults {
                wrong_metadata: true,
                ..NodeFaults::default()
            },
        )
        .await;
    }
    let other = s.store(&blob(1000, 6)).await;
    let reply = s.get(&format!("/v1/blobs/{other}")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_consistency_reads_directly_and_by_decoding() {
    let mut cfg = config();
    cfg.consistency = codec::ConsistencyCheck::Strict;
    let s = Scenario::with(SimConfig::default(), cfg).await;
    for (len, seed) in [(0usize, 1u64), (1, 2), (30_000, 3)] {
        let data = blob(len, seed);
        let id = s.store(&data).await;
        let reply = s.get(&format!("/v1/blobs/{id}")).await;
        assert_eq!(reply.bytes().as_ref(), &data[..]);
    }
    s.faults(0, offline()).await;
    let data = blob(30_000, 4);
    let id = s.store(&data).await;
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_requests_share_one_fill() {
    let s = Scenario::start(10, 4).await;
    let data = blob(200_000, 9);
    let id = s.store(&data).await;
    // Slow nodes keep the fill in flight while the requests pile up.
    for node in 0..4 {
        s.faults(
            node,
            NodeFaults {
                latency_ms: 300,
                ..NodeFaults::default()
            },
        )
        .await;
    }
    s.net.reset_counters();
    let path = format!("/v1/blobs/{id}");
    let requests: Vec<_> = (0..200)
        .map(|_| {
            let client = s.h2_client();
            let addr = s.addr;
            let path = path.clone();
            tokio::spawn(async move { harness::send(&client, addr, Method::GET, &path, &[]).await })
        })
        .collect();
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.bytes().as_ref(), &data[..]);
    }
    let counters = s.counters();
    let kp = u64::from(s.net.config().n_primary_source_symbols());
    assert!(
        (1..=3).contains(&counters.metadata_gets),
        "{counters:?}: one metadata fan-out of at most 3 nodes"
    );
    assert_eq!(counters.primary_sliver_gets, kp, "{counters:?}");
    assert_eq!(counters.secondary_sliver_gets, 0, "{counters:?}");
    assert_eq!(s.metric("gateway_fills_started_total").await, Some(1.0));
    assert_eq!(s.metric("gateway_metadata_fills_total").await, Some(1.0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_does_not_cancel_the_fill() {
    let s = Scenario::start(10, 4).await;
    let data = blob(100_000, 10);
    let id = s.store(&data).await;
    for node in 0..4 {
        s.faults(
            node,
            NodeFaults {
                latency_ms: 500,
                ..NodeFaults::default()
            },
        )
        .await;
    }
    s.net.reset_counters();
    let path = format!("/v1/blobs/{id}");
    let leaving = {
        let client = s.h2_client();
        let (addr, path) = (s.addr, path.clone());
        tokio::spawn(async move { harness::send(&client, addr, Method::GET, &path, &[]).await })
    };
    // Wait (boundedly) until the fill is under way, then hang up.
    assert!(s.wait_for_metric("gateway_fills_started_total", 1.0).await);
    leaving.abort();
    let _ = leaving.await;
    let reply = s.get(&path).await;
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    let kp = u64::from(s.net.config().n_primary_source_symbols());
    assert_eq!(s.counters().primary_sliver_gets, kp);
    assert_eq!(s.metric("gateway_fills_started_total").await, Some(1.0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_prefetch_slivers_wait_for_metadata() {
    let mut cfg = config();
    cfg.prefetch_slivers = false;
    let s = Scenario::with(SimConfig::default(), cfg).await;
    let data = blob(20_000, 11);
    let id = s.store(&data).await;
    s.net.reset_counters();
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    let kp = u64::from(s.net.config().n_primary_source_symbols());
    assert_eq!(s.counters().primary_sliver_gets, kp);
    // An unknown blob then costs no sliver requests at all.
    s.net.reset_counters();
    let unknown = codec::BlobId([9; 32]);
    let reply = s.get(&format!("/v1/blobs/{unknown}")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(s.counters().primary_sliver_gets, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_a_fill_in_flight() {
    let mut cfg = config();
    cfg.shutdown_grace = Duration::from_secs(60);
    let mut s = Scenario::with(SimConfig::default(), cfg).await;
    let data = blob(60_000, 12);
    let id = s.store(&data).await;
    for node in 0..4 {
        s.faults(
            node,
            NodeFaults {
                latency_ms: 300,
                ..NodeFaults::default()
            },
        )
        .await;
    }
    let pending = {
        let client = s.h2_client();
        let (addr, path) = (s.addr, format!("/v1/blobs/{id}"));
        tokio::spawn(async move { harness::send(&client, addr, Method::GET, &path, &[]).await })
    };
    assert!(s.wait_for_metric("gateway_fills_started_total", 1.0).await);
    s.stop_gateway().await;
    let reply = pending.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    assert!(
        tokio::net::TcpStream::connect(s.addr).await.is_err(),
        "no longer accepting"
    );
    s.stop().await;
}

fn stall() -> NodeFaults {
    NodeFaults {
        stall: true,
        ..NodeFaults::default()
    }
}

/// n = 10 on 4 nodes: the 4 systematic rows sit on 4 consecutive shards, one per node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blobs_stream_before_their_fill_completes() {
    let mut cfg = config();
    cfg.stream_from_bytes = 1;
    cfg.sliver_timeout = Duration::from_secs(30);
    cfg.hedge_after = Duration::from_secs(3);
    let s = Scenario::with(SimConfig::default(), cfg).await;
    let data = blob(100_000, 13);
    let id = s.store(&data).await;
    let kp = s.net.config().n_primary_source_symbols();
    // The last row stalls until hedged; the others stream meanwhile.
    let last = s.node_for_pair(&id, kp - 1);
    assert_ne!(last, s.node_for_pair(&id, 0));
    s.faults(last, stall()).await;
    let client = s.h2_client();
    let request = http::Request::get(format!("http://{}/v1/blobs/{id}", s.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        s.metric("gateway_fills_succeeded_total").await,
        Some(0.0),
        "headers came before the fill completed"
    );
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.as_ref(), &data[..]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_midway_aborts_the_body() {
    let mut cfg = config();
    cfg.stream_from_bytes = 1;
    cfg.metadata_fanout = 4;
    cfg.sliver_timeout = Duration::from_secs(2);
    let s = Scenario::with(SimConfig::default(), cfg).await;
    let data = blob(100_000, 14);
    let id = s.store(&data).await;
    // Only the node holding row 0 answers: the response starts, then the fill runs out.
    let keep = s.node_for_pair(&id, 0);
    for node in (0..4).filter(|&n| n != keep) {
        s.faults(node, stall()).await;
    }
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.is_err(), "the body must be aborted, not ended");
    s.stop().await;
}
