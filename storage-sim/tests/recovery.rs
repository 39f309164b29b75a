//! `GET /v1/blobs/{id}/recoverySymbols` on the vectors network (n = 10, 4 nodes), read as a
//! client would: every symbol verifies against the metadata, `kp` of them rebuild the column
//! the vectors hold, and errors and faults answer as the real node does.

mod common;

use bytes::Bytes;
use codec::recovery::{self, RecoverySymbol};
use codec::{bcs, SliverKind, VerifiedMetadata};
use common::*;
use storage_sim::{NodeFaults, SimNetwork};

fn url(net: &SimNetwork, node: usize) -> String {
    net.committee().nodes[node].url.clone()
}

fn metadata(v: &Vectors) -> VerifiedMetadata {
    let (id, meta) = bcs::decode_metadata_with_id(&v.metadata_with_id()).unwrap();
    VerifiedMetadata::verify(id, meta, codec::EncodingConfig::new(10).unwrap()).unwrap()
}

async fn symbols(net: &SimNetwork, node: usize, v: &Vectors, query: &str) -> Vec<RecoverySymbol> {
    let reply = get(
        &url(net, node),
        &format!("/v1/blobs/{}/recoverySymbols?{query}", v.blob_id()),
    )
    .await;
    assert_eq!(
        reply.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.headers.get(http::header::CONTENT_TYPE).unwrap(),
        "application/octet-stream"
    );
    recovery::decode_symbols(&reply.body, 10).unwrap()
}

/// The secondary sliver `column` from the vectors (walrus-core's own encoding).
fn column(v: &Vectors, column: u16) -> codec::Sliver {
    let pair = SliverKind::Secondary.pair_index(column, 10);
    bcs::decode_sliver(
        &Bytes::from(v.sliver_bcs(pair, "secondary")),
        SliverKind::Secondary,
    )
    .unwrap()
}

#[tokio::test]
async fn every_node_serves_one_proved_symbol_per_shard_and_kp_rebuild_the_column() {
    let (net, v) = network_with_vectors().await;
    let meta = metadata(&v);
    let blob_id: codec::BlobId = v.blob_id().parse().unwrap();
    let target = column(&v, 3);
    let ss = usize::from(meta.symbol_size());
    let mut all = Vec::new();
    for node in 0..net.committee().nodes.len() {
        let got = symbols(&net, node, &v, "targetSliver=3&targetType=secondary").await;
        let shards = &net.committee().nodes[node].shards;
        assert_eq!(
            got.len(),
            shards.len(),
            "one symbol per shard of node {node}"
        );
        for (symbol, &shard) in got.iter().zip(shards) {
            // From the primary sliver of the shard's pair, in the node's shard order.
            let pair = (0..10)
                .find(|&p| blob_id.shard_for_pair(p, 10) == shard)
                .unwrap();
            assert_eq!(symbol.target_kind, SliverKind::Secondary);
            assert_eq!(symbol.id(), (pair, 3));
            // Symbol (p, 3) is row p of column 3: the vectors' bytes for the systematic rows.
            if usize::from(pair) < usize::from(meta.config().n_primary_source_symbols()) {
                let p = usize::from(pair);
                assert_eq!(&symbol.data[..], &target.data[p * ss..(p + 1) * ss]);
            }
            all.push(
                recovery::verify_symbol(&meta, symbol.clone(), SliverKind::Secondary, 3).unwrap(),
            );
        }
    }
    assert_eq!(all.len(), 10);
    // The last kp symbols (mostly recovery rows) rebuild the column.
    let kp = usize::from(meta.config().n_primary_source_symbols());
    all.sort_by_key(|s| std::cmp::Reverse(s.source_index));
    let rebuilt = recovery::rebuild_sliver(&meta, SliverKind::Secondary, 3, &all[..kp]).unwrap();
    assert_eq!(rebuilt.data, target.data);

    // By ID: from the primary sliver when the node holds it, else from the secondary sliver.
    let owner_of_pair0 = net.committee().node_for_shard(v.shard(0)).unwrap();
    let got = symbols(&net, owner_of_pair0, &v, "id=0-3&id=0-3").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target_kind, SliverKind::Secondary);
    // Secondary sliver 9 sits in pair 0: the node answers (5, 9) from it, for primary sliver 5.
    let got = symbols(&net, owner_of_pair0, &v, "id=5-9").await;
    let owns_pair5 = net.committee().nodes[owner_of_pair0]
        .shards
        .contains(&v.shard(5));
    assert_eq!(got[0].id(), (5, 9));
    let kind = if owns_pair5 {
        SliverKind::Secondary
    } else {
        SliverKind::Primary
    };
    assert_eq!(got[0].target_kind, kind);
    let index = if owns_pair5 { 9 } else { 5 };
    recovery::verify_symbol(&meta, got[0].clone(), kind, index).unwrap();
    // proofAxis=secondary forces the secondary source.
    let got = symbols(&net, owner_of_pair0, &v, "proofAxis=secondary&id=5-9").await;
    assert_eq!(got[0].target_kind, SliverKind::Primary);
    recovery::verify_symbol(&meta, got[0].clone(), SliverKind::Primary, 5).unwrap();

    let counted: u64 = (0..4).map(|n| net.counters(n).recovery_symbol_gets).sum();
    assert_eq!(counted, 7);
    net.shutdown().await;
}

#[tokio::test]
async fn errors_and_faults_answer_as_the_real_node() {
    let (net, v) = network_with_vectors().await;
    let meta = metadata(&v);
    let base = url(&net, 0);
    let path = |q: &str| format!("/v1/blobs/{}/recoverySymbols{q}", v.blob_id());
    get(&base, &path("?targetSliver=10&targetType=secondary"))
        .await
        .assert_error(400, "INVALID_ARGUMENT", "INDEX_OUT_OF_RANGE");
    get(&base, &path(""))
        .await
        .assert_error(400, "INVALID_ARGUMENT", "INVALID_QUERY");
    get(&base, &path("?targetSliver=1&targetType=sideways"))
        .await
        .assert_error(400, "INVALID_ARGUMENT", "INVALID_QUERY");
    let many: Vec<String> = (0..11).map(|i| format!("id={i}-0")).collect();
    get(&base, &path(&format!("?{}", many.join("&"))))
        .await
        .assert_error(400, "INVALID_ARGUMENT", "INVALID_FILTER");
    // A symbol whose two slivers both sit on other nodes.
    let shards = &net.committee().nodes[0].shards;
    let foreign = (0..10u16)
        .find(|&p| !shards.contains(&v.shard(p)) && !shards.contains(&v.shard(9 - p)))
        .unwrap();
    get(&base, &path(&format!("?id={foreign}-{foreign}")))
        .await
        .assert_error(400, "FAILED_PRECONDITION", "SYMBOL_NOT_PRESENT_AT_SHARDS");
    let unknown = codec::BlobId([9u8; 32]);
    get(
        &base,
        &format!("/v1/blobs/{unknown}/recoverySymbols?targetSliver=1&targetType=secondary"),
    )
    .await
    .assert_error(404, "NOT_FOUND", "SLIVER_NOT_FOUND");

    let q = "?targetSliver=2&targetType=secondary";
    for (faults, code, status, reason) in [
        (
            NodeFaults {
                forbidden: true,
                ..Default::default()
            },
            451,
            "UNAVAILABLE_FOR_LEGAL_REASONS",
            "FORBIDDEN_BLOB",
        ),
        (
            NodeFaults {
                lie_not_found: true,
                ..Default::default()
            },
            404,
            "NOT_FOUND",
            "SLIVER_NOT_FOUND",
        ),
    ] {
        net.apply_faults(0, faults).await.unwrap();
        get(&base, &path(q))
            .await
            .assert_error(code, status, reason);
    }
    // Corrupt symbols: valid BCS with their real proofs, none verifies.
    net.apply_faults(
        0,
        NodeFaults {
            corrupt_recovery_symbols: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let got = symbols(&net, 0, &v, &q[1..]).await;
    assert_eq!(got.len(), shards.len());
    for symbol in got {
        assert!(matches!(
            recovery::verify_symbol(&meta, symbol, SliverKind::Secondary, 2),
            Err(recovery::RecoveryError::ProofMismatch { .. })
        ));
    }
    net.shutdown().await;
}
