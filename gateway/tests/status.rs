//! Blob status at fill time (issue 17): the nodes' verified status decides the answer, as the
//! Walrus aggregator's does (NETWORK.md §7), and nodes refusing a blob with 451 at quorum
//! weight make the gateway refuse it too.

mod harness;

use harness::{blob, config, Scenario};
use storage_sim::{BlobLife, NodeFaults, SimConfig};

/// 10 shards on 4 nodes, round-robin: nodes 0 and 1 hold 3 shards, nodes 2 and 3 hold 2.
/// Validity (f + 1) is 4 shards, quorum (2f + 1) 7.
async fn scenario() -> Scenario {
    Scenario::with(
        SimConfig {
            n_shards: 10,
            nodes: 4,
            ..SimConfig::default()
        },
        config(),
    )
    .await
}

fn forbidden() -> NodeFaults {
    NodeFaults {
        forbidden: true,
        ..NodeFaults::default()
    }
}

#[tokio::test]
async fn nodes_refusing_at_quorum_weight_give_451_and_below_validity_the_blob_is_served() {
    let s = scenario().await;
    let data = blob(20_000, 1);
    let id = s.store(&data).await;
    // One node (3 shards, below validity) refuses: the others serve the blob.
    s.faults(0, forbidden()).await;
    let served = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.bytes(), &data[..]);

    // Three nodes (8 shards, a quorum) refuse another blob: 451 FORBIDDEN_BLOB, not cacheable.
    let other = blob(20_000, 2);
    let other_id = s.store(&other).await;
    for node in [1, 2] {
        s.faults(node, forbidden()).await;
    }
    let refused = s.get(&format!("/v1/blobs/{other_id}")).await;
    assert_eq!(refused.status, 451, "{:?}", refused.body);
    assert_eq!(refused.reason(), "FORBIDDEN_BLOB");
    assert_eq!(refused.header("cache-control"), Some("no-store"));
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("refuse it (451)"));
    // The blob cached before the nodes refused is still served from the cache.
    assert_eq!(s.get(&format!("/v1/blobs/{id}")).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_blob_not_yet_certified_is_503_then_200_once_certified() {
    let s = scenario().await;
    let data = blob(5_000, 3);
    let id = s.store(&data).await;
    s.net.set_blob_life(
        id,
        BlobLife {
            uncertified: true,
            ..BlobLife::default()
        },
    );
    let early = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(early.status, 503, "{:?}", early.body);
    assert_eq!(early.reason(), "BLOB_UNAVAILABLE");
    assert_eq!(early.header("retry-after"), Some("1"));
    assert_eq!(early.header("cache-control"), Some("no-store"));
    assert!(early.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not certified"));
    // Nothing was cached: the next request asks again.
    s.net.certify_blob(id);
    let later = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(later.status, 200, "{:?}", later.body);
    assert_eq!(later.bytes(), &data[..]);
    assert_eq!(later.header("x-cache"), Some("miss"));
    let checks = s
        .metric(r#"gateway_status_checks_total{when="fill",result="unavailable"}"#)
        .await;
    assert_eq!(checks, Some(1.0));
    s.stop().await;
}

#[tokio::test]
async fn statuses_give_the_aggregators_answers_and_headers() {
    let s = scenario().await;
    // Permanent: its end epoch on every answer, from the fill and from the cache.
    let data = blob(3_000, 4);
    let id = s.store(&data).await;
    let end = (s.net.chain_view().epoch + storage_sim::BLOB_LIFETIME_EPOCHS).to_string();
    let miss = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(miss.status, 200);
    assert_eq!(miss.header("x-walrus-end-epoch"), Some(end.as_str()));
    let hit = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(hit.header("x-cache"), Some("hit-memory"));
    assert_eq!(hit.header("x-walrus-end-epoch"), Some(end.as_str()));
    // Without a chain view the epoch's length is unknown: the year-long header stays.
    assert_eq!(
        hit.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );

    // Deletable: a short max-age, no end epoch (Walrus states none for deletable blobs).
    let d = blob(3_000, 5);
    let d_id = s.store(&d).await;
    s.net.set_blob_life(
        d_id,
        BlobLife {
            deletable: true,
            ..BlobLife::default()
        },
    );
    for expect in ["miss", "hit-memory"] {
        let r = s.get(&format!("/v1/blobs/{d_id}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cache"), Some(expect));
        assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
        assert_eq!(r.header("x-walrus-end-epoch"), None);
    }

    // Expired on the chain before it was ever read (its nodes still hold the bytes): 404,
    // remembered briefly and marked so.
    let e = blob(3_000, 6);
    let e_id = s.store(&e).await;
    s.net.set_blob_life(
        e_id,
        BlobLife {
            end_epoch: Some(s.net.chain_view().epoch),
            ..BlobLife::default()
        },
    );
    let gone = s.get(&format!("/v1/blobs/{e_id}")).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.reason(), "BLOB_NOT_FOUND");
    assert_eq!(gone.header("cache-control"), Some("public, max-age=5"));
    s.stop().await;
}

#[tokio::test]
async fn a_status_below_validity_weight_is_not_believed() {
    let s = scenario().await;
    let data = blob(3_000, 7);
    let id = s.store(&data).await;
    // Node 0 (3 shards, below validity) says "nonexistent" and 404s everything: the status
    // the other nodes state (permanent, certified) is the verified one, and the blob is read.
    s.faults(
        0,
        NodeFaults {
            lie_not_found: true,
            ..NodeFaults::default()
        },
    )
    .await;
    let r = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.bytes(), &data[..]);
    assert!(r.header("x-walrus-end-epoch").is_some());
    s.stop().await;
}
