//! `/metrics` as a Prometheus server and an operator see it (issue 20): `promtool check
//! metrics` accepts a live gateway's exposition after real traffic, every family has HELP and
//! TYPE, latencies are histograms, failure series exist at 0 before any failure, fetched bytes
//! say where they came from, and every query of `deploy/grafana-dashboard.json` names metrics
//! the gateway exports.

mod harness;

use codec::BlobId;
use gateway::{Gateway, GatewayConfig};
use harness::{blob, config, Scenario};
use http::{Method, StatusCode};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use storage_sim::committee::Committee;
use storage_sim::SimConfig;

/// `# TYPE` of every family in an exposition.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// The value of the series `series` (labels exactly as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn model(name: &str, ext: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../inference/tests/models")
        .join(format!("{name}.{ext}"))
}

/// A gateway after a miss, a memory hit, a 404 and one inference run (so the engine's
/// families exist too); returns its `/metrics` text, and with `edge` also that of a gateway
/// reading through it as its upstream (a regional tier: the upstream families).
async fn after_traffic(edge: bool) -> Vec<String> {
    let s = Scenario::with(
        SimConfig {
            n_shards: 10,
            nodes: 4,
            ..SimConfig::default()
        },
        GatewayConfig {
            inference_concurrency: Some(1),
            ..config()
        },
    )
    .await;
    let data = blob(50_000, 7);
    let id = s.store(&data).await;
    let path = format!("/v1/blobs/{id}");
    assert_eq!(s.get(&path).await.header("x-cache"), Some("miss"));
    assert_eq!(s.get(&path).await.header("x-cache"), Some("hit-memory"));
    let missing = codec::blob_id(10, b"never stored").unwrap();
    let reply = s.get(&format!("/v1/blobs/{missing}")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    let model_id: BlobId = s
        .store(&std::fs::read(model("batch_mean", "onnx")).unwrap())
        .await;
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model("batch_mean", "json")).unwrap())
            .unwrap();
    let body = serde_json::json!({ "inputs": reference["cases"][0]["inputs"] });
    let reply = s
        .send_body(
            Method::POST,
            &format!("/v1/inference/{model_id}"),
            &[("content-type", "application/json")],
            body.to_string().into_bytes(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let mut texts = vec![s.metrics_text().await];
    if edge {
        let (edge, client) = edge_of(&s).await;
        let reply = harness::send(&client, edge.addr(), Method::GET, &path, &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        let text = harness::send(&client, edge.addr(), Method::GET, "/metrics", &[]).await;
        texts.push(String::from_utf8(text.bytes().to_vec()).unwrap());
        edge.shutdown().await.expect("edge stops");
    }
    s.stop().await;
    texts
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

/// A gateway without storage nodes whose upstream is `parent`, and a client for it.
async fn edge_of(parent: &Scenario) -> (gateway::RunningGateway, HttpClient) {
    let edge = Gateway::bind(
        GatewayConfig {
            upstreams: vec![format!("http://{}", parent.addr).parse().unwrap()],
            upstream_hedge: Duration::from_secs(600),
            ..config()
        },
        Committee {
            n_shards: 10,
            nodes: Vec::new(),
        },
    )
    .await
    .expect("edge binds")
    .spawn();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    (edge, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_gateways_metrics_pass_promtool_with_help_histograms_and_zeroed_failures() {
    let text = after_traffic(false).await.remove(0);
    let families = families(&text);
    for (name, kind) in &families {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help text"
        );
        assert_ne!(
            kind, "summary",
            "{name} is a summary, which cannot be aggregated"
        );
    }
    for (name, kind) in [
        ("gateway_request_duration_seconds", "histogram"),
        ("gateway_fill_seconds", "histogram"),
        ("gateway_sliver_fetch_seconds", "histogram"),
        ("walrus_inference_run_seconds", "histogram"),
        ("gateway_memory_cache_bytes", "gauge"),
        ("gateway_memory_cache_entries", "gauge"),
        ("gateway_disk_cache_bytes", "gauge"),
        ("walrus_gateway_build_info", "gauge"),
    ] {
        assert_eq!(families.get(name).map(String::as_str), Some(kind), "{name}");
    }
    // One request per tier, each in its own series.
    for (tier, count) in [("miss", 1.0), ("memory", 1.0), ("disk", 0.0), ("none", 1.0)] {
        let series =
            format!("gateway_request_duration_seconds_count{{route=\"blob\",tier=\"{tier}\"}}");
        assert_eq!(value(&text, &series), Some(count), "{series}");
    }
    // Failure series exist before any such failure.
    for series in [
        "gateway_fills_failed_total{reason=\"unavailable\"}",
        "gateway_deadlines_total{kind=\"response_stall\"}",
        "gateway_admission_refused_total{bound=\"publish_memory\"}",
        "gateway_responses_total{status=\"503\"}",
        "gateway_upstream_bytes_total{source=\"parent\"}",
    ] {
        assert_eq!(value(&text, series), Some(0.0), "{series}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("gateway_node_failures_total{node=")
                && l.contains("reason=\"timeout\"")
                && l.ends_with(" 0")),
        "no zeroed per-node failure series"
    );
    assert!(value(&text, "gateway_upstream_bytes_total{source=\"nodes\"}").unwrap() > 0.0);

    // `promtool check metrics` (Debian's `prometheus` package; .ci/run installs it).
    let Some(promtool) = promtool() else {
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `promtool` on PATH (or `$PROMTOOL`); without it the check is skipped loudly, unless
/// `WALRUS_REQUIRE_PEERS=1` (CI), which makes it a failure.
fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::var_os("PROMTOOL")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::split_paths(&path).map(|dir| dir.join("promtool")));
    for candidate in candidates {
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    if std::env::var("WALRUS_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("promtool is missing and WALRUS_REQUIRE_PEERS=1 (install Debian's `prometheus`)");
    }
    eprintln!(
        "SKIPPED: `promtool check metrics` (promtool not found; install Debian's `prometheus` \
         package or set PROMTOOL); the HELP/TYPE checks above still ran"
    );
    None
}

/// Metric names a PromQL expression uses (identifiers of our two prefixes).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            current.push(c);
        } else {
            if current.starts_with("gateway_") || current.starts_with("walrus_") {
                names.push(std::mem::take(&mut current));
            }
            current.clear();
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_metrics_the_gateway_exports() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("valid JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            queries.push(target["expr"].as_str().expect("a PromQL expr").to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(definition) = variable["definition"].as_str() {
            queries.push(definition.to_owned());
        }
    }
    assert!(queries.len() >= 15, "{} queries", queries.len());

    let families: BTreeMap<String, String> = after_traffic(true)
        .await
        .iter()
        .flat_map(|text| families(text))
        .collect();
    let mut checked = 0;
    for query in &queries {
        let names = metric_names(query);
        assert!(!names.is_empty(), "no gateway metric in {query}");
        for name in names {
            let histogram = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|family| families.get(*family).map(String::as_str) == Some("histogram"));
            let known = match histogram {
                Some(_) => true,
                None => families.get(&name).is_some_and(|kind| kind != "histogram"),
            };
            assert!(
                known,
                "the dashboard queries {name}, which /metrics does not export ({query})"
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked} metric references checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_bytes_are_labelled_nodes_at_the_parent_and_parent_at_the_edge() {
    let parent = Scenario::start(10, 4).await;
    let data = blob(120_000, 9);
    let id = parent.store(&data).await;
    let (edge, client) = edge_of(&parent).await;
    let reply = harness::send(
        &client,
        edge.addr(),
        Method::GET,
        &format!("/v1/blobs/{id}"),
        &[],
    )
    .await;
    assert!(reply.bytes().as_ref() == data.as_slice(), "wrong bytes");
    let edge_text = harness::send(&client, edge.addr(), Method::GET, "/metrics", &[]).await;
    let edge_text = String::from_utf8(edge_text.bytes().to_vec()).unwrap();
    let parent_text = parent.metrics_text().await;
    let source = |text: &str, source: &str| {
        value(
            text,
            &format!("gateway_upstream_bytes_total{{source=\"{source}\"}}"),
        )
        .unwrap()
    };
    // The edge read rows checked against its parent's metadata, nothing from nodes.
    assert!(source(&edge_text, "parent") >= data.len() as f64);
    assert_eq!(source(&edge_text, "nodes"), 0.0);
    assert_eq!(source(&edge_text, "upstream"), 0.0);
    // The parent read from its storage nodes.
    assert!(source(&parent_text, "nodes") > 0.0);
    assert_eq!(source(&parent_text, "parent"), 0.0);
    edge.shutdown().await.expect("edge stops");
    parent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_tier_gauges_follow_what_it_holds() {
    let s = Scenario::start(10, 4).await;
    let data = blob(30_000, 11);
    let id = s.store(&data).await;
    assert_eq!(
        s.get(&format!("/v1/blobs/{id}")).await.status,
        StatusCode::OK
    );
    // The upkeep task sets them every 5 s: wait (boundedly) for the next round.
    let mut entries = None;
    for _ in 0..150 {
        entries = s.metric("gateway_memory_cache_entries").await;
        if entries == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(entries, Some(1.0));
    let bytes = s.metric("gateway_memory_cache_bytes").await.unwrap();
    assert_eq!(bytes, data.len() as f64);
    s.stop().await;
}
