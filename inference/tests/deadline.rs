//! Deadlines that stop the computation: a run past `inference_timeout` ends at the next operator
//! boundary (its slot free again, counted as cancelled), the caller gets `Timeout` at the
//! deadline, a run whose caller goes away stops too, and a run whose estimated working memory is
//! above `max_run_bytes` is refused before it runs. The model is a chain of MatMuls whose run time
//! scales with the rows sent (`models/matmul_chain.rs`): 4096 rows take several seconds here, in
//! 160 operators of a few tens of milliseconds each.

#[path = "models/matmul_chain.rs"]
mod matmul_chain;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codec::BlobId;
use inference::{
    Engine, EngineConfig, InferenceError, InferenceRequest, StaticModels, TensorData, TensorValues,
    Tensors,
};

const WIDTH: usize = 512;
const DEPTH: usize = 160;
/// Rows of the long run: 4096 · 512² · 160 ≈ 1.7e11 multiply-adds, seconds on any CPU.
const LONG: usize = 4096;

fn rows(n: usize) -> InferenceRequest {
    let x = TensorData::new(vec![n, WIDTH], TensorValues::F32(vec![0.5; n * WIDTH])).unwrap();
    InferenceRequest::named(Tensors::from([("x".to_owned(), x)]))
}

fn engine(config: EngineConfig) -> (Engine, BlobId) {
    let bytes = Bytes::from(matmul_chain::matmul_chain(WIDTH, DEPTH));
    let model = BlobId(*blake3::hash(&bytes).as_bytes());
    let models = StaticModels::new();
    models.insert(model, bytes);
    let config = EngineConfig {
        concurrency: 1,
        max_queued: 4,
        queue_timeout: Duration::from_secs(30),
        ..config
    };
    (Engine::new(config, Arc::new(models)), model)
}

/// Wait (bounded) until no run holds a slot.
async fn until_idle(engine: &Engine, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if engine.stats().running == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_deadline_stops_and_frees_its_slot() {
    let deadline = Duration::from_millis(1500);
    let (engine, model) = engine(EngineConfig {
        inference_timeout: deadline,
        ..EngineConfig::default()
    });
    engine.run(model, rows(1)).await.unwrap();
    // The deadline counts from the run slot, so the plan build before it does not shorten it.
    let started = Instant::now();
    let err = engine.run(model, rows(LONG)).await.unwrap_err();
    let answered = started.elapsed();
    assert!(
        matches!(err, InferenceError::Timeout(d) if d == deadline),
        "{err:?}"
    );
    assert_eq!(err.http_status(), 504);
    assert!(answered >= deadline, "answered after {answered:?}");
    assert!(
        answered < deadline + Duration::from_secs(4),
        "answered after {answered:?}"
    );
    // The run itself ended at an operator boundary: the slot is free again and it counts as
    // cancelled. (Without the boundary check it computes to the end, holding the slot.)
    assert!(
        until_idle(&engine, Duration::from_secs(5)).await,
        "{:?}",
        engine.stats()
    );
    assert_eq!(engine.stats().runs_cancelled, 1);

    // A small request right after is served by the freed slot.
    let small = engine.run(model, rows(1)).await.unwrap();
    assert_eq!(small.outputs["y"].shape(), &[1, WIDTH]);

    // The stopped run measured the engine's rate: the same request again is now obviously
    // beyond the deadline (several deadlines at that rate) and refused before it runs.
    let err = engine.run(model, rows(LONG)).await.unwrap_err();
    assert_eq!(err.http_status(), 413, "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("1500 ms inference deadline (--inference-timeout-ms)"),
        "{message}"
    );
    assert!(message.contains("x: f32[4096, 512]"), "{message}");
    assert_eq!(engine.stats().runs_cancelled, 1);
    // Requests that fit are not: 8 rows are far within it.
    engine.run(model, rows(8)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_caller_goes_away_stops() {
    let (engine, model) = engine(EngineConfig {
        inference_timeout: Duration::from_secs(600),
        ..EngineConfig::default()
    });
    engine.warm(model, Some(rows(8))).await.unwrap();
    let runner = engine.clone();
    let task = tokio::spawn(async move { runner.run(model, rows(LONG)).await });
    // Wait until the long run holds the slot, then drop it as a disconnecting client would.
    let until = Instant::now() + Duration::from_secs(60);
    while engine.stats().running == 0 {
        assert!(Instant::now() < until, "the run never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    assert!(
        until_idle(&engine, Duration::from_secs(5)).await,
        "{:?}",
        engine.stats()
    );
    assert_eq!(engine.stats().runs_cancelled, 1);
    engine.run(model, rows(1)).await.unwrap();
}

#[tokio::test]
async fn a_run_beyond_the_memory_limit_is_refused_before_it_runs() {
    let (engine, model) = engine(EngineConfig {
        max_run_bytes: 4 << 20,
        ..EngineConfig::default()
    });
    // 1024 rows: every activation is 2 MiB; two alive at once (an operator's input and
    // output) are above 4 MiB.
    let err = engine.run(model, rows(1024)).await.unwrap_err();
    assert_eq!(err.http_status(), 413, "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("per-run inference memory limit of 4194304 bytes"),
        "{message}"
    );
    assert!(message.contains("x: f32[1024, 512]"), "{message}");
    assert_eq!(engine.stats().runs_cancelled, 0);

    // Small requests still run; the estimate follows liveness, not the sum of every
    // intermediate (which would be DEPTH activations).
    engine.run(model, rows(16)).await.unwrap();
    let report = engine.warm(model, Some(rows(256))).await.unwrap();
    let activation = (256 * WIDTH * 4) as u64;
    let weights = (WIDTH * WIDTH * 4) as u64;
    assert!(
        report.plan_bytes < 4 * weights + 8 * activation,
        "estimate {} bytes",
        report.plan_bytes
    );
    assert!(
        report.plan_bytes >= 2 * activation,
        "estimate {} bytes",
        report.plan_bytes
    );
}
