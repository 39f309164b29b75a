//! Feeding a response from a fill: tasks that turn verified rows into the requested bytes.
//!
//! Rows arrive in blob order (row `r` starts at byte `r * row_len`); each task forwards the part
//! of each row inside the requested range `[start, end)`, as zero-copy slices, through a small
//! bounded channel to the response [`Body`]. A client that goes away closes the channel and
//! ends its task; the fill it read from runs on for the others.

use super::body::Body;
use crate::cache::DiskBlob;
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

/// Bytes `[start, end)` of a blob on the disk tier, read on the blocking pool one checked chunk
/// at a time. A chunk that fails its checksum is never sent: the body ends with an error there
/// (the file is already quarantined, so the next request refills the blob).
pub fn from_disk(blob: DiskBlob, start: u64, end: u64) -> Result<Body, ReadError> {
    let mut reader = blob
        .into_reader(start, end)
        .map_err(|e| ReadError::Internal(format!("disk cache: {e}")))?;
    let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
    tokio::task::spawn_blocking(move || loop {
        match reader.next_chunk() {
            Ok(Some(chunk)) => {
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                let _ = tx.blocking_send(Err(ReadError::Internal(format!("disk cache: {e}"))));
                return;
            }
        }
    });
    Ok(Body::stream(rx, end - start))
}
