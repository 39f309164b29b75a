//! Inference through the gateway, end to end: models stored on a simulated committee (through
//! `PUT /v1/blobs` or directly), run by Blob ID over HTTP on a gateway that has never seen them,
//! outputs compared with onnxruntime's committed references, proofs stored and checked by the
//! `verify-proof` binary, and the failure statuses.

mod harness;

use codec::BlobId;
use harness::{config, Scenario};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Output};
use storage_sim::SimConfig;

const ADMIN: &str = "test-admin-token";

fn model_path(name: &str, ext: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../inference/tests/models")
        .join(format!("{name}.{ext}"))
}

fn model(name: &str) -> Vec<u8> {
    std::fs::read(model_path(name, "onnx")).expect("committed model")
}

/// onnxruntime's reference cases of a committed model: `(inputs, outputs)` as JSON.
fn cases(name: &str) -> Vec<(Value, Value)> {
    let text = std::fs::read_to_string(model_path(name, "json")).expect("committed reference");
    let reference: Value = serde_json::from_str(&text).unwrap();
    reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["inputs"].clone(), c["outputs"].clone()))
        .collect()
}

/// Gateway settings for these tests: an identity key in `dir`, the admin API on.
fn inference_config(dir: &std::path::Path) -> gateway::GatewayConfig {
    gateway::GatewayConfig {
        identity_key: Some(dir.join("identity.key")),
        admin_token: Some(ADMIN.into()),
        inference_concurrency: Some(2),
        ..config()
    }
}

async fn start(dir: &std::path::Path) -> Scenario {
    Scenario::with(
        SimConfig {
            n_shards: 10,
            nodes: 4,
            ..SimConfig::default()
        },
        inference_config(dir),
    )
    .await
}

async fn infer(s: &Scenario, model: &BlobId, body: &Value) -> harness::Reply {
    s.send_body(
        Method::POST,
        &format!("/v1/inference/{model}"),
        &[("content-type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await
}

/// Every output within 1e-4 relative (1e-6 absolute near zero) of the reference.
fn assert_outputs_close(actual: &Value, expected: &Value) {
    let expected = expected.as_object().unwrap();
    for (name, want) in expected {
        let got = &actual[name];
        assert_eq!(got["shape"], want["shape"], "{name}: shape");
        assert_eq!(got["dtype"], want["dtype"], "{name}: dtype");
        let (got, want) = (
            got["data"].as_array().unwrap(),
            want["data"].as_array().unwrap(),
        );
        assert_eq!(got.len(), want.len(), "{name}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!(
                (g - w).abs() <= 1e-6 + 1e-4 * w.abs(),
                "{name}[{i}]: {g} vs onnxruntime's {w}"
            );
        }
    }
}

fn verify_proof(addr: std::net::SocketAddr, proof: &str, inputs: &Value) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inputs.json");
    std::fs::write(&file, inputs.to_string()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
        .args([
            "verify-proof",
            "--gateway",
            &format!("http://{addr}"),
            proof,
        ])
        .arg("--inputs")
        .arg(&file)
        .output()
        .expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_model_infer_on_cold_gateway_store_and_verify_proof() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path()).await;
    let put = s
        .send_body(Method::PUT, "/v1/blobs", &[], model("mlp"))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    let model_id: BlobId = put.json()["newlyCreated"]["blobObject"]["blobId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // A fresh gateway: the model is in no cache and must be filled from the nodes.
    s.restart_gateway(inference_config(dir.path())).await;
    for (i, (inputs, outputs)) in cases("mlp").into_iter().enumerate() {
        let body = json!({"inputs": inputs, "proof": "store"});
        let reply = infer(&s, &model_id, &body).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let answer = reply.json();
        assert_eq!(answer["model"], model_id.to_string());
        assert_outputs_close(&answer["outputs"], &outputs);
        if i > 0 {
            continue;
        }
        let proof_id = answer["proof"]["blob_id"].as_str().unwrap().to_owned();
        assert!(answer["proof"]["signature"].is_string());
        let addr = s.addr;
        let body_ok = json!({"inputs": inputs});
        let ok = tokio::task::spawn_blocking({
            let proof_id = proof_id.clone();
            move || verify_proof(addr, &proof_id, &body_ok)
        })
        .await
        .unwrap();
        assert!(
            ok.status.success(),
            "verify-proof failed: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ok: "));

        let mut tampered = json!({"inputs": inputs});
        let first = tampered["inputs"]["x"]["data"][0].as_f64().unwrap();
        tampered["inputs"]["x"]["data"][0] = json!(first + 1.0);
        let bad = tokio::task::spawn_blocking({
            let proof_id = proof_id.clone();
            move || verify_proof(addr, &proof_id, &tampered)
        })
        .await
        .unwrap();
        assert!(!bad.status.success(), "tampered inputs passed verify-proof");
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(stderr.contains("inputs do not match"), "{stderr}");

        // A forged proof: the stored one with its record changed after signing, published
        // as a blob of its own. The signature check names the failure.
        let stored = s.get(&format!("/v1/blobs/{proof_id}")).await;
        let mut forged: Value = serde_json::from_slice(stored.bytes()).unwrap();
        forged["proof"]["record"]["created_at_ms"] = json!(1);
        let put = s
            .send_body(
                Method::PUT,
                "/v1/blobs",
                &[],
                forged.to_string().into_bytes(),
            )
            .await;
        assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
        let forged_id = put.json()["newlyCreated"]["blobObject"]["blobId"]
            .as_str()
            .unwrap()
            .to_owned();
        let body_ok = json!({"inputs": inputs});
        let bad = tokio::task::spawn_blocking(move || verify_proof(addr, &forged_id, &body_ok))
            .await
            .unwrap();
        assert!(!bad.status.success(), "a forged proof passed verify-proof");
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(stderr.contains("signature check failed"), "{stderr}");
    }
    assert_eq!(
        s.metric("gateway_fills_started_total").await,
        Some(1.0),
        "one fill of the model; proofs are cached as they are published"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_proofs_and_the_cnn_match_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let id = s.store(&model("cnn")).await;
    for (inputs, outputs) in cases("cnn") {
        let reply = infer(&s, &id, &json!({ "inputs": inputs })).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let answer = reply.json();
        assert_outputs_close(&answer["outputs"], &outputs);
        assert!(answer["proof"]["record"].is_object(), "inline by default");
        assert!(answer["proof"].get("blob_id").is_none());
        // f32 outputs are written at f32 precision (at most 9 significant digits round-trip),
        // not widened to f64 first (0.1f32 would read 0.10000000149011612).
        let text = std::str::from_utf8(reply.bytes()).unwrap();
        let digits = most_significant_digits_in_data(text);
        assert!((1..=9).contains(&digits), "{digits} digits in {text}");
    }
    s.stop().await;
}

/// The most significant digits of any number in a `"data":[..]` array of a JSON text
/// (0 when there is none).
fn most_significant_digits_in_data(text: &str) -> usize {
    let mut most = 0;
    for array in text.split("\"data\":[").skip(1) {
        let array = array.split(']').next().unwrap();
        for number in array.split(',').filter(|n| *n != "null") {
            let mantissa = number
                .trim_start_matches('-')
                .split(['e', 'E'])
                .next()
                .unwrap();
            let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
            let significant = digits.trim_start_matches('0').trim_end_matches('0');
            most = most.max(significant.len());
        }
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_share_one_fill_and_one_plan_build() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let id = s.store(&model("mlp")).await;
    let (inputs, outputs) = cases("mlp").remove(0);
    let body = json!({ "inputs": inputs });
    let s = std::sync::Arc::new(s);
    let requests: Vec<_> = (0..64)
        .map(|_| {
            let (s, body) = (s.clone(), body.clone());
            tokio::spawn(async move { infer(&s, &id, &body).await })
        })
        .collect();
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_outputs_close(&reply.json()["outputs"], &outputs);
    }
    assert_eq!(s.metric("gateway_fills_started_total").await, Some(1.0));
    let stats = s.api().inference_stats();
    assert_eq!(stats.plan_builds, 1, "{stats:?}");
    assert_eq!(stats.model_loads, 1, "{stats:?}");
    // The engine's metrics land in the gateway's own registry.
    assert_eq!(
        s.metric("walrus_inference_plan_builds_total").await,
        Some(1.0)
    );
    assert_eq!(
        s.metric("walrus_inference_plan_cache_entries").await,
        Some(1.0)
    );
    assert_eq!(
        s.metric("walrus_inference_model_parse_seconds_count").await,
        Some(1.0),
        "one timed parse"
    );
    let s = std::sync::Arc::try_unwrap(s).ok().expect("no other owner");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_invalid_model_unknown_model_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scenario::with(
        SimConfig {
            n_shards: 10,
            nodes: 4,
            ..SimConfig::default()
        },
        gateway::GatewayConfig {
            max_model_size: 64 << 10,
            ..inference_config(dir.path())
        },
    )
    .await;
    let mlp = s.store(&model("mlp")).await;
    let (inputs, _) = cases("mlp").remove(0);

    // Wrong input name: 400 naming it.
    let mut wrong = json!({ "inputs": inputs });
    let x = wrong["inputs"]["x"].take();
    wrong["inputs"] = json!({ "nope": x });
    let reply = infer(&s, &mlp, &wrong).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nope"));
    // Not JSON: 400.
    let reply = s
        .send_body(
            Method::POST,
            &format!("/v1/inference/{mlp}"),
            &[],
            b"{".to_vec(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // A blob that is not an ONNX model, and one with an unsupported operator: 422.
    let garbage = s.store(b"certainly not protobuf, nor onnx").await;
    let reply = infer(&s, &garbage, &json!({ "inputs": inputs })).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.reason(), "INVALID_MODEL");
    let unsupported = s.store(&model("unsupported_op")).await;
    let reply = infer(&s, &unsupported, &json!({ "inputs": inputs })).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.reason(), "UNSUPPORTED_OPERATOR");

    // Never stored: 404 as for GET /v1/blobs.
    let unknown = codec::blob_id(10, b"no such model").unwrap();
    let reply = infer(&s, &unknown, &json!({ "inputs": inputs })).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.reason(), "BLOB_NOT_FOUND");

    // Above --max-model-size: 413 from the metadata, no fill started.
    let fills = s.metric("gateway_fills_started_total").await;
    let big = s.store(&vec![7u8; 100 << 10]).await;
    let reply = infer(&s, &big, &json!({ "inputs": inputs })).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.reason(), "MODEL_TOO_LARGE");
    assert_eq!(s.metric("gateway_fills_started_total").await, fills);

    // Other methods, and warm-up behind the admin token.
    let reply = s
        .request(Method::GET, &format!("/v1/inference/{mlp}"), &[])
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let warm = format!("/v1/models/{mlp}/warm");
    let reply = s.send_body(Method::POST, &warm, &[], Vec::new()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let auth = format!("Bearer {ADMIN}");
    let reply = s
        .send_body(Method::POST, &warm, &[("authorization", &auth)], Vec::new())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()["model"], mlp.to_string());
    let builds = s.api().inference_stats().plan_builds;
    let reply = infer(&s, &mlp, &json!({ "inputs": inputs })).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        s.api().inference_stats().plan_builds,
        builds,
        "the warmed plan serves the first request"
    );
    s.stop().await;
}
