//! Forwarding uploads to a Walrus publisher (`--publisher URL`).
//!
//! Storing a blob on the real network needs on-chain registration and payment, which this
//! gateway does not do; a Walrus publisher the operator runs does. A chain-backed gateway
//! therefore sends the body of `PUT /v1/blobs` (and of stored inference proofs) to the
//! publisher's own `PUT /v1/blobs`, with the client's query parameters (`epochs`, `deletable`,
//! ...), and passes the publisher's answer through. Nothing the publisher says is trusted for
//! the cache: the gateway computes the Blob ID of the bytes itself, and caches them only when
//! the publisher's answer names that same ID.

use bytes::Bytes;
use codec::BlobId;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Largest publisher answer read (its JSON is a few hundred bytes).
const ANSWER_LIMIT: usize = 64 << 10;

/// What went wrong talking to the publisher.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublisherError {
    #[error("the publisher did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the publisher: {0}")]
    Transport(String),
    #[error("the publisher's answer is not usable: {0}")]
    Malformed(String),
}

/// A publisher's answer: its status and JSON body, passed through to the client.
#[derive(Debug, Clone)]
pub struct PublisherAnswer {
    pub status: StatusCode,
    pub json: serde_json::Value,
}

impl PublisherAnswer {
    /// The Blob ID a successful answer names (`newlyCreated.blobObject.blobId` or
    /// `alreadyCertified.blobId`).
    pub fn blob_id(&self) -> Option<BlobId> {
        let json = &self.json;
        json.pointer("/newlyCreated/blobObject/blobId")
            .or_else(|| json.pointer("/alreadyCertified/blobId"))?
            .as_str()?
            .parse()
            .ok()
    }
}

/// An HTTP(S) client for one publisher.
#[derive(Clone)]
pub struct PublisherClient {
    base: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl PublisherClient {
    /// `url` as `--publisher` gives it (checked like an upstream URL); `timeout` bounds a whole
    /// upload and its answer.
    pub fn new(url: &crate::upstream::Upstream, timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::web_pki_client_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            base: url.name.clone(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// `PUT {publisher}/v1/blobs[?query]` with `body`.
    pub async fn put(
        &self,
        query: Option<&str>,
        body: Bytes,
    ) -> Result<PublisherAnswer, PublisherError> {
        let uri = match query {
            Some(q) if !q.is_empty() => format!("{}/v1/blobs?{q}", self.base),
            _ => format!("{}/v1/blobs", self.base),
        };
        let exchange = async {
            let request = Request::put(uri)
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .body(Full::new(body))
                .map_err(|e| PublisherError::Transport(e.to_string()))?;
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| PublisherError::Transport(crate::nodes::error_chain(&e)))?;
            let status = response.status();
            let answer = Limited::new(response.into_body(), ANSWER_LIMIT)
                .collect()
                .await
                .map_err(|e| PublisherError::Transport(format!("reading the answer: {e}")))?
                .to_bytes();
            let json = serde_json::from_slice(&answer).map_err(|_| {
                PublisherError::Malformed(format!(
                    "HTTP {status} with a body that is not JSON: {:?}",
                    String::from_utf8_lossy(&answer[..answer.len().min(200)])
                ))
            })?;
            Ok(PublisherAnswer { status, json })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(PublisherError::Timeout(self.timeout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blob_id_comes_from_either_answer_form() {
        let id = BlobId([7; 32]);
        let created = PublisherAnswer {
            status: StatusCode::OK,
            json: serde_json::json!({"newlyCreated": {"blobObject": {"blobId": id.to_string(), "size": 3}}}),
        };
        assert_eq!(created.blob_id(), Some(id));
        let certified = PublisherAnswer {
            status: StatusCode::OK,
            json: serde_json::json!({"alreadyCertified": {"blobId": id.to_string()}}),
        };
        assert_eq!(certified.blob_id(), Some(id));
        let error = PublisherAnswer {
            status: StatusCode::BAD_REQUEST,
            json: serde_json::json!({"error": {"code": 400}}),
        };
        assert_eq!(error.blob_id(), None);
    }
}
