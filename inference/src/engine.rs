//! The engine: model and plan caches, bounded execution off the async reactor, metrics.
//!
//! A request's path: [`Engine::infer`] → model spec (parsed once per model, via the
//! [`ModelLoader`]) → [`signature`](crate::signature) (validate, pad to buckets) → plan cache
//! (single-flight, serialized builds on the blocking pool) → an execution slot (at most
//! `concurrency` runs, a bounded queue with a deadline) → `plan.run` on the blocking pool →
//! outputs sliced back → hashes → signed [`Proof`].
//!
//! Deadlines are real: a run checks its deadline (and whether its caller is still there) before
//! every operator, so a run past `inference_timeout` ends at the next operator boundary and gives
//! back its slot and its tensors then; the caller gets `Timeout` at the deadline itself.
//!
//! Requests obviously beyond the limits are refused (`TooLarge`, 413) before they take a slot:
//! a run whose plan's estimated working memory is above `max_run_bytes`, and a run whose
//! estimated arithmetic (tract's cost hints), at the fastest rate this engine has measured on a
//! run of real size, would take more than twice `inference_timeout`. The rate comes from
//! completed runs and from how far stopped runs got, so it is unknown (and nothing is refused
//! for time) until a run of at least [`RATE_SAMPLE_MIN_OPS`] operations has been seen.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codec::BlobId;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::cache::FlightCache;
use crate::error::InferenceError;
use crate::model::{self, Dim, LoadedModel, ModelSpec};
use crate::plan::{Plan, RunEnd, Stop, Stopped};
use crate::proof::{EngineTag, Identity, Proof};
use crate::signature::{self, bucket_for, InputSignature};
use crate::tensor::{
    canonical_hash, InferenceRequest, RequestInputs, RequestLimits, TensorData, TensorValues,
    Tensors,
};

/// Runs with fewer estimated operations than this do not measure the engine's rate: their fixed
/// costs would make it look slower than it is, and a low rate would refuse requests that fit.
pub const RATE_SAMPLE_MIN_OPS: u64 = 100_000_000;
/// A run estimated to take more than this many deadlines at the best measured rate is refused.
const OBVIOUSLY_OVER: f64 = 2.0;

/// Metric names (the `metrics` facade; the gateway installs the exporter).
pub mod metric {
    /// Counter, label `model`: inferences run to completion.
    pub const RUNS: &str = "walrus_inference_runs_total";
    /// Counter, label `kind` (`bad_input`, `queue_full`, `timeout`, `model`, `internal`): failed requests.
    pub const FAILURES: &str = "walrus_inference_failures_total";
    /// Counter, label `reason` (`deadline`, `abandoned`): runs stopped at an operator boundary
    /// before their end, because they reached their deadline or their request went away.
    pub const RUNS_CANCELLED: &str = "walrus_inference_runs_cancelled_total";
    /// Histogram, label `model`: seconds from slot acquired to outputs ready.
    pub const RUN_SECONDS: &str = "walrus_inference_run_seconds";
    /// Histogram: seconds spent waiting for an execution slot.
    pub const QUEUE_WAIT_SECONDS: &str = "walrus_inference_queue_wait_seconds";
    /// Counter: plan builds started (one per single flight).
    pub const PLAN_BUILDS: &str = "walrus_inference_plan_builds_total";
    /// Histogram: seconds per plan build (excluding the wait for the build lock).
    pub const PLAN_BUILD_SECONDS: &str = "walrus_inference_plan_build_seconds";
    /// Gauge: plans cached.
    pub const PLAN_CACHE_ENTRIES: &str = "walrus_inference_plan_cache_entries";
    /// Gauge: estimated bytes of cached plans (constants and one run's peak, each estimated).
    pub const PLAN_CACHE_BYTES: &str = "walrus_inference_plan_cache_bytes";
    /// Counter: model blobs parsed.
    pub const MODEL_LOADS: &str = "walrus_inference_model_loads_total";
    /// Histogram: seconds per model parse (ONNX decoding and analysis of the loaded bytes;
    /// excluding the load itself and the wait for the build lock).
    pub const MODEL_PARSE_SECONDS: &str = "walrus_inference_model_parse_seconds";
}

/// Where the engine's metrics go: the given recorder (a gateway's own), or the process-global one.
#[derive(Clone, Default)]
struct Metrics(Option<Arc<dyn metrics::Recorder + Send + Sync>>);

impl Metrics {
    fn emit(&self, record: impl FnOnce()) {
        match &self.0 {
            Some(recorder) => metrics::with_local_recorder(recorder.as_ref(), record),
            None => record(),
        }
    }
}

/// Error a [`ModelLoader`] returns; surfaced as [`InferenceError::ModelUnavailable`].
pub type LoadError = Box<dyn StdError + Send + Sync + 'static>;
/// Future a [`ModelLoader`] returns.
pub type LoadFuture = Pin<Box<dyn Future<Output = Result<Bytes, LoadError>> + Send + 'static>>;

/// Where model bytes come from. The gateway implements it with its cache and verified fill, so
/// every byte a plan is built from has been checked against the Blob ID.
///
/// Called only when a model must be parsed (first use, or after its parsed form was evicted),
/// and then once per single flight, however many requests are waiting.
pub trait ModelLoader: Send + Sync + 'static {
    fn load(&self, model: BlobId) -> LoadFuture;
}

/// A [`ModelLoader`] over models already in memory (tests, `verify-proof`, benchmarks).
#[derive(Default, Clone)]
pub struct StaticModels {
    models: Arc<Mutex<HashMap<BlobId, Bytes>>>,
}

/// [`StaticModels`] has no model under this ID.
#[derive(Debug, thiserror::Error)]
#[error("unknown model {0}")]
pub struct UnknownModel(pub BlobId);

impl StaticModels {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, model: BlobId, bytes: Bytes) {
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(model, bytes);
    }
}

impl ModelLoader for StaticModels {
    fn load(&self, model: BlobId) -> LoadFuture {
        let found = self
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&model)
            .cloned();
        Box::pin(async move { found.ok_or_else(|| Box::new(UnknownModel(model)) as LoadError) })
    }
}

/// Engine policy. Defaults suit a gateway node; every bound is a number here.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Runs at once (`--inference-concurrency`); default: available cores.
    pub concurrency: usize,
    /// Requests that may wait for a run slot; one more is refused at once with `QueueFull`.
    /// Default: 16 per slot.
    pub max_queued: usize,
    /// Longest wait for a run slot before `QueueFull` (`--inference-queue-wait-ms`). Default 5 s.
    pub queue_timeout: Duration,
    /// Longest run (`--inference-timeout-ms`) before `Timeout`; the run itself stops at the next
    /// operator boundary. Default 30 s.
    pub inference_timeout: Duration,
    /// Largest estimated working memory of one run (its plan's peak of tensors alive at once);
    /// a request above it is refused with `TooLarge` before it runs. The gateway sets it to
    /// `--inference-memory`. Default 4 GiB.
    pub max_run_bytes: u64,
    /// Plans kept (LRU). Default 32.
    pub max_plans: usize,
    /// Estimated plan bytes kept (LRU). Default 1 GiB.
    pub max_plan_bytes: u64,
    /// Parsed models kept for building further plans (LRU). Default 4.
    pub max_parsed_models: usize,
    /// Blob bytes of parsed models kept (LRU). Default 1 GiB.
    pub max_parsed_model_bytes: u64,
    /// Largest model blob accepted (`--max-model-size`). Default 256 MiB.
    pub max_model_bytes: u64,
    /// Lengths symbolic axes are padded up to; past the largest, the exact length is used.
    /// Default powers of two 1..=512. Empty: no padding.
    pub buckets: Vec<usize>,
    /// How long "not a usable model / unsupported operator" is remembered. Default 60 s.
    pub negative_ttl: Duration,
    /// Request parsing bounds.
    pub limits: RequestLimits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        EngineConfig {
            concurrency: cores,
            max_queued: cores * 16,
            queue_timeout: Duration::from_secs(5),
            inference_timeout: Duration::from_secs(30),
            max_run_bytes: 4 << 30,
            max_plans: 32,
            max_plan_bytes: 1 << 30,
            max_parsed_models: 4,
            max_parsed_model_bytes: 1 << 30,
            max_model_bytes: 256 << 20,
            buckets: (0..10).map(|i| 1usize << i).collect(),
            negative_ttl: Duration::from_secs(60),
            limits: RequestLimits::default(),
        }
    }
}

type PlanKey = (BlobId, InputSignature);

/// Runs ONNX models by Blob ID. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    loader: Arc<dyn ModelLoader>,
    models: Arc<FlightCache<BlobId, Arc<LoadedModel>>>,
    /// Specs outlive parsed models (they are tiny), so a warm model never needs its bytes again.
    specs: Mutex<HashMap<BlobId, Arc<ModelSpec>>>,
    plans: Arc<FlightCache<PlanKey, Arc<Plan>>>,
    /// One build (or parse) at a time: a model peaks near 3x its size while building.
    build_lock: Arc<Semaphore>,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    /// Runs stopped before their end (deadline or abandoned), and the measured rate.
    book: Arc<RunBook>,
    tag: EngineTag,
    metrics: Metrics,
    /// Test hook run on the blocking thread before each inference (to hold a run in place).
    #[cfg(test)]
    before_run: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// The result of one run, before signing.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub model: BlobId,
    /// Inputs as sent (named, unpadded): what a proof commits to.
    pub inputs: Tensors,
    pub outputs: Tensors,
    pub inputs_blake3: [u8; 32],
    pub outputs_blake3: [u8; 32],
}

/// The answer to `POST /v1/inference/{model}`: `{"model", "outputs", "proof"}`.
#[derive(Clone, Debug, Serialize)]
pub struct InferenceResponse {
    pub model: BlobId,
    pub outputs: Tensors,
    pub proof: Proof,
}

/// What `POST /v1/models/{id}/warm` did.
#[derive(Clone, Debug, Serialize)]
pub struct WarmReport {
    pub model: BlobId,
    /// The signature warmed: (input name, dtype, padded shape).
    pub signature: Vec<(String, crate::tensor::DType, Vec<usize>)>,
    /// Whether a plan build ran while this call waited (false: the plan was cached already).
    pub built: bool,
    /// Estimated plan bytes.
    pub plan_bytes: u64,
}

/// Counters for tests and the admin endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Plan builds started since the engine was made (single flights count once).
    pub plan_builds: u64,
    /// Model parses started.
    pub model_loads: u64,
    pub plan_entries: usize,
    pub plan_bytes: u64,
    pub parsed_models: usize,
    /// Requests waiting for a run slot now.
    pub queued: usize,
    /// Runs holding a slot now (a stopped run gives its slot back when it reaches the next
    /// operator boundary).
    pub running: usize,
    /// Runs stopped before their end since the engine was made (deadline or abandoned).
    pub runs_cancelled: u64,
}

impl Engine {
    /// An engine whose metrics go to the process-global recorder.
    pub fn new(config: EngineConfig, loader: Arc<dyn ModelLoader>) -> Engine {
        Self::build(config, loader, Metrics::default())
    }

    /// An engine whose metrics ([`metric`]) go to `recorder`, e.g. the gateway's own registry, so
    /// they appear beside its other metrics at `/metrics`.
    pub fn with_recorder(
        config: EngineConfig,
        loader: Arc<dyn ModelLoader>,
        recorder: Arc<dyn metrics::Recorder + Send + Sync>,
    ) -> Engine {
        Self::build(config, loader, Metrics(Some(recorder)))
    }

    fn build(config: EngineConfig, loader: Arc<dyn ModelLoader>, metrics: Metrics) -> Engine {
        let concurrency = config.concurrency.max(1);
        metrics.emit(describe_metrics);
        Engine {
            inner: Arc::new(Inner {
                models: Arc::new(FlightCache::new(
                    config.max_parsed_models,
                    config.max_parsed_model_bytes,
                    config.negative_ttl,
                )),
                specs: Mutex::new(HashMap::new()),
                plans: Arc::new(FlightCache::new(
                    config.max_plans,
                    config.max_plan_bytes,
                    config.negative_ttl,
                )),
                build_lock: Arc::new(Semaphore::new(1)),
                slots: Arc::new(Semaphore::new(concurrency)),
                queued: AtomicUsize::new(0),
                book: Arc::new(RunBook::default()),
                tag: EngineTag::local(),
                metrics,
                #[cfg(test)]
                before_run: None,
                loader,
                config,
            }),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The engine build and CPU tag results are produced (and proofs signed) under.
    pub fn tag(&self) -> &EngineTag {
        &self.inner.tag
    }

    /// Parse a request body under this engine's limits.
    pub fn parse_request(&self, body: &[u8]) -> Result<InferenceRequest, InferenceError> {
        InferenceRequest::from_json(body, &self.inner.config.limits)
    }

    pub fn stats(&self) -> EngineStats {
        let (plan_entries, plan_bytes) = self.inner.plans.usage();
        EngineStats {
            plan_builds: self.inner.plans.builds(),
            model_loads: self.inner.models.builds(),
            plan_entries,
            plan_bytes,
            parsed_models: self.inner.models.usage().0,
            queued: self.inner.queued.load(Ordering::Relaxed),
            running: self
                .inner
                .config
                .concurrency
                .max(1)
                .saturating_sub(self.inner.slots.available_permits()),
            runs_cancelled: self.inner.book.cancelled.load(Ordering::Relaxed),
        }
    }

    /// The declared inputs and outputs of a model (parsing it on first use).
    pub async fn spec(&self, model: BlobId) -> Result<Arc<ModelSpec>, InferenceError> {
        if let Some(spec) = self
            .inner
            .specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&model)
        {
            return Ok(spec.clone());
        }
        let loaded = self.loaded(model).await?;
        let mut specs = self.inner.specs.lock().unwrap_or_else(|p| p.into_inner());
        // Specs are a few hundred bytes; this bound only stops a flood of distinct models.
        if specs.len() >= 4096 {
            specs.clear();
        }
        specs.insert(model, loaded.spec.clone());
        Ok(loaded.spec.clone())
    }

    /// Run `request` on `model` and sign the result with `identity`.
    pub async fn infer(
        &self,
        model: BlobId,
        request: InferenceRequest,
        identity: &Identity,
    ) -> Result<InferenceResponse, InferenceError> {
        let outcome = self.run(model, request).await?;
        let proof = identity.sign_outcome(&outcome, &self.inner.tag);
        Ok(InferenceResponse {
            model,
            outputs: outcome.outputs,
            proof,
        })
    }

    /// What `verify-proof` does once it has fetched (and checked against their Blob IDs) the
    /// proof blob and the model: re-run the model on the inputs that were sent (the request body
    /// the client kept) and [`verify`](crate::verify) the proof against them, bitwise when this
    /// engine's tag equals the record's, else within `tolerance`. Pin the gateway's key too, with
    /// [`Proof::check_signer`].
    pub async fn verify_proof(
        &self,
        blob: &crate::ProofBlob,
        model: BlobId,
        request: InferenceRequest,
        tolerance: crate::Tolerance,
    ) -> Result<crate::VerifyReport, crate::VerifyError> {
        let rerun = self
            .run(model, request)
            .await
            .map_err(|e| crate::VerifyError::Rerun(e.to_string()))?;
        crate::verify(
            blob,
            &model,
            &rerun.inputs,
            &rerun.outputs,
            &self.inner.tag,
            tolerance,
        )
    }

    /// Run `request` on `model` without signing (what `verify-proof` re-runs).
    pub async fn run(
        &self,
        model: BlobId,
        request: InferenceRequest,
    ) -> Result<RunOutcome, InferenceError> {
        let result = self.run_inner(model, request.inputs).await;
        if let Err(e) = &result {
            let kind = match e {
                InferenceError::BadInput { .. }
                | InferenceError::BadRequest(_)
                | InferenceError::TooLarge(_) => "bad_input",
                InferenceError::QueueFull(_) => "queue_full",
                InferenceError::Timeout(_) => "timeout",
                InferenceError::Internal(_) | InferenceError::Execution(_) => "internal",
                _ => "model",
            };
            self.inner
                .metrics
                .emit(|| metrics::counter!(metric::FAILURES, "kind" => kind).increment(1));
        }
        result
    }

    async fn run_inner(
        &self,
        model: BlobId,
        inputs: RequestInputs,
    ) -> Result<RunOutcome, InferenceError> {
        let spec = self.spec(model).await?;
        let prepared = signature::prepare(
            &spec,
            inputs,
            &self.inner.config.buckets,
            self.inner.config.limits.max_elements,
        )?;
        let plan = self.plan(model, prepared.signature.clone()).await?.0;
        self.check_run_memory(&plan, &prepared.signature)?;
        self.check_run_time(&plan, &prepared.signature)?;

        let permit = self.acquire_slot().await?;
        let started = Instant::now();
        #[cfg(test)]
        let hook = self.inner.before_run.clone();
        let timeout = self.inner.config.inference_timeout;
        let stop = Stop::at(Instant::now() + timeout);
        let cancel = AbandonOnDrop(stop.clone());
        let book = self.inner.book.clone();
        let sink = self.inner.metrics.clone();
        let task = tokio::task::spawn_blocking(move || {
            // The permit lives as long as the computation, which ends at the first operator
            // boundary past the deadline: the slot count stays true to the CPU in use.
            let _permit = permit;
            #[cfg(test)]
            if let Some(hook) = hook {
                hook();
            }
            let outputs = match plan.run(&prepared.padded, &prepared.symbols, &stop)? {
                RunEnd::Done(outputs) => {
                    book.measured(plan.ops, started);
                    outputs
                }
                RunEnd::Stopped(why, done) => {
                    book.stopped(&sink, why, done, started);
                    return Err(InferenceError::Timeout(timeout));
                }
            };
            let inputs_blake3 = canonical_hash(&prepared.inputs);
            let outputs_blake3 = canonical_hash(&outputs);
            Ok::<_, InferenceError>(RunOutcome {
                model,
                inputs: prepared.inputs,
                outputs,
                inputs_blake3,
                outputs_blake3,
            })
        });
        // The answer comes at the deadline; the run stops by itself at its next operator.
        let outcome = match tokio::time::timeout_at(cancel.0.deadline().into(), task).await {
            Err(_) => return Err(InferenceError::Timeout(timeout)),
            Ok(Err(join)) => {
                return Err(InferenceError::Internal(format!(
                    "inference task failed: {join}"
                )))
            }
            Ok(Ok(result)) => result?,
        };
        drop(cancel);
        let label = model.to_string();
        self.inner.metrics.emit(|| {
            metrics::histogram!(metric::RUN_SECONDS, "model" => label.clone())
                .record(started.elapsed().as_secs_f64());
            metrics::counter!(metric::RUNS, "model" => label).increment(1);
        });
        Ok(outcome)
    }

    /// Build (or find) the plan for `model` and `request`'s signature, and run it once on zeros
    /// so the first real request finds everything warm. Without a request, the model's declared
    /// shapes are used with every symbolic axis at its smallest bucket (free axes at 1).
    pub async fn warm(
        &self,
        model: BlobId,
        request: Option<InferenceRequest>,
    ) -> Result<WarmReport, InferenceError> {
        let spec = self.spec(model).await?;
        let inputs = match request {
            Some(r) => r.inputs,
            None => RequestInputs::Named(zeros_for(&spec, &self.inner.config.buckets)),
        };
        let prepared = signature::prepare(
            &spec,
            inputs,
            &self.inner.config.buckets,
            self.inner.config.limits.max_elements,
        )?;
        let zeros: Vec<TensorData> = prepared
            .padded
            .iter()
            .map(|t| {
                TensorData::new(t.shape().to_vec(), zero_values(t)).expect("same element count")
            })
            .collect();
        let (plan, built) = self.plan(model, prepared.signature.clone()).await?;
        self.check_run_memory(&plan, &prepared.signature)?;
        self.check_run_time(&plan, &prepared.signature)?;
        let permit = self.acquire_slot().await?;
        let runner = plan.clone();
        let timeout = self.inner.config.inference_timeout;
        let started = Instant::now();
        let stop = Stop::at(Instant::now() + timeout);
        let cancel = AbandonOnDrop(stop.clone());
        let book = self.inner.book.clone();
        let sink = self.inner.metrics.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match runner.run(&zeros, &HashMap::new(), &stop)? {
                RunEnd::Done(_) => {
                    book.measured(runner.ops, started);
                    Ok(())
                }
                RunEnd::Stopped(why, done) => {
                    book.stopped(&sink, why, done, started);
                    Err(InferenceError::Timeout(timeout))
                }
            }
        });
        match tokio::time::timeout_at(cancel.0.deadline().into(), task).await {
            Err(_) => return Err(InferenceError::Timeout(timeout)),
            Ok(Err(e)) => {
                return Err(InferenceError::Internal(format!(
                    "warm-up task failed: {e}"
                )))
            }
            Ok(Ok(result)) => result?,
        };
        drop(cancel);
        Ok(WarmReport {
            model,
            signature: prepared.signature.inputs,
            built,
            plan_bytes: plan.bytes,
        })
    }

    /// The parsed model, loading and parsing it once per single flight.
    async fn loaded(&self, model: BlobId) -> Result<Arc<LoadedModel>, InferenceError> {
        let loader = self.inner.loader.clone();
        let build_lock = self.inner.build_lock.clone();
        let max = self.inner.config.max_model_bytes;
        let sink = self.inner.metrics.clone();
        self.inner
            .models
            .get_or_build(model, move || async move {
                sink.emit(|| metrics::counter!(metric::MODEL_LOADS).increment(1));
                let bytes =
                    loader
                        .load(model)
                        .await
                        .map_err(|e| InferenceError::ModelUnavailable {
                            model,
                            cause: Arc::from(e),
                        })?;
                if bytes.len() as u64 > max {
                    return Err(InferenceError::ModelTooLarge {
                        model,
                        size: bytes.len() as u64,
                        limit: max,
                    });
                }
                let _permit = build_lock
                    .acquire_owned()
                    .await
                    .map_err(|_| InferenceError::Internal("build lock closed".into()))?;
                let started = Instant::now();
                let loaded = tokio::task::spawn_blocking(move || model::load(&model, &bytes))
                    .await
                    .map_err(|e| {
                        InferenceError::Internal(format!("model parse task failed: {e}"))
                    })??;
                sink.emit(|| {
                    metrics::histogram!(metric::MODEL_PARSE_SECONDS)
                        .record(started.elapsed().as_secs_f64())
                });
                let weight = loaded.blob_len;
                Ok((Arc::new(loaded), weight))
            })
            .await
    }

    /// The plan for `signature`, and whether this call's flight built it.
    async fn plan(
        &self,
        model: BlobId,
        signature: InputSignature,
    ) -> Result<(Arc<Plan>, bool), InferenceError> {
        let key = (model, signature);
        if let Some(plan) = self.inner.plans.get(&key) {
            return Ok((plan, false));
        }
        let engine = self.clone();
        let sig = key.1.clone();
        let before = self.inner.plans.builds();
        let plan = self
            .inner
            .plans
            .get_or_build(key, move || async move {
                let loaded = engine.loaded(model).await?;
                let _permit = engine
                    .inner
                    .build_lock
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| InferenceError::Internal("build lock closed".into()))?;
                let sink = &engine.inner.metrics;
                sink.emit(|| metrics::counter!(metric::PLAN_BUILDS).increment(1));
                let started = Instant::now();
                let plan = tokio::task::spawn_blocking(move || Plan::build(&model, &loaded, &sig))
                    .await
                    .map_err(|e| InferenceError::Internal(format!("plan build task failed: {e}")))??;
                sink.emit(|| {
                    metrics::histogram!(metric::PLAN_BUILD_SECONDS)
                        .record(started.elapsed().as_secs_f64())
                });
                tracing::info!(
                    %model,
                    estimated_weights_bytes = plan.weights_bytes,
                    estimated_peak_run_bytes = plan.run_bytes,
                    secs = started.elapsed().as_secs_f64(),
                    "built inference plan (sizes are estimates from tensor shapes, not measured memory)"
                );
                let bytes = plan.bytes;
                Ok((Arc::new(plan), bytes))
            })
            .await;
        let (entries, bytes) = self.inner.plans.usage();
        self.inner.metrics.emit(|| {
            metrics::gauge!(metric::PLAN_CACHE_ENTRIES).set(entries as f64);
            metrics::gauge!(metric::PLAN_CACHE_BYTES).set(bytes as f64);
        });
        let built = self.inner.plans.builds() > before;
        plan.map(|p| (p, built))
    }

    /// Refuse a run whose plan's estimated peak of tensors alive at once is above
    /// `max_run_bytes`: it could not fit even alone, so it is 413 before it takes a slot.
    fn check_run_memory(
        &self,
        plan: &Plan,
        signature: &InputSignature,
    ) -> Result<(), InferenceError> {
        let limit = self.inner.config.max_run_bytes;
        if plan.run_bytes <= limit {
            return Ok(());
        }
        Err(InferenceError::TooLarge(format!(
            "a run on inputs {} would hold an estimated {} bytes of tensors at once, above the \
             per-run inference memory limit of {limit} bytes (--inference-memory); send fewer rows",
            crate::plan::describe_signature(signature),
            plan.run_bytes
        )))
    }

    /// Refuse a run that, at the fastest rate this engine has measured, would take more than
    /// [`OBVIOUSLY_OVER`] times the deadline: it would only be stopped there, having cost a
    /// slot for the whole deadline.
    fn check_run_time(
        &self,
        plan: &Plan,
        signature: &InputSignature,
    ) -> Result<(), InferenceError> {
        let rate = self.inner.book.best_rate.load(Ordering::Relaxed);
        if rate == 0 || plan.ops == 0 {
            return Ok(());
        }
        let timeout = self.inner.config.inference_timeout;
        let secs = plan.ops as f64 / rate as f64;
        if secs <= OBVIOUSLY_OVER * timeout.as_secs_f64() {
            return Ok(());
        }
        Err(InferenceError::TooLarge(format!(
            "a run on inputs {} needs an estimated {:.2e} operations, about {secs:.1} s at the \
             fastest rate this gateway has measured ({:.2e} per second): more than twice the \
             {} ms inference deadline (--inference-timeout-ms); send fewer rows",
            crate::plan::describe_signature(signature),
            plan.ops as f64,
            rate as f64,
            timeout.as_millis()
        )))
    }

    /// A run slot, waiting at most `queue_timeout` in a queue of at most `max_queued`.
    async fn acquire_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, InferenceError> {
        let slots = self.inner.slots.clone();
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            self.inner
                .metrics
                .emit(|| metrics::histogram!(metric::QUEUE_WAIT_SECONDS).record(0.0));
            return Ok(permit);
        }
        let config = &self.inner.config;
        let queued = self.inner.queued.fetch_add(1, Ordering::AcqRel);
        let _leave = QueueGuard(&self.inner.queued);
        if queued >= config.max_queued {
            return Err(InferenceError::QueueFull(format!(
                "the wait queue is full: {} requests already waiting for one of {} run slots \
                 (--inference-queue)",
                config.max_queued,
                config.concurrency.max(1)
            )));
        }
        let started = Instant::now();
        match tokio::time::timeout(config.queue_timeout, slots.acquire_owned()).await {
            Ok(Ok(permit)) => {
                self.inner.metrics.emit(|| {
                    metrics::histogram!(metric::QUEUE_WAIT_SECONDS)
                        .record(started.elapsed().as_secs_f64())
                });
                Ok(permit)
            }
            Ok(Err(_)) => Err(InferenceError::Internal("run slots closed".into())),
            Err(_) => Err(InferenceError::QueueFull(format!(
                "all {} run slots stayed busy for the longest queue wait of {} ms \
                 (--inference-concurrency, --inference-queue-wait-ms); {} requests were waiting",
                config.concurrency.max(1),
                config.queue_timeout.as_millis(),
                self.inner.queued.load(Ordering::Relaxed)
            ))),
        }
    }
}

/// Tells a run to stop when its caller goes away (a dropped request future), so a client that
/// disconnects does not leave a run computing for nobody. Dropped after a finished run too,
/// where it does nothing.
struct AbandonOnDrop(Stop);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

/// What runs showed: how many were stopped, and the fastest rate measured.
#[derive(Default)]
struct RunBook {
    cancelled: AtomicU64,
    /// Estimated operations per second, the highest seen on a run of at least
    /// [`RATE_SAMPLE_MIN_OPS`]; 0: not measured yet.
    best_rate: AtomicU64,
}

impl RunBook {
    /// A run (or the part of one before it was stopped) did `ops` operations since `started`.
    fn measured(&self, ops: u64, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        if ops >= RATE_SAMPLE_MIN_OPS && secs > 0.0 {
            self.best_rate
                .fetch_max((ops as f64 / secs) as u64, Ordering::Relaxed);
        }
    }

    fn stopped(&self, sink: &Metrics, why: Stopped, done: u64, started: Instant) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
        self.measured(done, started);
        sink.emit(|| {
            metrics::counter!(metric::RUNS_CANCELLED, "reason" => why.as_str()).increment(1)
        });
        tracing::debug!(
            reason = why.as_str(),
            secs = started.elapsed().as_secs_f64(),
            estimated_ops_done = done,
            "inference run stopped at an operator boundary"
        );
    }
}

/// HELP text for every engine metric, and the labelled failure and cancellation series at 0, so
/// rate alerts see the first event.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(metric::RUNS, "Inference runs completed, by model Blob ID.");
    describe_counter!(
        metric::FAILURES,
        "Inference requests that failed, by kind (bad_input, queue_full, timeout, model, internal)."
    );
    describe_counter!(
        metric::RUNS_CANCELLED,
        "Inference runs stopped at an operator boundary before their end, by reason (deadline, abandoned)."
    );
    describe_histogram!(
        metric::RUN_SECONDS,
        Unit::Seconds,
        "Inference run time from run slot acquired to outputs ready, by model Blob ID."
    );
    describe_histogram!(
        metric::QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        "Time inference requests waited for a run slot."
    );
    describe_counter!(metric::PLAN_BUILDS, "Inference plan builds started.");
    describe_histogram!(
        metric::PLAN_BUILD_SECONDS,
        Unit::Seconds,
        "Inference plan build time, excluding the wait for the build lock."
    );
    describe_gauge!(metric::PLAN_CACHE_ENTRIES, "Inference plans cached.");
    describe_gauge!(
        metric::PLAN_CACHE_BYTES,
        Unit::Bytes,
        "Estimated bytes of cached inference plans (from tensor shapes, not measured memory)."
    );
    describe_counter!(metric::MODEL_LOADS, "Model blobs parsed for inference.");
    describe_histogram!(
        metric::MODEL_PARSE_SECONDS,
        Unit::Seconds,
        "Model parse time (ONNX decoding and analysis), excluding the load and the build lock."
    );
    for kind in ["bad_input", "queue_full", "timeout", "model", "internal"] {
        metrics::counter!(metric::FAILURES, "kind" => kind).increment(0);
    }
    for reason in [Stopped::Deadline, Stopped::Abandoned] {
        metrics::counter!(metric::RUNS_CANCELLED, "reason" => reason.as_str()).increment(0);
    }
}

struct QueueGuard<'a>(&'a AtomicUsize);

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn zeros_for(spec: &ModelSpec, buckets: &[usize]) -> Tensors {
    spec.inputs
        .iter()
        .map(|input| {
            let shape: Vec<usize> = input
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Symbol(_) => bucket_for(1, buckets),
                    Dim::Free => 1,
                })
                .collect();
            let n = shape.iter().product();
            let t = TensorData::new(shape, zero_values_of(input.dtype, n)).expect("counted");
            (input.name.clone(), t)
        })
        .collect()
}

fn zero_values(t: &TensorData) -> TensorValues {
    zero_values_of(t.dtype(), t.len())
}

fn zero_values_of(dtype: crate::tensor::DType, n: usize) -> TensorValues {
    use crate::tensor::DType;
    match dtype {
        DType::F32 => TensorValues::F32(vec![0.0; n]),
        DType::F64 => TensorValues::F64(vec![0.0; n]),
        DType::I64 => TensorValues::I64(vec![0; n]),
        DType::I32 => TensorValues::I32(vec![0; n]),
        DType::U8 => TensorValues::U8(vec![0; n]),
        DType::Bool => TensorValues::Bool(vec![false; n]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp() -> (Engine, BlobId, Tensors) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models");
        let bytes = Bytes::from(std::fs::read(format!("{dir}/mlp.onnx")).unwrap());
        let model = BlobId(*blake3::hash(&bytes).as_bytes());
        let models = StaticModels::new();
        models.insert(model, bytes);
        let config = EngineConfig {
            concurrency: 1,
            max_queued: 0,
            queue_timeout: Duration::ZERO,
            ..EngineConfig::default()
        };
        let x = TensorData::new(vec![1, 16], TensorValues::F32(vec![0.25; 16])).unwrap();
        (
            Engine::new(config, Arc::new(models)),
            model,
            [("x".to_string(), x)].into(),
        )
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_and_a_freed_slot_serves() {
        let (engine, model, inputs) = mlp();
        engine
            .run(model, InferenceRequest::named(inputs.clone()))
            .await
            .unwrap();
        // Hold the only run slot, as a long inference would.
        let held = engine.inner.slots.clone().try_acquire_owned().unwrap();
        let err = engine
            .run(model, InferenceRequest::named(inputs.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, InferenceError::QueueFull(_)), "{err:?}");
        assert_eq!(err.http_status(), 429);

        // With room in the queue the wait is bounded by queue_timeout instead.
        let mut config = engine.config().clone();
        config.max_queued = 4;
        let engine2 = Engine {
            inner: Arc::new(Inner {
                config,
                ..clone_inner(&engine)
            }),
        };
        let err = engine2
            .run(model, InferenceRequest::named(inputs.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, InferenceError::QueueFull(_)), "{err:?}");
        assert_eq!(engine2.stats().queued, 0, "the waiter left the queue");

        drop(held);
        engine
            .run(model, InferenceRequest::named(inputs))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_run_past_its_deadline_is_a_timeout() {
        let (engine, model, inputs) = mlp();
        engine
            .run(model, InferenceRequest::named(inputs.clone()))
            .await
            .unwrap();
        let mut config = engine.config().clone();
        config.inference_timeout = Duration::from_millis(1);
        // The run blocks until the test has seen the timeout.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let hook: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = gate.lock().unwrap().recv();
        });
        let slow = Engine {
            inner: Arc::new(Inner {
                config,
                before_run: Some(hook),
                ..clone_inner(&engine)
            }),
        };
        let err = slow
            .run(model, InferenceRequest::named(inputs.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, InferenceError::Timeout(_)), "{err:?}");
        assert_eq!(err.http_status(), 504);
        // The run still holds the only slot until it reaches an operator boundary, where it
        // stops: it is past its deadline.
        assert!(engine.inner.slots.clone().try_acquire_owned().is_err());
        release.send(()).unwrap();
        let _ = engine.inner.slots.clone().acquire_owned().await.unwrap();
        // It stopped before its first operator rather than running to the end.
        assert_eq!(engine.stats().runs_cancelled, 1);
    }

    /// The same caches and slots under another config.
    fn clone_inner(engine: &Engine) -> Inner {
        let i = &engine.inner;
        Inner {
            config: i.config.clone(),
            loader: i.loader.clone(),
            models: i.models.clone(),
            specs: Mutex::new(i.specs.lock().unwrap().clone()),
            plans: i.plans.clone(),
            build_lock: i.build_lock.clone(),
            slots: i.slots.clone(),
            queued: AtomicUsize::new(0),
            book: i.book.clone(),
            tag: i.tag.clone(),
            metrics: i.metrics.clone(),
            before_run: None,
        }
    }
}
