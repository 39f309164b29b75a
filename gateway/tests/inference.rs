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
    start_with(inference_config(dir)).await
}

async fn start_with(config: gateway::GatewayConfig) -> Scenario {
    Scenario::with(
        SimConfig {
            n_shards: 10,
            nodes: 4,
            ..SimConfig::default()
        },
        config,
    )
    .await
}

/// Proofs stored one blob each (`--proof-batch-max 0`), as before quilts.
fn blob_proofs_config(dir: &std::path::Path) -> gateway::GatewayConfig {
    gateway::GatewayConfig {
        proof_batch_max: 0,
        ..inference_config(dir)
    }
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
    let mut s = start_with(blob_proofs_config(dir.path())).await;
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
    s.restart_gateway(blob_proofs_config(dir.path())).await;
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

/// `inputs` (the JSON form of a reference case) rewritten with `data_b64`, asking for base64
/// outputs too, with the given proof mode.
fn base64_body(inputs: &Value, proof: inference::ProofMode) -> Value {
    let tensors: inference::Tensors = serde_json::from_value(inputs.clone()).unwrap();
    let mut request = inference::InferenceRequest::named(tensors);
    request.proof = Some(proof);
    request.output_encoding = inference::TensorEncoding::Base64;
    serde_json::from_slice(&request.to_json(inference::TensorEncoding::Base64)).unwrap()
}

/// The outputs of a base64 answer as the JSON form, so they compare with the references; every
/// output must carry `data_b64` and no `data`.
fn decode_outputs(outputs: &Value) -> Value {
    for (name, t) in outputs.as_object().unwrap() {
        assert!(t["data_b64"].is_string(), "{name}: {t}");
        assert!(t.get("data").is_none(), "{name}: {t}");
    }
    let tensors: inference::Tensors = serde_json::from_value(outputs.clone()).unwrap();
    serde_json::to_value(&tensors).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_in_and_out_match_onnxruntime_and_prove_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    for name in ["multi_io", "cnn"] {
        let id = s.store(&model(name)).await;
        for (inputs, outputs) in cases(name) {
            let body = base64_body(&inputs, inference::ProofMode::Store);
            assert!(body.to_string().contains("data_b64"));
            let reply = infer(&s, &id, &body).await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
            let b64 = reply.json();
            assert_outputs_close(&decode_outputs(&b64["outputs"]), &outputs);

            // The same inputs as JSON numbers: the same commitments.
            let reply = infer(&s, &id, &json!({ "inputs": inputs })).await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
            let plain = reply.json();
            assert_outputs_close(&plain["outputs"], &outputs);
            for field in ["inputs_blake3", "outputs_blake3", "outputs", "model"] {
                assert_eq!(
                    b64["proof"]["record"][field], plain["proof"]["record"][field],
                    "{name}: {field}"
                );
            }

            // verify-proof takes the inputs file in either form. Proofs are batched into
            // quilts by default: the proof is a patch, read by its quilt patch ID.
            assert!(b64["proof"]["blob_id"].is_null(), "{b64}");
            assert!(b64["proof"]["quilt_id"].is_string(), "{b64}");
            let proof_id = b64["proof"]["quilt_patch_id"].as_str().unwrap().to_owned();
            let addr = s.addr;
            for file in [body.clone(), json!({ "inputs": inputs })] {
                let proof_id = proof_id.clone();
                let out = tokio::task::spawn_blocking(move || verify_proof(addr, &proof_id, &file))
                    .await
                    .unwrap();
                assert!(
                    out.status.success(),
                    "verify-proof failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_base64_is_400_naming_the_input_and_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let mlp = s.store(&model("mlp")).await;
    for (body, needle) in [
        (
            json!({"inputs": {"x": {"shape": [1, 16], "dtype": "f32", "data_b64": "AAAA"}}}),
            "data_b64 holds 3 bytes; shape [1, 16] of f32 needs 16 x 4 = 64",
        ),
        (
            json!({"inputs": {"x": {"shape": [1, 1], "dtype": "f32", "data_b64": "AA*AAA=="}}}),
            "not valid base64",
        ),
        (
            json!({"inputs": {"x": {"shape": [1], "dtype": "u8", "data": [1], "data_b64": "AQ=="}}}),
            "both `data` and `data_b64`",
        ),
        (
            json!({"inputs": {"x": {"shape": [1], "dtype": "u8"}}}),
            "neither `data` nor `data_b64`",
        ),
    ] {
        let reply = infer(&s, &mlp, &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.contains("`x`") && message.contains(needle),
            "{message} lacks `x` or {needle}"
        );
    }
    let reply = infer(
        &s,
        &mlp,
        &json!({"inputs": {"x": {"shape": [1, 4], "dtype": "f32", "data": [1, 2, 3, 4]}},
                "output_encoding": "hex"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // The element limit (4 Mi) holds for base64 too, checked from the shape before decoding.
    let reply = infer(
        &s,
        &mlp,
        &json!({"inputs": {"x": {"shape": [1, 4194305], "dtype": "u8", "data_b64": "AA=="}}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    // So does the body limit: a declared length above 64 MiB is refused before it is read.
    let too_big = ((64u64 << 20) + 1).to_string();
    let status = declared_length_status(s.addr, &format!("/v1/inference/{mlp}"), &too_big).await;
    assert_eq!(status, 413);
    s.stop().await;
}

/// The status a gateway answers to a POST that declares `length` bytes and sends only the start
/// of a base64 body.
async fn declared_length_status(addr: std::net::SocketAddr, path: &str, length: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n\r\n{{\"inputs\":{{\"x\":{{\"shape\":[1],\"dtype\":\"u8\",\
         \"data_b64\":\"AAAA"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // Read until the status line is complete (or the gateway closes), bounded in time.
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the gateway answers");
    let line = String::from_utf8_lossy(&answer);
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {line:?}"))
}
