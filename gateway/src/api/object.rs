//! `GET`/`HEAD /v1/blobs/by-object-id/{object_id}`, as the Walrus aggregator serves it
//! (`crates/walrus-service/src/client/daemon/routes.rs`, `get_blob_by_object_id`): read the Sui
//! `Blob` object (or the `SharedBlob` wrapping one) through the chain reader, take its Blob ID,
//! and answer exactly as `GET /v1/blobs/{blob_id}` would (the same cache and fill, `Range`,
//! `ETag`, read options, 451 for a blocked blob), plus the blob's attributes (its `Metadata`
//! field) named in `--allowed-headers` as response headers, on success answers only, never
//! replacing a header the blob answer already has. Other attributes are dropped.
//!
//! Errors: a malformed object ID is 400 `INVALID_OBJECT_ID`; an object the chain does not have
//! is 404 `BLOB_NOT_FOUND` (the aggregator's answer); an object that is not the Walrus
//! package's `Blob`/`SharedBlob`, or whose bytes do not decode as one, is 502 (nothing is
//! served: the full node's answer cannot be used); a full node that cannot be reached is 503;
//! a gateway without a chain (static committee, the embedded network, upstreams) is 501.
//!
//! Lookups are reused for `--object-cache-ttl` (10 s by default, [`ObjectLookups`]) and
//! concurrent lookups of one object make one full-node request, so a popular object costs the
//! full node one read per TTL however many clients ask; failures are not kept. An attribute
//! edit or a deletion is seen at most that long after it lands.
//!
//! The answer's `Cache-Control` is short ([`OBJECT_CACHE_CONTROL`]) whatever the blob's: the
//! bytes behind a Blob ID never change, but an object's attributes can be edited and the object
//! deleted, so a downstream cache must not keep them for a year.

use super::body::Body;
use super::error::ApiError;
use super::range::RangeRequest;
use super::{Api, Want};
use crate::chain_reader::ChainError;
use crate::fill::ReadError;
use chain::ObjectId;
use codec::BlobId;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `Cache-Control` of every by-object-id answer that serves a blob.
pub const OBJECT_CACHE_CONTROL: &str = "public, max-age=60";

/// Objects kept at most this many at once by [`ObjectLookups`] (each a Blob ID and a few
/// attributes).
const OBJECT_CACHE_ENTRIES: u64 = 10_000;

/// What a lookup found: the object's Blob ID and its attributes.
type Resolved = Arc<(BlobId, Option<Vec<(String, String)>>)>;

/// Recent successful lookups, by object, each for the TTL; `None` when the TTL is zero.
pub(super) struct ObjectLookups(Option<moka::future::Cache<ObjectId, Resolved>>);

impl ObjectLookups {
    pub(super) fn new(ttl: Duration) -> Self {
        Self((!ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(OBJECT_CACHE_ENTRIES)
                .time_to_live(ttl)
                .build()
        }))
    }
}

/// Why a by-object-id request failed before the blob read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("malformed Sui object ID {0:?}: expected 0x followed by up to 64 hex digits")]
    InvalidId(String),
    #[error("the Sui object {0} does not exist")]
    NotFound(ObjectId),
    /// The chain answered with an object of another type: not a blob this gateway can serve.
    #[error(
        "the Sui object {object} is not a Walrus Blob: the full node says its type is {got:?}"
    )]
    NotABlob { object: ObjectId, got: String },
    /// The chain's bytes do not decode as the type it claims.
    #[error("the full node's answer for {object} cannot be used: {reason}")]
    Malformed { object: ObjectId, reason: String },
    /// No full node answered (timeouts, transport, gRPC errors).
    #[error("the Sui full node could not be read: {0}")]
    ChainUnavailable(String),
    #[error(
        "this gateway reads no chain, so it cannot resolve Sui object IDs; start it on a \
         chain-backed network (--network, --walrus-config)"
    )]
    NoChain,
}

impl ObjectError {
    /// The fixed word of `gateway_object_lookups_total{result}`.
    fn metric(&self) -> &'static str {
        match self {
            ObjectError::InvalidId(_) => "invalid_id",
            ObjectError::NotFound(_) => "not_found",
            ObjectError::NotABlob { .. } => "not_a_blob",
            ObjectError::Malformed { .. } => "malformed",
            ObjectError::ChainUnavailable(_) => "chain_error",
            ObjectError::NoChain => "no_chain",
        }
    }

    fn from_chain(object: ObjectId, e: ChainError) -> Self {
        match e {
            ChainError::NotFound { object: missing } if missing == object => {
                ObjectError::NotFound(object)
            }
            ChainError::WrongType { object: o, got, .. } if o == object => {
                ObjectError::NotABlob { object, got }
            }
            // A wrongly typed attributes field, undecodable bytes, an answer that breaks the
            // protocol: the full node's answer is unusable.
            e @ (ChainError::WrongType { .. }
            | ChainError::Decode { .. }
            | ChainError::Malformed { .. }
            | ChainError::NotFound { .. }) => ObjectError::Malformed {
                object,
                reason: e.to_string(),
            },
            e => ObjectError::ChainUnavailable(e.to_string()),
        }
    }
}

/// `0x` + 1 to 64 hex digits (Sui's literal form; short forms are left-padded), or exactly 64
/// hex digits without the prefix, as Sui's `ObjectID::from_str` takes them.
pub fn parse_object_id(text: &str) -> Result<ObjectId, ObjectError> {
    let invalid = || ObjectError::InvalidId(text.chars().take(80).collect());
    if text.len() == 64 && !text.starts_with("0x") && !text.starts_with("0X") {
        return format!("0x{text}").parse().map_err(|_| invalid());
    }
    text.parse().map_err(|_| invalid())
}

impl Api {
    /// `GET`/`HEAD /v1/blobs/by-object-id/{object_id}`.
    pub(super) async fn blob_by_object_id<B>(
        &self,
        request: &Request<B>,
        object_id: &str,
    ) -> Result<Response<Body>, ApiError> {
        super::read_only(request.method())?;
        let options = super::parity::read_options(request.uri().query())?;
        let (id, attributes) = match self.resolve_object(object_id).await {
            Ok(found) => found,
            Err(e) => {
                self.telemetry.object_lookup(e.metric(), 0);
                return Err(e.into());
            }
        };
        if self.filler.blocklist().is_blocked(&id) {
            self.telemetry.blocked("object");
            return Err(ApiError::Read(ReadError::Blocked));
        }
        if options.strict {
            Box::pin(super::parity::strict_check(self, id)).await?;
        }
        let range = request
            .headers()
            .get(header::RANGE)
            .map_or(RangeRequest::Whole, |v| super::range::parse(v.as_bytes()));
        let mut response = Box::pin(self.blob(request, id, Want::Blob(range))).await?;
        if response.status().is_success() {
            let headers = response.headers_mut();
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(OBJECT_CACHE_CONTROL),
            );
            if let Some(attributes) = &attributes {
                add_attribute_headers(headers, attributes, &self.allowed_headers);
            }
        }
        Ok(response)
    }

    /// The object's Blob ID and attributes: reused from [`ObjectLookups`] (counted as
    /// `cached`) or read from the chain (counted by result).
    async fn resolve_object(
        &self,
        text: &str,
    ) -> Result<(BlobId, Option<Vec<(String, String)>>), ObjectError> {
        let object = parse_object_id(text)?;
        let Some(cache) = &self.objects.0 else {
            let found = self.lookup_object(object).await?;
            return Ok((found.0, found.1.clone()));
        };
        // Only the request whose lookup ran counts it; the others found it cached (or joined
        // it in flight).
        let ran = AtomicBool::new(false);
        let found = cache
            .try_get_with(object, async {
                ran.store(true, Ordering::Relaxed);
                self.lookup_object(object).await
            })
            .await
            .map_err(|e| (*e).clone())?;
        if !ran.load(Ordering::Relaxed) {
            self.telemetry.object_lookup("cached", 0);
        }
        Ok((found.0, found.1.clone()))
    }

    /// Read the object from the chain, counted.
    async fn lookup_object(&self, object: ObjectId) -> Result<Resolved, ObjectError> {
        let reader = self
            .filler
            .committees()
            .chain_reader()
            .ok_or(ObjectError::NoChain)?
            .clone();
        let read = reader.read_blob_object(&object).await.map_err(|e| {
            let e = ObjectError::from_chain(object, e);
            if matches!(
                e,
                ObjectError::Malformed { .. } | ObjectError::NotABlob { .. }
            ) {
                tracing::warn!(%object, error = %e, "unusable Blob object from the full node");
            }
            e
        })?;
        self.telemetry.object_lookup("found", read.rpcs);
        Ok(Arc::new((BlobId(read.blob.blob_id), read.attributes)))
    }
}

/// The aggregator's `populate_response_headers_from_attributes`: each attribute whose key is a
/// valid header name in `allowed` and whose value is a valid header value, unless the answer
/// has that header already. Keys are compared case-insensitively (header names are).
pub fn add_attribute_headers(
    headers: &mut HeaderMap,
    attributes: &[(String, String)],
    allowed: &[HeaderName],
) {
    for (key, value) in attributes {
        let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
            continue;
        };
        let Ok(value) = HeaderValue::from_str(value) else {
            continue;
        };
        if headers.contains_key(&name) || !allowed.contains(&name) {
            continue;
        }
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_parse_as_sui_parses_them() {
        let full = "0x56ae1c86e17db174ea002f8340e28880bc8a8587c56e8604a4fa6b1170b23a60";
        let id = parse_object_id(full).unwrap();
        assert_eq!(id.to_string(), full);
        assert_eq!(parse_object_id(&full[2..]).unwrap(), id);
        assert_eq!(parse_object_id("0x2").unwrap().0[31], 2);
        for bad in ["", "0x", "zz", "0xzz", &format!("{full}00"), "56ae", "0x-1"] {
            assert!(
                matches!(parse_object_id(bad), Err(ObjectError::InvalidId(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_allowed_attributes_become_headers_and_none_replaces_one() {
        let allowed: Vec<HeaderName> = ["content-type", "content-disposition", "link"]
            .into_iter()
            .map(HeaderName::from_static)
            .collect();
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static("\"x\""));
        headers.insert(header::LINK, HeaderValue::from_static("<a>"));
        let attributes: Vec<(String, String)> = [
            ("Content-Type", "image/png"),
            ("x-secret", "nope"),
            ("etag", "\"forged\""),
            ("link", "<b>"),
            ("content-disposition", "bad\nvalue"),
            ("bad name", "v"),
            ("", "v"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        add_attribute_headers(&mut headers, &attributes, &allowed);
        assert_eq!(headers[header::CONTENT_TYPE], "image/png");
        assert_eq!(headers[header::LINK], "<a>", "never replaced");
        assert_eq!(headers[header::ETAG], "\"x\"");
        assert!(!headers.contains_key("x-secret"));
        assert!(!headers.contains_key(header::CONTENT_DISPOSITION));
        assert_eq!(headers.len(), 3);
    }
}
