//! A connection whose writes make no progress for too long is closed: a client that stops
//! reading (or a peer that vanished without a FIN) would otherwise hold its connection, its
//! request slot and its response buffers for as long as the kernel keeps the socket.
//!
//! [`StallGuard`] wraps a TCP stream (below TLS, so it sees the real socket). A write or flush
//! that stays pending for [`WRITE_STALL_TIMEOUT`] fails with `TimedOut`, which ends the
//! connection; every write that makes progress resets the clock. Reads pass through untouched
//! (idle keep-alive connections are bounded by the connection limit and header timeouts).
//! HTTP/3 applies the same bound (`GatewayConfig::write_stall_timeout`) per stream.

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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
