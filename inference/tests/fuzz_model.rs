//! Fuzz-style property test of ONNX model parsing and planning (`model::load`, `Plan::build`):
//! a model is a blob anyone can store, and `POST /v1/inference/{id}` names it. The committed
//! test models are mutated (truncated, extended, bytes flipped or inserted) and loaded, then run
//! on their reference inputs when they still load: every case must end in a model, an
//! `InvalidModel`/`UnsupportedOperator` error or a bad-input error within a bound, never a
//! panic out of the engine or an abort. Cases are bounded: each loads a model through tract.

mod common;

use codec::BlobId;
use fuzzkit::{mutated, Edits, Mutation};
use inference::{EngineConfig, Identity, InferenceRequest, RequestInputs};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Edits of a model file: truncations, appended junk, flipped and inserted bytes.
fn mutation() -> impl Strategy<Value = Mutation> {
    Edits {
        max_run: 6,
        remove: false,
        ..Edits::default()
    }
    .strategy()
}

#[test]
fn mutated_models_load_or_are_refused() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let names = ["mlp", "batch_mlp", "multi_io", "batch_mean", "attention"];
    let identity = Identity::from_seed([9; 32]);
    let (engine, _, models) = common::engine_with(EngineConfig::default());
    let (loaded, ran) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = TestRunner::new(Config {
        cases: 192,
        ..Config::default()
    });
    let strategy = (
        prop::sample::select(names.to_vec()),
        prop::collection::vec(mutation(), 1..4),
        any::<[u8; 32]>(),
    );
    runner
        .run(&strategy, |(name, mutations, id)| {
            let bytes = mutated(common::model_bytes(name).to_vec(), &mutations);
            // A model is addressed by its Blob ID; any fresh ID keeps cases apart.
            let model = BlobId(id);
            models.insert(model, bytes.into());
            let case = &common::reference(name).cases[0];
            let request = InferenceRequest {
                inputs: RequestInputs::Named(case.inputs.clone()),
                ..InferenceRequest::named(Default::default())
            };
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), async {
                    if engine.spec(model).await.is_ok() {
                        loaded.fetch_add(1, Ordering::Relaxed);
                        if engine.infer(model, request, &identity).await.is_ok() {
                            ran.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .await
            })
            .map_err(|_| TestCaseError::fail(format!("{name}: no answer within 30 s")))
        })
        .unwrap();
    // Mutations that keep a model loadable (and runnable) are part of the mix.
    let (loaded, ran) = (loaded.into_inner(), ran.into_inner());
    assert!(loaded >= 5 && ran >= 1, "loaded {loaded}, ran {ran} of 192");
}
