//! Inference next to the cache: run ONNX models stored as Walrus blobs with tract, and commit to
//! each result with a signed proof record.
//!
//! The gateway owns HTTP, the model bytes (its cache and verified fill, behind [`ModelLoader`])
//! and publishing proofs; this crate owns everything between verified model bytes and a signed
//! answer:
//!
//! - [`tensor`]: JSON tensors in and out (numbers or base64), bounded and validated, and their
//!   canonical encoding.
//! - [`model`]: parsing a blob as ONNX, refusing external data, naming unsupported operators.
//! - [`signature`]: checking a request against the model's inputs and padding symbolic axes to
//!   bucket lengths; the result keys the plan cache.
//! - `plan`: specialising, optimising, estimating (memory, arithmetic) and running a tract plan
//!   (fresh state per run, evaluated node by node with a stop check before each operator).
//! - `cache`: the single-flight LRU with a negative TTL behind the model and plan caches.
//! - [`engine`]: the [`Engine`] tying it together: bounded, off-reactor execution and metrics.
//! - [`proof`]: signed proof records and their verification.
//!
//! Guarantees: network input never panics the process (parsers are bounded and tract is called
//! under `catch_unwind`); at most one plan build runs at a time and at most one per key however
//! many requests ask; at most `concurrency` runs at once, off the async reactor; a run past its
//! deadline (or whose caller went away) stops at its next operator boundary and frees its slot
//! and tensors then; a request obviously over the memory or time limits is refused before it
//! runs; every error is an [`InferenceError`] with a documented HTTP status.
//!
//! A proof record is a signed commitment by the gateway's key, **not a proof of correct
//! execution**; see [`proof`].
//!
//! # Wiring (what the gateway does)
//!
//! ```no_run
//! use std::sync::Arc;
//! use inference::{Engine, EngineConfig, Identity, LoadFuture, ModelLoader};
//!
//! /// The gateway's cache + verified fill; its errors come back via `InferenceError::loader_error`.
//! struct CacheLoader;
//! impl ModelLoader for CacheLoader {
//!     fn load(&self, model: codec::BlobId) -> LoadFuture {
//!         Box::pin(async move { Ok(bytes::Bytes::new()) /* cache.get_or_fill(model).await */ })
//!     }
//! }
//!
//! # async fn handler(body: &[u8], model: codec::BlobId) -> Result<(), inference::InferenceError> {
//! let engine = Engine::new(EngineConfig::default(), Arc::new(CacheLoader));
//! let identity = Identity::load_or_create("identity.key".as_ref()).expect("key file");
//! // POST /v1/inference/{model}
//! let request = engine.parse_request(body)?; // 400 / 413, naming the input
//! let store = request.proof == Some(inference::ProofMode::Store);
//! let response = engine.infer(model, request, &identity).await?; // status: err.http_status()
//! let json = serde_json::to_vec(&response).unwrap(); // {"model","outputs","proof"}
//! if store {
//!     let blob = inference::ProofBlob { outputs: response.outputs.clone(), proof: response.proof.clone() };
//!     let _bytes_to_publish = blob.to_bytes();
//! }
//! // POST /v1/models/{model}/warm
//! let report = engine.warm(model, None).await?;
//! # let _ = (json, report); Ok(()) }
//! ```

mod cache;
pub mod engine;
mod error;
pub mod model;
mod plan;
pub mod proof;
pub mod signature;
pub mod tensor;

pub use engine::{
    Engine, EngineConfig, EngineStats, InferenceResponse, LoadError, LoadFuture, ModelLoader,
    RunOutcome, StaticModels, UnknownModel, WarmReport,
};
pub use error::InferenceError;
pub use model::{Dim, InputSpec, ModelSpec, OutputSpec};
pub use proof::{
    verify, Comparison, EngineTag, Identity, IdentityError, Proof, ProofBlob, ProofRecord,
    Tolerance, VerifyError, VerifyReport,
};
pub use signature::InputSignature;
pub use tensor::{
    DType, Encoded, InferenceRequest, ProofMode, RequestInputs, RequestLimits, TensorData,
    TensorEncoding, TensorValues, Tensors,
};

/// The exact tract-onnx version this crate is pinned to (`=` in Cargo.toml); proof records name
/// it. A test checks it against Cargo.lock.
pub const TRACT_VERSION: &str = "0.23.9";
