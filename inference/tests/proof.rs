//! Proof records end to end: sign a real inference, store and reload the proof blob, re-run and
//! verify; every tampering fails the check that names it.

mod common;

use common::*;
use inference::{
    verify, Comparison, EngineConfig, EngineTag, Identity, InferenceRequest, ProofBlob,
    TensorValues, Tolerance, VerifyError,
};

struct Fixture {
    blob: ProofBlob,
    model: codec::BlobId,
    inputs: inference::Tensors,
    rerun: inference::Tensors,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::load_or_create(&dir.path().join("identity.key")).unwrap();
    let (engine, ids, _) = engine_with(EngineConfig::default());
    let model = id_of(&ids, "multi_io");
    let inputs = reference("multi_io").cases.remove(0).inputs;
    let response = engine
        .infer(model, InferenceRequest::named(inputs.clone()), &identity)
        .await
        .unwrap();
    assert_eq!(response.proof.record.public_key, identity.public_key_hex());
    // What the gateway publishes, and what verify-proof reads back.
    let stored = ProofBlob {
        outputs: response.outputs,
        proof: response.proof,
    }
    .to_bytes();
    let blob = ProofBlob::from_bytes(&stored).unwrap();
    let rerun = engine
        .run(model, InferenceRequest::named(inputs.clone()))
        .await
        .unwrap()
        .outputs;
    Fixture {
        blob,
        model,
        inputs,
        rerun,
    }
}

fn check(f: &Fixture) -> Result<inference::VerifyReport, VerifyError> {
    verify(
        &f.blob,
        &f.model,
        &f.inputs,
        &f.rerun,
        &EngineTag::local(),
        Tolerance::default(),
    )
}

fn bump_first(values: &mut TensorValues) {
    match values {
        TensorValues::F32(v) => v[0] += 1.0,
        TensorValues::I64(v) => v[0] += 1,
        _ => unreachable!("multi_io has f32 and i64 tensors"),
    }
}

fn bumped(t: &inference::TensorData) -> inference::TensorData {
    let mut values = t.values().clone();
    bump_first(&mut values);
    inference::TensorData::new(t.shape().to_vec(), values).unwrap()
}

#[tokio::test]
async fn sign_store_reload_rerun_verify() {
    let f = fixture().await;
    let report = check(&f).unwrap();
    assert_eq!(
        report.comparison,
        Comparison::Bitwise,
        "same engine and CPU: bitwise"
    );
    assert_eq!(report.max_abs_diff, 0.0);
    // On another CPU the same outputs pass within the tolerance.
    let elsewhere = EngineTag {
        cpu: "aarch64+neon".into(),
        ..EngineTag::local()
    };
    let report = verify(
        &f.blob,
        &f.model,
        &f.inputs,
        &f.rerun,
        &elsewhere,
        Tolerance::default(),
    )
    .unwrap();
    assert!(matches!(report.comparison, Comparison::Within(_)));
}

#[tokio::test]
async fn verify_proof_reruns_the_request_as_sent() {
    let f = fixture().await;
    let (engine, _, _) = engine_with(EngineConfig::default());
    let body = serde_json::json!({ "inputs": f.inputs }).to_string();
    let report = engine
        .verify_proof(
            &f.blob,
            f.model,
            engine.parse_request(body.as_bytes()).unwrap(),
            Tolerance::default(),
        )
        .await
        .unwrap();
    assert_eq!(report.comparison, Comparison::Bitwise);

    let mut tampered = f.inputs.clone();
    tampered.insert("a".into(), bumped(&f.inputs["a"]));
    let body = serde_json::json!({ "inputs": tampered }).to_string();
    let err = engine
        .verify_proof(
            &f.blob,
            f.model,
            engine.parse_request(body.as_bytes()).unwrap(),
            Tolerance::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::InputsHash { .. }), "{err}");
}

#[tokio::test]
async fn tampered_inputs_fail() {
    let mut f = fixture().await;
    let b = bumped(&f.inputs["b"]);
    f.inputs.insert("b".into(), b);
    assert!(matches!(check(&f), Err(VerifyError::InputsHash { .. })));
}

#[tokio::test]
async fn tampered_claimed_outputs_fail() {
    let mut f = fixture().await;
    let sum = bumped(&f.blob.outputs["sum"]);
    f.blob.outputs.insert("sum".into(), sum);
    assert!(matches!(check(&f), Err(VerifyError::OutputsHash(_))));
}

#[tokio::test]
async fn tampered_signature_or_record_fail() {
    let mut f = fixture().await;
    let mut sig = f.blob.proof.signature.clone().into_bytes();
    sig[0] = if sig[0] == b'0' { b'1' } else { b'0' };
    f.blob.proof.signature = String::from_utf8(sig).unwrap();
    assert!(matches!(check(&f), Err(VerifyError::Signature(_))));

    let mut f = fixture().await;
    f.blob.proof.record.created_at_ms += 1;
    assert!(matches!(check(&f), Err(VerifyError::Signature(_))));

    // A forger re-signs a changed record with a key of their own: the signature is valid, so
    // only pinning the gateway's key catches it.
    let mut f = fixture().await;
    let gateway_key = f.blob.proof.record.public_key.clone();
    f.blob.proof.check_signer(&gateway_key).unwrap();
    let forger = Identity::from_seed([5; 32]);
    let mut record = f.blob.proof.record.clone();
    record.public_key = forger.public_key_hex();
    f.blob.proof = forger.sign(record);
    f.blob.proof.verify_signature().unwrap();
    assert!(matches!(
        f.blob.proof.check_signer(&gateway_key),
        Err(VerifyError::Signer { .. })
    ));
}

#[tokio::test]
async fn a_rerun_that_differs_fails() {
    let mut f = fixture().await;
    let sum = bumped(&f.rerun["sum"]);
    f.rerun.insert("sum".into(), sum);
    match check(&f) {
        Err(VerifyError::OutputsDiffer { output, .. }) => assert_eq!(output, "sum"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn malformed_proof_blobs_are_rejected() {
    assert!(matches!(
        ProofBlob::from_bytes(b"{}"),
        Err(VerifyError::Malformed(_))
    ));
    assert!(matches!(
        ProofBlob::from_bytes(b"\xff"),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn tract_version_constant_matches_the_lock_file() {
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
    let after = lock
        .split("name = \"tract-onnx\"\n")
        .nth(1)
        .expect("tract-onnx in Cargo.lock");
    let version = after
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("version = ")
        .trim_matches('"');
    assert_eq!(version, inference::TRACT_VERSION);
}
