//! Fills from aggregator-compatible upstreams ([`crate::upstream`]), before the storage nodes.
//!
//! * **Verification.** An upstream that serves verifiable metadata (a parent walrus-gateway) has
//!   each row of the blob checked as a systematic primary sliver against that metadata, as it
//!   arrives, so verified rows stream on. Otherwise (a Walrus aggregator, or `Strict`) the whole
//!   blob is read, re-encoded, and its Blob ID recomputed; nothing is published before it
//!   matches. A mismatch, a short or long body, or metadata that does not verify fails the
//!   attempt: logged with the upstream's name, counted, and the next upstream is tried.
//! * **Hedging.** Upstreams are asked in order; if the current one has not produced a verified
//!   row within `upstream_hedge`, the next is asked too. The first to deliver verified bytes
//!   leads and the others are cancelled; if the leader fails midway, the next upstream (or the
//!   storage nodes) continues, and rows already published are not published twice.

use super::metadata::metadata_limit;
use super::{FillState, Inner, ReadError};
use crate::upstream::{BlobBody, Upstream, UpstreamError};
use bytes::{Bytes, BytesMut};
use codec::{BlobId, ConsistencyCheck, Sliver, SliverKind, VerifiedMetadata};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// What an attempt reports, in this order: `Meta`, then `Row`s from 0 up, then `Done`.
enum Event {
    Meta(Arc<VerifiedMetadata>),
    Row(u16, Bytes),
    Done,
}

/// Aborts its task when dropped.
struct Attempt(JoinHandle<()>);

impl Drop for Attempt {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fill `id` from the upstreams into `tx`, skipping the first `published` rows (already
/// published by an earlier source) and counting those it publishes. Returns the verified
/// metadata once every row is published.
pub(super) async fn fill(
    inner: &Arc<Inner>,
    id: BlobId,
    tx: &watch::Sender<FillState>,
    published: &mut usize,
) -> Result<Arc<VerifiedMetadata>, ReadError> {
    let upstreams = inner.upstreams.len();
    let (events_tx, mut events) = mpsc::channel::<(usize, Result<Event, UpstreamError>)>(16);
    let mut attempts: Vec<Option<Attempt>> = Vec::with_capacity(upstreams);
    let mut metas: Vec<Option<Arc<VerifiedMetadata>>> = vec![None; upstreams];
    let launch = |index: usize, attempts: &mut Vec<Option<Attempt>>| {
        let (inner, events) = (inner.clone(), events_tx.clone());
        attempts.push(Some(Attempt(tokio::spawn(async move {
            if let Err(e) = attempt(&inner, index, id, &events).await {
                let _ = events.send((index, Err(e))).await;
            }
        }))));
    };
    launch(0, &mut attempts);
    let mut running = 1usize;
    let mut leader: Option<usize> = None;
    let mut failures: Vec<String> = Vec::new();
    let mut not_found = 0usize;
    let hedge = tokio::time::sleep(inner.config.upstream_hedge);
    tokio::pin!(hedge);
    loop {
        let (index, event) = tokio::select! {
            Some(event) = events.recv() => event,
            () = &mut hedge, if leader.is_none() && attempts.len() < upstreams => {
                tracing::debug!(blob_id = %id, upstream = %inner.upstreams[attempts.len()].name, "hedging to the next upstream");
                launch(attempts.len(), &mut attempts);
                running += 1;
                hedge.as_mut().reset(tokio::time::Instant::now() + inner.config.upstream_hedge);
                continue;
            }
        };
        if attempts[index].is_none() {
            continue; // Cancelled; this was already in the channel.
        }
        let name = &inner.upstreams[index].name;
        match event {
            Ok(Event::Meta(meta)) => metas[index] = Some(meta),
            Ok(event @ (Event::Row(..) | Event::Done)) => {
                if leader.is_none() {
                    leader = Some(index);
                    for (other, slot) in attempts.iter_mut().enumerate() {
                        if other != index && slot.take().is_some() {
                            running -= 1;
                        }
                    }
                    let meta = metas[index]
                        .clone()
                        .ok_or_else(|| ReadError::Internal("rows before metadata".into()))?;
                    adopt(inner, tx, &meta).await;
                }
                match event {
                    Event::Row(row, bytes) => {
                        let row = usize::from(row);
                        if row == *published {
                            tx.send_modify(|s| s.rows.push(bytes));
                            *published += 1;
                        } else if row > *published {
                            return Err(ReadError::Internal(format!(
                                "upstream row {row} arrived before row {published}"
                            )));
                        }
                    }
                    _ => {
                        inner.telemetry.upstream_result(name, "served");
                        return metas[index]
                            .clone()
                            .ok_or_else(|| ReadError::Internal("no metadata".into()));
                    }
                }
            }
            Err(e) => {
                attempts[index] = None;
                running -= 1;
                inner.telemetry.upstream_result(name, e.kind());
                if matches!(e, UpstreamError::NotFound) {
                    not_found += 1;
                    // A client asking for a blob nobody has: not an operator's event.
                    tracing::debug!(upstream = %name, blob_id = %id, "upstream does not have the blob");
                } else {
                    tracing::warn!(upstream = %name, blob_id = %id, error = %e, "upstream failed; trying the next source");
                }
                failures.push(format!("{name}: {e}"));
                if leader == Some(index) {
                    leader = None;
                }
                if attempts.len() < upstreams {
                    launch(attempts.len(), &mut attempts);
                    running += 1;
                    hedge
                        .as_mut()
                        .reset(tokio::time::Instant::now() + inner.config.upstream_hedge);
                } else if running == 0 {
                    if not_found == upstreams {
                        return Err(ReadError::NotFoundUpstream { upstreams });
                    }
                    return Err(ReadError::Unavailable(format!(
                        "no upstream served the blob: {}",
                        failures.join("; ")
                    )));
                }
            }
        }
    }
}

/// The first verified metadata of this fill: announce the length and cache the metadata (for
/// ranges, `HEAD`s and children asking for `/metadata`).
async fn adopt(inner: &Arc<Inner>, tx: &watch::Sender<FillState>, meta: &Arc<VerifiedMetadata>) {
    if tx.borrow().meta.is_some() {
        return;
    }
    let len = meta.unencoded_length();
    let streaming = len >= inner.config.stream_from_bytes
        && inner.config.consistency != ConsistencyCheck::Strict;
    tx.send_modify(|s| {
        s.meta = Some(meta.clone());
        s.streaming = streaming;
    });
    inner.metadata.insert(meta.blob_id(), meta.clone()).await;
    inner.memory.exists(meta.blob_id()).await;
}

/// One upstream's try at the whole blob, reporting through `events`.
async fn attempt(
    inner: &Arc<Inner>,
    index: usize,
    id: BlobId,
    events: &mpsc::Sender<(usize, Result<Event, UpstreamError>)>,
) -> Result<(), UpstreamError> {
    let upstream = &inner.upstreams[index];
    let config = *inner.committees.current().config();
    let timeout = inner.config.upstream_timeout;
    let max_len = max_blob_len(inner);
    let strict = inner.config.consistency == ConsistencyCheck::Strict;
    let send = |event| async move {
        events
            .send((index, Ok(event)))
            .await
            .map_err(|_| UpstreamError::Protocol("the fill ended".into()))
    };
    // Metadata and blob are asked for together: one round trip either way. Under Strict the
    // metadata is not needed (the whole blob is re-encoded anyway).
    let metadata = async {
        if strict {
            None
        } else {
            Some(verified_metadata(inner, upstream, id).await)
        }
    };
    let blob = inner
        .upstream_client
        .blob(upstream, &id, None, max_len, timeout);
    let (metadata, blob) = tokio::join!(metadata, blob);
    let mut body = blob?;
    match metadata {
        // Metadata that does not verify is a lie: this upstream is not to be trusted.
        Some(Err(e @ UpstreamError::Mismatch(_))) => Err(e),
        Some(Ok(meta)) => {
            check_size(inner, &meta)?;
            let meta = Arc::new(meta);
            send(Event::Meta(meta.clone())).await?;
            let len = meta.unencoded_length();
            let rows = rows_covering(&meta, 0, len);
            verified_rows(inner, &meta, &mut body, rows, 0, len, |row, bytes| {
                send(Event::Row(row, bytes))
            })
            .await?;
            send(Event::Done).await
        }
        // No metadata (an aggregator, or a parent that lost it): check the whole blob.
        _ => {
            let mut whole = BytesMut::new();
            while let Some(chunk) = body.next().await? {
                inner
                    .telemetry
                    .fetched_from_upstream(false, chunk.len() as u64);
                whole.extend_from_slice(&chunk);
            }
            let whole = whole.freeze();
            let check = whole.clone();
            let meta =
                tokio::task::spawn_blocking(move || codec::compute_metadata(&config, &check))
                    .await
                    .map_err(|e| UpstreamError::Protocol(format!("re-encoding task failed: {e}")))?
                    .map_err(|e| UpstreamError::Mismatch(format!("cannot re-encode: {e}")))?;
            if meta.blob_id() != id {
                return Err(UpstreamError::Mismatch(format!(
                    "its {} bytes encode to Blob ID {}",
                    whole.len(),
                    meta.blob_id()
                )));
            }
            check_size(inner, &meta)?;
            let row_len = config.row_len(meta.symbol_size()) as usize;
            send(Event::Meta(Arc::new(meta))).await?;
            for (row, start) in (0..whole.len()).step_by(row_len.max(1)).enumerate() {
                let end = (start + row_len).min(whole.len());
                send(Event::Row(row as u16, whole.slice(start..end))).await?;
            }
            send(Event::Done).await
        }
    }
}

/// Systematic rows `rows` of `meta`'s blob from the upstreams (a `Range` request each), each
/// verified against `meta`. The first upstream that delivers them all wins; `Err` when none does.
pub(super) async fn read_rows(
    inner: &Arc<Inner>,
    meta: &Arc<VerifiedMetadata>,
    rows: Range<u16>,
) -> Result<Vec<Bytes>, ReadError> {
    let len = meta.unencoded_length();
    let row_len = meta.config().row_len(meta.symbol_size());
    let start = u64::from(rows.start) * row_len;
    let end = (u64::from(rows.end) * row_len).min(len);
    let mut failures = Vec::new();
    for upstream in &inner.upstreams {
        let id = meta.blob_id();
        let timeout = inner.config.upstream_timeout;
        let result = async {
            let mut body = inner
                .upstream_client
                .blob(upstream, &id, Some((start, end)), end - start, timeout)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            verified_rows(
                inner,
                meta,
                &mut body,
                rows.clone(),
                start,
                end,
                |_, row| {
                    out.push(row);
                    std::future::ready(Ok(()))
                },
            )
            .await?;
            Ok::<_, UpstreamError>(out)
        }
        .await;
        match result {
            Ok(out) => {
                inner.telemetry.upstream_result(&upstream.name, "served");
                return Ok(out);
            }
            Err(e) => {
                inner.telemetry.upstream_result(&upstream.name, e.kind());
                if matches!(e, UpstreamError::NotFound) {
                    tracing::debug!(upstream = %upstream.name, blob_id = %id, "upstream does not have the blob");
                } else {
                    tracing::warn!(upstream = %upstream.name, blob_id = %id, error = %e, "upstream range read failed");
                }
                failures.push(format!("{}: {e}", upstream.name));
            }
        }
    }
    Err(ReadError::Unavailable(format!(
        "no upstream served the rows: {}",
        failures.join("; ")
    )))
}

/// Read bytes `[start, end)` of the blob (row-aligned at `start`, the blob's end or a row
/// boundary at `end`) from `body`, cut them into rows `rows`, verify each as a systematic
/// primary sliver (several at once, in order) and hand them to `emit` in order.
async fn verified_rows<F, Fut>(
    inner: &Arc<Inner>,
    meta: &Arc<VerifiedMetadata>,
    body: &mut BlobBody,
    rows: Range<u16>,
    start: u64,
    end: u64,
    mut emit: F,
) -> Result<(), UpstreamError>
where
    F: FnMut(u16, Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<(), UpstreamError>>,
{
    let row_len = meta.config().row_len(meta.symbol_size()) as usize;
    let expected = end - start;
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
    let mut pending: VecDeque<JoinHandle<Result<(u16, Bytes), UpstreamError>>> = VecDeque::new();
    let mut buffer = BytesMut::new();
    let mut received = 0u64;
    let mut next_row = rows.start;
    let mut done = false;
    while !done {
        match body.next().await? {
            Some(chunk) => {
                received += chunk.len() as u64;
                if received > expected {
                    return Err(UpstreamError::TooLarge(expected));
                }
                inner
                    .telemetry
                    .fetched_from_upstream(true, chunk.len() as u64);
                buffer.extend_from_slice(&chunk);
            }
            None if received < expected => {
                return Err(UpstreamError::Truncated {
                    got: received,
                    expected,
                })
            }
            None => done = true,
        }
        while buffer.len() >= row_len || (done && !buffer.is_empty()) {
            let take = row_len.min(buffer.len());
            let bytes = buffer.split_to(take).freeze();
            pending.push_back(tokio::spawn(verify_row(
                inner.clone(),
                meta.clone(),
                next_row,
                bytes,
            )));
            next_row += 1;
            while pending.len() >= parallel {
                let (row, bytes) = join(pending.pop_front().expect("non-empty")).await?;
                emit(row, bytes).await?;
            }
        }
    }
    while let Some(handle) = pending.pop_front() {
        let (row, bytes) = join(handle).await?;
        emit(row, bytes).await?;
    }
    if next_row != rows.end {
        return Err(UpstreamError::Protocol(format!(
            "{received} bytes made rows up to {next_row}, not {}",
            rows.end
        )));
    }
    Ok(())
}

async fn join(
    handle: JoinHandle<Result<(u16, Bytes), UpstreamError>>,
) -> Result<(u16, Bytes), UpstreamError> {
    handle
        .await
        .map_err(|e| UpstreamError::Protocol(format!("verification task failed: {e}")))?
}

/// Verify `bytes` as row `row` of the blob: the systematic primary sliver `row`, zero padded
/// past the blob's end, must expand to the hash in the metadata.
async fn verify_row(
    inner: Arc<Inner>,
    meta: Arc<VerifiedMetadata>,
    row: u16,
    bytes: Bytes,
) -> Result<(u16, Bytes), UpstreamError> {
    let _turn = inner.verify_gate.enter(u32::from(row)).await;
    tokio::task::spawn_blocking(move || {
        let full = meta.config().primary_sliver_len(meta.symbol_size());
        let data = if bytes.len() == full {
            bytes.clone()
        } else {
            let mut padded = BytesMut::zeroed(full);
            padded[..bytes.len()].copy_from_slice(&bytes);
            padded.freeze()
        };
        meta.verify_sliver(Sliver {
            kind: SliverKind::Primary,
            index: row,
            symbol_size: meta.symbol_size(),
            data,
        })
        .map(|_| (row, bytes))
        .map_err(|e| UpstreamError::Mismatch(format!("row {row}: {e}")))
    })
    .await
    .map_err(|e| UpstreamError::Protocol(format!("verification task failed: {e}")))?
}

/// The systematic rows holding bytes `[start, end)`.
fn rows_covering(meta: &VerifiedMetadata, start: u64, end: u64) -> Range<u16> {
    meta.config()
        .rows_for_range(meta.unencoded_length(), start, end)
        .unwrap_or(0..0)
}

/// Largest blob this gateway accepts: the committee's bound, or `max_blob_size` if lower.
fn max_blob_len(inner: &Inner) -> u64 {
    let committee = inner.committees.current().config().max_blob_size();
    inner
        .config
        .max_blob_size
        .map_or(committee, |max| max.min(committee))
}

fn check_size(inner: &Inner, meta: &VerifiedMetadata) -> Result<(), UpstreamError> {
    let (len, max) = (meta.unencoded_length(), max_blob_len(inner));
    if len > max {
        return Err(UpstreamError::TooLarge(max));
    }
    Ok(())
}

/// `upstream`'s metadata for `id`, verified against the Blob ID (`Mismatch` if it does not).
async fn verified_metadata(
    inner: &Inner,
    upstream: &Upstream,
    id: BlobId,
) -> Result<VerifiedMetadata, UpstreamError> {
    let config = *inner.committees.current().config();
    let bytes = inner
        .upstream_client
        .metadata(
            upstream,
            &id,
            metadata_limit(&config),
            inner.config.upstream_timeout,
        )
        .await?;
    inner
        .telemetry
        .fetched_from_upstream(true, bytes.len() as u64);
    VerifiedMetadata::from_bcs(id, &bytes, config)
        .map_err(|e| UpstreamError::Mismatch(format!("metadata: {e}")))
}

/// Verified metadata from the first upstream that serves some (parents do; aggregators do not).
pub(super) async fn metadata(
    inner: &Arc<Inner>,
    id: BlobId,
) -> Result<Arc<VerifiedMetadata>, ReadError> {
    let mut failures = Vec::new();
    let mut not_found = 0;
    for upstream in &inner.upstreams {
        match verified_metadata(inner, upstream, id).await {
            Ok(meta) => {
                check_size(inner, &meta).map_err(|_| ReadError::TooLarge {
                    len: meta.unencoded_length(),
                    max: max_blob_len(inner),
                })?;
                return Ok(Arc::new(meta));
            }
            Err(UpstreamError::NotFound) => not_found += 1,
            Err(e) => {
                inner.telemetry.upstream_result(&upstream.name, e.kind());
                if matches!(e, UpstreamError::Mismatch(_)) {
                    tracing::warn!(upstream = %upstream.name, blob_id = %id, error = %e, "upstream served metadata that does not verify");
                }
                failures.push(format!("{}: {e}", upstream.name));
            }
        }
    }
    Err(ReadError::Unavailable(format!(
        "no upstream served verifiable metadata ({not_found} do not offer it or lack the blob{}{})",
        if failures.is_empty() { "" } else { "; " },
        failures.join("; ")
    )))
}
