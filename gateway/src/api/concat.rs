//! `GET`/`POST /v1alpha/blobs/concat`: several blobs, verified as any blob read, streamed one
//! after the other in the order asked (the Walrus aggregator's route).
//!
//! `GET ?ids=a,b,c` (percent-encoded commas accepted) or `POST` with the JSON body
//! `{"ids": [...], "strict_consistency_check": bool?, "skip_consistency_check": bool?}`; unknown
//! parameters or fields are a 400, as the aggregator's `deny_unknown_fields` makes them. The
//! `ETag` is the aggregator's (base64url of the SHA-256 of the IDs joined by commas; quoted
//! here, as an ETag must be). Every blob's verified metadata is read before the answer starts,
//! so a missing (404) or blocked (451) blob is a real status, never a cut-off 200, and the
//! answer has a `Content-Length`. Each blob then comes from the cache or a fill, through a
//! bounded channel: memory holds a few frames per request, not the blobs. At most
//! [`MAX_IDS`] IDs.

use super::body::{Body, RequestSlot};
use super::error::ApiError;
use super::parity::read_options;
use super::Api;
use crate::fill::{Filler, ReadError, Source};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use codec::BlobId;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body as HttpBody;
use tokio::sync::mpsc;

/// Most blobs in one concatenation.
pub const MAX_IDS: usize = 256;
/// Largest JSON body of a `POST`.
const MAX_BODY: usize = 64 << 10;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConcatBody {
    ids: Vec<String>,
    #[serde(default)]
    strict_consistency_check: Option<bool>,
    #[serde(default)]
    skip_consistency_check: Option<bool>,
}

pub(super) async fn route<B>(api: &Api, request: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = request.method().clone();
    let slot = RequestSlot::acquire(&api.slots, request.extensions().get(), &api.telemetry)?;
    let content_type = super::content_type(&request);
    let texts = match method {
        Method::GET | Method::HEAD => ids_from_query(request.uri().query())?,
        Method::POST => {
            let body = super::admin::read_body(request.into_body(), MAX_BODY).await?;
            ids_from_body(&body)?
        }
        _ => {
            return Err(ApiError::MethodNotAllowed {
                allow: "GET, HEAD, POST",
            })
        }
    };
    if texts.is_empty() {
        return Err(ApiError::BadRequest(
            "at least one blob ID or object ID must be provided".into(),
        ));
    }
    if texts.len() > MAX_IDS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_IDS} IDs per concatenation, got {}",
            texts.len()
        )));
    }
    let ids = texts
        .iter()
        .map(|text| resolve(text))
        .collect::<Result<Vec<_>, _>>()?;
    if ids.iter().any(|id| api.filler.blocklist().is_blocked(id)) {
        api.telemetry.blocked("concat");
        return Err(ApiError::Read(ReadError::Blocked));
    }
    let mut total = 0u64;
    for id in &ids {
        total += Box::pin(api.filler.metadata(*id)).await?.unencoded_length();
    }
    let etag = format!("\"{}\"", etag(&texts));
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        stream(api.filler.clone(), ids, total).for_blob(metrics::Counter::noop(), slot)
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    super::set_blob_headers(headers, &etag);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    super::set_content_type(headers, content_type);
    Ok(response)
}

/// The aggregator's concat ETag: base64url (no padding) of SHA-256 over the IDs as given,
/// joined by commas.
pub fn etag(texts: &[String]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, texts.join(",").as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn ids_from_query(query: Option<&str>) -> Result<Vec<String>, ApiError> {
    let mut ids = None;
    let mut rest = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("ids", value)) => {
                if ids.replace(percent_decode(value)?).is_some() {
                    return Err(ApiError::BadRequest("duplicate field `ids`".into()));
                }
            }
            _ => rest.push(pair),
        }
    }
    // What is left must be the read options (unknown parameters are refused there).
    read_options(Some(&rest.join("&")))?;
    let ids = ids.ok_or_else(|| ApiError::BadRequest("missing field `ids`".into()))?;
    Ok(ids
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}

fn ids_from_body(body: &[u8]) -> Result<Vec<String>, ApiError> {
    let body: ConcatBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"ids\": [...], \"strict_consistency_check\"?: bool, \
             \"skip_consistency_check\"?: bool}}: {e}"
        ))
    })?;
    if body.strict_consistency_check == Some(true) && body.skip_consistency_check == Some(true) {
        return Err(ApiError::InvalidConsistencyCheck);
    }
    Ok(body.ids)
}

/// A Blob ID; Sui object IDs (`0x` and hex), which the aggregator also takes here, need the
/// `Blob` object read from the chain, which this gateway does not do yet.
fn resolve(text: &str) -> Result<BlobId, ApiError> {
    if text.starts_with("0x") {
        return Err(ApiError::BadRequest(format!(
            "{:?} is a Sui object ID: this gateway concatenates blobs by Blob ID only",
            text.chars().take(70).collect::<String>()
        )));
    }
    super::parse_id(text)
}

/// `application/x-www-form-urlencoded` decoding of one value: `%XX` and `+`.
fn percent_decode(value: &str) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ApiError::BadRequest("malformed percent-encoding".into()))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::BadRequest("ids is not UTF-8".into()))
}

/// The blobs one after the other, `total` bytes if every one arrives.
fn stream(filler: Filler, ids: Vec<BlobId>, total: u64) -> Body {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for id in ids {
            let mut body = match open(&filler, id).await {
                Ok(body) => body,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Ok(data) = frame.into_data() {
                            if tx.send(Ok(data)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.0)).await;
                        return;
                    }
                }
            }
        }
    });
    Body::stream(rx, total)
}

/// The whole of one blob, from wherever it is.
pub(super) async fn open(filler: &Filler, id: BlobId) -> Result<Body, ReadError> {
    // A cached blob past its end epoch, or a deletable one due, is checked again first, as a
    // single blob read would be.
    Box::pin(filler.check_lifecycle(&id)).await?;
    Ok(match filler.open(id).await? {
        Source::Cached(blob, _) => Body::cached(&blob, 0, blob.len()),
        Source::Disk(blob) => {
            let len = blob.len();
            super::stream::from_disk(blob, 0, len)?
        }
        Source::Filling(mut reader) => {
            let meta = reader.ready().await?;
            super::stream::from_fill(reader, &meta, 0, meta.unencoded_length()).await?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_the_aggregators() {
        // base64url(SHA-256("a,b")), no padding: 43 characters.
        let tag = etag(&["a".into(), "b".into()]);
        assert_eq!(tag.len(), 43);
        assert_eq!(
            tag,
            URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, b"a,b").as_ref())
        );
        assert_ne!(tag, etag(&["b".into(), "a".into()]));
    }

    #[test]
    fn queries_and_bodies() {
        let id = BlobId([1; 32]).to_string();
        assert_eq!(
            ids_from_query(Some(&format!("ids={id}%2C{id}"))).unwrap(),
            vec![id.clone(), id.clone()]
        );
        assert_eq!(
            ids_from_query(Some(&format!("ids={id},&strict_consistency_check=true"))).unwrap(),
            vec![id.clone()]
        );
        assert!(matches!(
            ids_from_query(Some(&format!(
                "ids={id}&strict_consistency_check=true&skip_consistency_check=true"
            ))),
            Err(ApiError::InvalidConsistencyCheck)
        ));
        for bad in ["", "id=x", "ids=a&ids=b", "ids=a&foo=1", "ids=%zz"] {
            assert!(
                matches!(ids_from_query(Some(bad)), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
        assert_eq!(
            ids_from_body(format!("{{\"ids\":[\"{id}\"]}}").as_bytes()).unwrap(),
            vec![id.clone()]
        );
        assert!(matches!(
            ids_from_body(
                br#"{"ids":[],"strict_consistency_check":true,"skip_consistency_check":true}"#
            ),
            Err(ApiError::InvalidConsistencyCheck)
        ));
        assert!(matches!(
            ids_from_body(br#"{"ids":[],"extra":1}"#),
            Err(ApiError::BadRequest(_))
        ));
    }
}
