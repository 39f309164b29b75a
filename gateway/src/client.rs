//! A small client for a gateway (or any aggregator/publisher-compatible `http://` URL), used by
//! the `put`, `get`, `blob-id` and `verify-proof` subcommands.
//!
//! * **Bounded memory.** [`put_file`] streams the file as the request body (256 KiB pieces, at
//!   most four in flight); [`get`] streams the blob and keeps at most a few of its rows in
//!   memory (a row is `1/kp` of the blob: 1.5 MB of a 500 MB blob on 1000 shards), whatever the
//!   blob's size.
//! * **Nothing unverified is written.** [`get`] first fetches the blob's metadata
//!   (`/v1/blobs/{id}/metadata`) and checks it against the Blob ID, then checks every row of the
//!   blob as it arrives, as the systematic primary sliver it is, against that metadata. Only
//!   verified rows are written: to standard output as they verify, or to a temporary file next
//!   to the target that is renamed into place once the whole blob verified (and deleted
//!   otherwise).
//! * **The server's answer.** A refused upload reports the gateway's status and message (413
//!   with its limit, 401, 403, 451), even when the gateway answers before the body is sent.
//! * **Progress** on standard error when it is a terminal (bytes, rate, ETA), nothing otherwise.

use bytes::{Bytes, BytesMut};
use codec::{BlobId, Sliver, SliverKind, VerifiedMetadata};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Bytes of an upload read from the file at once.
const PUT_PIECE: usize = 256 << 10;

/// What went wrong talking to the gateway. Each variant's message says it whole: none carries
/// a `source` that would repeat it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad gateway URL {0:?} (expected http://host[:port])")]
    BadUrl(String),
    #[error(
        "{0:?} is neither a Blob ID (43 base64url characters) nor a quilt patch ID (50 base64url characters)"
    )]
    BadId(String),
    #[error(
        "the quilt patch is longer than the {max} bytes its columns can hold; nothing written"
    )]
    PatchTooLong { max: u64 },
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
    #[error(
        "Blob ID {id} and the gateway's metadata for it do not match ({reason}); nothing written"
    )]
    BadMetadata { id: BlobId, reason: String },
    #[error("row {row} of the blob does not verify against its metadata ({reason})")]
    RowMismatch { row: u16, reason: String },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot write {path}: {message}")]
    Write {
        path: String,
        message: String,
        kind: std::io::ErrorKind,
    },
}

impl ClientError {
    /// A write to standard output failed because its reader went away (`get … | head`).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ClientError::Write { kind, .. } if *kind == std::io::ErrorKind::BrokenPipe)
    }
}

/// An error and its causes in one line, each cause once (hyper nests the same message).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn transport(e: &(dyn std::error::Error + 'static)) -> ClientError {
    ClientError::Transport(chain(e))
}

/// A progress bar on standard error when it is a terminal; hidden otherwise.
fn progress_bar(label: &str, total: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:12}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{msg} {bytes} {binary_bytes_per_sec}")
                .expect("a valid template"),
        ),
    };
    // The line fits 80 columns: long file names keep their end.
    let label = match label.char_indices().rev().nth(15) {
        Some((start, _)) if label.chars().count() > 16 => format!("…{}", &label[start..]),
        _ => label.to_owned(),
    };
    bar.with_message(label)
}

fn url(base: &str, path: &str) -> Result<Uri, ClientError> {
    let uri: Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .map_err(|_| ClientError::BadUrl(base.to_owned()))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(ClientError::BadUrl(base.to_owned()));
    }
    Ok(uri)
}

/// The message of a Walrus JSON error envelope, or the body as text.
fn error_message(body: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
    if message.trim().is_empty() {
        "(no message)".to_owned()
    } else {
        message.trim().to_owned()
    }
}

/// A non-200 answer as an error, with the message of its (bounded) body.
async fn status_error(status: StatusCode, body: Incoming) -> ClientError {
    let body = http_body_util::Limited::new(body, 64 << 10)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    ClientError::Status {
        status: status.as_u16(),
        message: error_message(&body),
    }
}

/// Upload the file at `path` (`-`: standard input) with `PUT /v1/blobs`, streaming it as the
/// body; returns its Blob ID. `label` names it in the progress bar.
pub async fn put_file(
    base: &str,
    token: Option<&str>,
    path: &Path,
    label: &str,
) -> Result<BlobId, ClientError> {
    let read_error = |e: std::io::Error| ClientError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let (reader, total): (Box<dyn AsyncRead + Send + Unpin>, Option<u64>) =
        if path == Path::new("-") {
            (Box::new(tokio::io::stdin()), None)
        } else {
            let file = tokio::fs::File::open(path).await.map_err(read_error)?;
            let len = file.metadata().await.map_err(read_error)?.len();
            (Box::new(file), Some(len))
        };
    let progress = progress_bar(label, total);
    let result = put_stream(base, token, reader, total, progress.clone()).await;
    progress.finish_and_clear();
    result.map_err(|e| match e {
        PutError::Read(e) => read_error(e),
        PutError::Client(e) => e,
    })
}

enum PutError {
    Read(std::io::Error),
    Client(ClientError),
}

impl From<ClientError> for PutError {
    fn from(e: ClientError) -> Self {
        PutError::Client(e)
    }
}

async fn put_stream(
    base: &str,
    token: Option<&str>,
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    total: Option<u64>,
    progress: ProgressBar,
) -> Result<BlobId, PutError> {
    let uri = url(base, "/v1/blobs")?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| transport(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| transport(&e))?;
    let connection = tokio::spawn(connection);

    // The file is read here, piece by piece, only as fast as the connection takes it.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let read_failed = Arc::new(std::sync::Mutex::new(None::<std::io::Error>));
    let failed = read_failed.clone();
    let feeder = tokio::spawn(async move {
        let mut sent = 0u64;
        loop {
            let mut piece = BytesMut::with_capacity(PUT_PIECE);
            let read = async {
                while piece.len() < PUT_PIECE {
                    if reader.read_buf(&mut piece).await? == 0 {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            };
            if let Err(e) = read.await {
                let copy = std::io::Error::new(e.kind(), e.to_string());
                *failed.lock().expect("not poisoned") = Some(e);
                let _ = tx.send(Err(copy)).await;
                return;
            }
            if piece.is_empty() {
                return;
            }
            sent += piece.len() as u64;
            if total.is_some_and(|t| sent > t) {
                let e = std::io::Error::other("the file grew while it was sent");
                *failed.lock().expect("not poisoned") =
                    Some(std::io::Error::new(e.kind(), e.to_string()));
                let _ = tx.send(Err(e)).await;
                return;
            }
            progress.inc(piece.len() as u64);
            if tx.send(Ok(piece.freeze())).await.is_err() {
                return;
            }
        }
    });
    let mut request = Request::builder()
        .method(Method::PUT)
        .uri(uri.path())
        .header(
            http::header::HOST,
            uri.authority().map_or("", |a| a.as_str()),
        )
        .header(http::header::CONTENT_TYPE, "application/octet-stream");
    if let Some(total) = total {
        request = request.header(http::header::CONTENT_LENGTH, total);
    }
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(ChannelBody { rx, total })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let response = sender.send_request(request).await;
    feeder.abort();
    if let Some(e) = read_failed.lock().expect("not poisoned").take() {
        return Err(PutError::Read(e));
    }
    let response = match response {
        Ok(response) => response,
        Err(e) => {
            // A gateway that refuses an upload (413, 401, 403, 451) answers and closes before
            // the body is sent; hyper reports the failed write, not the answer.
            connection.abort();
            return Err(early_answer(base, token, total, &e).await.into());
        }
    };
    let status = response.status();
    if status != StatusCode::OK {
        return Err(status_error(status, response.into_body()).await.into());
    }
    let body = http_body_util::Limited::new(response.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| ClientError::Transport(chain(&*e)))?
        .to_bytes();
    connection.abort();
    let answer: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let id = answer["newlyCreated"]["blobObject"]["blobId"]
        .as_str()
        .or_else(|| answer["alreadyCertified"]["blobId"].as_str())
        .ok_or_else(|| ClientError::Protocol(format!("no blobId in {answer}")))?;
    Ok(id
        .parse()
        .map_err(|e| ClientError::Protocol(format!("bad blobId {id:?}: {e}")))?)
}

/// The gateway's answer to an upload whose body could not be sent: the same request again with
/// `Expect: 100-continue` and no body sent until the gateway agrees, so a refusal arrives as a
/// status. If the gateway would take the body after all, the original transport error stands.
async fn early_answer(
    base: &str,
    token: Option<&str>,
    total: Option<u64>,
    original: &hyper::Error,
) -> ClientError {
    let failed = || transport(original);
    let Ok(uri) = url(base, "/v1/blobs") else {
        return failed();
    };
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let Ok(mut stream) = tokio::net::TcpStream::connect((host, uri.port_u16().unwrap_or(80))).await
    else {
        return failed();
    };
    let length = match total {
        Some(total) => format!("Content-Length: {total}\r\n"),
        None => "Transfer-Encoding: chunked\r\n".to_owned(),
    };
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "PUT /v1/blobs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n{length}{auth}Expect: 100-continue\r\nConnection: close\r\n\r\n",
        uri.authority().map_or("", |a| a.as_str())
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return failed();
    }
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 || answer.len() > 64 << 10 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head_len)) = parsed.parse(&answer) {
                let code = parsed.code.unwrap_or(0);
                if code == 100 {
                    // The gateway would take the body: this is not a refusal.
                    return Ok::<_, std::io::Error>(None);
                }
                let length = parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
                if length.is_some_and(|l: usize| answer.len() >= head_len + l) {
                    return Ok(Some((code, head_len)));
                }
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&answer) {
            Ok(httparse::Status::Complete(head_len)) => {
                Ok(Some((parsed.code.unwrap_or(0), head_len)))
            }
            _ => Ok(None),
        }
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), read).await {
        Ok(Ok(Some((code, head_len)))) if code >= 300 => ClientError::Status {
            status: code,
            message: error_message(&answer[head_len..]),
        },
        _ => failed(),
    }
}

/// An upload body fed through a channel, with its exact length when known.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    total: Option<u64>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|piece| piece.map(|b| b.map(Frame::data)))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.total {
            Some(total) => hyper::body::SizeHint::with_exact(total),
            None => hyper::body::SizeHint::default(),
        }
    }
}

fn get_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The committee size a gateway reports on `/status`.
pub async fn n_shards(base: &str) -> Result<u16, ClientError> {
    let response = get_client()
        .get(url(base, "/status")?)
        .await
        .map_err(|e| transport(&e))?;
    response
        .headers()
        .get("x-walrus-n-shards")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ClientError::Protocol(
                "the gateway does not report its committee size (x-walrus-n-shards on /status); pass --n-shards".into(),
            )
        })
}

/// The blob's metadata from `/v1/blobs/{id}/metadata`, verified against `id` for `n_shards`.
pub async fn metadata(
    base: &str,
    id: BlobId,
    n_shards: u16,
) -> Result<VerifiedMetadata, ClientError> {
    let config =
        codec::EncodingConfig::new(n_shards).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let response = get_client()
        .get(url(base, &format!("/v1/blobs/{id}/metadata"))?)
        .await
        .map_err(|e| transport(&e))?;
    let status = response.status();
    if status != StatusCode::OK {
        return Err(status_error(status, response.into_body()).await);
    }
    // A BlobMetadataWithId: the ID, the length, and 64 bytes per shard.
    let limit = 64 + 66 * usize::from(n_shards);
    let bytes = http_body_util::Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| ClientError::BadMetadata {
            id,
            reason: chain(&*e),
        })?
        .to_bytes();
    VerifiedMetadata::from_bcs(id, &bytes, config).map_err(|e| ClientError::BadMetadata {
        id,
        reason: e.to_string(),
    })
}

/// Where [`get`] writes the verified blob.
pub enum Output<'a> {
    /// Verified rows as they verify: on failure, a verified prefix has been written.
    Stdout,
    /// A temporary file next to this path, renamed to it once the whole blob verified.
    File(&'a Path),
}

/// Download blob `id`, verify it row by row against its metadata for `n_shards`, and write it
/// to `out`. Returns the blob's length.
pub async fn get(
    base: &str,
    id: BlobId,
    n_shards: u16,
    out: Output<'_>,
) -> Result<u64, ClientError> {
    let meta = Arc::new(metadata(base, id, n_shards).await?);
    match out {
        Output::Stdout => {
            // Unbuffered writes of whole rows to descriptor 1 (std's stdout scans for newlines).
            let name = "standard output";
            let fd = std::os::fd::AsFd::as_fd(&std::io::stdout())
                .try_clone_to_owned()
                .map_err(|e| write_error(name, e))?;
            let (len, _) = stream_verified(base, &meta, std::fs::File::from(fd), name).await?;
            Ok(len)
        }
        Output::File(path) => {
            let shown = path.display().to_string();
            // Dropping `temp_path` on any failure below deletes the file: nothing is left at
            // the target.
            let (file, temp_path) = temp_beside(path)?;
            let (len, file) = stream_verified(base, &meta, file, &shown).await?;
            let file = tokio::task::spawn_blocking(move || file.sync_all())
                .await
                .map_err(|e| ClientError::Protocol(format!("sync task failed: {e}")))?;
            file.map_err(|e| write_error(&shown, e))?;
            temp_path
                .persist(path)
                .map_err(|e| write_error(&shown, e.error))?;
            Ok(len)
        }
    }
}

/// A temporary file in `path`'s directory, renamed onto `path` once every byte is written and
/// checked (so a failed `get` never leaves a partial file at the target).
fn temp_beside(path: &Path) -> Result<(std::fs::File, tempfile::TempPath), ClientError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(".walrus-get-")
        .tempfile_in(dir)
        .map_err(|e| write_error(&dir.display().to_string(), e))?;
    Ok(temp.into_parts())
}

fn write_error(path: &str, e: std::io::Error) -> ClientError {
    ClientError::Write {
        path: path.to_owned(),
        message: e.to_string(),
        kind: e.kind(),
    }
}

/// Stream the blob `meta` describes into `out`, each row written only once it verified.
/// This task reads the network and cuts rows; one thread verifies and writes them in order, so
/// at most three rows are held at once (one filling, one queued, one verifying) and every
/// allocation comes from two threads' heaps.
async fn stream_verified<W: std::io::Write + Send + 'static>(
    base: &str,
    meta: &Arc<VerifiedMetadata>,
    out: W,
    out_name: &str,
) -> Result<(u64, W), ClientError> {
    let id = meta.blob_id();
    let len = meta.unencoded_length();
    let row_len = meta.config().row_len(meta.symbol_size()) as usize;
    let response = get_client()
        .get(url(base, &format!("/v1/blobs/{id}"))?)
        .await
        .map_err(|e| transport(&e))?;
    let status = response.status();
    if status != StatusCode::OK {
        return Err(status_error(status, response.into_body()).await);
    }
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|d| d != len) {
        return Err(ClientError::Protocol(format!(
            "the gateway sends {} bytes; the blob's metadata says {len}",
            declared.unwrap_or_default()
        )));
    }
    let progress = progress_bar(&id.to_string()[..8], Some(len));
    let (rows_tx, rows_rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let worker = {
        let (meta, progress, name) = (meta.clone(), progress.clone(), out_name.to_owned());
        std::thread::Builder::new()
            .name("get-verify".into())
            .spawn(move || {
                let _ = done_tx.send(verify_and_write(&meta, rows_rx, out, &name, &progress));
            })
            .map_err(|e| ClientError::Protocol(format!("cannot start the verifier: {e}")))?
    };
    let mut body = response.into_body();
    let mut received = 0u64;
    let mut row = BytesMut::with_capacity(row_len.min(len as usize));
    let read = async {
        loop {
            let Some(frame) = body.frame().await else {
                break;
            };
            let frame = frame.map_err(|e| {
                ClientError::Transport(format!("download interrupted: {}", chain(&e)))
            })?;
            let Ok(mut chunk) = frame.into_data() else {
                continue;
            };
            received += chunk.len() as u64;
            if received > len {
                return Err(ClientError::Protocol(format!(
                    "the gateway sent more than the blob's {len} bytes"
                )));
            }
            while !chunk.is_empty() {
                let take = (row_len - row.len()).min(chunk.len());
                row.extend_from_slice(&chunk.split_to(take));
                if row.len() == row_len {
                    let full = std::mem::replace(&mut row, BytesMut::with_capacity(row_len));
                    if rows_tx.send(full.freeze()).await.is_err() {
                        // The verifier stopped: its error is the answer.
                        return Ok(());
                    }
                }
            }
        }
        if received < len {
            return Err(ClientError::Transport(format!(
                "download interrupted after {received} of {len} bytes"
            )));
        }
        if !row.is_empty() {
            let _ = rows_tx.send(row.freeze()).await;
        }
        Ok(())
    }
    .await;
    drop(rows_tx);
    let written = done_rx
        .await
        .map_err(|_| ClientError::Protocol("the verifier thread failed".into()));
    let _ = worker.join();
    progress.finish_and_clear();
    // A verification failure explains a download cut short by it.
    let (written, out) = match (written, read) {
        (Ok(Err(e)), _) | (Err(e), _) => return Err(e),
        (Ok(Ok(done)), Ok(())) => done,
        (Ok(Ok(_)), Err(e)) => return Err(e),
    };
    if written != len {
        return Err(ClientError::Protocol(format!(
            "{written} of the blob's {len} bytes arrived"
        )));
    }
    Ok((written, out))
}

/// The verifier thread: rows in order from `rows`, each checked, then written to `out`.
fn verify_and_write<W: std::io::Write>(
    meta: &VerifiedMetadata,
    mut rows: tokio::sync::mpsc::Receiver<Bytes>,
    mut out: W,
    name: &str,
    progress: &ProgressBar,
) -> Result<(u64, W), ClientError> {
    let (mut index, mut written) = (0u16, 0u64);
    while let Some(row) = rows.blocking_recv() {
        let row = verify_row(meta, index, row)?;
        out.write_all(&row).map_err(|e| write_error(name, e))?;
        written += row.len() as u64;
        progress.inc(row.len() as u64);
        index += 1;
    }
    out.flush().map_err(|e| write_error(name, e))?;
    Ok((written, out))
}

/// Check `bytes` as systematic row `row` of the blob: zero padded past the blob's end, it must
/// expand to the primary-sliver hash the verified metadata holds for that pair.
fn verify_row(meta: &VerifiedMetadata, row: u16, bytes: Bytes) -> Result<Bytes, ClientError> {
    let full = meta.config().primary_sliver_len(meta.symbol_size());
    let data = if bytes.len() == full {
        bytes.clone()
    } else {
        let mut padded = BytesMut::zeroed(full);
        padded[..bytes.len()].copy_from_slice(&bytes);
        padded.freeze()
    };
    meta.verify_sliver(Sliver {
        kind: SliverKind::Primary,
        index: row,
        symbol_size: meta.symbol_size(),
        data,
    })
    .map(|_| bytes)
    .map_err(|e| ClientError::RowMismatch {
        row,
        reason: e.to_string(),
    })
}

/// Download blob `id` into memory and check it against its ID for `n_shards`; nothing is
/// returned unless it matches. For small blobs that are used whole (proofs, models), from any
/// aggregator: it needs no metadata endpoint.
pub async fn fetch_verified(base: &str, id: BlobId, n_shards: u16) -> Result<Bytes, ClientError> {
    let config =
        codec::EncodingConfig::new(n_shards).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let response = get_client()
        .get(url(base, &format!("/v1/blobs/{id}"))?)
        .await
        .map_err(|e| transport(&e))?;
    let status = response.status();
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if status != StatusCode::OK {
        return Err(status_error(status, response.into_body()).await);
    }
    let max = config.max_blob_size();
    if declared.is_some_and(|len| len > max) {
        return Err(ClientError::Protocol(format!(
            "the blob is larger than the {max}-byte maximum"
        )));
    }
    let mut body = response.into_body();
    let mut data = Vec::with_capacity(declared.unwrap_or(0).min(max) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ClientError::Transport(format!("download interrupted: {}", chain(&e))))?;
        if let Ok(chunk) = frame.into_data() {
            if data.len() as u64 + chunk.len() as u64 > max {
                return Err(ClientError::Protocol(format!(
                    "the blob is larger than the {max}-byte maximum"
                )));
            }
            data.extend_from_slice(&chunk);
        }
    }
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

/// What `get` and `verify-proof` take: a Blob ID, or a quilt patch ID (issue 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentId {
    Blob(BlobId),
    Patch(codec::quilt::QuiltPatchId),
}

impl std::str::FromStr for ContentId {
    type Err = ClientError;

    fn from_str(text: &str) -> Result<Self, ClientError> {
        if let Ok(id) = text.parse::<BlobId>() {
            return Ok(ContentId::Blob(id));
        }
        if let Ok(id) = text.parse::<codec::quilt::QuiltPatchId>() {
            return Ok(ContentId::Patch(id));
        }
        Err(ClientError::BadId(text.chars().take(80).collect()))
    }
}

/// The most bytes patch `id` can have in a quilt described by `meta`: its columns, whole.
/// `None` when the patch's columns are not columns of that quilt.
pub fn patch_capacity(meta: &VerifiedMetadata, id: &codec::quilt::QuiltPatchId) -> Option<u64> {
    let config = meta.config();
    let columns = u64::from(config.n_secondary_source_symbols());
    if id.start_index >= id.end_index || u64::from(id.end_index) > columns {
        return None;
    }
    let column = u64::from(meta.symbol_size()) * u64::from(config.n_primary_source_symbols());
    Some(u64::from(id.end_index - id.start_index) * column)
}

/// The answer to `GET /v1/blobs/by-quilt-patch-id/{id}`, once its status is 200.
async fn patch_response(
    base: &str,
    id: &codec::quilt::QuiltPatchId,
) -> Result<hyper::Response<Incoming>, ClientError> {
    let response = get_client()
        .get(url(base, &format!("/v1/blobs/by-quilt-patch-id/{id}"))?)
        .await
        .map_err(|e| transport(&e))?;
    let status = response.status();
    if status != StatusCode::OK {
        return Err(status_error(status, response.into_body()).await);
    }
    Ok(response)
}

/// Download quilt patch `id` into memory, at most `max` bytes. Its bytes are NOT checked
/// against the quilt's Blob ID (that needs the quilt's columns): use it for content that
/// authenticates itself, such as a signed proof.
pub async fn fetch_patch(
    base: &str,
    id: &codec::quilt::QuiltPatchId,
    max: u64,
) -> Result<Bytes, ClientError> {
    let response = patch_response(base, id).await?;
    let bytes = http_body_util::Limited::new(response.into_body(), max as usize)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ClientError::PatchTooLong { max }
            } else {
                ClientError::Transport(format!("download interrupted: {}", chain(&*e)))
            }
        })?
        .to_bytes();
    Ok(bytes)
}

/// Download quilt patch `id` and write it to `out`, streaming (a few chunks in memory). What is
/// checked: the quilt's metadata against its Blob ID (the quilt exists and is what the ID
/// names), that the patch's columns are columns of it, that the body is no longer than those
/// columns and as long as the gateway declared. NOT checked: the patch's bytes against the
/// quilt's Blob ID, which needs the patch's column slivers (`get QUILT_ID` verifies the whole
/// quilt). Returns the patch's length.
pub async fn get_patch(
    base: &str,
    id: codec::quilt::QuiltPatchId,
    n_shards: u16,
    out: Output<'_>,
) -> Result<u64, ClientError> {
    let meta = metadata(base, id.quilt_id, n_shards).await?;
    let max = patch_capacity(&meta, &id).ok_or_else(|| {
        ClientError::Protocol(format!(
            "patch {id} names columns {}..{} that quilt {} does not have",
            id.start_index, id.end_index, id.quilt_id
        ))
    })?;
    let response = patch_response(base, &id).await?;
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(ClientError::PatchTooLong { max });
    }
    let mut body = response.into_body();
    match out {
        Output::Stdout => {
            let mut stdout = tokio::io::stdout();
            let len = copy_patch(&mut body, &mut stdout, "standard output", max, declared).await?;
            stdout
                .flush()
                .await
                .map_err(|e| write_error("standard output", e))?;
            Ok(len)
        }
        Output::File(path) => {
            let shown = path.display().to_string();
            // Dropping `temp_path` on any failure below deletes the file.
            let (file, temp_path) = temp_beside(path)?;
            let mut file = tokio::fs::File::from_std(file);
            let len = copy_patch(&mut body, &mut file, &shown, max, declared).await?;
            file.sync_all().await.map_err(|e| write_error(&shown, e))?;
            drop(file);
            temp_path
                .persist(path)
                .map_err(|e| write_error(&shown, e.error))?;
            Ok(len)
        }
    }
}

/// Copy a patch body to `out`, refusing more than `max` bytes, and a body that ends before its
/// declared length.
async fn copy_patch<W: tokio::io::AsyncWrite + Unpin>(
    body: &mut Incoming,
    out: &mut W,
    out_name: &str,
    max: u64,
    declared: Option<u64>,
) -> Result<u64, ClientError> {
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ClientError::Transport(format!("download interrupted: {}", chain(&e))))?;
        if let Ok(chunk) = frame.into_data() {
            len += chunk.len() as u64;
            if len > max {
                return Err(ClientError::PatchTooLong { max });
            }
            out.write_all(&chunk)
                .await
                .map_err(|e| write_error(out_name, e))?;
        }
    }
    if let Some(declared) = declared {
        if declared != len {
            return Err(ClientError::Transport(format!(
                "download interrupted after {len} of {declared} bytes"
            )));
        }
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Nested(&'static str, Option<Box<Nested>>);
    impl std::fmt::Display for Nested {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Nested {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn chain_names_each_cause_once() {
        let e = Nested(
            "client error (Connect)",
            Some(Box::new(Nested(
                "tcp connect error: Connection refused",
                Some(Box::new(Nested("Connection refused", None))),
            ))),
        );
        assert_eq!(
            chain(&e),
            "client error (Connect): tcp connect error: Connection refused"
        );
    }

    #[test]
    fn urls_must_be_plain_http_with_a_host() {
        assert!(url("http://127.0.0.1:1/", "/status").is_ok());
        assert!(matches!(
            url("https://example.com", "/status"),
            Err(ClientError::BadUrl(_))
        ));
        assert!(matches!(
            url("127.0.0.1:1", "/x"),
            Err(ClientError::BadUrl(_))
        ));
    }
}
