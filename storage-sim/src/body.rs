//! Response bodies, whole or shaped by faults (bandwidth cap, stall, truncation).
//!
//! A shaped body is fed by a small producer task through a one-slot channel, so a slow or
//! stalled body holds no more than one slice in memory. Producers stop when the client goes
//! away (the channel closes) or the node is kicked (goes offline or shuts down), in which case
//! the body ends with an error and the connection is aborted rather than left hanging.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{mpsc, watch};

use crate::faults::NodeFaults;

/// The body of every response of a simulated node.
#[derive(Debug)]
pub enum SimBody {
    /// The whole body at once.
    Full(Option<Bytes>),
    /// Slices produced over time; an `Err` aborts the response.
    Stream(mpsc::Receiver<Result<Bytes, io::Error>>),
}

impl SimBody {
    pub(crate) fn full(bytes: Bytes) -> Self {
        SimBody::Full(Some(bytes))
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            SimBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            SimBody::Stream(rx) => rx
                .poll_recv(cx)
                .map(|next| next.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, SimBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            SimBody::Full(None) => SizeHint::with_exact(0),
            SimBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// Slices of a throttled body are sent every 1/20 s.
const SLICES_PER_SECOND: u64 = 20;

/// Turn a whole body into one shaped by `faults` (bandwidth, stall, truncate). Must be called
/// within a Tokio runtime. The caller sets `Content-Length` to the full length.
pub(crate) fn shape(body: Bytes, faults: &NodeFaults, kick: watch::Receiver<u64>) -> SimBody {
    if !faults.shapes_body() {
        return SimBody::full(body);
    }
    let (tx, rx) = mpsc::channel(1);
    let stall = faults.stall;
    let truncate = faults.truncate;
    let bandwidth = faults.bandwidth_bytes_per_sec;
    tokio::spawn(produce(body, stall, truncate, bandwidth, tx, kick));
    SimBody::Stream(rx)
}

async fn produce(
    body: Bytes,
    stall: bool,
    truncate: bool,
    bandwidth: Option<u64>,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    mut kick: watch::Receiver<u64>,
) {
    kick.borrow_and_update();
    let end = if stall {
        0
    } else if truncate {
        body.len() / 2
    } else {
        body.len()
    };
    let slice = match bandwidth {
        Some(bps) => usize::try_from((bps / SLICES_PER_SECOND).max(1)).unwrap_or(usize::MAX),
        None => end.max(1),
    };
    let mut offset = 0;
    while offset < end {
        let next = (offset + slice).min(end);
        if let Some(bps) = bandwidth {
            let pause = Duration::from_secs_f64((next - offset) as f64 / bps as f64);
            if !wait(tokio::time::sleep(pause), &tx, &mut kick).await {
                let _ = tx.try_send(Err(aborted("node went offline")));
                return;
            }
        }
        if tx.send(Ok(body.slice(offset..next))).await.is_err() {
            return;
        }
        offset = next;
    }
    if stall {
        // Silence until the client gives up or the node goes away.
        if !wait(std::future::pending::<()>(), &tx, &mut kick).await {
            let _ = tx.try_send(Err(aborted("node went offline")));
        }
    } else if truncate {
        let _ = tx.send(Err(aborted("simulated truncation"))).await;
    }
}

/// Run `fut` unless the client leaves or the node is kicked first; true if `fut` completed.
async fn wait(
    fut: impl std::future::Future<Output = ()>,
    tx: &mpsc::Sender<Result<Bytes, io::Error>>,
    kick: &mut watch::Receiver<u64>,
) -> bool {
    tokio::select! {
        () = fut => true,
        () = tx.closed() => false,
        _ = kick.changed() => false,
    }
}

fn aborted(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, why)
}
