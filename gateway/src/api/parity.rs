//! Aggregator parity (issue 17), at the front of every request: CORS as the Walrus aggregator's
//! tower-http `CorsLayer` sends it (any origin, any method and header, preflights answered with
//! a 24-hour `max-age` on every path), the denylist (a blocked Blob ID in the path answers 451
//! `FORBIDDEN_BLOB` before any cache lookup), the read options `/v1/blobs/{id}` takes (the
//! aggregator's `ReadOptions`: unknown parameters are a 400, as its `deny_unknown_fields`
//! makes them), and the routes beside the blob reads: `/v1alpha/blobs/concat` ([`super::concat`])
//! and `/v1/api` ([`super::openapi`]).

use super::body::Body;
use super::error::ApiError;
use super::Api;
use crate::fill::ReadError;
use codec::BlobId;
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
    /// Every fill already re-encodes its blob (`--consistency strict`): the parameter asks for
    /// nothing more.
    strict_fills: bool,
    /// Blobs whose re-encoding matched their ID here, so a later strict read costs nothing.
    strictly_checked: moka::future::Cache<BlobId, ()>,
    /// Strict checks at once: each holds one whole blob in memory.
    strict_slots: tokio::sync::Semaphore,
    /// Largest blob a strict check is run on (`--memory-max-object`).
    strict_max: u64,
}

impl Parity {
    pub(super) fn new(filler: &crate::fill::Filler, config: &crate::GatewayConfig) -> Self {
        Self {
            _watch: config
                .blocklist
                .as_ref()
                .map(|_| crate::blocklist::watch(filler.clone())),
            strict_fills: config.consistency == codec::ConsistencyCheck::Strict,
            strictly_checked: moka::future::Cache::new(100_000),
            strict_slots: tokio::sync::Semaphore::new(STRICT_CHECKS),
            strict_max: config.memory_max_object,
        }
    }
}

/// Strict consistency checks running at once (each re-encodes a whole blob on one core).
const STRICT_CHECKS: usize = 2;

/// The answer to a request that is settled before routing: a CORS preflight, a blocked blob,
/// or read options the aggregator would refuse. `None`: route it.
pub(super) fn front<B>(
    api: &Api,
    request: &Request<B>,
) -> Option<Result<Response<Body>, ApiError>> {
    // A browser's preflight always names the method it wants; a bare OPTIONS is routed (and
    // refused as any other method a route does not take).
    if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
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

/// The routes this module adds, and blob reads that ask for a strict consistency check this
/// gateway's fills did not make ([`strict_check`]).
pub(super) fn handles<B>(api: &Api, request: &Request<B>) -> bool {
    let path = request.uri().path();
    path == CONCAT || path == API_DOCS || strict_wanted(api, request).is_some()
}

/// The blob of a `/v1/blobs/{id}?strict_consistency_check=true` read whose strictness is not
/// yet established (the fills here do not re-encode, and this blob was not checked before).
fn strict_wanted<B>(api: &Api, request: &Request<B>) -> Option<BlobId> {
    let query = request.uri().query()?;
    if api.parity.strict_fills || !query.contains("strict_consistency_check=true") {
        return None;
    }
    let id = super::whole_blob_id(request.uri().path())?;
    (read_options(Some(query)).ok()?.strict && !api.parity.strictly_checked.contains_key(&id))
        .then_some(id)
}

/// The aggregator's strict check for one blob (SPEC §9.5): re-encode all of it and require its
/// Blob ID. A blob that fails is purged and answers 500 `BLOB_INCONSISTENT`, as a strict
/// aggregator would refuse it; one that passes is remembered. Nothing to do when every fill
/// re-encodes already (by-object-id calls it for any strict read).
pub(super) async fn strict_check(api: &Api, id: BlobId) -> Result<(), ApiError> {
    if api.parity.strict_fills {
        return Ok(());
    }
    let meta = Box::pin(api.filler.metadata(id)).await?;
    let len = meta.unencoded_length();
    if len > api.parity.strict_max {
        return Err(ApiError::Read(ReadError::TooLarge {
            len,
            max: api.parity.strict_max,
        }));
    }
    let _slot = api
        .parity
        .strict_slots
        .acquire()
        .await
        .map_err(|e| ReadError::Internal(e.to_string()))?;
    if api.parity.strictly_checked.contains_key(&id) {
        return Ok(());
    }
    let body = Box::pin(super::concat::open(&api.filler, id)).await?;
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map_err(|e| ApiError::Read(e.0))?
        .to_bytes();
    let n_shards = meta.config().n_shards();
    let computed = tokio::task::spawn_blocking(move || codec::blob_id(n_shards, &bytes))
        .await
        .map_err(|e| ReadError::Internal(e.to_string()))?
        .map_err(|e| ReadError::Internal(e.to_string()))?;
    if computed != id {
        api.telemetry.strict_check("inconsistent");
        tracing::warn!(blob_id = %id, %computed, "strict consistency check failed: purged");
        let _ = api.filler.cache().purge(&id).await;
        return Err(ApiError::Read(ReadError::Inconsistent(format!(
            "re-encoding the blob gives Blob ID {computed}"
        ))));
    }
    api.telemetry.strict_check("consistent");
    api.parity.strictly_checked.insert(id, ()).await;
    Ok(())
}

pub(super) async fn route<B>(api: &Api, request: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = request.uri().path();
    if path == API_DOCS {
        super::read_only(request.method())?;
        return Ok(super::openapi::response(request.method() == Method::HEAD));
    }
    if path == CONCAT {
        return super::concat::route(api, request).await;
    }
    if let Some(id) = strict_wanted(api, &request) {
        super::read_only(request.method())?;
        strict_check(api, id).await?;
    }
    api.route(&request).await
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
/// no body, for any preflight (`OPTIONS` with `Access-Control-Request-Method`; tower-http
/// answers a bare `OPTIONS` so too, here it gets the route's own answer).
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
