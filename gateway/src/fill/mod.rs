//! Fills: turning a cache miss into verified bytes from the storage nodes (SPEC §9).
//!
//! * **Single-flight.** At most one fill runs per blob. Requests that arrive while it runs
//!   subscribe to its progress ([`FillReader`]) and stream the same verified rows. The fill runs
//!   in its own task, so a client that disconnects cancels nothing but its own stream; the blob
//!   still lands in the cache for the others.
//! * **Metadata.** Asked of `metadata_fanout` nodes at once (one lookup for concurrent callers);
//!   the first reply that verifies against the Blob ID wins. "Not found" is believed only when
//!   nodes holding at least `2f+1` shards say so; anything short of that is "unavailable". A
//!   believed "not found" is remembered for `negative_cache_ttl` (`--negative-ttl`, [`misses`]),
//!   so repeated requests for a blob that does not exist cost the nodes nothing more.
//! * **Slivers.** The `kp` systematic primary slivers first (their bytes *are* the blob's rows,
//!   no decoding needed), at most `max_slivers_in_flight` at a time, each with a timeout. A
//!   failed, invalid or slow (past `hedge_after`) request makes room for another sliver:
//!   recovery primaries, then secondaries, until `kp` primaries (or `ks` secondaries) verify.
//!   They are requested together with the metadata only for Blob IDs seen to exist before
//!   (so a random ID never costs sliver requests).
//! * **Node health** ([`health`]) outlives fills: a node that failed, timed out or had to be
//!   hedged recently is asked after the others, for metadata and slivers alike.
//! * **Verification** of every sliver and any decoding run on the blocking pool, never on the
//!   reactor. Invalid replies are logged (`warn`) with the node that sent them; other failed
//!   requests only at `debug` (and counted per node): a failed fill logs once.
//! * **Streaming.** Verified systematic rows are published in blob order as soon as the prefix
//!   is contiguous; rows that must be reconstructed follow after decoding and the consistency
//!   check. With `Strict`, nothing is published until the re-encoded blob matched its ID.
//!   Responses to blobs under `stream_from_bytes` start once the fill is *committed* (every row
//!   verified and checked), so a blob that cannot be read, or is inconsistently encoded,
//!   answers 503/404/500 rather than a truncated 200. Larger blobs start streaming with their
//!   first verified row; a fill that fails after that aborts the body (never ends it cleanly).
//! * **Ranges.** Systematic rows that verify ahead of the in-order prefix are published too
//!   ([`FillState::early`]), so a range reads its own rows as soon as they exist. A range miss
//!   starts the blob's fill ([`Filler::open_range`]) with its rows requested first, so its rows
//!   are fetched once and parallel ranges of one blob share one fill; not for a blob longer
//!   than any cache tier holds, which would be fetched whole for nothing.
//!
//! This module owns single-flight and the fill's lifecycle; `metadata` fetches and verifies
//! metadata, `slivers` schedules, hedges and verifies sliver requests, `misses` remembers which
//! IDs do and do not exist, `health` how each node has been answering.
//!
//! Invariant: every byte in [`FillState::rows`] (and so every byte served or cached) belongs to a
//! sliver that verified against metadata that verified against the requested Blob ID.

mod columns;
mod gate;
mod health;
mod lifecycle;
mod metadata;
mod misses;
mod slivers;
mod upstream;

use crate::cache::{BlobCache, CachedBlob, DiskBlob, Hit, MetadataCache, Tier};
use crate::committee::CommitteeHandle;
use crate::nodes::{NodeClient, Topology};
use crate::telemetry::Telemetry;
use crate::upstream::{Upstream, UpstreamClient};
use bytes::Bytes;
use codec::{BlobId, CodecError, ConsistencyCheck, VerifiedMetadata, VerifiedSliver};
use metadata::fetch_metadata;
use slivers::{collect_slivers, Goal, Prefetched};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Why a blob (or part of it) could not be read. Cloned to every request sharing a fill.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("blob not found: nodes holding {shards} of {n_shards} shards say it does not exist")]
    NotFound { shards: u16, n_shards: u16 },
    #[error("blob not found: all {upstreams} upstreams say it does not exist")]
    NotFoundUpstream { upstreams: usize },
    #[error("blob unavailable: {0}")]
    Unavailable(String),
    #[error("the blob is inconsistently encoded: {0}")]
    Inconsistent(String),
    #[error("blob of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: u64, max: u64 },
    #[error("too many fills in progress")]
    Overloaded,
    #[error("internal error: {0}")]
    Internal(String),
    /// On this gateway's denylist (`--blocklist`): never filled, served or published.
    #[error("the requested blob is blocked")]
    Blocked,
    /// Nodes holding a quorum of shards answered 404 or 451, and more of them 451: the blob is
    /// on their deny lists (NETWORK.md §7.2).
    #[error("the requested blob is blocked: nodes holding {shards} of {n_shards} shards refuse it (451)")]
    ForbiddenByNodes { shards: u16, n_shards: u16 },
    /// The nodes' verified status says the blob does not exist now: never registered,
    /// expired, deleted, or invalid (NETWORK.md §7.1).
    #[error("blob not found: its verified status is {0}")]
    Gone(&'static str),
}

impl ReadError {
    /// A fixed word for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ReadError::NotFound { .. } | ReadError::NotFoundUpstream { .. } => "not_found",
            ReadError::Unavailable(_) => "unavailable",
            ReadError::Inconsistent(_) => "inconsistent",
            ReadError::TooLarge { .. } => "too_large",
            ReadError::Overloaded => "overloaded",
            ReadError::Internal(_) => "internal",
            ReadError::Blocked => "blocked",
            ReadError::ForbiddenByNodes { .. } => "forbidden_by_nodes",
            ReadError::Gone(_) => "gone",
        }
    }
}

/// The fill policies taken from [`crate::GatewayConfig`].
#[derive(Debug, Clone)]
pub struct FillConfig {
    pub consistency: ConsistencyCheck,
    pub metadata_fanout: usize,
    pub metadata_timeout: Duration,
    pub sliver_timeout: Duration,
    pub hedge_after: Duration,
    pub max_slivers_in_flight: usize,
    pub max_concurrent_fills: usize,
    pub max_blob_size: Option<u64>,
    pub prefetch_slivers: bool,
    pub stream_from_bytes: u64,
    /// How long an upstream may go without a verified row before the next one is asked too.
    pub upstream_hedge: Duration,
    /// Longest wait for an upstream's response headers (and for a whole metadata response).
    pub upstream_timeout: Duration,
    /// How long a "not found" is remembered (zero: not at all).
    pub negative_cache_ttl: Duration,
    /// How often a cached deletable blob's status is checked again (`--revalidate-deletable`).
    pub revalidate_deletable: Duration,
}

/// Progress of one fill, shared with every request reading it.
#[derive(Debug, Default)]
pub struct FillState {
    /// Set once metadata verified: responses can announce the length.
    pub meta: Option<Arc<VerifiedMetadata>>,
    /// Verified rows `0..rows.len()` of the blob, each truncated to the blob's end.
    pub rows: Vec<Bytes>,
    /// Verified systematic rows past that prefix, by row index, as they arrive out of order
    /// (a row moves into `rows` when the prefix reaches it): a range reads its rows from here
    /// as soon as they exist, without waiting for every row before them.
    pub early: BTreeMap<u16, Bytes>,
    /// Every byte verified (slivers, decoding, consistency check): responses may start, and
    /// the fill can no longer fail for lack of data.
    pub committed: bool,
    /// A large blob: responses may start with the first verified row.
    pub streaming: bool,
    /// Set once, when the fill ends.
    pub outcome: Option<Result<(), ReadError>>,
}

impl FillState {
    /// Verified row `row`, if it has arrived (in order or not).
    pub fn row(&self, row: u16) -> Option<&Bytes> {
        self.rows
            .get(usize::from(row))
            .or_else(|| self.early.get(&row))
    }
}

/// A subscriber to one fill: reads its metadata, then its rows in order.
pub struct FillReader {
    rx: watch::Receiver<FillState>,
    next: usize,
}

impl FillReader {
    /// The blob's verified metadata, or the fill's error if it failed before that.
    pub async fn metadata(&mut self) -> Result<Arc<VerifiedMetadata>, ReadError> {
        let state = self
            .rx
            .wait_for(|s| s.meta.is_some() || s.outcome.is_some())
            .await
            .map_err(|_| ended_unexpectedly())?;
        if let Some(meta) = &state.meta {
            return Ok(meta.clone());
        }
        match &state.outcome {
            Some(Err(e)) => Err(e.clone()),
            _ => Err(ended_unexpectedly()),
        }
    }

    /// The metadata once responses may start: the fill is committed, or (for a large blob) its
    /// first row verified. Otherwise the fill's error, so a fill that fails before that point
    /// answers with a status instead of a truncated body.
    pub async fn ready(&mut self) -> Result<Arc<VerifiedMetadata>, ReadError> {
        let state = self
            .rx
            .wait_for(|s| s.committed || s.outcome.is_some() || (s.streaming && !s.rows.is_empty()))
            .await
            .map_err(|_| ended_unexpectedly())?;
        if let Some(Err(e)) = &state.outcome {
            return Err(e.clone());
        }
        state.meta.clone().ok_or_else(ended_unexpectedly)
    }

    /// The metadata once a response for systematic rows `rows` may start: every one of them
    /// verified (for a blob that does not stream: nothing of it can fail any more), or the
    /// first one (a streaming blob), or the fill committed. Otherwise the fill's error.
    pub async fn range_ready(
        &mut self,
        rows: Range<u16>,
    ) -> Result<Arc<VerifiedMetadata>, ReadError> {
        let state = self
            .rx
            .wait_for(|s| {
                s.committed
                    || s.outcome.is_some()
                    || (s.meta.is_some()
                        && if s.streaming {
                            rows.is_empty() || s.row(rows.start).is_some()
                        } else {
                            rows.clone().all(|r| s.row(r).is_some())
                        })
            })
            .await
            .map_err(|_| ended_unexpectedly())?;
        if let Some(Err(e)) = &state.outcome {
            return Err(e.clone());
        }
        state.meta.clone().ok_or_else(ended_unexpectedly)
    }

    /// Verified row `row`, waiting until it arrives (in order or not).
    pub async fn row(&mut self, row: u16) -> Result<Bytes, ReadError> {
        let state = self
            .rx
            .wait_for(|s| s.row(row).is_some() || s.outcome.is_some())
            .await
            .map_err(|_| ended_unexpectedly())?;
        if let Some(bytes) = state.row(row) {
            return Ok(bytes.clone());
        }
        match &state.outcome {
            Some(Err(e)) => Err(e.clone()),
            _ => Err(ReadError::Internal(format!(
                "the fill ended without row {row}"
            ))),
        }
    }

    /// The next verified row as `(row index, bytes)`; `None` after the last one.
    pub async fn next_row(&mut self) -> Option<Result<(u16, Bytes), ReadError>> {
        let next = self.next;
        let state = match self
            .rx
            .wait_for(|s| s.rows.len() > next || s.outcome.is_some())
            .await
        {
            Ok(state) => state,
            Err(_) => return Some(Err(ended_unexpectedly())),
        };
        if let Some(row) = state.rows.get(next) {
            self.next += 1;
            return Some(Ok((next as u16, row.clone())));
        }
        match &state.outcome {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(Err(e.clone())),
            None => Some(Err(ended_unexpectedly())),
        }
    }
}

fn ended_unexpectedly() -> ReadError {
    ReadError::Internal("the fill ended without an outcome".into())
}

/// What a blob request reads from.
pub enum Source {
    Cached(CachedBlob, Tier),
    /// A large blob streaming from the disk tier.
    Disk(DiskBlob),
    Filling(FillReader),
}

impl From<Hit> for Source {
    fn from(hit: Hit) -> Self {
        match hit {
            Hit::Memory(blob, tier) => Source::Cached(blob, tier),
            Hit::Disk(blob) => Source::Disk(blob),
        }
    }
}

/// What a range miss reads from ([`Filler::open_range`]).
pub enum RangeFill {
    /// The cache, or a running fill (true: started by this call).
    Source(Source, bool),
    /// The blob is longer than any cache tier holds: nothing is filled.
    Uncacheable,
    /// Every fill slot is taken: nothing is filled.
    Busy,
}

/// What a fill's starter knows already.
#[derive(Default)]
struct Start {
    /// Verified metadata in hand (a range miss looked it up): no lookup, no early slivers.
    meta: Option<Arc<VerifiedMetadata>>,
    /// Systematic rows a waiting range needs: requested before every other sliver.
    rows_first: Range<u16>,
}

/// Runs fills and owns the caches they land in. Cheap to clone.
#[derive(Clone)]
pub struct Filler {
    inner: Arc<Inner>,
}

struct Inner {
    /// Who serves reads; a fill takes one snapshot and keeps it to its end.
    committees: CommitteeHandle,
    /// Certified epochs learnt from node statuses while the epoch changes.
    certified_epochs: moka::future::Cache<BlobId, u32>,
    client: NodeClient,
    /// Aggregator-compatible upstreams, in order of preference, tried before the nodes.
    upstreams: Vec<Upstream>,
    upstream_client: UpstreamClient,
    config: FillConfig,
    telemetry: Arc<Telemetry>,
    cache: BlobCache,
    metadata: MetadataCache,
    /// Fills in progress; an entry lives from the fill's start until after its blob is cached.
    inflight: Mutex<HashMap<BlobId, Arc<watch::Sender<FillState>>>>,
    fill_permits: Arc<Semaphore>,
    /// One sliver verification per core at a time, lowest row first: slivers that arrive
    /// together are verified in the order the response needs them instead of all finishing
    /// late by sharing the cores, so the first rows are ready (and stream) early.
    verify_gate: gate::Gate,
    /// Blob IDs remembered as missing (briefly) or existing.
    memory: misses::Memory,
    /// How each storage node has been answering, across fills.
    health: health::NodeHealth,
    /// Blob IDs that are never filled ([`crate::blocklist`]).
    blocklist: crate::blocklist::Blocklist,
    /// Each cached blob's lifetime on Walrus, learnt from the nodes' statuses.
    lifecycle: crate::status::Lifecycle,
    /// Cached blobs whose status is being learnt in the background.
    checking: lifecycle::Checking,
}

impl Inner {
    /// Record how `node` of `topology` answered a request; count and log changes of standing.
    fn node_outcome(&self, topology: &Topology, node: usize, outcome: health::Outcome) {
        let change = self.health.record(topology.base_url(node), outcome);
        if change == health::Change::None {
            return;
        }
        let name = &topology.node(node).name;
        if change == health::Change::MarkedSlow {
            self.telemetry.node_marked_slow(name);
            tracing::info!(node = %name, ?outcome, "storage node marked slow: fills ask it last for a while");
        } else {
            tracing::info!(node = %name, "storage node answers well again: no longer asked last");
        }
        self.telemetry.nodes_slow(self.health.slow_count());
    }

    /// Which nodes of `topology` (by index) fills should ask last, now.
    fn slow_nodes(&self, topology: &Topology) -> Vec<bool> {
        let slow = self.health.slow_nodes(topology);
        self.telemetry.nodes_slow(self.health.slow_count());
        slow
    }
}

/// Verified metadata kept for ranges and `HEAD`s (about 66 bytes per shard per blob).
const METADATA_CACHE_BYTES: u64 = 64 << 20;

impl Filler {
    pub fn new(
        committees: CommitteeHandle,
        upstreams: Vec<Upstream>,
        config: FillConfig,
        cache: BlobCache,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let fill_permits = Arc::new(Semaphore::new(config.max_concurrent_fills));
        let negative_cache_ttl = config.negative_cache_ttl;
        let revalidate_deletable = config.revalidate_deletable;
        Self {
            inner: Arc::new(Inner {
                committees,
                certified_epochs: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(Duration::from_secs(600))
                    .build(),
                client: NodeClient::new(),
                upstream_client: UpstreamClient::new(),
                upstreams,
                config,
                telemetry,
                cache,
                metadata: MetadataCache::new(METADATA_CACHE_BYTES),
                inflight: Mutex::new(HashMap::new()),
                fill_permits,
                verify_gate: gate::Gate::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                ),
                memory: misses::Memory::new(negative_cache_ttl),
                health: health::NodeHealth::default(),
                blocklist: crate::blocklist::Blocklist::default(),
                lifecycle: crate::status::Lifecycle::new(revalidate_deletable),
                checking: lifecycle::Checking::default(),
            }),
        }
    }

    pub fn cache(&self) -> &BlobCache {
        &self.inner.cache
    }

    /// The denylist every fill and metadata read checks first.
    pub fn blocklist(&self) -> &crate::blocklist::Blocklist {
        &self.inner.blocklist
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.inner.telemetry
    }

    /// The pooled client for the storage nodes (the publisher writes through it too).
    pub fn node_client(&self) -> &NodeClient {
        &self.inner.client
    }

    /// The current committee (the only one, unless the committee comes from the chain).
    pub fn topology(&self) -> Arc<Topology> {
        self.inner.committees.current()
    }

    pub fn committees(&self) -> &CommitteeHandle {
        &self.inner.committees
    }

    /// The committee to read `id` from (NETWORK.md §5.1): the current one, except while the
    /// epoch changes, when a blob certified before the current epoch is read from the
    /// previous committee. The certified epoch comes from the current committee's verified
    /// statuses; a blob with no verifiable status is read from the current committee, as the
    /// Rust SDK does.
    async fn read_topology(&self, id: BlobId) -> Arc<Topology> {
        let snapshot = self.inner.committees.snapshot();
        let (Some(previous), Some(epoch)) = (&snapshot.previous, snapshot.epoch()) else {
            return snapshot.current.clone();
        };
        let certified = match self.inner.certified_epochs.get(&id).await {
            Some(e) => Some(e),
            None => {
                let status = crate::committee::verified_status(
                    &self.inner.client,
                    &snapshot.current,
                    id,
                    self.inner.config.metadata_timeout,
                )
                .await;
                let e = status.and_then(|s| s.certified_epoch());
                if let Some(e) = e {
                    self.inner.certified_epochs.insert(id, e).await;
                }
                e
            }
        };
        match certified {
            Some(e) if e < epoch => {
                tracing::debug!(blob_id = %id, certified = e, epoch, "reading from the previous committee during the epoch change");
                previous.clone()
            }
            Some(e) if e > epoch => {
                // Our view of the chain is behind the nodes'.
                self.inner.committees.request_refresh();
                snapshot.current.clone()
            }
            _ => snapshot.current.clone(),
        }
    }

    /// Whether blobs can come from aggregator-compatible upstreams (`--upstream`).
    pub fn has_upstreams(&self) -> bool {
        !self.inner.upstreams.is_empty()
    }

    /// Fills running now.
    pub fn fills_in_progress(&self) -> usize {
        self.lock_inflight().len()
    }

    fn lock_inflight(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<BlobId, Arc<watch::Sender<FillState>>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.inner
            .inflight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Subscribe to the fill of `id` if one is running.
    pub fn join(&self, id: &BlobId) -> Option<FillReader> {
        self.lock_inflight().get(id).map(|tx| FillReader {
            rx: tx.subscribe(),
            next: 0,
        })
    }

    /// The cached blob, or a running fill to read, starting one if needed (429-worthy
    /// [`ReadError::Overloaded`] when `max_concurrent_fills` are already running).
    pub async fn open(&self, id: BlobId) -> Result<Source, ReadError> {
        if self.inner.blocklist.is_blocked(&id) {
            return Err(ReadError::Blocked);
        }
        if let Some(hit) = self.inner.cache.get(&id).await {
            return Ok(hit.into());
        }
        if let Some(reader) = self.join(&id) {
            return Ok(Source::Filling(reader));
        }
        // A fill may have cached its blob and left the map between the two looks above.
        if let Some(hit) = self.inner.cache.get(&id).await {
            return Ok(hit.into());
        }
        if let Some(miss) = self.remembered_miss(&id).await {
            return Err(miss);
        }
        let (reader, _) = self.start_fill(id, Start::default())?;
        Ok(Source::Filling(reader))
    }

    /// What a range miss on `meta`'s blob reads from: the cache, the running fill, or a whole-
    /// blob fill started now in the background that requests the range's systematic `rows`
    /// before any other sliver (their bytes reach this range from the fill, so they are fetched
    /// once). No fill when the blob is larger than any tier holds, or every fill slot is taken:
    /// then the range reads its own rows.
    pub async fn open_range(&self, meta: &Arc<VerifiedMetadata>, rows: Range<u16>) -> RangeFill {
        let id = meta.blob_id();
        if !self.inner.cache.can_hold(meta.unencoded_length()) {
            return RangeFill::Uncacheable;
        }
        if let Some(reader) = self.join(&id) {
            return RangeFill::Source(Source::Filling(reader), false);
        }
        // A fill may have cached the blob and left the map since the caller looked.
        if let Some(hit) = self.inner.cache.get(&id).await {
            return RangeFill::Source(hit.into(), false);
        }
        let start = Start {
            meta: Some(meta.clone()),
            rows_first: rows,
        };
        match self.start_fill(id, start) {
            Ok((reader, started)) => RangeFill::Source(Source::Filling(reader), started),
            Err(_) => RangeFill::Busy,
        }
    }

    /// Join the running fill of `id`, or start one (bounded: [`ReadError::Overloaded`] when
    /// `max_concurrent_fills` run already). True if this call started it.
    fn start_fill(&self, id: BlobId, start: Start) -> Result<(FillReader, bool), ReadError> {
        let mut inflight = self.lock_inflight();
        if let Some(tx) = inflight.get(&id) {
            let reader = FillReader {
                rx: tx.subscribe(),
                next: 0,
            };
            return Ok((reader, false));
        }
        let permit = self
            .inner
            .fill_permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| ReadError::Overloaded)?;
        let tx = Arc::new(watch::channel(FillState::default()).0);
        inflight.insert(id, tx.clone());
        let reader = FillReader {
            rx: tx.subscribe(),
            next: 0,
        };
        drop(inflight);
        self.inner.telemetry.fills_started.increment(1);
        let filler = self.clone();
        tokio::spawn(async move { filler.run_fill(id, tx, permit, start).await });
        Ok((reader, true))
    }

    /// Verified metadata of `id`, from the cache, the upstreams that offer it, or the nodes (one
    /// fetch for concurrent callers).
    pub async fn metadata(&self, id: BlobId) -> Result<Arc<VerifiedMetadata>, ReadError> {
        self.metadata_from(id, None).await
    }

    /// [`Filler::metadata`], read (on a miss) from `topology` when the caller has chosen one
    /// already (a fill), else from the committee [`Filler::read_topology`] picks.
    async fn metadata_from(
        &self,
        id: BlobId,
        topology: Option<Arc<Topology>>,
    ) -> Result<Arc<VerifiedMetadata>, ReadError> {
        if self.inner.blocklist.is_blocked(&id) {
            return Err(ReadError::Blocked);
        }
        if let Some(miss) = self.remembered_miss(&id).await {
            return Err(miss);
        }
        let inner = self.inner.clone();
        let filler = self.clone();
        let result = self
            .inner
            .metadata
            .get_or_load(id, async move {
                let from_upstreams = if inner.upstreams.is_empty() {
                    None
                } else {
                    Some(upstream::metadata(&inner, id).await)
                };
                let loaded = match from_upstreams {
                    Some(Ok(meta)) => Ok(meta),
                    Some(Err(e)) if inner.committees.current().node_count() == 0 => Err(e),
                    _ => {
                        let topology = match topology {
                            Some(t) => t,
                            None => filler.read_topology(id).await,
                        };
                        let result = fetch_metadata(&inner, &topology, id).await;
                        if matches!(result, Err(ReadError::Unavailable(_))) {
                            // Possibly a committee we no longer know: look at the chain again.
                            inner.committees.request_refresh();
                        }
                        result
                    }
                };
                if loaded.is_ok() {
                    inner.memory.exists(id).await;
                }
                loaded
            })
            .await;
        if let Err(e) = &result {
            self.remember_miss(id, e).await;
        }
        result
    }

    /// A fresh remembered "not found" for `id` (counted).
    async fn remembered_miss(&self, id: &BlobId) -> Option<ReadError> {
        let miss = self.inner.memory.miss(id).await?;
        self.inner.telemetry.negative_cache("hit");
        tracing::debug!(blob_id = %id, "answered from the negative cache");
        Some(miss)
    }

    /// Remember `error` for a while if it says that `id` does not exist.
    async fn remember_miss(&self, id: BlobId, error: &ReadError) {
        if self.inner.memory.record_miss(id, error).await {
            self.inner.telemetry.negative_cache("stored");
        }
    }

    /// `id` exists (published, or cached, here): forget any remembered "not found", so it
    /// cannot outlive the blob's publish, and let its later fills request slivers early.
    pub async fn blob_exists(&self, id: BlobId) {
        if self.inner.memory.exists(id).await {
            self.inner.telemetry.negative_cache("dropped");
            tracing::debug!(blob_id = %id, "dropped a remembered miss: the blob exists");
        }
    }

    /// Read systematic rows `rows` of a blob (a byte range on a miss), each verified, in order
    /// and truncated to the blob's end. Any row that cannot be had is an error: the caller falls
    /// back to a whole-blob fill, which can reconstruct it.
    pub async fn read_rows(
        &self,
        meta: &Arc<VerifiedMetadata>,
        rows: Range<u16>,
    ) -> Result<Vec<Bytes>, ReadError> {
        if !self.inner.upstreams.is_empty() {
            match upstream::read_rows(&self.inner, meta, rows.clone()).await {
                Ok(out) => return Ok(out),
                Err(e) if self.inner.committees.current().node_count() == 0 => return Err(e),
                Err(_) => {}
            }
        }
        let topology = self.read_topology(meta.blob_id()).await;
        let mut out = Vec::with_capacity(rows.len());
        let mut emit = |row: Bytes| out.push(row);
        let first = rows.start;
        collect_slivers(
            &self.inner,
            &topology,
            meta,
            Goal::Rows(rows),
            Some((first, &mut emit)),
            None,
            &mut Prefetched::default(),
        )
        .await?;
        Ok(out)
    }

    /// Collect verified slivers of a non-empty blob and publish its rows (decoding if needed),
    /// except the first `skip`, which an upstream already published.
    async fn read_slivers(
        &self,
        topology: &Arc<Topology>,
        meta: &Arc<VerifiedMetadata>,
        tx: &watch::Sender<FillState>,
        prefetched: &mut Prefetched,
        skip: usize,
        rows_first: Range<u16>,
    ) -> Result<(), ReadError> {
        let kp = meta.config().n_primary_source_symbols();
        let consistency = self.inner.config.consistency;
        let stream_early = consistency != ConsistencyCheck::Strict;
        // Every row passes through here exactly once, in order.
        let mut seen = 0usize;
        let mut publish = |row: Bytes| {
            if seen >= skip {
                tx.send_modify(|s| {
                    s.early.remove(&(s.rows.len() as u16));
                    s.rows.push(row);
                });
            }
            seen += 1;
        };
        // Rows that verify ahead of the prefix, for ranges that need them.
        let mut ahead = |index: u16, row: Bytes| {
            tx.send_if_modified(|s| {
                if usize::from(index) < s.rows.len() {
                    return false;
                }
                s.early.insert(index, row);
                true
            });
        };
        let emit = stream_early.then_some((0u16, &mut publish as &mut (dyn FnMut(Bytes) + Send)));
        let early = stream_early.then_some(&mut ahead as &mut (dyn FnMut(u16, Bytes) + Send));
        let goal = Goal::Blob { first: rows_first };
        let collected =
            collect_slivers(&self.inner, topology, meta, goal, emit, early, prefetched).await?;
        let all_systematic = (0..kp).all(|i| collected.primary.contains_key(&i));
        if !(all_systematic && consistency != ConsistencyCheck::Strict) {
            let slivers: Vec<VerifiedSliver> = if collected.primary.len() >= usize::from(kp) {
                collected.primary.into_values().collect()
            } else {
                collected.secondary.into_values().collect()
            };
            let decode_meta = meta.clone();
            let decoded = tokio::task::spawn_blocking(move || {
                codec::decode(&decode_meta, slivers, consistency)
            })
            .await
            .map_err(|e| ReadError::Internal(format!("decoding task failed: {e}")))?
            .map_err(|e| match e {
                CodecError::InconsistentBlob(m) => ReadError::Inconsistent(m),
                CodecError::NotEnoughSlivers { have, need } => ReadError::Unavailable(format!(
                    "only {have} of the {need} slivers needed verified"
                )),
                other => ReadError::Internal(format!("decoding failed: {other}")),
            })?;
            let published = if stream_early {
                usize::from(collected.next_row)
            } else {
                0
            };
            for chunk in decoded.chunks().iter().skip(published) {
                publish(chunk.clone());
            }
        }
        Ok(())
    }

    async fn run_fill(
        &self,
        id: BlobId,
        tx: Arc<watch::Sender<FillState>>,
        permit: OwnedSemaphorePermit,
        start: Start,
    ) {
        let mut guard = FillGuard {
            filler: self,
            id,
            tx: tx.clone(),
        };
        let started = Instant::now();
        let result = self.fill_blob(id, &tx, start).await;
        let telemetry = &self.inner.telemetry;
        match &result {
            Ok(()) => {
                telemetry.fills_succeeded.increment(1);
                telemetry
                    .fill_seconds
                    .record(started.elapsed().as_secs_f64());
                tracing::debug!(blob_id = %id, elapsed = ?started.elapsed(), "fill complete");
            }
            Err(e) => {
                telemetry.fill_failed(e.kind());
                if matches!(
                    e,
                    ReadError::NotFound { .. } | ReadError::NotFoundUpstream { .. }
                ) {
                    // A client's question, not the gateway's failure: not worth a warning.
                    tracing::debug!(blob_id = %id, error = %e, "fill found no blob");
                } else {
                    tracing::warn!(blob_id = %id, error = %e, "fill failed");
                }
                // Before leaving the map, so a request that sees this outcome and retries
                // finds the miss rather than starting another lookup.
                self.remember_miss(id, e).await;
            }
        }
        // Leave the map before announcing the outcome, so a request that sees this fill's
        // result and retries starts a new fill instead of joining this finished one (a success
        // is in the cache already).
        guard.leave();
        tx.send_modify(|s| s.outcome = Some(result));
        guard.finish();
        drop(permit);
    }

    async fn fill_blob(
        &self,
        id: BlobId,
        tx: &watch::Sender<FillState>,
        start: Start,
    ) -> Result<(), ReadError> {
        // Upstreams first (a parent gateway, an aggregator); the nodes continue where they
        // stopped, without publishing a row twice.
        let mut published = 0usize;
        if !self.inner.upstreams.is_empty() {
            match upstream::fill(&self.inner, id, tx, &mut published).await {
                Ok(meta) => return self.commit(id, &meta, tx).await,
                Err(e) if self.inner.committees.current().node_count() == 0 => return Err(e),
                Err(e) => {
                    tracing::info!(blob_id = %id, error = %e, "upstreams failed; reading from the storage nodes")
                }
            }
        }
        // Sliver requests need only the ID and pair index, so the systematic ones go out with
        // the metadata request: a fill takes one round trip, not two. Their bytes wait,
        // unverified and unused, until the metadata has verified. Only for IDs seen to exist
        // before: for an ID nobody has seen (perhaps a random one) they would be `kp` requests
        // wasted, so its first fill takes the second round trip instead.
        // One committee for the whole fill, even if a newer one is published meanwhile.
        let topology = self.read_topology(id).await;
        let mut prefetched = if start.meta.is_none()
            && self.inner.config.prefetch_slivers
            && self.inner.memory.is_known(&id)
        {
            slivers::prefetch_systematic(&self.inner, &topology, id)
        } else {
            Prefetched::default()
        };
        // The blob's status, asked of the current committee while the metadata and slivers
        // come in: whether to serve it at all (certified, not expired) and for how long.
        let mut status = Some(self.spawn_status_check(id));
        let meta = match start.meta {
            Some(meta) => meta,
            None => self.metadata_from(id, Some(topology.clone())).await?,
        };
        let config = *meta.config();
        let len = meta.unencoded_length();
        let consistency = self.inner.config.consistency;
        let streaming =
            len >= self.inner.config.stream_from_bytes && consistency != ConsistencyCheck::Strict;
        // A streaming blob's response starts with its first row: its status must be known
        // before any row is published.
        let mut kind = None;
        if streaming {
            if let Some(task) = status.take() {
                kind = self.streaming_verdict(task).await?;
            }
        }
        tx.send_if_modified(|s| {
            if s.meta.is_some() {
                return false; // Announced by an upstream already.
            }
            s.meta = Some(meta.clone());
            s.streaming = streaming;
            true
        });
        if len == 0 {
            // The verified metadata already proves the content is empty; Strict additionally
            // checks that the empty blob encodes to this ID.
            if consistency == ConsistencyCheck::Strict {
                let blob_id = codec::blob_id(config.n_shards(), &[])
                    .map_err(|e| ReadError::Internal(e.to_string()))?;
                if blob_id != id {
                    return Err(ReadError::Inconsistent(format!(
                        "the empty blob encodes to {blob_id}"
                    )));
                }
            }
        } else {
            let read = self
                .read_slivers(
                    &topology,
                    &meta,
                    tx,
                    &mut prefetched,
                    published,
                    start.rows_first,
                )
                .await;
            if matches!(read, Err(ReadError::Unavailable(_))) {
                // Too few slivers: perhaps the shards moved. Look at the chain again.
                self.inner.committees.request_refresh();
            }
            read?;
        }
        if kind.is_none() {
            kind = Some(self.fill_verdict(id, status.take()).await?);
        }
        if let Some(kind) = kind {
            let clock = self.clock();
            self.inner.lifecycle.record(id, kind, clock);
        }
        self.commit(id, &meta, tx).await
    }

    /// Every row is published: check the total, cache the blob, then let responses start, so
    /// any request after the first response's headers is a cache hit.
    async fn commit(
        &self,
        id: BlobId,
        meta: &VerifiedMetadata,
        tx: &watch::Sender<FillState>,
    ) -> Result<(), ReadError> {
        let len = meta.unencoded_length();
        let rows = tx.borrow().rows.clone();
        let total: u64 = rows.iter().map(|r| r.len() as u64).sum();
        if total != len {
            return Err(ReadError::Internal(format!(
                "assembled {total} bytes for a blob of {len}"
            )));
        }
        // Every byte is verified and every check done: cache the blob, then let responses
        // start, so any request after the first response's headers is a cache hit.
        self.inner
            .cache
            .insert(id, CachedBlob::from_verified_rows(rows))
            .await;
        self.blob_exists(id).await;
        tx.send_modify(|s| s.committed = true);
        Ok(())
    }
}

/// Ends a fill however its task ends (success, error, panic or runtime shutdown): publishes an
/// outcome if none was, so readers never wait forever, and leaves the in-flight map.
struct FillGuard<'a> {
    filler: &'a Filler,
    id: BlobId,
    tx: Arc<watch::Sender<FillState>>,
}

impl FillGuard<'_> {
    fn finish(&mut self) {
        self.leave();
        self.tx.send_if_modified(|s| {
            if s.outcome.is_some() {
                return false;
            }
            s.outcome = Some(Err(ended_unexpectedly()));
            true
        });
    }

    /// Remove this fill from the in-flight map (if it is still the one there).
    fn leave(&mut self) {
        let mut inflight = self.filler.lock_inflight();
        if inflight
            .get(&self.id)
            .is_some_and(|tx| Arc::ptr_eq(tx, &self.tx))
        {
            inflight.remove(&self.id);
        }
    }
}

impl Drop for FillGuard<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}
