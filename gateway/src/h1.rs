//! A lean HTTP/1.1 server for the plain listener's bodiless requests (`GET`, `HEAD`), the bulk of
//! a gateway's traffic, in front of hyper for everything else.
//!
//! Why it exists: a cached blob over plain TCP can go from a sealed memory file to the socket
//! with `sendfile` ([`crate::memfile`]), so the serving CPU never copies its bytes (up to
//! [`SENDFILE_MAX`]), and small hits go out as one `writev` of head and body. A disk-tier hit
//! is read chunk by chunk into its reader's reused buffer, checked there, and written from it
//! (`Connection::send_disk`), with no task, channel or allocation between file and socket.
//! hyper owns its socket and cannot do any of these.
//!
//! What it does: parse a request head (`httparse`), answer it with the same [`Api`] every
//! other listener uses (so routes, headers, ranges, limits and metrics are defined once), and
//! write the response: `Content-Length` framing (chunked only if a body's length is unknown),
//! `Date`, `Connection: close` when either side ends the connection, keep-alive and pipelining.
//! The same bounds as hyper's apply: a request head must arrive within the header timeout, and
//! a write that makes no progress for the write-stall timeout ends the connection.
//!
//! What it hands over: the HTTP/2 preface (h2c), requests with a body or `Expect`/`Upgrade`,
//! HTTP/1.0, and heads it cannot parse or that exceed [`MAX_HEAD`] go to hyper, on the same
//! connection, with the bytes already read replayed ([`Rewind`]). Hyper then serves the
//! connection to its end and answers malformed input exactly as before (400, 431, ...). The
//! preface switches to HTTP/2 only as a connection's first bytes: after a request, the
//! connection goes to hyper's HTTP/1.1 alone ([`Rewind::after_request`]), which refuses it.

use crate::access_log::Exchange;
use crate::api::body::{Body, FileRange};
use crate::api::{whole_blob_id, Api, DiskHit, MemoryHit, WHOLE_GET_VARIES};
use crate::fairness::Share;
use crate::telemetry::Telemetry;
use bytes::{Buf, Bytes, BytesMut};
use codec::BlobId;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Longest request head read here; a longer one goes to hyper (which answers 431).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most request headers parsed here; more go to hyper.
const MAX_HEADERS: usize = 64;
/// At most this many buffers per `writev`.
const MAX_IOVECS: usize = 64;
/// Written bytes gathered before a `writev` of a response whose frames are all at hand.
const GATHER: usize = 1 << 20;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Memory-file ranges up to this long go out with `sendfile`; longer ones are written from the
/// mapping (a copy on this core). Measured on loopback with 64 connections (BENCHMARKS.md):
/// `sendfile` wins at 1 MiB (4.1-5.2 against 3.8-4.0 GB/s) and loses from 2 MiB up (2.8 against
/// 4.1 GB/s at 2 MiB, 1.8 against 3.1 at 64 MiB): the reader's copy then comes from pages no
/// longer in cache, and copying here splits that memory traffic across two cores.
const SENDFILE_MAX: u64 = 1 << 20;

/// The head of a lane's `200`: status line, `headers`, per-connection headers.
fn lane_head(headers: &http::HeaderMap, settings: &Settings, keep_alive: bool) -> Bytes {
    let mut head = BytesMut::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    for (name, value) in headers {
        put_header(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(alt_svc) = &settings.alt_svc {
        put_header(&mut head, b"alt-svc", alt_svc.as_bytes());
    }
    end_head(&mut head, true, keep_alive);
    head.freeze()
}

/// A whole-blob `GET` answered by one of the lanes, without building a request: a memory hit,
/// or a disk hit (its headers and its checked-chunk body).
enum LaneHit {
    Memory(MemoryHit),
    Disk(DiskHit),
}

/// Connection-wide settings.
pub struct Settings {
    /// The client, for the access log.
    pub peer: std::net::SocketAddr,
    /// A request head (or the first byte of the next one on a kept-alive connection) must
    /// arrive within this long.
    pub header_read_timeout: Duration,
    /// A write that makes no progress this long ends the connection.
    pub write_stall_timeout: Duration,
    /// `Alt-Svc` to add to every response (HTTP/3 advertisement).
    pub alt_svc: Option<HeaderValue>,
    /// Counts the connections the header timeout closes.
    pub telemetry: Arc<Telemetry>,
}

/// How a connection left this server.
pub enum Outcome {
    /// Closed: by the client, after `Connection: close`, on shutdown, a timeout or an error.
    Closed,
    /// A request this server leaves to hyper: serve the rest of the connection with hyper,
    /// starting with the replayed bytes.
    HandOff(Rewind),
}

/// Serve `stream` until it closes or needs hyper. Checks `stop` between requests: once it is
/// true, the connection closes after the response in progress. `share` is the connection's
/// share of the request slots ([`crate::fairness`]).
pub async fn serve(
    stream: TcpStream,
    api: &Api,
    settings: &Settings,
    stop: &watch::Receiver<bool>,
    share: &Share,
) -> Outcome {
    let mut conn = Connection {
        stream,
        buf: BytesMut::with_capacity(4096),
        timer: Box::pin(tokio::time::sleep(settings.header_read_timeout)),
        stop: Box::pin({
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|stop| *stop).await;
            }
        }),
        served: false,
    };
    loop {
        let head = conn.next_head(settings).await;
        let started = Instant::now();
        let (request, close) = match head {
            Next::Request(request, close) => (request, close),
            Next::WholeGet(id, close, len) => {
                let lane = match api.memory_hit(&id, Some(share)).await {
                    Some(hit) => Some(LaneHit::Memory(hit)),
                    None => api.disk_hit(&id, Some(share)).map(LaneHit::Disk),
                };
                match lane {
                    None => match conn.take_request(len) {
                        Some(request) => (request, close),
                        None => return Outcome::HandOff(conn.into_rewind()),
                    },
                    Some(hit) => {
                        let mut exchange = Exchange::blob_get(
                            &settings.telemetry,
                            started,
                            Some(settings.peer.ip()),
                            id,
                            || referer_and_agent(&conn.buf[..len]),
                        );
                        match &hit {
                            LaneHit::Memory(_) => exchange.memory_hit(),
                            LaneHit::Disk(hit) => exchange.respond(200, hit.headers()),
                        }
                        conn.buf.advance(len);
                        conn.served = true;
                        let keep_alive = !close && !*stop.borrow();
                        let mut sent = 0;
                        let written = conn
                            .write_lane_hit(hit, settings, keep_alive, &mut sent)
                            .await;
                        if !conn.finish(exchange, sent, written, keep_alive).await {
                            return Outcome::Closed;
                        }
                        continue;
                    }
                }
            }
            Next::Closed => return Outcome::Closed,
            Next::HandOff => return Outcome::HandOff(conn.into_rewind()),
        };
        conn.served = true;
        let head_only = request.method() == Method::HEAD;
        let mut request = request;
        request.extensions_mut().insert(share.clone());
        let mut exchange = Exchange::start(
            &settings.telemetry,
            started,
            Some(settings.peer.ip()),
            request.method(),
            request.uri(),
            request.version(),
            request.headers(),
        );
        // Every request the memory-hit lane could answer was offered to it above.
        let Ok(mut response) = api.dispatch(request).await;
        exchange.respond(response.status().as_u16(), response.headers());
        if let Some(alt_svc) = &settings.alt_svc {
            response
                .headers_mut()
                .insert(header::ALT_SVC, alt_svc.clone());
        }
        let keep_alive = !close && !*stop.borrow();
        let mut sent = 0;
        let written = conn
            .write_response(
                response,
                head_only,
                keep_alive,
                settings.write_stall_timeout,
                &mut sent,
            )
            .await;
        if !conn.finish(exchange, sent, written, keep_alive).await {
            return Outcome::Closed;
        }
    }
}

enum Next {
    /// A request, and whether the client asked to close after it.
    Request(Request<http_body_util::Empty<Bytes>>, bool),
    /// A whole-blob `GET` that may be a memory hit; its head is still in the buffer (`usize`
    /// bytes), to be parsed in full if it is not.
    WholeGet(BlobId, bool, usize),
    Closed,
    HandOff,
}

struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet consumed (the rest of a pipelined request stream).
    buf: BytesMut,
    /// Fires at the earliest moment the header timeout may have run out (see `next_head`).
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Resolves once the server shuts down.
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// A request was answered on this connection (the HTTP/2 preface is no longer valid).
    served: bool,
}

impl Connection {
    /// Read until a whole request head is buffered, then parse it.
    async fn next_head(&mut self, settings: &Settings) -> Next {
        let timeout = settings.header_read_timeout;
        let first = !self.served;
        // One timer and one shutdown watch per connection, polled by every wait, instead of a
        // timer entry and a watch registration per request: the clock is read per request,
        // the timer wheel touched about once per `timeout`.
        let started = Instant::now();
        loop {
            if !self.buf.is_empty() {
                if first && starts_like(&self.buf, H2_PREFACE) {
                    if self.buf.len() >= H2_PREFACE.len() {
                        return Next::HandOff;
                    }
                } else {
                    match parse(&self.buf) {
                        Parsed::Request(request, close, len) => {
                            self.buf.advance(len);
                            return Next::Request(request, close);
                        }
                        Parsed::WholeGet(id, close, len) => return Next::WholeGet(id, close, len),
                        Parsed::Partial if self.buf.len() < MAX_HEAD => {}
                        Parsed::Partial | Parsed::HandOff => return Next::HandOff,
                    }
                }
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            let idle = self.buf.is_empty();
            tokio::select! {
                read = self.stream.read_buf(&mut self.buf) => match read {
                    Ok(0) | Err(_) => return Next::Closed,
                    Ok(_) => {}
                },
                () = self.timer.as_mut() => {
                    if started.elapsed() >= timeout {
                        tracing::debug!("no request head within the header timeout; closing");
                        settings.telemetry.deadline(if self.buf.is_empty() {
                            if first { "first_request" } else { "idle" }
                        } else {
                            "request_head"
                        });
                        return Next::Closed;
                    }
                    self.timer.as_mut().reset((started + timeout).into());
                }
                () = self.stop.as_mut(), if idle => return Next::Closed,
            }
        }
    }

    /// After a response: log it (`sent` body bytes; completed if the write succeeded), then
    /// [`Self::carry_on`].
    async fn finish(
        &mut self,
        mut exchange: Exchange,
        sent: u64,
        written: io::Result<()>,
        keep_alive: bool,
    ) -> bool {
        exchange.sent(sent);
        if written.is_ok() {
            exchange.completed();
        }
        // The log line is written before the connection shuts down or reads on.
        drop(exchange);
        self.carry_on(written, keep_alive).await
    }

    /// After a response: whether to read the next request. A failed write, or a connection
    /// either side asked to close (then shut down cleanly), ends here.
    async fn carry_on(&mut self, written: io::Result<()>, keep_alive: bool) -> bool {
        if let Err(e) = written {
            tracing::debug!(error = %e, "response aborted; closing the connection");
            return false;
        }
        if !keep_alive {
            let _ = self.stream.shutdown().await;
        }
        keep_alive
    }

    /// The full request of the `len`-byte head at the front of the buffer (consumed).
    fn take_request(&mut self, len: usize) -> Option<Request<http_body_util::Empty<Bytes>>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(&self.buf[..len]).ok()?;
        // Only a plain GET is parsed as `WholeGet`.
        let request = build(Method::GET, req.path?, req.headers)?;
        self.buf.advance(len);
        Some(request)
    }

    /// A `200` from one of the whole-blob lanes (memory or disk): status line, the hit's
    /// headers, per-connection headers, then its body.
    async fn write_lane_hit(
        &mut self,
        hit: LaneHit,
        settings: &Settings,
        keep_alive: bool,
        sent: &mut u64,
    ) -> io::Result<()> {
        let (head, mut body) = match hit {
            LaneHit::Memory(mut hit) => {
                let body = std::mem::replace(&mut hit.body, Body::empty());
                (lane_head(hit.headers(), settings, keep_alive), body)
            }
            LaneHit::Disk(mut hit) => {
                let body = std::mem::replace(&mut hit.body, Body::empty());
                (lane_head(hit.headers(), settings, keep_alive), body)
            }
        };
        self.write_body(head, &mut body, false, settings.write_stall_timeout, sent)
            .await
    }

    fn into_rewind(self) -> Rewind {
        Rewind {
            prefix: self.buf.freeze(),
            stream: self.stream,
            after_request: self.served,
        }
    }

    async fn write_response(
        &mut self,
        response: Response<Body>,
        head_only: bool,
        keep_alive: bool,
        stall: Duration,
        sent: &mut u64,
    ) -> io::Result<()> {
        let (parts, mut body) = response.into_parts();
        let status = parts.status;
        let no_body = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        // A HEAD answer keeps the length the handler declared, else its body's (as hyper
        // does); otherwise a body's own exact length wins, so the framing matches what is sent.
        let length = if no_body {
            None
        } else if head_only {
            declared.or(body.size_hint().exact())
        } else {
            body.size_hint().exact().or(declared)
        };
        let chunked = !no_body && !head_only && length.is_none();
        let mut head = BytesMut::with_capacity(512);
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(status.as_str().as_bytes());
        head.extend_from_slice(b" ");
        head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        head.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            if name == header::CONTENT_LENGTH
                || name == header::TRANSFER_ENCODING
                || name == header::CONNECTION
            {
                continue;
            }
            put_header(&mut head, name.as_str().as_bytes(), value.as_bytes());
        }
        if let Some(length) = length {
            let mut digits = [0u8; 20];
            put_header(&mut head, b"content-length", decimal(length, &mut digits));
        }
        if chunked {
            put_header(&mut head, b"transfer-encoding", b"chunked");
        }
        end_head(
            &mut head,
            !parts.headers.contains_key(header::DATE),
            keep_alive,
        );
        let head = head.freeze();
        if no_body || head_only {
            return self.write_all(vec![head], stall).await;
        }
        self.write_body(head, &mut body, chunked, stall, sent).await
    }

    /// Write `head`, then every byte of `body` (`sendfile` for a memory file), adding the body
    /// bytes handed to the socket to `sent`.
    async fn write_body(
        &mut self,
        head: Bytes,
        body: &mut Body,
        chunked: bool,
        stall: Duration,
        sent: &mut u64,
    ) -> io::Result<()> {
        if let Some(range) = body.take_file(SENDFILE_MAX) {
            let n = range.end - range.start;
            self.send_more(&head, stall).await?;
            self.sendfile(&range, stall).await?;
            body.count_sent(n);
            *sent += n;
            return Ok(());
        }
        if !chunked {
            if let Some(reader) = body.take_disk() {
                return self.send_disk(head, reader, body, stall, sent).await;
            }
        }
        let mut out = vec![head];
        let mut gathered = 0usize;
        loop {
            // Take every frame already at hand; write what was gathered before waiting.
            let next = match poll_now(body) {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    self.write_all(std::mem::take(&mut out), stall).await?;
                    gathered = 0;
                    body.frame().await
                }
            };
            match next {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    gathered += data.len();
                    *sent += data.len() as u64;
                    if chunked {
                        out.push(Bytes::from(format!("{:x}\r\n", data.len())));
                        out.push(data);
                        out.push(Bytes::from_static(b"\r\n"));
                    } else {
                        out.push(data);
                    }
                    if gathered >= GATHER || out.len() >= MAX_IOVECS {
                        self.write_all(std::mem::take(&mut out), stall).await?;
                        gathered = 0;
                    }
                }
                Some(Err(e)) => {
                    // Never end a body that failed cleanly: the connection closes short of
                    // the declared length, so the client knows the blob is partial.
                    self.write_all(out, stall).await?;
                    return Err(io::Error::other(e));
                }
                None => {
                    if chunked {
                        out.push(Bytes::from_static(b"0\r\n\r\n"));
                    }
                    return self.write_all(out, stall).await;
                }
            }
        }
    }

    /// Write `head`, then the range `reader` reads from the disk tier: each chunk is read into the
    /// reader's buffer (on this worker when it is in the page cache, `RWF_NOWAIT`; on the
    /// blocking pool when not), checked against its checksum, and written from that buffer, then
    /// the next. No channel, no task, no allocation per chunk. The head leaves with the first
    /// checked chunk, never before it: a first chunk that fails its check ends the connection
    /// with nothing written (no `200` cut short; the lanes check it before answering at all). A
    /// later chunk that fails is never written: the connection ends short of the declared
    /// length (the file is already quarantined, so the next request refills the blob).
    async fn send_disk(
        &mut self,
        head: Bytes,
        mut reader: crate::disk::DiskReader,
        body: &mut Body,
        stall: Duration,
        sent: &mut u64,
    ) -> io::Result<()> {
        use crate::disk::Fill;
        let mut head = Some(head);
        loop {
            let mut fill = reader.fill(false);
            if matches!(fill, Ok(Fill::WouldBlock)) {
                match reader.fill_blocking().await {
                    Ok((back, result)) => {
                        reader = back;
                        fill = result;
                    }
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            match fill {
                Ok(Fill::Ready) => {
                    let data = reader.ready();
                    let n = data.len() as u64;
                    match head.take() {
                        Some(head) => self.write_pair(&head, data, stall).await?,
                        None => self.write_pair(&[], data, stall).await?,
                    }
                    reader.consume();
                    body.count_sent(n);
                    *sent += n;
                }
                Ok(Fill::End) => {
                    if let Some(head) = head.take() {
                        self.write_pair(&head, &[], stall).await?;
                    }
                    return Ok(());
                }
                Ok(Fill::WouldBlock) => {
                    return Err(io::Error::other("a waiting disk read did not complete"))
                }
                // The body stays short; or, when this was the first chunk, nothing was sent.
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }

    /// Write `first` then `second` (either may be empty), with `writev` while both remain.
    async fn write_pair(&mut self, first: &[u8], second: &[u8], stall: Duration) -> io::Result<()> {
        let (mut a, mut b) = (0, 0);
        let stream = &self.stream;
        while a < first.len() || b < second.len() {
            let n = writing(stream, stall, || {
                if a < first.len() {
                    stream.try_write_vectored(&[
                        IoSlice::new(&first[a..]),
                        IoSlice::new(&second[b..]),
                    ])
                } else {
                    stream.try_write(&second[b..])
                }
            })
            .await?;
            let to_first = n.min(first.len() - a);
            a += to_first;
            b += n - to_first;
        }
        Ok(())
    }

    /// Write every buffer, in order.
    async fn write_all(&mut self, mut bufs: Vec<Bytes>, stall: Duration) -> io::Result<()> {
        let mut first = 0;
        while first < bufs.len() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = (bufs.len() - first).min(MAX_IOVECS);
            for (slice, buf) in slices.iter_mut().zip(&bufs[first..first + count]) {
                *slice = IoSlice::new(buf);
            }
            let stream = &self.stream;
            let mut n = writing(stream, stall, || {
                stream.try_write_vectored(&slices[..count])
            })
            .await?;
            while n > 0 {
                let len = bufs[first].len();
                if n >= len {
                    n -= len;
                    first += 1;
                } else {
                    bufs[first].advance(n);
                    n = 0;
                }
            }
            while first < bufs.len() && bufs[first].is_empty() {
                first += 1;
            }
        }
        Ok(())
    }

    /// Send `head` with `MSG_MORE`: held back to leave with the first bytes of the body.
    async fn send_more(&mut self, head: &[u8], stall: Duration) -> io::Result<()> {
        let mut sent = 0;
        let stream = &self.stream;
        while sent < head.len() {
            sent += writing(stream, stall, || {
                stream.try_io(Interest::WRITABLE, || {
                    rustix::net::send(stream, &head[sent..], rustix::net::SendFlags::MORE)
                        .map_err(io::Error::from)
                })
            })
            .await?;
        }
        Ok(())
    }

    /// `sendfile` bytes `[start, end)` of a memory file.
    async fn sendfile(&mut self, range: &FileRange, stall: Duration) -> io::Result<()> {
        let mut offset = range.start;
        let stream = &self.stream;
        let file = range.file.file();
        while offset < range.end {
            let count = usize::try_from(range.end - offset)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            let n = writing(stream, stall, || {
                stream.try_io(Interest::WRITABLE, || {
                    let mut at = offset;
                    rustix::fs::sendfile(stream, file, Some(&mut at), count)
                        .map_err(io::Error::from)
                })
            })
            .await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the memory file ended early",
                ));
            }
            offset += n as u64;
        }
        Ok(())
    }
}

/// The body's next frame if it is at hand, without waiting (or registering a waker).
fn poll_now(
    body: &mut Body,
) -> Poll<Option<Result<hyper::body::Frame<Bytes>, crate::api::body::BodyError>>> {
    Pin::new(body).poll_frame(&mut Context::from_waker(Waker::noop()))
}

/// Run a non-blocking write until it makes progress, waiting for writability in between; fails
/// with `TimedOut` once a wait exceeds `stall`. Each call spends coop budget, so one fast
/// client cannot keep the worker from other connections.
async fn writing(
    stream: &TcpStream,
    stall: Duration,
    mut op: impl FnMut() -> io::Result<usize>,
) -> io::Result<usize> {
    tokio::task::coop::consume_budget().await;
    loop {
        match op() {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout(stall, stream.writable()).await {
                    Ok(ready) => ready?,
                    Err(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the peer read nothing for {stall:?}"),
                        ))
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

enum Parsed {
    /// A request, whether it asked to close, and the length of its head.
    Request(Request<http_body_util::Empty<Bytes>>, bool, usize),
    /// `GET /v1/blobs/{id}` with nothing that changes the whole-blob answer (no `Range`,
    /// `If-None-Match`, `Accept`, `Content-Type`): may be a memory hit.
    WholeGet(BlobId, bool, usize),
    Partial,
    HandOff,
}

/// Parse one request head from `buf`; anything beyond a bodiless HTTP/1.1 `GET` or `HEAD` this
/// server can represent exactly is left to hyper.
fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::HandOff,
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::HandOff,
    };
    if req.version != Some(1) {
        return Parsed::HandOff;
    }
    let Some(path) = req.path else {
        return Parsed::HandOff;
    };
    // One pass over the headers: what must go to hyper, whether to close, and whether anything
    // changes a whole-blob answer (which rules out the memory-hit lane).
    let mut close = false;
    let mut plain = method == Method::GET;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            if h.value.trim_ascii() != b"0" {
                return Parsed::HandOff;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Parsed::HandOff;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::HandOff;
                }
            }
        } else if WHOLE_GET_VARIES
            .iter()
            .any(|varies| name.eq_ignore_ascii_case(varies.as_bytes()))
        {
            plain = false;
        }
    }
    if plain {
        if let Some(id) = Some(path)
            .filter(|path| !path.contains(['?', '#']))
            .and_then(whole_blob_id)
        {
            return Parsed::WholeGet(id, close, len);
        }
    }
    match build(method, path, req.headers) {
        Some(request) => Parsed::Request(request, close, len),
        None => Parsed::HandOff,
    }
}

/// The request `Api::dispatch` takes; `None` if hyper would read it differently.
fn build(
    method: Method,
    path: &str,
    headers: &[httparse::Header<'_>],
) -> Option<Request<http_body_util::Empty<Bytes>>> {
    let uri = path.parse::<Uri>().ok()?;
    let mut request = Request::new(http_body_util::Empty::new());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let map = request.headers_mut();
    map.reserve(headers.len());
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        map.append(name, value);
    }
    Some(request)
}

/// `Referer` and `User-Agent` of a complete request head (for the access log of the memory-hit
/// lane, which keeps no header map).
fn referer_and_agent(head: &[u8]) -> (Option<HeaderValue>, Option<HeaderValue>) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let (mut referer, mut agent) = (None, None);
    if req.parse(head).is_ok() {
        for h in req.headers.iter() {
            let slot = if h.name.eq_ignore_ascii_case("referer") {
                &mut referer
            } else if h.name.eq_ignore_ascii_case("user-agent") {
                &mut agent
            } else {
                continue;
            };
            *slot = HeaderValue::from_bytes(h.value).ok();
        }
    }
    (referer, agent)
}

/// Whether `buf` is a prefix of `pattern` or starts with it.
fn starts_like(buf: &[u8], pattern: &[u8]) -> bool {
    let n = buf.len().min(pattern.len());
    buf[..n] == pattern[..n]
}

/// The headers every response gets here (`Date` unless the handler set one, `Connection:
/// close` when the connection ends after it), then the blank line.
fn end_head(head: &mut BytesMut, date: bool, keep_alive: bool) {
    if date {
        with_date(|date| put_header(head, b"date", date));
    }
    if !keep_alive {
        put_header(head, b"connection", b"close");
    }
    head.extend_from_slice(b"\r\n");
}

fn put_header(head: &mut BytesMut, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// The `Date` value, formatted once per second per thread.
fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut date = cell.borrow_mut();
        if date.0 != secs {
            *date = (secs, httpdate::fmt_http_date(now));
        }
        f(date.1.as_bytes())
    })
}

/// A connection handed to hyper: the bytes this server read first, then the socket.
pub struct Rewind {
    prefix: Bytes,
    stream: TcpStream,
    after_request: bool,
}

impl Rewind {
    /// Whether this server answered a request on the connection before handing it over: hyper
    /// must then serve it as HTTP/1.1 only (an HTTP/2 preface is valid only as a connection's
    /// first bytes, and is refused after a request, as hyper's own HTTP/1.1 server does).
    pub fn after_request(&self) -> bool {
        self.after_request
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &[u8]) -> Parsed {
        parse(raw)
    }

    #[test]
    fn bodiless_get_and_head_are_served_here() {
        let Parsed::Request(req, close, len) =
            parsed(b"GET /v1/blobs/x?a=1 HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\n\r\nGET /next")
        else {
            panic!("expected a request");
        };
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/v1/blobs/x");
        assert_eq!(req.uri().query(), Some("a=1"));
        assert_eq!(req.headers()["range"], "bytes=0-1");
        assert!(!close);
        assert_eq!(len, 59);
        let Parsed::Request(req, close, _) = parsed(
            b"HEAD / HTTP/1.1\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
        ) else {
            panic!("expected a request");
        };
        assert_eq!(req.method(), Method::HEAD);
        assert!(close);
    }

    #[test]
    fn only_plain_whole_blob_gets_take_the_memory_lane() {
        let id = BlobId([7; 32]);
        let raw = format!("GET /v1/blobs/{id} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(
            matches!(parsed(raw.as_bytes()), Parsed::WholeGet(got, false, len) if got == id && len == raw.len())
        );
        let closing = format!("GET /v1/blobs/{id} HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(matches!(
            parsed(closing.as_bytes()),
            Parsed::WholeGet(_, true, _)
        ));
        for other in [
            format!("HEAD /v1/blobs/{id} HTTP/1.1\r\n\r\n"),
            format!("GET /v1/blobs/{id}?x=1 HTTP/1.1\r\n\r\n"),
            format!("GET /v1/blobs/{id}/metadata HTTP/1.1\r\n\r\n"),
            format!("GET /v1/blobs/{id} HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n"),
            format!("GET /v1/blobs/{id} HTTP/1.1\r\nIf-None-Match: x\r\n\r\n"),
            format!("GET /v1/blobs/{id} HTTP/1.1\r\naccept: a/b\r\n\r\n"),
            format!("GET /v1/blobs/{id} HTTP/1.1\r\nContent-Type: a/b\r\n\r\n"),
            "GET /v1/blobs/not-an-id HTTP/1.1\r\n\r\n".to_owned(),
        ] {
            assert!(
                matches!(parsed(other.as_bytes()), Parsed::Request(..)),
                "{other:?} takes the general path"
            );
        }
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for raw in [
            &b"PUT /v1/blobs HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"POST /v1/inference/x HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00",
        ] {
            assert!(
                matches!(parsed(raw), Parsed::HandOff),
                "{:?} should go to hyper",
                String::from_utf8_lossy(raw)
            );
        }
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parsed(&many), Parsed::HandOff));
    }

    #[test]
    fn decimal_lengths() {
        let mut buf = [0u8; 20];
        for n in [0, 7, 10, 4096, 1 << 20, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert!(matches!(parsed(b"GET /v1/blo"), Parsed::Partial));
        assert!(matches!(
            parsed(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        ));
        assert!(starts_like(b"PRI * HT", H2_PREFACE));
        assert!(starts_like(H2_PREFACE, H2_PREFACE));
        assert!(!starts_like(b"GET", H2_PREFACE));
    }
}

/// Fuzz-style property tests of [`parse`], the lean server's reading of untrusted request heads:
/// random bytes and heads built from a grammar of the requests clients send (and the shapes that
/// smuggle or confuse), then mutated. What a head parses to must be something hyper would read
/// the same way, or a hand-off to hyper; never a panic.
#[cfg(test)]
mod fuzz {
    use super::*;
    use fuzzkit::{mutated, Edits, Mutation};
    use proptest::prelude::*;

    fn method() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            8 => prop::sample::select(vec!["GET", "GET", "GET", "HEAD"]),
            1 => prop::sample::select(vec!["POST", "PUT", "get", "OPTIONS", "PRI", "G ET", ""]),
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        let id = any::<[u8; 32]>().prop_map(|b| BlobId(b).to_string());
        prop_oneof![
            4 => id.clone().prop_map(|id| format!("/v1/blobs/{id}")),
            1 => id.clone().prop_map(|id| format!("/v1/blobs/{id}?x=1")),
            1 => id.clone().prop_map(|id| format!("/v1/blobs/{id}#f")),
            1 => id.clone().prop_map(|id| format!("/v1/blobs/{id}/metadata")),
            1 => id.clone().prop_map(|id| format!("/v1/blobs/{id}/byte-range?start=0&length=1")),
            1 => id.clone().prop_map(|id| format!("/v1/blobs//{id}")),
            1 => id.prop_map(|id| format!("http://h/v1/blobs/{id}")),
            1 => Just("*".to_owned()),
            1 => Just("/".to_owned()),
            1 => "/[ -~]{0,30}",
            1 => "/[\\x00-\\xff]{0,10}",
        ]
    }

    fn version() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            8 => Just("HTTP/1.1"),
            1 => prop::sample::select(vec!["HTTP/1.0", "HTTP/2.0", "http/1.1", "HTTP/1.1 "]),
        ]
    }

    fn header() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec![
            "Host",
            "Connection",
            "connection",
            "Content-Length",
            "Transfer-Encoding",
            "Expect",
            "Upgrade",
            "Range",
            "If-None-Match",
            "Accept",
            "Content-Type",
            "Authorization",
            "X-Forwarded-For",
            "Content-Length ",
            " Host",
            "Bad Header",
            "",
        ]);
        let value = prop::sample::select(vec![
            "",
            "0",
            " 0 ",
            "00",
            "5",
            "-1",
            "0, 0",
            "close",
            "Close",
            "keep-alive, close",
            "Upgrade",
            "upgrade, close",
            "chunked",
            "100-continue",
            "h2c",
            "bytes=0-1",
            "\"x\"",
            "*",
            "text/html",
            "a\x01b",
            "a\x7fb",
            "caf\u{e9}",
            "\t v \t",
        ]);
        (name, value).prop_map(|(n, v)| format!("{n}:{v}"))
    }

    fn line_end() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            16 => Just("\r\n"),
            1 => prop::sample::select(vec!["\n", "\r", "\r\n "]),
        ]
    }

    /// A request head from the grammar above, with its line endings varied.
    fn head() -> impl Strategy<Value = Vec<u8>> {
        (
            method(),
            path(),
            version(),
            prop::collection::vec((header(), line_end()), 0..6),
            line_end(),
            line_end(),
        )
            .prop_map(|(m, p, v, headers, first, last)| {
                let mut out = format!("{m} {p} {v}{first}").into_bytes();
                for (h, end) in headers {
                    out.extend_from_slice(h.as_bytes());
                    out.extend_from_slice(end.as_bytes());
                }
                out.extend_from_slice(last.as_bytes());
                out
            })
    }

    /// Edits of a head: inserted bytes are random or HTTP's own delimiters.
    fn mutation() -> impl Strategy<Value = Mutation> {
        Edits {
            extend: false,
            tokens: b"\r\n :\t\0/?#%",
            max_run: 4,
            ..Edits::default()
        }
        .strategy()
    }

    /// The headers of the complete head at the front of `buf`, as `httparse` reads them.
    fn headers_of(buf: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        assert!(matches!(req.parse(buf), Ok(httparse::Status::Complete(_))));
        req.headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect()
    }

    fn asks_to_close(headers: &[(String, Vec<u8>)]) -> bool {
        headers.iter().any(|(name, value)| {
            name == "connection"
                && value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        })
    }

    /// Everything a head the lean server keeps must satisfy; a hand-off or a partial head has
    /// nothing to check (hyper reads it from the replayed bytes).
    fn check(buf: &[u8]) -> Result<(), TestCaseError> {
        match parse(buf) {
            Parsed::Partial | Parsed::HandOff => {}
            Parsed::Request(request, close, len) => {
                prop_assert!(len <= buf.len());
                prop_assert!(
                    request.method() == Method::GET || request.method() == Method::HEAD,
                    "{:?}",
                    request.method()
                );
                let headers = headers_of(&buf[..len]);
                // Nothing that gives the request a body or changes the protocol stays here.
                for (name, value) in &headers {
                    prop_assert!(
                        !matches!(name.as_str(), "transfer-encoding" | "expect" | "upgrade"),
                        "{name} kept"
                    );
                    if name == "content-length" {
                        prop_assert_eq!(value.trim_ascii(), b"0");
                    }
                }
                prop_assert_eq!(close, asks_to_close(&headers));
                // Every header reaches the handler, in order and unchanged.
                let got: Vec<(String, Vec<u8>)> = request
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                    .collect();
                prop_assert_eq!(got.len(), headers.len());
                check_pipelined(buf, len)?;
            }
            Parsed::WholeGet(id, close, len) => {
                prop_assert!(len <= buf.len());
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                prop_assert!(matches!(
                    req.parse(&buf[..len]),
                    Ok(httparse::Status::Complete(n)) if n == len
                ));
                prop_assert_eq!(req.method, Some("GET"));
                let want = format!("/v1/blobs/{id}");
                prop_assert_eq!(req.path, Some(want.as_str()));
                let owned = headers_of(&buf[..len]);
                for (name, _) in &owned {
                    prop_assert!(
                        !WHOLE_GET_VARIES.contains(&name.as_str()),
                        "{name} changes a whole-blob answer"
                    );
                }
                prop_assert_eq!(close, asks_to_close(&owned));
                // On a miss the same head is read in full (`take_request`): it must build, or
                // a memory hit would answer a request the general path refuses.
                prop_assert!(
                    build(Method::GET, req.path.unwrap_or_default(), req.headers).is_some(),
                    "a memory-lane head that does not build: {:?}",
                    String::from_utf8_lossy(&buf[..len])
                );
                check_pipelined(buf, len)?;
            }
        }
        Ok(())
    }

    /// A kept head reads the same whatever follows it (the next pipelined request), and no
    /// prefix of it is taken for a complete request.
    fn check_pipelined(buf: &[u8], len: usize) -> Result<(), TestCaseError> {
        let alone = &buf[..len];
        let mut followed = alone.to_vec();
        followed.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        let same = match (parse(alone), parse(&followed)) {
            (Parsed::Request(a, c1, l1), Parsed::Request(b, c2, l2)) => {
                a.uri() == b.uri() && c1 == c2 && l1 == l2 && l1 == len
            }
            (Parsed::WholeGet(a, c1, l1), Parsed::WholeGet(b, c2, l2)) => {
                a == b && c1 == c2 && l1 == l2 && l1 == len
            }
            _ => false,
        };
        prop_assert!(same, "{:?}", String::from_utf8_lossy(alone));
        for cut in 0..len {
            prop_assert!(
                matches!(parse(&alone[..cut]), Parsed::Partial | Parsed::HandOff),
                "a {cut}-byte prefix of {:?} parsed as complete",
                String::from_utf8_lossy(alone)
            );
        }
        Ok(())
    }

    /// The grammar reaches every outcome often enough for the properties above to bite.
    #[test]
    fn the_grammar_reaches_every_outcome() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut kept, mut whole, mut handed) = (0, 0, 0);
        for _ in 0..1000 {
            let head = head().new_tree(&mut runner).unwrap().current();
            match parse(&head) {
                Parsed::Request(..) => kept += 1,
                Parsed::WholeGet(..) => whole += 1,
                // Partial heads come from the prefixes `check_pipelined` tries.
                Parsed::HandOff | Parsed::Partial => handed += 1,
            }
        }
        for (what, n) in [
            ("request", kept),
            ("whole get", whole),
            ("hand-off", handed),
        ] {
            assert!(n >= 30, "{what}: {n} of 1000");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn grammar_heads_are_kept_only_when_safe(head in head()) {
            check(&head)?;
        }

        #[test]
        fn mutated_heads_are_kept_only_when_safe(
            head in head(),
            mutations in prop::collection::vec(mutation(), 1..4),
        ) {
            check(&mutated(head, &mutations))?;
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            check(&bytes)?;
        }
    }
}
