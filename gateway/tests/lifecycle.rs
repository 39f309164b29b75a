//! A cached blob's lifecycle (issue 17): it is not served past its `endEpoch` unless a re-check
//! shows it was extended, a deletable blob is re-checked every `--revalidate-deletable` and
//! dropped once its owner deleted it, and `Cache-Control` / `X-Walrus-End-Epoch` say so. Epochs
//! come from the simulated chain (walrus-sim's stand-in Sui full node), as on mainnet.

mod harness;

use harness::chain_scene::{fast_policy, ChainScene};
use harness::{blob, config, Scenario};
use http::Method;
use std::time::Duration;
use storage_sim::{BlobLife, SimConfig};

/// walrus-sim with its simulated Sui full node, and a gateway reading the committee (and so
/// the epoch) from that chain.
async fn start() -> ChainScene {
    let sim = SimConfig {
        n_shards: 10,
        nodes: 4,
        tls: true,
        epoch_sync_ms: 100,
        ..SimConfig::default()
    };
    ChainScene::start(sim, config(), fast_policy()).await
}

/// Advance the simulated epoch and wait (boundedly) until the gateway's chain view has it.
async fn advance_epoch(s: &ChainScene) -> u32 {
    let epoch = s.net.advance_epoch().await.expect("epoch advances").epoch;
    s.wait_for_epoch(epoch, "EpochChangeDone").await;
    epoch
}

#[tokio::test]
async fn a_blob_is_not_served_from_the_cache_past_its_end_epoch_unless_extended() {
    let s = start().await;
    let epoch = s.net.chain_view().epoch;
    let day = s.net.chain_view().epoch_duration_ms / 1000;
    let expiring = blob(4_000, 1);
    let expiring_id = s.store(&expiring).await;
    let extended = blob(4_000, 2);
    let extended_id = s.store(&extended).await;
    for id in [expiring_id, extended_id] {
        s.net.set_blob_life(
            id,
            BlobLife {
                end_epoch: Some(epoch + 2),
                ..BlobLife::default()
            },
        );
    }
    for (id, data) in [(expiring_id, &expiring), (extended_id, &extended)] {
        let miss = s.get(&format!("/v1/blobs/{id}")).await;
        assert_eq!(miss.status, 200, "{:?}", miss.body);
        assert_eq!(miss.bytes(), &data[..]);
        assert_eq!(
            miss.header("x-walrus-end-epoch"),
            Some((epoch + 2).to_string().as_str())
        );
        // One whole epoch left after this one: max-age never counts more.
        let cache_control = format!("public, max-age={day}, immutable");
        assert_eq!(miss.header("cache-control"), Some(cache_control.as_str()));
        let hit = s.get(&format!("/v1/blobs/{id}")).await;
        assert_eq!(hit.header("x-cache"), Some("hit-memory"));
        assert_eq!(hit.header("cache-control"), Some(cache_control.as_str()));
        // A revalidation (304) promises no more than the 200 did.
        let etag = format!("\"{id}\"");
        for none_match in [etag.as_str(), "*"] {
            let not_modified = s
                .request(
                    Method::GET,
                    &format!("/v1/blobs/{id}"),
                    &[("if-none-match", none_match)],
                )
                .await;
            assert_eq!(not_modified.status, 304);
            assert_eq!(
                not_modified.header("cache-control"),
                Some(cache_control.as_str())
            );
            assert_eq!(
                not_modified.header("x-walrus-end-epoch"),
                Some((epoch + 2).to_string().as_str())
            );
        }
    }

    // The last epoch of its life: still served from the cache, but not to be kept downstream.
    assert_eq!(advance_epoch(&s).await, epoch + 1);
    let last = s.get(&format!("/v1/blobs/{expiring_id}")).await;
    assert_eq!(last.status, 200);
    assert_eq!(last.header("x-cache"), Some("hit-memory"));
    assert_eq!(last.header("cache-control"), Some("public, no-cache"));

    // Its owner extends one of them; then the end epoch passes.
    s.net.set_blob_life(
        extended_id,
        BlobLife {
            end_epoch: Some(epoch + 10),
            ..BlobLife::default()
        },
    );
    assert_eq!(advance_epoch(&s).await, epoch + 2);
    let gone = s.get(&format!("/v1/blobs/{expiring_id}")).await;
    assert_eq!(gone.status, 404, "{:?}", gone.body);
    assert_eq!(gone.reason(), "BLOB_NOT_FOUND");
    // Dropped, and not served again.
    let again = s.get(&format!("/v1/blobs/{expiring_id}")).await;
    assert_eq!(again.status, 404);
    let still = s.get(&format!("/v1/blobs/{extended_id}")).await;
    assert_eq!(still.status, 200, "{:?}", still.body);
    assert_eq!(still.bytes(), &extended[..]);
    assert_eq!(still.header("x-cache"), Some("hit-memory"));
    assert_eq!(
        still.header("x-walrus-end-epoch"),
        Some((epoch + 10).to_string().as_str())
    );

    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"gateway_lifecycle_dropped_total{reason="expired"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gateway_revalidations_total{reason="end_epoch"} 2"#),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_deleted_deletable_blob_disappears_after_revalidation() {
    let s = Scenario::with(
        SimConfig {
            n_shards: 10,
            nodes: 4,
            ..SimConfig::default()
        },
        gateway::GatewayConfig {
            revalidate_deletable: Duration::from_millis(300),
            ..config()
        },
    )
    .await;
    let data = blob(6_000, 3);
    let id = s.store(&data).await;
    s.net.set_blob_life(
        id,
        BlobLife {
            deletable: true,
            ..BlobLife::default()
        },
    );
    let path = format!("/v1/blobs/{id}");
    assert_eq!(s.get(&path).await.status, 200);
    // Re-checked after the interval, still there: served (and checked again later).
    tokio::time::sleep(Duration::from_millis(350)).await;
    let kept = s.get(&path).await;
    assert_eq!(kept.status, 200);
    assert_eq!(kept.header("x-cache"), Some("hit-memory"));
    assert!(s.net.delete_blob(id), "a deletable blob can be deleted");
    // Within the interval the cache does not know yet.
    assert_eq!(s.get(&path).await.status, 200);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let gone = s.get(&path).await;
    assert_eq!(gone.status, 404, "{:?}", gone.body);
    assert_eq!(gone.reason(), "BLOB_NOT_FOUND");
    assert_eq!(s.get(&path).await.status, 404);
    assert_eq!(
        s.metric(r#"gateway_lifecycle_dropped_total{reason="deleted"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        s.metric(r#"gateway_revalidations_total{reason="deletable"}"#)
            .await,
        Some(2.0)
    );
    // A permanent blob cannot be deleted.
    let permanent = s.store(&blob(100, 4)).await;
    assert!(!s.net.delete_blob(permanent));
    s.stop().await;
}
