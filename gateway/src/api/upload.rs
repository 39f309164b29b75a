//! `PUT /v1/blobs`: the publisher side of the aggregator API (SPEC §11), backed by
//! [`crate::publish`].
//!
//! Limits come first: publishing may be off (403) or need a bearer token (401); a declared
//! `Content-Length` over `--max-upload` (or over the committee's largest blob) is refused (413)
//! before a byte is read, and a body that grows past it is cut off the same way. Then the
//! publish is admitted ([`crate::publish::PublishGate`]): a slot of `--max-concurrent-publishes`
//! and the publish's [`crate::publish::memory_cost`] from `--publish-memory`, for the declared
//! length, before a byte of the body is read; a publish that does not fit gets 503 with
//! `Retry-After`. A body without a declared length (chunked) starts with the cost of a small
//! upload and grows its reservation as it arrives, and is cut off with the same 503 when the
//! budget cannot cover what has arrived. Bodies larger than `--upload-spool` go to an unnamed
//! temporary file instead of memory while they arrive, and are then encoded from a read-only
//! mapping of that file, never read back into the heap. An interrupted or refused upload leaves
//! nothing: the file is deleted on drop and nothing is published or cached. Walrus's chain-side
//! query parameters (`epochs`, `permanent`, ...) are accepted so existing clients work, and
//! have no effect: there is no chain here.

use super::body::Body;
use super::error::ApiError;
use super::{Api, PublishSettings};
use crate::budget::Reservation;
use crate::cache::CachedBlob;
use crate::fill::ReadError;
use crate::publish::{self, Outcome, PublishError};
use bytes::{Buf, Bytes, BytesMut};
use http::header;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body as HttpBody;
use tokio::io::AsyncWriteExt;

/// A body of unknown length first reserves the cost of this many bytes, then twice what it
/// has reached each time it outgrows its reservation.
pub(super) const UNDECLARED_FIRST: u64 = 1 << 20;

/// Query parameters of Walrus's publisher that clients may send; chain-only, so ignored here.
const ACCEPTED_PARAMS: &[&str] = &[
    "epochs",
    "permanent",
    "deletable",
    "force",
    "encoding_type",
    "send_object_to",
    "share",
    "reuse_resources",
];

pub(super) async fn put_blob<B>(api: &Api, request: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: HttpBody + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let settings = authorized_settings(api, request.headers())?;
    check_query(request.uri().query())?;
    let limit = settings
        .max_upload
        .min(api.filler.topology().config().max_blob_size());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared {
        if declared > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
    }
    let mut admission = admit(
        api,
        settings,
        declared.unwrap_or(UNDECLARED_FIRST.min(limit)),
    )?;
    let query = request.uri().query().map(str::to_owned);
    let growth = (declared.is_none()).then_some(&mut admission.memory);
    let blob = receive(
        api,
        request.into_body(),
        limit,
        settings.spool_threshold,
        growth,
    )
    .await?;
    // The real size is known now: give back what a shorter body did not need.
    let cost = cost_of(api, blob.len() as u64);
    admission.memory.shrink_to(cost);
    let stored = store(api, settings, blob, query.as_deref(), &mut admission.memory).await?;
    Ok(super::json_response(stored.status, &stored.answer))
}

/// The publish settings, if publishing is on and `headers` carry the publish token (when one
/// is set): what every route that publishes checks first.
pub(super) fn authorized_settings<'a>(
    api: &'a Api,
    headers: &HeaderMap,
) -> Result<&'a PublishSettings, ApiError> {
    let settings = api
        .publish
        .as_ref()
        .ok_or(ApiError::PublishingDisabled(api.publish_off))?;
    if let Some(token) = &settings.token {
        if !super::admin::bearer_matches(headers, token) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(settings)
}

/// What publishing `len` bytes may hold in memory, for this gateway's committee.
fn cost_of(api: &Api, len: u64) -> u64 {
    crate::publish::memory_cost(api.filler.topology().config(), len)
}

/// Admit a publish of `len` bytes (a slot and its memory cost), or refuse it with 503.
pub(super) fn admit(
    api: &Api,
    settings: &PublishSettings,
    len: u64,
) -> Result<crate::publish::Admission, ApiError> {
    settings
        .gate
        .try_admit(cost_of(api, len))
        .map_err(|refusal| {
            tracing::debug!(
                reason = refusal.as_str(),
                len,
                in_use = settings.gate.memory_in_use(),
                "publish refused at admission"
            );
            api.telemetry.admission_refused(refusal.as_str());
            ApiError::AtCapacity(match refusal {
                crate::publish::Refusal::Slots => "concurrent publishes",
                crate::publish::Refusal::Memory => "publish memory",
            })
        })
}

/// A stored blob: the answer for the client and, on success, its Blob ID.
pub(super) struct Stored {
    pub status: StatusCode,
    pub answer: serde_json::Value,
    pub blob_id: Option<codec::BlobId>,
}

/// Store `blob` (counted in the publish metrics) on the committee's nodes, or through the
/// publisher of a chain-backed gateway, and, once stored, write it through to the cache: it is
/// verified by construction, since its Blob ID was computed here from these bytes.
///
/// `memory` is the publish's admission: the blob (and, for the nodes, its encoding) is held
/// against it.
pub(super) async fn store(
    api: &Api,
    settings: &PublishSettings,
    blob: Bytes,
    query: Option<&str>,
    memory: &mut Reservation,
) -> Result<Stored, ApiError> {
    let size = blob.len() as u64;
    let config = *api.filler.topology().config();
    // Dropped last by this function or by the last node task still holding slivers.
    let trim = crate::heap::TrimWhenDone::new(size);
    // The blob's systematic rows, cut to its length, are the blob: what the cache keeps.
    let (result, rows) = match &settings.forward {
        Some(publisher) => {
            let rows = match config.symbol_size(size) {
                Ok(symbol_size) => {
                    let row_len = config.row_len(symbol_size) as usize;
                    (0..blob.len())
                        .step_by(row_len.max(1))
                        .map(|start| blob.slice(start..(start + row_len).min(blob.len())))
                        .collect()
                }
                Err(_) => Vec::new(),
            };
            (forward(api, publisher, blob, query).await, rows)
        }
        None => match publish_to_nodes(api, settings, blob, memory, &trim).await {
            Ok((stored, rows)) => (Ok(stored), rows),
            Err(e) => (Err(e), Vec::new()),
        },
    };
    match &result {
        Ok(Stored {
            blob_id: Some(id), ..
        }) => {
            api.telemetry.publish(true, size);
            let mut left = size as usize;
            let rows = rows
                .into_iter()
                .map(|row| {
                    let take = row.len().min(left);
                    left -= take;
                    row.slice(..take)
                })
                .filter(|row| !row.is_empty())
                .collect();
            api.filler
                .cache()
                .insert(*id, CachedBlob::from_verified_rows(rows))
                .await;
            // A remembered "not found" must not outlive the publish (issue 21, item 8).
            api.filler.blob_exists(*id).await;
        }
        _ => api.telemetry.publish(false, 0),
    }
    // The operator's record of every publish (uploads and stored proofs) and its outcome.
    match &result {
        Ok(Stored {
            blob_id: Some(id),
            status,
            ..
        }) => tracing::info!(blob_id = %id, size, status = status.as_u16(), "publish stored"),
        Ok(Stored { status, .. }) => {
            tracing::info!(
                size,
                status = status.as_u16(),
                "publish refused by the publisher"
            )
        }
        Err(e) => tracing::info!(size, error = %e, "publish failed"),
    }
    result
}

/// Publish to the committee's nodes; the answer and the blob's systematic rows (padded).
async fn publish_to_nodes(
    api: &Api,
    settings: &PublishSettings,
    blob: Bytes,
    memory: &mut Reservation,
    trim: &std::sync::Arc<crate::heap::TrimWhenDone>,
) -> Result<(Stored, Vec<Bytes>), ApiError> {
    let size = blob.len();
    let published = publish::publish(
        api.filler.topology(),
        api.filler.node_client().clone(),
        settings.publish.clone(),
        blob,
        memory,
        trim,
    )
    .await
    .map_err(|e| match e {
        PublishError::Encode(codec::CodecError::BlobTooLarge { max, .. }) => {
            ApiError::PayloadTooLarge { limit: max }
        }
        PublishError::Blocked => {
            api.telemetry.blocked("publish");
            ApiError::Read(crate::fill::ReadError::Blocked)
        }
        other => ApiError::Publish(
            other.to_string(),
            matches!(other, PublishError::InsufficientConfirmations { .. }),
        ),
    })?;
    let blob_id = published.metadata.blob_id();
    let answer = match published.outcome {
        Outcome::NewlyCreated => serde_json::json!({
            "newlyCreated": {
                "blobObject": {"blobId": blob_id, "size": size, "encodingType": "RS2"},
                "encodedLength": published.encoded_length,
                "confirmedShards": published.confirmed_shards,
            }
        }),
        Outcome::AlreadyStored => serde_json::json!({
            "alreadyCertified": {"blobId": blob_id, "size": size}
        }),
    };
    Ok((
        Stored {
            status: StatusCode::OK,
            answer,
            blob_id: Some(blob_id),
        },
        published.rows,
    ))
}

/// Send `blob` to the publisher and pass its answer through; the bytes count as stored only if
/// the publisher names the Blob ID they encode to. A publisher's own error (4xx/5xx with its
/// JSON) is passed through as it is, and nothing is cached.
async fn forward(
    api: &Api,
    publisher: &crate::publisher::PublisherClient,
    blob: Bytes,
    query: Option<&str>,
) -> Result<Stored, ApiError> {
    let config = *api.filler.topology().config();
    let bytes = blob.clone();
    let computed = tokio::task::spawn_blocking(move || codec::compute_metadata(&config, &bytes))
        .await
        .map_err(|e| ApiError::Publish(format!("encoder task failed: {e}"), false))?
        .map_err(|e| match e {
            codec::CodecError::BlobTooLarge { max, .. } => ApiError::PayloadTooLarge { limit: max },
            other => ApiError::Publish(other.to_string(), false),
        })?
        .blob_id();
    if api.filler.blocklist().is_blocked(&computed) {
        api.telemetry.blocked("publish");
        return Err(ApiError::Read(crate::fill::ReadError::Blocked));
    }
    let answer = publisher
        .put(query, blob)
        .await
        .map_err(|e| ApiError::Publisher(format!("{}: {e}", publisher.url())))?;
    if !answer.status.is_success() {
        tracing::info!(publisher = %publisher.url(), status = %answer.status, "the publisher refused an upload");
        return Ok(Stored {
            status: answer.status,
            answer: answer.json,
            blob_id: None,
        });
    }
    match answer.blob_id() {
        Some(id) if id == computed => Ok(Stored {
            status: answer.status,
            answer: answer.json,
            blob_id: Some(id),
        }),
        Some(other) => {
            tracing::warn!(publisher = %publisher.url(), answered = %other, %computed,
                "the publisher answered another Blob ID than the bytes encode to");
            Err(ApiError::Publisher(format!(
                "{} answered Blob ID {other}, but the bytes encode to {computed} (for {} shards); \
                 nothing was cached",
                publisher.url(),
                config.n_shards()
            )))
        }
        None => Err(ApiError::Publisher(format!(
            "{} answered HTTP {} without a Blob ID",
            publisher.url(),
            answer.status
        ))),
    }
}

pub(super) fn check_query(query: Option<&str>) -> Result<(), ApiError> {
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !ACCEPTED_PARAMS.contains(&name) {
            let name: String = name.chars().take(64).collect();
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {name:?}"
            )));
        }
        if name == "encoding_type" && !value.eq_ignore_ascii_case("rs2") {
            return Err(ApiError::BadRequest(
                "only encoding_type=RS2 is supported".into(),
            ));
        }
    }
    Ok(())
}

/// The whole body, at most `limit` bytes; above `spool` bytes it waits in a temporary file and
/// comes back as a read-only mapping of it. With `growth` (a body of undeclared length), the
/// admission grows to cover what has arrived, or the upload is cut off with 503.
pub(super) async fn receive<B>(
    api: &Api,
    mut body: B,
    limit: u64,
    spool: u64,
    mut growth: Option<&mut Reservation>,
) -> Result<Bytes, ApiError>
where
    B: HttpBody + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut memory = BytesMut::new();
    let mut file: Option<tokio::fs::File> = None;
    let mut total = 0u64;
    let mut cover = crate::budget::Cover::new(UNDECLARED_FIRST, limit);
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("upload interrupted: {}", e.into())))?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let chunk = data.copy_to_bytes(data.remaining());
        total += chunk.len() as u64;
        if total > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        if let Some(reservation) = growth.as_deref_mut() {
            if !cover.received(total, reservation, |bytes| cost_of(api, bytes)) {
                tracing::debug!(
                    received = total,
                    "an upload of undeclared length outgrew the publish memory budget"
                );
                api.telemetry.admission_refused("publish_memory");
                return Err(ApiError::AtCapacity("publish memory"));
            }
        }
        match &mut file {
            Some(f) => f.write_all(&chunk).await.map_err(spool_error)?,
            None if total > spool => {
                // Unnamed: the kernel deletes it however this request ends.
                let f = tokio::task::spawn_blocking(tempfile::tempfile)
                    .await
                    .map_err(|e| spool_error(std::io::Error::other(e)))?
                    .map_err(spool_error)?;
                let mut f = tokio::fs::File::from_std(f);
                f.write_all(&memory).await.map_err(spool_error)?;
                memory = BytesMut::new();
                f.write_all(&chunk).await.map_err(spool_error)?;
                file = Some(f);
            }
            None => memory.extend_from_slice(&chunk),
        }
    }
    match file {
        None => Ok(memory.freeze()),
        Some(mut f) => {
            f.flush().await.map_err(spool_error)?;
            let f = f.into_std().await;
            let map = tokio::task::spawn_blocking(move || {
                // SAFETY: the file is unnamed and only this descriptor reaches it: nothing
                // can change or truncate it while the mapping lives. The mapping keeps the
                // pages (and the file) alive after the descriptor closes.
                unsafe { memmap2::MmapOptions::new().len(total as usize).map(&f) }
            })
            .await
            .map_err(|e| spool_error(std::io::Error::other(e)))?
            .map_err(spool_error)?;
            Ok(Bytes::from_owner(map))
        }
    }
}

fn spool_error(e: std::io::Error) -> ApiError {
    ApiError::Read(ReadError::Internal(format!("cannot spool the upload: {e}")))
}
