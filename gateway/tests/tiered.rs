//! The tiered cache (issue 5): memory over a disk tier that survives restarts, never serves a
//! corrupted byte, stays within its bound, keeps pinned blobs, and an admin API behind a token.

mod harness;

use gateway::GatewayConfig;
use harness::{blob, blob_file, config, Scenario};
use http::{Method, StatusCode};
use std::path::Path;
use storage_sim::{NodeFaults, SimConfig};

const TOKEN: &str = "test-admin-token";

fn tiered(dir: &Path) -> GatewayConfig {
    GatewayConfig {
        cache_dir: Some(dir.to_path_buf()),
        admin_token: Some(TOKEN.into()),
        ..config()
    }
}

async fn all_nodes(s: &Scenario, offline: bool) {
    for node in 0..s.net.committee().nodes.len() {
        s.faults(
            node,
            NodeFaults {
                offline,
                ..NodeFaults::default()
            },
        )
        .await;
    }
}

/// Wait (boundedly) until the write-through to disk has landed.
async fn wait_for_file(path: &Path) {
    for _ in 0..500 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_with_every_node_down_from_memory_then_from_disk_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::with(
        SimConfig {
            n_shards: 10,
            nodes: 4,
            ..SimConfig::default()
        },
        tiered(dir.path()),
    )
    .await;
    let small = blob(50_000, 1);
    // Larger than the memory tier's per-object limit: lives on disk only, streams from there.
    let large = blob(1_500_000, 2);
    let small_id = s.store(&small).await;
    let large_id = s.store(&large).await;
    for (id, data) in [(&small_id, &small), (&large_id, &large)] {
        let cold = s.get(&format!("/v1/blobs/{id}")).await;
        assert_eq!(cold.header("x-cache"), Some("miss"));
        assert_eq!(cold.bytes().as_ref(), &data[..]);
        wait_for_file(&blob_file(dir.path(), id)).await;
    }
    all_nodes(&s, true).await;
    let warm = s.get(&format!("/v1/blobs/{small_id}")).await;
    assert_eq!(warm.header("x-cache"), Some("hit-memory"));
    assert_eq!(warm.bytes().as_ref(), &small[..]);

    s.restart_gateway(GatewayConfig {
        memory_max_object: 1 << 20,
        ..tiered(dir.path())
    })
    .await;
    harness::wait_disk_indexed(&s, TOKEN).await;
    for (id, data) in [(&small_id, &small), (&large_id, &large)] {
        let reply = s.get(&format!("/v1/blobs/{id}")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-cache"), Some("hit-disk"), "{id}");
        assert_eq!(reply.bytes().as_ref(), &data[..]);
    }
    // The small one was promoted to memory; the large one keeps streaming from disk, Range too.
    assert_eq!(
        s.get(&format!("/v1/blobs/{small_id}"))
            .await
            .header("x-cache"),
        Some("hit-memory")
    );
    let range = s
        .request(
            Method::GET,
            &format!("/v1/blobs/{large_id}"),
            &[("range", "bytes=1048570-1048590")],
        )
        .await;
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.header("x-cache"), Some("hit-disk"));
    assert_eq!(range.bytes().as_ref(), &large[1_048_570..=1_048_590]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_on_disk_is_never_served_then_refilled_or_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::with(SimConfig::default(), tiered(dir.path())).await;
    let data = blob(200_000, 3);
    let id = s.store(&data).await;
    assert_eq!(
        s.get(&format!("/v1/blobs/{id}")).await.bytes().as_ref(),
        &data[..]
    );
    let path = blob_file(dir.path(), &id);
    wait_for_file(&path).await;
    s.stop_gateway().await;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[128 + 1000] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    // Nodes down: the bad copy is refused and quarantined; the answer is a clean 503.
    all_nodes(&s, true).await;
    s.restart_gateway(tiered(dir.path())).await;
    harness::wait_disk_indexed(&s, TOKEN).await;
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.reason(), "BLOB_UNAVAILABLE");
    assert!(!path.exists(), "corrupt file still in place");
    assert_eq!(
        std::fs::read_dir(dir.path().join("quarantine"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(
        s.metric("gateway_disk_cache_integrity_failures_total")
            .await,
        Some(1.0)
    );

    // Nodes back: refilled, correct, and on disk again.
    all_nodes(&s, false).await;
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.header("x-cache"), Some("miss"));
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    wait_for_file(&path).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_bound_holds_and_pinned_blobs_survive_it() {
    let dir = tempfile::tempdir().unwrap();
    let blob_len = 100_000u64;
    let file_size = 128 + blob_len + 4; // format 2: one 4-byte CRC32C
    let config = GatewayConfig {
        disk_cache_bytes: file_size * 4,
        // Keep the memory tier out of the way so every read below reaches the nodes or disk.
        memory_cache_bytes: 0,
        ..tiered(dir.path())
    };
    let s = Scenario::with(SimConfig::default(), config).await;
    let auth = format!("Bearer {TOKEN}");
    let pinned = blob(blob_len as usize, 100);
    let pinned_id = s.store(&pinned).await;
    let pin = s
        .request(
            Method::PUT,
            &format!("/admin/pins/{pinned_id}"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(pin.status, StatusCode::OK, "{:?}", pin.body);
    wait_for_file(&blob_file(dir.path(), &pinned_id)).await;
    for seed in 0..12 {
        let id = s.store(&blob(blob_len as usize, seed)).await;
        assert_eq!(
            s.get(&format!("/v1/blobs/{id}")).await.status,
            StatusCode::OK
        );
        wait_for_file(&blob_file(dir.path(), &id)).await;
        let stats = s
            .request(Method::GET, "/admin/cache", &[("authorization", &auth)])
            .await
            .json();
        assert!(
            stats["disk"]["bytes"].as_u64().unwrap() <= file_size * 4,
            "over the bound: {stats}"
        );
    }
    assert!(
        blob_file(dir.path(), &pinned_id).exists(),
        "pinned blob evicted"
    );
    let stats = s
        .request(Method::GET, "/admin/cache", &[("authorization", &auth)])
        .await
        .json();
    assert_eq!(stats["disk"]["entries"], 4);
    assert_eq!(stats["disk"]["pinned"], 1);
    assert!(
        s.metric("gateway_disk_cache_evictions_total")
            .await
            .unwrap()
            >= 9.0
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_its_token_and_does_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scenario::with(SimConfig::default(), tiered(dir.path())).await;
    let data = blob(10_000, 7);
    let id = s.store(&data).await;
    for (method, path) in [
        (Method::GET, "/admin/cache".to_string()),
        (Method::PUT, format!("/admin/pins/{id}")),
        (Method::DELETE, format!("/admin/cache/{id}")),
    ] {
        let none = s.request(method.clone(), &path, &[]).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(none.reason(), "INVALID_TOKEN");
        let wrong = s
            .request(
                method,
                &path,
                &[("authorization", "Bearer test-admin-tokeX")],
            )
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    }
    let unauthorized = s
        .send_body(
            Method::POST,
            "/admin/prefetch",
            &[],
            br#"{"blob_ids":[]}"#.to_vec(),
        )
        .await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);

    let auth = format!("Bearer {TOKEN}");
    let body = serde_json::json!({ "blob_ids": [id.to_string()] })
        .to_string()
        .into_bytes();
    let prefetch = s
        .send_body(
            Method::POST,
            "/admin/prefetch",
            &[("authorization", &auth)],
            body,
        )
        .await;
    assert_eq!(prefetch.status, StatusCode::ACCEPTED);
    assert!(matches!(
        prefetch.json()["results"][id.to_string()].as_str(),
        Some("filling" | "cached")
    ));
    // The prefetched blob becomes a hit without a client ever reading it cold.
    let mut hit = None;
    for _ in 0..500 {
        let reply = s.get(&format!("/v1/blobs/{id}")).await;
        if reply.header("x-cache") != Some("miss") {
            hit = Some(reply);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        hit.expect("prefetch filled the blob").bytes().as_ref(),
        &data[..]
    );
    let bad = s
        .send_body(
            Method::POST,
            "/admin/prefetch",
            &[("authorization", &auth)],
            br#"{"blob_ids":["nope"]}"#.to_vec(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let purge = s
        .request(
            Method::DELETE,
            &format!("/admin/cache/{id}"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(purge.json()["purged"], true);
    assert_eq!(
        s.get(&format!("/v1/blobs/{id}")).await.header("x-cache"),
        Some("miss")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_there_is_no_admin_api() {
    let s = Scenario::start(10, 4).await;
    let reply = s
        .request(
            Method::GET,
            "/admin/cache",
            &[("authorization", "Bearer anything")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    s.stop().await;
}

/// A `walrus-gateway serve` process on port 0; returns it and its address.
fn spawn_gateway(committee: &Path, cache_dir: &Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
        .args(["serve", "--bind", "127.0.0.1:0", "--committee"])
        .arg(committee)
        .arg("--cache-dir")
        .arg(cache_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("gateway binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .expect("address line")
        .to_owned();
    (child, addr)
}

async fn raw_get(addr: &str, path: &str) -> (StatusCode, Result<bytes::Bytes, String>) {
    use http_body_util::BodyExt;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        client.get(format!("http://{addr}{path}").parse().unwrap()),
    )
    .await
    .expect("answer in time")
    .expect("gateway answers");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_fill_serves_no_partial_blob_after_restart() {
    let work = tempfile::tempdir().unwrap();
    let cache_dir = work.path().join("cache");
    let committee = work.path().join("committee.json");
    let net = storage_sim::SimNetwork::start(SimConfig::default())
        .await
        .unwrap();
    net.committee().save(&committee).unwrap();
    let data = blob(1_500_000, 42);
    let id = {
        let bytes = data.clone();
        let n = &net;
        tokio::task::block_in_place(|| n.store(&bytes)).unwrap()
    };
    // Slow every node down so the fill is still running when the process dies.
    for node in 0..4 {
        net.apply_faults(
            node,
            NodeFaults {
                bandwidth_bytes_per_sec: Some(200_000),
                ..NodeFaults::default()
            },
        )
        .await
        .unwrap();
    }
    let (mut child, addr) = spawn_gateway(&committee, &cache_dir);
    let reader = {
        let (addr, path) = (addr.clone(), format!("/v1/blobs/{id}"));
        tokio::spawn(async move { raw_get(&addr, &path).await })
    };
    // Wait until the fill has started, then kill -9.
    let mut started = false;
    for _ in 0..500 {
        let (_, metrics) = raw_get(&addr, "/metrics").await;
        if String::from_utf8_lossy(&metrics.unwrap()).contains("gateway_fills_started_total 1") {
            started = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(started, "the fill never started");
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = reader.await;

    // Restart with every node offline: nothing of the blob may be served.
    for node in 0..4 {
        net.apply_faults(
            node,
            NodeFaults {
                offline: true,
                ..NodeFaults::default()
            },
        )
        .await
        .unwrap();
    }
    let (mut child, addr) = spawn_gateway(&committee, &cache_dir);
    let (status, _) = raw_get(&addr, &format!("/v1/blobs/{id}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        std::fs::read_dir(cache_dir.join("tmp")).unwrap().count(),
        0,
        "temporary files left behind"
    );
    assert!(!blob_file(&cache_dir, &id).exists());

    // Nodes back: the blob is filled whole and correct.
    for node in 0..4 {
        net.apply_faults(node, NodeFaults::default()).await.unwrap();
    }
    let (status, body) = raw_get(&addr, &format!("/v1/blobs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.unwrap().as_ref(), &data[..]);
    child.kill().unwrap();
    child.wait().unwrap();
    net.shutdown().await;
}
