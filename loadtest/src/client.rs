//! The HTTP client layer: the [`Target`] (a base URL, refused when not loopback unless allowed)
//! and the [`Transport`] trait that sends one request and hands back a streaming body.
//!
//! Two implementations, chosen in [`connect`]:
//! - HTTP/1.1 and HTTP/2 over hyper-util's pooled client. `http://` targets speak HTTP/1.1 or
//!   h2c (prior knowledge); `https://` targets speak the same over TLS (rustls, `ring` provider),
//!   offering only the chosen protocol by ALPN.
//! - HTTP/3 over QUIC (quinn + h3), `https://` targets only, to the URL's port or `--h3-port`.
//!
//! Either way a response body is the same boxed stream, so the runner's checks (lengths, Blob
//! ID samples, ranges) are protocol-blind. Server certificates are verified against `--cacert`
//! (a PEM file, e.g. the gateway's self-signed certificate) or, without it, Mozilla's public
//! roots; `--insecure` turns verification off.

use bytes::{Buf, Bytes};
use http::{Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

/// Why a request (or the client itself) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The TLS handshake failed: usually a certificate the client does not trust.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("response body aborted: {0}")]
    Body(String),
}

/// Why a target URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0:?} is not a URL like http://127.0.0.1:8080")]
    Invalid(String),
    #[error("only http:// and https:// targets are supported, got {0:?}")]
    Scheme(String),
    #[error("{0} is not a loopback address; pass --allow-remote to load a remote host on purpose")]
    Remote(String),
}

/// Where requests go: `http[s]://host:port[/base/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    tls: bool,
    authority: String,
    host: String,
    port: u16,
    base_path: String,
}

impl Target {
    /// Parse and check a base URL; non-loopback hosts need `allow_remote`.
    pub fn parse(url: &str, allow_remote: bool) -> Result<Self, TargetError> {
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|_| TargetError::Invalid(url.to_owned()))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(TargetError::Scheme(other.to_owned())),
            None => return Err(TargetError::Invalid(url.to_owned())),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| TargetError::Invalid(url.to_owned()))?;
        let host = authority.host().to_owned();
        if !allow_remote && !is_loopback(&host) {
            return Err(TargetError::Remote(host));
        }
        if uri.query().is_some() {
            return Err(TargetError::Invalid(url.to_owned()));
        }
        Ok(Self {
            tls,
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            host,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The host as written in the URL (IPv6 addresses in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port (the URL's, or the scheme's default).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// An `https://` target.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// The full URI of `path` (which starts with `/`, and may carry a query).
    pub fn uri(&self, path: &str) -> Uri {
        format!(
            "{}://{}{}{}",
            self.scheme(),
            self.authority,
            self.base_path,
            path
        )
        .parse()
        .expect("a valid target plus an ASCII path is a valid URI")
    }

    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.authority, self.base_path)
    }
}

/// `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Which HTTP version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// h2c with prior knowledge on `http://`, ALPN `h2` on `https://`.
    Http2,
    /// QUIC, `https://` only.
    Http3,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
            Protocol::Http3 => "HTTP/3",
        }
    }
}

/// How `https://` targets are trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Trust exactly the certificates in this PEM file (a self-signed certificate or a CA);
    /// without it, Mozilla's public roots.
    pub cacert: Option<PathBuf>,
    /// Do not verify the server's certificate at all (anyone on the path can read and alter
    /// the traffic). Handshake signatures are still checked.
    pub insecure: bool,
}

/// How to reach the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    pub protocol: Protocol,
    /// HTTP/2 and HTTP/3 connections to spread requests over (HTTP/1.1 opens one per request
    /// in flight, as browsers and wrk do).
    pub connections: usize,
    pub tls: TlsOptions,
    /// UDP port of the HTTP/3 listener when it is not the URL's port.
    pub h3_port: Option<u16>,
}

impl ClientOptions {
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            connections: 1,
            tls: TlsOptions::default(),
            h3_port: None,
        }
    }
}

/// A response body, streamed frame by frame whatever the protocol.
pub type ResponseBody = UnsyncBoxBody<Bytes, ClientError>;

/// A boxed future, so transports can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends requests over some HTTP version. Implementations pool their connections.
pub trait Transport: Send + Sync {
    fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> BoxFuture<'_, Result<Response<ResponseBody>, ClientError>>;
}

/// The client for `target` as `options` say. Connections are made on first use; only the
/// configuration (protocol against scheme, the `--cacert` file) is checked here. HTTP/3 binds
/// its UDP sockets here, so it must be called inside a Tokio runtime.
pub fn connect(
    options: &ClientOptions,
    target: &Target,
) -> Result<Arc<dyn Transport>, ClientError> {
    let connections = options.connections.max(1);
    if !target.is_tls() && (options.tls.cacert.is_some() || options.tls.insecure) {
        return Err(ClientError::Setup(
            "--cacert and --insecure apply to https:// targets only".into(),
        ));
    }
    match options.protocol {
        Protocol::Http1 => Ok(Arc::new(HyperTransport::new(false, 1, &options.tls)?)),
        Protocol::Http2 => Ok(Arc::new(HyperTransport::new(
            true,
            connections,
            &options.tls,
        )?)),
        Protocol::Http3 => {
            if !target.is_tls() {
                return Err(ClientError::Setup(format!(
                    "HTTP/3 runs over QUIC, which is always encrypted: give an https:// target, not {}",
                    target.url()
                )));
            }
            Ok(Arc::new(H3Transport::new(
                target,
                options.h3_port,
                connections,
                &options.tls,
            )?))
        }
    }
}

/// The rustls client configuration for `tls` with ALPN `alpn`; `tls13_only` for QUIC.
pub fn tls_config(
    tls: &TlsOptions,
    alpn: &[&[u8]],
    tls13_only: bool,
) -> Result<ClientConfig, ClientError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone());
    let builder = if tls13_only {
        builder.with_protocol_versions(&[&rustls::version::TLS13])
    } else {
        builder.with_safe_default_protocol_versions()
    }
    .map_err(|e| ClientError::Setup(format!("TLS: {e}")))?;
    let mut config = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(roots(tls)?)
            .with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The one crypto provider (`ring`).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of `--cacert`, or Mozilla's roots.
fn roots(tls: &TlsOptions) -> Result<RootCertStore, ClientError> {
    let Some(path) = &tls.cacert else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ClientError::Setup(format!("cannot read --cacert {shown}: {e}")))?;
    if certs.is_empty() {
        return Err(ClientError::Setup(format!(
            "--cacert {shown} holds no PEM certificate"
        )));
    }
    let mut store = RootCertStore::empty();
    for cert in certs {
        store.add(cert).map_err(|e| {
            ClientError::Setup(format!("--cacert {shown}: unusable certificate: {e}"))
        })?;
    }
    Ok(store)
}

/// `--insecure`: any certificate is accepted, but the handshake's signatures are still checked
/// (so the peer at least holds the key of the certificate it showed).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A hint added to certificate failures.
const TRUST_HINT: &str = "trust the gateway's certificate with --cacert FILE \
     (walrus-gateway serve --tls-self-signed-out FILE writes it)";

/// HTTP/1.1 or HTTP/2 over hyper-util's pooled client, plain or TLS by the URL's scheme. For
/// HTTP/2 each [`Client`] keeps one connection, so `n` clients give `n` connections, used
/// round-robin.
struct HyperTransport {
    clients: Vec<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>,
    next: AtomicUsize,
}

impl HyperTransport {
    fn new(http2: bool, connections: usize, tls: &TlsOptions) -> Result<Self, ClientError> {
        let config = tls_config(tls, &[], false)?;
        let clients = (0..connections)
            .map(|_| {
                let mut http = HttpConnector::new();
                http.set_nodelay(true);
                http.enforce_http(false);
                let connector = HttpsConnectorBuilder::new()
                    .with_tls_config(config.clone())
                    .https_or_http();
                // ALPN offers exactly the protocol asked for (`h2`, or none for HTTP/1.1).
                let connector = if http2 {
                    connector.enable_http2().wrap_connector(http)
                } else {
                    connector.enable_http1().wrap_connector(http)
                };
                let mut builder = Client::builder(TokioExecutor::new());
                builder.pool_max_idle_per_host(usize::MAX);
                if http2 {
                    builder
                        .http2_only(true)
                        .http2_initial_stream_window_size(4 << 20)
                        .http2_initial_connection_window_size(16 << 20);
                }
                builder.build(connector)
            })
            .collect();
        Ok(Self {
            clients,
            next: AtomicUsize::new(0),
        })
    }
}

impl Transport for HyperTransport {
    fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> BoxFuture<'_, Result<Response<ResponseBody>, ClientError>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        let client = &self.clients[i];
        Box::pin(async move {
            let response = client.request(request).await.map_err(|e| {
                if let Some(tls) = find_tls_error(&e) {
                    tls_failure(&tls)
                } else if e.is_connect() {
                    ClientError::Connect(error_chain(&e))
                } else {
                    ClientError::Transport(error_chain(&e))
                }
            })?;
            Ok(response.map(|body| {
                body.map_err(|e| ClientError::Body(error_chain(&e)))
                    .boxed_unsync()
            }))
        })
    }
}

/// The rustls error somewhere in `error`'s sources (I/O errors wrap it without exposing it as
/// a source, so their inner errors are looked into too).
fn find_tls_error(error: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(tls) = find_tls_error(inner) {
                    return Some(tls);
                }
            }
        }
        next = e.source();
    }
    None
}

fn tls_failure(error: &rustls::Error) -> ClientError {
    match error {
        rustls::Error::InvalidCertificate(_) => ClientError::Tls(format!(
            "{error} ({TRUST_HINT}, or --insecure to skip the check)"
        )),
        _ => ClientError::Tls(error.to_string()),
    }
}

/// HTTP/3: `connections` QUIC connections (each on its own UDP socket, so packet processing
/// spreads over threads), made on first use and again when one has closed, used round-robin.
struct H3Transport {
    host: String,
    port: u16,
    config: quinn::ClientConfig,
    slots: Vec<tokio::sync::Mutex<Option<H3Connection>>>,
    next: AtomicUsize,
}

struct H3Connection {
    quic: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    /// Owns the socket; dropped (and so closed) with the connection.
    _endpoint: quinn::Endpoint,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for H3Connection {
    fn drop(&mut self) {
        self.quic.close(0u32.into(), b"done");
        self.driver.abort();
    }
}

/// A connection silent this long is given up (this also bounds a handshake with nobody).
const H3_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keeps connections open between phases of a run.
const H3_KEEP_ALIVE: Duration = Duration::from_secs(3);
/// Bytes the server may have in flight to us on one stream, and on one connection: large
/// enough that 64 MiB reads are not limited by flow-control round trips on a fast link.
const H3_STREAM_WINDOW: u32 = 16 << 20;
const H3_CONNECTION_WINDOW: u32 = 64 << 20;
/// Asked-for UDP socket receive and send buffer sizes.
const UDP_SOCKET_BUFFER: usize = 8 << 20;
/// Largest UDP payload we tell the server we can receive (QUIC's `max_udp_payload_size`, the
/// protocol's maximum). The server's path MTU discovery still finds what the path carries; on
/// loopback a gateway run with a large `--h3-max-udp-payload` then sends ~64 KB datagrams
/// instead of ~1.4 KB ones, cutting per-packet work (decryption, ACKs, wakeups) on both ends.
const H3_MAX_UDP_PAYLOAD: u16 = 65527;
/// Request bodies (publishing) are sent in frames of at most this.
const H3_SEND_CHUNK: usize = 256 << 10;

impl H3Transport {
    fn new(
        target: &Target,
        h3_port: Option<u16>,
        connections: usize,
        tls: &TlsOptions,
    ) -> Result<Self, ClientError> {
        let crypto = tls_config(tls, &[b"h3"], true)?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
            .map_err(|e| ClientError::Setup(format!("QUIC TLS: {e}")))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(H3_IDLE_TIMEOUT).expect("a small timeout"),
            ))
            .keep_alive_interval(Some(H3_KEEP_ALIVE))
            .stream_receive_window(H3_STREAM_WINDOW.into())
            .receive_window(H3_CONNECTION_WINDOW.into());
        config.transport_config(Arc::new(transport));
        Ok(Self {
            host: target
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: h3_port.unwrap_or(target.port()),
            config,
            slots: (0..connections)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// A request sender on slot `i`'s connection, connecting first if it has none (or its
    /// connection closed).
    async fn sender(
        &self,
        i: usize,
    ) -> Result<h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>, ClientError> {
        let mut slot = self.slots[i].lock().await;
        if let Some(connection) = slot.as_ref() {
            if connection.quic.close_reason().is_none() {
                return Ok(connection.send.clone());
            }
        }
        *slot = None;
        let connection = self.open().await?;
        let send = connection.send.clone();
        *slot = Some(connection);
        Ok(send)
    }

    async fn open(&self) -> Result<H3Connection, ClientError> {
        let addr = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| ClientError::Connect(format!("cannot resolve {}: {e}", self.host)))?
            .next()
            .ok_or_else(|| ClientError::Connect(format!("{} has no address", self.host)))?;
        let local = if addr.is_ipv6() {
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
        };
        let endpoint = udp_endpoint(local)
            .map_err(|e| ClientError::Connect(format!("cannot open a UDP socket: {e}")))?;
        let connecting = endpoint
            .connect_with(self.config.clone(), addr, &self.host)
            .map_err(|e| ClientError::Connect(format!("QUIC to {addr}: {e}")))?;
        let quic = connecting.await.map_err(|e| quic_failure(addr, &e, true))?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
            .await
            .map_err(|e| ClientError::Connect(format!("HTTP/3 to {addr}: {e}")))?;
        let driver = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(H3Connection {
            quic,
            send,
            _endpoint: endpoint,
            driver,
        })
    }
}

/// A client endpoint on a UDP socket bound at `local`, with socket buffers large enough for a
/// burst of a connection's flow-control window: the default (~200 KiB) overflows at a few
/// hundred MB/s, and every dropped datagram makes congestion control back off.
fn udp_endpoint(local: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(local)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = state.set_recv_buffer_size((&socket).into(), UDP_SOCKET_BUFFER);
    let _ = state.set_send_buffer_size((&socket).into(), UDP_SOCKET_BUFFER);
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(H3_MAX_UDP_PAYLOAD)
        .map_err(|e| std::io::Error::other(format!("max UDP payload: {e}")))?;
    quinn::Endpoint::new(config, None, socket, runtime)
}

/// A QUIC connection error as a client error: TLS alerts (crypto error codes) are
/// [`ClientError::Tls`], anything else a connect failure.
fn quic_failure(addr: SocketAddr, error: &quinn::ConnectionError, handshake: bool) -> ClientError {
    use quinn::ConnectionError as E;
    let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match error {
        E::TransportError(e) if crypto(e.code) => {
            let mut text = format!("QUIC to {addr}: {e}");
            if e.reason.contains("certificate") {
                text.push_str(&format!(" ({TRUST_HINT}, or --insecure to skip the check)"));
            }
            ClientError::Tls(text)
        }
        E::ConnectionClosed(close) if crypto(close.error_code) => {
            ClientError::Tls(format!("QUIC to {addr}: the server refused: {close}"))
        }
        E::TimedOut if handshake => ClientError::Connect(format!(
            "QUIC to {addr}: no answer within {H3_IDLE_TIMEOUT:?} (is --h3-port the gateway's --h3-listen port?)"
        )),
        _ => ClientError::Connect(format!("QUIC to {addr}: {error}")),
    }
}

impl Transport for H3Transport {
    fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> BoxFuture<'_, Result<Response<ResponseBody>, ClientError>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        Box::pin(async move {
            let mut send = self.sender(i).await?;
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let transport = |e: &dyn std::fmt::Display| ClientError::Transport(e.to_string());
            let mut stream = send
                .send_request(Request::from_parts(parts, ()))
                .await
                .map_err(|e| transport(&e))?;
            let mut offset = 0;
            while offset < body.len() {
                let end = (offset + H3_SEND_CHUNK).min(body.len());
                stream
                    .send_data(body.slice(offset..end))
                    .await
                    .map_err(|e| transport(&e))?;
                offset = end;
            }
            stream.finish().await.map_err(|e| transport(&e))?;
            let response = stream.recv_response().await.map_err(|e| transport(&e))?;
            let (_send, recv) = stream.split();
            Ok(response.map(|()| H3Body { recv, done: false }.boxed_unsync()))
        })
    }
}

/// A response body read from an h3 stream.
struct H3Body {
    recv: h3::client::RequestStream<h3_quinn::RecvStream, Bytes>,
    done: bool,
}

impl HttpBody for H3Body {
    type Data = Bytes;
    type Error = ClientError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match ready!(this.recv.poll_recv_data(cx)) {
            Ok(Some(mut data)) => {
                let bytes = data.copy_to_bytes(data.remaining());
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Ok(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Err(e) => {
                this.done = true;
                Poll::Ready(Some(Err(ClientError::Body(e.to_string()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_loopback_unless_allowed() {
        let t = Target::parse("http://127.0.0.1:8080", false).unwrap();
        assert_eq!(
            t.uri("/v1/blobs/x").to_string(),
            "http://127.0.0.1:8080/v1/blobs/x"
        );
        assert!(!t.is_tls());
        assert_eq!(t.port(), 8080);
        let t = Target::parse("http://localhost:9/agg/", false).unwrap();
        assert_eq!(
            t.uri("/status").to_string(),
            "http://localhost:9/agg/status"
        );
        assert!(Target::parse("http://[::1]:80", false).is_ok());
        assert_eq!(
            Target::parse("http://example.com", false),
            Err(TargetError::Remote("example.com".into()))
        );
        assert_eq!(
            Target::parse("http://10.0.0.1:80", false),
            Err(TargetError::Remote("10.0.0.1".into()))
        );
        assert!(Target::parse("http://example.com", true).is_ok());
        assert!(matches!(
            Target::parse("ftp://127.0.0.1", false),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            Target::parse("127.0.0.1:80", false),
            Err(TargetError::Invalid(_))
        ));
        assert!(matches!(
            Target::parse("not a url", false),
            Err(TargetError::Invalid(_))
        ));
    }

    #[test]
    fn https_targets_keep_their_scheme_and_default_port() {
        let t = Target::parse("https://localhost:8443/base", false).unwrap();
        assert!(t.is_tls());
        assert_eq!(t.port(), 8443);
        assert_eq!(
            t.uri("/v1/blobs/x").to_string(),
            "https://localhost:8443/base/v1/blobs/x"
        );
        assert_eq!(t.url(), "https://localhost:8443/base");
        assert_eq!(
            Target::parse("https://127.0.0.1", false).unwrap().port(),
            443
        );
        assert_eq!(
            Target::parse("https://example.com", false),
            Err(TargetError::Remote("example.com".into()))
        );
    }

    #[tokio::test]
    async fn protocol_and_scheme_must_agree() {
        let http = Target::parse("http://127.0.0.1:9", false).unwrap();
        let https = Target::parse("https://127.0.0.1:9", false).unwrap();
        let h3 = ClientOptions::new(Protocol::Http3);
        let err = connect(&h3, &http).err().unwrap();
        assert!(err.to_string().contains("https://"), "{err}");
        assert!(connect(&h3, &https).is_ok());
        let insecure = ClientOptions {
            tls: TlsOptions {
                cacert: None,
                insecure: true,
            },
            ..ClientOptions::new(Protocol::Http1)
        };
        let err = connect(&insecure, &http).err().unwrap();
        assert!(err.to_string().contains("https:// targets only"), "{err}");
        assert!(connect(&insecure, &https).is_ok());
    }

    #[test]
    fn cacert_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let with = |path: PathBuf| TlsOptions {
            cacert: Some(path),
            insecure: false,
        };
        let missing = tls_config(&with(dir.path().join("nope.pem")), &[], false)
            .err()
            .unwrap();
        assert!(
            missing.to_string().contains("cannot read --cacert"),
            "{missing}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let none = tls_config(&with(empty), &[], false).err().unwrap();
        assert!(
            none.to_string().contains("holds no PEM certificate"),
            "{none}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let bad = tls_config(&with(garbage), &[], false).err().unwrap();
        assert!(bad.to_string().contains("unusable certificate"), "{bad}");
    }

    #[test]
    fn tls_errors_are_found_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls.clone());
        let outer = std::io::Error::other(io);
        assert_eq!(find_tls_error(&outer), Some(tls.clone()));
        assert!(tls_failure(&tls).to_string().contains("--cacert"));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(find_tls_error(&plain), None);
    }
}
