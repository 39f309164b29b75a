//! The blobs a run reads: published through the target's publisher API (`PUT /v1/blobs`, with
//! deterministic content so reads can be compared byte for byte) or listed in a file of Blob
//! IDs. Sizes unknown from a list are learned with `HEAD` or from the first full read.

use crate::client::{ClientError, Target, Transport};
use crate::parse::SizeDist;
use crate::workload::Rng;
use bytes::Bytes;
use codec::BlobId;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Marks a size not known yet.
const UNKNOWN: u64 = u64::MAX;
/// Largest publisher reply read.
const MAX_PUBLISH_REPLY: usize = 1 << 20;
/// Publishes in flight at once.
const PUBLISH_CONCURRENCY: usize = 4;
/// Largest list of Blob IDs accepted.
const MAX_LIST_BYTES: u64 = 256 << 20;

/// Why the population could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PopulationError {
    #[error("cannot read the blob list {path}: {source}")]
    ReadList {
        path: String,
        source: std::io::Error,
    },
    #[error("blob list line {line}: {reason}")]
    ListLine { line: usize, reason: String },
    #[error("the blob list has no Blob IDs")]
    EmptyList,
    #[error("publishing blob {index} ({size} bytes) failed: {reason}")]
    Publish {
        index: usize,
        size: u64,
        reason: String,
    },
    #[error("the publisher's reply is not a Walrus store result: {0}")]
    PublishReply(String),
}

/// How blob content was made, so any byte of it can be regenerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentSeed(pub u64);

/// One blob of the population.
#[derive(Debug)]
pub struct Blob {
    pub id: BlobId,
    /// `/v1/blobs/{id}`.
    pub path: String,
    size: AtomicU64,
    /// Set once a full read of it was handed to the verifier.
    verified_once: AtomicBool,
    /// Present for blobs this run published.
    pub content: Option<ContentSeed>,
}

impl Blob {
    pub fn new(id: BlobId, size: Option<u64>, content: Option<ContentSeed>) -> Self {
        Self {
            path: format!("/v1/blobs/{id}"),
            id,
            size: AtomicU64::new(size.unwrap_or(UNKNOWN)),
            verified_once: AtomicBool::new(false),
            content,
        }
    }

    pub fn size(&self) -> Option<u64> {
        match self.size.load(Ordering::Relaxed) {
            UNKNOWN => None,
            n => Some(n),
        }
    }

    /// Learn the size; returns the size known before, if any (a different one is an error
    /// for the caller to report).
    pub fn learn_size(&self, size: u64) -> Option<u64> {
        self.size
            .compare_exchange(UNKNOWN, size, Ordering::Relaxed, Ordering::Relaxed)
            .err()
    }

    /// True the first time it is called (until [`Blob::unclaim_first_check`]).
    pub fn claim_first_check(&self) -> bool {
        !self.verified_once.swap(true, Ordering::Relaxed)
    }

    pub fn unclaim_first_check(&self) {
        self.verified_once.store(false, Ordering::Relaxed);
    }

    /// Bytes `[start, start + len)` of the content, for published blobs.
    pub fn expected(&self, start: u64, len: u64) -> Option<Vec<u8>> {
        self.content.map(|seed| content_range(seed, start, len))
    }
}

/// Byte `i` of blob content with this seed: eight bytes per SplitMix64 output of `i / 8`, so
/// any range can be regenerated without the bytes before it.
pub fn content_range(seed: ContentSeed, start: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let end = start.saturating_add(len);
    let mut i = start;
    while i < end {
        let word = i / 8;
        let bytes = Rng::new(seed.0 ^ word.wrapping_mul(0xA076_1D64_78BD_642F))
            .next_u64()
            .to_le_bytes();
        let from = (i % 8) as usize;
        let take = (8 - from).min((end - i) as usize);
        out.extend_from_slice(&bytes[from..from + take]);
        i += take as u64;
    }
    out
}

/// Parse a blob list: one Blob ID per line, optionally followed by its size in bytes
/// (`ID 4096`); `#` starts a comment.
pub fn parse_list(text: &str) -> Result<Vec<(BlobId, Option<u64>)>, PopulationError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| PopulationError::ListLine {
            line: i + 1,
            reason,
        };
        let mut words = line.split_whitespace();
        let id_text = words.next().unwrap_or_default();
        let id: BlobId = id_text
            .parse()
            .map_err(|e: codec::BlobIdParseError| bad(format!("{id_text:?}: {e}")))?;
        let size = match words.next() {
            None => None,
            Some(s) => Some(crate::parse::size(s).map_err(|e| bad(format!("size {s:?}: {e}")))?),
        };
        if let Some(extra) = words.next() {
            return Err(bad(format!("unexpected {extra:?} after the size")));
        }
        out.push((id, size));
    }
    if out.is_empty() {
        return Err(PopulationError::EmptyList);
    }
    Ok(out)
}

/// Read a blob list file.
pub fn read_list(path: &Path) -> Result<Vec<Blob>, PopulationError> {
    let read_err = |source| PopulationError::ReadList {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > MAX_LIST_BYTES {
        return Err(PopulationError::ListLine {
            line: 0,
            reason: format!("the file is larger than {MAX_LIST_BYTES} bytes"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    Ok(parse_list(&text)?
        .into_iter()
        .map(|(id, size)| Blob::new(id, size, None))
        .collect())
}

/// The Blob ID in a publisher reply: `{"newlyCreated":{"blobObject":{"blobId":…}}}` or
/// `{"alreadyCertified":{"blobId":…}}`.
pub fn parse_publish_reply(body: &[u8]) -> Result<BlobId, PopulationError> {
    let bad = |why: &str| PopulationError::PublishReply(why.to_owned());
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let id = value
        .pointer("/newlyCreated/blobObject/blobId")
        .or_else(|| value.pointer("/alreadyCertified/blobId"))
        .ok_or_else(|| bad("neither newlyCreated.blobObject.blobId nor alreadyCertified.blobId"))?
        .as_str()
        .ok_or_else(|| bad("blobId is not a string"))?;
    id.parse()
        .map_err(|e: codec::BlobIdParseError| bad(&format!("blobId {id:?}: {e}")))
}

/// Publish `bytes` (a model) through the target's `PUT /v1/blobs`; returns its Blob ID.
pub async fn publish_bytes(
    transport: &Arc<dyn Transport>,
    target: &Target,
    bytes: &'static [u8],
    timeout: Duration,
) -> Result<BlobId, PopulationError> {
    let fail = |reason: String| PopulationError::Publish {
        index: 0,
        size: bytes.len() as u64,
        reason,
    };
    let request = Request::builder()
        .method(Method::PUT)
        .uri(target.uri("/v1/blobs"))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(Bytes::from_static(bytes)))
        .map_err(|e| fail(e.to_string()))?;
    let exchange = async {
        let response = transport.send(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, ClientError>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| fail(format!("no reply within {timeout:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    if status != StatusCode::OK {
        return Err(fail(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )));
    }
    parse_publish_reply(&body)
}

/// Publish `count` blobs with sizes drawn from `sizes`; content is deterministic in `seed`.
pub async fn publish(
    transport: Arc<dyn Transport>,
    target: &Target,
    count: usize,
    sizes: &SizeDist,
    seed: u64,
    timeout: Duration,
) -> Result<Vec<Blob>, PopulationError> {
    let mut rng = Rng::new(seed);
    let plan: Vec<(u64, ContentSeed)> = (0..count)
        .map(|_| (sizes.sample(rng.unit()), ContentSeed(rng.next_u64())))
        .collect();
    let slots = Arc::new(Semaphore::new(PUBLISH_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, &(size, content)) in plan.iter().enumerate() {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let transport = transport.clone();
        let uri = target.uri("/v1/blobs");
        tasks.spawn(async move {
            let _permit = permit;
            let result = async {
                let bytes = tokio::task::spawn_blocking(move || content_range(content, 0, size))
                    .await
                    .map_err(|e| e.to_string())?;
                let request = Request::builder()
                    .method(Method::PUT)
                    .uri(uri)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(Full::new(Bytes::from(bytes)))
                    .map_err(|e| e.to_string())?;
                let exchange = async {
                    let response = transport.send(request).await?;
                    let status = response.status();
                    let body = response.into_body().collect().await?.to_bytes();
                    Ok::<_, ClientError>((status, body))
                };
                let (status, body) = tokio::time::timeout(timeout, exchange)
                    .await
                    .map_err(|_| format!("no reply within {timeout:?}"))?
                    .map_err(|e| e.to_string())?;
                if status != StatusCode::OK {
                    let excerpt =
                        String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                    return Err(format!("{status}: {excerpt}"));
                }
                if body.len() > MAX_PUBLISH_REPLY {
                    return Err("reply larger than 1 MiB".into());
                }
                parse_publish_reply(&body).map_err(|e| e.to_string())
            }
            .await;
            (index, size, result)
        });
    }
    let mut ids = vec![None; count];
    while let Some(joined) = tasks.join_next().await {
        let (index, size, result) = joined.map_err(|e| PopulationError::Publish {
            index: 0,
            size: 0,
            reason: format!("publishing task failed: {e}"),
        })?;
        let id = result.map_err(|reason| PopulationError::Publish {
            index,
            size,
            reason,
        })?;
        ids[index] = Some(id);
    }
    Ok(plan
        .into_iter()
        .zip(ids)
        .map(|((size, content), id)| {
            Blob::new(id.expect("every task reported"), Some(size), Some(content))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_agree_with_the_whole() {
        let seed = ContentSeed(12345);
        let whole = content_range(seed, 0, 100);
        assert_eq!(whole.len(), 100);
        for (start, len) in [(0, 1), (3, 10), (8, 8), (7, 2), (95, 5), (50, 0)] {
            assert_eq!(
                content_range(seed, start, len),
                &whole[start as usize..(start + len) as usize],
                "{start}+{len}"
            );
        }
        assert_ne!(
            content_range(ContentSeed(1), 0, 64),
            content_range(ContentSeed(2), 0, 64)
        );
    }

    #[test]
    fn blob_lists_parse_with_sizes_and_comments() {
        let a = BlobId([1; 32]);
        let b = BlobId([2; 32]);
        let text = format!("# blobs\n{a} 4KiB\n\n{b}   # no size\n");
        assert_eq!(parse_list(&text).unwrap(), vec![(a, Some(4096)), (b, None)]);
        assert!(matches!(
            parse_list("# nothing\n"),
            Err(PopulationError::EmptyList)
        ));
        let err = parse_list(&format!("{a}\nnot-an-id\n")).unwrap_err();
        assert!(
            matches!(err, PopulationError::ListLine { line: 2, .. }),
            "{err}"
        );
        assert!(parse_list(&format!("{a} 12 extra")).is_err());
        assert!(parse_list(&format!("{a} lots")).is_err());
    }

    #[test]
    fn publisher_replies() {
        let id = BlobId([7; 32]);
        let created = format!(
            r#"{{"newlyCreated":{{"blobObject":{{"id":"0x1","blobId":"{id}","size":5}},"cost":1}}}}"#
        );
        assert_eq!(parse_publish_reply(created.as_bytes()).unwrap(), id);
        let certified = format!(r#"{{"alreadyCertified":{{"blobId":"{id}","endEpoch":53}}}}"#);
        assert_eq!(parse_publish_reply(certified.as_bytes()).unwrap(), id);
        for bad in [
            "not json",
            "{}",
            r#"{"alreadyCertified":{"blobId":5}}"#,
            r#"{"alreadyCertified":{"blobId":"short"}}"#,
        ] {
            assert!(
                matches!(
                    parse_publish_reply(bad.as_bytes()),
                    Err(PopulationError::PublishReply(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn sizes_are_learned_once() {
        let blob = Blob::new(BlobId([0; 32]), None, None);
        assert_eq!(blob.size(), None);
        assert_eq!(blob.learn_size(10), None);
        assert_eq!(blob.size(), Some(10));
        assert_eq!(blob.learn_size(11), Some(10));
        assert!(blob.claim_first_check());
        assert!(!blob.claim_first_check());
        blob.unclaim_first_check();
        assert!(blob.claim_first_check());
    }
}
