//! Feeding a response from a fill: tasks that turn verified rows into the requested bytes.
//!
//! Rows arrive in blob order (row `r` starts at byte `r * row_len`); each task forwards the part
//! of each row inside the requested range `[start, end)`, as zero-copy slices, through a small
//! bounded channel to the response [`Body`]. A client that goes away closes the channel and
//! ends its task; the fill it read from runs on for the others.

use super::body::Body;
use crate::cache::CachedBlob;
use crate::fill::{FillReader, Filler, ReadError, Source};
use bytes::Bytes;
use codec::{BlobId, VerifiedMetadata};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Frames buffered between a feeding task and the socket.
const CHANNEL_FRAMES: usize = 4;

/// Where the next byte to send is, and where to stop.
struct Cursor {
    tx: mpsc::Sender<Result<Bytes, ReadError>>,
    row_len: u64,
    pos: u64,
    end: u64,
}

impl Cursor {
    /// Send the part of row `row` inside `[pos, end)`; false when the client has gone.
    async fn row(&mut self, row: u16, bytes: Bytes) -> bool {
        let offset = u64::from(row) * self.row_len;
        let row_end = offset + bytes.len() as u64;
        if row_end <= self.pos || offset >= self.end {
            return true;
        }
        let from = (self.pos - offset.min(self.pos)) as usize;
        let to = (self.end.min(row_end) - offset) as usize;
        self.pos = offset + to as u64;
        self.tx.send(Ok(bytes.slice(from..to))).await.is_ok()
    }

    fn done(&self) -> bool {
        self.pos >= self.end
    }

    async fn fail(&self, error: ReadError) {
        let _ = self.tx.send(Err(error)).await;
    }

    /// Forward from a running fill until the range is complete.
    async fn copy_fill(&mut self, mut reader: FillReader) {
        while !self.done() {
            match reader.next_row().await {
                Some(Ok((row, bytes))) => {
                    if !self.row(row, bytes).await {
                        return;
                    }
                }
                Some(Err(e)) => return self.fail(e).await,
                None => {
                    return self
                        .fail(ReadError::Internal(
                            "the fill ended before the requested range".into(),
                        ))
                        .await
                }
            }
        }
    }

    async fn copy_cached(&mut self, blob: CachedBlob) {
        for slice in blob.slices(self.pos, self.end) {
            self.pos += slice.len() as u64;
            if self.tx.send(Ok(slice)).await.is_err() {
                return;
            }
        }
    }
}

fn cursor(meta: &VerifiedMetadata, start: u64, end: u64) -> (Cursor, Body) {
    let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
    let row_len = meta.config().row_len(meta.symbol_size());
    let cursor = Cursor {
        tx,
        row_len,
        pos: start,
        end,
    };
    (cursor, Body::stream(rx, end - start))
}

/// Bytes `[start, end)` from a running fill.
pub fn from_fill(reader: FillReader, meta: &VerifiedMetadata, start: u64, end: u64) -> Body {
    let (mut cursor, body) = cursor(meta, start, end);
    tokio::spawn(async move { cursor.copy_fill(reader).await });
    body
}

/// Bytes `[start, end)` of a blob nobody is filling: fetch just the systematic rows covering
/// them. If one of those cannot be had, fall back to a whole-blob fill (which can reconstruct it)
/// and continue from where the rows stopped.
pub fn from_rows(
    filler: Filler,
    id: BlobId,
    meta: Arc<VerifiedMetadata>,
    start: u64,
    end: u64,
) -> Body {
    let (mut cursor, body) = cursor(&meta, start, end);
    tokio::spawn(async move {
        let rows = match meta
            .config()
            .rows_for_range(meta.unencoded_length(), start, end)
        {
            Ok(rows) => rows,
            Err(e) => return cursor.fail(ReadError::Internal(e.to_string())).await,
        };
        let (row_tx, mut row_rx) = mpsc::unbounded_channel();
        let mut next_row = rows.start;
        let reading = {
            let filler = filler.clone();
            let meta = meta.clone();
            tokio::spawn(async move { filler.read_rows(meta, rows, row_tx).await })
        };
        // Abort the row fetch if this task ends first (the client left).
        let _abort = AbortOnDrop(reading.abort_handle());
        while let Some(bytes) = row_rx.recv().await {
            if !cursor.row(next_row, bytes).await {
                return;
            }
            next_row += 1;
        }
        let outcome = reading
            .await
            .unwrap_or_else(|e| Err(ReadError::Internal(format!("row task failed: {e}"))));
        if cursor.done() {
            return;
        }
        if let Err(e) = outcome {
            tracing::info!(blob_id = %id, error = %e, "range read fell back to a whole-blob fill");
        }
        match filler.open(id).await {
            Ok(Source::Cached(blob, _)) => cursor.copy_cached(blob).await,
            Ok(Source::Filling(reader)) => cursor.copy_fill(reader).await,
            Err(e) => cursor.fail(e).await,
        }
    });
    body
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
