//! Live epochs and node moves: an epoch change moves about a third of the shards and hands their
//! slivers over, old owners serve them read only while the change syncs and refuse them after;
//! statuses carry the certified epoch; a moved node's old port refuses connections; the chain
//! view and its control follow all of it.

mod common;

use std::time::Duration;

use chain::EpochState;
use codec::bcs;
use common::*;
use http::Method;
use storage_sim::{ChainView, Committee, EpochChange, NodeFaults, SimConfig, SimError, SimNetwork};

async fn network(epoch_sync_ms: u64) -> (SimNetwork, Vectors) {
    let net = SimNetwork::start(SimConfig {
        epoch_sync_ms,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let v = Vectors::load();
    net.store(&v.blob()).unwrap();
    (net, v)
}

/// Wait (bounded) until the chain view satisfies `done`, woken by its change notifications.
async fn wait_for_view(net: &SimNetwork, done: impl Fn(&ChainView) -> bool) -> ChainView {
    let mut changed = net.chain_control().changed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        changed.borrow_and_update();
        let view = net.chain_view();
        if done(&view) {
            return view;
        }
        tokio::time::timeout_at(deadline, changed.changed())
            .await
            .expect("the chain view did not reach the expected state in time")
            .unwrap();
    }
}

fn done(view: &ChainView) -> bool {
    matches!(view.state, EpochState::ChangeDone { .. })
}

/// (pair, old owner, new owner) for every pair of the vectors' blob whose shard moved.
fn moved_pairs(v: &Vectors, old: &Committee, new: &Committee) -> Vec<(u16, usize, usize)> {
    (0..old.n_shards)
        .filter_map(|pair| {
            let from = old.node_for_shard(v.shard(pair)).unwrap();
            let to = new.node_for_shard(v.shard(pair)).unwrap();
            (from != to).then_some((pair, from, to))
        })
        .collect()
}

fn error_epoch(reply: &Reply) -> u64 {
    reply.json()["error"]["details"][0]["metadata"]["epoch"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn an_epoch_change_hands_the_moved_slivers_over_then_old_owners_stop() {
    let (net, v) = network(200).await;
    let id = v.blob_id();
    let before = net.chain_view();
    assert_eq!(before.epoch, 1);
    assert!(done(&before));
    assert_eq!(before.previous, before.current);
    let old = net.committee();

    let change = net.advance_epoch().await.unwrap();
    assert_eq!(
        change,
        EpochChange {
            epoch: 2,
            moved_shards: 3
        }
    );
    assert_eq!(
        serde_json::to_value(change).unwrap(),
        serde_json::json!({"epoch": 2, "moved_shards": 3})
    );
    let view = net.chain_view();
    assert_eq!(view.epoch, 2);
    assert_eq!(view.previous, before.current);
    let moved_shards = (0..10u16)
        .filter(|s| {
            let owner = |a: &[Vec<u16>]| a.iter().position(|shards| shards.contains(s));
            owner(&view.current) != owner(&view.previous)
        })
        .count();
    assert_eq!(moved_shards, 3);
    assert!(view.current.iter().all(|shards| !shards.is_empty()));

    // The new owners serve every sliver, moved ones included, byte for byte.
    let new = net.committee();
    new.validate().unwrap();
    for pair in 0..10 {
        let owner = &new.nodes[new.node_for_shard(v.shard(pair)).unwrap()].url;
        for kind in ["primary", "secondary"] {
            let reply = get(owner, &sliver_path(&id, pair, kind)).await;
            assert_eq!(reply.status, 200, "pair {pair} {kind}");
            assert_eq!(reply.body.as_ref(), v.sliver_bcs(pair, kind).as_slice());
        }
    }
    let moved = moved_pairs(&v, &old, &new);
    assert!(!moved.is_empty());

    // Once the sync is over, old owners refuse the shards they gave away.
    let view = wait_for_view(&net, done).await;
    assert_eq!(view.epoch, 2);
    for &(pair, from, to) in &moved {
        let reply = get(&new.nodes[from].url, &sliver_path(&id, pair, "primary")).await;
        reply.assert_error(400, "FAILED_PRECONDITION", "SHARD_NOT_ASSIGNED");
        assert_eq!(error_epoch(&reply), 2);
        let reply = get(&new.nodes[to].url, &sliver_path(&id, pair, "primary")).await;
        assert_eq!(
            reply.body.as_ref(),
            v.sliver_bcs(pair, "primary").as_slice()
        );
    }
    for node in &new.nodes {
        let health = get(&node.url, "/v1/health").await.success_data(200);
        assert_eq!(health["epoch"], 2);
        assert_eq!(health["shardSummary"]["readOnly"], 0);
    }
    net.shutdown().await;
}

#[tokio::test]
async fn during_the_sync_old_owners_serve_read_only() {
    // A sync that outlasts the test: the state is EpochChangeSync throughout.
    let (net, v) = network(600_000).await;
    let id = v.blob_id();
    let epoch1 = net.committee();
    net.advance_epoch().await.unwrap();
    let view = net.chain_view();
    assert_eq!(view.state, EpochState::ChangeSync { weight: 0 });
    let epoch2 = net.committee();
    let moved = moved_pairs(&v, &epoch1, &epoch2);
    assert!(!moved.is_empty());
    for &(pair, from, to) in &moved {
        let old_url = &epoch2.nodes[from].url;
        for kind in ["primary", "secondary"] {
            let reply = get(old_url, &sliver_path(&id, pair, kind)).await;
            assert_eq!(reply.status, 200, "old owner, pair {pair} {kind}");
            assert_eq!(reply.body.as_ref(), v.sliver_bcs(pair, kind).as_slice());
        }
        assert_eq!(
            get(
                old_url,
                &format!("{}/status", sliver_path(&id, pair, "primary"))
            )
            .await
            .success_data(200),
            "stored"
        );
        // Read only: writes go to the new owner.
        put(
            old_url,
            &sliver_path(&id, pair, "primary"),
            v.sliver_bcs(pair, "primary"),
        )
        .await
        .assert_error(400, "FAILED_PRECONDITION", "SHARD_NOT_ASSIGNED");
        let reply = put(
            &epoch2.nodes[to].url,
            &sliver_path(&id, pair, "primary"),
            v.sliver_bcs(pair, "primary"),
        )
        .await;
        assert_eq!(reply.status, 200);
    }
    let (_, from, _) = moved[0];
    let given_away = view.previous[from]
        .iter()
        .filter(|s| !view.current[from].contains(s))
        .count();
    let health = get(&epoch2.nodes[from].url, "/v1/health?detailed=true")
        .await
        .success_data(200);
    assert_eq!(health["epoch"], 2);
    assert_eq!(health["shardSummary"]["readOnly"], given_away);
    assert_eq!(
        health["shardDetail"]["other"].as_array().unwrap().len(),
        given_away
    );
    assert_eq!(health["shardDetail"]["other"][0]["status"], "readOnly");

    // A second change while syncing ends the first sync, then advances.
    let change = net.advance_epoch().await.unwrap();
    assert_eq!(change.epoch, 3);
    let view3 = net.chain_view();
    assert_eq!(view3.previous, view.current);
    assert_eq!(view3.state, EpochState::ChangeSync { weight: 0 });
    let epoch3 = net.committee();
    // Shards that moved into epoch 2 and stayed: their epoch-1 owner is now neither current
    // nor previous owner.
    let stale: Vec<(u16, usize)> = moved
        .iter()
        .filter(|&&(pair, _, to)| epoch3.node_for_shard(v.shard(pair)) == Some(to))
        .map(|&(pair, from, _)| (pair, from))
        .collect();
    assert!(!stale.is_empty());
    for (pair, from) in stale {
        let reply = get(&epoch3.nodes[from].url, &sliver_path(&id, pair, "primary")).await;
        reply.assert_error(400, "FAILED_PRECONDITION", "SHARD_NOT_ASSIGNED");
        assert_eq!(error_epoch(&reply), 3);
    }
    net.shutdown().await;
}

/// Every node's raw status body for `id`; they must all be identical.
async fn statuses(net: &SimNetwork, id: &str) -> serde_json::Value {
    let mut bodies = Vec::new();
    for node in &net.committee().nodes {
        bodies.push(get(&node.url, &format!("/v1/blobs/{id}/status")).await);
    }
    for reply in &bodies[1..] {
        assert_eq!(
            reply.body, bodies[0].body,
            "every node answers the same JSON"
        );
    }
    bodies[0].success_data(200)
}

/// Upload through the HTTP API: metadata to every node, slivers to the current owners.
async fn upload(net: &SimNetwork, blob: &[u8]) -> String {
    let encoded = codec::encode(net.config(), blob).unwrap();
    let id = encoded.metadata.blob_id();
    let committee = net.committee();
    let body = bcs::encode_metadata(encoded.metadata.metadata());
    for node in &committee.nodes {
        let reply = put(&node.url, &metadata_path(&id.to_string()), body.clone()).await;
        assert_eq!(reply.status, 201);
    }
    let n = net.config().n_shards();
    for pair in 0..n {
        let owner = committee
            .node_for_shard(id.shard_for_pair(pair, n))
            .unwrap();
        let (primary, secondary) = encoded.pair(pair).unwrap();
        for (kind, sliver) in [("primary", primary), ("secondary", secondary)] {
            let reply = put(
                &committee.nodes[owner].url,
                &sliver_path(&id.to_string(), pair, kind),
                bcs::encode_sliver(sliver),
            )
            .await;
            assert_eq!(reply.status, 200);
        }
    }
    id.to_string()
}

#[tokio::test]
async fn statuses_carry_the_certified_epoch_on_every_node() {
    let (net, v) = network(100).await;
    let first = statuses(&net, &v.blob_id()).await;
    assert_eq!(first["permanent"]["initialCertifiedEpoch"], 1);
    assert_eq!(first["permanent"]["endEpoch"], 1 + 53);

    net.advance_epoch().await.unwrap();
    let stored: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    let stored = net.store(&stored).unwrap().to_string();
    let uploaded: Vec<u8> = (0..2000u32).map(|i| (i * 3 % 256) as u8).collect();
    let uploaded = upload(&net, &uploaded).await;
    // Storing a blob again does not change when it was certified.
    net.store(&v.blob()).unwrap();

    assert_eq!(statuses(&net, &v.blob_id()).await, first);
    for id in [&stored, &uploaded] {
        let status = statuses(&net, id).await;
        assert_eq!(status["permanent"]["initialCertifiedEpoch"], 2);
        assert_eq!(status["permanent"]["endEpoch"], 2 + 53);
    }
    // Blobs of the new epoch are read from the new owners, even after the sync.
    wait_for_view(&net, done).await;
    let committee = net.committee();
    assert_owners_serve(&committee, &uploaded, "secondary").await;
    net.shutdown().await;
}

#[tokio::test]
async fn move_node_changes_the_port_and_the_old_one_refuses() {
    let (net, v) = network(2000).await;
    let mut changed = net.chain_control().changed();
    changed.borrow_and_update();
    let old_address = net.chain_view().nodes[1].address.clone();

    let address = net.move_node("node-1").await.unwrap();
    assert_ne!(address, old_address);
    assert!(address.starts_with("127.0.0.1:"));
    let refused = tokio::net::TcpStream::connect(&old_address)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(changed.has_changed().unwrap());
    assert_eq!(net.chain_view().nodes[1].address, address);
    let url = format!("http://{address}");
    assert_eq!(net.committee().nodes[1].url, url);
    assert_eq!(get(&url, "/v1/health").await.status, 200);
    assert_eq!(
        get(&url, &metadata_path(&v.blob_id())).await.body.as_ref(),
        v.metadata_with_id().as_slice()
    );

    // Through the admin endpoint of another node, by index.
    let reply = call(
        Method::POST,
        &net.committee().nodes[0].url,
        "/sim/move-node?node=2",
        None,
    )
    .await
    .unwrap();
    let moved_to = reply.success_data(200);
    assert_eq!(
        net.committee().nodes[2].url,
        format!("http://{}", moved_to.as_str().unwrap())
    );

    assert!(matches!(
        net.move_node("node-9").await,
        Err(SimError::UnknownNode(_))
    ));

    // An offline node moves too, and comes back on its new port.
    let offline = NodeFaults {
        offline: true,
        ..NodeFaults::default()
    };
    net.apply_faults(3, offline).await.unwrap();
    let address = net.move_node("3").await.unwrap();
    assert!(tokio::net::TcpStream::connect(&address).await.is_err());
    net.apply_faults(3, NodeFaults::default()).await.unwrap();
    assert_eq!(
        get(&format!("http://{address}"), "/v1/health").await.status,
        200
    );
    net.shutdown().await;
}

#[tokio::test]
async fn the_chain_control_reads_and_drives_the_network() {
    let (net, _) = network(50).await;
    let control = net.chain_control();
    let view = control.view();
    assert_eq!(view, net.chain_view());
    assert_eq!(view.n_shards, 10);
    assert_eq!(view.epoch_duration_ms, 86_400_000);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(view.first_epoch_start_ms <= now && now - view.first_epoch_start_ms < 600_000);
    assert_eq!(view.nodes.len(), 4);
    assert_eq!(view.nodes[2].name, "node-2");

    let mut changed = control.changed();
    changed.borrow_and_update();
    assert_eq!(control.advance_epoch().await.unwrap().epoch, 2);
    assert!(changed.has_changed().unwrap());
    let address = control.move_node("node-0").await.unwrap();
    assert_eq!(control.view().nodes[0].address, address);

    // The admin endpoint advances too.
    let reply = call(
        Method::POST,
        &net.committee().nodes[1].url,
        "/sim/advance-epoch",
        None,
    )
    .await
    .unwrap();
    assert_eq!(reply.success_data(200)["epoch"], 3);

    // A timer advances on its own; the chain reports its period.
    net.set_epoch_timer(Some(Duration::from_millis(200)));
    assert_eq!(net.chain_view().epoch_duration_ms, 200);
    let view = wait_for_view(&net, |v| v.epoch >= 5).await;
    assert!(view.epoch >= 5);
    net.set_epoch_timer(None);
    assert_eq!(net.chain_view().epoch_duration_ms, 86_400_000);
    net.shutdown().await;
    // The control outlives the network; changes then fail cleanly.
    assert!(matches!(
        control.advance_epoch().await,
        Err(SimError::ShutDown)
    ));
}
