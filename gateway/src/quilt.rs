//! Quilts in the gateway: a verified quilt blob, held as the rows the cache keeps, read as
//! columns ([`codec::quilt::ColumnSource`]) without copying it; and a bounded parser of the
//! publisher's `multipart/form-data` upload (`PUT /v1/quilts`).
//!
//! A quilt is read through the normal verified blob path ([`crate::fill::Filler`]): from the
//! memory tier its rows are sliced in place, from the disk tier or a fill it is read once.
//! Only bytes that verified against the quilt's Blob ID are ever decoded.

use crate::cache::Hit;
use crate::fill::{Filler, ReadError, Source};
use bytes::Bytes;
use codec::quilt::ColumnSource;
use codec::{BlobId, EncodingConfig};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A whole quilt as a list of verified chunks (the cache's rows, or one buffer).
pub struct QuiltBytes {
    chunks: Vec<Bytes>,
    /// Start offset of each chunk.
    offsets: Vec<usize>,
    len: usize,
    symbol_size: usize,
    n_rows: usize,
    n_cols: usize,
    /// Where the bytes came from: `hit-memory`, `hit-disk` or `miss`.
    pub x_cache: &'static str,
}

impl QuiltBytes {
    /// View `chunks` (a blob of `config`'s committee) as a quilt; its length must be a whole
    /// `kp × ks` symbol matrix.
    pub fn new(
        config: &EncodingConfig,
        chunks: Vec<Bytes>,
        x_cache: &'static str,
    ) -> Result<Self, codec::quilt::QuiltError> {
        let chunks: Vec<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let mut offsets = Vec::with_capacity(chunks.len());
        let mut len = 0;
        for c in &chunks {
            offsets.push(len);
            len += c.len();
        }
        let n_rows = usize::from(config.n_primary_source_symbols());
        let n_cols = usize::from(config.n_secondary_source_symbols());
        let multiple = n_rows * n_cols;
        if len == 0 || !len.is_multiple_of(multiple) {
            return Err(codec::quilt::QuiltError::NotAligned { len, multiple });
        }
        Ok(Self {
            chunks,
            offsets,
            len,
            symbol_size: len / multiple,
            n_rows,
            n_cols,
            x_cache,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append bytes `[at, at + n)` of the blob.
    fn append_flat(&self, mut at: usize, mut n: usize, out: &mut Vec<u8>) {
        while n > 0 {
            let i = self.offsets.partition_point(|&o| o <= at) - 1;
            let chunk = &self.chunks[i];
            let from = at - self.offsets[i];
            let take = (chunk.len() - from).min(n);
            out.extend_from_slice(&chunk[from..from + take]);
            at += take;
            n -= take;
        }
    }
}

impl ColumnSource for QuiltBytes {
    fn column_size(&self) -> usize {
        self.symbol_size * self.n_rows
    }

    fn n_columns(&self) -> usize {
        self.n_cols
    }

    fn has_column(&self, col: usize) -> bool {
        col < self.n_cols
    }

    fn append(&self, col: usize, mut offset: usize, mut len: usize, out: &mut Vec<u8>) {
        let ss = self.symbol_size;
        let row_size = ss * self.n_cols;
        while len > 0 {
            let row = offset / ss;
            let within = offset % ss;
            let n = (ss - within).min(len);
            self.append_flat(row * row_size + col * ss + within, n, out);
            offset += n;
            len -= n;
        }
    }
}

/// Why a quilt could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The blob could not be read, as for `GET /v1/blobs`.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The blob verified, but its length is no quilt's.
    #[error("blob {0} is not a quilt: {1}")]
    NotAQuilt(BlobId, codec::quilt::QuiltError),
}

/// The verified quilt `id`, from the cache or a fill (started or joined), at most `limit` bytes.
pub async fn load(filler: &Filler, id: BlobId, limit: u64) -> Result<QuiltBytes, LoadError> {
    let config = *filler.topology().config();
    let not_a_quilt = |e: codec::quilt::QuiltError| LoadError::NotAQuilt(id, e);
    let too_large = |len: u64| ReadError::TooLarge { len, max: limit };
    let (chunks, x_cache) = match filler.cache().get(&id).await {
        Some(Hit::Memory(blob, tier)) => (blob.slices(0, blob.len()), tier.header_value()),
        Some(Hit::Disk(blob)) => {
            let len = blob.len();
            if len > limit {
                return Err(too_large(len).into());
            }
            let bytes = tokio::task::spawn_blocking(move || blob.into_reader(0, len)?.read_all())
                .await
                .map_err(|e| ReadError::Internal(format!("disk read task failed: {e}")))?
                .map_err(|e| ReadError::Internal(format!("disk cache: {e}")))?;
            (vec![bytes], crate::cache::Tier::Disk.header_value())
        }
        None => {
            if filler.join(&id).is_none() {
                let len = filler.metadata(id).await?.unencoded_length();
                if len > limit {
                    return Err(too_large(len).into());
                }
            }
            match filler.open(id).await? {
                Source::Cached(blob, tier) => (blob.slices(0, blob.len()), tier.header_value()),
                Source::Disk(blob) => {
                    let len = blob.len();
                    let bytes =
                        tokio::task::spawn_blocking(move || blob.into_reader(0, len)?.read_all())
                            .await
                            .map_err(|e| {
                                ReadError::Internal(format!("disk read task failed: {e}"))
                            })?
                            .map_err(|e| ReadError::Internal(format!("disk cache: {e}")))?;
                    (vec![bytes], "miss")
                }
                Source::Filling(mut reader) => {
                    let meta = reader.metadata().await?;
                    let want = meta.unencoded_length();
                    let mut rows = Vec::new();
                    let mut got = 0u64;
                    while let Some(row) = reader.next_row().await {
                        let row = row?.1;
                        got += row.len() as u64;
                        rows.push(row);
                    }
                    if got != want {
                        return Err(ReadError::Internal(format!(
                            "the fill of {id} ended after {got} of {want} bytes"
                        ))
                        .into());
                    }
                    (rows, "miss")
                }
            }
        }
    };
    QuiltBytes::new(&config, chunks, x_cache).map_err(not_a_quilt)
}

/// A patch read from a cold quilt's columns, cached by its patch ID.
#[derive(Debug)]
pub struct CachedPatch {
    pub patch: codec::quilt::QuiltPatch,
    pub data: Bytes,
}

/// What cold patch reads keep, so the next read of the same quilt or patch fetches nothing
/// again, and concurrent reads of one patch or one quilt's index share a single fetch
/// (moka's `try_get_with` runs one init per key and hands its result to every waiter).
pub struct QuiltCaches {
    /// Quilt ID → its decoded index (indexes are small: at most 10 columns).
    pub indexes: moka::future::Cache<BlobId, Arc<codec::quilt::QuiltIndex>>,
    /// Patch ID → the patch, weighed by its bytes.
    pub patches: moka::future::Cache<codec::quilt::QuiltPatchId, Arc<CachedPatch>>,
}

impl QuiltCaches {
    /// Caches holding at most `patch_bytes` of patches and 10 000 indexes.
    pub fn new(patch_bytes: u64) -> Self {
        Self {
            indexes: moka::future::Cache::builder().max_capacity(10_000).build(),
            patches: moka::future::Cache::builder()
                .weigher(|_, p: &Arc<CachedPatch>| {
                    u32::try_from(p.data.len().saturating_add(256)).unwrap_or(u32::MAX)
                })
                .max_capacity(patch_bytes)
                // A purged quilt takes its patches out of memory (`forget_quilt`).
                .support_invalidation_closures()
                .build(),
        }
    }
}

impl QuiltCaches {
    /// Forget quilt `quilt_id`'s index and every patch of it held in memory (an operator's
    /// purge: the next read goes to the disk tier, which the purge emptied too, then the nodes).
    pub async fn forget_quilt(&self, quilt_id: BlobId) {
        self.indexes.invalidate(&quilt_id).await;
        if let Err(e) = self
            .patches
            .invalidate_entries_if(move |id, _| id.quilt_id == quilt_id)
        {
            tracing::warn!(%quilt_id, error = %e, "could not drop a purged quilt's patches from memory");
        }
    }
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub data: Bytes,
}

/// Why an upload is not the form the publisher takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("Content-Type must be multipart/form-data with a boundary")]
    NotMultipart,
    #[error("malformed multipart body: {0}")]
    Malformed(String),
    #[error("more than {0} parts")]
    TooManyParts(usize),
    #[error("invalid _metadata: {0}")]
    Metadata(String),
}

/// The boundary of a `multipart/form-data` Content-Type.
pub fn boundary(content_type: &str) -> Result<String, FormError> {
    let mut params = content_type.split(';');
    let kind = params.next().unwrap_or("").trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return Err(FormError::NotMultipart);
    }
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("boundary") {
            let v = v.trim().trim_matches('"');
            // RFC 2046: 1 to 70 characters.
            if v.is_empty() || v.len() > 70 {
                return Err(FormError::NotMultipart);
            }
            return Ok(v.to_string());
        }
    }
    Err(FormError::NotMultipart)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The parts of a `multipart/form-data` body (RFC 7578), at most `max_parts`; part bodies are
/// slices of `body` (no copies). Each part needs a `Content-Disposition: form-data; name=...`.
pub fn parse_form(body: &Bytes, boundary: &str, max_parts: usize) -> Result<Vec<Part>, FormError> {
    let malformed = |what: &str| FormError::Malformed(what.to_string());
    let delimiter = format!("--{boundary}");
    let start = find(body, delimiter.as_bytes(), 0).ok_or_else(|| malformed("no boundary"))?;
    let next_delimiter = format!("\r\n--{boundary}");
    let mut at = start + delimiter.len();
    let mut parts = Vec::new();
    loop {
        // After a delimiter: "--" closes the body, CRLF starts a part.
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding (spaces, tabs) may precede the CRLF.
        while at < body.len() && (body[at] == b' ' || body[at] == b'\t') {
            at += 1;
        }
        if !body[at..].starts_with(b"\r\n") {
            return Err(malformed("a boundary is not followed by CRLF"));
        }
        at += 2;
        let headers_end =
            find(body, b"\r\n\r\n", at).ok_or_else(|| malformed("part headers do not end"))?;
        let headers = std::str::from_utf8(&body[at..headers_end])
            .map_err(|_| malformed("part headers are not UTF-8"))?;
        let name = part_name(headers)?;
        let data_start = headers_end + 4;
        let data_end = find(body, next_delimiter.as_bytes(), data_start)
            .ok_or_else(|| malformed("a part is not closed by the boundary"))?;
        if parts.len() == max_parts {
            return Err(FormError::TooManyParts(max_parts));
        }
        parts.push(Part {
            name,
            data: body.slice(data_start..data_end),
        });
        at = data_end + next_delimiter.len();
    }
}

/// `name` of a part's `Content-Disposition: form-data; name="..."`.
fn part_name(headers: &str) -> Result<String, FormError> {
    for line in headers.split("\r\n") {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        let mut rest = value.trim();
        let kind_end = rest.find(';').unwrap_or(rest.len());
        if !rest[..kind_end].trim().eq_ignore_ascii_case("form-data") {
            return Err(FormError::Malformed(
                "a part's Content-Disposition is not form-data".into(),
            ));
        }
        rest = &rest[kind_end..];
        while let Some(r) = rest.strip_prefix(';') {
            let r = r.trim_start();
            let eq = r.find('=').unwrap_or(r.len());
            let key = r[..eq].trim();
            let r = r.get(eq + 1..).unwrap_or("");
            let (value, after) = if let Some(q) = r.strip_prefix('"') {
                // A quoted string; `\"` and `\\` escape.
                let mut out = String::new();
                let mut chars = q.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, e)) = chars.next() {
                                out.push(e);
                            }
                        }
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => out.push(c),
                    }
                }
                let end = end
                    .ok_or_else(|| FormError::Malformed("unterminated quoted parameter".into()))?;
                (out, &q[end..])
            } else {
                let end = r.find(';').unwrap_or(r.len());
                (r[..end].trim().to_string(), &r[end..])
            };
            if key.eq_ignore_ascii_case("name") {
                return Ok(value);
            }
            rest = after.trim_start();
        }
        return Err(FormError::Malformed(
            "a part's Content-Disposition has no name".into(),
        ));
    }
    Err(FormError::Malformed(
        "a part has no Content-Disposition".into(),
    ))
}

/// The publisher's `_metadata` part: `[{"identifier": ..., "tags": {...}}]`; tag values that are
/// not strings are kept as their JSON text, as the publisher does.
pub fn parse_metadata(
    json: &[u8],
) -> Result<BTreeMap<String, BTreeMap<String, String>>, FormError> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| FormError::Metadata(e.to_string()))?;
    let items = value
        .as_array()
        .ok_or_else(|| FormError::Metadata("must be a JSON array".into()))?;
    let mut out = BTreeMap::new();
    for item in items {
        let identifier = item
            .get("identifier")
            .and_then(|v| v.as_str())
            .ok_or_else(|| FormError::Metadata("every entry needs a string identifier".into()))?;
        let tags = match item.get("tags") {
            None | Some(serde_json::Value::Null) => BTreeMap::new(),
            Some(serde_json::Value::Object(map)) => map
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect(),
            Some(_) => return Err(FormError::Metadata("tags must be a JSON object".into())),
        };
        if out.insert(identifier.to_string(), tags).is_some() {
            return Err(FormError::Metadata(format!(
                "duplicate identifiers found in _metadata: {identifier:?}"
            )));
        }
    }
    Ok(out)
}

/// A `multipart/form-data` body of `files` (identifier, bytes) for `PUT /v1/quilts`, with
/// `boundary` (which must not occur in any file: [`pick_boundary`]).
pub fn form_body(files: &[(String, Bytes)], boundary: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(files.iter().map(|f| f.1.len() + 200).sum());
    for (identifier, data) in files {
        let name = identifier.replace('\\', "\\\\").replace('"', "\\\"");
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        out.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
        );
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// A boundary that occurs in none of `files`.
pub fn pick_boundary(files: &[(String, Bytes)]) -> String {
    (0u64..)
        .map(|i| {
            format!(
                "walrus-gateway-quilt-{:016x}",
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )
        })
        .find(|b| {
            files
                .iter()
                .all(|(_, d)| find(d, b.as_bytes(), 0).is_none())
        })
        .expect("some boundary is free")
}

/// Store `files` (identifier, bytes) as one quilt with the gateway's `PUT /v1/quilts`; the
/// patch ID of each identifier, in the quilt's (identifier) order.
pub async fn put_quilt(
    base: &str,
    token: Option<&str>,
    files: &[(String, Bytes)],
) -> Result<Vec<(String, codec::quilt::QuiltPatchId)>, crate::client::ClientError> {
    use crate::client::ClientError;
    use http_body_util::{BodyExt, Full};
    let boundary = pick_boundary(files);
    let body = form_body(files, &boundary);
    let uri: http::Uri = format!("{}/v1/quilts", base.trim_end_matches('/'))
        .parse()
        .map_err(|_| ClientError::BadUrl(base.to_owned()))?;
    let mut request = http::Request::builder()
        .method(http::Method::PUT)
        .uri(uri)
        .header(
            http::header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        );
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = client
        .request(request)
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?
        .to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
        ClientError::Protocol(String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned())
    })?;
    if status != http::StatusCode::OK {
        return Err(ClientError::Status {
            status: status.as_u16(),
            message: answer["error"]["message"]
                .as_str()
                .map_or_else(|| answer.to_string(), str::to_owned),
        });
    }
    let patches = answer["storedQuiltBlobs"]
        .as_array()
        .ok_or_else(|| ClientError::Protocol(format!("no storedQuiltBlobs in {answer}")))?;
    patches
        .iter()
        .map(|p| {
            let identifier = p["identifier"].as_str().unwrap_or_default().to_owned();
            let id = p["quiltPatchId"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| ClientError::Protocol(format!("bad quiltPatchId in {p}")))?;
            Ok((identifier, id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse_as_curl_sends_them() {
        let body = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a b\"; filename=\"f.txt\"\r\n\
              Content-Type: text/plain\r\n\r\nhello\r\n--XyZ\r\n\
              Content-Disposition: form-data; name=\"_metadata\"\r\n\r\n\
              [{\"identifier\":\"a b\",\"tags\":{\"k\":\"v\",\"n\":1}}]\r\n--XyZ--\r\n",
        );
        let b = boundary("multipart/form-data; boundary=XyZ").unwrap();
        let parts = parse_form(&body, &b, 10).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "a b");
        assert_eq!(&parts[0].data[..], b"hello");
        let meta = parse_metadata(&parts[1].data).unwrap();
        assert_eq!(meta["a b"]["k"], "v");
        assert_eq!(meta["a b"]["n"], "1");
        assert!(matches!(
            parse_form(&body, &b, 1),
            Err(FormError::TooManyParts(1))
        ));
        assert!(parse_form(&body.slice(..40), &b, 10).is_err());
        assert!(boundary("application/json").is_err());
    }

    #[test]
    fn chunks_read_as_columns() {
        let config = EncodingConfig::new(10).unwrap();
        let data = b"hello".to_vec();
        let quilt = codec::quilt::encode_quilt(
            &config,
            &[codec::quilt::PatchInput {
                identifier: "x".into(),
                tags: BTreeMap::new(),
                data: &data,
            }],
        )
        .unwrap();
        let all = Bytes::from(quilt.data.clone());
        // Uneven chunks, as rows or a disk read might come.
        let (x, y) = (7, all.len() / 2 + 3);
        let chunks = vec![all.slice(..x), all.slice(x..y), all.slice(y..)];
        let q = QuiltBytes::new(&config, chunks, "miss").unwrap();
        let index = codec::quilt::decode_index(&q).unwrap();
        let p = codec::quilt::decode_patch(&q, usize::from(index.patches[0].start_index)).unwrap();
        assert_eq!(p.data, data);
    }
}
