//! Shared test fixtures: the committed models and their onnxruntime references, real Blob IDs,
//! and engines over them. Nothing here touches the network.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use codec::{BlobId, EncodingConfig};
use inference::{Engine, EngineConfig, StaticModels, TensorData, Tensors};
use serde::Deserialize;

pub const MODELS: [&str; 7] = [
    "mlp",
    "cnn",
    "attention",
    "batch_mlp",
    "batch_mean",
    "multi_io",
    "unsupported_op",
];

pub fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/models")
}

pub fn model_bytes(name: &str) -> Bytes {
    Bytes::from(std::fs::read(model_dir().join(format!("{name}.onnx"))).expect("committed model"))
}

/// The real Walrus Blob ID of `bytes` for a 10-shard committee.
pub fn blob_id(bytes: &[u8]) -> BlobId {
    let config = EncodingConfig::new(10).expect("valid committee");
    codec::compute_metadata(&config, bytes)
        .expect("encodable")
        .blob_id()
}

#[derive(Deserialize)]
pub struct Reference {
    pub producer: String,
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
pub struct Case {
    pub inputs: Tensors,
    pub outputs: Tensors,
}

pub fn reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(model_dir().join(format!("{name}.json")))
        .expect("committed reference");
    serde_json::from_str(&text).expect("reference parses")
}

/// An engine whose loader knows every committed model; returns it with the models' Blob IDs.
pub fn engine_with(config: EngineConfig) -> (Engine, Vec<(&'static str, BlobId)>, StaticModels) {
    let models = StaticModels::new();
    let mut ids = Vec::new();
    for name in MODELS {
        let bytes = model_bytes(name);
        let id = blob_id(&bytes);
        models.insert(id, bytes);
        ids.push((name, id));
    }
    (Engine::new(config, Arc::new(models.clone())), ids, models)
}

pub fn id_of(ids: &[(&str, BlobId)], name: &str) -> BlobId {
    ids.iter().find(|(n, _)| *n == name).expect("known model").1
}

/// `actual` is within 1e-4 relative (1e-6 absolute near zero) of `expected`, elementwise.
pub fn assert_close(name: &str, actual: &TensorData, expected: &TensorData) {
    assert_eq!(actual.dtype(), expected.dtype(), "{name}: dtype");
    assert_eq!(actual.shape(), expected.shape(), "{name}: shape");
    for i in 0..expected.len() {
        let a = actual.values().get_f64(i).unwrap();
        let e = expected.values().get_f64(i).unwrap();
        let tolerance = 1e-4 * e.abs() + 1e-6;
        assert!(
            (a - e).abs() <= tolerance,
            "{name}[{i}]: got {a}, onnxruntime {e}"
        );
    }
}
