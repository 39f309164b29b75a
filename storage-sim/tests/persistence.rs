//! `--data-dir`: a restarted network serves what it stored, and never what fails verification.

mod common;

use std::path::{Path, PathBuf};

use codec::{bcs, SliverKind};
use common::*;
use storage_sim::{SimConfig, SimError, SimNetwork};

fn config(dir: &Path) -> SimConfig {
    SimConfig {
        data_dir: Some(dir.to_owned()),
        ..SimConfig::default()
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Upload `blob` through the HTTP API: metadata to every node, each sliver to its owner.
async fn upload(net: &SimNetwork, blob: &[u8]) -> String {
    let encoded = codec::encode(net.config(), blob).unwrap();
    let id = encoded.metadata.blob_id();
    let body = bcs::encode_metadata(encoded.metadata.metadata());
    for node in &net.committee().nodes {
        assert_eq!(
            put(&node.url, &metadata_path(&id.to_string()), body.clone())
                .await
                .status,
            201
        );
    }
    let n = net.config().n_shards();
    for pair in 0..n {
        let owner = net
            .committee()
            .node_for_shard(id.shard_for_pair(pair, n))
            .unwrap();
        let (primary, secondary) = encoded.pair(pair).unwrap();
        for (kind, sliver) in [("primary", primary), ("secondary", secondary)] {
            let reply = put(
                &net.committee().nodes[owner].url,
                &sliver_path(&id.to_string(), pair, kind),
                bcs::encode_sliver(sliver),
            )
            .await;
            assert_eq!(reply.status, 200);
        }
    }
    id.to_string()
}

/// Every byte of `blob` as served by the network: metadata from all nodes, slivers from owners.
async fn served(net: &SimNetwork, id: &str) -> Vec<(u16, String, Vec<u8>)> {
    let mut out = Vec::new();
    let parsed: codec::BlobId = id.parse().unwrap();
    for node in &net.committee().nodes {
        let reply = get(&node.url, &metadata_path(id)).await;
        out.push((u16::MAX, node.name.clone(), reply.body.to_vec()));
    }
    let n = net.config().n_shards();
    for pair in 0..n {
        let owner = net
            .committee()
            .node_for_shard(parsed.shard_for_pair(pair, n))
            .unwrap();
        for kind in ["primary", "secondary"] {
            let reply = get(
                &net.committee().nodes[owner].url,
                &sliver_path(id, pair, kind),
            )
            .await;
            out.push((pair, kind.to_owned(), reply.body.to_vec()));
        }
    }
    out
}

#[tokio::test]
async fn a_restarted_network_serves_what_it_stored() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vectors::load();
    let other_blob: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();

    let net = SimNetwork::start(config(dir.path())).await.unwrap();
    net.store(&v.blob()).unwrap();
    let uploaded = upload(&net, &other_blob).await;
    let before_vectors = served(&net, &v.blob_id()).await;
    let before_uploaded = served(&net, &uploaded).await;
    net.shutdown().await;

    // No temporary files are left behind.
    let files = files_under(dir.path());
    assert!(files.iter().all(|f| !f
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(".tmp-")));
    // Metadata and its certified epoch on 4 nodes + 20 slivers, for 2 blobs, plus the
    // manifest and the 4 nodes' network keys.
    assert_eq!(files.len(), 2 * (4 * 2 + 20) + 1 + 4);

    let net = SimNetwork::start(config(dir.path())).await.unwrap();
    assert_eq!(net.blob_count(0), 2);
    assert_eq!(served(&net, &v.blob_id()).await, before_vectors);
    assert_eq!(served(&net, &uploaded).await, before_uploaded);
    // What is served is still exactly the real system's bytes.
    let (owner, _) = owner_and_other(&net, &v, 3);
    assert_eq!(
        get(&owner, &sliver_path(&v.blob_id(), 3, "secondary"))
            .await
            .body
            .as_ref(),
        v.sliver_bcs(3, "secondary").as_slice()
    );
    net.shutdown().await;
}

#[tokio::test]
async fn damaged_files_are_skipped_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vectors::load();
    let id = v.blob_id();
    let net = SimNetwork::start(config(dir.path())).await.unwrap();
    net.store(&v.blob()).unwrap();
    let owner = net.committee().node_for_shard(v.shard(0)).unwrap();
    let owner_name = net.committee().nodes[owner].name.clone();
    net.shutdown().await;

    let blob_dir = dir.path().join(&owner_name).join(&id);
    // Flip one data byte of pair 0's primary sliver: it no longer verifies.
    let sliver_file = blob_dir.join("0.primary.bcs");
    let mut bytes = std::fs::read(&sliver_file).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&sliver_file, &bytes).unwrap();
    assert!(bcs::decode_sliver(&bytes.into(), SliverKind::Primary).is_ok());
    // A leftover of an interrupted write, and a sliver file renamed to the wrong pair.
    std::fs::write(blob_dir.join(".tmp-1-2-9.primary.bcs"), b"partial").unwrap();
    std::fs::rename(
        blob_dir.join("0.secondary.bcs"),
        blob_dir.join("1.secondary.bcs"),
    )
    .ok();
    // Another node's metadata file is garbage: that node forgets the blob.
    let other_name = format!("node-{}", (owner + 1) % 4);
    std::fs::write(
        dir.path().join(&other_name).join(&id).join("metadata.bcs"),
        b"junk",
    )
    .unwrap();

    let net = SimNetwork::start(config(dir.path())).await.unwrap();
    let (owner_url, _) = owner_and_other(&net, &v, 0);
    get(&owner_url, &sliver_path(&id, 0, "primary"))
        .await
        .assert_error(404, "NOT_FOUND", "SLIVER_NOT_FOUND");
    get(&owner_url, &sliver_path(&id, 0, "secondary"))
        .await
        .assert_error(404, "NOT_FOUND", "SLIVER_NOT_FOUND");
    assert!(!blob_dir.join(".tmp-1-2-9.primary.bcs").exists());
    let committee = net.committee();
    let other = committee
        .nodes
        .iter()
        .find(|n| n.name == other_name)
        .unwrap();
    get(&other.url, &metadata_path(&id))
        .await
        .assert_error(404, "NOT_FOUND", "METADATA_NOT_FOUND");
    // Everything intact is still served.
    assert_eq!(
        get(&owner_url, &metadata_path(&id)).await.body.as_ref(),
        v.metadata_with_id().as_slice()
    );
    net.shutdown().await;
}

#[tokio::test]
async fn a_data_dir_for_another_shard_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    SimNetwork::start(config(dir.path()))
        .await
        .unwrap()
        .shutdown()
        .await;
    let err = SimNetwork::start(SimConfig {
        n_shards: 7,
        ..config(dir.path())
    })
    .await
    .unwrap_err();
    assert!(matches!(err, SimError::DataDir(_)), "{err}");
}

#[tokio::test]
async fn keys_epoch_and_certified_epochs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vectors::load();
    let net = SimNetwork::start(SimConfig {
        tls: true,
        epoch_sync_ms: 50,
        ..config(dir.path())
    })
    .await
    .unwrap();
    net.store(&v.blob()).unwrap();
    net.advance_epoch().await.unwrap();
    let later: Vec<u8> = (0..4000u32).map(|i| (i * 13 % 256) as u8).collect();
    let later = net.store(&later).unwrap();
    let before = net.chain_view();
    let keys_before: Vec<_> = net
        .committee()
        .nodes
        .iter()
        .map(|n| n.network_public_key.clone().unwrap())
        .collect();
    net.shutdown().await;

    for node in &before.nodes {
        let key = dir.path().join("keys").join(format!("{}.pem", node.name));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{}: {mode:o}", key.display());
    }

    // Restarted (in plain HTTP, so the test can read it with its plain client): same keys,
    // same node IDs, the same epoch and committee, the same certified epochs.
    let net = SimNetwork::start(config(dir.path())).await.unwrap();
    let after = net.chain_view();
    assert_eq!(after.epoch, 2);
    assert!(matches!(after.state, chain::EpochState::ChangeDone { .. }));
    assert_eq!(after.current, before.current);
    assert_eq!(after.previous, after.current);
    assert_eq!(after.first_epoch_start_ms, before.first_epoch_start_ms);
    for (i, (a, b)) in after.nodes.iter().zip(&before.nodes).enumerate() {
        assert_eq!(a.node_id, b.node_id);
        assert_eq!(a.network_public_key, b.network_public_key);
        assert_eq!(hex::encode(a.network_public_key), keys_before[i]);
        assert_eq!(a.bls_public_key, b.bls_public_key);
    }
    let committee = net.committee();
    for (id, epoch) in [(v.blob_id(), 1), (later.to_string(), 2)] {
        for node in &committee.nodes {
            let status = get(&node.url, &format!("/v1/blobs/{id}/status"))
                .await
                .success_data(200);
            assert_eq!(status["permanent"]["initialCertifiedEpoch"], epoch, "{id}");
        }
        // Every sliver from its epoch-2 owner.
        assert_owners_serve(&committee, &id, "primary").await;
    }
    net.shutdown().await;
}
