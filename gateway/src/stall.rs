//! A connection whose writes make no progress for too long is closed: a client that stops
//! reading (or a peer that vanished without a FIN) would otherwise hold its connection, its
//! request slot and its response buffers for as long as the kernel keeps the socket.
//!
//! [`StallGuard`] wraps a TCP stream (below TLS, so it sees the real socket). A write or flush
//! that stays pending for [`WRITE_STALL_TIMEOUT`] fails with `TimedOut`, which ends the
//! connection; every write that makes progress resets the clock. Reads pass through untouched
//! (silent and idle connections are closed by their deadlines, [`crate::deadline`]).
//! HTTP/3 applies the same bound (`GatewayConfig::write_stall_timeout`) per stream.
//!
//! HTTP/2 needs more: a client that grants a stream no flow-control window never blocks the
//! socket, hyper simply stops polling that stream's body, and the body (with its request slot)
//! would live as long as the connection. [`Responses`] watches every response body a hyper
//! connection sends ([`WatchedBody`]): each frame handed out is progress, and a body that has a
//! frame to give (it is not waiting for its own source, a fill) but was not asked for one
//! within the bound is revoked by [`Responses::sweep`], which the connection runs periodically:
//! the body is dropped at once (freeing its request slot, whatever hyper does) and fails at its
//! next poll, which resets the stream. A connection whose every response is stalled, with no
//! request being answered, is closed by its owner.

use crate::api::body::{Body, BodyError};
use crate::deadline::InFlight;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::time::Instant;

use bytes::Bytes;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a write may wait for the peer to read before the connection is closed.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);

pub struct StallGuard<S> {
    inner: S,
    timeout: Duration,
    /// Armed while a write is pending; cleared when one makes progress.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> StallGuard<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: None,
        }
    }

    /// Map a write poll: progress disarms the clock; pending arms it (once) and fails the
    /// write if it has run out.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.deadline = None;
            return poll;
        }
        let timeout = self.timeout;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer read nothing for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

/// The response bodies of one connection, watched for send progress.
pub struct Responses {
    bound: Duration,
    origin: Instant,
    bodies: Mutex<Bodies>,
}

/// The registered bodies, some perhaps already dropped by hyper.
#[derive(Default)]
struct Bodies {
    list: Vec<Weak<Watched>>,
    /// Length at which a registration first forgets dropped bodies: a busy connection may
    /// answer many requests between two sweeps, and each dead entry keeps its allocation.
    prune_at: usize,
}

/// What a sweep found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Bodies revoked by this sweep.
    pub revoked: usize,
    /// Bodies revoked (by this sweep or an earlier one) that hyper still holds.
    pub stalled: usize,
    /// Bodies that made progress within the bound or wait for their source.
    pub live: usize,
}

/// Largest piece of a body frame handed to hyper at once. hyper polls a body again only once it
/// has sent what it was given, so a frame is one unit of progress: a 1 MiB frame to a client
/// reading 10 kB/s would look stalled for 100 s. In pieces of this size, a client is stalled
/// only while it reads less than 64 KiB per bound.
pub(crate) const PROGRESS_PIECE: usize = 64 << 10;

struct Watched {
    /// `None` once revoked.
    body: Mutex<Option<Sending>>,
    /// Milliseconds after [`Responses::origin`] of the last frame handed out (or of the
    /// response, before the first).
    progress_ms: AtomicU64,
    /// The last poll found the body waiting for its source (a fill): not the client's stall.
    source_pending: AtomicBool,
    revoked: AtomicBool,
}

/// A body and the rest of the frame it is handing out in pieces.
struct Sending {
    body: Body,
    rest: Bytes,
}

/// A response body registered with [`Responses`].
pub struct WatchedBody {
    shared: Arc<Watched>,
    origin: Instant,
    bound: Duration,
    /// The request counts as in flight (for idle timeouts) until its body is dropped.
    _in_flight: Option<InFlight>,
}

/// The error a revoked body fails with.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("the client took no response bytes for {0:?}")]
    Stalled(Duration),
}

impl Responses {
    /// Watch bodies of one connection, revoking those that stall for `bound`.
    pub fn new(bound: Duration) -> Self {
        Self {
            bound,
            origin: Instant::now(),
            bodies: Mutex::new(Bodies::default()),
        }
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// Register `body`; `in_flight` is released with it.
    pub fn watch(&self, body: Body, in_flight: Option<InFlight>) -> WatchedBody {
        let shared = Arc::new(Watched {
            body: Mutex::new(Some(Sending {
                body,
                rest: Bytes::new(),
            })),
            progress_ms: AtomicU64::new(self.now_ms(Instant::now())),
            source_pending: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
        });
        let mut bodies = self.bodies.lock().unwrap_or_else(|p| p.into_inner());
        bodies.list.push(Arc::downgrade(&shared));
        if bodies.list.len() >= bodies.prune_at {
            bodies.list.retain(|weak| weak.strong_count() > 0);
            bodies.prune_at = (2 * bodies.list.len()).max(64);
        }
        drop(bodies);
        WatchedBody {
            shared,
            origin: self.origin,
            bound: self.bound,
            _in_flight: in_flight,
        }
    }

    /// Revoke every body stalled for the bound at `now`, forget those hyper dropped.
    pub fn sweep(&self, now: Instant) -> Sweep {
        let now_ms = self.now_ms(now);
        let bound_ms = self.bound.as_millis() as u64;
        let mut sweep = Sweep::default();
        let mut revoked = Vec::new();
        {
            let mut bodies = self.bodies.lock().unwrap_or_else(|p| p.into_inner());
            bodies.list.retain(|weak| {
                let Some(watched) = weak.upgrade() else {
                    return false;
                };
                if watched.revoked.load(Ordering::Acquire) {
                    sweep.stalled += 1;
                    return true;
                }
                let idle = now_ms.saturating_sub(watched.progress_ms.load(Ordering::Acquire));
                if watched.source_pending.load(Ordering::Acquire) || idle < bound_ms {
                    sweep.live += 1;
                    return true;
                }
                // Being polled right now is progress; try again next sweep.
                let Ok(mut body) = watched.body.try_lock() else {
                    sweep.live += 1;
                    return true;
                };
                revoked.push(body.take());
                watched.revoked.store(true, Ordering::Release);
                sweep.revoked += 1;
                sweep.stalled += 1;
                true
            });
        }
        // Dropped outside the lock: this frees the request slots.
        drop(revoked);
        sweep
    }
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = ResponseError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseError>>> {
        let this = self.get_mut();
        let mut guard = this.shared.body.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sending) = guard.as_mut() else {
            drop(guard);
            return Poll::Ready(Some(Err(ResponseError::Stalled(this.bound))));
        };
        let frame = if !sending.rest.is_empty() {
            Some(Ok(Frame::data(Bytes::new())))
        } else {
            match Pin::new(&mut sending.body).poll_frame(cx) {
                Poll::Pending => {
                    this.shared.source_pending.store(true, Ordering::Release);
                    return Poll::Pending;
                }
                Poll::Ready(frame) => frame,
            }
        };
        let now = Instant::now()
            .saturating_duration_since(this.origin)
            .as_millis() as u64;
        this.shared.progress_ms.store(now, Ordering::Release);
        this.shared.source_pending.store(false, Ordering::Release);
        let frame = match frame {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other.map(|f| f.map_err(ResponseError::from))),
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                if !data.is_empty() {
                    sending.rest = data;
                }
                let piece = sending.rest.len().min(PROGRESS_PIECE);
                Frame::data(sending.rest.split_to(piece))
            }
            Err(frame) => frame,
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        let guard = self.shared.body.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .is_some_and(|sending| sending.rest.is_empty() && sending.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let guard = self.shared.body.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sending) = guard.as_ref() else {
            return SizeHint::default();
        };
        let rest = sending.rest.len() as u64;
        let inner = sending.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_response_nobody_polls_is_revoked_after_the_bound_and_fails() {
        let responses = Responses::new(Duration::from_secs(10));
        let mut idle = responses.watch(Body::full(Bytes::from_static(b"abc")), None);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        // Waiting for its source (a fill) is not the client's stall.
        let mut filling = responses.watch(Body::stream(rx, 3), None);
        assert!(futures_poll(&mut filling).is_pending());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            responses.sweep(Instant::now()),
            Sweep {
                revoked: 0,
                stalled: 0,
                live: 2
            }
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            responses.sweep(Instant::now()),
            Sweep {
                revoked: 1,
                stalled: 1,
                live: 1
            }
        );
        assert!(matches!(
            idle.frame().await,
            Some(Err(ResponseError::Stalled(_)))
        ));
        tx.send(Ok(Bytes::from_static(b"xyz"))).await.unwrap();
        let data = filling.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&data[..], b"xyz");
        drop(idle);
        drop(filling);
        assert_eq!(responses.sweep(Instant::now()), Sweep::default());
    }

    #[tokio::test]
    async fn large_frames_go_out_in_pieces_with_their_length() {
        let responses = Responses::new(Duration::from_secs(10));
        let data = Bytes::from(vec![7u8; 3 * PROGRESS_PIECE + 5]);
        let mut body = responses.watch(Body::full(data.clone()), None);
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let mut pieces = Vec::new();
        while let Some(frame) = body.frame().await {
            let piece = frame.unwrap().into_data().unwrap();
            assert!(piece.len() <= PROGRESS_PIECE);
            pieces.push(piece);
            let sent: usize = pieces.iter().map(Bytes::len).sum();
            assert_eq!(body.size_hint().exact(), Some((data.len() - sent) as u64));
        }
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.concat(), data.to_vec());
        assert!(body.is_end_stream());
    }

    #[test]
    fn a_busy_connection_forgets_finished_responses_between_sweeps() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let responses = Responses::new(Duration::from_secs(10));
        let live: Vec<_> = (0..10)
            .map(|_| responses.watch(Body::empty(), None))
            .collect();
        for _ in 0..10_000 {
            drop(responses.watch(Body::empty(), None));
        }
        let len = responses.bodies.lock().unwrap().list.len();
        assert!(len <= 128, "{len} entries kept");
        drop(live);
    }

    fn futures_poll(body: &mut WatchedBody) -> Poll<Option<Result<Frame<Bytes>, ResponseError>>> {
        Pin::new(body).poll_frame(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_times_out_and_one_that_reads_does_not() {
        // A 64 KiB pipe: writing 1 MiB fills it and then waits for the reader.
        let (ours, theirs) = tokio::io::duplex(64 << 10);
        let mut guarded = StallGuard::new(ours, Duration::from_secs(60));
        let data = vec![7u8; 1 << 20];
        let err = guarded.write_all(&data).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(theirs); // Alive (and not reading) until here.

        // A slow reader that keeps making progress is never cut off, however long it takes.
        let (ours, mut slow) = tokio::io::duplex(64 << 10);
        let mut guarded = StallGuard::new(ours, Duration::from_secs(60));
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 32 << 10];
            let mut total = 0;
            while total < (1 << 20) {
                tokio::time::sleep(Duration::from_secs(30)).await;
                total += slow.read(&mut buf).await.unwrap();
            }
            total
        });
        guarded.write_all(&data).await.unwrap();
        guarded.flush().await.unwrap();
        assert_eq!(reader.await.unwrap(), 1 << 20);
    }
}
