//! The storage-node REST API of SPEC §10, as served by a simulated node, plus the sim-only
//! admin endpoint.
//!
//! Simulated endpoints (paths, BCS bodies, JSON envelopes, codes and reasons as the real node):
//! * `GET|PUT /v1/blobs/{blob_id}/metadata` (PUT body: BCS `BlobMetadata`, verified against the
//!   Blob ID in the path; `201` stored, `200` already stored);
//! * `GET /v1/blobs/{blob_id}/metadata/status` (`StoredOnNodeStatus`);
//! * `GET|PUT /v1/blobs/{blob_id}/slivers/{pair}/{primary|secondary}` (PUT body: BCS
//!   `SliverData`, checked against the path's pair index and verified against the stored
//!   metadata; never stored otherwise);
//! * `GET /v1/blobs/{blob_id}/slivers/{pair}/{type}/status`;
//! * `GET /v1/blobs/{blob_id}/status` (`BlobStatus`);
//! * `GET /v1/health[?detailed=true]` (`ServiceHealthInfo`);
//! * `GET /v1/blobs/{blob_id}/recoverySymbols` (BCS `Vec<GeneralRecoverySymbol>` with real
//!   proofs, from the slivers the node holds: [`crate::recovery`]).
//!
//! What is simulated rather than real: there is no chain, so any blob whose metadata a node
//! holds counts as registered and certified: its status is `permanent`, certified in the epoch
//! it was first stored in on the network (`initialCertifiedEpoch`, the same on every node) and
//! ending [`crate::BLOB_LIFETIME_EPOCHS`] later (`endEpoch`, exclusive; blobs never expire),
//! with a status event whose `txDigest` is derived from the Blob ID. A blob without metadata is
//! `nonexistent`. A test may state another lifetime per blob ([`crate::lifecycle`]: deletable,
//! not yet certified, an earlier `endEpoch`, deleted); an expired or deleted blob is
//! `nonexistent` and its metadata and slivers answer 404, as on real nodes. The `?pending=`
//! flag is accepted and ignored (nothing is ever `buffered`). There is no deny list, but the
//! `forbidden` fault answers 451 `FORBIDDEN_BLOB` for metadata, slivers and recovery symbols;
//! and no decoding-symbol, inconsistency-proof,
//! confirmation or shard-sync endpoint: those answer `404 UNKNOWN_ENDPOINT`. The health public
//! key is a fixed fake per node.
//!
//! Shards follow the live epoch ([`crate::epoch`]): a node serves and accepts the slivers of
//! the shards it owns; during `EpochChangeSync` it also serves (read only) those it gave away;
//! anything else is `400 FAILED_PRECONDITION / SHARD_NOT_ASSIGNED` with the current epoch.
//!
//! Admin (never subject to faults, loopback peers only, else `403`):
//! * `GET /sim/faults[?node=I|NAME]` returns a node's [`NodeFaults`]; `POST` with a JSON
//!   [`NodeFaults`] body replaces them and answers once the change took effect (an offline
//!   node's listener is closed, a revived one is listening again). `node` defaults to the node
//!   asked, so an offline node is revived through any other node.
//! * `POST /sim/advance-epoch` advances the epoch and answers `{"epoch":E,"moved_shards":K}`.
//! * `POST /sim/move-node[?node=I|NAME]` moves a node (default: the one asked) to a new port
//!   and answers its new `"127.0.0.1:PORT"`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use codec::{bcs, BlobId, SliverKind, VerifiedMetadata};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use crate::body::{self, SimBody};
use crate::faults::NodeFaults;
use crate::network::Shared;
use crate::node::NodeState;
use crate::response::{self, ApiError};
use crate::store::NodeStore;

/// Largest admin request body.
const ADMIN_BODY_LIMIT: u64 = 64 * 1024;

/// A request path, split into what the handlers need (still unparsed text).
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Health,
    Metadata(&'a str),
    MetadataStatus(&'a str),
    Sliver(&'a str, &'a str, &'a str),
    SliverStatus(&'a str, &'a str, &'a str),
    BlobStatus(&'a str),
    RecoverySymbols(&'a str),
    AdminFaults,
    AdminAdvanceEpoch,
    AdminMoveNode,
    Unknown,
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Self {
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        match segments.as_slice() {
            ["v1", "health"] => Route::Health,
            ["v1", "blobs", id, "metadata"] => Route::Metadata(id),
            ["v1", "blobs", id, "metadata", "status"] => Route::MetadataStatus(id),
            ["v1", "blobs", id, "slivers", pair, kind] => Route::Sliver(id, pair, kind),
            ["v1", "blobs", id, "slivers", pair, kind, "status"] => {
                Route::SliverStatus(id, pair, kind)
            }
            ["v1", "blobs", id, "status"] => Route::BlobStatus(id),
            ["v1", "blobs", id, "recoverySymbols"] => Route::RecoverySymbols(id),
            ["sim", "faults"] => Route::AdminFaults,
            ["sim", "advance-epoch"] => Route::AdminAdvanceEpoch,
            ["sim", "move-node"] => Route::AdminMoveNode,
            _ => Route::Unknown,
        }
    }

    /// The methods a route accepts, as an `Allow` header value.
    fn allowed(&self, method: &Method) -> Result<(), &'static str> {
        let (ok, allow) = match self {
            Route::Metadata(_) | Route::Sliver(..) => {
                (method == Method::GET || method == Method::PUT, "GET,PUT")
            }
            Route::AdminFaults => (method == Method::GET || method == Method::POST, "GET,POST"),
            Route::AdminAdvanceEpoch | Route::AdminMoveNode => (method == Method::POST, "POST"),
            Route::Unknown => (true, ""),
            _ => (method == Method::GET, "GET"),
        };
        if ok {
            Ok(())
        } else {
            Err(allow)
        }
    }

    fn count(&self, method: &Method, node: &NodeState) {
        let c = &node.counters;
        let counter = match (self, *method == Method::GET) {
            (Route::Metadata(_), true) => &c.metadata_gets,
            (Route::Sliver(_, _, "primary"), true) => &c.primary_sliver_gets,
            (Route::Sliver(_, _, "secondary"), true) => &c.secondary_sliver_gets,
            (Route::Metadata(_) | Route::Sliver(..), false) => &c.puts,
            (Route::MetadataStatus(_) | Route::SliverStatus(..) | Route::BlobStatus(_), true) => {
                &c.status_gets
            }
            (Route::RecoverySymbols(_), true) => &c.recovery_symbol_gets,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Answer one request to node `index`. Never fails: errors are envelopes.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    index: usize,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<SimBody> {
    let node = &shared.nodes[index];
    let path = request.uri().path().to_owned();
    let route = Route::parse(&path);
    if let Err(allow) = route.allowed(request.method()) {
        return response::method_not_allowed(allow);
    }
    if matches!(
        route,
        Route::AdminFaults | Route::AdminAdvanceEpoch | Route::AdminMoveNode
    ) {
        if !peer.ip().is_loopback() {
            return ApiError::AdminNotLoopback.into_response();
        }
        let answer = match route {
            Route::AdminFaults => admin(&shared, index, request).await,
            Route::AdminAdvanceEpoch => shared
                .advance_epoch()
                .await
                .map(|change| response::success(StatusCode::OK, change))
                .map_err(admin_error),
            _ => {
                let key = query_param(request.uri().query(), "node")
                    .map(str::to_owned)
                    .unwrap_or_else(|| index.to_string());
                shared
                    .move_node(&key)
                    .await
                    .map(|address| response::success(StatusCode::OK, address))
                    .map_err(admin_error)
            }
        };
        return answer.unwrap_or_else(ApiError::into_response);
    }
    route.count(request.method(), node);

    let faults = node.faults.borrow().clone();
    let delay = faults.delay(&node.rng);
    if !delay.is_zero() {
        let mut kick = node.kick.subscribe();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = kick.changed() => return ApiError::Unavailable.into_response(),
        }
    }
    let response = if faults.inject_error(&node.rng) {
        if faults.error_status() == 500 {
            ApiError::Internal.into_response()
        } else {
            ApiError::Unavailable.into_response()
        }
    } else {
        dispatch(&shared, index, &faults, route, request)
            .await
            .unwrap_or_else(ApiError::into_response)
    };
    tracing::debug!(node = %node.name, %path, status = response.status().as_u16(), "answered");
    shape(response, &faults, node)
}

async fn dispatch(
    shared: &Arc<Shared>,
    index: usize,
    faults: &NodeFaults,
    route: Route<'_>,
    request: Request<Incoming>,
) -> Result<Response<SimBody>, ApiError> {
    let node = &shared.nodes[index];
    let put = request.method() == Method::PUT;
    match route {
        Route::Health => Ok(health(shared, index, request.uri().query())),
        Route::Metadata(id) if put => put_metadata(shared, node, parse_blob_id(id)?, request).await,
        Route::Metadata(id) => get_metadata(shared, node, faults, parse_blob_id(id)?).await,
        Route::MetadataStatus(id) => {
            let id = parse_blob_id(id)?;
            let stored = !faults.lie_not_found && node.store.metadata(&id).is_some();
            Ok(response::success(StatusCode::OK, stored_status(stored)))
        }
        Route::Sliver(id, pair, kind) => {
            let (id, pair, kind) = parse_sliver_path(shared, id, pair, kind)?;
            if put {
                put_sliver(shared, index, id, pair, kind, request).await
            } else {
                get_sliver(shared, index, faults, id, pair, kind)
            }
        }
        Route::SliverStatus(id, pair, kind) => {
            let (id, pair, kind) = parse_sliver_path(shared, id, pair, kind)?;
            check_shard(shared, index, &id, pair, Access::Read)?;
            let stored = !faults.lie_not_found && node.store.sliver(&id, pair, kind).is_some();
            Ok(response::success(StatusCode::OK, stored_status(stored)))
        }
        Route::BlobStatus(id) => {
            let id = parse_blob_id(id)?;
            let known = !faults.lie_not_found && node.store.metadata(&id).is_some();
            Ok(response::success(
                StatusCode::OK,
                blob_status(shared, node, known.then_some(&id)),
            ))
        }
        Route::RecoverySymbols(id) => {
            let id = parse_blob_id(id)?;
            // The real node's limiter: refused at once when every permit is taken.
            let _permit = node
                .recovery_permits
                .try_acquire()
                .map_err(|_| ApiError::Unavailable)?;
            let query = crate::recovery::parse_query(
                request.uri().query(),
                usize::from(shared.config.n_shards()),
            )?;
            let shared = shared.clone();
            let faults = faults.clone();
            // Expanding slivers and hashing their trees is CPU work: off the reactor.
            let body = tokio::task::spawn_blocking(move || {
                crate::recovery::answer(&shared, index, &faults, id, &query)
            })
            .await
            .map_err(|_| ApiError::Internal)??;
            Ok(response::octet_stream(body))
        }
        Route::AdminFaults | Route::AdminAdvanceEpoch | Route::AdminMoveNode | Route::Unknown => {
            Err(ApiError::UnknownEndpoint {
                method: request.method().to_string(),
                path: request.uri().path().chars().take(200).collect(),
            })
        }
    }
}

fn parse_blob_id(text: &str) -> Result<BlobId, ApiError> {
    text.parse()
        .map_err(|e: codec::BlobIdParseError| ApiError::InvalidBlobId {
            id: text.chars().take(100).collect(),
            reason: e.to_string(),
        })
}

fn parse_sliver_path(
    shared: &Shared,
    id: &str,
    pair: &str,
    kind: &str,
) -> Result<(BlobId, u16, SliverKind), ApiError> {
    let id = parse_blob_id(id)?;
    let pair: u16 = pair
        .parse()
        .map_err(|_| ApiError::InvalidPairIndex(pair.chars().take(20).collect()))?;
    let kind: SliverKind = kind
        .parse()
        .map_err(|_| ApiError::InvalidSliverType(kind.chars().take(20).collect()))?;
    let n = shared.config.n_shards();
    if pair >= n {
        return Err(ApiError::IndexOutOfRange {
            index: pair,
            max: n,
        });
    }
    Ok((id, pair, kind))
}

/// Serving a sliver, or storing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// The pair's shard (SPEC §7 rotation) must be one of this node's in the current epoch (for
/// reads, also one it gave away while the epoch change syncs).
fn check_shard(
    shared: &Shared,
    index: usize,
    id: &BlobId,
    pair: u16,
    access: Access,
) -> Result<(), ApiError> {
    let shard = id.shard_for_pair(pair, shared.config.n_shards());
    let info = shared.epoch_info();
    let allowed = match access {
        Access::Read => info.may_read(index, shard),
        Access::Write => info.may_write(index, shard),
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::ShardNotAssigned {
            shard,
            epoch: info.epoch,
        })
    }
}

fn stored_status(stored: bool) -> &'static str {
    if stored {
        "stored"
    } else {
        "nonexistent"
    }
}

async fn get_metadata(
    shared: &Shared,
    node: &NodeState,
    faults: &NodeFaults,
    id: BlobId,
) -> Result<Response<SimBody>, ApiError> {
    if faults.forbidden {
        return Err(ApiError::ForbiddenBlob);
    }
    if faults.lie_not_found || !shared.blob_exists_now(&id) {
        return Err(ApiError::MetadataNotFound);
    }
    let (_, bytes) = node.store.metadata(&id).ok_or(ApiError::MetadataNotFound)?;
    if faults.wrong_metadata {
        let mut forged = id.as_bytes().to_vec();
        forged.extend_from_slice(&shared.decoy_metadata().await);
        return Ok(response::octet_stream(Bytes::from(forged)));
    }
    Ok(response::octet_stream(bytes))
}

fn get_sliver(
    shared: &Shared,
    index: usize,
    faults: &NodeFaults,
    id: BlobId,
    pair: u16,
    kind: SliverKind,
) -> Result<Response<SimBody>, ApiError> {
    let node = &shared.nodes[index];
    if faults.forbidden {
        return Err(ApiError::ForbiddenBlob);
    }
    if faults.lie_not_found || node.store.metadata(&id).is_none() || !shared.blob_exists_now(&id) {
        return Err(ApiError::SliverNotFound);
    }
    check_shard(shared, index, &id, pair, Access::Read)?;
    let bytes = node
        .store
        .sliver(&id, pair, kind)
        .ok_or(ApiError::SliverNotFound)?;
    if !(faults.corrupt_slivers || faults.wrong_index || faults.wrong_symbol_size) {
        return Ok(response::octet_stream(bytes));
    }
    // Stored slivers are canonical BCS; failing to decode one is a bug of the simulator.
    let mut sliver = bcs::decode_sliver(&bytes, kind).map_err(|e| {
        tracing::error!(error = %e, "stored sliver does not decode");
        ApiError::Internal
    })?;
    if faults.corrupt_slivers {
        let mut data = sliver.data.to_vec();
        let middle = data.len() / 2;
        if let Some(byte) = data.get_mut(middle) {
            *byte ^= 0xff;
        }
        sliver.data = Bytes::from(data);
    }
    if faults.wrong_index {
        sliver.index = (sliver.index + 1) % shared.config.n_shards();
    }
    if faults.wrong_symbol_size {
        sliver.symbol_size = sliver.symbol_size.wrapping_add(2);
    }
    Ok(response::octet_stream(Bytes::from(bcs::encode_sliver(
        &sliver,
    ))))
}

/// `Content-Type` must be `application/octet-stream` (any parameters) or absent, like the real
/// node's BCS extractor.
fn check_bcs_content_type(request: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/octet-stream") => Ok(()),
        _ => Err(ApiError::UnsupportedContentType),
    }
}

/// Read the whole body, refusing more than `limit` bytes (by header and while reading).
async fn read_body(request: Request<Incoming>, limit: u64) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let limited = http_body_util::Limited::new(
        request.into_body(),
        usize::try_from(limit).unwrap_or(usize::MAX),
    );
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::BodyTooLarge { limit })
        }
        Err(e) => Err(ApiError::BodyRead(e.to_string())),
    }
}

/// Largest BCS `BlobMetadata` for this committee, with room for an overlong length prefix.
fn metadata_body_limit(shared: &Shared) -> u64 {
    16 + 66 * u64::from(shared.config.n_shards())
}

/// Largest BCS `SliverData` of this kind for this committee: the maximum symbol size times
/// the symbols per sliver, plus the length prefix, symbol size and index.
fn sliver_body_limit(shared: &Shared, kind: SliverKind) -> u64 {
    u64::from(kind.symbol_count(&shared.config)) * u64::from(codec::MAX_SYMBOL_SIZE) + 16
}

async fn put_metadata(
    shared: &Shared,
    node: &NodeState,
    id: BlobId,
    request: Request<Incoming>,
) -> Result<Response<SimBody>, ApiError> {
    check_bcs_content_type(&request)?;
    let body = read_body(request, metadata_body_limit(shared)).await?;
    let metadata = bcs::decode_metadata(&body).map_err(ApiError::BcsDecode)?;
    let verified =
        VerifiedMetadata::verify(id, metadata, shared.config).map_err(ApiError::InvalidMetadata)?;
    let with_id = Bytes::from(bcs::encode_metadata_with_id(&id, verified.metadata()));
    let verified = Arc::new(verified);
    let certified = shared.certify(id);
    let stored = run_storage(node, move |store| {
        store.insert_metadata(verified, with_id, certified)
    })
    .await?;
    Ok(if stored {
        response::success(StatusCode::CREATED, "metadata successfully stored")
    } else {
        response::success(StatusCode::OK, "metadata already stored")
    })
}

async fn put_sliver(
    shared: &Arc<Shared>,
    index: usize,
    id: BlobId,
    pair: u16,
    kind: SliverKind,
    request: Request<Incoming>,
) -> Result<Response<SimBody>, ApiError> {
    let node = &shared.nodes[index];
    let body = read_body(request, sliver_body_limit(shared, kind)).await?;
    let sliver = bcs::decode_sliver(&body, kind).map_err(ApiError::BcsDecode)?;
    let (metadata, _) = node.store.metadata(&id).ok_or(ApiError::MissingMetadata)?;
    check_shard(shared, index, &id, pair, Access::Write)?;
    let n = shared.config.n_shards();
    if sliver.index >= n || sliver.pair_index(n) != pair {
        return Err(ApiError::InvalidSliver(format!(
            "{} sliver index {} does not belong to sliver pair {pair} (expected index {})",
            kind.as_str(),
            sliver.index,
            kind.sliver_index(pair, n)
        )));
    }
    // Re-expanding and hashing the sliver is CPU work: keep it off the reactor.
    tokio::task::spawn_blocking(move || metadata.verify_sliver(sliver))
        .await
        .map_err(|_| ApiError::Internal)?
        .map_err(|e| ApiError::InvalidSliver(e.to_string()))?;
    // The body decoded without trailing bytes and BCS is canonical: it is the sliver's BCS.
    // Ownership is checked again where the sliver is placed, so an epoch change cannot slip in
    // between (it would not copy the sliver to the shard's new owner).
    let placing = shared.clone();
    let stored = run_storage(node, move |store| {
        let _placing = placing.placing();
        Ok(check_shard(&placing, index, &id, pair, Access::Write)
            .map(|()| store.insert_sliver(&id, pair, kind, body)))
    })
    .await?
    .and_then(|inserted| {
        inserted.map_err(|e| {
            tracing::error!(error = %e, "storage write failed");
            ApiError::Internal
        })
    })?;
    if !stored {
        return Err(ApiError::MissingMetadata);
    }
    Ok(response::success(
        StatusCode::OK,
        "sliver stored successfully",
    ))
}

/// Run a store operation; with a data directory it does file I/O, so it runs off the reactor.
async fn run_storage<T: Send + 'static>(
    node: &NodeState,
    op: impl FnOnce(&NodeStore) -> std::io::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let result = if node.store.is_persistent() {
        let store = node.store.clone();
        tokio::task::spawn_blocking(move || op(&store))
            .await
            .map_err(|_| ApiError::Internal)?
    } else {
        op(&node.store)
    };
    result.map_err(|e| {
        tracing::error!(node = %node.name, error = %e, "storage write failed");
        ApiError::Internal
    })
}

/// `ServiceHealthInfo` (camelCase, as the real node). `?detailed=true` adds `shardDetail`;
/// shards given away and still served during a sync are `readOnly` (in `other`).
fn health(shared: &Shared, index: usize, query: Option<&str>) -> Response<SimBody> {
    let node = &shared.nodes[index];
    let uptime = shared.started.elapsed();
    let (epoch, owned, read_only) = {
        let info = shared.epoch_info();
        (
            info.epoch,
            info.current[index].clone(),
            info.read_only(index),
        )
    };
    let mut data = serde_json::json!({
        "uptime": {"secs": uptime.as_secs(), "nanos": uptime.subsec_nanos()},
        "epoch": epoch,
        "publicKey": node.public_key(),
        "nodeStatus": "Active",
        "eventProgress": {"persisted": 0, "pending": 0, "highestFinishedEventIndex": null},
        "shardSummary": {
            "owned": owned.len(),
            "ownedShardStatus": {"unknown": 0, "ready": owned.len(), "inTransfer": 0, "inRecovery": 0},
            "readOnly": read_only.len(),
        },
    });
    if query_param(query, "detailed") == Some("true") {
        let detail = |shards: &[u16], status: &str| -> Vec<serde_json::Value> {
            shards
                .iter()
                .map(|s| serde_json::json!({"shard": s, "status": status}))
                .collect()
        };
        data["shardDetail"] = serde_json::json!({
            "owned": detail(&owned, "ready"),
            "other": detail(&read_only, "readOnly"),
        });
    }
    response::success(StatusCode::OK, data)
}

/// `BlobStatus`: `permanent` for a blob whose metadata the node holds (see the module docs for
/// what is simulated), unless the simulated chain states another lifetime for it
/// ([`crate::lifecycle`]): `deletable`, not yet certified, or `nonexistent` once deleted or
/// past its `endEpoch`. `nonexistent` for a blob the node does not hold. Identical on every
/// node holding the blob.
fn blob_status(shared: &Shared, node: &NodeState, known: Option<&BlobId>) -> serde_json::Value {
    let Some(id) = known else {
        return serde_json::json!("nonexistent");
    };
    let certified = shared
        .certified_epoch(id)
        .or_else(|| node.store.certified_epoch(id))
        .unwrap_or(1);
    let life = shared.life(id).unwrap_or_default();
    let end_epoch = life
        .end_epoch
        .unwrap_or(certified + crate::BLOB_LIFETIME_EPOCHS);
    if !life.exists_in(shared.epoch_info().epoch, end_epoch) {
        return serde_json::json!("nonexistent");
    }
    let initial = (!life.uncertified).then_some(certified);
    let counts = |n: u32| {
        serde_json::json!({
            "count_deletable_total": n,
            "count_deletable_certified": if initial.is_some() { n } else { 0 },
        })
    };
    if life.deletable {
        return serde_json::json!({"deletable": {
            "initialCertifiedEpoch": initial,
            "deletableCounts": counts(1),
        }});
    }
    serde_json::json!({"permanent": {
        "endEpoch": end_epoch,
        "isCertified": initial.is_some(),
        "statusEvent": {"txDigest": chain::base58::encode(id.as_bytes()), "eventSeq": "0"},
        "deletableCounts": counts(0),
        "initialCertifiedEpoch": initial,
    }})
}

fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A failed admin action, as an answer.
fn admin_error(e: crate::SimError) -> ApiError {
    match e {
        crate::SimError::InvalidFaults(why) => ApiError::InvalidFaults(why),
        crate::SimError::UnknownNode(key) => ApiError::NoSuchNode(key),
        other => {
            tracing::error!(error = %other, "admin action failed");
            ApiError::Internal
        }
    }
}

/// `GET|POST /sim/faults[?node=…]`.
async fn admin(
    shared: &Shared,
    index: usize,
    request: Request<Incoming>,
) -> Result<Response<SimBody>, ApiError> {
    let target = match query_param(request.uri().query(), "node") {
        None => index,
        Some(key) => shared
            .node_index(key)
            .ok_or_else(|| ApiError::NoSuchNode(key.chars().take(100).collect()))?,
    };
    if request.method() == Method::GET {
        let faults = shared.nodes[target].faults.borrow().clone();
        return Ok(response::success(StatusCode::OK, faults));
    }
    let body = read_body(request, ADMIN_BODY_LIMIT).await?;
    let faults: NodeFaults =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidFaults(e.to_string()))?;
    shared
        .apply_faults(target, faults.clone())
        .await
        .map_err(admin_error)?;
    Ok(response::success(StatusCode::OK, faults))
}

/// Apply body-shaping faults to a finished response. The `Content-Length` announces the whole
/// body even when less (or nothing) will follow.
fn shape(response: Response<SimBody>, faults: &NodeFaults, node: &NodeState) -> Response<SimBody> {
    if !faults.shapes_body() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let SimBody::Full(Some(bytes)) = body else {
        return Response::from_parts(parts, body);
    };
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let body = body::shape(bytes, faults, node.kick.subscribe());
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        let id = "RV5Io9fgU7sWMkNXE7IUo8QbTxJS4Gs9aaJU6xabCsw";
        assert_eq!(Route::parse("/v1/health"), Route::Health);
        assert_eq!(
            Route::parse(&format!("/v1/blobs/{id}/metadata")),
            Route::Metadata(id)
        );
        assert_eq!(
            Route::parse(&format!("/v1/blobs/{id}/slivers/3/primary/status")),
            Route::SliverStatus(id, "3", "primary")
        );
        assert_eq!(
            Route::parse("/v1/blobs/x/recoverySymbols"),
            Route::RecoverySymbols("x")
        );
        assert_eq!(Route::parse("/v1/blobs/x/decodingSymbols"), Route::Unknown);
        assert_eq!(Route::parse("/sim/faults"), Route::AdminFaults);
        assert_eq!(Route::parse("/sim/advance-epoch"), Route::AdminAdvanceEpoch);
        assert_eq!(Route::parse("/sim/move-node"), Route::AdminMoveNode);
        assert_eq!(Route::parse("/v1/health/"), Route::Unknown);
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("a=1&node=node-2"), "node"), Some("node-2"));
        assert_eq!(query_param(Some("detailed=true"), "node"), None);
        assert_eq!(query_param(None, "node"), None);
    }
}
