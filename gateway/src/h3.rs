//! HTTP/3 over QUIC (quinn + h3): every request goes to the same [`Api::handle`] as HTTP/1.1 and
//! HTTP/2, so the protocols cannot drift. Request bodies stream in through [`RequestBody`], a
//! hyper `Body` over the h3 stream; response bodies stream out frame by frame, each frame written
//! only once QUIC flow control accepts it, so a blob is never buffered whole and a client that
//! stops reading stalls its own stream (and is reset after the write-stall timeout, the same
//! bound the TCP listeners apply per connection in [`crate::stall`]).
//!
//! Bounds: connections share the gateway's connection semaphore (a connection beyond it is
//! refused at once rather than queued), each connection may open at most
//! `max_streams_per_connection` requests and hold its share of the request slots
//! ([`crate::fairness`]), headers must arrive within the header timeout, a connection with no
//! request in flight closes after `idle_timeout` (the header timeout before its first request)
//! and a silent one after QUIC's idle timeout. Request bodies get the body deadlines
//! ([`crate::deadline`]) and must match their `content-length` (RFC 9114 §4.1.2: else the body
//! fails and the request answers 400). Shutdown refuses new connections, sends GOAWAY
//! on each open one, lets its requests finish within the grace period, then closes the endpoint.

use crate::access_log::Exchange;
use crate::api::Api;
use crate::deadline::{BodyDeadlines, TimedBody};
use crate::fairness::{Clients, Share};
use crate::telemetry::Telemetry;
use crate::tls::{TlsError, TlsIdentity};
use ::h3::error::Code;
use ::h3::server::{RequestResolver, RequestStream};
use bytes::{Buf, Bytes};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame};
use quinn::crypto::rustls::QuicServerConfig;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Time allowed for the QUIC and TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request header section accepted (QPACK-decoded), as in HTTP/1.1's default.
const MAX_HEADER_BYTES: u64 = 64 << 10;
/// Bytes a client may have in flight towards us on one request stream (uploads).
const STREAM_RECEIVE_WINDOW: u32 = 1 << 20;
/// Bytes a client may have in flight towards us on one connection, all streams together.
const CONNECTION_RECEIVE_WINDOW: u32 = 8 << 20;
/// Bytes of responses queued per connection before writes wait for the client to acknowledge.
const SEND_WINDOW: u64 = 8 << 20;
/// Asked-for UDP socket receive and send buffer sizes.
const UDP_SOCKET_BUFFER: usize = 8 << 20;
/// The default largest UDP payload (path MTU discovery's upper bound): fits any Ethernet path
/// over IPv4 or IPv6.
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1452;
/// Largest datagram that still lets quinn batch 10 datagrams into one GSO send (a batch must
/// fit in 64 KiB); above it segmentation offload is turned off.
const GSO_MAX_UDP_PAYLOAD: u16 = 6500;
/// The application close code of a clean close (RFC 9114 §8.1).
const H3_NO_ERROR: quinn::VarInt = quinn::VarInt::from_u32(0x100);
/// Unidirectional streams a client may open (control and QPACK streams, plus a little slack).
const MAX_UNI_STREAMS: u32 = 8;

/// Why the HTTP/3 listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum H3Error {
    #[error("HTTP/3 needs a TLS certificate (--tls-cert/--tls-key or --tls-self-signed)")]
    NoCertificate,
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the certificate cannot be used for QUIC: {0}")]
    Quic(String),
    #[error("cannot listen on {addr} (UDP): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Per-connection limits of the HTTP/3 listener.
#[derive(Debug, Clone, Copy)]
pub struct H3Limits {
    pub max_streams_per_connection: u32,
    pub idle_timeout: Duration,
    pub header_read_timeout: Duration,
    /// A response frame QUIC does not accept within this long resets the stream: the client
    /// has stopped reading, and its request slot and buffers go to someone else.
    pub write_stall_timeout: Duration,
    /// Largest UDP payload sent (upper bound of path MTU discovery, which probes up from
    /// 1,200 bytes) and advertised as receivable. Per-packet work (encryption, framing,
    /// acknowledgements) dominates QUIC's CPU cost, so larger datagrams mean fewer packets;
    /// raise it above [`DEFAULT_MAX_UDP_PAYLOAD`] only where the path carries them (loopback,
    /// jumbo frames): probing a smaller path just costs a few lost probes.
    pub max_udp_payload: u16,
    /// Blob requests one connection may hold slots for ([`crate::fairness`]).
    pub max_requests_per_connection: usize,
    /// Deadlines of request bodies ([`crate::deadline`]).
    pub body: BodyDeadlines,
}

/// A bound, not yet serving, HTTP/3 endpoint.
pub struct H3Listener {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    limits: H3Limits,
}

impl H3Listener {
    /// Bind a UDP socket at `addr`; must be called inside a Tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: &TlsIdentity,
        limits: H3Limits,
    ) -> Result<Self, H3Error> {
        let crypto = QuicServerConfig::try_from(identity.h3_config()?)
            .map_err(|e| H3Error::Quic(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(limits.idle_timeout)
            .map_err(|e| H3Error::Quic(format!("idle timeout: {e}")))?;
        transport
            .max_idle_timeout(Some(idle))
            .max_concurrent_bidi_streams(limits.max_streams_per_connection.max(1).into())
            .max_concurrent_uni_streams(MAX_UNI_STREAMS.into())
            .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
            .receive_window(CONNECTION_RECEIVE_WINDOW.into())
            .send_window(SEND_WINDOW);
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(limits.max_udp_payload);
        transport.mtu_discovery_config(Some(mtu));
        if limits.max_udp_payload > GSO_MAX_UDP_PAYLOAD {
            // A GSO batch larger than 64 KiB fails to send (EMSGSIZE), which QUIC would take
            // for loss. Datagrams this large amortise the syscall by themselves.
            transport.enable_segmentation_offload(false);
        }
        server.transport_config(Arc::new(transport));
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(limits.max_udp_payload)
            .map_err(|e| H3Error::Quic(format!("max UDP payload: {e}")))?;
        let endpoint = udp_endpoint(endpoint_config, server, addr)
            .map_err(|source| H3Error::Bind { addr, source })?;
        let addr = endpoint
            .local_addr()
            .map_err(|source| H3Error::Bind { addr, source })?;
        Ok(Self {
            endpoint,
            addr,
            limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until `shutdown` turns true, then drain for at most `grace`. Each connection gets
    /// a share of the request slots, within its client's share from `clients`.
    pub async fn serve(
        self,
        api: Arc<Api>,
        connections: Arc<Semaphore>,
        clients: Arc<Clients>,
        telemetry: Arc<Telemetry>,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let H3Listener {
            endpoint,
            addr,
            limits,
        } = self;
        tracing::info!(%addr, "gateway listening (HTTP/3)");
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    match connections.clone().try_acquire_owned() {
                        Ok(slot) => {
                            let share = clients.share(
                                incoming.remote_address().ip(),
                                limits.max_requests_per_connection,
                            );
                            let context = Arc::new(Context3 {
                                api: api.clone(),
                                telemetry: telemetry.clone(),
                                client: incoming.remote_address().ip(),
                                share,
                                limits,
                            });
                            tasks.spawn(connection(incoming, context, slot, shutdown.clone()));
                        }
                        // Refusing now tells the client to go elsewhere; queueing would only
                        // let its handshake time out.
                        Err(_) => incoming.refuse(),
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = stopped(&mut shutdown) => break,
            }
        }
        endpoint.set_server_config(None);
        tracing::info!("HTTP/3: draining in-flight requests");
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                ?grace,
                "HTTP/3 grace period over; closing remaining connections"
            );
        }
        endpoint.close(H3_NO_ERROR, b"");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    }
}

/// A server endpoint on a UDP socket bound at `addr`, with socket buffers sized for bursts of
/// many clients' packets (acknowledgements, uploads): with the default (~200 KiB) datagrams are
/// dropped at high rates and congestion control backs off.
fn udp_endpoint(
    config: quinn::EndpointConfig,
    server: quinn::ServerConfig,
    addr: SocketAddr,
) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = state.set_recv_buffer_size((&socket).into(), UDP_SOCKET_BUFFER);
    let _ = state.set_send_buffer_size((&socket).into(), UDP_SOCKET_BUFFER);
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    quinn::Endpoint::new(config, Some(server), socket, runtime)
}

/// Resolves once the shutdown flag is set (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// What the requests of one connection share.
struct Context3 {
    api: Arc<Api>,
    telemetry: Arc<Telemetry>,
    /// The client's address, for the access log.
    client: std::net::IpAddr,
    share: Share,
    limits: H3Limits,
}

/// One QUIC connection: accept requests until the client leaves, it stays idle (or sends no
/// first request) too long, or shutdown drains it.
async fn connection(
    incoming: quinn::Incoming,
    context: Arc<Context3>,
    _slot: OwnedSemaphorePermit,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = context.limits;
    let peer = incoming.remote_address();
    let quic = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(quic)) => quic,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "QUIC handshake timed out");
            return;
        }
    };
    let built = ::h3::server::builder()
        .max_field_section_size(MAX_HEADER_BYTES)
        .build::<_, Bytes>(h3_quinn::Connection::new(quic.clone()))
        .await;
    let mut h3 = match built {
        Ok(h3) => h3,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "HTTP/3 connection setup failed");
            return;
        }
    };
    let mut requests = JoinSet::new();
    let mut draining = false;
    // Fires when the connection has had no request in flight for the idle timeout (the header
    // timeout before its first request); reset whenever a request starts or ends. QUIC's own
    // idle timeout does not see a client that keeps the connection alive with PINGs.
    let mut served = false;
    let idle = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(idle);
    loop {
        if draining && requests.is_empty() {
            break;
        }
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    served = true;
                    requests.spawn(request(resolver, context.clone()));
                    idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        tracing::debug!(%peer, error = %e, "HTTP/3 connection ended with an error");
                    }
                    break;
                }
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => {
                idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
            }
            () = idle.as_mut(), if requests.is_empty() && !draining => {
                tracing::debug!(%peer, "HTTP/3 connection idle; closing it");
                context.telemetry.deadline(if served { "idle" } else { "first_request" });
                draining = true;
                let _ = h3.shutdown(0).await;
            }
            () = stopped(&mut shutdown), if !draining => {
                draining = true;
                // GOAWAY: requests already accepted finish; the client opens no more here.
                let _ = h3.shutdown(0).await;
            }
        }
    }
    while requests.join_next().await.is_some() {}
    quic.close(H3_NO_ERROR, b"");
}

/// Read one request's headers, answer it through [`Api::handle`], stream the body back.
async fn request(resolver: RequestResolver<h3_quinn::Connection, Bytes>, context: Arc<Context3>) {
    let limits = context.limits;
    let (request, stream) =
        match tokio::time::timeout(limits.header_read_timeout, resolver.resolve_request()).await {
            Ok(Ok(resolved)) => resolved,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "bad HTTP/3 request");
                return;
            }
            Err(_) => {
                tracing::debug!("HTTP/3 request headers timed out");
                context.telemetry.deadline("request_head");
                return;
            }
        };
    // Dropped when this function returns, however it ends: the request's duration and its
    // access log line.
    let mut exchange = Exchange::start(
        &context.telemetry,
        std::time::Instant::now(),
        Some(context.client),
        request.method(),
        request.uri(),
        Version::HTTP_3,
        request.headers(),
    );
    let (mut send, recv) = stream.split();
    let head = request.method() == Method::HEAD;
    let declared = match declared_length(request.headers()) {
        Ok(declared) => declared,
        Err(()) => {
            // RFC 9114 §4.1.2: a content-length that is not one number is malformed.
            send.stop_stream(Code::H3_MESSAGE_ERROR);
            return;
        }
    };
    let mut request: Request<TimedBody<RequestBody>> = request.map(|()| {
        TimedBody::new(
            RequestBody {
                stream: recv,
                done: false,
                declared,
                received: 0,
            },
            limits.body,
            Some(context.telemetry.clone()),
        )
    });
    request.extensions_mut().insert(context.share.clone());
    let Ok(response) = context.api.handle(request).await;
    exchange.respond(response.status().as_u16(), response.headers());
    let (mut parts, mut body) = response.into_parts();
    // hyper derives Content-Length from an exact body size; do the same so every protocol
    // sends the same headers.
    let bodiless = head
        || parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    if !bodiless && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        if let Some(len) = body.size_hint().exact() {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    if let Err(e) = send.send_response(Response::from_parts(parts, ())).await {
        tracing::debug!(error = %e, "cannot send HTTP/3 response headers");
        return;
    }
    if !head {
        while let Some(frame) = body.frame().await {
            let data = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
                Err(e) => {
                    // A fill failed mid-body: reset, so the client cannot take a truncated
                    // blob for a whole one.
                    tracing::debug!(error = %e, "response body aborted");
                    send.stop_stream(Code::H3_INTERNAL_ERROR);
                    return;
                }
            };
            // In pieces, each bounded by the stall timeout: a client reading slowly but steadily
            // makes progress on every piece, however large the frame.
            let mut data = data;
            while !data.is_empty() {
                let piece = data.split_to(data.len().min(crate::stall::PROGRESS_PIECE));
                let len = piece.len() as u64;
                match tokio::time::timeout(limits.write_stall_timeout, send.send_data(piece)).await
                {
                    Ok(Ok(())) => exchange.sent(len),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "HTTP/3 client went away mid-body");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("HTTP/3 client stopped reading; resetting the stream");
                        context.telemetry.deadline("response_stall");
                        send.stop_stream(Code::H3_REQUEST_CANCELLED);
                        return;
                    }
                }
            }
        }
    }
    drop(body);
    match send.finish().await {
        Ok(()) => exchange.completed(),
        Err(e) => tracing::debug!(error = %e, "cannot finish HTTP/3 response"),
    }
}

/// The request's `content-length`: `Ok(None)` when absent, `Err` when not one decimal number
/// (repeated values must agree).
fn declared_length(headers: &http::HeaderMap) -> Result<Option<u64>, ()> {
    let mut declared = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| ())?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let n: u64 = part.parse().map_err(|_| ())?;
            if declared.is_some_and(|d| d != n) {
                return Err(());
            }
            declared = Some(n);
        }
    }
    Ok(declared)
}

/// A request body read from an h3 stream, as the hyper `Body` that [`Api::handle`] takes. A
/// body longer or shorter than its `content-length` is malformed (RFC 9114 §4.1.2) and fails,
/// so the request is refused (400) rather than taken for a whole one.
pub struct RequestBody {
    stream: RequestStream<h3_quinn::RecvStream, Bytes>,
    done: bool,
    /// The declared `content-length`, if any.
    declared: Option<u64>,
    received: u64,
}

/// Why an HTTP/3 request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error(transparent)]
    Stream(#[from] ::h3::error::StreamError),
    #[error("the request body has {received} bytes where content-length declared {declared}")]
    LengthMismatch { declared: u64, received: u64 },
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match ready!(this.stream.poll_recv_data(cx)) {
            Ok(Some(mut buf)) => {
                let bytes = buf.copy_to_bytes(buf.remaining());
                this.received += bytes.len() as u64;
                if let Some(declared) = this.declared.filter(|&d| this.received > d) {
                    this.done = true;
                    return Poll::Ready(Some(Err(RequestBodyError::LengthMismatch {
                        declared,
                        received: this.received,
                    })));
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Ok(None) => {
                this.done = true;
                match this.declared {
                    Some(declared) if declared != this.received => {
                        Poll::Ready(Some(Err(RequestBodyError::LengthMismatch {
                            declared,
                            received: this.received,
                        })))
                    }
                    _ => Poll::Ready(None),
                }
            }
            Err(e) => {
                this.done = true;
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.declared {
            Some(declared) => {
                hyper::body::SizeHint::with_exact(declared.saturating_sub(self.received))
            }
            None => hyper::body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_udp_payload: u16) -> H3Limits {
        H3Limits {
            max_streams_per_connection: 10,
            idle_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(5),
            write_stall_timeout: Duration::from_secs(5),
            max_udp_payload,
            max_requests_per_connection: 10,
            body: BodyDeadlines {
                idle: Duration::from_secs(5),
                total: Duration::from_secs(5),
            },
        }
    }

    #[tokio::test]
    async fn max_udp_payload_outside_quic_limits_is_refused() {
        let identity = TlsIdentity::self_signed(&["localhost".to_owned()])
            .unwrap()
            .identity;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        for bad in [0, 1199, 65528] {
            match H3Listener::bind(loopback, &identity, limits(bad)) {
                Err(H3Error::Quic(message)) => assert!(message.contains("max UDP payload")),
                Err(other) => panic!("{bad}: unexpected error {other}"),
                Ok(_) => panic!("{bad}: accepted"),
            }
        }
        for good in [
            1200,
            DEFAULT_MAX_UDP_PAYLOAD,
            GSO_MAX_UDP_PAYLOAD + 1,
            65527,
        ] {
            let listener = H3Listener::bind(loopback, &identity, limits(good)).unwrap();
            assert_ne!(listener.local_addr().port(), 0);
        }
    }
}
