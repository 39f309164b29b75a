//! Aggregator parity (issue 17), at the front of every request: CORS as the Walrus aggregator's
//! tower-http `CorsLayer` sends it (any origin, any method and header, preflights answered with
//! a 24-hour `max-age`), the denylist (a blocked Blob ID in the path answers 451
//! `FORBIDDEN_BLOB` before any cache lookup), the read options `/v1/blobs/{id}` takes (the
//! aggregator's `ReadOptions`: unknown parameters are a 400, as its `deny_unknown_fields`
//! makes them), and the routes beside the blob reads: `/v1alpha/blobs/concat` ([`super::concat`])
//! and `/v1/api` ([`super::openapi`]).

use super::body::Body;
use super::error::ApiError;
use super::Api;
use crate::fill::ReadError;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Body as HttpBody;

/// `/v1alpha/blobs/concat`.
pub(super) const CONCAT: &str = "/v1alpha/blobs/concat";
/// `/v1/api`: the OpenAPI description.
pub(super) const API_DOCS: &str = "/v1/api";

/// What the parity layer owns for the lifetime of the [`Api`].
pub(super) struct Parity {
    /// The blocklist file's watcher; stops with the Api.
    _watch: Option<crate::blocklist::Watch>,
}

impl Parity {
    pub(super) fn new(filler: &crate::fill::Filler, config: &crate::GatewayConfig) -> Self {
        Self {
            _watch: config
                .blocklist
                .as_ref()
                .map(|_| crate::blocklist::watch(filler.clone())),
        }
    }
}

/// The answer to a request that is settled before routing: a CORS preflight, a blocked blob,
/// or read options the aggregator would refuse. `None`: route it.
pub(super) fn front<B>(
    api: &Api,
    request: &Request<B>,
) -> Option<Result<Response<Body>, ApiError>> {
    if request.method() == Method::OPTIONS {
        return Some(Ok(preflight()));
    }
    let query = request.uri().query();
    if query.is_none() && api.filler.blocklist().is_empty() {
        return None;
    }
    let path = request.uri().path();
    let id = crate::blocklist::blob_id_in_path(path)?;
    if api.filler.blocklist().is_blocked(&id) {
        api.telemetry.blocked(if path.starts_with("/v1/blobs/") {
            "blob"
        } else {
            "inference"
        });
        return Some(Err(ApiError::Read(ReadError::Blocked)));
    }
    if super::whole_blob_id(path).is_some() {
        if let Err(e) = read_options(query) {
            return Some(Err(e));
        }
    }
    None
}

/// The routes this module adds.
pub(super) fn handles(path: &str) -> bool {
    path == CONCAT || path == API_DOCS
}

pub(super) async fn route<B>(api: &Api, request: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if request.uri().path() == API_DOCS {
        super::read_only(request.method())?;
        return Ok(super::openapi::response(request.method() == Method::HEAD));
    }
    super::concat::route(api, request).await
}

/// The consistency options of a blob read (the aggregator's `ReadOptions`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ReadOptions {
    pub strict: bool,
    pub skip: bool,
}

/// Parse `strict_consistency_check` / `skip_consistency_check` (`true` or `false`, each at most
/// once); any other parameter is refused, and both set is the aggregator's
/// `INVALID_CONSISTENCY_CHECK`.
pub(super) fn read_options(query: Option<&str>) -> Result<ReadOptions, ApiError> {
    let mut options = ReadOptions::default();
    let mut seen = (false, false);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (slot, seen) = match key {
            "strict_consistency_check" => (&mut options.strict, &mut seen.0),
            "skip_consistency_check" => (&mut options.skip, &mut seen.1),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {:?}, expected `strict_consistency_check` or \
                     `skip_consistency_check`",
                    clip(key)
                )))
            }
        };
        if std::mem::replace(seen, true) {
            return Err(ApiError::BadRequest(format!("duplicate field `{key}`")));
        }
        *slot = parse_bool(key, value)?;
    }
    if options.strict && options.skip {
        return Err(ApiError::InvalidConsistencyCheck);
    }
    Ok(options)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(ApiError::BadRequest(format!(
            "{key} must be `true` or `false`, got {:?}",
            clip(other)
        ))),
    }
}

fn clip(text: &str) -> String {
    text.chars().take(40).collect()
}

/// The preflight answer of tower-http's `CorsLayer` as the aggregator configures it
/// (`allow_origin(Any)`, `allow_methods(Any)`, `allow_headers(Any)`, `max_age(24 h)`): 200,
/// no body, for any `OPTIONS` request.
pub(super) fn preflight() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    response
}

/// Every answer may be read by a page of any origin, as the aggregator's are (blob answers
/// carry this already, the memory-hit lane included).
pub(super) fn allow_any_origin(headers: &mut HeaderMap) {
    headers
        .entry(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .or_insert(HeaderValue::from_static("*"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_options_are_the_aggregators() {
        assert_eq!(read_options(None), Ok(ReadOptions::default()));
        assert_eq!(
            read_options(Some("strict_consistency_check=true")),
            Ok(ReadOptions {
                strict: true,
                skip: false
            })
        );
        assert_eq!(
            read_options(Some(
                "skip_consistency_check=true&strict_consistency_check=false"
            )),
            Ok(ReadOptions {
                strict: false,
                skip: true
            })
        );
        assert_eq!(
            read_options(Some(
                "strict_consistency_check=true&skip_consistency_check=true"
            )),
            Err(ApiError::InvalidConsistencyCheck)
        );
        for bad in [
            "foo=1",
            "strict_consistency_check=yes",
            "strict_consistency_check",
            "skip_consistency_check=true&skip_consistency_check=true",
        ] {
            assert!(
                matches!(read_options(Some(bad)), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
