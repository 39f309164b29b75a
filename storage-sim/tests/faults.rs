//! Every fault kind, observed the way a client would observe it. Timing is only ever checked
//! one-sidedly ("not finished yet"), which a slow machine cannot make fail.

mod common;

use std::io::ErrorKind;
use std::time::Duration;

use codec::{bcs, BlobId, CodecError, SliverError, SliverKind, VerifiedMetadata};
use common::*;
use http::Method;
use http_body_util::BodyExt as _;
use serde_json::json;
use storage_sim::{NodeFaults, SimConfig, SimNetwork};

/// The vectors network with `faults` on the node owning pair 0; returns that node's index.
async fn faulty_owner_of_pair0(faults: NodeFaults) -> (SimNetwork, Vectors, usize) {
    let (net, v) = network_with_vectors().await;
    let node = net.committee().node_for_shard(v.shard(0)).unwrap();
    net.apply_faults(node, faults).await.unwrap();
    (net, v, node)
}

fn url(net: &SimNetwork, node: usize) -> String {
    net.committee().nodes[node].url.clone()
}

fn verified_metadata(net: &SimNetwork, v: &Vectors) -> VerifiedMetadata {
    let (id, meta) = bcs::decode_metadata_with_id(&v.metadata_with_id()).unwrap();
    VerifiedMetadata::verify(id, meta, *net.config()).unwrap()
}

async fn fetch_pair0_primary(net: &SimNetwork, v: &Vectors, node: usize) -> codec::Sliver {
    let reply = get(&url(net, node), &sliver_path(&v.blob_id(), 0, "primary")).await;
    assert_eq!(reply.status, 200);
    bcs::decode_sliver(&reply.body, SliverKind::Primary).expect("faulty slivers stay valid BCS")
}

#[tokio::test]
async fn offline_nodes_refuse_connections_and_come_back_on_the_same_port() {
    let (net, v) = network_with_vectors().await;
    let node_url = url(&net, 1);
    net.apply_faults(
        1,
        NodeFaults {
            offline: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = call(Method::GET, &node_url, "/v1/health", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    // The others keep serving, and the offline node keeps its shards.
    assert_eq!(get(&url(&net, 0), "/v1/health").await.status, 200);
    assert_eq!(net.committee().nodes[1].shards, vec![1, 5, 9]);

    net.apply_faults(1, NodeFaults::default()).await.unwrap();
    let reply = get(&node_url, &metadata_path(&v.blob_id())).await;
    assert_eq!(reply.body.as_ref(), v.metadata_with_id().as_slice());
    assert_eq!(net.counters(1).metadata_gets, 1);
    net.shutdown().await;
}

#[tokio::test]
async fn nodes_can_start_offline() {
    let net = SimNetwork::start(SimConfig {
        faults: vec![
            NodeFaults::default(),
            NodeFaults {
                offline: true,
                ..Default::default()
            },
        ],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let err = call(Method::GET, &url(&net, 1), "/v1/health", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(get(&url(&net, 2), "/v1/health").await.status, 200);
    net.apply_faults(1, NodeFaults::default()).await.unwrap();
    assert_eq!(get(&url(&net, 1), "/v1/health").await.status, 200);
    net.shutdown().await;
}

#[tokio::test]
async fn latency_delays_answers() {
    let (net, v, node) = faulty_owner_of_pair0(NodeFaults {
        latency_ms: 60_000,
        ..Default::default()
    })
    .await;
    let base = url(&net, node);
    let path = metadata_path(&v.blob_id());
    let slow = tokio::time::timeout(Duration::from_millis(200), get(&base, &path)).await;
    assert!(slow.is_err(), "answered despite 60 s of latency");
    // The request reached the handler, which is what the counters count.
    assert_eq!(net.counters(node).metadata_gets, 1);

    net.apply_faults(
        node,
        NodeFaults {
            latency_ms: 1,
            jitter_ms: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        get(&base, &path).await.body.as_ref(),
        v.metadata_with_id().as_slice()
    );
    net.shutdown().await;
}

#[tokio::test]
async fn bandwidth_cap_streams_the_body_slowly_but_completely() {
    // 1000 B/s: the 703-byte metadata needs about 0.7 s.
    let (net, v, node) = faulty_owner_of_pair0(NodeFaults {
        bandwidth_bytes_per_sec: Some(1000),
        ..Default::default()
    })
    .await;
    let base = url(&net, node);
    let path = metadata_path(&v.blob_id());
    let mut request = tokio::spawn(async move { get(&base, &path).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(150), &mut request)
            .await
            .is_err(),
        "703 bytes at 1000 B/s arrived within 150 ms"
    );
    let reply = request.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.as_ref(), v.metadata_with_id().as_slice());
    net.shutdown().await;
}

#[tokio::test]
async fn error_rate_injects_500_and_503_envelopes() {
    let (net, v, node) = faulty_owner_of_pair0(NodeFaults {
        error_rate: 1.0,
        ..Default::default()
    })
    .await;
    let base = url(&net, node);
    for _ in 0..5 {
        let reply = get(&base, &metadata_path(&v.blob_id())).await;
        reply.assert_error(503, "UNAVAILABLE", "UNAVAILABLE");
        assert_eq!(reply.json()["error"]["details"][0]["domain"], "global");
    }
    assert_eq!(net.counters(node).metadata_gets, 5);
    // The admin endpoint is never faulted.
    let admin = get(&base, "/sim/faults").await.success_data(200);
    assert_eq!(admin["error_rate"], 1.0);

    net.apply_faults(
        node,
        NodeFaults {
            error_rate: 1.0,
            error_status: Some(500),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    get(&base, &sliver_path(&v.blob_id(), 0, "primary"))
        .await
        .assert_error(500, "INTERNAL", "INTERNAL_ERROR");

    // With a probability, both outcomes show up (each of 200 requests is a fair coin).
    net.apply_faults(
        node,
        NodeFaults {
            error_rate: 0.5,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut statuses = std::collections::BTreeSet::new();
    for _ in 0..200 {
        statuses.insert(get(&base, "/v1/health").await.status.as_u16());
        if statuses.len() == 2 {
            break;
        }
    }
    assert_eq!(statuses.into_iter().collect::<Vec<_>>(), vec![200, 503]);
    net.shutdown().await;
}

#[tokio::test]
async fn stalled_responses_send_headers_then_nothing_until_the_node_dies() {
    let (net, v, node) = faulty_owner_of_pair0(NodeFaults {
        stall: true,
        ..Default::default()
    })
    .await;
    let response = send(
        Method::GET,
        &url(&net, node),
        &metadata_path(&v.blob_id()),
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .unwrap(),
        "703"
    );
    let mut body = response.into_body();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), body.frame())
            .await
            .is_err(),
        "a stalled body sent data"
    );
    // Taking the node offline aborts the stalled response instead of leaving it hanging.
    net.apply_faults(
        node,
        NodeFaults {
            offline: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let end = body.collect().await;
    assert!(end.is_err(), "a stalled body completed: {end:?}");
    net.shutdown().await;
}

#[tokio::test]
async fn truncated_bodies_end_early() {
    let (net, v, node) = faulty_owner_of_pair0(NodeFaults {
        truncate: true,
        ..Default::default()
    })
    .await;
    for path in [
        metadata_path(&v.blob_id()),
        sliver_path(&v.blob_id(), 0, "primary"),
    ] {
        let response = send(Method::GET, &url(&net, node), &path, None)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut received = Vec::new();
        let outcome = loop {
            match body.frame().await {
                Some(Ok(frame)) => received.extend_from_slice(&frame.into_data().unwrap()),
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            }
        };
        assert!(outcome.is_err(), "truncated body ended cleanly");
        assert!(received.len() < 703);
    }
    net.shutdown().await;
}

#[tokio::test]
async fn corrupt_slivers_fail_their_merkle_check() {
    let (net, v, node) = faulty_owner_of_pair0(NodeFaults {
        corrupt_slivers: true,
        ..Default::default()
    })
    .await;
    let sliver = fetch_pair0_primary(&net, &v, node).await;
    assert_eq!((sliver.index, sliver.symbol_size), (0, 36));
    assert_ne!(
        bcs::encode_sliver(&sliver),
        v.sliver_bcs(0, "primary"),
        "bytes were not flipped"
    );
    assert_eq!(
        verified_metadata(&net, &v)
            .verify_sliver(sliver)
            .unwrap_err(),
        CodecError::InvalidSliver(SliverError::MerkleMismatch { pair: 0 })
    );
    // Metadata is not a sliver: served intact.
    let meta = get(&url(&net, node), &metadata_path(&v.blob_id())).await;
    assert_eq!(meta.body.as_ref(), v.metadata_with_id().as_slice());
    net.shutdown().await;
}

#[tokio::test]
async fn wrong_index_and_wrong_symbol_size_are_detectable() {
    let (net, v, node) = faulty_owner_of_pair0(NodeFaults {
        wrong_index: true,
        ..Default::default()
    })
    .await;
    let sliver = fetch_pair0_primary(&net, &v, node).await;
    assert_ne!(
        sliver.index, 0,
        "asked for pair 0's primary sliver (index 0)"
    );
    assert!(verified_metadata(&net, &v).verify_sliver(sliver).is_err());

    net.apply_faults(
        node,
        NodeFaults {
            wrong_symbol_size: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let sliver = fetch_pair0_primary(&net, &v, node).await;
    assert_eq!(sliver.index, 0);
    assert_eq!(
        verified_metadata(&net, &v)
            .verify_sliver(sliver)
            .unwrap_err(),
        CodecError::InvalidSliver(SliverError::WrongSymbolSize {
            expected: 36,
            got: 38
        })
    );
    net.shutdown().await;
}

#[tokio::test]
async fn wrong_metadata_does_not_match_the_requested_blob_id() {
    let (net, v, node) = faulty_owner_of_pair0(NodeFaults {
        wrong_metadata: true,
        ..Default::default()
    })
    .await;
    let reply = get(&url(&net, node), &metadata_path(&v.blob_id())).await;
    assert_eq!(reply.status, 200);
    let (id, meta) = bcs::decode_metadata_with_id(&reply.body).unwrap();
    let requested: BlobId = v.blob_id().parse().unwrap();
    assert_eq!(id, requested, "the forged reply claims the requested ID");
    assert!(matches!(
        VerifiedMetadata::verify(id, meta, *net.config()),
        Err(CodecError::BlobIdMismatch { .. })
    ));
    net.shutdown().await;
}

#[tokio::test]
async fn lying_nodes_deny_what_they_have() {
    let (net, v, node) = faulty_owner_of_pair0(NodeFaults {
        lie_not_found: true,
        ..Default::default()
    })
    .await;
    let base = url(&net, node);
    let id = v.blob_id();
    get(&base, &metadata_path(&id))
        .await
        .assert_error(404, "NOT_FOUND", "METADATA_NOT_FOUND");
    get(&base, &sliver_path(&id, 0, "primary"))
        .await
        .assert_error(404, "NOT_FOUND", "SLIVER_NOT_FOUND");
    for status in [
        format!("/v1/blobs/{id}/status"),
        format!("/v1/blobs/{id}/metadata/status"),
        format!("{}/status", sliver_path(&id, 0, "secondary")),
    ] {
        assert_eq!(get(&base, &status).await.success_data(200), "nonexistent");
    }
    // An honest node still has the metadata.
    let honest = url(&net, (node + 1) % 4);
    assert_eq!(get(&honest, &metadata_path(&id)).await.status, 200);
    net.shutdown().await;
}

#[tokio::test]
async fn admin_endpoint_changes_faults_at_run_time() {
    let (net, v) = network_with_vectors().await;
    let admin = url(&net, 0);
    let target = url(&net, 1);

    let reply = post_json(&admin, "/sim/faults?node=1", &json!({"offline": true})).await;
    assert_eq!(reply.success_data(200)["offline"], true);
    let err = call(Method::GET, &target, "/v1/health", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    let current = get(&admin, "/sim/faults?node=node-1")
        .await
        .success_data(200);
    assert_eq!(current["offline"], true);
    assert!(net.faults(1).unwrap().offline);

    // Revived through another node, on the same URL.
    post_json(&admin, "/sim/faults?node=node-1", &json!({}))
        .await
        .success_data(200);
    assert_eq!(get(&target, &metadata_path(&v.blob_id())).await.status, 200);

    // A node can take itself offline: the answer still arrives.
    let reply = post_json(&target, "/sim/faults", &json!({"offline": true})).await;
    assert_eq!(reply.success_data(200)["offline"], true);
    let err = call(Method::GET, &target, "/v1/health", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);

    // Bad requests.
    post_json(&admin, "/sim/faults", &json!({"ofline": true}))
        .await
        .assert_error(400, "INVALID_ARGUMENT", "INVALID_FAULTS");
    post_json(&admin, "/sim/faults", &json!({"error_rate": 2.0}))
        .await
        .assert_error(400, "INVALID_ARGUMENT", "INVALID_FAULTS");
    post_json(&admin, "/sim/faults?node=99", &json!({}))
        .await
        .assert_error(404, "NOT_FOUND", "NO_SUCH_NODE");
    assert!(net.faults(0).unwrap().is_clean());
    // Admin requests are not counted as API traffic.
    assert_eq!(net.counters(0), storage_sim::NodeCounters::default());
    net.shutdown().await;
}
