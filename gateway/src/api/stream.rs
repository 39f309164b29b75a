//! Feeding a response from a fill: tasks that turn verified rows into the requested bytes.
//!
//! Rows arrive in blob order (row `r` starts at byte `r * row_len`); each task forwards the part
//! of each row inside the requested range `[start, end)`, as zero-copy slices, through a small
//! bounded channel to the response [`Body`]. A client that goes away closes the channel and
//! ends its task; the fill it read from runs on for the others. A disk hit needs no task: its
//! body reads one checked chunk at a time as it is polled ([`from_disk`]).

use super::body::Body;
use crate::cache::DiskBlob;
use crate::disk::Fill;
use crate::fill::{FillReader, ReadError};
use bytes::Bytes;
use codec::VerifiedMetadata;
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

    /// Forward rows `rows` from a running fill, each as soon as it has verified (in order or
    /// not), until the range is complete.
    async fn copy_fill(&mut self, mut reader: FillReader, rows: std::ops::Range<u16>) {
        for row in rows {
            if self.done() {
                return;
            }
            match reader.row(row).await {
                Ok(bytes) => {
                    if !self.row(row, bytes).await {
                        return;
                    }
                }
                Err(e) => return self.fail(e).await,
            }
        }
        if !self.done() {
            self.fail(ReadError::Internal(
                "the fill ended before the requested range".into(),
            ))
            .await
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

/// Bytes `[start, end)` from a running fill, once they may start ([`FillReader::range_ready`]:
/// a range of a blob that does not stream waits for all its rows, so a fill that fails first
/// answers with a status, never a truncated body). A range reads only its own rows: it is
/// served as soon as they verify, whatever the fill is doing elsewhere in the blob.
pub async fn from_fill(
    mut reader: FillReader,
    meta: &VerifiedMetadata,
    start: u64,
    end: u64,
) -> Result<Body, ReadError> {
    if start >= end {
        return Ok(Body::empty());
    }
    let rows = meta
        .config()
        .rows_for_range(meta.unencoded_length(), start, end)
        .map_err(|e| ReadError::Internal(e.to_string()))?;
    reader.range_ready(rows.clone()).await?;
    let (mut cursor, body) = cursor(meta, start, end);
    tokio::spawn(async move { cursor.copy_fill(reader, rows).await });
    Ok(body)
}

/// Bytes `[start, end)` of a blob on the disk tier, one checked chunk at a time. A chunk that
/// fails its checksum is never sent: the body ends with an error there (the file is already
/// quarantined, so the next request refills the blob).
///
/// The range's first chunk is read and checked now when the page cache holds it, so a copy
/// that fails there is an error status (503; the next request refills it), never a `200` cut
/// short; a first chunk that is not resident is read when the body is first sent. The plain
/// HTTP/1.1 writer takes the reader out of the body and writes each checked chunk from the
/// reader's buffer ([`crate::h1`]); hyper polls the body, which reads each chunk as it is
/// asked for ([`Body`]).
pub fn from_disk(blob: DiskBlob, start: u64, end: u64) -> Result<Body, ReadError> {
    let mut reader = blob
        .into_reader(start, end)
        .map_err(|e| ReadError::Internal(format!("disk cache: {e}")))?;
    if let Err(e) = reader.fill(false) {
        return Err(ReadError::Unavailable(format!(
            "the disk copy failed its check ({e}); it is refilled on the next request"
        )));
    }
    Ok(Body::disk(reader))
}

/// [`from_disk`] for the disk lane, which must not wait and must not start a response it may
/// not finish: `Some` only once the range's first chunk was read from the page cache and
/// matched its checksum (it waits in the body's reader). `None` when that chunk is not
/// resident (the general path reads it) or failed its check (the file is quarantined, so the
/// general path refills the blob, or answers 503 when it cannot).
pub fn from_disk_now(blob: DiskBlob, start: u64, end: u64) -> Option<Body> {
    let mut reader = blob.into_reader(start, end).ok()?;
    match reader.fill(false) {
        Ok(Fill::Ready | Fill::End) => Some(Body::disk(reader)),
        Ok(Fill::WouldBlock) | Err(_) => None,
    }
}
