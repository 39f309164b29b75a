//! The HTTP API, shaped like a Walrus aggregator's read side (SPEC §11):
//! `GET`/`HEAD /v1/blobs/{id}` (with `Range`), `GET /v1/blobs/{id}/byte-range?start=&length=`,
//! `GET /status` and `GET /metrics`; beside it, the publisher's `PUT /v1/blobs` and inference
//! by model Blob ID ([`inference`]: `POST /v1/inference/{id}`, `POST /v1/models/{id}/warm`).
//!
//! Blobs are immutable and content-addressed, so responses carry a strong `ETag` (the quoted
//! Blob ID), `Cache-Control` and `X-Walrus-End-Epoch` from the blob's lifetime on Walrus
//! ([`crate::status`]; `public, max-age=31536000, immutable` when it is not known), and an
//! `If-None-Match` that
//! names the ETag answers 304 without touching the cache or the nodes (`If-None-Match: *`
//! matches only a blob that exists, so it is looked up first); a `Range` whose `If-Range` is not
//! this ETag (strong comparison; a date never matches, as there is no `Last-Modified`) gets the
//! whole blob. `Content-Type` follows the aggregator's rule (echo `Accept` without a wildcard,
//! else the request's `Content-Type`), so blob responses say `Vary: Accept, Content-Type` for
//! shared caches, and carry `X-Content-Type-Options: nosniff` and `Content-Security-Policy:
//! sandbox`: a blob served as a page cannot run script with this origin's privileges. Every blob
//! request takes a slot of a bounded semaphore for as long as its body streams; when none is free
//! the answer is 429. Errors from every layer become responses in [`error`], and nowhere else.

mod admin;
pub mod body;
// Aggregator parity (issue 17): CORS, the denylist at the front, concat and the OpenAPI page.
mod concat;
pub mod error;
pub mod inference;
// `GET /v1/blobs/by-object-id/{object_id}` (issue 17).
pub mod object;
pub mod openapi;
mod parity;
mod quilt;
pub mod range;
mod stream;
mod upload;

use crate::cache::{CachedBlob, DiskBlob, Hit, Tier};
use crate::config::GatewayConfig;
use crate::fill::{Filler, RangeFill, ReadError, Source};
use crate::telemetry::Telemetry;
use body::{Body, RequestSlot};
use bytes::Bytes;
use codec::{BlobId, VerifiedMetadata};
use error::ApiError;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Body as HttpBody;
use range::{RangeRequest, RangeSpec};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::Semaphore;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The request handler shared by every connection.
pub struct Api {
    /// Bearer token of `/admin/...`; `None`: the admin API does not exist.
    admin_token: Option<String>,
    /// `PUT /v1/blobs`; `None`: publishing is disabled.
    publish: Option<PublishSettings>,
    /// Why publishing is disabled, for the 403.
    publish_off: &'static str,
    filler: Filler,
    telemetry: Arc<Telemetry>,
    slots: Arc<Semaphore>,
    /// `POST /v1/inference/{id}` and `POST /v1/models/{id}/warm`.
    inference: inference::Inference,
    retry_after_secs: u32,
    /// `/metrics` is served here (not on a listener of its own, `--metrics-listen`).
    metrics_public: bool,
    /// The blocklist watcher and the other aggregator-parity state ([`parity`]).
    parity: parity::Parity,
    /// Quilt indexes and patches read from cold quilts ([`quilt`]).
    quilts: crate::quilt::QuiltCaches,
    /// Blob attributes that by-object-id answers carry as headers (`--allowed-headers`).
    allowed_headers: Vec<http::HeaderName>,
    /// Recent by-object-id lookups ([`object`], `--object-cache-ttl`).
    objects: object::ObjectLookups,
}

/// What part of a blob a request wants.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// `/v1/blobs/{id}`, perhaps with a `Range` header.
    Blob(RangeRequest),
    /// `/v1/blobs/{id}/byte-range?start=&length=`: 200 with exactly those bytes.
    ByteRange { start: u64, length: u64 },
}

/// How `PUT /v1/blobs` behaves.
struct PublishSettings {
    /// Bearer token required to publish; `None`: anyone may.
    token: Option<String>,
    max_upload: u64,
    /// Bodies above this many bytes wait in a temporary file rather than memory.
    spool_threshold: u64,
    publish: crate::publish::PublishConfig,
    /// Chain-backed gateways forward uploads to a Walrus publisher instead of writing to the
    /// nodes themselves.
    forward: Option<crate::publisher::PublisherClient>,
    /// Admission of every publish (uploads and stored proofs): slots and memory.
    gate: crate::publish::PublishGate,
}

/// Where the blob's bytes will come from, once its length is known.
enum Plan {
    Cached(CachedBlob, Tier),
    /// A large blob streaming from the disk tier.
    Disk(DiskBlob),
    Filling(crate::fill::FillReader, Arc<VerifiedMetadata>),
    /// Not cached, not being filled: a range starts a fill and reads its rows from it (or, for
    /// a blob no tier holds, reads only its rows); a HEAD reads nothing more.
    Cold(Arc<VerifiedMetadata>),
}

impl Plan {
    fn len(&self) -> u64 {
        match self {
            Plan::Cached(blob, _) => blob.len(),
            Plan::Disk(blob) => blob.len(),
            Plan::Filling(_, meta) | Plan::Cold(meta) => meta.unencoded_length(),
        }
    }
}

impl Api {
    pub fn new(filler: Filler, telemetry: Arc<Telemetry>, config: &GatewayConfig) -> Self {
        Self {
            admin_token: config.admin_token.clone(),
            publish_off: if !config.publish_enabled {
                "it was started with --no-publish"
            } else if filler.committees().snapshot().chain.is_some() {
                "storing on a chain-backed network needs on-chain registration and payment, \
                 which this gateway does not do: start it with --publisher URL (a Walrus \
                 publisher you run) to forward uploads there"
            } else {
                "it reads only from upstreams and has no storage nodes to publish to"
            },
            // An upstream-only gateway has no nodes to publish to; a chain-backed one publishes
            // through its publisher, if it has one.
            publish: {
                let chain_backed = filler.committees().snapshot().chain.is_some();
                let forward = config
                    .publisher
                    .as_ref()
                    .filter(|_| chain_backed)
                    .map(|url| {
                        crate::publisher::PublisherClient::new(url, config.publisher_timeout)
                    });
                let can = if chain_backed {
                    forward.is_some()
                } else {
                    filler.topology().node_count() > 0
                };
                (config.publish_enabled && can).then(|| PublishSettings {
                    token: config.publish_token.clone(),
                    max_upload: config.max_upload,
                    spool_threshold: config.upload_spool_threshold,
                    publish: crate::publish::PublishConfig {
                        blocklist: filler.blocklist().clone(),
                        ..Default::default()
                    },
                    forward,
                    gate: crate::publish::PublishGate::new(
                        config.max_concurrent_publishes,
                        config.publish_memory,
                    ),
                })
            },
            inference: inference::Inference::new(&filler, config),
            parity: parity::Parity::new(&filler, config),
            allowed_headers: config.allowed_headers.clone(),
            objects: object::ObjectLookups::new(config.object_cache_ttl),
            filler,
            telemetry,
            slots: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            retry_after_secs: config.retry_after_secs,
            metrics_public: config.metrics_listen.is_none(),
            quilts: crate::quilt::QuiltCaches::new(config.memory_cache_bytes / 8),
        }
    }

    /// Plan builds, model loads and plan-cache use of the inference engine.
    pub fn inference_stats(&self) -> ::inference::EngineStats {
        self.inference.stats()
    }

    pub fn filler(&self) -> &Filler {
        &self.filler
    }

    /// Answer one request; never fails (errors become error responses).
    pub async fn handle<B>(&self, request: Request<B>) -> Result<Response<Body>, Infallible>
    where
        B: HttpBody + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Some(id) = whole_get_target(&request) {
            if let Some(hit) = self.memory_hit(&id, request.extensions().get()).await {
                return Ok(hit.into_response());
            }
            if let Some(hit) = self.disk_hit(&id, request.extensions().get()) {
                return Ok(hit.into_response());
            }
        }
        self.dispatch(request).await
    }

    /// [`Api::handle`] without the memory-hit lane, for a caller that has tried it already
    /// ([`crate::h1`]).
    pub async fn dispatch<B>(&self, request: Request<B>) -> Result<Response<Body>, Infallible>
    where
        B: HttpBody + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = request.uri().path().to_owned();
        // The rarer routes' futures are boxed, so the future of every request (which HTTP/2
        // moves into a task of its own) stays the size a blob read needs.
        let routed = if let Some(early) = parity::front(self, &request) {
            early
        } else if parity::handles(self, &request) {
            Box::pin(parity::route(self, request)).await
        } else if path.starts_with("/admin/") || path == "/admin" {
            Box::pin(admin::route(self, request)).await
        } else if path == "/v1/blobs" {
            if request.method() == Method::PUT {
                Box::pin(upload::put_blob(self, request)).await
            } else {
                Err(ApiError::MethodNotAllowed { allow: "PUT" })
            }
        } else if quilt::handles(&path) {
            Box::pin(quilt::route(self, request)).await
        } else if inference::handles(&path) {
            Box::pin(inference::route(self, request)).await
        } else {
            self.route(&request).await
        };
        let mut response = match routed {
            Ok(response) => response,
            Err(error) => {
                if let ApiError::Read(e) = &error {
                    tracing::debug!(path, error = %e, "read failed");
                }
                if matches!(error, ApiError::Overloaded) {
                    self.telemetry.overloaded.increment(1);
                }
                error.into_response(self.retry_after_secs)
            }
        };
        parity::allow_any_origin(response.headers_mut());
        self.telemetry.response(response.status().as_u16());
        Ok(response)
    }

    async fn route<B>(&self, request: &Request<B>) -> Result<Response<Body>, ApiError> {
        let path = request.uri().path();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["status"] => {
                read_only(request.method())?;
                // The body stays the aggregator's plain "OK"; the committee size rides in a header
                // so clients (`walrus-gateway get`) can verify what they download.
                let mut response = text("OK".into(), "text/plain; charset=utf-8");
                let snapshot = self.filler.committees().snapshot();
                let n = snapshot.current.config().n_shards();
                let headers = response.headers_mut();
                headers.insert("x-walrus-n-shards", HeaderValue::from(n));
                // A chain-backed gateway also says which epoch it reads and how old its view
                // of the chain is (refreshes and failures are in /metrics).
                if let Some(chain) = &snapshot.chain {
                    let c = &chain.committee;
                    headers.insert("x-walrus-epoch", HeaderValue::from(c.epoch));
                    headers.insert(
                        "x-walrus-epoch-state",
                        HeaderValue::from_static(c.epoch_state.name()),
                    );
                    if let Some(age) = self.telemetry.chain_view_age() {
                        headers.insert(
                            "x-walrus-chain-age-ms",
                            HeaderValue::from((age * 1000.0) as u64),
                        );
                    }
                }
                Ok(response)
            }
            // With `--metrics-listen` the metrics are served there alone, and the route does
            // not exist on the public listeners.
            ["metrics"] if self.metrics_public => {
                read_only(request.method())?;
                Ok(metrics_response(&self.telemetry))
            }
            ["v1", "blobs", id] => {
                read_only(request.method())?;
                let id = parse_id(id)?;
                let range = request
                    .headers()
                    .get(header::RANGE)
                    .map_or(RangeRequest::Whole, |v| range::parse(v.as_bytes()));
                self.blob(request, id, Want::Blob(range)).await
            }
            ["v1", "blobs", "by-object-id", object] => {
                Box::pin(self.blob_by_object_id(request, object)).await
            }
            ["v1", "blobs", id, "metadata"] => {
                // The storage nodes' metadata endpoint (BCS `BlobMetadataWithId`), so a child
                // gateway can verify what it reads from this one row by row, ranges included.
                read_only(request.method())?;
                let id = parse_id(id)?;
                let meta = Box::pin(self.filler.metadata(id)).await?;
                let body = Bytes::from(codec::bcs::encode_metadata_with_id(&id, meta.metadata()));
                let len = body.len();
                let mut response = Response::new(if request.method() == Method::HEAD {
                    Body::empty()
                } else {
                    Body::full(body)
                });
                let headers = response.headers_mut();
                set_blob_headers(headers, &format!("\"{id}-metadata\""));
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                Ok(response)
            }
            ["v1", "blobs", id, "byte-range"] => {
                read_only(request.method())?;
                let id = parse_id(id)?;
                let (start, length) = byte_range_query(request.uri().query())?;
                self.blob(request, id, Want::ByteRange { start, length })
                    .await
            }
            _ => Err(ApiError::RouteNotFound),
        }
    }

    async fn blob<B>(
        &self,
        request: &Request<B>,
        id: BlobId,
        want: Want,
    ) -> Result<Response<Body>, ApiError> {
        let etag = match want {
            Want::Blob(_) => format!("\"{id}\""),
            Want::ByteRange { start, length } => format!("\"{id}-{start}-{length}\""),
        };
        let none_matched = none_match(request.headers(), &etag, &id);
        if none_matched == Some(NoneMatch::Tag) {
            return Ok(blob_not_modified(&etag, self.blob_life(&id)));
        }
        // A range for another representation than ours (RFC 9110 §13.1.5): send it all.
        let want = match want {
            Want::Blob(RangeRequest::Single(_))
                if !range::if_range_holds(request.headers().get_all(header::IF_RANGE), &etag) =>
            {
                Want::Blob(RangeRequest::Whole)
            }
            other => other,
        };
        let slot = RequestSlot::acquire(&self.slots, request.extensions().get(), &self.telemetry)?;
        // A cached blob past its end epoch, or a deletable one due, is checked with the nodes
        // first (and answers 404 if Walrus no longer has it).
        if !self.filler.blocklist().is_blocked(&id) {
            Box::pin(self.filler.check_lifecycle(&id)).await?;
        }
        let head = request.method() == Method::HEAD;
        // `If-None-Match: *` matches only if the blob exists (RFC 9110 §13.1.2): learn that as
        // a HEAD would (metadata, no fill), then answer 304; a blob that does not exist gets
        // the 404 the request would have had anyway.
        let existence_only = none_matched == Some(NoneMatch::Any);
        let whole_get = !head && !existence_only && matches!(want, Want::Blob(RangeRequest::Whole));
        let plan = if whole_get {
            self.whole(id).await?
        } else if let Some(hit) = Box::pin(self.filler.cache().get(&id)).await {
            match hit {
                Hit::Memory(blob, tier) => Plan::Cached(blob, tier),
                Hit::Disk(blob) => Plan::Disk(blob),
            }
        } else if let Some(mut reader) = self.filler.join(&id) {
            // A HEAD needs only the length; a range waits for its own rows (`from_fill`).
            let meta = Box::pin(reader.metadata()).await?;
            Plan::Filling(reader, meta)
        } else {
            match Box::pin(self.filler.metadata(id)).await {
                Ok(meta) => Plan::Cold(meta),
                // Upstreams that offer no metadata (aggregators) can only be verified whole: fill
                // the blob, then answer the range or HEAD from it. A blob every source says does
                // not exist is not asked for again.
                Err(e)
                    if self.filler.has_upstreams()
                        && !matches!(
                            e,
                            ReadError::NotFound { .. } | ReadError::NotFoundUpstream { .. }
                        ) =>
                {
                    Box::pin(self.whole(id)).await?
                }
                Err(e) => return Err(e.into()),
            }
        };
        if existence_only {
            return Ok(blob_not_modified(&etag, self.blob_life(&id)));
        }
        let x_cache = match &plan {
            Plan::Cached(_, tier) => {
                self.telemetry.hit(*tier);
                tier.header_value()
            }
            Plan::Disk(_) => {
                self.telemetry.hit(Tier::Disk);
                Tier::Disk.header_value()
            }
            plan => {
                self.telemetry.cache_misses.increment(1);
                // Longer than any tier holds: served, never kept (`--memory-max-object`, disk).
                if self.filler.cache().can_hold(plan.len()) {
                    "miss"
                } else {
                    "miss-uncacheable"
                }
            }
        };
        let served = self.telemetry.served_from(match &plan {
            Plan::Cached(_, tier) => Some(*tier),
            Plan::Disk(_) => Some(Tier::Disk),
            _ => None,
        });
        let len = plan.len();
        let from_disk = matches!(plan, Plan::Disk(_));
        let (status, start, end) = match want {
            Want::Blob(RangeRequest::Whole) => (StatusCode::OK, 0, len),
            Want::Blob(RangeRequest::Single(spec)) => {
                let (start, end) = resolve(spec, len)?;
                (StatusCode::PARTIAL_CONTENT, start, end)
            }
            Want::ByteRange { start, length } => {
                let end = start
                    .checked_add(length)
                    .filter(|&end| end <= len)
                    .ok_or_else(|| {
                        ApiError::InvalidByteRange(format!(
                            "start {start} + length {length} exceeds the blob's {len} bytes"
                        ))
                    })?;
                (StatusCode::OK, start, end)
            }
        };
        let body = if head {
            Body::empty()
        } else {
            match plan {
                Plan::Cached(blob, _) => Body::cached(&blob, start, end),
                Plan::Disk(blob) => stream::from_disk(blob, start, end)?,
                Plan::Filling(reader, meta) => {
                    Box::pin(stream::from_fill(reader, &meta, start, end)).await?
                }
                Plan::Cold(meta) => Box::pin(self.cold_range(id, meta, start, end)).await?,
            }
        };
        let body = body.for_blob(served, slot);
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        set_blob_headers(headers, &etag);
        match self.filler.lifecycle_entry(&id, self.filler.clock()) {
            Some(life) => life.apply(headers),
            // Cached before a restart (or its entry was dropped): learn its status now.
            None if from_disk => self.filler.check_in_background(id),
            None => {}
        }
        set_length_and_source(headers, end - start, x_cache);
        if status == StatusCode::PARTIAL_CONTENT {
            let range = format!("bytes {start}-{}/{len}", end - 1);
            if let Ok(value) = HeaderValue::from_str(&range) {
                headers.insert(header::CONTENT_RANGE, value);
            }
        }
        set_content_type(headers, content_type(request));
        Ok(response)
    }
}

/// A whole-blob `GET` answered from the memory tier without the general request path
/// ([`Api::memory_hit`]): the commonest request, on every transport.
pub struct MemoryHit {
    blob: CachedBlob,
    /// The blob's lifetime, whose entry holds the head (per blob and epoch) when known.
    life: Option<Arc<crate::status::Entry>>,
    /// The whole blob (its length is in the headers).
    pub body: Body,
}

impl MemoryHit {
    /// The response headers, exactly those the general path sends for the same request; built
    /// once per cached blob (and epoch, for a blob whose status is known).
    pub fn headers(&self) -> &HeaderMap {
        match &self.life {
            Some(life) => life.built_head(),
            None => self.blob.response_head().get(),
        }
        .expect("built before the hit is handed out")
    }

    fn into_response(self) -> Response<Body> {
        let headers = self.headers().clone();
        let mut response = Response::new(self.body);
        *response.headers_mut() = headers;
        response
    }
}

/// Request headers that change a whole-blob answer: with none of them, a `GET` may take the
/// memory-hit lane.
pub const WHOLE_GET_VARIES: [&str; 4] = ["range", "if-none-match", "accept", "content-type"];

impl Api {
    /// The answer to a plain `GET /v1/blobs/{id}` (none of [`WHOLE_GET_VARIES`]) when the blob
    /// is in memory; `None` sends the request down the general path (a miss, a disk hit, or no
    /// free request slot: that path answers 429).
    /// `share` is the connection's share of the request slots ([`crate::fairness`]).
    pub async fn memory_hit(
        &self,
        id: &BlobId,
        share: Option<&crate::fairness::Share>,
    ) -> Option<MemoryHit> {
        let life = self.lane_may_serve(id)?;
        let blob = self.filler.cache().memory_get(id).await?;
        let slot = RequestSlot::try_acquire(&self.slots, share, &self.telemetry)?;
        self.telemetry.hit(Tier::Memory);
        self.telemetry.response(200);
        let build = || lane_head(id, life.as_deref(), blob.len(), Tier::Memory);
        match &life {
            Some(entry) => {
                entry.head(build);
            }
            None => {
                blob.response_head().get_or_init(build);
            }
        }
        let served = self.telemetry.served_from(Some(Tier::Memory));
        let body = Body::cached(&blob, 0, blob.len()).for_blob(served, slot);
        Some(MemoryHit { blob, life, body })
    }
}

/// The head of a whole-blob answer from a lane: the blob's headers, its known lifetime, its
/// length and the tier it came from.
fn lane_head(id: &BlobId, life: Option<&crate::status::Entry>, len: u64, tier: Tier) -> HeaderMap {
    let mut headers = HeaderMap::new();
    set_blob_headers(&mut headers, &format!("\"{id}\""));
    if let Some(life) = life {
        life.apply(&mut headers);
    }
    set_length_and_source(&mut headers, len, tier.header_value());
    // No `Accept` or `Content-Type` on a lane, so no type; but one with them would get another,
    // so shared caches must still key on them.
    set_content_type(&mut headers, None);
    headers
}

impl Api {
    /// Whether a whole-blob lane may answer for `id`, and with which known lifetime. `None`: it
    /// takes the general path: a blocked blob (which answers 451 there), and one past its end
    /// epoch or a deletable one due for a re-check (checked with the nodes there).
    fn lane_may_serve(&self, id: &BlobId) -> Option<Option<Arc<crate::status::Entry>>> {
        if self.filler.blocklist().is_blocked(id) {
            return None;
        }
        let clock = self.filler.clock();
        let life = self.filler.lifecycle_entry(id, clock);
        let fresh = life.as_ref().is_none_or(|life| {
            life.freshness(clock.epoch, self.filler.revalidate_deletable())
                == crate::status::Freshness::Fresh
        });
        fresh.then_some(life)
    }

    /// The answer to a plain `GET /v1/blobs/{id}` (as for [`Api::memory_hit`]) from the disk
    /// tier, for a blob memory will not take, when it needs no wait
    /// ([`crate::cache::BlobCache::disk_hit_now`]): the headers the general path sends, and the
    /// body (a small blob read and checked; a larger one's reader, whose first chunk is already
    /// read and checked and whose other chunks are read and checked as they are sent). `None`
    /// sends the request down the general path: so does a first chunk that is not in the page
    /// cache or fails its check (then quarantined: the general path refills the blob), so a
    /// `200` from this lane never starts with a chunk that was not checked.
    pub fn disk_hit(&self, id: &BlobId, share: Option<&crate::fairness::Share>) -> Option<DiskHit> {
        let life = self.lane_may_serve(id)?;
        let slot = RequestSlot::try_acquire(&self.slots, share, &self.telemetry)?;
        let (body, len, streamed) = match self.filler.cache().disk_hit_now(id)? {
            Hit::Memory(blob, _) => (Body::cached(&blob, 0, blob.len()), blob.len(), false),
            Hit::Disk(blob) => {
                let len = blob.len();
                (stream::from_disk_now(blob, 0, len)?, len, true)
            }
        };
        self.telemetry.hit(Tier::Disk);
        self.telemetry.response(200);
        let build = || lane_head(id, life.as_deref(), len, Tier::Disk);
        // Built once per blob and epoch, as for a memory hit: a blob this lane serves is one
        // memory will not take, so the memory lane never builds that entry's head.
        let head = match life {
            Some(entry)
                if entry.head(build).get("x-cache").map(|v| v.as_bytes())
                    == Some(Tier::Disk.header_value().as_bytes()) =>
            {
                DiskHead::Known(entry)
            }
            Some(_) => DiskHead::Own(build()),
            None => {
                // Cached before a restart (or its entry was dropped): learn its status now.
                if streamed {
                    self.filler.check_in_background(*id);
                }
                DiskHead::Own(build())
            }
        };
        let served = self.telemetry.served_from(Some(Tier::Disk));
        Some(DiskHit {
            head,
            body: body.for_blob(served, slot),
        })
    }
}

/// A whole-blob `GET` answered from the disk tier without the general request path
/// ([`Api::disk_hit`]).
pub struct DiskHit {
    head: DiskHead,
    /// The whole blob, its first chunk checked (its length is in the headers).
    pub body: Body,
}

/// Where a disk hit's headers are: built once in the blob's lifetime entry, or for this hit.
enum DiskHead {
    Known(Arc<crate::status::Entry>),
    Own(HeaderMap),
}

impl DiskHit {
    /// The response headers, exactly those the general path sends for the same request.
    pub fn headers(&self) -> &HeaderMap {
        match &self.head {
            DiskHead::Known(entry) => entry
                .built_head()
                .expect("built before the hit is handed out"),
            DiskHead::Own(headers) => headers,
        }
    }

    fn into_response(self) -> Response<Body> {
        let headers = match self.head {
            DiskHead::Own(headers) => headers,
            DiskHead::Known(entry) => entry.built_head().cloned().unwrap_or_default(),
        };
        let mut response = Response::new(self.body);
        *response.headers_mut() = headers;
        response
    }
}

/// The Blob ID of a request [`Api::memory_hit`] may answer.
fn whole_get_target<B>(request: &Request<B>) -> Option<BlobId> {
    if request.method() != Method::GET || request.uri().query().is_some() {
        return None;
    }
    let headers = request.headers();
    if WHOLE_GET_VARIES
        .iter()
        .any(|name| headers.contains_key(*name))
    {
        return None;
    }
    whole_blob_id(request.uri().path())
}

/// The Blob ID in a `/v1/blobs/{id}` path (nothing after the ID).
pub fn whole_blob_id(path: &str) -> Option<BlobId> {
    let id = path.strip_prefix("/v1/blobs/")?;
    if id.contains('/') {
        return None;
    }
    id.parse().ok()
}

impl Api {
    /// The blob's lifetime on Walrus, if this gateway knows it (in memory, no lookup).
    fn blob_life(&self, id: &BlobId) -> Option<Arc<crate::status::Entry>> {
        self.filler.lifecycle_entry(id, self.filler.clock())
    }

    /// The whole blob: cached, or a fill (started if needed) once it may answer.
    async fn whole(&self, id: BlobId) -> Result<Plan, ReadError> {
        Ok(match Box::pin(self.filler.open(id)).await? {
            Source::Cached(blob, tier) => Plan::Cached(blob, tier),
            Source::Disk(blob) => Plan::Disk(blob),
            Source::Filling(mut reader) => {
                let meta = Box::pin(reader.ready()).await?;
                Plan::Filling(reader, meta)
            }
        })
    }

    /// Bytes `[start, end)` of a blob nobody is filling. A blob some tier can hold gets a
    /// whole-blob fill in the background that fetches this range's rows first, and the range
    /// is served from them as they verify (so they are fetched once, and later ranges of the
    /// blob join the fill). Otherwise (too large to keep, every fill slot taken, or a fill
    /// through upstreams, which read in blob order) the range reads just the systematic rows
    /// covering it, each verified; if one cannot be had, a whole-blob fill reconstructs it.
    async fn cold_range(
        &self,
        id: BlobId,
        meta: Arc<VerifiedMetadata>,
        start: u64,
        end: u64,
    ) -> Result<Body, ApiError> {
        if start == end {
            return Ok(Body::empty());
        }
        let config = meta.config();
        let row_len = config.row_len(meta.symbol_size());
        let rows = config
            .rows_for_range(meta.unencoded_length(), start, end)
            .map_err(|e| ReadError::Internal(e.to_string()))?;
        match self.filler.open_range(&meta, rows.clone()).await {
            RangeFill::Source(source, started) if !(started && self.filler.has_upstreams()) => {
                return range_of(source, &meta, start, end).await;
            }
            RangeFill::Source(..) | RangeFill::Uncacheable | RangeFill::Busy => {}
        }
        let base = u64::from(rows.start) * row_len;
        match self.filler.read_rows(&meta, rows).await {
            Ok(rows) => {
                let rows = CachedBlob::from_verified_rows(rows);
                return Ok(Body::chunks(rows.slices(start - base, end - base)));
            }
            Err(e) => {
                tracing::info!(blob_id = %id, error = %e, "range read falls back to a whole-blob fill");
            }
        }
        range_of(self.filler.open(id).await?, &meta, start, end).await
    }
}

/// Bytes `[start, end)` of the blob `meta` describes, from wherever `source` holds it.
async fn range_of(
    source: Source,
    meta: &VerifiedMetadata,
    start: u64,
    end: u64,
) -> Result<Body, ApiError> {
    Ok(match source {
        Source::Cached(blob, _) => Body::cached(&blob, start, end),
        Source::Disk(blob) => stream::from_disk(blob, start, end)?,
        Source::Filling(reader) => stream::from_fill(reader, meta, start, end).await?,
    })
}

fn read_only(method: &Method) -> Result<(), ApiError> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" })
    }
}

fn parse_id(text: &str) -> Result<BlobId, ApiError> {
    text.parse()
        .map_err(|e: codec::BlobIdParseError| ApiError::InvalidBlobId(e.to_string()))
}

fn resolve(spec: RangeSpec, len: u64) -> Result<(u64, u64), ApiError> {
    spec.resolve(len)
        .ok_or(ApiError::RangeNotSatisfiable { len })
}

/// `start` and `length` from `?start=&length=`: both required, decimal, nothing else allowed.
fn byte_range_query(query: Option<&str>) -> Result<(u64, u64), ApiError> {
    let mut start = None;
    let mut length = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "start" => &mut start,
            "length" => &mut length,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {:?}",
                    truncate(key)
                )))
            }
        };
        let number = value
            .parse::<u64>()
            .ok()
            .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "{key} must be a decimal integer, got {:?}",
                    truncate(value)
                ))
            })?;
        if slot.replace(number).is_some() {
            return Err(ApiError::BadRequest(format!("{key} given twice")));
        }
    }
    let (Some(start), Some(length)) = (start, length) else {
        return Err(ApiError::BadRequest(
            "both start and length are required".into(),
        ));
    };
    if length == 0 {
        return Err(ApiError::InvalidByteRange("length must be positive".into()));
    }
    Ok((start, length))
}

fn truncate(text: &str) -> String {
    text.chars().take(32).collect()
}

/// How an `If-None-Match` header matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoneMatch {
    /// It names this representation's ETag: 304 without looking anything up (the blob is
    /// immutable, so a client holding its ETag holds it).
    Tag,
    /// Only `*`: 304 if the blob exists, which must be looked up.
    Any,
}

/// Whether `If-None-Match` names this representation, or is `*`. Weak comparison, as RFC 9110
/// requires for this header; the aggregator's unquoted ETag form is accepted too.
fn none_match(headers: &HeaderMap, etag: &str, id: &BlobId) -> Option<NoneMatch> {
    if !headers.contains_key(header::IF_NONE_MATCH) {
        return None;
    }
    let raw = id.to_string();
    let mut star = false;
    for tag in headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
    {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        if tag == etag || (etag == format!("\"{raw}\"") && tag == raw) {
            return Some(NoneMatch::Tag);
        }
        star |= tag == "*";
    }
    star.then_some(NoneMatch::Any)
}

/// 304 for a blob request whose `If-None-Match` matched: the headers a 200 would carry that
/// caches need (RFC 9110 §15.4.5), no body.
fn not_modified(etag: &str) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    set_blob_headers(response.headers_mut(), etag);
    set_content_type(response.headers_mut(), None);
    response
}

/// [`not_modified`] for a blob whose lifetime on Walrus may be known: `life` bounds
/// `Cache-Control` and gives `X-Walrus-End-Epoch` exactly as on the 200, since a 304 refreshes
/// a downstream cache's copy and must not promise more than the 200 would.
fn blob_not_modified(etag: &str, life: Option<Arc<crate::status::Entry>>) -> Response<Body> {
    let mut response = not_modified(etag);
    if let Some(life) = life {
        life.apply(response.headers_mut());
    }
    response
}

fn set_length_and_source(headers: &mut HeaderMap, len: u64, x_cache: &'static str) {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert("x-cache", HeaderValue::from_static(x_cache));
}

fn set_blob_headers(headers: &mut HeaderMap, etag: &str) {
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Whatever type a client asked for, a blob rendered as a document runs no script and gets
    // an opaque origin: uploaded HTML cannot act with this gateway's origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

/// The blob's `Content-Type` as [`content_type`] chose it (`None`: no type), and `Vary` on the
/// request headers that choose it, so a shared cache does not hand one client's type to another.
fn set_content_type(headers: &mut HeaderMap, content_type: Option<HeaderValue>) {
    headers.insert(
        header::VARY,
        HeaderValue::from_static("accept, content-type"),
    );
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
}

/// The aggregator's rule: no default type; echo `Accept` if it has no wildcard, else (for
/// `GET`) echo the request's own `Content-Type`.
fn content_type<B>(request: &Request<B>) -> Option<HeaderValue> {
    let headers = request.headers();
    if let Some(accept) = headers.get(header::ACCEPT) {
        if !accept.as_bytes().contains(&b'*') {
            return Some(accept.clone());
        }
    }
    if request.method() == Method::GET {
        return headers.get(header::CONTENT_TYPE).cloned();
    }
    None
}

/// The Prometheus text of `telemetry` (`GET /metrics`, here or on `--metrics-listen`).
pub fn metrics_response(telemetry: &Telemetry) -> Response<Body> {
    text(
        telemetry.render().into(),
        "text/plain; version=0.0.4; charset=utf-8",
    )
}

/// An uncacheable JSON answer (admin, publish and inference routes).
pub(super) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = text(Bytes::from(value.to_string()), "application/json");
    *response.status_mut() = status;
    response
}

fn text(body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_range_queries_are_strict() {
        assert_eq!(byte_range_query(Some("start=5&length=10")), Ok((5, 10)));
        assert_eq!(byte_range_query(Some("length=1&start=0")), Ok((0, 1)));
        for bad in [
            None,
            Some("start=1"),
            Some("start=1&length=x"),
            Some("start=-1&length=2"),
            Some("start=+1&length=2"),
            Some("start=1&length=2&start=3"),
            Some("start=1&length=2&foo=3"),
        ] {
            assert!(
                matches!(byte_range_query(bad), Err(ApiError::BadRequest(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            byte_range_query(Some("start=1&length=0")),
            Err(ApiError::InvalidByteRange(_))
        ));
    }

    #[test]
    fn if_none_match_forms() {
        let id = BlobId([3; 32]);
        let etag = format!("\"{id}\"");
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            none_match(&headers, &etag, &id)
        };
        let tag = Some(NoneMatch::Tag);
        assert_eq!(check(&etag), tag);
        assert_eq!(check(&format!("W/{etag}")), tag);
        assert_eq!(check(&format!("\"other\", {etag}")), tag);
        assert_eq!(check(&format!("*, {etag}")), tag);
        assert_eq!(check(&id.to_string()), tag);
        assert_eq!(check("*"), Some(NoneMatch::Any));
        assert_eq!(check("\"other\", *"), Some(NoneMatch::Any));
        assert_eq!(check("\"other\""), None);
        assert_eq!(none_match(&HeaderMap::new(), &etag, &id), None);
    }
}
