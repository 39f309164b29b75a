//! Proof records end to end: sign a real inference, store and reload the proof blob, re-run and
//! verify; every tampering fails the check that names it.

mod common;

use common::*;
use inference::{
    verify, Comparison, Encoded, EngineConfig, EngineTag, Identity, InferenceRequest, ProofBlob,
    TensorData, TensorEncoding, TensorValues, Tolerance, VerifyError,
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
async fn proofs_are_the_same_whichever_encoding_carried_the_tensors() {
    let identity = Identity::from_seed([9; 32]);
    let (engine, ids, _) = engine_with(EngineConfig::default());
    let model = id_of(&ids, "multi_io");
    let inputs = reference("multi_io").cases.remove(0).inputs;
    let sent = InferenceRequest::named(inputs.clone());
    let mut base64_out = sent.clone();
    base64_out.output_encoding = TensorEncoding::Base64;
    let bodies = [
        sent.to_json(TensorEncoding::Json),
        sent.to_json(TensorEncoding::Base64),
        base64_out.to_json(TensorEncoding::Base64),
    ];
    assert!(String::from_utf8_lossy(&bodies[1]).contains("data_b64"));
    let mut records = Vec::new();
    for body in &bodies {
        let request = engine.parse_request(body).unwrap();
        let response = engine.infer(model, request, &identity).await.unwrap();
        records.push((response.proof.record, response.outputs));
    }
    let (first, outputs) = &records[0];
    for (record, out) in &records[1..] {
        assert_eq!(record.inputs_blake3, first.inputs_blake3);
        assert_eq!(record.outputs_blake3, first.outputs_blake3);
        assert_eq!(record.outputs, first.outputs);
        assert_eq!(out, outputs);
    }

    // A proof made from the JSON body verifies against the base64 body, and the other way.
    let stored = |i: usize| {
        let response_blob = ProofBlob {
            outputs: records[i].1.clone(),
            proof: identity.sign(records[i].0.clone()),
        };
        ProofBlob::from_bytes(&response_blob.to_bytes()).unwrap()
    };
    for (proof, body) in [(0, &bodies[1]), (1, &bodies[0])] {
        let report = engine
            .verify_proof(
                &stored(proof),
                model,
                engine.parse_request(body).unwrap(),
                Tolerance::default(),
            )
            .await
            .unwrap();
        assert_eq!(report.comparison, Comparison::Bitwise);
    }
}

#[tokio::test]
async fn stored_proofs_keep_infinite_outputs() {
    let identity = Identity::from_seed([9; 32]);
    let (engine, ids, _) = engine_with(EngineConfig::default());
    let model = id_of(&ids, "multi_io");
    let mut inputs = reference("multi_io").cases.remove(0).inputs;
    let a = &inputs["a"];
    let TensorValues::F32(mut values) = a.values().clone() else {
        panic!("multi_io's `a` is f32")
    };
    values[0] = f32::INFINITY;
    let a = TensorData::new(a.shape().to_vec(), TensorValues::F32(values)).unwrap();
    inputs.insert("a".into(), a);
    // Only base64 can send an infinity.
    let body = InferenceRequest::named(inputs.clone()).to_json(TensorEncoding::Base64);
    let response = engine
        .infer(model, engine.parse_request(&body).unwrap(), &identity)
        .await
        .unwrap();
    assert_eq!(
        response.outputs["sum"].values().get_f64(0),
        Some(f64::INFINITY)
    );
    let blob = ProofBlob {
        outputs: response.outputs.clone(),
        proof: response.proof.clone(),
    };
    let bytes = blob.to_bytes();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        text.contains("\"data_b64\"") && !text.contains("\"data\""),
        "{text}"
    );
    let rerun = engine
        .run(model, engine.parse_request(&body).unwrap())
        .await
        .unwrap()
        .outputs;
    let stored = ProofBlob::from_bytes(&bytes).unwrap();
    verify(
        &stored,
        &model,
        &inputs,
        &rerun,
        &EngineTag::local(),
        Tolerance::default(),
    )
    .unwrap();

    // Written with JSON numbers (as blobs were before), the infinity comes back as NaN and the
    // outputs no longer match the signed hash: why blobs carry data_b64.
    let as_json = serde_json::to_vec(&serde_json::json!({
        "outputs": Encoded(&blob.outputs, TensorEncoding::Json),
        "proof": blob.proof,
    }))
    .unwrap();
    let old = ProofBlob::from_bytes(&as_json).unwrap();
    assert!(matches!(
        verify(
            &old,
            &model,
            &inputs,
            &rerun,
            &EngineTag::local(),
            Tolerance::default()
        ),
        Err(VerifyError::OutputsHash(_))
    ));
}

#[tokio::test]
async fn proof_blobs_with_json_number_outputs_still_read() {
    let f = fixture().await;
    let as_json = serde_json::to_vec(&serde_json::json!({
        "outputs": Encoded(&f.blob.outputs, TensorEncoding::Json),
        "proof": f.blob.proof,
    }))
    .unwrap();
    assert!(String::from_utf8_lossy(&as_json).contains("\"data\":["));
    let old = Fixture {
        blob: ProofBlob::from_bytes(&as_json).unwrap(),
        ..f
    };
    assert_eq!(check(&old).unwrap().comparison, Comparison::Bitwise);
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
