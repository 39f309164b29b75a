//! The one place where errors become HTTP statuses and Walrus JSON error envelopes (SPEC §10,
//! §11): `{"error":{"code","status","message","details":[{"@type":"ErrorInfo","reason",
//! "domain","metadata"}]}}`. Handlers return [`ApiError`]; none builds an error response itself.

use super::body::Body;
use crate::fill::ReadError;
use http::header::{HeaderValue, ALLOW, CONTENT_RANGE, RETRY_AFTER};
use http::{Response, StatusCode};

/// The aggregator's error domain.
const DOMAIN: &str = "daemon.walrus.space";

/// Everything a request can fail with, in the client's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("malformed Blob ID: {0}")]
    InvalidBlobId(String),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("the requested range is not satisfiable for a blob of {len} bytes")]
    RangeNotSatisfiable { len: u64 },
    #[error("invalid byte range: {0}")]
    InvalidByteRange(String),
    #[error("the gateway is at its limit of concurrent requests")]
    Overloaded,
    /// A request refused at admission, before its body was read: the named bound (publish
    /// slots, publish or inference memory) is in use by others. 503 with `Retry-After`.
    #[error("the gateway is at its limit of {0}; retry later")]
    AtCapacity(&'static str),
    #[error("no such route")]
    RouteNotFound,
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("the request body exceeds the {limit}-byte limit")]
    PayloadTooLarge { limit: u64 },
    #[error("the Walrus publisher failed: {0}")]
    Publisher(String),
    #[error("publishing is disabled on this gateway: {0}")]
    PublishingDisabled(&'static str),
    /// A failed publish; `true` when too few shards confirmed (504), else an internal error.
    #[error("{0}")]
    Publish(String, bool),
    #[error("this gateway has no disk tier (start it with --cache-dir)")]
    NoDiskTier,
    /// The disk tier could not persist an admin change (full or read-only device, I/O error);
    /// nothing changed.
    #[error("the disk tier cannot persist the change, nothing was changed: {0}")]
    DiskUnwritable(String),
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    /// `strict_consistency_check` and `skip_consistency_check` together (the aggregator's 400).
    #[error("cannot set both strict and skip consistency check options")]
    InvalidConsistencyCheck,
    /// The blocklist admin routes need `--blocklist FILE` to persist their changes.
    #[error("this gateway has no blocklist file (start it with --blocklist FILE)")]
    NoBlocklistFile,
    /// The blocklist file could not be written; nothing changed.
    #[error("the blocklist file cannot be written, nothing was changed: {0}")]
    BlocklistUnwritable(String),
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Quilts: a patch ID that does not parse (400), a patch the quilt does not have (404, the
    /// aggregator's `QUILT_PATCH_NOT_FOUND`), a blob that is not a readable quilt (500, as the
    /// aggregator answers a quilt it cannot decode).
    #[error("malformed quilt patch ID: {0}")]
    InvalidQuiltPatchId(String),
    #[error("the requested quilt patch does not exist on Walrus: {0}")]
    QuiltPatchNotFound(String),
    #[error("{0}")]
    InvalidQuilt(String),
    /// `by-object-id`: the Sui object could not be turned into a Blob ID.
    #[error(transparent)]
    Object(#[from] super::object::ObjectError),
    /// An inference failure (`inference::InferenceError`): its documented status, a fixed
    /// reason code and its message (which names the input, operator or limit).
    #[error("{message}")]
    Inference {
        status: u16,
        reason: &'static str,
        message: String,
    },
}

impl From<inference::InferenceError> for ApiError {
    /// Loader failures are the gateway's own errors and map as they would for a blob read
    /// (unknown model: 404); everything else keeps the status the inference crate documents.
    fn from(e: inference::InferenceError) -> Self {
        use crate::models::ModelLoadError;
        use inference::InferenceError as E;
        match e
            .loader_error()
            .and_then(|l| l.downcast_ref::<ModelLoadError>())
        {
            Some(ModelLoadError::Read(read)) => return ApiError::Read(read.clone()),
            Some(too_large @ ModelLoadError::TooLarge { .. }) => {
                return ApiError::Inference {
                    status: 413,
                    reason: "MODEL_TOO_LARGE",
                    message: too_large.to_string(),
                }
            }
            None => {}
        }
        let reason = match &e {
            E::ModelUnavailable { .. } => "MODEL_UNAVAILABLE",
            E::ModelTooLarge { .. } => "MODEL_TOO_LARGE",
            E::InvalidModel { .. } => "INVALID_MODEL",
            E::UnsupportedOperator { .. } => "UNSUPPORTED_OPERATOR",
            E::BadRequest(_) => "INVALID_PARAMETERS",
            E::BadInput { .. } => "INVALID_INPUT",
            E::TooLarge(_) => "REQUEST_TOO_LARGE",
            E::QueueFull(_) => "TOO_MANY_REQUESTS",
            E::Timeout(_) => "INFERENCE_TIMEOUT",
            E::Execution(_) => "INFERENCE_FAILED",
            E::Internal(_) => "INTERNAL",
        };
        ApiError::Inference {
            status: e.http_status(),
            reason,
            message: e.to_string(),
        }
    }
}

/// `Cache-Control` of a 404 `BLOB_NOT_FOUND`: a short-lived negative answer.
pub const NEGATIVE_CACHE_CONTROL: &str = "public, max-age=5";

impl ApiError {
    /// HTTP status, Walrus status string and reason code.
    pub fn classify(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::InvalidBlobId(_) => (
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "INVALID_BLOB_ID",
            ),
            ApiError::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "INVALID_PARAMETERS",
            ),
            ApiError::RangeNotSatisfiable { .. } | ApiError::InvalidByteRange(_) => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_NOT_SATISFIABLE",
                "INVALID_BYTE_RANGE",
            ),
            ApiError::Overloaded | ApiError::Read(ReadError::Overloaded) => (
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "TOO_MANY_REQUESTS",
            ),
            ApiError::AtCapacity(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "AT_CAPACITY",
            ),
            ApiError::RouteNotFound => (StatusCode::NOT_FOUND, "NOT_FOUND", "ROUTE_NOT_FOUND"),
            ApiError::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "INVALID_TOKEN")
            }
            ApiError::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_EXCEEDED",
                "BODY_TOO_LARGE",
            ),
            ApiError::PublishingDisabled(_) => (
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "PUBLISHING_DISABLED",
            ),
            ApiError::Publish(_, true) => (
                StatusCode::GATEWAY_TIMEOUT,
                "DEADLINE_EXCEEDED",
                "INSUFFICIENT_CONFIRMATIONS",
            ),
            ApiError::Publisher(_) => (StatusCode::BAD_GATEWAY, "UNAVAILABLE", "PUBLISHER_FAILED"),
            ApiError::Publish(_, false) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "INTERNAL")
            }
            ApiError::NoDiskTier => (StatusCode::CONFLICT, "FAILED_PRECONDITION", "NO_DISK_TIER"),
            ApiError::DiskUnwritable(_) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "UNAVAILABLE",
                "DISK_TIER_UNWRITABLE",
            ),
            ApiError::MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "INVALID_ARGUMENT",
                "METHOD_NOT_ALLOWED",
            ),
            ApiError::Read(
                ReadError::NotFound { .. }
                | ReadError::NotFoundUpstream { .. }
                | ReadError::Gone(_),
            ) => (StatusCode::NOT_FOUND, "NOT_FOUND", "BLOB_NOT_FOUND"),
            ApiError::Read(ReadError::Unavailable(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "BLOB_UNAVAILABLE",
            ),
            ApiError::Read(ReadError::TooLarge { .. }) => {
                (StatusCode::FORBIDDEN, "SIZE_EXCEEDED", "BLOB_TOO_LARGE")
            }
            ApiError::Read(ReadError::Inconsistent(_)) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "BLOB_INCONSISTENT",
            ),
            ApiError::Read(ReadError::Internal(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "INTERNAL")
            }
            ApiError::Read(ReadError::Blocked | ReadError::ForbiddenByNodes { .. }) => (
                StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
                "UNAVAILABLE_FOR_LEGAL_REASONS",
                "FORBIDDEN_BLOB",
            ),
            ApiError::InvalidConsistencyCheck => (
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "INVALID_CONSISTENCY_CHECK",
            ),
            ApiError::NoBlocklistFile => (
                StatusCode::CONFLICT,
                "FAILED_PRECONDITION",
                "NO_BLOCKLIST_FILE",
            ),
            ApiError::BlocklistUnwritable(_) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "UNAVAILABLE",
                "BLOCKLIST_UNWRITABLE",
            ),
            ApiError::InvalidQuiltPatchId(_) => (
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "INVALID_QUILT_PATCH_ID",
            ),
            ApiError::QuiltPatchNotFound(_) => {
                (StatusCode::NOT_FOUND, "NOT_FOUND", "QUILT_PATCH_NOT_FOUND")
            }
            ApiError::InvalidQuilt(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "INVALID_QUILT",
            ),
            ApiError::Object(e) => {
                use super::object::ObjectError as O;
                match e {
                    O::InvalidId(_) => (
                        StatusCode::BAD_REQUEST,
                        "INVALID_ARGUMENT",
                        "INVALID_OBJECT_ID",
                    ),
                    O::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND", "BLOB_NOT_FOUND"),
                    O::NotABlob { .. } => {
                        (StatusCode::BAD_GATEWAY, "UNAVAILABLE", "NOT_A_BLOB_OBJECT")
                    }
                    O::Malformed { .. } => (
                        StatusCode::BAD_GATEWAY,
                        "UNAVAILABLE",
                        "INVALID_CHAIN_OBJECT",
                    ),
                    O::ChainUnavailable(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "UNAVAILABLE",
                        "CHAIN_UNAVAILABLE",
                    ),
                    O::NoChain => (StatusCode::NOT_IMPLEMENTED, "UNIMPLEMENTED", "NO_CHAIN"),
                }
            }
            ApiError::Inference { status, reason, .. } => {
                let status =
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let code = match status.as_u16() {
                    400 => "INVALID_ARGUMENT",
                    404 => "NOT_FOUND",
                    413 => "SIZE_EXCEEDED",
                    422 => "FAILED_PRECONDITION",
                    429 => "RESOURCE_EXHAUSTED",
                    502 => "UNAVAILABLE",
                    504 => "DEADLINE_EXCEEDED",
                    _ => "INTERNAL",
                };
                (status, code, *reason)
            }
        }
    }

    /// The JSON error envelope.
    pub fn envelope(&self) -> serde_json::Value {
        let (status, code, reason) = self.classify();
        serde_json::json!({
            "error": {
                "code": status.as_u16(),
                "status": code,
                "message": self.to_string(),
                "details": [{
                    "@type": "ErrorInfo",
                    "reason": reason,
                    "domain": DOMAIN,
                    "metadata": {},
                }],
            }
        })
    }

    /// The full response; `retry_after` seconds go on 429 and 503.
    pub fn into_response(self, retry_after: u32) -> Response<Body> {
        let (status, _, _) = self.classify();
        let mut response = super::json_response(status, &self.envelope());
        let headers = response.headers_mut();
        match &self {
            ApiError::RangeNotSatisfiable { len } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    headers.insert(CONTENT_RANGE, v);
                }
            }
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
        }
        // "Does not exist" may be kept by downstream caches briefly, as this gateway keeps it
        // (`--negative-ttl`); every other error stays `no-store`.
        if status == StatusCode::NOT_FOUND && matches!(self, ApiError::Read(_)) {
            headers.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static(NEGATIVE_CACHE_CONTROL),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::super::object::ObjectError;
    use super::*;

    #[test]
    fn not_found_uses_the_aggregator_envelope() {
        let e = ApiError::Read(ReadError::NotFound {
            shards: 7,
            n_shards: 10,
        });
        let v = e.envelope();
        assert_eq!(v["error"]["code"], 404);
        assert_eq!(v["error"]["status"], "NOT_FOUND");
        assert_eq!(v["error"]["details"][0]["reason"], "BLOB_NOT_FOUND");
        assert_eq!(v["error"]["details"][0]["@type"], "ErrorInfo");
        assert_eq!(v["error"]["details"][0]["domain"], DOMAIN);
    }

    #[test]
    fn every_error_has_its_status() {
        let cases = [
            (ApiError::InvalidBlobId("x".into()), 400),
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::RangeNotSatisfiable { len: 3 }, 416),
            (ApiError::InvalidByteRange("x".into()), 416),
            (ApiError::Overloaded, 429),
            (ApiError::Read(ReadError::Overloaded), 429),
            (ApiError::AtCapacity("publish memory"), 503),
            (ApiError::RouteNotFound, 404),
            (ApiError::MethodNotAllowed { allow: "GET" }, 405),
            (ApiError::DiskUnwritable("read-only".into()), 507),
            (ApiError::Read(ReadError::Unavailable("x".into())), 503),
            (ApiError::Read(ReadError::TooLarge { len: 2, max: 1 }), 403),
            (ApiError::Read(ReadError::Inconsistent("x".into())), 500),
            (ApiError::Read(ReadError::Internal("x".into())), 500),
            (ApiError::Read(ReadError::Blocked), 451),
            (
                ApiError::Read(ReadError::ForbiddenByNodes {
                    shards: 7,
                    n_shards: 10,
                }),
                451,
            ),
            (ApiError::Read(ReadError::Gone("expired")), 404),
            (ApiError::InvalidConsistencyCheck, 400),
            (ApiError::NoBlocklistFile, 409),
            (ObjectError::InvalidId("x".into()).into(), 400),
            (ObjectError::NotFound(chain::ObjectId([1; 32])).into(), 404),
            (
                ObjectError::NotABlob {
                    object: chain::ObjectId([1; 32]),
                    got: "0x2::coin::Coin".into(),
                }
                .into(),
                502,
            ),
            (ObjectError::ChainUnavailable("x".into()).into(), 503),
            (ObjectError::NoChain.into(), 501),
            (
                inference::InferenceError::BadRequest("x".into()).into(),
                400,
            ),
            (inference::InferenceError::QueueFull("x".into()).into(), 429),
            (
                inference::InferenceError::Timeout(std::time::Duration::from_secs(1)).into(),
                504,
            ),
        ];
        for (e, status) in cases {
            let retry = matches!(status, 429 | 503);
            let response = e.clone().into_response(7);
            assert_eq!(response.status().as_u16(), status, "{e:?}");
            assert_eq!(response.headers().contains_key(RETRY_AFTER), retry, "{e:?}");
            let negative = matches!(e, ApiError::Read(_)) && status == 404;
            assert_eq!(
                response.headers()[http::header::CACHE_CONTROL],
                if negative {
                    NEGATIVE_CACHE_CONTROL
                } else {
                    "no-store"
                },
                "{e:?}"
            );
        }
    }
}
