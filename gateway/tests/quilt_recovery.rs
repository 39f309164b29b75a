//! A cold patch read whose column owner fails (issue 16): the column is rebuilt from other
//! nodes' recovery symbols, so the read still fetches only the index and patch columns (plus
//! the recovery its faults require) and never the whole quilt; when recovery fails too, the
//! read falls back to a whole-quilt fill. Counts come from the gateway's metrics and the
//! simulated nodes' request counters.

mod harness;

use codec::quilt::{encode_quilt, PatchInput, QuiltPatchId};
use codec::{BlobId, EncodingConfig, SliverKind};
use harness::{blob, config, Scenario};
use http::StatusCode;
use std::collections::BTreeMap;
use storage_sim::NodeFaults;

/// `count` patches `p00`, `p01`, ... of 1500 bytes (patch 30: 200 kB, several columns), stored
/// as one quilt on the nodes directly; the quilt's ID and each patch's bytes and ID.
async fn stored_quilt(s: &Scenario, count: usize) -> (BlobId, Vec<(Vec<u8>, QuiltPatchId)>) {
    let files: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| {
            let len = if i == 30 { 200_000 } else { 1500 };
            (format!("p{i:02}"), blob(len, 500 + i as u64))
        })
        .collect();
    let inputs: Vec<PatchInput<'_>> = files
        .iter()
        .map(|(name, data)| PatchInput {
            identifier: name.clone(),
            tags: BTreeMap::new(),
            data,
        })
        .collect();
    let quilt = encode_quilt(&EncodingConfig::new(100).unwrap(), &inputs).unwrap();
    let quilt_id = s.store(&quilt.data).await;
    let ids = quilt.patch_ids(quilt_id);
    let out = files
        .into_iter()
        .map(|(name, data)| {
            let id = ids.iter().find(|(n, _)| *n == name).unwrap().1;
            (data, id)
        })
        .collect();
    (quilt_id, out)
}

async fn count(s: &Scenario, series: &str) -> u64 {
    s.metric(series).await.unwrap_or(0.0) as u64
}

/// Columns among the index columns (`0..index_columns`) and `id`'s own whose secondary sliver
/// `node` holds.
fn columns_on(
    s: &Scenario,
    quilt_id: &BlobId,
    index_columns: u16,
    id: &QuiltPatchId,
    node: usize,
) -> u64 {
    (0..index_columns)
        .chain(id.start_index..id.end_index)
        .filter(|&c| s.node_for_pair(quilt_id, SliverKind::Secondary.pair_index(c, 100)) == node)
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_whose_column_owner_is_offline_or_lies_is_rebuilt_from_recovery_symbols() {
    let mut s = Scenario::start(100, 4).await;
    let (quilt_id, patches) = stored_quilt(&s, 60).await;
    let index_columns = u64::from(patches[0].1.start_index);
    for (i, faults) in [
        (
            10usize,
            NodeFaults {
                offline: true,
                ..Default::default()
            },
        ),
        (
            30usize,
            NodeFaults {
                corrupt_slivers: true,
                ..Default::default()
            },
        ),
    ] {
        s.restart_gateway(config()).await;
        let (data, id) = &patches[i];
        let owner = s.node_for_pair(
            &quilt_id,
            SliverKind::Secondary.pair_index(id.start_index, 100),
        );
        s.faults(owner, faults).await;
        let before = s.counters();
        let r = s.get(&format!("/v1/blobs/by-quilt-patch-id/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "patch {i}: {:?}", r.body);
        assert_eq!(r.bytes().as_ref(), &data[..], "patch {i}");
        assert_eq!(r.header("x-cache"), Some("miss"));
        // A cold read, not a whole-quilt fill: no primary sliver asked for.
        assert_eq!(
            count(&s, "gateway_quilt_patch_reads_total{source=\"cold\"}").await,
            1
        );
        assert_eq!(
            count(&s, "gateway_sliver_requests_total{kind=\"primary\"}").await,
            0
        );
        let own = u64::from(id.end_index - id.start_index);
        assert_eq!(
            count(&s, "gateway_sliver_requests_total{kind=\"secondary\"}").await,
            index_columns + own,
            "patch {i}: every column asked of its owner once"
        );
        // Each column the faulty node holds is rebuilt, from exactly two other nodes (25 shards
        // each cover kp = 34 symbols), and nothing else is.
        let faulty = columns_on(&s, &quilt_id, index_columns as u16, id, owner);
        assert!(faulty >= 1);
        assert_eq!(
            count(&s, "gateway_sliver_recoveries_total{outcome=\"recovered\"}").await,
            faulty,
            "patch {i}"
        );
        assert_eq!(
            count(&s, "gateway_sliver_recoveries_total{outcome=\"failed\"}").await,
            0
        );
        assert_eq!(
            count(&s, "gateway_recovery_symbol_requests_total").await,
            2 * faulty,
            "patch {i}"
        );
        assert_eq!(
            count(&s, "gateway_recovery_symbols_rejected_total").await,
            0
        );
        let after = s.counters();
        assert_eq!(
            after.recovery_symbol_gets - before.recovery_symbol_gets,
            2 * faulty,
            "the nodes saw the same requests"
        );
        assert_eq!(after.primary_sliver_gets, before.primary_sliver_gets);
        s.faults(owner, NodeFaults::default()).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_recovery_fails_too_the_patch_comes_from_a_whole_quilt_fill() {
    let mut s = Scenario::start(100, 4).await;
    let (quilt_id, patches) = stored_quilt(&s, 60).await;
    let (data, id) = &patches[12];
    let owner = s.node_for_pair(
        &quilt_id,
        SliverKind::Secondary.pair_index(id.start_index, 100),
    );
    s.faults(
        owner,
        NodeFaults {
            offline: true,
            ..Default::default()
        },
    )
    .await;
    // Two of the three other nodes send corrupt symbols: 25 verified symbols at most, short of
    // kp = 34. Their slivers are fine, so the whole-quilt fill works.
    let liars: Vec<usize> = (0..4).filter(|&n| n != owner).take(2).collect();
    for &liar in &liars {
        s.faults(
            liar,
            NodeFaults {
                corrupt_recovery_symbols: true,
                ..Default::default()
            },
        )
        .await;
    }
    s.restart_gateway(config()).await;
    let r = s.get(&format!("/v1/blobs/by-quilt-patch-id/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.bytes().as_ref(), &data[..]);
    assert_eq!(
        count(&s, "gateway_quilt_patch_reads_total{source=\"cold\"}").await,
        0
    );
    assert_eq!(
        count(&s, "gateway_quilt_patch_reads_total{source=\"miss\"}").await,
        1,
        "served from a whole-quilt fill"
    );
    assert!(count(&s, "gateway_sliver_requests_total{kind=\"primary\"}").await > 0);
    let failed = count(&s, "gateway_sliver_recoveries_total{outcome=\"failed\"}").await;
    assert!(failed >= 1);
    // Each failed column asked every other node once, and every symbol of the liars was
    // refused.
    let requests = count(&s, "gateway_recovery_symbol_requests_total").await;
    assert!(
        requests >= 3 * failed,
        "{requests} requests, {failed} failures"
    );
    let index_columns = patches[0].1.start_index;
    assert!(requests <= 3 * columns_on(&s, &quilt_id, index_columns, id, owner));
    assert!(count(&s, "gateway_recovery_symbols_rejected_total").await >= 50 * failed);
    s.stop().await;
}
