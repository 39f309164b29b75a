//! Fuzz-style property test of ONNX model parsing and planning (`model::load`, `Plan::build`):
//! a model is a blob anyone can store, and `POST /v1/inference/{id}` names it. The committed
//! test models are mutated (truncated, extended, bytes flipped or inserted) and loaded, then run
//! on their reference inputs when they still load: every case must end in a model, an
//! `InvalidModel`/`UnsupportedOperator` error or a bad-input error within a bound, never a
//! panic out of the engine or an abort. Cases are bounded: each loads a model through tract.

mod common;

use codec::BlobId;
use inference::{EngineConfig, Identity, InferenceRequest, RequestInputs};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Extend(Vec<u8>),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Extend),
        4 => (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        2 => (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..6))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

fn mutated(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    let at = |i: &prop::sample::Index, len: usize| if len == 0 { 0 } else { i.index(len) };
    for m in mutations {
        match m {
            Mutation::Truncate(i) => {
                let cut = at(i, bytes.len());
                bytes.truncate(cut);
            }
            Mutation::Extend(tail) => bytes.extend_from_slice(tail),
            Mutation::Flip(i, mask) => {
                if !bytes.is_empty() {
                    let p = at(i, bytes.len());
                    bytes[p] ^= mask;
                }
            }
            Mutation::Insert(i, b) => {
                let p = at(i, bytes.len() + 1);
                bytes.splice(p..p, b.iter().copied());
            }
        }
    }
    bytes
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
