//! A full-size committee on one machine: 1000 shards over 100 nodes, read back through HTTP and
//! decoded from non-systematic slivers.

mod common;

use codec::{bcs, ConsistencyCheck, SliverKind, VerifiedMetadata};
use common::*;
use storage_sim::{SimConfig, SimNetwork};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_shards_on_a_hundred_nodes() {
    let net = SimNetwork::start(SimConfig {
        n_shards: 1000,
        nodes: 100,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let c = net.committee().clone();
    assert!(c.nodes.iter().all(|n| n.shards.len() == 10));
    let blob: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let id = net.store(&blob).unwrap();
    let id_text = id.to_string();

    let reply = get(&c.nodes[57].url, &metadata_path(&id_text)).await;
    assert_eq!(reply.body.len(), 66_044);
    let (claimed, meta) = bcs::decode_metadata_with_id(&reply.body).unwrap();
    let meta = VerifiedMetadata::verify(claimed, meta, *net.config()).unwrap();
    assert_eq!(meta.blob_id(), id);

    // kp = 334 primary slivers, all from the non-systematic end: decoding needs Reed-Solomon.
    let mut slivers = Vec::new();
    for pair in (1000 - 334)..1000u16 {
        let owner = c.node_for_shard(id.shard_for_pair(pair, 1000)).unwrap();
        let reply = get(&c.nodes[owner].url, &sliver_path(&id_text, pair, "primary")).await;
        assert_eq!(reply.status, 200, "pair {pair}");
        let sliver = bcs::decode_sliver(&reply.body, SliverKind::Primary).unwrap();
        slivers.push(meta.verify_sliver(sliver).unwrap());
    }
    let decoded = codec::decode(&meta, slivers, ConsistencyCheck::Default).unwrap();
    assert_eq!(decoded.to_vec(), blob);
    assert_eq!(net.total_counters().primary_sliver_gets, 334);
    net.shutdown().await;
}
