//! Deadlines on what a client sends: request bodies ([`TimedBody`]) and the life of a
//! connection between requests ([`Activity`]).
//!
//! Every request body a transport hands to [`crate::api::Api::handle`] is wrapped in a
//! [`TimedBody`], so the upload, admin and inference readers are bounded without knowing it: a
//! body that delivers nothing for `body_timeout` while it is being read, or is not complete
//! `body_total_timeout` after its first read, fails with [`BodyTimeout`], which those readers
//! answer with 400 (and the request's slot and buffers are freed). Only time spent waiting for
//! the client counts towards the idle bound, not time the reader spends with what it has.
//!
//! [`Activity`] tracks the requests in flight on one connection, so its owner can close a
//! connection that sent no first request in time, or that has been idle for the idle timeout.

use crate::telemetry::Telemetry;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bounds of a request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadlines {
    /// Longest wait for the next byte.
    pub idle: Duration,
    /// Longest time from the first read to the end of the body.
    pub total: Duration,
}

/// Why a request body was cut.
#[derive(Debug, thiserror::Error)]
pub enum BodyTimeout {
    #[error("the request body sent nothing for {0:?}")]
    Idle(Duration),
    #[error("the request body was not complete within {0:?}")]
    Total(Duration),
}

impl BodyTimeout {
    fn kind(&self) -> &'static str {
        match self {
            BodyTimeout::Idle(_) => "body_idle",
            BodyTimeout::Total(_) => "body_total",
        }
    }
}

/// A request body with [`BodyDeadlines`].
pub struct TimedBody<B> {
    inner: B,
    limits: BodyDeadlines,
    telemetry: Option<Arc<Telemetry>>,
    /// The first read.
    started: Option<Instant>,
    /// Since when the reader has been waiting for the client (`None`: it is not).
    waiting: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    failed: bool,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, limits: BodyDeadlines, telemetry: Option<Arc<Telemetry>>) -> Self {
        Self {
            inner,
            limits,
            telemetry,
            started: None,
            waiting: None,
            timer: None,
            failed: false,
        }
    }

    fn fail(&mut self, timeout: BodyTimeout) -> Poll<Option<Result<Frame<B::Data>, BoxError>>>
    where
        B: HttpBody,
    {
        self.failed = true;
        tracing::debug!(error = %timeout, "request body cut");
        if let Some(telemetry) = &self.telemetry {
            telemetry.deadline(timeout.kind());
        }
        Poll::Ready(Some(Err(Box::new(timeout))))
    }
}

impl<B> HttpBody for TimedBody<B>
where
    B: HttpBody + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        let now = Instant::now();
        let total_at = *this.started.get_or_insert(now) + this.limits.total;
        if now >= total_at {
            return this.fail(BodyTimeout::Total(this.limits.total));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = None;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let idle_at = *this.waiting.get_or_insert(now) + this.limits.idle;
        let (at, timeout) = if idle_at <= total_at {
            (idle_at, BodyTimeout::Idle(this.limits.idle))
        } else {
            (total_at, BodyTimeout::Total(this.limits.total))
        };
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => this.fail(timeout),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The requests in flight on one connection, and when it was last busy.
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `opened` when the last request ended.
    last_ms: AtomicU64,
}

/// One request in flight; dropping it ends the request (its response body is gone).
pub struct InFlight(Arc<Activity>);

/// Where a connection stands between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// A request is being answered.
    Busy,
    /// No request yet, for this long.
    NoRequestYet(Duration),
    /// No request in flight, for this long.
    Since(Duration),
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    /// A request starts.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Requests being answered (handlers and response bodies).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn idle(&self, now: Instant) -> Idle {
        if self.in_flight() > 0 {
            return Idle::Busy;
        }
        let open = now.saturating_duration_since(self.opened);
        if self.requests.load(Ordering::Relaxed) == 0 {
            return Idle::NoRequestYet(open);
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        Idle::Since(open.saturating_sub(last))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let at = Instant::now().saturating_duration_since(self.0.opened);
        self.0
            .last_ms
            .store(at.as_millis() as u64, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;

    fn limits() -> BodyDeadlines {
        BodyDeadlines {
            idle: Duration::from_secs(15),
            total: Duration::from_secs(60),
        }
    }

    type Chunk = Result<Frame<Bytes>, std::io::Error>;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_sending_is_cut_after_the_idle_bound() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
        let mut body = TimedBody::new(ChannelBody(rx), limits(), None);
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("sent nothing"), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_cut_by_the_total_bound() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
        let mut body = TimedBody::new(ChannelBody(rx), limits(), None);
        let sender = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if tx
                    .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let started = Instant::now();
        let err = loop {
            match body.frame().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => break e,
                None => panic!("the trickle ended"),
            }
        };
        assert!(err.to_string().contains("not complete"), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        drop(body);
        sender.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn connections_know_when_they_were_last_busy() {
        let activity = Activity::new();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(
            activity.idle(Instant::now()),
            Idle::NoRequestYet(Duration::from_secs(3))
        );
        let request = activity.begin();
        assert_eq!(activity.idle(Instant::now()), Idle::Busy);
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(request);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            activity.idle(Instant::now()),
            Idle::Since(Duration::from_secs(4))
        );
    }

    /// A request body fed through a channel.
    struct ChannelBody(tokio::sync::mpsc::Receiver<Chunk>);

    impl HttpBody for ChannelBody {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
            self.0.poll_recv(cx)
        }
    }
}
