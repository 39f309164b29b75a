//! Aggregator-compatible upstreams (`--upstream URL`, repeatable): a public Walrus aggregator or a
//! parent walrus-gateway, tried in order before the storage nodes.
//!
//! Nothing here trusts an upstream. This module only talks HTTP: it fetches `GET /v1/blobs/{id}`
//! (whole or a `Range`) and, where the upstream offers it (walrus-gateway does, aggregators do
//! not), `GET /v1/blobs/{id}/metadata` in the storage nodes' BCS format. The fill
//! ([`crate::fill`]) verifies everything it receives: rows against verified metadata, or the
//! whole blob by re-encoding it and recomputing its Blob ID. Every request has a timeout and
//! every body a byte limit.

use bytes::Bytes;
use codec::BlobId;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// One upstream, named by its URL (the name used in logs and metric labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    /// Base URL without a trailing slash.
    base: String,
}

/// Why an upstream URL is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("upstream {url:?}: {reason}")]
pub struct UpstreamUrlError {
    pub url: String,
    pub reason: &'static str,
}

impl std::str::FromStr for Upstream {
    type Err = UpstreamUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |reason| UpstreamUrlError {
            url: url.to_owned(),
            reason,
        };
        let base = url.trim_end_matches('/');
        let uri: Uri = base.parse().map_err(|_| bad("not a URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(bad("only http:// and https:// upstreams are supported"));
        }
        if uri.authority().is_none() {
            return Err(bad("no host"));
        }
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        Ok(Upstream {
            name: base.to_owned(),
            base: base.to_owned(),
        })
    }
}

/// What went wrong with one upstream request. `kind()` is the metric label.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("not found")]
    NotFound,
    #[error("answered {0}")]
    Status(u16),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("transport: {0}")]
    Transport(String),
    #[error("sent more than the {0} bytes expected")]
    TooLarge(u64),
    #[error("the body ended after {got} of {expected} bytes")]
    Truncated { got: u64, expected: u64 },
    #[error("{0}")]
    Protocol(String),
    /// Bytes or metadata that do not verify against the Blob ID.
    #[error("sent bytes that do not verify: {0}")]
    Mismatch(String),
}

impl UpstreamError {
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::NotFound => "not_found",
            UpstreamError::Status(_) => "status",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Transport(_) => "transport",
            UpstreamError::TooLarge(_) => "too_large",
            UpstreamError::Truncated { .. } => "truncated",
            UpstreamError::Protocol(_) => "protocol",
            UpstreamError::Mismatch(_) => "mismatch",
        }
    }
}

/// A pooled HTTP/1.1 client for upstreams, plain or TLS (rustls with the ring provider and the
/// webpki root certificates).
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Default for UpstreamClient {
    fn default() -> Self {
        Self::new()
    }
}

impl UpstreamClient {
    pub fn new() -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let tls = crate::tls::web_pki_client_config();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector);
        Self { client }
    }

    /// `GET /v1/blobs/{id}/metadata`: the BCS body (at most `limit` bytes) within `timeout`.
    pub async fn metadata(
        &self,
        upstream: &Upstream,
        id: &BlobId,
        limit: u64,
        timeout: Duration,
    ) -> Result<Bytes, UpstreamError> {
        let url = format!("{}/v1/blobs/{id}/metadata", upstream.base);
        let exchange = async {
            let response = self.send(&url, None).await?;
            let declared = content_length(&response);
            if declared.is_some_and(|len| len > limit) {
                return Err(UpstreamError::TooLarge(limit));
            }
            let mut body = BlobBody {
                body: response.into_body(),
                received: 0,
                limit,
            };
            let mut out = Vec::new();
            while let Some(chunk) = body.next().await? {
                out.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(out))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
    }

    /// Start `GET /v1/blobs/{id}`, for bytes `[start, end)` when `range` is given (then the
    /// answer must be a 206 for exactly that range). The headers must come within `timeout`;
    /// the body is read by the caller, at most `limit` bytes.
    pub async fn blob(
        &self,
        upstream: &Upstream,
        id: &BlobId,
        range: Option<(u64, u64)>,
        limit: u64,
        timeout: Duration,
    ) -> Result<BlobBody, UpstreamError> {
        let url = format!("{}/v1/blobs/{id}", upstream.base);
        let response = tokio::time::timeout(timeout, self.send(&url, range))
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))??;
        if let Some((start, end)) = range {
            if response.status() != StatusCode::PARTIAL_CONTENT {
                return Err(UpstreamError::Protocol(format!(
                    "answered {} to a Range request",
                    response.status()
                )));
            }
            let content_range = response
                .headers()
                .get(http::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let expected = format!("bytes {start}-{}/", end - 1);
            if !content_range.starts_with(&expected) {
                return Err(UpstreamError::Protocol(format!(
                    "answered Content-Range {content_range:?} to a request for bytes {start}-{}",
                    end - 1
                )));
            }
        }
        if content_length(&response).is_some_and(|len| len > limit) {
            return Err(UpstreamError::TooLarge(limit));
        }
        Ok(BlobBody {
            body: response.into_body(),
            received: 0,
            limit,
        })
    }

    /// Send a GET and return a 200/206 response; any other status is an error.
    async fn send(
        &self,
        url: &str,
        range: Option<(u64, u64)>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| UpstreamError::Protocol(format!("bad URL {url}")))?;
        let mut request = Request::get(uri)
            .body(Empty::new())
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        if let Some((start, end)) = range {
            let value = HeaderValue::from_str(&format!("bytes={start}-{}", end - 1))
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
            request.headers_mut().insert(http::header::RANGE, value);
        }
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| UpstreamError::Transport(crate::nodes::error_chain(&e)))?;
        match response.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => Ok(response),
            StatusCode::NOT_FOUND => Err(UpstreamError::NotFound),
            other => Err(UpstreamError::Status(other.as_u16())),
        }
    }
}

fn content_length(response: &http::Response<Incoming>) -> Option<u64> {
    response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// An upstream body being read, bounded by a byte limit.
pub struct BlobBody {
    body: Incoming,
    received: u64,
    limit: u64,
}

impl BlobBody {
    /// The next chunk of data; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        loop {
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            let frame = frame.map_err(|e| UpstreamError::Transport(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                self.received += data.len() as u64;
                if self.received > self.limit {
                    return Err(UpstreamError::TooLarge(self.limit));
                }
                if !data.is_empty() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_checked() {
        let up: Upstream = "https://aggregator.example.com/".parse().unwrap();
        assert_eq!(up.name, "https://aggregator.example.com");
        assert!("http://127.0.0.1:9000".parse::<Upstream>().is_ok());
        for bad in [
            "ftp://x",
            "aggregator.example.com",
            "http://",
            "http://x/?a=1",
            "",
        ] {
            assert!(bad.parse::<Upstream>().is_err(), "{bad}");
        }
    }
}
