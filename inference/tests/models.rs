//! Every committed model against onnxruntime's outputs, and the model-level failures
//! (invalid bytes, unsupported operators, unknown or oversize models).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use inference::{
    Engine, EngineConfig, InferenceError, InferenceRequest, StaticModels, UnknownModel,
};

#[tokio::test]
async fn every_model_matches_onnxruntime() {
    let (engine, ids, _) = engine_with(EngineConfig::default());
    for name in [
        "mlp",
        "cnn",
        "attention",
        "batch_mlp",
        "batch_mean",
        "multi_io",
    ] {
        let reference = reference(name);
        assert!(reference.producer.starts_with("onnxruntime"));
        for (i, case) in reference.cases.into_iter().enumerate() {
            let outcome = engine
                .run(id_of(&ids, name), InferenceRequest::named(case.inputs))
                .await
                .unwrap_or_else(|e| panic!("{name} case {i}: {e}"));
            assert_eq!(
                outcome.outputs.keys().collect::<Vec<_>>(),
                case.outputs.keys().collect::<Vec<_>>(),
                "{name}: output names"
            );
            for (out, expected) in &case.outputs {
                assert_close(&format!("{name}/{out}"), &outcome.outputs[out], expected);
            }
        }
    }
}

#[tokio::test]
async fn a_single_input_may_be_unnamed() {
    let (engine, ids, _) = engine_with(EngineConfig::default());
    let case = reference("mlp").cases.remove(0);
    let x = serde_json::to_string(&case.inputs["x"]).unwrap();
    let request = engine
        .parse_request(format!(r#"{{"inputs":{x}}}"#).as_bytes())
        .unwrap();
    let outcome = engine.run(id_of(&ids, "mlp"), request).await.unwrap();
    assert_close("mlp/y", &outcome.outputs["y"], &case.outputs["y"]);
    // The proof commits to the named form, so both spellings of a request hash the same.
    assert_eq!(outcome.inputs, case.inputs);
}

#[tokio::test]
async fn invalid_model_bytes_are_422_and_remembered() {
    let models = StaticModels::new();
    let bad = Bytes::from_static(b"\x08\x07this is not an onnx model at all");
    let id = blob_id(&bad);
    models.insert(id, bad);
    let engine = Engine::new(EngineConfig::default(), Arc::new(models));
    let case = reference("mlp").cases.remove(0);
    for _ in 0..3 {
        let err = engine
            .run(id, InferenceRequest::named(case.inputs.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, InferenceError::InvalidModel { .. }),
            "{err:?}"
        );
        assert_eq!(err.http_status(), 422);
    }
    assert_eq!(
        engine.stats().model_loads,
        1,
        "the failure is remembered, not re-parsed"
    );
}

#[tokio::test]
async fn unsupported_operators_are_named() {
    let (engine, ids, _) = engine_with(EngineConfig::default());
    let err = engine
        .spec(id_of(&ids, "unsupported_op"))
        .await
        .unwrap_err();
    match &err {
        InferenceError::UnsupportedOperator { operators, .. } => {
            assert_eq!(operators, &vec!["WalrusFrobnicate".to_string()])
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.http_status(), 422);
    assert!(err.to_string().contains("WalrusFrobnicate"));
}

#[tokio::test]
async fn external_data_is_refused_without_touching_the_file_system() {
    let models = StaticModels::new();
    let bytes = model_bytes("external_data");
    let id = blob_id(&bytes);
    models.insert(id, bytes);
    let engine = Engine::new(EngineConfig::default(), Arc::new(models));
    let err = engine.spec(id).await.unwrap_err();
    match &err {
        InferenceError::InvalidModel { reason, .. } => {
            assert!(reason.contains("external data"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unknown_models_surface_the_loaders_error() {
    let (engine, _, _) = engine_with(EngineConfig::default());
    let missing = blob_id(b"no such model");
    let err = engine.spec(missing).await.unwrap_err();
    assert!(
        err.loader_error()
            .and_then(|e| e.downcast_ref::<UnknownModel>())
            .is_some(),
        "{err:?}"
    );
    // Not the model's fault, so not remembered: a later put of the blob works at once.
    assert_eq!(err.http_status(), 502);
}

#[tokio::test]
async fn oversize_models_are_413() {
    let config = EngineConfig {
        max_model_bytes: 5000,
        ..EngineConfig::default()
    };
    let (engine, ids, _) = engine_with(config);
    let err = engine.spec(id_of(&ids, "cnn")).await.unwrap_err();
    assert!(
        matches!(err, InferenceError::ModelTooLarge { .. }),
        "{err:?}"
    );
    assert_eq!(err.http_status(), 413);
    engine
        .spec(id_of(&ids, "mlp"))
        .await
        .expect("a small model still loads");
}

#[tokio::test]
async fn specs_come_from_the_graph() {
    let (engine, ids, _) = engine_with(EngineConfig::default());
    let spec = engine.spec(id_of(&ids, "batch_mlp")).await.unwrap();
    assert_eq!(spec.inputs.len(), 1);
    assert_eq!(spec.inputs[0].name, "x");
    assert_eq!(
        spec.inputs[0].dims,
        vec![inference::Dim::Symbol("N".into()), inference::Dim::Fixed(8)]
    );
    assert_eq!(spec.outputs[0].name, "y");
    // The export calls the output's batch axis `unk__out`; shape analysis ties it to `N`.
    assert_eq!(
        spec.outputs[0].dims,
        Some(vec![
            inference::Dim::Symbol("N".into()),
            inference::Dim::Fixed(3)
        ])
    );
    assert!(spec.paddable.contains("N"));
}
