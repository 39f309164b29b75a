//! The HTTP client layer: the [`Target`] (a base URL, refused when not loopback unless allowed)
//! and the [`Transport`] trait that sends one request and hands back a streaming body.
//!
//! HTTP/1.1 and HTTP/2 (h2c, prior knowledge) are one implementation over hyper-util's pooled
//! client; HTTP/3 will be another implementation of the same trait (its body boxed the same
//! way), chosen in [`connect`]. Until then `--http 3` is refused with a clear error.

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a request (or the client itself) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("HTTP/3 is not available yet: it arrives with the gateway's HTTP/3 issue (use --http 1 or 2)")]
    Http3NotYet,
    #[error("cannot connect: {0}")]
    Connect(String),
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
    #[error("only http:// targets are supported (terminate TLS in front), got {0:?}")]
    Scheme(String),
    #[error("{0} is not a loopback address; pass --allow-remote to load a remote host on purpose")]
    Remote(String),
}

/// Where requests go: `http://host:port[/base/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    authority: String,
    host: String,
    base_path: String,
}

impl Target {
    /// Parse and check a base URL; non-loopback hosts need `allow_remote`.
    pub fn parse(url: &str, allow_remote: bool) -> Result<Self, TargetError> {
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|_| TargetError::Invalid(url.to_owned()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(TargetError::Scheme(other.to_owned())),
            None => return Err(TargetError::Invalid(url.to_owned())),
        }
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
            authority: authority.as_str().to_owned(),
            host,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The full URI of `path` (which starts with `/`, and may carry a query).
    pub fn uri(&self, path: &str) -> Uri {
        format!("http://{}{}{}", self.authority, self.base_path, path)
            .parse()
            .expect("a valid target plus an ASCII path is a valid URI")
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority, self.base_path)
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
    /// h2c with prior knowledge.
    Http2,
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

/// The client for `protocol`; `connections` is how many HTTP/2 connections requests are
/// spread over (HTTP/1.1 opens one per request in flight, as browsers and wrk do).
pub fn connect(protocol: Protocol, connections: usize) -> Result<Arc<dyn Transport>, ClientError> {
    match protocol {
        Protocol::Http1 => Ok(Arc::new(HyperTransport::new(false, 1))),
        Protocol::Http2 => Ok(Arc::new(HyperTransport::new(true, connections.max(1)))),
        Protocol::Http3 => Err(ClientError::Http3NotYet),
    }
}

/// HTTP/1.1 or h2c over hyper-util's pooled client. For HTTP/2 each [`Client`] keeps one
/// connection, so `n` clients give `n` connections, used round-robin.
struct HyperTransport {
    clients: Vec<Client<HttpConnector, Full<Bytes>>>,
    next: AtomicUsize,
}

impl HyperTransport {
    fn new(http2: bool, connections: usize) -> Self {
        let clients = (0..connections)
            .map(|_| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
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
        Self {
            clients,
            next: AtomicUsize::new(0),
        }
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
                if e.is_connect() {
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
            Target::parse("https://127.0.0.1", false),
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
    fn http3_is_refused_with_a_reason() {
        let err = connect(Protocol::Http3, 1).err().unwrap();
        assert_eq!(err, ClientError::Http3NotYet);
        assert!(err.to_string().contains("HTTP/3 issue"));
    }
}
