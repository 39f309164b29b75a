//! Aggregator parity (issue 17): CORS as the aggregator sends it, the consistency parameters of
//! blob reads, `GET`/`POST /v1alpha/blobs/concat` with the aggregator's ETag, `GET /v1/api`
//! describing every route; and clients written for a Walrus aggregator (Node's `fetch`,
//! Python's `requests`, curl) getting the same answers from the gateway. A client that is not
//! installed is skipped with a loud note, unless `WALRUS_REQUIRE_PEERS=1`.

mod harness;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use codec::BlobId;
use gateway::GatewayConfig;
use harness::{blob, Scenario};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use storage_sim::SimConfig;

const TOKEN: &str = "parity-admin";

async fn scenario(blocklist: Option<PathBuf>) -> Scenario {
    Scenario::with(
        SimConfig {
            n_shards: 10,
            nodes: 4,
            ..SimConfig::default()
        },
        GatewayConfig {
            admin_token: Some(TOKEN.into()),
            blocklist,
            ..harness::config()
        },
    )
    .await
}

fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn concat_etag(ids: &[BlobId]) -> String {
    let joined = ids
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let digest = ring::digest::digest(&ring::digest::SHA256, joined.as_bytes());
    format!("\"{}\"", URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

#[tokio::test]
async fn cors_is_the_aggregators() {
    let s = scenario(None).await;
    let id = s.store(&blob(10_000, 1)).await;
    let path = format!("/v1/blobs/{id}");
    for target in [path.as_str(), "/v1alpha/blobs/concat", "/admin/cache"] {
        let reply = s
            .request(
                Method::OPTIONS,
                target,
                &[
                    ("origin", "https://app.example"),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "range, x-custom"),
                ],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.bytes().is_empty());
        assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
        assert_eq!(reply.header("access-control-allow-methods"), Some("*"));
        assert_eq!(reply.header("access-control-allow-headers"), Some("*"));
        assert_eq!(reply.header("access-control-max-age"), Some("86400"));
    }
    // An OPTIONS that is not a preflight gets the route's answer.
    let bare = s.request(Method::OPTIONS, &path, &[]).await;
    assert_eq!(bare.status, StatusCode::METHOD_NOT_ALLOWED);
    // Every answer is readable cross-origin: blobs (cold and from the memory lane), errors, JSON.
    for p in [
        path.clone(),
        path.clone(),
        "/v1/blobs/not-an-id".into(),
        "/status".into(),
        "/v1/api".into(),
        "/no/such/route".into(),
    ] {
        let reply = s
            .request(Method::GET, &p, &[("origin", "https://app.example")])
            .await;
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("*"),
            "{p}: {}",
            reply.status
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn consistency_parameters_and_unknown_parameters() {
    let s = scenario(None).await;
    let data = blob(40_000, 2);
    let id = s.store(&data).await;
    for query in [
        "strict_consistency_check=true",
        "skip_consistency_check=true",
        "strict_consistency_check=false&skip_consistency_check=false",
    ] {
        let reply = s.get(&format!("/v1/blobs/{id}?{query}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}");
        assert_eq!(reply.bytes().as_ref(), data.as_slice(), "{query}");
    }
    // This gateway's fills make the default check: the first strict read re-encoded the blob,
    // later ones remember it did.
    let checked = "gateway_strict_checks_total{result=\"consistent\"}";
    assert_eq!(s.metric(checked).await, Some(1.0));
    let again = s
        .get(&format!("/v1/blobs/{id}?strict_consistency_check=true"))
        .await;
    assert_eq!(again.bytes().as_ref(), data.as_slice());
    assert_eq!(s.metric(checked).await, Some(1.0));
    let other = blob(3_000, 9);
    let other_id = s.store(&other).await;
    let cold = s
        .get(&format!(
            "/v1/blobs/{other_id}?strict_consistency_check=true"
        ))
        .await;
    assert_eq!(cold.bytes().as_ref(), other.as_slice());
    assert_eq!(s.metric(checked).await, Some(2.0));
    let both = s
        .get(&format!(
            "/v1/blobs/{id}?strict_consistency_check=true&skip_consistency_check=true"
        ))
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert_eq!(both.reason(), "INVALID_CONSISTENCY_CHECK");
    for query in [
        "foo=bar",
        "strict_consistency_check=1",
        "strict_consistency_check=true&strict_consistency_check=true",
    ] {
        let reply = s.get(&format!("/v1/blobs/{id}?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.reason(), "INVALID_PARAMETERS", "{query}");
    }
    // The byte-range route takes only its own parameters, as the aggregator's does.
    let reply = s
        .get(&format!(
            "/v1/blobs/{id}/byte-range?start=0&length=4&strict_consistency_check=true"
        ))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concat_streams_three_blobs_in_order_with_the_aggregators_etag() {
    let s = scenario(None).await;
    // One large enough to stream from its fill, one cached first, one small.
    let blobs = [blob(700_000, 3), blob(20_000, 4), blob(1, 5)];
    let mut ids = Vec::new();
    for b in &blobs {
        ids.push(s.store(b).await);
    }
    assert_eq!(
        s.get(&format!("/v1/blobs/{}", ids[1])).await.status,
        StatusCode::OK
    );
    let expected: Vec<u8> = blobs.concat();
    let list = ids.iter().map(ToString::to_string).collect::<Vec<_>>();

    let get = s
        .get(&format!("/v1alpha/blobs/concat?ids={}", list.join(",")))
        .await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.bytes().as_ref(), expected.as_slice());
    assert_eq!(get.header("etag"), Some(concat_etag(&ids).as_str()));
    assert_eq!(
        get.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
    // Percent-encoded commas, as form encoders send them.
    let encoded = s
        .get(&format!("/v1alpha/blobs/concat?ids={}", list.join("%2C")))
        .await;
    assert_eq!(encoded.bytes().as_ref(), expected.as_slice());

    let body = json!({"ids": list, "strict_consistency_check": true}).to_string();
    let post = s
        .send_body(
            Method::POST,
            "/v1alpha/blobs/concat",
            &[("content-type", "application/json")],
            body.into_bytes(),
        )
        .await;
    assert_eq!(post.status, StatusCode::OK);
    assert_eq!(post.bytes().as_ref(), expected.as_slice());
    assert_eq!(post.header("etag"), Some(concat_etag(&ids).as_str()));

    // Another order is another representation.
    let reversed: Vec<BlobId> = ids.iter().rev().copied().collect();
    let back = s
        .get(&format!(
            "/v1alpha/blobs/concat?ids={}",
            reversed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ))
        .await;
    assert_eq!(back.header("etag"), Some(concat_etag(&reversed).as_str()));
    assert_eq!(
        back.bytes().as_ref(),
        [&blobs[2][..], &blobs[1][..], &blobs[0][..]]
            .concat()
            .as_slice()
    );

    // Errors are statuses before the body starts.
    let missing = BlobId([9; 32]);
    let reply = s
        .get(&format!("/v1alpha/blobs/concat?ids={},{missing}", ids[0]))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.reason(), "BLOB_NOT_FOUND");
    for bad in [
        "/v1alpha/blobs/concat".to_owned(),
        "/v1alpha/blobs/concat?ids=".to_owned(),
        format!("/v1alpha/blobs/concat?ids={}&foo=1", ids[0]),
        "/v1alpha/blobs/concat?ids=0x1234".to_owned(),
    ] {
        assert_eq!(s.get(&bad).await.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let both = s
        .get(&format!(
            "/v1alpha/blobs/concat?ids={}&strict_consistency_check=true&skip_consistency_check=true",
            ids[0]
        ))
        .await;
    assert_eq!(both.reason(), "INVALID_CONSISTENCY_CHECK");
    let unknown_field = s
        .send_body(
            Method::POST,
            "/v1alpha/blobs/concat",
            &[],
            json!({"ids": [ids[0].to_string()], "extra": 1})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);
    let put = s
        .send_body(Method::PUT, "/v1alpha/blobs/concat", &[], Vec::new())
        .await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    s.stop().await;
}

#[tokio::test]
async fn the_api_description_names_every_route_and_each_exists() {
    let s = scenario(None).await;
    let reply = s.get("/v1/api").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let doc = reply.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let id = BlobId([7; 32]).to_string();
    let mut checked = 0;
    for (path, methods) in paths {
        for method in methods.as_object().unwrap().keys() {
            let concrete = path
                .replace("{blob_id}", &id)
                .replace("{quilt_id}", &id)
                .replace("{identifier}", "model.onnx")
                .replace("{quilt_patch_id}", "AAAA")
                .replace("{blob_object_id}", "0x1");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let reply = s
                .request(
                    method.clone(),
                    &concrete,
                    &[("authorization", &format!("Bearer {TOKEN}"))],
                )
                .await;
            // Whatever the answer (a missing blob, a missing body), it is not "no such route"
            // nor "not this method".
            assert_ne!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            if reply.status == StatusCode::NOT_FOUND && method != Method::HEAD {
                assert_ne!(reply.reason(), "ROUTE_NOT_FOUND", "{method} {path}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, gateway::api::openapi::ROUTES.len());
    for route in ["/v1/blobs/{blob_id}", "/v1alpha/blobs/concat", "/v1/api"] {
        assert!(paths.contains_key(route), "{route}");
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Clients written for the aggregator.

const REQUIRE_ENV: &str = "WALRUS_REQUIRE_PEERS";

/// A client that is not installed: skip loudly, or fail when peers are required.
fn missing(client: &str, why: &str) {
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!("{REQUIRE_ENV}=1 but the {client} client cannot run: {why}");
    }
    let banner = "*".repeat(78);
    let note = format!(
        "\n{banner}\n* NOTE: the {client} aggregator-client test did NOT run: {why}.\n{banner}\n"
    );
    println!("{note}");
    eprintln!("{note}");
}

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// What each client must observe (the same JSON each client script prints).
fn expected(blobs: &[Vec<u8>]) -> Value {
    let all: Vec<u8> = blobs.concat();
    json!({
        "blob": {"status": 200, "sha256": sha256(&blobs[0])},
        "range": {"status": 206, "sha256": sha256(&blobs[0][10..20])},
        "strict": {"status": 200, "sha256": sha256(&blobs[0])},
        "both": {"status": 400, "reason": "INVALID_CONSISTENCY_CHECK"},
        "unknown": {"status": 400, "reason": "INVALID_PARAMETERS"},
        "concat_get": {"status": 200, "sha256": sha256(&all)},
        "concat_post": {"status": 200, "sha256": sha256(&all)},
        "preflight": {"status": 200, "allow_origin": "*", "max_age": "86400"},
        "cors": {"allow_origin": "*"},
        "api": {"status": 200, "has_concat": true},
        "blocked": {"status": 451, "reason": "FORBIDDEN_BLOB"},
    })
}

async fn run(program: &str, args: Vec<String>) -> Result<Value, String> {
    let program = program.to_owned();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || Command::new(&program).args(&args).output()),
    )
    .await
    .map_err(|_| "timed out".to_owned())?
    .unwrap()
    .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "exit {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

/// Status, headers (lowercase names) and body of one exchange.
type Exchange = (u16, Vec<(String, String)>, Vec<u8>);

/// One curl exchange.
fn curl(args: &[&str]) -> Result<Exchange, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let status = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("{e}"))?;
    let headers = std::fs::read_to_string(&head)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, std::fs::read(&body).unwrap_or_default()))
}

fn curl_observations(base: &str, ids: &[BlobId], blocked: &BlobId) -> Result<Value, String> {
    let header = |h: &[(String, String)], name: &str| {
        h.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let reason = |body: &[u8]| -> String {
        serde_json::from_slice::<Value>(body).map_or(String::new(), |v| {
            v["error"]["details"][0]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
    };
    let a = ids[0].to_string();
    let list = ids.iter().map(ToString::to_string).collect::<Vec<_>>();
    let blob_url = format!("{base}/v1/blobs/{a}");
    let (s1, _, b1) = curl(&[&blob_url])?;
    let (s2, _, b2) = curl(&["-H", "Range: bytes=10-19", &blob_url])?;
    let (s3, _, b3) = curl(&[&format!("{blob_url}?strict_consistency_check=true")])?;
    let (s4, _, b4) = curl(&[&format!(
        "{blob_url}?strict_consistency_check=true&skip_consistency_check=true"
    )])?;
    let (s5, _, b5) = curl(&[&format!("{blob_url}?foo=bar")])?;
    let (s6, _, b6) = curl(&[
        "-G",
        "--data-urlencode",
        &format!("ids={}", list.join(",")),
        &format!("{base}/v1alpha/blobs/concat"),
    ])?;
    let (s7, _, b7) = curl(&[
        "-H",
        "content-type: application/json",
        "--data",
        &json!({"ids": list}).to_string(),
        &format!("{base}/v1alpha/blobs/concat"),
    ])?;
    let (s8, h8, _) = curl(&[
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://app.example",
        "-H",
        "Access-Control-Request-Method: GET",
        &blob_url,
    ])?;
    let (_, h9, _) = curl(&["-H", "Origin: https://app.example", &blob_url])?;
    let (s10, _, b10) = curl(&[&format!("{base}/v1/api")])?;
    let (s11, _, b11) = curl(&[&format!("{base}/v1/blobs/{blocked}")])?;
    let api: Value = serde_json::from_slice(&b10).unwrap_or(Value::Null);
    Ok(json!({
        "blob": {"status": s1, "sha256": sha256(&b1)},
        "range": {"status": s2, "sha256": sha256(&b2)},
        "strict": {"status": s3, "sha256": sha256(&b3)},
        "both": {"status": s4, "reason": reason(&b4)},
        "unknown": {"status": s5, "reason": reason(&b5)},
        "concat_get": {"status": s6, "sha256": sha256(&b6)},
        "concat_post": {"status": s7, "sha256": sha256(&b7)},
        "preflight": {"status": s8, "allow_origin": header(&h8, "access-control-allow-origin"),
                      "max_age": header(&h8, "access-control-max-age")},
        "cors": {"allow_origin": header(&h9, "access-control-allow-origin")},
        "api": {"status": s10, "has_concat": api["paths"].get("/v1alpha/blobs/concat").is_some()},
        "blocked": {"status": s11, "reason": reason(&b11)},
    }))
}

/// A Python that can import `requests`: `$WALRUS_H3_PEER_PYTHON` (CI's peer virtualenv), else
/// `python3`.
fn python_with_requests() -> Result<String, String> {
    let mut tried = Vec::new();
    for python in std::env::var("WALRUS_H3_PEER_PYTHON")
        .into_iter()
        .chain(["python3".to_owned()])
    {
        match Command::new(&python)
            .args(["-c", "import requests"])
            .output()
        {
            Ok(out) if out.status.success() => return Ok(python),
            Ok(out) => tried.push(format!(
                "{python}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => tried.push(format!("{python}: {e}")),
        }
    }
    Err(tried.join("; "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_clients_work_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("blocklist.yaml");
    let blocked = BlobId([42; 32]);
    std::fs::write(&list, format!("- {blocked}\n")).unwrap();
    let s = scenario(Some(list)).await;
    let blobs = vec![blob(150_000, 11), blob(30_000, 12), blob(777, 13)];
    let mut ids = Vec::new();
    for b in &blobs {
        ids.push(s.store(b).await);
    }
    let base = format!("http://{}", s.addr);
    let want = expected(&blobs);
    let mut args = vec![base.clone(), blocked.to_string()];
    args.extend(ids.iter().map(ToString::to_string));
    let mut ran = 0;

    // Node's built-in fetch.
    let node_ok = Command::new("node")
        .args(["-e", "if (typeof fetch !== 'function') process.exit(3)"])
        .output();
    match node_ok {
        Ok(out) if out.status.success() => {
            let script = peers_dir().join("aggregator_client.mjs");
            let mut node_args = vec![script.display().to_string()];
            node_args.extend(args.clone());
            let seen = run("node", node_args).await.expect("the Node client ran");
            assert_eq!(seen, want, "Node fetch");
            ran += 1;
        }
        Ok(_) => missing(
            "Node",
            "this node has no global fetch (Node 18 or later has)",
        ),
        Err(e) => missing("Node", &format!("node does not run: {e}")),
    }

    match python_with_requests() {
        Ok(python) => {
            let script = peers_dir().join("aggregator_client.py");
            let mut py_args = vec![script.display().to_string()];
            py_args.extend(args.clone());
            let seen = run(&python, py_args).await.expect("the Python client ran");
            assert_eq!(seen, want, "Python requests");
            ran += 1;
        }
        Err(why) => missing("Python requests", &why),
    }

    match Command::new("curl").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let (base, ids) = (base.clone(), ids.clone());
            let seen =
                tokio::task::spawn_blocking(move || curl_observations(&base, &ids, &blocked))
                    .await
                    .unwrap()
                    .expect("curl ran");
            assert_eq!(seen, want, "curl");
            ran += 1;
        }
        _ => missing("curl", "curl does not run"),
    }
    println!("{ran} of 3 aggregator clients ran");
    s.stop().await;
}
