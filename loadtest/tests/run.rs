//! Real runs, bounded to a few hundred requests, against the real gateway (in front of a
//! simulated committee) and a tiny in-test publisher: every scenario ends with a report whose
//! counts add up, and wrong bytes show up as errors. No assertion depends on timing.

mod harness;

use harness::{test_config, GatewayScene, Origin, N_SHARDS};
use loadtest::config::{Inference, Load, PopulationSpec, Preset};
use loadtest::faults::{FaultPlan, NodeFaults};
use loadtest::parse::size_dist;
use loadtest::workload::Mix;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_run_against_the_gateway_checks_every_response() {
    let scene = GatewayScene::start(&[1, 1000, 50_000, 300_000]).await;
    let mut config = test_config(&scene.url, PopulationSpec::List(scene.list(false)), 300);
    Preset::Hit.apply(&mut config);
    config.load = Load::Closed { concurrency: 4 };
    config.mix = Mix {
        range: 0.2,
        head: 0.1,
        infer: 0.0,
    };
    config.verify_fraction = 0.2;
    let report = loadtest::run(config).await.expect("the run completes");

    assert_eq!(report.requests, 300, "bounded by the request count");
    assert_eq!(report.errors, 0, "{:?}", report.error_examples);
    assert_eq!(report.ok, 300);
    assert_eq!(
        report.warmup_requests,
        4 + 4,
        "size probes and one pre-warming read per blob"
    );
    assert!(report.verification.verified >= 4, "every blob checked once");
    assert_eq!(report.verification.mismatched, 0);
    assert!(report.by_kind["range"].requests > 0);
    assert!(report.by_kind["head"].requests > 0);
    assert_eq!(report.latency_us.count, 300);
    assert!(report.latency_us.p50 <= report.latency_us.p99);
    assert!(report.latency_us.p99 <= report.latency_us.max);
    // Pre-warmed: every measured read is a hit, by the header and by the server's counters.
    assert_eq!(report.cache.hit_ratio, Some(1.0), "{:?}", report.cache);
    let server = report
        .server_metrics
        .as_ref()
        .expect("the gateway has /metrics");
    assert_eq!(server.hit_ratio, Some(1.0), "{server:?}");
    assert_eq!(
        server.upstream_bytes,
        Some(0.0),
        "hits fetch nothing upstream"
    );
    assert!(server
        .counters
        .contains_key("gateway_cache_hits_total{tier=\"memory\"}"));
    assert_eq!(report.context.n_shards, N_SHARDS);
    scene.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_valid_json_and_html_reports() {
    let scene = GatewayScene::start(&[2_000, 70_000]).await;
    let json = scene.dir().join("report.json");
    let html = scene.dir().join("report.html");
    let list = scene.list(true);
    let args = [
        "--target",
        &scene.url,
        "--blobs",
        list.to_str().unwrap(),
        "--n-shards",
        "10",
        "--preset",
        "hit",
        "--concurrency",
        "2",
        "--requests",
        "200",
        "--duration",
        "120s",
        "--range-share",
        "25%",
        "--http",
        "2",
        "--json",
        json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ];
    let output = harness::run_binary(&args).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("latency") && stdout.contains("p99"),
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).expect("valid JSON");
    assert_eq!(report["requests"], 200);
    assert_eq!(report["errors"], 0, "{}", report["error_examples"]);
    assert_eq!(report["context"]["protocol"], "HTTP/2");
    for p in ["p50", "p75", "p90", "p95", "p99", "p99_9", "max"] {
        assert!(report["latency_us"][p].as_u64().unwrap() > 0, "{p}");
    }
    assert!(report["throughput_rps"].as_f64().unwrap() > 0.0);
    assert!(report["bytes_per_sec"].as_f64().unwrap() > 0.0);
    assert!(report["errors_by_kind"].is_object());
    assert_eq!(report["server_metrics"]["hit_ratio"], 1.0);
    assert!(report["server_metrics"]["upstream_bytes"].is_number());
    assert!(!report["timeline"].as_array().unwrap().is_empty());
    assert!(report["cdf"].as_array().unwrap().len() > 10);

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert_eq!(page.matches("<svg").count(), 2, "latency over time and CDF");
    assert!(page.contains("<polyline"));
    assert!(!page.contains("<script") && !page.contains("<link"));
    scene.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_rounds_share_one_fill_per_blob() {
    let scene = GatewayScene::start(&[40_000, 40_001, 40_002]).await;
    let mut config = test_config(&scene.url, PopulationSpec::List(scene.list(true)), 1000);
    Preset::Stampede.apply(&mut config);
    config.load = Load::Closed { concurrency: 8 };
    config.verify_fraction = 0.0; // only first reads: an exact count
    let report = loadtest::run(config).await.unwrap();
    assert_eq!(
        report.requests,
        3 * 8,
        "one round per blob, then the population is used up"
    );
    assert_eq!(report.errors, 0, "{:?}", report.error_examples);
    assert_eq!(
        report.verification.verified, 3,
        "each blob's first read is checked"
    );
    let server = report.server_metrics.unwrap();
    assert_eq!(
        server.counters["gateway_fills_started_total"], 3.0,
        "{server:?}"
    );
    assert!(report
        .context
        .notes
        .iter()
        .any(|n| n.contains("every one of the 3 blobs")));
    scene.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_flipped_mid_run_and_healed() {
    let scene = GatewayScene::start(&[10_000, 20_000, 30_000, 40_000, 50_000]).await;
    let mut config = test_config(&scene.url, PopulationSpec::List(scene.list(true)), u64::MAX);
    Preset::Faults.apply(&mut config);
    // Bounded by time here: the fault schedule is part of the measured window.
    config.max_requests = None;
    config.duration = Duration::from_secs(3);
    config.load = Load::Closed { concurrency: 2 };
    config.mix.head = 0.5;
    config.faults = Some(FaultPlan {
        admins: vec![loadtest::client::Target::parse(&scene.sim_admin(), false).unwrap()],
        node: "0".into(),
        faults: NodeFaults {
            latency_ms: 5,
            ..NodeFaults::default()
        },
        at: Duration::from_millis(500),
        clear_at: Some(Duration::from_millis(1500)),
    });
    let report = loadtest::run(config).await.unwrap();
    assert_eq!(report.errors, 0, "{:?}", report.error_examples);
    let names: Vec<&str> = report.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["run", "faults on node 0", "healed"]);
    let total: u64 = report.phases.iter().map(|p| p.requests).sum();
    assert_eq!(total, report.requests);
    // Healed at the end: node 0 answers without faults.
    assert_eq!(scene.net.faults(0).unwrap(), NodeFaults::default());
    scene.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_then_read_in_an_open_loop() {
    let origin = Origin::start().await;
    let population = PopulationSpec::Publish {
        count: 6,
        sizes: size_dist("1KiB:50%,100KiB:50%").unwrap(),
    };
    let mut config = test_config(&origin.url, population, 150);
    config.n_shards = None; // from the origin's /status
    config.load = Load::Open {
        rate: 500.0,
        max_in_flight: 64,
    };
    config.mix.range = 0.3;
    config.verify_fraction = 1.0;
    let report = loadtest::run(config).await.unwrap();
    assert_eq!(report.requests, 150);
    assert_eq!(report.errors, 0, "{:?}", report.error_examples);
    assert_eq!(report.context.blobs, 6);
    assert_eq!(
        report.context.n_shards, N_SHARDS,
        "{:?}",
        report.context.notes
    );
    assert!(report.by_kind["range"].requests > 0);
    assert!(report.verification.verified > 0);
    assert!(
        report.server_metrics.is_none(),
        "the origin has no /metrics"
    );
    assert!(
        report
            .context
            .notes
            .iter()
            .any(|n| n.contains("GET /metrics did not answer 200 in 3 attempts")),
        "{:?}",
        report.context.notes
    );
    assert_eq!(report.cache.hit_ratio, None, "no x-cache headers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_are_errors_in_the_report() {
    let origin = Origin::start().await;
    let population = PopulationSpec::Publish {
        count: 3,
        sizes: size_dist("5000").unwrap(),
    };
    origin.corrupt.store(true, Ordering::Relaxed);
    let mut config = test_config(&origin.url, population, 60);
    config.load = Load::Closed { concurrency: 2 };
    config.verify_fraction = 1.0;
    config.mix.range = 0.5;
    let report = loadtest::run(config).await.unwrap();
    assert_eq!(report.requests, 60);
    assert!(report.verification.mismatched > 0);
    assert_eq!(report.verification.verified, 0);
    assert_eq!(
        report.errors_by_kind["wrong_bytes"],
        report.verification.mismatched
    );
    assert!(report.errors >= report.verification.mismatched);
    assert!(report.summary().contains("wrong_bytes"));
    // Ranges of the flipped blobs are served honestly here and pass.
    assert_eq!(report.by_kind["range"].errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_targets_are_connect_errors_not_hangs() {
    // A port that was just free: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("ids.txt");
    std::fs::write(&list, format!("{} 10\n", codec::BlobId([9; 32]))).unwrap();
    let mut config = test_config(&format!("http://{addr}"), PopulationSpec::List(list), 20);
    config.load = Load::Closed { concurrency: 2 };
    let report = loadtest::run(config).await.unwrap();
    assert_eq!(report.requests, 20);
    assert_eq!(report.errors_by_kind["connect"], 20);
    assert_eq!(report.ok, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_preset_posts_the_input_and_checks_json_replies() {
    let origin = Origin::start().await;
    let population = PopulationSpec::Publish {
        count: 1,
        sizes: size_dist("100").unwrap(),
    };
    let mut config = test_config(&origin.url, population, 40);
    config.inference = Some(Inference {
        model: "mnist-8".into(),
        input: bytes::Bytes::from_static(br#"{"input":[1,2,3]}"#),
    });
    Preset::Inference.apply(&mut config);
    config.load = Load::Closed { concurrency: 2 };
    let report = loadtest::run(config).await.unwrap();
    assert_eq!(report.requests, 40);
    assert_eq!(report.by_kind["infer"].requests, 40);
    assert_eq!(report.errors, 0, "{:?}", report.error_examples);
    assert_eq!(report.context.scenario, "inference");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_reads_every_blob_exactly_once() {
    let scene = GatewayScene::start(&[3_000, 4_000, 5_000, 6_000, 7_000]).await;
    let mut config = test_config(&scene.url, PopulationSpec::List(scene.list(false)), 1000);
    Preset::Cold.apply(&mut config);
    config.load = Load::Closed { concurrency: 2 };
    let report = loadtest::run(config).await.unwrap();
    assert_eq!(report.requests, 5, "one read per blob, then the run ends");
    assert_eq!(report.errors, 0, "{:?}", report.error_examples);
    assert_eq!(
        report.verification.verified, 5,
        "first reads are all checked"
    );
    assert_eq!(report.cache.hit_ratio, Some(0.0), "{:?}", report.cache);
    let server = report.server_metrics.unwrap();
    assert_eq!(server.misses, Some(5.0));
    assert!(
        server.upstream_bytes.unwrap() > 0.0,
        "cold reads fetch slivers"
    );
    assert_eq!(
        report.context.population_bytes, 25_000,
        "sizes learned by reading"
    );
    scene.stop().await;
}

/// `--preset faults` taking a node offline, with its own URL first among the admin URLs: the run
/// breaks and heals it through another node, so it is back at the end (answering on its port);
/// with only its own URL the run is refused before anything is broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_preset_heals_an_offline_node_named_by_its_own_url() {
    let scene = GatewayScene::start(&[10_000, 20_000, 30_000]).await;
    let target = |url: String| loadtest::client::Target::parse(&url, false).unwrap();
    let plan = |admins| FaultPlan {
        admins,
        node: "0".into(),
        faults: NodeFaults {
            offline: true,
            ..NodeFaults::default()
        },
        at: Duration::from_millis(200),
        // Healed only by the end of the run.
        clear_at: None,
    };
    let mut config = test_config(&scene.url, PopulationSpec::List(scene.list(true)), u64::MAX);
    Preset::Faults.apply(&mut config);
    config.max_requests = None;
    config.duration = Duration::from_secs(1);
    config.load = Load::Closed { concurrency: 2 };
    config.faults = Some(plan(vec![
        target(scene.node_url(0)),
        target(scene.node_url(2)),
    ]));
    let report = loadtest::run(config.clone()).await.unwrap();
    let names: Vec<&str> = report.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["run", "faults on node 0"]);
    assert!(
        !report
            .error_examples
            .iter()
            .any(|e| e.contains("fault_admin")),
        "{:?}",
        report.error_examples
    );
    assert_eq!(scene.net.faults(0).unwrap(), NodeFaults::default());
    let node0 = scene.node_url(0);
    let addr = node0.trim_start_matches("http://").trim_end_matches('/');
    let mut reachable = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            reachable = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reachable, "node 0 ({addr}) is still offline after the run");

    config.faults = Some(plan(vec![target(scene.node_url(0))]));
    let err = loadtest::run(config).await.unwrap_err().to_string();
    assert!(err.contains("--sim-admin is repeatable"), "{err}");
    assert_eq!(scene.net.faults(0).unwrap(), NodeFaults::default());
    scene.stop().await;
}

/// `--preset cold --publish`: the published blobs are purged before measuring, so every read
/// is a miss that fills (without the purge they are memory hits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_preset_purges_what_it_published() {
    let scene = GatewayScene::start(&[]).await;
    let population = PopulationSpec::Publish {
        count: 4,
        sizes: size_dist("20KiB").unwrap(),
    };
    let mut config = test_config(&scene.url, population, 1000);
    Preset::Cold.apply(&mut config);
    config.load = Load::Closed { concurrency: 2 };
    config.admin_token = Some(harness::ADMIN_TOKEN.into());
    config.purge_published = true;
    let report = loadtest::run(config).await.unwrap();
    assert_eq!(report.requests, 4);
    assert_eq!(report.errors, 0, "{:?}", report.error_examples);
    assert_eq!(report.cache.hit_ratio, Some(0.0), "{:?}", report.cache);
    let server = report.server_metrics.unwrap();
    assert_eq!(server.misses, Some(4.0));
    assert!(report
        .context
        .notes
        .iter()
        .any(|n| n.contains("purged the 4")));
    scene.stop().await;
}

/// `--preset inference` with no blobs and no model: it publishes its built-in model to a real
/// gateway and runs it; every answer is a checked JSON reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_preset_runs_its_builtin_model() {
    let scene = GatewayScene::start(&[]).await;
    let mut config = test_config(&scene.url, PopulationSpec::Model(None), 20);
    config.inference = Some(Inference::builtin());
    Preset::Inference.apply(&mut config);
    config.load = Load::Closed { concurrency: 2 };
    let report = loadtest::run(config).await.unwrap();
    assert_eq!(report.requests, 20);
    assert_eq!(report.by_kind["infer"].requests, 20);
    assert_eq!(report.errors, 0, "{:?}", report.error_examples);
    assert!(report
        .context
        .notes
        .iter()
        .any(|n| n.contains("published the built-in model")));
    scene.stop().await;
}
