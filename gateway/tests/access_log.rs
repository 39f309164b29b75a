//! The access log (`--access-log`, issue 20): one line per request, in the combined format and
//! in JSON, with the status, bytes, `X-Cache` tier and fill wait each request really had, on the
//! lean HTTP/1.1 server, hyper's HTTP/1.1 and HTTP/2 alike.

mod harness;

use gateway::access_log::{AccessLogConfig, Format};
use harness::{blob, config, Scenario};
use http::{Method, StatusCode};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use storage_sim::{NodeFaults, SimConfig};

/// Blobs above this skip the memory tier: served from disk once filled.
const MEMORY_MAX: u64 = 16 << 10;

/// A gateway with a disk tier and an access log in `format` at `log`.
async fn scenario(dir: &Path, log: &Path, format: Format, lean: bool) -> Scenario {
    Scenario::with(
        SimConfig {
            n_shards: 10,
            nodes: 4,
            ..SimConfig::default()
        },
        gateway::GatewayConfig {
            cache_dir: Some(dir.join("cache")),
            memory_max_object: MEMORY_MAX,
            lean_http1: lean,
            access_log: Some(AccessLogConfig::new(log.to_str().unwrap(), format)),
            // Scrapes go to a listener of their own, which keeps no access log.
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..config()
        },
    )
    .await
}

/// The log's lines once it has `n` (the writer thread is asynchronous; bounded wait).
async fn lines(log: &Path, n: usize) -> Vec<String> {
    for _ in 0..500 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the access log never reached {n} lines:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Wait (boundedly) until `n` blobs are in the disk tier (its writes land after the response).
async fn wait_on_disk(s: &Scenario, n: f64) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let addr = s.metrics_addr().expect("a metrics listener");
    for _ in 0..500 {
        let text = harness::send(&client, addr, Method::GET, "/metrics", &[]).await;
        let text = String::from_utf8_lossy(text.bytes()).into_owned();
        let entries = text.lines().find_map(|l| {
            l.strip_prefix("gateway_disk_cache_entries ")?
                .parse::<f64>()
                .ok()
        });
        if entries >= Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the disk tier never held {n} blobs");
}

/// Requests covering every tier: a miss and a memory hit of a small blob, a miss and a disk
/// hit of a large one, a 404, and a HEAD. Returns the expected (path, status, bytes, cache).
async fn traffic(s: &Scenario) -> Vec<(String, u16, u64, &'static str)> {
    let small = blob(3000, 1);
    let large = blob(40 << 10, 2);
    let small_id = s.store(&small).await;
    let large_id = s.store(&large).await;
    let missing = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let mut expected = Vec::new();
    for (id, len, tiers) in [
        (small_id, small.len(), ["miss", "hit-memory"]),
        (large_id, large.len(), ["miss", "hit-disk"]),
    ] {
        for tier in tiers {
            if tier == "hit-disk" {
                wait_on_disk(s, 2.0).await;
            }
            let path = format!("/v1/blobs/{id}");
            let reply = s
                .request(Method::GET, &path, &[("user-agent", "access-test/1")])
                .await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.header("x-cache"), Some(tier));
            assert_eq!(reply.bytes().len(), len);
            expected.push((path, 200, len as u64, tier));
        }
    }
    let path = format!("/v1/blobs/{missing}");
    let reply = s.get(&path).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    expected.push((path, 404, reply.bytes().len() as u64, "-"));
    let path = format!("/v1/blobs/{small_id}");
    let reply = s.request(Method::HEAD, &path, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    expected.push((path, 200, 0, "hit-memory"));
    // Every node refuses a blob (their deny lists): 451, logged with its error body and no tier.
    let refused = s.store(&blob(2000, 3)).await;
    for node in 0..4 {
        s.faults(
            node,
            NodeFaults {
                forbidden: true,
                ..NodeFaults::default()
            },
        )
        .await;
    }
    let path = format!("/v1/blobs/{refused}");
    let reply = s.get(&path).await;
    assert_eq!(reply.status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    expected.push((path, 451, reply.bytes().len() as u64, "-"));
    expected
}

/// `(method, target, status, bytes, cache, fill)` of a combined line.
fn parse_combined(line: &str) -> (String, String, u16, u64, String, String) {
    let mut quoted = line.split('"');
    let request = quoted.nth(1).expect("a quoted request line");
    let mut request = request.split(' ');
    let method = request.next().unwrap().to_owned();
    let target = request.next().unwrap().to_owned();
    let mut numbers = quoted.next().unwrap().trim().split(' ');
    let status = numbers.next().unwrap().parse().unwrap();
    let bytes = numbers.next().unwrap().parse().unwrap();
    let field = |key: &str| {
        line.split(' ')
            .find_map(|f| f.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            .to_owned()
    };
    (
        method,
        target,
        status,
        bytes,
        field("cache="),
        field("fill="),
    )
}

#[tokio::test]
async fn combined_lines_name_each_request_with_its_tier_bytes_and_fill() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let s = scenario(dir.path(), &log, Format::Combined, true).await;
    let expected = traffic(&s).await;
    let lines = lines(&log, expected.len()).await;
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    for (line, (path, status, bytes, cache)) in lines.iter().zip(&expected) {
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        let (method, target, got_status, got_bytes, got_cache, fill) = parse_combined(line);
        assert_eq!(method, if *bytes == 0 { "HEAD" } else { "GET" }, "{line}");
        assert_eq!(&target, path, "{line}");
        assert_eq!(got_status, *status, "{line}");
        assert_eq!(got_bytes, *bytes, "{line}");
        assert_eq!(got_cache, *cache, "{line}");
        // A fill wait is reported for misses, and only for them.
        assert_eq!(fill != "-", *cache == "miss", "{line}");
        assert!(line.ends_with("complete=true"), "{line}");
        assert!(line.contains(" HTTP/1.1\" "), "{line}");
    }
    assert!(lines[0].contains("\"access-test/1\""), "{}", lines[0]);
    s.stop().await;
}

#[tokio::test]
async fn json_lines_carry_the_same_facts_over_hyper_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    // hyper's HTTP/1.1 (the lean server off) for the traffic, then one HTTP/2 request.
    let s = scenario(dir.path(), &log, Format::Json, false).await;
    let expected = traffic(&s).await;
    let h2 = s.h2_client();
    let (path, ..) = &expected[1];
    let reply = harness::send(&h2, s.addr, Method::GET, path, &[]).await;
    assert_eq!(reply.header("x-cache"), Some("hit-memory"));
    let lines = lines(&log, expected.len() + 1).await;
    assert_eq!(lines.len(), expected.len() + 1, "{lines:#?}");
    for (line, (path, status, bytes, cache)) in lines.iter().zip(&expected) {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        assert_eq!(v["path"], path.as_str(), "{line}");
        assert_eq!(v["status"], *status, "{line}");
        assert_eq!(v["bytes"], *bytes, "{line}");
        let cache = (*cache != "-").then_some(*cache);
        assert_eq!(v["cache"].as_str(), cache, "{line}");
        assert_eq!(v["fill_seconds"].is_f64(), cache == Some("miss"), "{line}");
        assert_eq!(v["client"], "127.0.0.1", "{line}");
        assert_eq!(v["protocol"], "HTTP/1.1", "{line}");
        assert_eq!(v["complete"], true, "{line}");
        assert!(v["duration_seconds"].as_f64().unwrap() >= 0.0, "{line}");
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{line}");
    }
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["protocol"], "HTTP/2.0");
    assert_eq!(last["cache"], "hit-memory");
    assert_eq!(last["bytes"], 3000);
    s.stop().await;
}

/// The binary as an operator runs it: `--log-format json` writes one JSON object per line on
/// standard error with no colour codes (it is not a terminal), publishes and admin actions are
/// logged with their outcome, a client's 404 is not a warning, and `--access-log -` writes the
/// request lines on standard output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_json_without_colour_and_records_publishes_and_admin_actions() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
        .args(["serve", "--bind", "127.0.0.1:0", "--log-format", "json"])
        .args(["--access-log", "-", "--admin-token", "admin-secret"])
        .arg("--identity-key")
        .arg(dir.path().join("identity.key"))
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("the binary runs");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut next_line = move || {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("stdout is readable");
        assert!(!line.is_empty(), "serve exited early");
        line.trim_end().to_owned()
    };
    let addr: SocketAddr = loop {
        let line = next_line();
        if let Some(addr) = line.strip_prefix("listening on http://") {
            break addr.parse().unwrap();
        }
    };
    let data = blob(5000, 3);
    let put = harness::send_body(addr, Method::PUT, "/v1/blobs", &[], data).await;
    assert_eq!(put.status, StatusCode::OK);
    let id = put.json()["newlyCreated"]["blobObject"]["blobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = ("authorization", "Bearer admin-secret");
    let purge = harness::send_body(
        addr,
        Method::DELETE,
        &format!("/admin/cache/{id}"),
        &[auth],
        Vec::new(),
    )
    .await;
    assert_eq!(purge.status, StatusCode::OK);
    let missing = harness::send_body(
        addr,
        Method::GET,
        "/v1/blobs/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // Access log lines on stdout, one per request, in order.
    let mut access = Vec::new();
    while access.len() < 3 {
        let line = next_line();
        if line.contains(" - - [") {
            access.push(line);
        }
    }
    assert!(
        access[0].contains("\"PUT /v1/blobs HTTP/1.1\" 200 "),
        "{}",
        access[0]
    );
    assert!(access[1].contains(&format!("\"DELETE /admin/cache/{id} HTTP/1.1\" 200 ")));
    assert!(access[2].contains("\" 404 "), "{}", access[2]);
    let _ = child.kill();
    let _ = child.wait();

    let text = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file:\n{text}"
    );
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let find = |message: &str| {
        events
            .iter()
            .find(|e| e["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} event in\n{text}"))
    };
    let stored = find("publish stored");
    assert_eq!(stored["blob_id"], id.as_str());
    assert_eq!(stored["size"], 5000);
    assert_eq!(stored["level"], "INFO");
    let admin = find("admin action");
    assert_eq!(admin["method"], "DELETE");
    assert_eq!(admin["path"], format!("/admin/cache/{id}"));
    assert_eq!(admin["status"], 200);
    assert!(
        events
            .iter()
            .all(|e| e["level"] != "WARN" && e["level"] != "ERROR"),
        "a warning for a client's request:\n{text}"
    );
}
