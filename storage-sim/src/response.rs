//! Responses of the simulated node: the Walrus JSON envelopes (SPEC §10) and the one place
//! where a failure becomes an HTTP status, a status string, a reason and a domain.
//!
//! Success: `{"success":{"code":<http>,"data":<T>}}`. Error:
//! `{"error":{"code","status","message","details":[{"@type":"ErrorInfo","reason","domain","metadata"}]}}`.
//! Codes, status strings, reasons, domains and messages follow the real node
//! (`walrus-service/src/node/errors.rs`) wherever the real node answers with an envelope. Where
//! it does not (a malformed path, an oversize body, an unknown endpoint: axum's own plain-text
//! rejections), the simulator still answers with an envelope, using the reasons below, so that
//! every error a client sees from the simulator is machine-readable.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::SimBody;

/// Error domain of storage-node errors.
pub const STORAGE_NODE_ERROR_DOMAIN: &str = "storage.walrus.space";
/// Error domain of service-agnostic errors (internal errors, unavailability).
pub const GLOBAL_ERROR_DOMAIN: &str = "global";

/// Everything a request to a simulated node can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("invalid blob ID {id:?}: {reason}")]
    InvalidBlobId { id: String, reason: String },
    #[error("invalid sliver pair index {0:?}: expected a decimal u16")]
    InvalidPairIndex(String),
    #[error("invalid sliver type {0:?}: expected primary or secondary")]
    InvalidSliverType(String),
    #[error("the requested sliver index is out of range: requires 0 <= index ({index}) < {max}")]
    IndexOutOfRange { index: u16, max: u16 },
    #[error("the requested metadata is unavailable")]
    MetadataNotFound,
    #[error("the requested sliver is unavailable")]
    SliverNotFound,
    #[error("shard {shard} is not assigned to this node in epoch {epoch}")]
    ShardNotAssigned { shard: u16, epoch: u32 },
    #[error("Expected request with `Content-Type: application/octet-stream`")]
    UnsupportedContentType,
    #[error("unable to decode request body as BCS")]
    BcsDecode(#[source] codec::BcsError),
    #[error("the provided metadata failed to verify: {0}")]
    InvalidMetadata(#[source] codec::CodecError),
    #[error("blob metadata is required but missing")]
    MissingMetadata,
    #[error("the provided sliver is invalid: {0}")]
    InvalidSliver(String),
    #[error("the request body exceeds the limit of {limit} bytes for this endpoint")]
    BodyTooLarge { limit: u64 },
    #[error("failed to read the request body: {0}")]
    BodyRead(String),
    #[error("no endpoint {method} {path} on this simulated storage node")]
    UnknownEndpoint { method: String, path: String },
    #[error("the admin endpoint only accepts requests from loopback addresses")]
    AdminNotLoopback,
    #[error("invalid faults: {0}")]
    InvalidFaults(String),
    #[error("no simulated node {0:?}")]
    NoSuchNode(String),
    #[error("the requested blob is blocked")]
    ForbiddenBlob,
    #[error("the service is currently unavailable")]
    Unavailable,
    #[error("an internal error has occurred, please report it")]
    Internal,
    #[error("failed to deserialize query string: {0}")]
    InvalidQuery(String),
    #[error("the filter is invalid: {0}")]
    InvalidFilter(String),
    #[error("at least one symbol ID must be specified")]
    NoSymbolsSpecified,
    #[error("the requested recovery symbol is not the responsibility of this node's shards")]
    SymbolNotPresentAtShards,
}

impl ApiError {
    /// HTTP code and Walrus status string (`api/errors.rs`).
    fn status(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            InvalidBlobId { .. }
            | InvalidPairIndex(_)
            | InvalidSliverType(_)
            | IndexOutOfRange { .. }
            | UnsupportedContentType
            | BcsDecode(_)
            | InvalidMetadata(_)
            | InvalidSliver(_)
            | BodyRead(_)
            | InvalidFaults(_)
            | InvalidQuery(_)
            | InvalidFilter(_) => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            ShardNotAssigned { .. }
            | MissingMetadata
            | NoSymbolsSpecified
            | SymbolNotPresentAtShards => (StatusCode::BAD_REQUEST, "FAILED_PRECONDITION"),
            MetadataNotFound | SliverNotFound | UnknownEndpoint { .. } | NoSuchNode(_) => {
                (StatusCode::NOT_FOUND, "NOT_FOUND")
            }
            // No Walrus status string pairs with 413; SIZE_EXCEEDED names the cause.
            BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_EXCEEDED"),
            AdminNotLoopback => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            ForbiddenBlob => (
                StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
                "UNAVAILABLE_FOR_LEGAL_REASONS",
            ),
            Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }

    /// The machine-readable reason (unique within its domain).
    pub(crate) fn reason(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidBlobId { .. } => "INVALID_BLOB_ID",
            InvalidPairIndex(_) => "INVALID_SLIVER_PAIR_INDEX",
            InvalidSliverType(_) => "INVALID_SLIVER_TYPE",
            IndexOutOfRange { .. } => "INDEX_OUT_OF_RANGE",
            MetadataNotFound | MissingMetadata => "METADATA_NOT_FOUND",
            SliverNotFound => "SLIVER_NOT_FOUND",
            ShardNotAssigned { .. } => "SHARD_NOT_ASSIGNED",
            UnsupportedContentType | BcsDecode(_) | BodyRead(_) => "INVALID_CONTENT_TYPE",
            InvalidMetadata(_) => "INVALID_METADATA",
            InvalidSliver(_) => "INVALID_SLIVER",
            BodyTooLarge { .. } => "BODY_TOO_LARGE",
            UnknownEndpoint { .. } => "UNKNOWN_ENDPOINT",
            AdminNotLoopback => "ADMIN_NOT_LOOPBACK",
            InvalidFaults(_) => "INVALID_FAULTS",
            NoSuchNode(_) => "NO_SUCH_NODE",
            ForbiddenBlob => "FORBIDDEN_BLOB",
            Unavailable => "UNAVAILABLE",
            Internal => "INTERNAL_ERROR",
            InvalidQuery(_) => "INVALID_QUERY",
            InvalidFilter(_) => "INVALID_FILTER",
            NoSymbolsSpecified => "NO_SYMBOLS_SPECIFIED",
            SymbolNotPresentAtShards => "SYMBOL_NOT_PRESENT_AT_SHARDS",
        }
    }

    fn domain(&self) -> &'static str {
        match self {
            ApiError::Unavailable | ApiError::Internal => GLOBAL_ERROR_DOMAIN,
            _ => STORAGE_NODE_ERROR_DOMAIN,
        }
    }

    /// Values that appear in the message, for clients that should not parse it.
    fn metadata(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            ApiError::IndexOutOfRange { index, max } => json!({"index": index, "max": max}),
            ApiError::ShardNotAssigned { shard, epoch } => json!({"shard": shard, "epoch": epoch}),
            ApiError::BodyTooLarge { limit } => json!({"limit": limit}),
            _ => json!({}),
        }
    }

    /// The HTTP status this error is answered with.
    pub(crate) fn http_status(&self) -> StatusCode {
        self.status().0
    }

    /// The full JSON envelope.
    pub(crate) fn envelope(&self) -> serde_json::Value {
        let (code, status) = self.status();
        serde_json::json!({
            "error": {
                "code": code.as_u16(),
                "status": status,
                "message": self.to_string(),
                "details": [{
                    "@type": "ErrorInfo",
                    "reason": self.reason(),
                    "domain": self.domain(),
                    "metadata": self.metadata(),
                }],
            }
        })
    }

    pub(crate) fn into_response(self) -> Response<SimBody> {
        json_response(self.http_status(), &self.envelope())
    }
}

/// `{"success":{"code":<code>,"data":<data>}}` with that HTTP status.
pub(crate) fn success<T: serde::Serialize>(code: StatusCode, data: T) -> Response<SimBody> {
    json_response(
        code,
        &serde_json::json!({"success": {"code": code.as_u16(), "data": data}}),
    )
}

fn json_response(code: StatusCode, value: &serde_json::Value) -> Response<SimBody> {
    let body = serde_json::to_vec(value).expect("JSON values always serialize");
    let mut response = Response::new(SimBody::full(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A 200 `application/octet-stream` response carrying BCS.
pub(crate) fn octet_stream(body: Bytes) -> Response<SimBody> {
    let mut response = Response::new(SimBody::full(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// Axum-style `405 Method Not Allowed` (empty body, `Allow` header), as the real node sends.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response<SimBody> {
    let mut response = Response::new(SimBody::full(Bytes::new()));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_the_walrus_shape() {
        let e = ApiError::ShardNotAssigned { shard: 3, epoch: 1 };
        assert_eq!(
            e.envelope(),
            serde_json::json!({"error": {
                "code": 400,
                "status": "FAILED_PRECONDITION",
                "message": "shard 3 is not assigned to this node in epoch 1",
                "details": [{"@type": "ErrorInfo", "reason": "SHARD_NOT_ASSIGNED",
                             "domain": "storage.walrus.space",
                             "metadata": {"shard": 3, "epoch": 1}}]
            }})
        );
        let e = ApiError::Unavailable.envelope();
        assert_eq!(e["error"]["code"], 503);
        assert_eq!(e["error"]["details"][0]["domain"], "global");
    }
}
