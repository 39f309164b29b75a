//! The one error type of the crate. Every variant names what went wrong in the caller's words and
//! carries the HTTP status the gateway is meant to answer with ([`InferenceError::http_status`]),
//! so the gateway's single error-mapping place can stay a one-liner for inference errors.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use codec::BlobId;

/// An error from loading a model, building a plan, validating a request or running it.
///
/// `Clone` because one plan build's failure is handed to every request that waited on it
/// (single-flight) and is remembered for a while (negative cache).
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferenceError {
    /// The [`ModelLoader`](crate::ModelLoader) could not produce the model's bytes. Intended
    /// status: whatever the loader's own error means (the gateway downcasts
    /// [`InferenceError::loader_error`] to its own type: unknown blob 404, upstream failure 502);
    /// 502 if it cannot tell.
    #[error("model {model} could not be loaded: {cause}")]
    ModelUnavailable {
        model: BlobId,
        cause: Arc<dyn StdError + Send + Sync + 'static>,
    },
    /// The blob is larger than `max_model_bytes`. 413.
    #[error("model {model} is {size} bytes, above the limit of {limit} bytes")]
    ModelTooLarge {
        model: BlobId,
        size: u64,
        limit: u64,
    },
    /// The blob is not a usable ONNX model (not protobuf, no graph, a graph tract cannot analyse,
    /// an input of a dtype JSON cannot carry, external data). 422; remembered briefly.
    #[error("blob {model} is not a usable ONNX model: {reason}")]
    InvalidModel { model: BlobId, reason: String },
    /// The model uses operators this tract build does not implement. 422 naming them;
    /// remembered briefly.
    #[error("model {model} uses operators not supported by tract-onnx {}: {}", crate::TRACT_VERSION, .operators.join(", "))]
    UnsupportedOperator {
        model: BlobId,
        operators: Vec<String>,
    },
    /// The request body is not the expected JSON (syntax, unknown fields, missing `inputs`). 400.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// One input is wrong: unknown or missing name, dtype, shape, element count, value range. 400
    /// naming the input.
    #[error("input `{input}`: {reason}")]
    BadInput { input: String, reason: String },
    /// The request is over a configured size bound (elements, rank, number of inputs, the
    /// estimated working memory of its run); the message names the bound. 413.
    #[error("request too large: {0}")]
    TooLarge(String),
    /// No execution slot became free: the queue was at its bound (refused at once), or every
    /// slot stayed busy for `queue_timeout`; the message says which. 429.
    #[error("no inference run slot: {0}")]
    QueueFull(String),
    /// The run took longer than `inference_timeout`. 504, answered at the deadline; the
    /// computation stops at its next operator boundary and gives back its execution slot then.
    #[error("inference exceeded its deadline of {0:?}")]
    Timeout(Duration),
    /// tract failed while running a plan that had built, or produced an output JSON cannot carry.
    /// 500 (422 would blame a model that loaded fine).
    #[error("inference failed: {0}")]
    Execution(String),
    /// A bug or a lost task (panic in a worker, runtime shutting down). 500.
    #[error("internal inference error: {0}")]
    Internal(String),
}

impl InferenceError {
    /// The HTTP status the gateway should answer with; see each variant.
    pub fn http_status(&self) -> u16 {
        match self {
            InferenceError::ModelUnavailable { .. } => 502,
            InferenceError::ModelTooLarge { .. } | InferenceError::TooLarge(_) => 413,
            InferenceError::InvalidModel { .. } | InferenceError::UnsupportedOperator { .. } => 422,
            InferenceError::BadRequest(_) | InferenceError::BadInput { .. } => 400,
            InferenceError::QueueFull(_) => 429,
            InferenceError::Timeout(_) => 504,
            InferenceError::Execution(_) | InferenceError::Internal(_) => 500,
        }
    }

    /// The loader's own error, for the gateway to downcast and map (e.g. unknown blob → 404).
    pub fn loader_error(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        match self {
            InferenceError::ModelUnavailable { cause, .. } => Some(cause.as_ref()),
            _ => None,
        }
    }

    /// Failures that are the model's fault and so worth remembering (negative cache): asking
    /// again within the TTL gets the same answer without refetching or rebuilding.
    pub(crate) fn is_model_fault(&self) -> bool {
        matches!(
            self,
            InferenceError::InvalidModel { .. }
                | InferenceError::UnsupportedOperator { .. }
                | InferenceError::ModelTooLarge { .. }
        )
    }

    pub(crate) fn bad_input(input: impl Into<String>, reason: impl Into<String>) -> Self {
        InferenceError::BadInput {
            input: input.into(),
            reason: reason.into(),
        }
    }
}
