//! Engine behaviour: single flight, bucketing, LRU bounds, bad inputs, warming.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use codec::BlobId;
use common::*;
use inference::{
    Engine, EngineConfig, InferenceError, InferenceRequest, LoadFuture, ModelLoader, StaticModels,
    TensorData, TensorValues, Tensors,
};

/// Counts how often the engine asks for model bytes (a gateway fill each).
struct CountingLoader {
    inner: StaticModels,
    loads: AtomicUsize,
}

impl ModelLoader for CountingLoader {
    fn load(&self, model: BlobId) -> LoadFuture {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(model)
    }
}

fn batch(n: usize) -> Tensors {
    let data: Vec<f32> = (0..n * 8).map(|i| (i as f32 * 0.37).sin()).collect();
    [(
        "x".to_string(),
        TensorData::new(vec![n, 8], TensorValues::F32(data)).unwrap(),
    )]
    .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_first_requests_cause_one_fill_and_one_build() {
    let (_, ids, models) = engine_with(EngineConfig::default());
    let loader = Arc::new(CountingLoader {
        inner: models,
        loads: AtomicUsize::new(0),
    });
    let engine = Engine::new(
        EngineConfig {
            max_queued: 1024,
            ..EngineConfig::default()
        },
        loader.clone(),
    );
    let model = id_of(&ids, "cnn");
    let case = reference("cnn").cases.remove(0);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let engine = engine.clone();
        let inputs = case.inputs.clone();
        tasks.push(tokio::spawn(async move {
            engine.run(model, InferenceRequest::named(inputs)).await
        }));
    }
    for t in tasks {
        let outcome = t.await.unwrap().unwrap();
        assert_close(
            "cnn/logits",
            &outcome.outputs["logits"],
            &case.outputs["logits"],
        );
    }
    let stats = engine.stats();
    assert_eq!(loader.loads.load(Ordering::SeqCst), 1, "one fill");
    assert_eq!(stats.model_loads, 1, "one parse");
    assert_eq!(stats.plan_builds, 1, "one plan build");
    assert_eq!(stats.plan_entries, 1);
    assert!(stats.plan_bytes > 0);
}

#[tokio::test]
async fn symbolic_axes_are_padded_to_buckets_and_outputs_sliced_back() {
    let config = EngineConfig {
        buckets: vec![4, 8],
        ..EngineConfig::default()
    };
    let (engine, ids, _) = engine_with(config);
    let model = id_of(&ids, "batch_mlp");
    // onnxruntime references for N = 1, 3 (bucket 4) and 5 (bucket 8).
    for case in reference("batch_mlp").cases {
        let outcome = engine
            .run(model, InferenceRequest::named(case.inputs))
            .await
            .unwrap();
        assert_close("batch_mlp/y", &outcome.outputs["y"], &case.outputs["y"]);
    }
    assert_eq!(
        engine.stats().plan_builds,
        2,
        "N=1 and N=3 share the bucket-4 plan"
    );
    engine
        .run(model, InferenceRequest::named(batch(2)))
        .await
        .unwrap();
    engine
        .run(model, InferenceRequest::named(batch(8)))
        .await
        .unwrap();
    assert_eq!(engine.stats().plan_builds, 2);
    // Past the largest bucket the exact length gets its own plan.
    let out = engine
        .run(model, InferenceRequest::named(batch(9)))
        .await
        .unwrap();
    assert_eq!(out.outputs["y"].shape(), &[9, 3]);
    assert_eq!(engine.stats().plan_builds, 3);
}

#[tokio::test]
async fn axes_reduced_away_are_never_padded() {
    let (engine, ids, _) = engine_with(EngineConfig {
        buckets: vec![4, 8],
        ..EngineConfig::default()
    });
    let model = id_of(&ids, "batch_mean");
    assert!(engine.spec(model).await.unwrap().paddable.is_empty());
    let case = reference("batch_mean").cases.remove(0);
    let outcome = engine
        .run(model, InferenceRequest::named(case.inputs))
        .await
        .unwrap();
    assert_close(
        "batch_mean/mean",
        &outcome.outputs["mean"],
        &case.outputs["mean"],
    );
}

#[tokio::test]
async fn padding_does_not_change_rows() {
    let exact = engine_with(EngineConfig {
        buckets: vec![],
        ..EngineConfig::default()
    });
    let padded = engine_with(EngineConfig {
        buckets: vec![64],
        ..EngineConfig::default()
    });
    let model = id_of(&exact.1, "batch_mlp");
    let a = exact
        .0
        .run(model, InferenceRequest::named(batch(3)))
        .await
        .unwrap();
    let b = padded
        .0
        .run(model, InferenceRequest::named(batch(3)))
        .await
        .unwrap();
    assert_close("y", &b.outputs["y"], &a.outputs["y"]);
    assert_eq!(
        a.inputs, b.inputs,
        "proofs commit to the inputs as sent, not the padding"
    );
}

#[tokio::test]
async fn plan_cache_is_lru_bounded_by_count_and_bytes() {
    let config = EngineConfig {
        buckets: vec![],
        max_plans: 2,
        ..EngineConfig::default()
    };
    let (engine, ids, _) = engine_with(config);
    let model = id_of(&ids, "batch_mlp");
    for n in [1, 2, 3] {
        engine
            .run(model, InferenceRequest::named(batch(n)))
            .await
            .unwrap();
    }
    assert_eq!(
        (engine.stats().plan_builds, engine.stats().plan_entries),
        (3, 2)
    );
    engine
        .run(model, InferenceRequest::named(batch(3)))
        .await
        .unwrap(); // hit, now most recent
    assert_eq!(engine.stats().plan_builds, 3);
    engine
        .run(model, InferenceRequest::named(batch(1)))
        .await
        .unwrap(); // evicted: rebuilt
    assert_eq!(engine.stats().plan_builds, 4);
    engine
        .run(model, InferenceRequest::named(batch(3)))
        .await
        .unwrap(); // still cached
    assert_eq!(engine.stats().plan_builds, 4);
    assert_eq!(engine.stats().plan_entries, 2);

    let config = EngineConfig {
        buckets: vec![],
        max_plan_bytes: 1,
        ..EngineConfig::default()
    };
    let (engine, ids, _) = engine_with(config);
    for n in [1, 2, 3] {
        engine
            .run(id_of(&ids, "batch_mlp"), InferenceRequest::named(batch(n)))
            .await
            .unwrap();
        assert_eq!(
            engine.stats().plan_entries,
            1,
            "over the byte bound only the newest plan stays"
        );
    }
}

/// A change to a good request.
type Edit = Box<dyn Fn(&mut Tensors)>;

#[tokio::test]
async fn bad_inputs_are_400_naming_the_input() {
    let (engine, ids, _) = engine_with(EngineConfig::default());
    let model = id_of(&ids, "multi_io");
    let good = reference("multi_io").cases.remove(0).inputs;
    let f32s = |shape: Vec<usize>| {
        let n = shape.iter().product();
        TensorData::new(shape, TensorValues::F32(vec![0.5; n])).unwrap()
    };
    let cases: Vec<(Edit, &str, &str)> = vec![
        (
            Box::new(|m| {
                m.remove("b");
            }),
            "b",
            "missing",
        ),
        (
            Box::new(move |m| {
                m.insert("c".into(), f32s(vec![2, 3]));
            }),
            "c",
            "no such input",
        ),
        (
            Box::new(move |m| {
                m.insert("b".into(), f32s(vec![2, 3]));
            }),
            "b",
            "expects i64",
        ),
        (
            Box::new(move |m| {
                m.insert("a".into(), f32s(vec![3, 2]));
            }),
            "a",
            "axis 0 is 3",
        ),
        (
            Box::new(move |m| {
                m.insert("a".into(), f32s(vec![6]));
            }),
            "a",
            "rank",
        ),
    ];
    for (edit, input, needle) in cases {
        let mut inputs = good.clone();
        edit(&mut inputs);
        let err = engine
            .run(model, InferenceRequest::named(inputs))
            .await
            .unwrap_err();
        match &err {
            InferenceError::BadInput { input: i, reason } => {
                assert_eq!(i, input);
                assert!(reason.contains(needle), "{reason} lacks {needle}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err.http_status(), 400);
    }
    // Unnamed input to a two-input model.
    let body = br#"{"inputs":{"shape":[2,3],"dtype":"f32","data":[1,2,3,4,5,6]}}"#;
    let err = engine
        .run(model, engine.parse_request(body).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 400, "{err}");
    assert_eq!(
        engine.stats().plan_builds,
        0,
        "nothing was built for bad requests"
    );
}

#[tokio::test]
async fn warming_builds_the_plan_ahead_of_traffic() {
    let (engine, ids, _) = engine_with(EngineConfig {
        buckets: vec![4],
        ..EngineConfig::default()
    });
    let model = id_of(&ids, "batch_mlp");
    let report = engine.warm(model, None).await.unwrap();
    assert!(report.built);
    assert_eq!(report.signature[0].2, vec![4, 8]);
    assert!(!engine.warm(model, None).await.unwrap().built);
    engine
        .run(model, InferenceRequest::named(batch(3)))
        .await
        .unwrap();
    assert_eq!(engine.stats().plan_builds, 1);
}
