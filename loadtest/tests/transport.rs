//! TLS and HTTP/3 transports, against the real gateway's HTTPS and HTTP/3 listeners (a fresh
//! self-signed certificate, trusted with `--cacert`): short bounded runs over HTTP/1.1 and
//! HTTP/2 over TLS and over HTTP/3 end with valid reports and no errors, every full read of a
//! blob checked against its Blob ID; a certificate the client does not trust stops the run
//! with a clear error. No assertion depends on timing.

mod harness;

use harness::{test_config, GatewayScene, N_SHARDS};
use loadtest::client::{ClientError, Protocol, TlsOptions};
use loadtest::config::{Load, PopulationSpec, Preset};
use loadtest::parse::size_dist;
use loadtest::workload::Mix;
use loadtest::RunError;
use std::path::Path;

fn trusting(cacert: &Path) -> TlsOptions {
    TlsOptions {
        cacert: Some(cacert.to_owned()),
        insecure: false,
    }
}

/// Check a report's JSON form: counts add up, percentiles are ordered, nothing failed.
fn assert_clean_json(report: &loadtest::Report, requests: u64, protocol: &str) {
    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(report).unwrap()).expect("valid JSON");
    assert_eq!(json["requests"], requests);
    assert_eq!(json["errors"], 0, "{}", json["error_examples"]);
    assert_eq!(json["ok"], requests);
    assert_eq!(json["context"]["protocol"], protocol);
    let latency = &json["latency_us"];
    let p = |name: &str| latency[name].as_u64().unwrap();
    assert!(p("p50") > 0);
    assert!(p("p50") <= p("p99") && p("p99") <= p("p99_9") && p("p99_9") <= p("max"));
    assert!(json["throughput_rps"].as_f64().unwrap() > 0.0);
    assert!(json["bytes_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(json["verification"]["mismatched"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_runs_over_http1_and_http2_with_the_gateway_certificate() {
    let scene = GatewayScene::start_tls(&[1000, 60_000, 700_000]).await;
    let https = scene.https_url.clone().expect("HTTPS is on");
    let cacert = scene.cacert.clone().unwrap();
    for (protocol, name) in [(Protocol::Http1, "HTTP/1.1"), (Protocol::Http2, "HTTP/2")] {
        let mut config = test_config(&https, PopulationSpec::List(scene.list(false)), 120);
        Preset::Hit.apply(&mut config);
        config.protocol = protocol;
        config.connections = 2;
        config.tls = trusting(&cacert);
        config.load = Load::Closed { concurrency: 4 };
        config.mix = Mix {
            range: 0.2,
            head: 0.1,
            infer: 0.0,
        };
        config.verify_fraction = 1.0;
        let report = loadtest::run(config).await.expect("the run completes");
        assert_clean_json(&report, 120, name);
        assert!(
            report.verification.verified >= 3,
            "every blob checked at least once"
        );
        assert!(report.by_kind["range"].requests > 0);
        assert!(report.by_kind["head"].requests > 0);
        assert!(report.context.target.starts_with("https://"));
        // /metrics was scraped over TLS too: pre-warmed reads are all hits.
        let server = report.server_metrics.expect("the gateway has /metrics");
        assert_eq!(server.hit_ratio, Some(1.0), "{server:?}");
    }
    scene.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_publishes_and_reads_with_checked_bodies() {
    let scene = GatewayScene::start_tls(&[]).await;
    let https = scene.https_url.clone().unwrap();
    let population = PopulationSpec::Publish {
        count: 4,
        sizes: size_dist("3KiB:50%,900KiB:50%").unwrap(),
    };
    // The URL names the HTTPS (TCP) port; the HTTP/3 listener has its own UDP port here.
    let mut config = test_config(&https, population, 150);
    config.n_shards = None; // from the gateway's /status, asked over HTTP/3
    config.protocol = Protocol::Http3;
    config.h3_port = scene.h3_port;
    config.connections = 2;
    config.tls = trusting(scene.cacert.as_ref().unwrap());
    config.load = Load::Closed { concurrency: 6 };
    config.mix = Mix {
        range: 0.25,
        head: 0.1,
        infer: 0.0,
    };
    config.verify_fraction = 1.0;
    let report = loadtest::run(config).await.expect("the run completes");
    assert_clean_json(&report, 150, "HTTP/3");
    assert_eq!(report.context.blobs, 4, "published over HTTP/3");
    assert_eq!(
        report.context.n_shards, N_SHARDS,
        "{:?}",
        report.context.notes
    );
    assert!(
        report.verification.verified >= 4,
        "{:?}",
        report.verification
    );
    assert!(report.by_kind["range"].requests > 0);
    assert!(report.by_kind["head"].requests > 0);
    assert!(report.server_metrics.is_some(), "/metrics over HTTP/3");
    scene.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_http3_and_writes_a_valid_json_report() {
    let scene = GatewayScene::start_tls(&[5_000, 200_000]).await;
    let json = scene.dir().join("h3.json");
    let list = scene.list(true);
    let args = [
        "--target",
        scene.https_url.as_deref().unwrap(),
        "--http",
        "3",
        "--h3-port",
        &scene.h3_port.unwrap().to_string(),
        "--cacert",
        scene.cacert.as_ref().unwrap().to_str().unwrap(),
        "--blobs",
        list.to_str().unwrap(),
        "--n-shards",
        "10",
        "--preset",
        "hit",
        "--concurrency",
        "3",
        "--requests",
        "80",
        "--duration",
        "120s",
        "--verify-sample",
        "100%",
        "--json",
        json.to_str().unwrap(),
    ];
    let output = harness::run_binary(&args).await;
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).expect("valid JSON");
    assert_eq!(report["requests"], 80);
    assert_eq!(report["errors"], 0, "{}", report["error_examples"]);
    assert_eq!(report["context"]["protocol"], "HTTP/3");
    assert!(report["verification"]["verified"].as_u64().unwrap() >= 2);
    assert_eq!(
        report["server_metrics"]["hit_ratio"], 1.0,
        "{}",
        report["context"]["notes"]
    );
    scene.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cacert_stops_the_run_with_a_clear_error() {
    let scene = GatewayScene::start_tls(&[1000]).await;
    let https = scene.https_url.clone().unwrap();
    // A certificate for the same names, but not the one the gateway serves.
    let other =
        gateway::tls::TlsIdentity::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let wrong = scene.dir().join("other.pem");
    std::fs::write(&wrong, other.cert_pem).unwrap();

    for protocol in [Protocol::Http1, Protocol::Http2, Protocol::Http3] {
        let mut config = test_config(&https, PopulationSpec::List(scene.list(true)), 10);
        config.protocol = protocol;
        config.h3_port = scene.h3_port;
        config.tls = trusting(&wrong);
        let err = loadtest::run(config)
            .await
            .expect_err("an untrusted certificate fails the run");
        let text = err.to_string();
        assert!(
            matches!(err, RunError::Client(ClientError::Tls(_))),
            "{protocol:?}: {text}"
        );
        assert!(text.contains("TLS handshake failed"), "{text}");
        assert!(text.contains("--cacert"), "{protocol:?}: {text}");
    }

    // The binary says so on stderr and exits non-zero without writing a report.
    let json = scene.dir().join("never.json");
    let list = scene.list(true);
    let args = [
        "--target",
        &https,
        "--http",
        "2",
        "--cacert",
        wrong.to_str().unwrap(),
        "--blobs",
        list.to_str().unwrap(),
        "--requests",
        "5",
        "--json",
        json.to_str().unwrap(),
    ];
    let output = harness::run_binary(&args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("TLS handshake failed") && stderr.contains("invalid peer certificate"),
        "{stderr}"
    );
    assert!(!json.exists(), "no report for a run that never happened");

    // A missing --cacert file is refused before connecting.
    let mut config = test_config(&https, PopulationSpec::List(scene.list(true)), 5);
    config.tls = trusting(&scene.dir().join("missing.pem"));
    let err = loadtest::run(config).await.expect_err("no such file");
    assert!(err.to_string().contains("cannot read --cacert"), "{err}");
    scene.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skips_verification_but_bodies_are_still_checked() {
    let scene = GatewayScene::start_tls(&[30_000]).await;
    let mut config = test_config(
        scene.https_url.as_deref().unwrap(),
        PopulationSpec::List(scene.list(true)),
        20,
    );
    config.protocol = Protocol::Http3;
    config.h3_port = scene.h3_port;
    config.tls = TlsOptions {
        cacert: None,
        insecure: true,
    };
    config.load = Load::Closed { concurrency: 2 };
    config.verify_fraction = 1.0;
    let report = loadtest::run(config).await.expect("the run completes");
    assert_eq!(report.errors, 0, "{:?}", report.error_examples);
    assert!(report.verification.verified > 0);

    // Without --cacert or --insecure, the public roots do not cover a self-signed certificate.
    let mut config = test_config(
        scene.https_url.as_deref().unwrap(),
        PopulationSpec::List(scene.list(true)),
        5,
    );
    config.protocol = Protocol::Http2;
    let err = loadtest::run(config).await.expect_err("not trusted");
    assert!(
        matches!(err, RunError::Client(ClientError::Tls(_))),
        "{err}"
    );
    scene.stop().await;
}
