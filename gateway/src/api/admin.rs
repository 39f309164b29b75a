//! The admin API, for operators only: prefetch, pins, purge and cache statistics.
//!
//! It exists only when `--admin-token` is set; without it every `/admin/...` path is a plain 404,
//! so nothing reveals that an admin API could exist. With it, each request must carry
//! `Authorization: Bearer <token>` (scheme in any case, compared in constant time) or gets 401.
//!
//! | route | what |
//! |---|---|
//! | `POST /admin/prefetch` | body `{"blob_ids": [...]}` (at most 10 000): start a fill for each one not cached; 202 with each ID's state |
//! | `PUT /admin/pins/{id}` | pin on the disk tier (never evicted; kept across restarts) and fetch it if it is not cached |
//! | `DELETE /admin/pins/{id}` | unpin |
//! | `DELETE /admin/cache/{id}` | purge from memory and disk |
//! | `GET /admin/cache` | sizes, counts (disk: blobs and quilt patches apart), the most used disk entries of each kind and the disk scrub's progress |
//! | `GET /admin/blocklist` | the blocked Blob IDs and the file they are kept in |
//! | `PUT`/`DELETE /admin/blocklist/{id}` | block (purged at once) or unblock, written to `--blocklist` first (409 without one) |
//!
//! Pin and purge change nothing unless the disk tier persisted the change: a full or read-only
//! device answers 507 `DISK_TIER_UNWRITABLE` with the pins and the cache as they were.

use super::body::Body;
use super::error::ApiError;
use super::{parse_id, Api};
use crate::fill::{ReadError, Source};
use bytes::Bytes;
use http::header;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body as HttpBody;

/// Largest admin request body.
const MAX_BODY: usize = 1 << 20;
/// Most Blob IDs in one prefetch.
const MAX_PREFETCH: usize = 10_000;

/// [`actions`], with one log line per admin request and its outcome (reads of `/admin/cache`
/// at debug; nothing when there is no admin API).
pub(super) async fn route<B>(api: &Api, request: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let result = actions(api, request).await;
    let status = match &result {
        Ok(response) => response.status().as_u16(),
        Err(e) => e.classify().0.as_u16(),
    };
    let error = result.as_ref().err().map(ToString::to_string);
    if api.admin_token.is_some() && method == Method::GET {
        tracing::debug!(%method, path, status, error, "admin request");
    } else if api.admin_token.is_some() {
        tracing::info!(%method, path, status, error, "admin action");
    }
    result
}

async fn actions<B>(api: &Api, request: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(token) = &api.admin_token else {
        return Err(ApiError::RouteNotFound);
    };
    if !authorized(request.headers(), token) {
        return Err(ApiError::Unauthorized);
    }
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    match (segments.as_slice(), method) {
        (["admin", "prefetch"], Method::POST) => {
            let body = read_body(request.into_body(), MAX_BODY).await?;
            prefetch(api, &body).await
        }
        (["admin", "prefetch"], _) => Err(ApiError::MethodNotAllowed { allow: "POST" }),
        (["admin", "pins", id], method) if method == Method::PUT || method == Method::DELETE => {
            let id = parse_id(id)?;
            let pin = method == Method::PUT;
            let disk = api
                .filler
                .cache()
                .disk()
                .cloned()
                .ok_or(ApiError::NoDiskTier)?;
            let changed = tokio::task::spawn_blocking(move || disk.set_pinned(id, pin))
                .await
                .map_err(|e| ReadError::Internal(e.to_string()))?
                .map_err(|e| ApiError::DiskUnwritable(format!("cannot save pins: {e}")))?;
            let mut state = serde_json::json!({"blobId": id, "pinned": pin, "changed": changed});
            if pin {
                state["fetch"] = fetch_state(api.filler.open(id).await).into();
            }
            Ok(super::json_response(StatusCode::OK, &state))
        }
        (["admin", "pins", _], _) => Err(ApiError::MethodNotAllowed {
            allow: "PUT, DELETE",
        }),
        (["admin", "cache", id], Method::DELETE) => {
            let id = parse_id(id)?;
            let purged = api
                .filler
                .cache()
                .purge(&id)
                .await
                .map_err(|e| ApiError::DiskUnwritable(format!("cannot purge: {e}")))?;
            // A quilt's patches go with it, from memory as from disk.
            api.quilts.forget_quilt(id).await;
            Ok(super::json_response(
                StatusCode::OK,
                &serde_json::json!({"blobId": id, "purged": purged}),
            ))
        }
        (["admin", "cache", _], _) => Err(ApiError::MethodNotAllowed { allow: "DELETE" }),
        (["admin", "cache"], Method::GET) => {
            let cache = api.filler.cache();
            let disk = cache.disk().map(|d| d.stats(20));
            Ok(super::json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "memory": {"entries": cache.entry_count(), "bytes": cache.weighted_size()},
                    "disk": disk,
                    "fillsInProgress": api.filler.fills_in_progress(),
                }),
            ))
        }
        (["admin", "cache"], _) => Err(ApiError::MethodNotAllowed { allow: "GET" }),
        // The denylist ([`crate::blocklist`]): edits are written to the --blocklist file first.
        (["admin", "blocklist"], Method::GET) => {
            let list = api.filler.blocklist();
            Ok(super::json_response(
                StatusCode::OK,
                &serde_json::json!({"blobIds": list.ids(), "file": list.file()}),
            ))
        }
        (["admin", "blocklist"], _) => Err(ApiError::MethodNotAllowed { allow: "GET" }),
        (["admin", "blocklist", id], method)
            if method == Method::PUT || method == Method::DELETE =>
        {
            let id = parse_id(id)?;
            let block = method == Method::PUT;
            let list = api.filler.blocklist().clone();
            let changed = tokio::task::spawn_blocking(move || list.set(id, block))
                .await
                .map_err(|e| ReadError::Internal(e.to_string()))?
                .map_err(|e| match e {
                    crate::blocklist::BlocklistError::NoFile => ApiError::NoBlocklistFile,
                    other => ApiError::BlocklistUnwritable(other.to_string()),
                })?;
            if block {
                crate::blocklist::enforce(&api.filler, &[id]).await;
            }
            api.telemetry
                .blocklist_loaded(api.filler.blocklist().len(), true);
            tracing::info!(blob_id = %id, blocked = block, changed, "blocklist edited");
            Ok(super::json_response(
                StatusCode::OK,
                &serde_json::json!({"blobId": id, "blocked": block, "changed": changed}),
            ))
        }
        (["admin", "blocklist", _], _) => Err(ApiError::MethodNotAllowed {
            allow: "PUT, DELETE",
        }),
        _ => Err(ApiError::RouteNotFound),
    }
}

/// `Authorization: Bearer <token>`, compared without an early exit on the first wrong byte.
pub(super) fn bearer_matches(headers: &http::HeaderMap, token: &str) -> bool {
    authorized(headers, token)
}

/// The scheme is matched case-insensitively and may be followed by one or more spaces
/// (RFC 9110 §11.4: `auth-scheme 1*SP token68`, auth-scheme case-insensitive); the token is
/// compared in constant time for its length.
fn authorized(headers: &http::HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of a `Bearer` credential, if `value` is one.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ').trim_end_matches([' ', '\t']);
    (!token.is_empty()).then_some(token)
}

/// Read a request body of at most `limit` bytes.
pub(super) async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, ApiError>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge {
            limit: limit as u64,
        }),
        Err(e) => Err(ApiError::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefetchRequest {
    #[serde(alias = "blobIds")]
    blob_ids: Vec<String>,
}

async fn prefetch(api: &Api, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let request: PrefetchRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("expected {{\"blob_ids\": [...]}}: {e}")))?;
    if request.blob_ids.len() > MAX_PREFETCH {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_PREFETCH} Blob IDs per prefetch, got {}",
            request.blob_ids.len()
        )));
    }
    let ids = request
        .blob_ids
        .iter()
        .map(|t| parse_id(t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut results = serde_json::Map::new();
    for id in ids {
        let state = fetch_state(api.filler.open(id).await);
        results.insert(id.to_string(), state.into());
    }
    Ok(super::json_response(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "results": results }),
    ))
}

/// What opening a blob means for a prefetch: already cached, now filling (the fill carries on
/// without a reader), or why not.
fn fetch_state(opened: Result<Source, ReadError>) -> String {
    match opened {
        Ok(Source::Cached(..)) | Ok(Source::Disk(_)) => "cached".into(),
        Ok(Source::Filling(_)) => "filling".into(),
        Err(e) => format!("error: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_may_be_followed_by_several_spaces() {
        for value in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            "bEaReR s3cret",
            "Bearer   s3cret",
        ] {
            assert!(authorized(&with(value), "s3cret"), "{value:?}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for value in [
            "Bearer s3cre",
            "Bearer s3cretX",
            "Bearer S3CRET",
            "Basic s3cret",
            "Bearers3cret",
            "Bearer",
            "Bearer ",
            "s3cret",
            "Token s3cret",
            "Bearer s3 cret",
        ] {
            assert!(!authorized(&with(value), "s3cret"), "{value:?}");
        }
        assert!(!authorized(&http::HeaderMap::new(), "s3cret"));
    }
}
