//! Quilt routes, with the Walrus aggregator's and publisher's paths (SPEC §11, walrus-service
//! `daemon/routes.rs`):
//! * `GET`/`HEAD /v1/blobs/by-quilt-patch-id/{patch_id}` and
//!   `/v1/blobs/by-quilt-id/{quilt_id}/{identifier}` (the identifier percent-decoded): the
//!   patch's bytes, `X-Quilt-Patch-Identifier`, the tags named in the aggregator's default
//!   allowed headers (`content-type`, `content-disposition`, ...) as headers, `Range` (206),
//!   `If-None-Match` (304), and the blob headers of [`super`] with `ETag` = the quoted patch ID;
//!   a patch the quilt does not have is 404 `QUILT_PATCH_NOT_FOUND`;
//! * `GET /v1/quilts/{quilt_id}/patches`: `[{"identifier", "patch_id", "tags"}]` in index order;
//! * `PUT /v1/quilts`: one `multipart/form-data` part per patch, named by its identifier, tags
//!   in a `_metadata` part (`[{"identifier", "tags"}]`); answers
//!   `{"blobStoreResult": <the PUT /v1/blobs answer>, "storedQuiltBlobs": [{"identifier",
//!   "quiltPatchId"}]}`. The quilt is published exactly as `PUT /v1/blobs` publishes a blob
//!   (same limits, admission, nodes or publisher, write-through to the cache).
//!
//! Patches are read by slicing the verified quilt ([`crate::quilt::load`]) when it is cached or
//! being filled. Otherwise a patch comes from the patch caches, by patch ID: memory, then the
//! disk tier (a patch file, every chunk checked; [`crate::disk`]), else from the index columns
//! and its own (secondary slivers), after which it is kept in both tiers; if a column cannot be
//! had, a whole-quilt fill, which then caches the quilt for the patches that follow.

use super::body::{Body, RequestSlot};
use super::error::ApiError;
use super::range::{self, RangeRequest};
use super::{upload, Api};
use crate::quilt::{self as q, CachedPatch, QuiltBytes};
use bytes::Bytes;
use codec::quilt::{self, QuiltIndex, QuiltPatch, QuiltPatchId};
use codec::BlobId;
use codec::VerifiedMetadata;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Body as HttpBody;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

const BY_PATCH_ID: &str = "/v1/blobs/by-quilt-patch-id/";
const BY_QUILT_ID: &str = "/v1/blobs/by-quilt-id/";
const QUILTS: &str = "/v1/quilts";

/// Tags the aggregator turns into response headers by default (`--allowed-headers`).
const TAG_HEADERS: [&str; 7] = [
    "content-type",
    "authorization",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-location",
    "link",
];

/// Whether `path` is a quilt route.
pub(super) fn handles(path: &str) -> bool {
    path.starts_with(BY_PATCH_ID)
        || path.starts_with(BY_QUILT_ID)
        || path == QUILTS
        || path.starts_with("/v1/quilts/")
}

pub(super) async fn route<B>(api: &Api, request: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: HttpBody + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = request.uri().path().to_owned();
    if path == QUILTS {
        if request.method() != Method::PUT {
            return Err(ApiError::MethodNotAllowed { allow: "PUT" });
        }
        return put_quilt(api, request).await;
    }
    super::read_only(request.method())?;
    if let Some(id) = path.strip_prefix(BY_PATCH_ID) {
        let id: QuiltPatchId = id.parse().map_err(|e: quilt::QuiltPatchIdParseError| {
            ApiError::InvalidQuiltPatchId(e.to_string())
        })?;
        return patch(api, &request, id.quilt_id, Lookup::Id(id)).await;
    }
    if let Some(rest) = path.strip_prefix(BY_QUILT_ID) {
        let (quilt_id, identifier) = rest.split_once('/').ok_or(ApiError::RouteNotFound)?;
        let quilt_id = super::parse_id(quilt_id)?;
        let identifier = percent_decode(identifier)?;
        return patch(api, &request, quilt_id, Lookup::Identifier(identifier)).await;
    }
    if let Some(rest) = path.strip_prefix("/v1/quilts/") {
        if let Some(quilt_id) = rest.strip_suffix("/patches") {
            let quilt_id = super::parse_id(quilt_id)?;
            return list(api, &request, quilt_id).await;
        }
    }
    Err(ApiError::RouteNotFound)
}

enum Lookup {
    Id(QuiltPatchId),
    Identifier(String),
}

/// The verified quilt, bounded by the committee's largest blob.
async fn load(api: &Api, id: BlobId) -> Result<QuiltBytes, ApiError> {
    let limit = api.filler.topology().config().max_blob_size();
    Box::pin(q::load(&api.filler, id, limit))
        .await
        .map_err(|e| match e {
            q::LoadError::Read(e) => ApiError::Read(e),
            not_a_quilt => ApiError::InvalidQuilt(not_a_quilt.to_string()),
        })
}

fn index_of(quilt_id: BlobId, quilt: &QuiltBytes) -> Result<QuiltIndex, ApiError> {
    quilt::decode_index(quilt).map_err(|e| {
        ApiError::InvalidQuilt(format!("blob {quilt_id} is not a readable quilt: {e}"))
    })
}

async fn patch<B>(
    api: &Api,
    request: &Request<B>,
    quilt_id: BlobId,
    lookup: Lookup,
) -> Result<Response<Body>, ApiError> {
    // A blocked quilt's patches are refused like the quilt, from every tier (451).
    if api.filler.blocklist().is_blocked(&quilt_id) {
        return Err(ApiError::Read(crate::fill::ReadError::Blocked));
    }
    // A patch ID names its bytes: a client holding the ETag holds them.
    if let Lookup::Id(id) = &lookup {
        let etag = format!("\"{id}\"");
        if super::none_match(request.headers(), &etag, &quilt_id) == Some(super::NoneMatch::Tag) {
            return Ok(super::not_modified(&etag));
        }
    }
    let slot = RequestSlot::acquire(&api.slots, request.extensions().get(), &api.telemetry)?;
    // A quilt neither cached nor being filled: only the index columns and the patch's own.
    let cold = if api.filler.cache().get(&quilt_id).await.is_none()
        && api.filler.join(&quilt_id).is_none()
    {
        cold_patch(api, quilt_id, &lookup).await?
    } else {
        None
    };
    let (patch, identifier, tags, data, x_cache) = match cold {
        Some((cached, x_cache)) => {
            if x_cache != "miss" {
                api.telemetry.quilt_patch_read(x_cache);
            }
            let p = cached.patch.clone();
            (
                p.clone(),
                p.identifier,
                p.tags,
                cached.data.clone(),
                x_cache,
            )
        }
        None => {
            let quilt = load(api, quilt_id).await?;
            let index = index_of(quilt_id, &quilt)?;
            let patch = find(&index, quilt_id, &lookup)?.clone();
            let decoded =
                quilt::decode_patch(&quilt, usize::from(patch.start_index)).map_err(|e| {
                    ApiError::InvalidQuilt(format!("patch {}: {e}", patch.patch_id(quilt_id)))
                })?;
            api.telemetry.quilt_patch_read(quilt.x_cache);
            (
                patch,
                decoded.identifier,
                decoded.tags,
                Bytes::from(decoded.data),
                quilt.x_cache,
            )
        }
    };
    let patch_id = patch.patch_id(quilt_id);
    let etag = format!("\"{patch_id}\"");
    let none_matched = super::none_match(request.headers(), &etag, &quilt_id);
    if none_matched.is_some() {
        return Ok(super::not_modified(&etag));
    }
    if identifier != patch.identifier {
        return Err(ApiError::InvalidQuilt(format!(
            "patch {patch_id} is named {identifier:?} in its header and {:?} in the index",
            patch.identifier
        )));
    }
    let len = data.len() as u64;
    let want = match request.headers().get(header::RANGE) {
        Some(v) if range::if_range_holds(request.headers().get_all(header::IF_RANGE), &etag) => {
            range::parse(v.as_bytes())
        }
        _ => RangeRequest::Whole,
    };
    let (status, start, end) = match want {
        RangeRequest::Whole => (StatusCode::OK, 0, len),
        RangeRequest::Single(spec) => {
            let (start, end) = super::resolve(spec, len)?;
            (StatusCode::PARTIAL_CONTENT, start, end)
        }
    };
    let body = if request.method() == Method::HEAD {
        Body::empty()
    } else {
        Body::full(data.slice(start as usize..end as usize))
    };
    let served = api.telemetry.served_from(None);
    let mut response = Response::new(body.for_blob(served, slot));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    super::set_blob_headers(headers, &etag);
    super::set_length_and_source(headers, end - start, x_cache);
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            headers.insert(header::CONTENT_RANGE, value);
        }
    }
    super::set_content_type(headers, super::content_type(request));
    if let Ok(value) = HeaderValue::from_str(&identifier) {
        headers.insert(HeaderName::from_static("x-quilt-patch-identifier"), value);
    }
    for (key, value) in &tags {
        let key = key.to_ascii_lowercase();
        if !TAG_HEADERS.contains(&key.as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::from_str(value)) {
            headers.entry(name).or_insert(value);
        }
    }
    Ok(response)
}

/// The patch `lookup` names in `index`, or 404 `QUILT_PATCH_NOT_FOUND`.
fn find<'a>(
    index: &'a QuiltIndex,
    quilt_id: BlobId,
    lookup: &Lookup,
) -> Result<&'a QuiltPatch, ApiError> {
    let found = match lookup {
        Lookup::Id(id) => index.by_columns(id.start_index, id.end_index),
        Lookup::Identifier(identifier) => index.by_identifier(identifier),
    };
    found.ok_or_else(|| {
        ApiError::QuiltPatchNotFound(match lookup {
            Lookup::Id(id) => format!("quilt {quilt_id} has no patch {id}"),
            Lookup::Identifier(identifier) => {
                format!("blob with identifier {identifier:?} not found in quilt {quilt_id}")
            }
        })
    })
}

/// Why a cold read gave up: for good (the quilt does not exist, the patch is not in it), or
/// to read the whole quilt instead (a column could not be had or did not decode).
#[derive(Debug)]
enum Cold {
    Fatal(ApiError),
    Fallback(String),
}

/// Fetch `columns` of `meta`'s blob (verified secondary slivers) into a fresh column set.
async fn fetch_columns(
    api: &Api,
    meta: &Arc<VerifiedMetadata>,
    set: &mut quilt::ColumnSet,
    columns: Vec<u16>,
    fetched: &AtomicUsize,
) -> Result<(), Cold> {
    let columns: Vec<u16> = columns.into_iter().filter(|c| !set.contains(*c)).collect();
    fetched.fetch_add(columns.len(), Ordering::Relaxed);
    let got = api
        .filler
        .read_columns(meta, &columns)
        .await
        .map_err(|e| Cold::Fallback(e.to_string()))?;
    for (c, data) in got {
        set.insert(c, data)
            .map_err(|e| Cold::Fallback(e.to_string()))?;
    }
    Ok(())
}

/// The quilt's metadata, checked to be a quilt's.
async fn quilt_metadata(api: &Api, quilt_id: BlobId) -> Result<Arc<VerifiedMetadata>, Cold> {
    let meta = Box::pin(api.filler.metadata(quilt_id))
        .await
        .map_err(|e| Cold::Fatal(e.into()))?;
    let config = meta.config();
    let cells = u64::from(config.n_primary_source_symbols())
        * u64::from(config.n_secondary_source_symbols());
    if meta.unencoded_length() % cells != 0 {
        return Err(Cold::Fatal(ApiError::InvalidQuilt(format!(
            "blob {quilt_id} is not a quilt: {} bytes are no whole symbol matrix",
            meta.unencoded_length()
        ))));
    }
    Ok(meta)
}

/// A patch of a quilt that is neither cached nor being filled, from its metadata, the index
/// columns and the patch's own columns (secondary slivers, each verified). Indexes and patches
/// are cached ([`crate::quilt::QuiltCaches`]), one fetch per quilt index and per patch however
/// many requests want it. `None`: read the whole quilt instead, which recovers what is missing.
async fn cold_patch(
    api: &Api,
    quilt_id: BlobId,
    lookup: &Lookup,
) -> Result<Option<(Arc<CachedPatch>, &'static str)>, ApiError> {
    if let Lookup::Id(id) = lookup {
        if let Some(hit) = api.quilts.patches.get(id).await {
            return Ok(Some((hit, "hit-memory")));
        }
        // Before the index: a patch on disk needs no node, after a restart too. One read per
        // patch however many requests want it; it is promoted to memory.
        let read = AtomicBool::new(false);
        let found = api
            .quilts
            .patches
            .try_get_with(*id, async {
                read.store(true, Ordering::Relaxed);
                disk_patch(api, *id).await.ok_or(NotOnDisk)
            })
            .await;
        if let Ok(hit) = found {
            let tier = if read.into_inner() {
                "hit-disk"
            } else {
                "hit-memory"
            };
            return Ok(Some((hit, tier)));
        }
    }
    let fetched = AtomicUsize::new(0);
    let from_disk = AtomicBool::new(false);
    let index = api
        .quilts
        .indexes
        .try_get_with(quilt_id, async {
            let meta = quilt_metadata(api, quilt_id).await?;
            let mut set = quilt::ColumnSet::new(meta.config());
            fetch_columns(api, &meta, &mut set, vec![0], &fetched).await?;
            let columns = quilt::index_columns(&set).map_err(|e| Cold::Fallback(e.to_string()))?;
            fetch_columns(
                api,
                &meta,
                &mut set,
                (1..columns as u16).collect(),
                &fetched,
            )
            .await?;
            let index = quilt::decode_index(&set).map_err(|e| Cold::Fallback(e.to_string()))?;
            Ok::<_, Cold>(Arc::new(index))
        })
        .await;
    let index = match index {
        Ok(index) => index,
        Err(e) => return cold_failure(quilt_id, &e),
    };
    let patch = find(&index, quilt_id, lookup)?.clone();
    let patch_id = patch.patch_id(quilt_id);
    let cached = api
        .quilts
        .patches
        .try_get_with(patch_id, async {
            if let Some(found) = disk_patch(api, patch_id).await {
                from_disk.store(true, Ordering::Relaxed);
                return Ok(found);
            }
            let meta = quilt_metadata(api, quilt_id).await?;
            let mut set = quilt::ColumnSet::new(meta.config());
            fetch_columns(api, &meta, &mut set, patch.columns().collect(), &fetched).await?;
            let decoded = quilt::decode_patch(&set, usize::from(patch.start_index))
                .map_err(|e| Cold::Fallback(e.to_string()))?;
            if decoded.identifier != patch.identifier {
                return Err(Cold::Fatal(ApiError::InvalidQuilt(format!(
                    "patch {patch_id} is named {:?} in its header and {:?} in the index",
                    decoded.identifier, patch.identifier
                ))));
            }
            keep_on_disk(api, patch_id, &meta, &set);
            Ok(Arc::new(CachedPatch {
                patch: patch.clone(),
                data: Bytes::from(decoded.data),
            }))
        })
        .await;
    let cached = match cached {
        Ok(cached) => cached,
        Err(e) => return cold_failure(quilt_id, &e),
    };
    let fetched = fetched.into_inner();
    if from_disk.into_inner() {
        return Ok(Some((cached, "hit-disk")));
    }
    if fetched == 0 {
        return Ok(Some((cached, "hit-memory")));
    }
    api.telemetry.quilt_cold_patch_read(fetched);
    Ok(Some((cached, "miss")))
}

/// A patch is not on the disk tier (or its copy was unusable): read it from its columns.
#[derive(Debug)]
struct NotOnDisk;

/// Patch `id` from the disk tier, every chunk checked; `None` if it is not there, or if its
/// file failed a check (then it was quarantined: the caller fetches the patch's columns).
async fn disk_patch(api: &Api, id: QuiltPatchId) -> Option<Arc<CachedPatch>> {
    let disk = api.filler.cache().disk()?.clone();
    match tokio::task::spawn_blocking(move || disk.read_patch(&id)).await {
        Ok(Ok(found)) => found.map(|p| {
            Arc::new(CachedPatch {
                patch: p.patch,
                data: p.data,
            })
        }),
        Ok(Err(e)) => {
            tracing::warn!(patch_id = %id, error = %e, "disk copy of a patch unusable; fetching its columns");
            None
        }
        Err(e) => {
            tracing::error!(patch_id = %id, error = %e, "disk read task failed");
            None
        }
    }
}

/// Write the patch `patch_id`, whose verified columns `set` holds, to the disk tier, off the
/// reactor and without holding up the response (failures are logged and counted).
fn keep_on_disk(
    api: &Api,
    patch_id: QuiltPatchId,
    meta: &Arc<VerifiedMetadata>,
    set: &quilt::ColumnSet,
) {
    let Some(disk) = api.filler.cache().disk().cloned() else {
        return;
    };
    let columns: Option<Vec<Bytes>> = (patch_id.start_index..patch_id.end_index)
        .map(|c| set.column(c).cloned())
        .collect();
    let Some(columns) = columns else {
        return;
    };
    let meta = meta.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = disk.insert_patch(patch_id, &meta, &columns) {
            tracing::warn!(%patch_id, error = %e, "could not write a patch to the disk cache; serving it from memory and its columns");
        }
    });
}

fn cold_failure(
    quilt_id: BlobId,
    e: &Cold,
) -> Result<Option<(Arc<CachedPatch>, &'static str)>, ApiError> {
    match e {
        Cold::Fatal(e) => Err(e.clone()),
        Cold::Fallback(reason) => {
            tracing::info!(quilt_id = %quilt_id, reason, "cold patch read falls back to the whole quilt");
            Ok(None)
        }
    }
}

async fn list<B>(
    api: &Api,
    request: &Request<B>,
    quilt_id: BlobId,
) -> Result<Response<Body>, ApiError> {
    let _slot = RequestSlot::acquire(&api.slots, request.extensions().get(), &api.telemetry)?;
    let quilt = load(api, quilt_id).await?;
    let index = index_of(quilt_id, &quilt)?;
    let items: Vec<serde_json::Value> = index
        .patches
        .iter()
        .map(|p| {
            serde_json::json!({
                "identifier": p.identifier,
                "patch_id": p.patch_id(quilt_id).to_string(),
                "tags": p.tags,
            })
        })
        .collect();
    let mut response = super::json_response(StatusCode::OK, &serde_json::Value::Array(items));
    // The list of an immutable quilt is immutable too.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(super::IMMUTABLE),
    );
    if request.method() == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    Ok(response)
}

/// Percent-decode a path segment (UTF-8).
fn percent_decode(text: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "malformed percent-encoding in {:?}",
            super::truncate(text)
        ))
    };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Most patches a quilt of any committee can hold (n = 1000: 666 columns, one for the index),
/// plus the `_metadata` part.
const MAX_PARTS: usize = 1024;

/// Query parameters of the publisher's `PUT /v1/quilts`; only `quilt_version=V1` has meaning.
fn quilt_query(query: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut forwarded = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "quilt_version" {
            if !matches!(value, "V1" | "v1" | "1") {
                return Err(ApiError::BadRequest(format!(
                    "unsupported quilt_version {:?} (only V1)",
                    super::truncate(value)
                )));
            }
            continue;
        }
        forwarded.push(pair);
    }
    let rest = forwarded.join("&");
    upload::check_query(Some(&rest))?;
    Ok((!rest.is_empty()).then_some(rest))
}

async fn put_quilt<B>(api: &Api, request: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: HttpBody + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let settings = upload::authorized_settings(api, request.headers())?;
    let query = quilt_query(request.uri().query())?;
    let config = *api.filler.topology().config();
    let boundary = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or(q::FormError::NotMultipart)
        .and_then(q::boundary)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let limit = settings.max_upload.min(config.max_blob_size());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|d| d > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut admission = upload::admit(
        api,
        settings,
        declared.unwrap_or(upload::UNDECLARED_FIRST.min(limit)),
    )?;
    let growth = declared.is_none().then_some(&mut admission.memory);
    // Held in memory: the parts are slices of it.
    let body = upload::receive(api, request.into_body(), limit, u64::MAX, growth).await?;
    let parts = q::parse_form(&body, &boundary, MAX_PARTS)
        .map_err(|e| ApiError::BadRequest(format!("failed to parse multipart form: {e}")))?;
    let mut tags = std::collections::BTreeMap::new();
    let mut files = Vec::new();
    for part in &parts {
        if part.name == "_metadata" {
            tags =
                q::parse_metadata(&part.data).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        } else {
            files.push(part);
        }
    }
    if files.is_empty() {
        return Err(ApiError::BadRequest(
            "no files provided in multipart form".into(),
        ));
    }
    let inputs: Vec<quilt::PatchInput<'_>> = files
        .iter()
        .map(|p| quilt::PatchInput {
            identifier: p.name.clone(),
            tags: tags.get(&p.name).cloned().unwrap_or_default(),
            data: &p.data,
        })
        .collect();
    // Checked before the quilt is allocated: padding to whole columns can make it far larger
    // than the body.
    let encoded = match quilt::encode_quilt_bounded(&config, &inputs, limit) {
        Ok(encoded) => encoded,
        Err(quilt::QuiltError::ExceedsLimit { .. }) => {
            return Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => {
            return Err(ApiError::BadRequest(format!(
                "failed to construct quilt: {e}"
            )))
        }
    };
    // The quilt is held (and encoded) in place of the body: its cost is what is admitted.
    let cost = crate::publish::memory_cost(&config, encoded.data.len() as u64);
    if cost > admission.memory.bytes() && !admission.memory.try_grow(cost) {
        api.telemetry.admission_refused("publish_memory");
        return Err(ApiError::AtCapacity("publish memory"));
    }
    drop(inputs);
    drop(parts);
    drop(body);
    let index = encoded.index.clone();
    let stored = upload::store(
        api,
        settings,
        Bytes::from(encoded.data),
        query.as_deref(),
        &mut admission.memory,
    )
    .await?;
    let Some(quilt_id) = stored.blob_id else {
        // The publisher refused: its answer, as it gave it.
        return Ok(super::json_response(stored.status, &stored.answer));
    };
    api.telemetry.quilt_published(index.patches.len());
    let patches: Vec<serde_json::Value> = index
        .patches
        .iter()
        .map(|p| {
            serde_json::json!({
                "identifier": p.identifier,
                "quiltPatchId": p.patch_id(quilt_id).to_string(),
            })
        })
        .collect();
    Ok(super::json_response(
        stored.status,
        &serde_json::json!({
            "blobStoreResult": stored.answer,
            "storedQuiltBlobs": patches,
        }),
    ))
}
