//! Response bodies: whole buffers (errors, metrics), cached blob slices, ranges of a sealed
//! memory file, and streams fed by a fill. Blob bytes travel as the [`Bytes`] the fill verified,
//! never copied; the plain HTTP/1.1 writer ([`crate::h1`]) takes a memory file's range out of
//! the body ([`Body::take_file`]) and `sendfile`s it, and a disk-tier range's reader out of it
//! ([`Body::take_disk`]) to write each checked chunk from the reader's buffer; hyper polls a
//! disk-tier body directly (each chunk read and checked in the poll, see [`Kind::Disk`]). A
//! stream whose fill fails yields an error, which makes hyper abort the response (a truncated
//! HTTP/1.1 body or an HTTP/2 reset) instead of ending it cleanly: a client can always tell a
//! partial blob.

use super::error::ApiError;
use crate::cache::CachedBlob;
use crate::disk::{DiskError, DiskReader, Fill};
use crate::fairness::{Share, SharePermits};
use crate::fill::ReadError;
use crate::memfile::MemFile;
use crate::telemetry::Telemetry;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// A blob stream ended early.
#[derive(Debug, thiserror::Error)]
#[error("blob stream aborted: {0}")]
pub struct BodyError(pub ReadError);

/// A slot in the concurrent-request bound (and the connection's [`Share`] of it), held until
/// the response body is dropped.
pub struct RequestSlot {
    _permit: OwnedSemaphorePermit,
    _share: Option<SharePermits>,
    telemetry: Arc<Telemetry>,
}

impl RequestSlot {
    pub fn new(permit: OwnedSemaphorePermit, telemetry: Arc<Telemetry>) -> Self {
        telemetry.requests_in_flight.increment(1.0);
        Self {
            _permit: permit,
            _share: None,
            telemetry,
        }
    }

    /// A slot of `global`, within the connection's `share` when the transport gave one: the
    /// share is taken first, so a connection past it is refused without touching the global
    /// pool. Never waits; a refusal is [`ApiError::Overloaded`] (429).
    pub fn acquire(
        global: &Arc<Semaphore>,
        share: Option<&Share>,
        telemetry: &Arc<Telemetry>,
    ) -> Result<Self, ApiError> {
        Self::take(global, share, telemetry, true)
    }

    /// [`RequestSlot::acquire`] for a fast path whose refusal sends the request down the
    /// general path (which then refuses and counts it): not counted here.
    pub fn try_acquire(
        global: &Arc<Semaphore>,
        share: Option<&Share>,
        telemetry: &Arc<Telemetry>,
    ) -> Option<Self> {
        Self::take(global, share, telemetry, false).ok()
    }

    fn take(
        global: &Arc<Semaphore>,
        share: Option<&Share>,
        telemetry: &Arc<Telemetry>,
        count: bool,
    ) -> Result<Self, ApiError> {
        let share = match share.map(Share::try_take).transpose() {
            Ok(share) => share,
            Err(refused) => {
                if count {
                    tracing::debug!(scope = refused.scope(), "request share exhausted");
                    telemetry.share_refused(refused.scope());
                }
                return Err(ApiError::Overloaded);
            }
        };
        let permit = global
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Overloaded)?;
        let mut slot = Self::new(permit, telemetry.clone());
        slot._share = share;
        Ok(slot)
    }
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.telemetry.requests_in_flight.decrement(1.0);
    }
}

enum Kind {
    Chunks(VecDeque<Bytes>),
    /// Bytes `[start, end)` of a memory file: mapped slices for hyper, `sendfile` for [`crate::h1`].
    File {
        file: Arc<MemFile>,
        start: u64,
        end: u64,
    },
    Stream(mpsc::Receiver<Result<Bytes, ReadError>>),
    /// A range of a disk-tier file: the plain HTTP/1.1 writer takes the reader
    /// ([`Body::take_disk`]) and writes each checked chunk from its buffer; hyper polls it, and
    /// each poll reads the next chunk into a pooled buffer on the polling task when it is in the
    /// page cache (`RWF_NOWAIT`), checks it, and yields it as [`Bytes`] owning that buffer. No
    /// feeding task, no channel: a client that stops reading leaves the body unpolled, holding
    /// the chunk its connection is writing and nothing more.
    Disk(Box<DiskReader>),
    /// The reader waiting for the device on the blocking pool ([`DiskReader::fill_blocking`]):
    /// only a chunk that is not in the page cache goes there.
    DiskWait(tokio::task::JoinHandle<DiskFill>),
}

/// A disk reader back from the blocking pool, with its fill's outcome.
type DiskFill = Result<(DiskReader, Result<Fill, DiskError>), String>;

/// Frames cut from a memory file for hyper (HTTP/2 and HTTP/3 split them further).
const FILE_FRAME: u64 = 1 << 20;

/// A range of a sealed memory file, taken out of a body to be sent with `sendfile`.
pub struct FileRange {
    pub file: Arc<MemFile>,
    pub start: u64,
    pub end: u64,
}

/// The body of every response the gateway sends.
pub struct Body {
    kind: Kind,
    /// Bytes still to send when known (for `size_hint`).
    remaining: Option<u64>,
    /// Counts blob bytes served; `None` for non-blob bodies.
    served: Option<metrics::Counter>,
    _slot: Option<RequestSlot>,
}

impl Body {
    pub fn empty() -> Self {
        Self::chunks(Vec::new())
    }

    pub fn full(bytes: Bytes) -> Self {
        Self::chunks(vec![bytes])
    }

    pub fn chunks(chunks: Vec<Bytes>) -> Self {
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        Self {
            kind: Kind::Chunks(chunks.into_iter().filter(|c| !c.is_empty()).collect()),
            remaining: Some(len),
            served: None,
            _slot: None,
        }
    }

    /// Bytes `[start, end)` of a cached blob (`end` clamped to its length).
    pub fn cached(blob: &CachedBlob, start: u64, end: u64) -> Self {
        let end = end.min(blob.len());
        match blob.memory_file() {
            Some(file) if start < end => Self {
                kind: Kind::File {
                    file: file.clone(),
                    start,
                    end,
                },
                remaining: Some(end - start),
                served: None,
                _slot: None,
            },
            _ => Self::chunks(blob.slices(start, end)),
        }
    }

    /// A body fed by a task through `rx`, `len` bytes long if it completes.
    pub fn stream(rx: mpsc::Receiver<Result<Bytes, ReadError>>, len: u64) -> Self {
        Self {
            kind: Kind::Stream(rx),
            remaining: Some(len),
            served: None,
            _slot: None,
        }
    }

    /// The range `reader` reads from the disk tier, each chunk checked before it is sent.
    pub fn disk(reader: DiskReader) -> Self {
        Self {
            remaining: Some(reader.remaining()),
            kind: Kind::Disk(Box::new(reader)),
            served: None,
            _slot: None,
        }
    }

    /// The disk reader of a disk-tier body that has not started, taken out of it (the body then
    /// sends nothing more; the taker sends the bytes and reports them with
    /// [`Body::count_sent`]); `None` (body untouched) for any other body.
    pub fn take_disk(&mut self) -> Option<DiskReader> {
        if !matches!(self.kind, Kind::Disk(_)) {
            return None;
        }
        match std::mem::replace(&mut self.kind, Kind::Chunks(VecDeque::new())) {
            Kind::Disk(reader) => Some(*reader),
            _ => None,
        }
    }

    /// Count the bytes this body sends as blob bytes served, and hold `slot` until it is done.
    pub fn for_blob(mut self, served: metrics::Counter, slot: RequestSlot) -> Self {
        self.served = Some(served);
        self._slot = Some(slot);
        self
    }

    fn sent(&mut self, bytes: &Bytes) {
        self.count_sent(bytes.len() as u64);
    }

    /// Account for `n` bytes of this body sent by someone else (the `sendfile` writer).
    pub fn count_sent(&mut self, n: u64) {
        if let Some(remaining) = self.remaining.as_mut() {
            *remaining = remaining.saturating_sub(n);
        }
        if let Some(served) = &self.served {
            served.increment(n);
        }
    }

    /// The memory-file range this body would send, if it is at most `max` bytes long, taken
    /// out of it (the body then sends nothing more); `None` (body untouched) for a longer range
    /// or any other kind of body.
    pub fn take_file(&mut self, max: u64) -> Option<FileRange> {
        let Kind::File { file, start, end } = &mut self.kind else {
            return None;
        };
        if *end - *start > max {
            return None;
        }
        let range = FileRange {
            file: file.clone(),
            start: *start,
            end: *end,
        };
        *start = *end;
        Some(range)
    }
}

impl Body {
    /// The next checked chunk of a disk-tier body: read now if the page cache has it, else on
    /// the blocking pool (the body is polled again when that read is done). A chunk is handed
    /// out only after [`DiskReader::fill`] checked it; a failed check ends the body with an
    /// error (the file is quarantined), never with bytes that were not checked.
    fn poll_disk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ReadError>>> {
        loop {
            match &mut self.kind {
                Kind::Disk(reader) => {
                    let fill = reader.fill(false);
                    if let Ok(Fill::WouldBlock) = fill {
                        let Kind::Disk(reader) =
                            std::mem::replace(&mut self.kind, Kind::Chunks(VecDeque::new()))
                        else {
                            unreachable!("matched above");
                        };
                        self.kind = Kind::DiskWait(tokio::spawn(reader.fill_blocking()));
                        continue;
                    }
                    return Poll::Ready(disk_frame(reader, fill));
                }
                Kind::DiskWait(task) => {
                    let done = match Pin::new(task).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(done) => done,
                    };
                    let (mut reader, fill) = match done {
                        Ok(Ok(back)) => back,
                        Ok(Err(e)) => return Poll::Ready(Some(Err(ReadError::Internal(e)))),
                        Err(e) => {
                            return Poll::Ready(Some(Err(ReadError::Internal(format!(
                                "disk read task failed: {e}"
                            )))))
                        }
                    };
                    let frame = match fill {
                        Ok(Fill::WouldBlock) => Some(Err(ReadError::Internal(
                            "a waiting disk read did not complete".into(),
                        ))),
                        fill => disk_frame(&mut reader, fill),
                    };
                    self.kind = Kind::Disk(Box::new(reader));
                    return Poll::Ready(frame);
                }
                _ => return Poll::Ready(None),
            }
        }
    }
}

/// What a disk body yields after `fill`: the checked chunk (as [`Bytes`] owning its buffer),
/// the end, or the error.
fn disk_frame(
    reader: &mut DiskReader,
    fill: Result<Fill, DiskError>,
) -> Option<Result<Bytes, ReadError>> {
    match fill {
        Ok(Fill::Ready) => Some(Ok(reader.take_ready())),
        Ok(Fill::End) => None,
        Ok(Fill::WouldBlock) => Some(Err(ReadError::Internal(
            "a waiting disk read did not complete".into(),
        ))),
        Err(e) => Some(Err(ReadError::Internal(format!("disk cache: {e}")))),
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let next = match &mut this.kind {
            Kind::Chunks(chunks) => chunks.pop_front().map(Ok),
            Kind::Disk(_) | Kind::DiskWait(_) => match this.poll_disk(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(item) => item,
            },
            Kind::File { file, start, end } => (*start < *end).then(|| {
                let to = (*start + FILE_FRAME).min(*end);
                let bytes = file.bytes().slice(*start as usize..to as usize);
                *start = to;
                Ok(bytes)
            }),
            Kind::Stream(rx) => match rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(item) => item,
            },
        };
        match next {
            Some(Ok(bytes)) => {
                this.sent(&bytes);
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(BodyError(e)))),
            None => {
                if this.remaining.is_some_and(|r| r > 0) {
                    // The feeding task ended without sending every byte: never end cleanly.
                    return Poll::Ready(Some(Err(BodyError(ReadError::Internal(
                        "the blob stream ended early".into(),
                    )))));
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Chunks(chunks) => chunks.is_empty(),
            Kind::File { start, end, .. } => start >= end,
            Kind::Stream(_) | Kind::DiskWait(_) => false,
            Kind::Disk(reader) => reader.remaining() == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_failing_stream_aborts_instead_of_ending() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
        tx.send(Err(ReadError::Inconsistent("row 3".into())))
            .await
            .unwrap();
        assert!(Body::stream(rx, 10).collect().await.is_err());
    }

    #[tokio::test]
    async fn a_stream_that_stops_short_is_an_error() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
        drop(tx);
        assert!(Body::stream(rx, 10).collect().await.is_err());
        let (tx, rx) = mpsc::channel(4);
        tx.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
        drop(tx);
        let whole = Body::stream(rx, 3).collect().await.unwrap().to_bytes();
        assert_eq!(&whole[..], b"abc");
    }
}
