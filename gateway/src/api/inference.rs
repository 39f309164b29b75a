//! Inference next to the cache: `POST /v1/inference/{model_blob_id}` runs an ONNX model stored
//! as a Walrus blob, and `POST /v1/models/{model_blob_id}/warm` (admin token) builds its plan
//! ahead of traffic. The engine is the `inference` crate; this module is its HTTP face.
//!
//! * Model bytes come from the cache and verified fill ([`crate::models::CacheLoader`]), once
//!   per single flight: concurrent first requests for a model share one fill and one plan build.
//! * Admission comes before the body: a request first reserves twice its declared length from
//!   `--inference-memory` (the body and its parsed inputs; a body of undeclared length grows its
//!   reservation as it arrives), 503 with `Retry-After` when that does not fit, and the model
//!   must be known (its spec loaded, 404 for a Blob ID that does not exist) before a byte of the
//!   body is read. The body is bounded ([`MAX_BODY`], 413 beyond) and parsed under the engine's
//!   limits; large bodies are parsed on the blocking pool. Runs are bounded by
//!   `--inference-concurrency` (waiting at most `--inference-queue-wait-ms` in a queue of
//!   `--inference-queue`; 429 saying which was exhausted), `--inference-timeout-ms` (504 at the
//!   deadline; the run stops at its next operator boundary and frees its slot) and, per run, the
//!   plan's estimated working memory against `--inference-memory` (413 naming it, before the
//!   run).
//! * Each answer carries a proof record signed with the gateway's key (`--identity-key`, loaded
//!   or created on the first inference). With `"proof": "store"` (or `--store-proofs`) the
//!   [`ProofBlob`] is stored: batched with the proofs of other requests
//!   ([`crate::proof_batch`]: those arriving within `--proof-batch-ms`, at most
//!   `--proof-batch-max`) into one quilt, each proof a patch named by its record's BLAKE3
//!   (hex), published exactly as `PUT /v1/quilts` publishes (same limits and admission,
//!   written through to the cache); the answer names the quilt's Blob ID (`proof.quilt_id`) and
//!   the proof's patch (`proof.quilt_patch_id`). With `--proof-batch-max 0` each proof is a blob
//!   of its own (`proof.blob_id`). A batch too large for one quilt is split in halves until
//!   each part fits; a single proof that fits no quilt is 413. A failed publish fails every
//!   request of its batch with the publish's error; nothing is reported stored that was not.
//!   Storing is a publish, so it needs what `PUT /v1/blobs` needs (publishing on, the publish
//!   token), checked before the model runs, as is a full proof queue (503); refused, nothing is
//!   run or stored. A proof is a signed commitment by this gateway, not a proof that the
//!   computation was correct.
//! * Tensors travel as JSON numbers (`data`) or base64 of their little-endian bytes
//!   (`data_b64`, per input); `"output_encoding": "base64"` writes every output as `data_b64`.
//!   The proof hashes the tensors, not their text, so it is the same whichever form was used.
//! * Errors map to statuses in [`super::error`] only.

use super::body::Body;
use super::error::ApiError;
use super::{parse_id, Api};
use crate::budget::{Budget, Cover, Reservation};
use crate::config::GatewayConfig;
use crate::fill::{Filler, ReadError};
use crate::models::CacheLoader;
use crate::proof_batch::{BatchConfig, BatchError, Batcher, Item, Placed};

use ::inference::{
    Encoded, Engine, EngineConfig, EngineStats, Identity, InferenceRequest, ProofBlob, ProofMode,
    TensorEncoding,
};
use bytes::{Buf, Bytes, BytesMut};
use codec::BlobId;
use http::header;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body as HttpBody;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Largest inference request body (a 4 M-element f32 tensor as JSON fits); 413 beyond.
pub const MAX_BODY: usize = 64 << 20;
/// What an inference body costs its admission, per byte: the body and its parsed inputs.
const COST_PER_BODY_BYTE: u64 = 2;
/// A body of undeclared length first reserves the cost of this many bytes, then twice what it
/// has reached each time it outgrows its reservation.
const UNDECLARED_FIRST: u64 = 64 << 10;
/// Bodies above this are parsed on the blocking pool rather than the reactor.
const PARSE_INLINE_MAX: usize = 64 << 10;
/// Answers with more output elements than this are encoded on the blocking pool when written as
/// JSON numbers (about 1 ms of number formatting)...
const ENCODE_INLINE_MAX: usize = 16 << 10;
/// ... and with more output bytes than this when written as base64 (about as long).
const ENCODE_INLINE_MAX_BASE64: usize = 1 << 20;

/// The engine, the signing key and the proof policy of one gateway.
pub(super) struct Inference {
    engine: Engine,
    /// `None`: a key generated for this process (no `--identity-key` or `--cache-dir`).
    identity_path: Option<PathBuf>,
    /// Loaded (or created) on the first inference, so gateways that never run one never touch
    /// the key file. A failure is kept and answered as 500 naming the file.
    identity: OnceCell<Result<Arc<Identity>, String>>,
    /// Publish every proof (`--store-proofs`), not only those a request asks to store.
    store_proofs: bool,
    /// Stored proofs wait here to be published together as one quilt; `None`
    /// (`--proof-batch-max 0`): each proof is published as a blob of its own.
    proofs: Option<Batcher<ApiError>>,
    /// `--inference-memory`: what request bodies and their parsed inputs may hold at once.
    memory: std::sync::Arc<Budget>,
}

impl Inference {
    pub(super) fn new(filler: &Filler, config: &GatewayConfig) -> Self {
        let defaults = EngineConfig::default();
        let concurrency = config
            .inference_concurrency
            .unwrap_or(defaults.concurrency)
            .max(1);
        let engine_config = EngineConfig {
            concurrency,
            max_queued: config.inference_queue.unwrap_or(concurrency * 64),
            inference_timeout: config.inference_timeout,
            queue_timeout: config.inference_queue_wait,
            // One run whose estimated tensors alone exceed the inference memory is 413.
            max_run_bytes: config.inference_memory,
            max_model_bytes: config.max_model_size,
            ..defaults
        };
        let loader = CacheLoader::new(filler.clone(), config.max_model_size);
        Self {
            engine: Engine::with_recorder(
                engine_config,
                Arc::new(loader),
                filler.telemetry().clone(),
            ),
            identity_path: config.identity_key_path(),
            identity: OnceCell::new(),
            store_proofs: config.store_proofs,
            proofs: (config.proof_batch_max > 0).then(|| {
                // A quilt holds one patch fewer than the committee has secondary symbols (the
                // index takes a column); larger batches would only be split.
                let fits = usize::from(
                    filler
                        .topology()
                        .config()
                        .n_secondary_source_symbols()
                        .saturating_sub(1),
                );
                Batcher::new(BatchConfig {
                    window: config.proof_batch,
                    max: config.proof_batch_max.min(fits).max(1),
                    queue: config.proof_queue,
                    queue_bytes: config.proof_queue_bytes,
                    // Half the publish slots at most: uploads keep the rest.
                    publishes: (config.max_concurrent_publishes / 2).max(1),
                    quilt: Some(*filler.topology().config()),
                })
            }),
            memory: Budget::new(config.inference_memory),
        }
    }

    pub(super) fn stats(&self) -> EngineStats {
        self.engine.stats()
    }

    async fn identity(&self) -> Result<Arc<Identity>, ApiError> {
        let path = self.identity_path.clone();
        self.identity
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || match path {
                    Some(path) => Identity::load_or_create(&path),
                    None => Identity::generate(),
                })
                .await
                .map_err(|e| format!("identity task failed: {e}"))
                .and_then(|r| r.map(Arc::new).map_err(|e| e.to_string()))
            })
            .await
            .clone()
            .map_err(|e| ApiError::Read(ReadError::Internal(format!("signing key: {e}"))))
    }

    /// Parse a body under the engine's limits, off the reactor when it is large.
    async fn parse(&self, body: Bytes) -> Result<InferenceRequest, ApiError> {
        if body.len() <= PARSE_INLINE_MAX {
            return Ok(self.engine.parse_request(&body)?);
        }
        let engine = self.engine.clone();
        let parsed = tokio::task::spawn_blocking(move || engine.parse_request(&body))
            .await
            .map_err(|e| ReadError::Internal(format!("request parse task failed: {e}")))?;
        Ok(parsed?)
    }
}

/// Whether `path` is one of this module's routes.
pub(super) fn handles(path: &str) -> bool {
    path.starts_with("/v1/inference/") || path.starts_with("/v1/models/")
}

pub(super) async fn route<B>(api: &Api, request: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "inference", id] => {
            if request.method() != Method::POST {
                return Err(ApiError::MethodNotAllowed { allow: "POST" });
            }
            let model = parse_id(id)?;
            infer(api, model, request).await
        }
        ["v1", "models", id, "warm"] => {
            // Like the admin API: without a token the route does not exist.
            let Some(token) = &api.admin_token else {
                return Err(ApiError::RouteNotFound);
            };
            if !super::admin::bearer_matches(request.headers(), token) {
                return Err(ApiError::Unauthorized);
            }
            if request.method() != Method::POST {
                return Err(ApiError::MethodNotAllowed { allow: "POST" });
            }
            let model = parse_id(id)?;
            let body = super::admin::read_body(request.into_body(), MAX_BODY).await?;
            let inference = &api.inference;
            let shape = if body.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                Some(inference.parse(body).await?)
            };
            let report = inference.engine.warm(model, shape).await?;
            Ok(super::json_response(StatusCode::OK, &encode(&report)?))
        }
        _ => Err(ApiError::RouteNotFound),
    }
}

async fn infer<B>(api: &Api, model: BlobId, request: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY as u64,
        });
    }
    let inference = &api.inference;
    // Admission before a byte of the body is read: memory first (refusing costs nothing),
    // then the model (an unknown one is a 404 without reading what was sent for it).
    let first = declared.unwrap_or(UNDECLARED_FIRST);
    let Some(mut memory) = inference
        .memory
        .try_reserve(first.saturating_mul(COST_PER_BODY_BYTE))
    else {
        tracing::debug!(
            declared = first,
            in_use = inference.memory.used(),
            "inference refused at admission"
        );
        api.telemetry.admission_refused("inference_memory");
        return Err(ApiError::AtCapacity("inference memory"));
    };
    inference.engine.spec(model).await?;
    // Whether the request could publish its proof, read before the body is consumed.
    let may_publish = super::upload::authorized_settings(api, request.headers()).map(|_| ());
    let body = read_admitted(api, request.into_body(), &mut memory, first).await?;
    let parsed = inference.parse(body).await?;
    let encoding = parsed.output_encoding;
    let store = match parsed.proof {
        Some(mode) => mode == ProofMode::Store,
        None => inference.store_proofs,
    };
    // Storing the proof publishes: refused before the model runs, so nothing is stored.
    if store {
        may_publish?;
        if let Some(batcher) = &inference.proofs {
            if batcher.queued() >= batcher.config().queue {
                api.telemetry.admission_refused("proof_queue");
                return Err(ApiError::AtCapacity("proofs waiting to be stored"));
            }
        }
    }
    let identity = inference.identity().await?;
    let response = inference.engine.infer(model, parsed, &identity).await?;
    // The inputs are gone; what is left (the outputs) is not this budget's to bound.
    drop(memory);
    let blob = ProofBlob {
        outputs: response.outputs,
        proof: response.proof,
    };
    let stored = if store {
        Some(store_proof(api, &blob).await?)
    } else {
        None
    };
    let inline = match encoding {
        TensorEncoding::Json => {
            blob.outputs.values().map(|t| t.len()).sum::<usize>() <= ENCODE_INLINE_MAX
        }
        TensorEncoding::Base64 => {
            let bytes: usize = blob
                .outputs
                .values()
                .map(|t| t.len() * t.dtype().size_of())
                .sum();
            bytes <= ENCODE_INLINE_MAX_BASE64
        }
    };
    let answer = if inline {
        encode_answer(model, &blob, stored, encoding)?
    } else {
        tokio::task::spawn_blocking(move || encode_answer(model, &blob, stored, encoding))
            .await
            .map_err(|e| ReadError::Internal(format!("answer encode task failed: {e}")))??
    };
    Ok(super::text(answer, "application/json"))
}

/// Where a stored proof is.
#[derive(Debug, Clone, Copy)]
enum StoredAt {
    /// A blob of its own (`--proof-batch-max 0`).
    Blob(BlobId),
    /// A patch of a quilt shared with the proofs of its batch.
    Patch(Placed),
}

/// The proof part of an answer: `{"record", "signature"[, "blob_id" | "quilt_id",
/// "quilt_patch_id"]}`.
#[derive(serde::Serialize)]
struct AnswerProof<'a> {
    #[serde(flatten)]
    proof: &'a ::inference::Proof,
    /// The stored proof blob, when the request (or `--store-proofs`) asked to store it and
    /// proofs are stored one blob each (`--proof-batch-max 0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    blob_id: Option<BlobId>,
    /// The quilt holding the stored proof (its Blob ID), when proofs are batched into quilts.
    #[serde(skip_serializing_if = "Option::is_none")]
    quilt_id: Option<BlobId>,
    /// The stored proof's patch in that quilt: `GET /v1/blobs/by-quilt-patch-id/{it}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    quilt_patch_id: Option<String>,
}

/// The answer to `POST /v1/inference/{model}`, `{"model", "outputs", "proof"}`, written in one
/// pass straight from the engine's tensors: each f32 at its own shortest precision, or the
/// outputs' bytes base64-encoded straight into the answer ([`Encoded::write_json`]). Going
/// through `serde_json::Value` widened every f32 to f64 and built a node per element.
fn encode_answer(
    model: BlobId,
    blob: &ProofBlob,
    stored: Option<StoredAt>,
    encoding: TensorEncoding,
) -> Result<Bytes, ApiError> {
    let failed = |e: serde_json::Error| -> ApiError {
        ReadError::Internal(format!("cannot encode the answer: {e}")).into()
    };
    let data: usize = blob
        .outputs
        .values()
        .map(|t| match encoding {
            TensorEncoding::Json => t.len() * 12,
            TensorEncoding::Base64 => t.len() * t.dtype().size_of() / 3 * 4 + 4,
        })
        .sum();
    let mut out = Vec::with_capacity(data + 1024);
    out.extend_from_slice(b"{\"model\":");
    serde_json::to_writer(&mut out, &model).map_err(failed)?;
    out.extend_from_slice(b",\"outputs\":");
    Encoded(&blob.outputs, encoding)
        .write_json(&mut out)
        .map_err(failed)?;
    out.extend_from_slice(b",\"proof\":");
    let (blob_id, placed) = match stored {
        Some(StoredAt::Blob(id)) => (Some(id), None),
        Some(StoredAt::Patch(placed)) => (None, Some(placed)),
        None => (None, None),
    };
    let proof = AnswerProof {
        proof: &blob.proof,
        blob_id,
        quilt_id: placed.map(|p| p.quilt_id),
        quilt_patch_id: placed.map(|p| p.patch_id.to_string()),
    };
    serde_json::to_writer(&mut out, &proof).map_err(failed)?;
    out.push(b'}');
    Ok(Bytes::from(out))
}

/// The patch identifier of a stored proof: the hex BLAKE3 of its record's canonical JSON.
/// Two proofs with one identifier have one record, which commits to the outputs: the same
/// bytes.
pub fn proof_identifier(proof: &::inference::Proof) -> String {
    blake3::hash(&proof.record.canonical_json())
        .to_hex()
        .to_string()
}

/// Store a proof: in the next batch's quilt, or as a blob of its own (`--proof-batch-max 0`).
/// The caller has checked the publish token.
async fn store_proof(api: &Api, blob: &ProofBlob) -> Result<StoredAt, ApiError> {
    let bytes = Bytes::from(blob.to_bytes());
    let Some(batcher) = &api.inference.proofs else {
        return store_proof_blob(api, bytes).await.map(StoredAt::Blob);
    };
    let item = Item {
        identifier: proof_identifier(&blob.proof),
        data: bytes,
    };
    match batcher
        .submit(item, |items| publish_batch(api, items))
        .await
    {
        Ok(placed) => Ok(StoredAt::Patch(placed)),
        Err(BatchError::Failed(e)) => Err(e),
        Err(BatchError::QueueFull(what)) => {
            api.telemetry.admission_refused("proof_queue");
            Err(ApiError::AtCapacity(if what == "bytes" {
                "bytes of proofs waiting to be stored"
            } else {
                "proofs waiting to be stored"
            }))
        }
        Err(abandoned @ BatchError::Abandoned) => Err(ApiError::Publish(
            format!("cannot store the proof: {abandoned}; nothing was stored"),
            false,
        )),
    }
}

/// Why one quilt of proofs was not stored.
enum QuiltFailure {
    /// The proofs do not fit one quilt (of this committee, under the upload limit): split them.
    TooLarge(String),
    /// The publish failed: every proof in the quilt fails with this.
    Failed(ApiError),
}

/// Store a batch of proofs (distinct identifiers) as one quilt, or, when it does not fit one,
/// as the quilts of its halves, and so on; the place (or the error) of each, in order.
async fn publish_batch(api: &Api, items: Vec<Item>) -> Vec<Result<Placed, ApiError>> {
    api.telemetry.proof_batch(items.len());
    let mut answers: Vec<Option<Result<Placed, ApiError>>> = vec![None; items.len()];
    let mut parts: Vec<Vec<usize>> = vec![(0..items.len()).collect()];
    while let Some(part) = parts.pop() {
        match publish_quilt(api, &items, &part).await {
            Ok(placed) => {
                api.telemetry.proof_quilt_published(part.len());
                for (&i, p) in part.iter().zip(placed) {
                    answers[i] = Some(Ok(p));
                }
            }
            Err(QuiltFailure::TooLarge(_)) if part.len() > 1 => {
                let (first, second) = part.split_at(part.len() / 2);
                parts.push(second.to_vec());
                parts.push(first.to_vec());
            }
            Err(QuiltFailure::TooLarge(reason)) => {
                api.telemetry.proof_batch_failed();
                let i = part[0];
                answers[i] = Some(Err(ApiError::Inference {
                    status: 413,
                    reason: "PROOF_TOO_LARGE",
                    message: format!(
                        "cannot store the proof ({} bytes): it fits no quilt of this \
                         committee ({reason}); nothing was stored",
                        items[i].data.len()
                    ),
                }));
            }
            Err(QuiltFailure::Failed(e)) => {
                api.telemetry.proof_batch_failed();
                tracing::info!(proofs = part.len(), error = %e, "a quilt of proofs was not stored");
                for &i in &part {
                    answers[i] = Some(Err(e.clone()));
                }
            }
        }
    }
    answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| {
                Err(ReadError::Internal("a proof of the batch got no answer".into()).into())
            })
        })
        .collect()
}

/// Encode `part` of `items` as one quilt and publish it as `PUT /v1/quilts` does (same limit,
/// admission and store, written through to the cache, so `verify-proof` against this gateway
/// reads it without a fill); each proof's place, in `part`'s order.
async fn publish_quilt(
    api: &Api,
    items: &[Item],
    part: &[usize],
) -> Result<Vec<Placed>, QuiltFailure> {
    use codec::quilt::{self, QuiltError};
    let failed = |e: ApiError| QuiltFailure::Failed(store_error(e, part.len()));
    let settings = api
        .publish
        .as_ref()
        .ok_or(ApiError::PublishingDisabled(api.publish_off))
        .map_err(failed)?;
    let config = *api.filler.topology().config();
    let limit = settings.max_upload.min(config.max_blob_size());
    let files: Vec<(String, Bytes)> = part
        .iter()
        .map(|&i| (items[i].identifier.clone(), items[i].data.clone()))
        .collect();
    let encoded = tokio::task::spawn_blocking(move || {
        let inputs: Vec<quilt::PatchInput<'_>> = files
            .iter()
            .map(|(identifier, data)| quilt::PatchInput {
                identifier: identifier.clone(),
                tags: Default::default(),
                data,
            })
            .collect();
        quilt::encode_quilt_bounded(&config, &inputs, limit)
    })
    .await
    .map_err(|e| failed(ReadError::Internal(format!("quilt encode task failed: {e}")).into()))?;
    let encoded = match encoded {
        Ok(encoded) => encoded,
        Err(
            e @ (QuiltError::ExceedsLimit { .. }
            | QuiltError::QuiltTooLarge { .. }
            | QuiltError::TooManyPatches { .. }
            | QuiltError::IndexTooLarge(_)
            | QuiltError::PatchTooLarge { .. }),
        ) => return Err(QuiltFailure::TooLarge(e.to_string())),
        Err(e) => {
            return Err(failed(ApiError::Publish(
                format!("cannot build their quilt: {e}"),
                false,
            )))
        }
    };
    let mut admission =
        super::upload::admit(api, settings, encoded.data.len() as u64).map_err(failed)?;
    let index = encoded.index;
    let stored = super::upload::store(
        api,
        settings,
        Bytes::from(encoded.data),
        None,
        &mut admission.memory,
    )
    .await
    .map_err(failed)?;
    let quilt_id = stored.blob_id.ok_or_else(|| {
        failed(ApiError::Publisher(format!(
            "the publisher answered HTTP {}: {}",
            stored.status, stored.answer
        )))
    })?;
    part.iter()
        .map(|&i| {
            index
                .by_identifier(&items[i].identifier)
                .map(|p| Placed {
                    quilt_id,
                    patch_id: p.patch_id(quilt_id),
                })
                .ok_or_else(|| {
                    failed(
                        ReadError::Internal(format!(
                            "quilt {quilt_id} has no patch {}",
                            items[i].identifier
                        ))
                        .into(),
                    )
                })
        })
        .collect()
}

/// A publish error as the answer of a request whose proof it did not store.
fn store_error(e: ApiError, proofs: usize) -> ApiError {
    let what = if proofs == 1 {
        "cannot store the proof".to_owned()
    } else {
        format!("cannot store the proof (in a quilt of {proofs} proofs)")
    };
    match e {
        ApiError::Publish(m, quorum) => ApiError::Publish(format!("{what}: {m}"), quorum),
        ApiError::Publisher(m) => ApiError::Publisher(format!("{what}: {m}")),
        other => other,
    }
}

/// Publish a proof blob as `PUT /v1/blobs` would, under the same admission (and cache it, so
/// `verify-proof` against this gateway reads it without a fill). The caller has checked the
/// publish token.
async fn store_proof_blob(api: &Api, bytes: Bytes) -> Result<BlobId, ApiError> {
    let settings = api
        .publish
        .as_ref()
        .ok_or(ApiError::PublishingDisabled(api.publish_off))?;
    let mut admission = super::upload::admit(api, settings, bytes.len() as u64)?;
    let stored = super::upload::store(api, settings, bytes, None, &mut admission.memory)
        .await
        .map_err(|e| match e {
            ApiError::Publish(m, quorum) => {
                ApiError::Publish(format!("cannot store the proof: {m}"), quorum)
            }
            ApiError::Publisher(m) => ApiError::Publisher(format!("cannot store the proof: {m}")),
            other => other,
        })?;
    stored.blob_id.ok_or_else(|| {
        ApiError::Publisher(format!(
            "cannot store the proof: the publisher answered HTTP {}: {}",
            stored.status, stored.answer
        ))
    })
}

/// Read an inference body of at most [`MAX_BODY`] bytes under its admission, which covers its
/// `first` bytes (the declared length, which the transports enforce, or a first guess): past
/// them the reservation grows with what arrives, and the body is cut off with 503 when the
/// budget cannot cover it.
async fn read_admitted<B>(
    api: &Api,
    body: B,
    memory: &mut Reservation,
    first: u64,
) -> Result<Bytes, ApiError>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut out = BytesMut::new();
    let mut cover = Cover::new(first, MAX_BODY as u64);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::BadRequest(format!("cannot read the request body: {}", e.into()))
        })?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let reached = (out.len() + data.remaining()) as u64;
        if reached > MAX_BODY as u64 {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_BODY as u64,
            });
        }
        if !cover.received(reached, memory, |bytes| bytes * COST_PER_BODY_BYTE) {
            tracing::debug!(
                received = reached,
                "an inference body outgrew the inference memory budget"
            );
            api.telemetry.admission_refused("inference_memory");
            return Err(ApiError::AtCapacity("inference memory"));
        }
        while data.has_remaining() {
            let chunk = data.chunk();
            let n = chunk.len();
            out.extend_from_slice(chunk);
            data.advance(n);
        }
    }
    Ok(out.freeze())
}

fn encode(value: &impl serde::Serialize) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value)
        .map_err(|e| ReadError::Internal(format!("cannot encode the answer: {e}")).into())
}
