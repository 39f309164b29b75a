//! A small client for a gateway (or any aggregator/publisher-compatible URL), used by the
//! `put` and `get` subcommands: uploads and downloads with progress, and a download is checked
//! against its Blob ID before anything is written.

use bytes::Bytes;
use codec::BlobId;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::io::{IsTerminal, Write};
use std::path::Path;

/// What went wrong talking to the gateway.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad gateway URL {0:?}")]
    BadUrl(String),
    #[error("cannot reach the gateway: {0}")]
    Transport(String),
    #[error("the gateway answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("unexpected answer: {0}")]
    Protocol(String),
    #[error(
        "downloaded bytes do not match Blob ID {expected} (they hash to {actual}); nothing written"
    )]
    Mismatch { expected: BlobId, actual: BlobId },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A progress line on standard error, only when it is a terminal.
struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    shown: bool,
}

impl Progress {
    fn new(label: &str, total: Option<u64>) -> Self {
        Self {
            label: label.to_owned(),
            total,
            done: 0,
            shown: std::io::stderr().is_terminal(),
        }
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        if !self.shown {
            return;
        }
        let line = match self.total {
            Some(total) if total > 0 => format!(
                "\r{} {:>5.1}% {}/{} KiB",
                self.label,
                self.done as f64 * 100.0 / total as f64,
                self.done >> 10,
                total >> 10
            ),
            _ => format!("\r{} {} KiB", self.label, self.done >> 10),
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn finish(&self) {
        if self.shown {
            let _ = std::io::stderr().write_all(b"\r\x1b[2K");
        }
    }
}

fn url(base: &str, path: &str) -> Result<Uri, ClientError> {
    format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .map_err(|_| ClientError::BadUrl(base.to_owned()))
}

/// The message of a Walrus JSON error envelope, or the body as text.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned())
}

/// Upload `data` (named `label` for progress) with `PUT /v1/blobs`; returns its Blob ID.
pub async fn put(
    base: &str,
    token: Option<&str>,
    label: &str,
    data: Bytes,
) -> Result<BlobId, ClientError> {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let total = data.len() as u64;
    // Feed the body in pieces so the progress line follows the upload.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let mut progress = Progress::new(label, Some(total));
    let feeder = tokio::spawn(async move {
        for start in (0..data.len()).step_by(256 << 10) {
            let piece = data.slice(start..(start + (256 << 10)).min(data.len()));
            progress.advance(piece.len() as u64);
            if tx.send(piece).await.is_err() {
                break;
            }
        }
        progress.finish();
    });
    let body = ChannelBody { rx, total };
    let mut request = Request::builder()
        .method(Method::PUT)
        .uri(url(base, "/v1/blobs")?)
        .header(http::header::CONTENT_LENGTH, total)
        .header(http::header::CONTENT_TYPE, "application/octet-stream");
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(body)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| ClientError::Transport(e.to_string()));
    let _ = feeder.await;
    let response = response?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(ClientError::Status {
            status: status.as_u16(),
            message: error_message(&body),
        });
    }
    let answer: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let id = answer["newlyCreated"]["blobObject"]["blobId"]
        .as_str()
        .or_else(|| answer["alreadyCertified"]["blobId"].as_str())
        .ok_or_else(|| ClientError::Protocol(format!("no blobId in {answer}")))?;
    id.parse()
        .map_err(|e| ClientError::Protocol(format!("bad blobId {id:?}: {e}")))
}

/// An upload body fed through a channel, with its exact length.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    total: u64,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|piece| piece.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.total)
    }
}

/// The committee size a gateway reports on `/status`.
pub async fn n_shards(base: &str) -> Result<u16, ClientError> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .get(url(base, "/status")?)
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    response
        .headers()
        .get("x-walrus-n-shards")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ClientError::Protocol(
                "the gateway does not report its committee size; pass --n-shards".into(),
            )
        })
}

/// Download blob `id`, check it against its ID for `n_shards`, and write it to `out` (atomically,
/// via a temporary file and a rename) or to standard output.
pub async fn get(
    base: &str,
    id: BlobId,
    n_shards: u16,
    out: Option<&Path>,
) -> Result<u64, ClientError> {
    let bytes = fetch_verified(base, id, n_shards).await?;
    match out {
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut temp = tempfile::NamedTempFile::new_in(dir)?;
            temp.write_all(&bytes)?;
            temp.as_file().sync_all()?;
            temp.persist(path).map_err(|e| ClientError::Io(e.error))?;
        }
        None => std::io::stdout().lock().write_all(&bytes)?,
    }
    Ok(bytes.len() as u64)
}

/// Download blob `id` into memory and check it against its ID for `n_shards`; nothing is
/// returned unless it matches.
pub async fn fetch_verified(base: &str, id: BlobId, n_shards: u16) -> Result<Bytes, ClientError> {
    let config =
        codec::EncodingConfig::new(n_shards).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .get(url(base, &format!("/v1/blobs/{id}"))?)
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    let status = response.status();
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = response.into_body();
    if status != StatusCode::OK {
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Err(ClientError::Status {
            status: status.as_u16(),
            message: error_message(&bytes),
        });
    }
    let max = config.max_blob_size();
    if declared.is_some_and(|len| len > max) {
        return Err(ClientError::Protocol(format!(
            "the blob is larger than the {max}-byte maximum"
        )));
    }
    let mut progress = Progress::new(&id.to_string()[..8], declared);
    let mut data = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ClientError::Transport(format!("download interrupted: {e}")))?;
        if let Ok(chunk) = frame.into_data() {
            if data.len() as u64 + chunk.len() as u64 > max {
                return Err(ClientError::Protocol(format!(
                    "the blob is larger than the {max}-byte maximum"
                )));
            }
            progress.advance(chunk.len() as u64);
            data.extend_from_slice(&chunk);
        }
    }
    progress.finish();
    let bytes = Bytes::from(data);
    let check = bytes.clone();
    let actual = tokio::task::spawn_blocking(move || codec::blob_id(n_shards, &check))
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    if actual != id {
        return Err(ClientError::Mismatch {
            expected: id,
            actual,
        });
    }
    Ok(bytes)
}
