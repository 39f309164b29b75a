//! The negative cache (issue 19): a Blob ID that nodes holding `2f+1` shards say does not exist
//! is answered 404 from memory for `--negative-ttl`, so a hundred GETs cost the nodes one round
//! of metadata requests and no sliver requests; once the TTL has passed, a blob certified under
//! that ID meanwhile is served. Request counts come from the simulator's counters.

mod harness;

use harness::{blob, config, Scenario};
use http::{Method, StatusCode};
use std::time::Duration;
use storage_sim::SimConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_gets_of_a_missing_blob_cost_one_round_then_the_blob_is_served() {
    let mut cfg = config();
    cfg.negative_cache_ttl = Duration::from_secs(3);
    let s = Scenario::with(SimConfig::default(), cfg).await;
    let data = blob(5_000, 51);
    let id = codec::blob_id(10, &data).unwrap();
    let path = format!("/v1/blobs/{id}");
    s.net.reset_counters();
    // Fifty at once (one shared lookup), then fifty one after another (remembered).
    let concurrent: Vec<_> = (0..50)
        .map(|_| {
            let (client, addr, path) = (s.h2_client(), s.addr, path.clone());
            tokio::spawn(async move { harness::send(&client, addr, Method::GET, &path, &[]).await })
        })
        .collect();
    for request in concurrent {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.reason(), "BLOB_NOT_FOUND");
    }
    for _ in 0..50 {
        assert_eq!(s.get(&path).await.status, StatusCode::NOT_FOUND);
    }
    let counters = s.counters();
    // One round: "not found" needs nodes holding 7 of the 10 shards, at most all 4 nodes once.
    assert!(
        (1..=4).contains(&counters.metadata_gets),
        "{counters:?}: one round of metadata requests for 100 GETs"
    );
    assert_eq!(
        counters.primary_sliver_gets + counters.secondary_sliver_gets,
        0,
        "{counters:?}"
    );
    // Certified behind the gateway's back: still a 404 within the TTL, no node asked.
    assert_eq!(s.store(&data).await, id);
    assert_eq!(s.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(s.counters().metadata_gets, counters.metadata_gets);
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let reply = s.get(&path).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    s.stop().await;
}

#[test]
fn the_negative_ttl_defaults_to_30s_and_takes_a_duration() {
    assert_eq!(
        gateway::GatewayConfig::default().negative_cache_ttl,
        Duration::from_secs(30)
    );
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
        .args(["serve", "--help"])
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--negative-ttl"), "{help}");
    assert!(help.contains("[default: 30s]"), "{help}");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
        .args(["serve", "--negative-ttl", "30 parsecs"])
        .output()
        .expect("the binary runs");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("is not a duration"), "{stderr}");
}
