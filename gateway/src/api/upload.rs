//! `PUT /v1/blobs`: the publisher side of the aggregator API (SPEC §11), backed by
//! [`crate::publish`].
//!
//! Limits come first: publishing may be off (403) or need a bearer token (401); a declared
//! `Content-Length` over `--max-upload` (or over the committee's largest blob) is refused (413)
//! before a byte is read, and a body that grows past it is cut off the same way. Bodies larger
//! than `--upload-spool` go to an unnamed temporary file instead of memory while they arrive; an
//! interrupted or refused upload leaves nothing: the file is deleted on drop and nothing is
//! published or cached. Walrus's chain-side query parameters (`epochs`, `permanent`, ...) are
//! accepted so existing clients work, and have no effect: there is no chain here.

use super::body::Body;
use super::error::ApiError;
use super::{Api, PublishSettings};
use crate::cache::CachedBlob;
use crate::fill::ReadError;
use crate::publish::{self, Outcome, PublishError};
use bytes::{Buf, Bytes, BytesMut};
use http::header;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body as HttpBody;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

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
    let settings = api
        .publish
        .as_ref()
        .ok_or(ApiError::PublishingDisabled(api.publish_off))?;
    if let Some(token) = &settings.token {
        if !super::admin::bearer_matches(request.headers(), token) {
            return Err(ApiError::Unauthorized);
        }
    }
    check_query(request.uri().query())?;
    let limit = settings
        .max_upload
        .min(api.filler.topology().config().max_blob_size());
    if let Some(declared) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if declared > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
    }
    let blob = receive(request.into_body(), limit, settings.spool_threshold).await?;
    let size = blob.len() as u64;
    let published = publish_and_cache(api, settings, blob)
        .await
        .map_err(|e| match e {
            PublishError::Encode(codec::CodecError::BlobTooLarge { max, .. }) => {
                ApiError::PayloadTooLarge { limit: max }
            }
            other => ApiError::Publish(
                other.to_string(),
                matches!(other, PublishError::InsufficientConfirmations { .. }),
            ),
        })?;
    let blob_id = published.encoded.metadata.blob_id();
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
    Ok(super::json_response(StatusCode::OK, &answer))
}

/// Publish `blob` through the publisher path (counted in the publish metrics) and, once a quorum
/// confirmed it, write it through to the cache: it is verified by construction, since the
/// systematic rows, cut to the blob's length, are the blob.
pub(super) async fn publish_and_cache(
    api: &Api,
    settings: &PublishSettings,
    blob: Bytes,
) -> Result<publish::Published, PublishError> {
    let size = blob.len();
    let published = publish::publish(
        api.filler.topology(),
        api.filler.node_client().clone(),
        settings.publish.clone(),
        blob,
    )
    .await;
    let published = match published {
        Ok(published) => published,
        Err(e) => {
            api.telemetry.publish(false, 0);
            return Err(e);
        }
    };
    api.telemetry.publish(true, size as u64);
    let meta = &published.encoded.metadata;
    let kp = usize::from(meta.config().n_primary_source_symbols());
    let mut remaining = size;
    let rows: Vec<Bytes> = published.encoded.primary[..kp]
        .iter()
        .map_while(|sliver| {
            let take = sliver.data.len().min(remaining);
            remaining -= take;
            (take > 0).then(|| sliver.data.slice(..take))
        })
        .collect();
    api.filler
        .cache()
        .insert(meta.blob_id(), CachedBlob::from_verified_rows(rows))
        .await;
    Ok(published)
}

fn check_query(query: Option<&str>) -> Result<(), ApiError> {
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

/// The whole body, at most `limit` bytes; above `spool` bytes it waits in a temporary file.
async fn receive<B>(mut body: B, limit: u64, spool: u64) -> Result<Bytes, ApiError>
where
    B: HttpBody + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut memory = BytesMut::new();
    let mut file: Option<tokio::fs::File> = None;
    let mut total = 0u64;
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
            f.rewind().await.map_err(spool_error)?;
            let mut out = Vec::with_capacity(total as usize);
            f.read_to_end(&mut out).await.map_err(spool_error)?;
            Ok(Bytes::from(out))
        }
    }
}

fn spool_error(e: std::io::Error) -> ApiError {
    ApiError::Read(ReadError::Internal(format!("cannot spool the upload: {e}")))
}
