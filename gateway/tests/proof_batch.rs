//! Stored inference proofs batched into quilts (issue 16), end to end on a simulated committee:
//! 100 concurrent stored-proof inferences make a few quilts and every proof verifies by its
//! quilt patch ID (all through the library function `verify-proof` uses, a sample through the
//! binary); a failed publish fails every request of its batch; `proof_batch_max = 1` is one
//! quilt per proof; a full proof queue and a proof too large for any quilt answer clearly.

mod harness;

use codec::quilt::QuiltPatchId;
use codec::BlobId;
use gateway::client::ContentId;
use harness::Scenario;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;
use storage_sim::{NodeFaults, SimConfig};

fn mlp() -> (Vec<u8>, Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../inference/tests/models");
    let model = std::fs::read(dir.join("mlp.onnx")).expect("committed model");
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mlp.json")).unwrap()).unwrap();
    (model, reference["cases"][0]["inputs"].clone())
}

/// The mlp's inputs with `x[0]` moved by `i`: every request its own proof.
fn inputs_for(inputs: &Value, i: usize) -> Value {
    let mut inputs = inputs.clone();
    let first = inputs["x"]["data"][0].as_f64().unwrap();
    inputs["x"]["data"][0] = json!(first + i as f64 / 8.0);
    inputs
}

fn config(dir: &std::path::Path) -> gateway::GatewayConfig {
    gateway::GatewayConfig {
        identity_key: Some(dir.join("identity.key")),
        inference_concurrency: Some(2),
        // Wide enough that a burst lands in one window whatever the machine's load.
        proof_batch: Duration::from_secs(1),
        ..harness::config()
    }
}

/// n = 100 (a quilt holds 66 patches), or n = 10 (6 patches).
async fn start(n_shards: u16, config: gateway::GatewayConfig) -> Scenario {
    Scenario::with(
        SimConfig {
            n_shards,
            nodes: 4,
            ..SimConfig::default()
        },
        config,
    )
    .await
}

/// `count` stored-proof inferences at once; the replies in request order.
async fn burst(s: &Scenario, model: BlobId, inputs: &Value, count: usize) -> Vec<harness::Reply> {
    let mut tasks = Vec::new();
    for i in 0..count {
        let body = json!({"inputs": inputs_for(inputs, i), "proof": "store"});
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            harness::send_body(
                addr,
                Method::POST,
                &format!("/v1/inference/{model}"),
                &[("content-type", "application/json")],
                body.to_string().into_bytes(),
            )
            .await
        }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    replies
}

fn placed(reply: &harness::Reply) -> (BlobId, QuiltPatchId) {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let proof = &reply.json()["proof"];
    assert!(proof["blob_id"].is_null(), "{proof}");
    let quilt: BlobId = proof["quilt_id"].as_str().unwrap().parse().unwrap();
    let patch: QuiltPatchId = proof["quilt_patch_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        patch.quilt_id, quilt,
        "the patch is in the quilt the answer names"
    );
    (quilt, patch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_stored_proofs_make_a_few_quilts_and_each_verifies_by_patch_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(100, config(dir.path())).await;
    let (model, inputs) = mlp();
    let model_id = s.store(&model).await;
    let replies = burst(&s, model_id, &inputs, 100).await;
    let places: Vec<(BlobId, QuiltPatchId)> = replies.iter().map(placed).collect();
    let quilts: BTreeSet<BlobId> = places.iter().map(|p| p.0).collect();
    let patches: BTreeSet<QuiltPatchId> = places.iter().map(|p| p.1).collect();
    assert_eq!(patches.len(), 100, "every proof has its own patch");
    // 66 patches fit a quilt of n = 100: two quilts at the least, a few at the most.
    assert!(
        (2..=4).contains(&quilts.len()),
        "{} quilts for 100 proofs",
        quilts.len()
    );
    // Batches are cut by encoded cost: a quilt of these proofs costs least per proof at 62
    // (63 to 66 squeeze the index into too few columns and need larger symbols).
    let mut per_quilt: HashMap<BlobId, usize> = HashMap::new();
    for (quilt, _) in &places {
        *per_quilt.entry(*quilt).or_default() += 1;
    }
    assert!(per_quilt.values().all(|&n| n <= 62), "{per_quilt:?}");
    let published = s
        .metric("gateway_proof_quilts_published_total")
        .await
        .unwrap();
    assert_eq!(published, quilts.len() as f64);
    assert_eq!(
        s.metric("gateway_proof_quilt_patches_total").await,
        Some(100.0)
    );
    assert_eq!(
        s.metric("gateway_proof_batch_proofs_sum").await,
        Some(100.0)
    );
    assert_eq!(s.metric("gateway_proof_batch_failures_total").await, None);

    // Every proof through the function `verify-proof` runs, by its patch ID.
    let base = format!("http://{}", s.addr);
    for (i, (_, patch)) in places.iter().enumerate() {
        let body = json!({"inputs": inputs_for(&inputs, i)}).to_string();
        let verified = gateway::verify::verify_stored_proof(
            &base,
            100,
            ContentId::Patch(*patch),
            body.as_bytes(),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("proof {i} ({patch}): {e}"));
        assert_eq!(verified.model, model_id);
        // Another request's inputs are not this proof's.
        if i == 0 {
            let other = json!({"inputs": inputs_for(&inputs, 1)}).to_string();
            let wrong = gateway::verify::verify_stored_proof(
                &base,
                100,
                ContentId::Patch(*patch),
                other.as_bytes(),
                None,
            )
            .await
            .unwrap_err();
            assert!(wrong.to_string().contains("inputs do not match"), "{wrong}");
        }
    }
    // A sample through the binary.
    for i in [0usize, 57, 99] {
        let patch = places[i].1.to_string();
        let inputs_file = dir.path().join(format!("inputs-{i}.json"));
        std::fs::write(
            &inputs_file,
            json!({"inputs": inputs_for(&inputs, i)}).to_string(),
        )
        .unwrap();
        let addr = s.addr;
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
                .args(["verify-proof", "--gateway", &format!("http://{addr}")])
                .arg("--inputs")
                .arg(&inputs_file)
                .arg(&patch)
                .output()
                .expect("the binary runs")
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "verify-proof {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
    }
    // The quilts were cached as they were published: the model is the only fill.
    assert_eq!(s.metric("gateway_fills_started_total").await, Some(1.0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_fails_every_request_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(10, config(dir.path())).await;
    let (model, inputs) = mlp();
    let model_id = s.store(&model).await;
    // The model is cached by a first (inline) run: the nodes are needed only to publish.
    let warm = harness::send_body(
        s.addr,
        Method::POST,
        &format!("/v1/inference/{model_id}"),
        &[],
        json!({"inputs": inputs}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(warm.status, StatusCode::OK, "{:?}", warm.body);
    for node in 0..4 {
        s.faults(
            node,
            NodeFaults {
                offline: true,
                ..NodeFaults::default()
            },
        )
        .await;
    }
    // 5 proofs: one batch (a quilt of n = 10 holds 6).
    let replies = burst(&s, model_id, &inputs, 5).await;
    let mut reasons = HashMap::new();
    for r in &replies {
        assert_ne!(r.status, StatusCode::OK, "a proof was reported stored");
        assert!(r.json()["proof"].is_null());
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains("cannot store the proof (in a quilt of 5 proofs)"),
            "{message}"
        );
        *reasons.entry((r.status, r.reason())).or_insert(0) += 1;
    }
    assert_eq!(reasons.len(), 1, "one failure, one answer: {reasons:?}");
    assert_eq!(
        s.metric("gateway_proof_batch_failures_total").await,
        Some(1.0)
    );
    assert_eq!(s.metric("gateway_proof_quilts_published_total").await, None);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_maximum_of_one_is_one_quilt_per_proof() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        10,
        gateway::GatewayConfig {
            proof_batch_max: 1,
            ..config(dir.path())
        },
    )
    .await;
    let (model, inputs) = mlp();
    let model_id = s.store(&model).await;
    let replies = burst(&s, model_id, &inputs, 6).await;
    let quilts: BTreeSet<BlobId> = replies.iter().map(|r| placed(r).0).collect();
    assert_eq!(quilts.len(), 6);
    assert_eq!(
        s.metric("gateway_proof_quilts_published_total").await,
        Some(6.0)
    );
    assert_eq!(
        s.metric("gateway_proof_batch_proofs_count").await,
        Some(6.0)
    );
    assert_eq!(s.metric("gateway_proof_batch_proofs_sum").await, Some(6.0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_proof_queue_is_503_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        10,
        gateway::GatewayConfig {
            proof_queue: 1,
            proof_batch: Duration::from_secs(3),
            ..config(dir.path())
        },
    )
    .await;
    let (model, inputs) = mlp();
    let model_id = s.store(&model).await;
    // Two at once: the queue holds one proof for its 3 s window, so the other is refused,
    // whichever came first.
    let replies = burst(&s, model_id, &inputs, 2).await;
    let (stored, refused): (Vec<_>, Vec<_>) =
        replies.iter().partition(|r| r.status == StatusCode::OK);
    assert_eq!((stored.len(), refused.len()), (1, 1));
    placed(stored[0]);
    let refused = refused[0];
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        refused.body
    );
    assert_eq!(refused.reason(), "AT_CAPACITY");
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("proofs waiting to be stored"), "{message}");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        s.metric("gateway_admission_refused_total{bound=\"proof_queue\"}")
            .await,
        Some(1.0)
    );
    // The queue is free again; an inline proof never queues.
    let again = burst(&s, model_id, &inputs, 1).await;
    placed(&again[0]);
    let inline = s
        .send_body(
            Method::POST,
            &format!("/v1/inference/{model_id}"),
            &[],
            json!({"inputs": inputs, "proof": "inline"})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(inline.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_that_fits_no_quilt_is_413_and_its_batch_is_split_to_find_out() {
    let dir = tempfile::tempdir().unwrap();
    // A proof is about 1 KB, so no quilt holding one fits a 512-byte upload limit: the batch
    // of three is split down to single proofs, each refused.
    let s = start(
        10,
        gateway::GatewayConfig {
            max_upload: 512,
            ..config(dir.path())
        },
    )
    .await;
    let (model, inputs) = mlp();
    let model_id = s.store(&model).await;
    let replies = burst(&s, model_id, &inputs, 3).await;
    for r in &replies {
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.body);
        assert_eq!(r.reason(), "PROOF_TOO_LARGE");
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("fits no quilt"), "{message}");
        assert!(message.contains("nothing was stored"), "{message}");
    }
    // One batch of 3, split into single proofs: 3 failures, nothing published.
    assert_eq!(
        s.metric("gateway_proof_batch_proofs_count").await,
        Some(1.0)
    );
    assert_eq!(
        s.metric("gateway_proof_batch_failures_total").await,
        Some(3.0)
    );
    assert_eq!(s.metric("gateway_proof_quilts_published_total").await, None);
    assert_eq!(
        s.metric("gateway_publishes_total{outcome=\"stored\"}")
            .await,
        Some(0.0)
    );
    s.stop().await;
}
