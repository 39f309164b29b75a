//! The storage nodes: who holds which sliver (the committee and SPEC §7's rotation) and a small
//! HTTP client for their REST API (SPEC §10).
//!
//! The client speaks plain HTTP/1.1 to `http://` nodes (the simulator) through hyper-util's
//! pooled legacy client, and HTTPS to `https://` nodes (real Walrus nodes, NETWORK.md §6): one
//! client per (origin, key), made on first use, whose TLS accepts only a certificate carrying
//! the node's on-chain `network_public_key` ([`crate::node_tls`]), offers ALPN `h2` and
//! `http/1.1`, and multiplexes every request to the node over one HTTP/2 connection when the
//! node speaks it. Every request has a timeout covering headers and body, every body a byte
//! limit checked while it streams in, and every failure becomes a [`NodeError`] that says what
//! the node did wrong, so the fill can log and count it per node; a certificate without the
//! pinned key is [`NodeError::Pinning`]. Nothing here trusts a reply: bodies come back as raw
//! bytes for the fill to decode and verify.

use crate::node_tls::{self, NetworkKey};
use bytes::Bytes;
use codec::{BlobId, SliverKind};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use storage_sim::committee::{parse_network_key, Committee, CommitteeNode};

/// Why a committee cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("the committee has {0} shards; the codec needs at least 4 and a supported count")]
    BadShardCount(u16),
    #[error("shard {shard} is listed by nodes {first:?} and {second:?}")]
    DuplicateShard {
        shard: u16,
        first: String,
        second: String,
    },
    #[error("shard {shard} is out of range for {n_shards} shards (node {node:?})")]
    ShardOutOfRange {
        shard: u16,
        n_shards: u16,
        node: String,
    },
    #[error("shard {0} is not assigned to any node")]
    UnassignedShard(u16),
    #[error("node {node:?} has an unusable URL {url:?}: {reason}")]
    BadUrl {
        node: String,
        url: String,
        reason: String,
    },
    #[error("node {node:?} has network_public_key {key:?}: expected 66 hex digits of a compressed P-256 point")]
    BadKey { node: String, key: String },
}

/// Where a node is reached: its base URL and the key its TLS certificate must carry.
#[derive(Debug, Clone)]
struct Endpoint {
    /// Without a trailing slash.
    base: String,
    /// The on-chain `network_public_key`; required (and pinned) for `https://`.
    key: Option<NetworkKey>,
}

/// The committee with a shard → node table, checked once so lookups cannot fail.
#[derive(Debug, Clone)]
pub struct Topology {
    nodes: Vec<CommitteeNode>,
    endpoints: Vec<Endpoint>,
    shard_owner: Vec<usize>,
    config: codec::EncodingConfig,
}

impl Topology {
    /// Check that every shard `0..n` belongs to exactly one node with a usable URL: `http://`,
    /// or `https://` with a `network_public_key` to pin. A committee without nodes is allowed:
    /// a gateway that reads only from upstreams (it then never asks a node, and cannot publish).
    pub fn new(committee: Committee) -> Result<Self, TopologyError> {
        let n = committee.n_shards;
        let config = codec::EncodingConfig::new(n).map_err(|_| TopologyError::BadShardCount(n))?;
        let mut owner: Vec<Option<usize>> = vec![None; usize::from(n)];
        let mut endpoints = Vec::with_capacity(committee.nodes.len());
        for (i, node) in committee.nodes.iter().enumerate() {
            let base = node.url.trim_end_matches('/').to_owned();
            let bad = |reason: &str| TopologyError::BadUrl {
                node: node.name.clone(),
                url: node.url.clone(),
                reason: reason.to_owned(),
            };
            let key = match &node.network_public_key {
                Some(hex) => Some(parse_network_key(hex).ok_or_else(|| TopologyError::BadKey {
                    node: node.name.clone(),
                    key: hex.clone(),
                })?),
                None => None,
            };
            let uri: Uri = base.parse().map_err(|_| bad("not a URI"))?;
            if uri.authority().is_none() {
                return Err(bad("no host"));
            }
            match (uri.scheme_str(), key) {
                (Some("http"), _) | (Some("https"), Some(_)) => {}
                (Some("https"), None) => {
                    return Err(bad(
                        "https:// needs the node's network_public_key (its certificate's key)",
                    ))
                }
                _ => return Err(bad("only http:// and https:// URLs are supported")),
            }
            endpoints.push(Endpoint { base, key });
            for &shard in &node.shards {
                let slot = owner.get_mut(usize::from(shard)).ok_or_else(|| {
                    TopologyError::ShardOutOfRange {
                        shard,
                        n_shards: n,
                        node: node.name.clone(),
                    }
                })?;
                if let Some(first) = *slot {
                    return Err(TopologyError::DuplicateShard {
                        shard,
                        first: committee.nodes[first].name.clone(),
                        second: node.name.clone(),
                    });
                }
                *slot = Some(i);
            }
        }
        if committee.nodes.is_empty() {
            return Ok(Self {
                nodes: Vec::new(),
                endpoints,
                shard_owner: Vec::new(),
                config,
            });
        }
        let shard_owner = owner
            .into_iter()
            .enumerate()
            .map(|(shard, o)| o.ok_or(TopologyError::UnassignedShard(shard as u16)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            nodes: committee.nodes,
            endpoints,
            shard_owner,
            config,
        })
    }

    pub fn config(&self) -> &codec::EncodingConfig {
        &self.config
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, index: usize) -> &CommitteeNode {
        &self.nodes[index]
    }

    /// The node's base URL, without a trailing slash.
    pub fn base_url(&self, index: usize) -> &str {
        &self.endpoints[index].base
    }

    /// The node's on-chain `network_public_key`, if the committee gives it. An `https://` node
    /// always has one, and its TLS certificate must carry it.
    pub fn network_key(&self, index: usize) -> Option<&NetworkKey> {
        self.endpoints[index].key.as_ref()
    }

    /// Shards a node holds: its weight when counting "not found" replies toward a quorum.
    pub fn weight(&self, index: usize) -> u16 {
        self.nodes[index].shards.len() as u16
    }

    /// The node holding sliver pair `pair` of `blob_id` (pair → shard by rotation → owner).
    pub fn node_for_pair(&self, blob_id: &BlobId, pair: u16) -> usize {
        let shard = blob_id.shard_for_pair(pair, self.config.n_shards());
        self.shard_owner[usize::from(shard)]
    }

    fn metadata_url(&self, node: usize, blob_id: &BlobId) -> String {
        format!("{}/v1/blobs/{blob_id}/metadata", self.endpoints[node].base)
    }

    fn status_url(&self, node: usize, blob_id: &BlobId) -> String {
        format!("{}/v1/blobs/{blob_id}/status", self.endpoints[node].base)
    }

    fn sliver_url(&self, node: usize, blob_id: &BlobId, pair: u16, kind: SliverKind) -> String {
        format!(
            "{}/v1/blobs/{blob_id}/slivers/{pair}/{}",
            self.endpoints[node].base,
            kind.as_str()
        )
    }
}

/// What went wrong asking a storage node.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("transport error: {0}")]
    Transport(String),
    #[error("not found")]
    NotFound,
    /// 451: the blob is on the node's deny list (NETWORK.md §7.2).
    #[error("the blob is on the node's deny list (451)")]
    Forbidden,
    #[error("HTTP {status} ({reason})")]
    Status { status: u16, reason: String },
    #[error("body larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("malformed request URL {0:?}")]
    BadUrl(String),
    /// The node's TLS certificate does not carry its pinned network key (or is not a P-256
    /// certificate at all): it may not be the node the committee names.
    #[error("TLS certificate refused: {0}")]
    Pinning(String),
}

impl NodeError {
    /// A short fixed word for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeError::Timeout(_) => "timeout",
            NodeError::Transport(_) => "transport",
            NodeError::NotFound => "not_found",
            NodeError::Forbidden => "forbidden",
            NodeError::Status { .. } => "status",
            NodeError::TooLarge { .. } => "too_large",
            NodeError::BadUrl(_) => "bad_url",
            NodeError::Pinning(_) => "tls_pin",
        }
    }
}

/// Bytes of an error body read to find the Walrus reason code.
const ERROR_BODY_LIMIT: usize = 4096;

/// TCP connect timeout to a node (NETWORK.md §6.3, the Rust SDK's).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type PlainClient = Client<HttpConnector, Full<Bytes>>;
type PinnedClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Pooled HTTP(S) client for storage nodes; clones share the pools.
#[derive(Clone)]
pub struct NodeClient {
    /// `http://` nodes.
    plain: PlainClient,
    /// `https://` nodes: one client (so one pool, and one HTTP/2 connection) per origin and
    /// pinned key, made on first use. Bounded by the committee: one entry per node.
    pinned: Arc<Mutex<HashMap<(String, NetworkKey), PinnedClient>>>,
    /// Origins whose certificate did not carry the pinned key, and when: they are not asked
    /// again for [`PIN_HOLD`], time for the committee watcher (asked by the fill) to re-read
    /// the node's pool object, which may carry a new key or address.
    refused: Arc<Mutex<HashMap<(String, NetworkKey), std::time::Instant>>>,
}

/// How long a node whose certificate failed the pin is left alone (the committee watcher's
/// grace period between requested refreshes).
pub const PIN_HOLD: Duration = Duration::from_secs(10);

impl Default for NodeClient {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let plain = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Self {
            plain,
            pinned: Arc::default(),
            refused: Arc::default(),
        }
    }

    /// An HTTPS client that trusts only certificates carrying `key`: ALPN `h2`, `http/1.1`;
    /// HTTP/2 keep-alive pings every 30 s (5 s to answer, also while idle) and an adaptive
    /// window, as the Walrus Rust SDK (NETWORK.md §6.3). Idle connections are closed after
    /// 5 minutes, so an HTTP/1.1 node's burst of connections does not stay open for good.
    fn pinned_client(key: NetworkKey) -> PinnedClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(node_tls::client_config(key))
            .https_only()
            .enable_all_versions()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(300))
            .pool_max_idle_per_host(256)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(5))
            .http2_keep_alive_while_idle(true)
            .http2_adaptive_window(true)
            .build(connector)
    }

    /// Send `request`: over plain HTTP for `http://`, over TLS pinned to `pin` for `https://`
    /// (without a pin that is a [`NodeError::BadUrl`]; [`Topology`] never makes one).
    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        pin: Option<&NetworkKey>,
    ) -> Result<Response<Incoming>, NodeError> {
        let uri = request.uri();
        let (Some("https"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return self
                .plain
                .request(request)
                .await
                .map_err(|e| NodeError::Transport(error_chain(&e)));
        };
        let Some(key) = pin else {
            return Err(NodeError::BadUrl(uri.to_string()));
        };
        let origin = (authority.as_str().to_owned(), *key);
        if let Some(at) = self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&origin)
            .filter(|at| at.elapsed() < PIN_HOLD)
        {
            return Err(NodeError::Pinning(format!(
                "its certificate did not carry the on-chain key {:?} ago; not asked again \
                 until its pool object is re-read",
                at.elapsed()
            )));
        }
        let client = self
            .pinned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(origin.clone())
            .or_insert_with(|| Self::pinned_client(*key))
            .clone();
        client
            .request(request)
            .await
            .map_err(|e| match node_tls::pin_failure(&e) {
                Some(pin) => {
                    self.refused
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(origin, std::time::Instant::now());
                    NodeError::Pinning(pin.to_string())
                }
                None => NodeError::Transport(error_chain(&e)),
            })
    }

    /// Open (and keep in the pool) a connection to every `https://` node of `topology` with a
    /// `GET /v1/health`, so the first fill does not wait for a hundred TLS handshakes. Failures
    /// are left to the requests that follow; plain-HTTP nodes cost no handshake and are skipped.
    pub async fn warm(&self, topology: &Topology) {
        let mut requests = tokio::task::JoinSet::new();
        for node in 0..topology.node_count() {
            let base = topology.base_url(node);
            let Some(key) = topology
                .network_key(node)
                .filter(|_| base.starts_with("https://"))
            else {
                continue;
            };
            let (client, url, key) = (self.clone(), format!("{base}/v1/health"), *key);
            requests.spawn(async move {
                let _ = client
                    .get(&url, Some(&key), 64 << 10, CONNECT_TIMEOUT * 2)
                    .await;
            });
        }
        while requests.join_next().await.is_some() {}
    }

    /// `GET /v1/blobs/{id}/metadata` on `node`: the BCS body, at most `limit` bytes.
    pub async fn metadata(
        &self,
        topology: &Topology,
        node: usize,
        blob_id: &BlobId,
        limit: usize,
        timeout: Duration,
    ) -> Result<Bytes, NodeError> {
        self.get(
            &topology.metadata_url(node, blob_id),
            topology.network_key(node),
            limit,
            timeout,
        )
        .await
    }

    /// `GET /v1/blobs/{id}/status` on `node`: the JSON body, at most `limit` bytes.
    pub async fn blob_status(
        &self,
        topology: &Topology,
        node: usize,
        blob_id: &BlobId,
        limit: usize,
        timeout: Duration,
    ) -> Result<Bytes, NodeError> {
        self.get(
            &topology.status_url(node, blob_id),
            topology.network_key(node),
            limit,
            timeout,
        )
        .await
    }

    /// `GET /v1/blobs/{id}/slivers/{pair}/{kind}` on the node holding `pair`.
    pub async fn sliver(
        &self,
        topology: &Topology,
        blob_id: &BlobId,
        pair: u16,
        kind: SliverKind,
        limit: usize,
        timeout: Duration,
    ) -> Result<Bytes, NodeError> {
        let node = topology.node_for_pair(blob_id, pair);
        self.get(
            &topology.sliver_url(node, blob_id, pair, kind),
            topology.network_key(node),
            limit,
            timeout,
        )
        .await
    }

    /// `GET /v1/blobs/{id}/recoverySymbols?targetSliver={target}&targetType={kind}` on `node`
    /// (SPEC §10): the BCS `Vec<GeneralRecoverySymbol>`, one symbol per shard the node owns,
    /// each rebuilding sliver `target` of `kind`; unverified (`codec::recovery`).
    #[allow(clippy::too_many_arguments)]
    pub async fn recovery_symbols(
        &self,
        topology: &Topology,
        node: usize,
        blob_id: &BlobId,
        target: u16,
        kind: SliverKind,
        limit: usize,
        timeout: Duration,
    ) -> Result<Bytes, NodeError> {
        let url = format!(
            "{}/v1/blobs/{blob_id}/recoverySymbols?targetSliver={target}&targetType={}",
            topology.endpoints[node].base,
            kind.as_str()
        );
        self.get(&url, topology.network_key(node), limit, timeout)
            .await
    }

    /// GET `url` and return a 200 body of at most `limit` bytes, all within `timeout`. An
    /// `https://` URL needs `pin`, the node's network key (see [`Topology::network_key`]).
    pub async fn get(
        &self,
        url: &str,
        pin: Option<&NetworkKey>,
        limit: usize,
        timeout: Duration,
    ) -> Result<Bytes, NodeError> {
        match tokio::time::timeout(timeout, self.get_inner(url, pin, limit)).await {
            Ok(result) => result,
            Err(_) => Err(NodeError::Timeout(timeout)),
        }
    }

    async fn get_inner(
        &self,
        url: &str,
        pin: Option<&NetworkKey>,
        limit: usize,
    ) -> Result<Bytes, NodeError> {
        let uri: Uri = url.parse().map_err(|_| NodeError::BadUrl(url.to_owned()))?;
        let request = Request::get(uri)
            .header(http::header::ACCEPT, "application/octet-stream")
            .body(Full::new(Bytes::new()))
            .map_err(|_| NodeError::BadUrl(url.to_owned()))?;
        let response = self.send(request, pin).await?;
        let status = response.status();
        if status == StatusCode::OK {
            if let Some(len) = content_length(response.headers()) {
                if len > limit as u64 {
                    return Err(NodeError::TooLarge { limit });
                }
            }
            return read_limited(response.into_body(), limit).await;
        }
        if status == StatusCode::NOT_FOUND {
            return Err(NodeError::NotFound);
        }
        if status == StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS {
            return Err(NodeError::Forbidden);
        }
        let reason = read_limited(response.into_body(), ERROR_BODY_LIMIT)
            .await
            .ok()
            .and_then(|body| envelope_reason(&body))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("unknown").to_owned());
        Err(NodeError::Status {
            status: status.as_u16(),
            reason,
        })
    }
}

impl NodeClient {
    /// PUT a BCS `body` to `url` within `timeout`: `Ok(true)` when the node already held it
    /// (200), `Ok(false)` when it stored or buffered it (201/202). An `https://` URL needs
    /// `pin`, as for [`NodeClient::get`].
    pub async fn put(
        &self,
        url: &str,
        pin: Option<&NetworkKey>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<bool, NodeError> {
        let exchange = async {
            let uri: Uri = url.parse().map_err(|_| NodeError::BadUrl(url.to_owned()))?;
            let request = Request::put(uri)
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .body(Full::new(body))
                .map_err(|_| NodeError::BadUrl(url.to_owned()))?;
            let response = self.send(request, pin).await?;
            let status = response.status();
            // Read the (small JSON) answer so the connection goes back to the pool.
            let answer = read_limited(response.into_body(), ERROR_BODY_LIMIT)
                .await
                .unwrap_or_default();
            match status {
                StatusCode::OK => Ok(true),
                StatusCode::CREATED | StatusCode::ACCEPTED => Ok(false),
                other => Err(NodeError::Status {
                    status: other.as_u16(),
                    reason: envelope_reason(&answer).unwrap_or_else(|| {
                        other.canonical_reason().unwrap_or("unknown").to_owned()
                    }),
                }),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(NodeError::Timeout(timeout)))
    }

    /// `PUT /v1/blobs/{id}/metadata` on `node`.
    pub async fn put_metadata(
        &self,
        topology: &Topology,
        node: usize,
        blob_id: &BlobId,
        body: Bytes,
        timeout: Duration,
    ) -> Result<bool, NodeError> {
        self.put(
            &topology.metadata_url(node, blob_id),
            topology.network_key(node),
            body,
            timeout,
        )
        .await
    }

    /// `PUT /v1/blobs/{id}/slivers/{pair}/{kind}` on the node holding `pair`.
    pub async fn put_sliver(
        &self,
        topology: &Topology,
        blob_id: &BlobId,
        pair: u16,
        kind: SliverKind,
        body: Bytes,
        timeout: Duration,
    ) -> Result<bool, NodeError> {
        let node = topology.node_for_pair(blob_id, pair);
        self.put(
            &topology.sliver_url(node, blob_id, pair, kind),
            topology.network_key(node),
            body,
            timeout,
        )
        .await
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn read_limited(body: hyper::body::Incoming, limit: usize) -> Result<Bytes, NodeError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(NodeError::TooLarge { limit }),
        Err(e) => Err(NodeError::Transport(format!("reading the body: {e}"))),
    }
}

/// The `reason` (or else `status`) of a Walrus JSON error envelope.
fn envelope_reason(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let reason = error
        .get("details")
        .and_then(|d| d.get(0))
        .and_then(|d| d.get("reason"))
        .or_else(|| error.get("status"))?
        .as_str()?;
    Some(reason.chars().take(64).collect())
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committee(nodes: Vec<(&str, Vec<u16>)>, n: u16) -> Committee {
        Committee {
            n_shards: n,
            nodes: nodes
                .into_iter()
                .enumerate()
                .map(|(i, (url, shards))| CommitteeNode {
                    name: format!("node-{i}"),
                    url: url.to_owned(),
                    shards,
                    network_public_key: None,
                })
                .collect(),
        }
    }

    #[test]
    fn topology_maps_pairs_through_rotation_to_owners() {
        let t = Topology::new(committee(
            vec![
                ("http://127.0.0.1:1", (0..5).collect()),
                ("http://127.0.0.1:2/", (5..10).collect()),
            ],
            10,
        ))
        .unwrap();
        let id = BlobId([7; 32]);
        for pair in 0..10 {
            let shard = id.shard_for_pair(pair, 10);
            assert_eq!(t.node_for_pair(&id, pair), usize::from(shard >= 5));
        }
        assert_eq!(
            t.sliver_url(1, &id, 3, SliverKind::Secondary),
            format!("http://127.0.0.1:2/v1/blobs/{id}/slivers/3/secondary")
        );
    }

    #[test]
    fn broken_committees_are_rejected_with_a_reason() {
        let gap = committee(vec![("http://a:1", (0..9).collect())], 10);
        assert!(matches!(
            Topology::new(gap),
            Err(TopologyError::UnassignedShard(9))
        ));
        let dup = committee(
            vec![("http://a:1", (0..10).collect()), ("http://b:1", vec![3])],
            10,
        );
        assert!(matches!(
            Topology::new(dup),
            Err(TopologyError::DuplicateShard { shard: 3, .. })
        ));
        let out = committee(vec![("http://a:1", (0..11).collect())], 10);
        assert!(matches!(
            Topology::new(out),
            Err(TopologyError::ShardOutOfRange { shard: 10, .. })
        ));
        let tls = committee(vec![("https://a:1", (0..10).collect())], 10);
        assert!(matches!(
            Topology::new(tls),
            Err(TopologyError::BadUrl { .. })
        ));
        assert!(matches!(
            Topology::new(committee(vec![], 2)),
            Err(TopologyError::BadShardCount(2))
        ));
    }

    #[test]
    fn https_nodes_need_a_network_key_and_keep_it() {
        let key = format!("03{}", "ab".repeat(32));
        let mut c = committee(
            vec![
                ("https://node.example:9185/", (0..5).collect()),
                ("http://127.0.0.1:2", (5..10).collect()),
            ],
            10,
        );
        c.nodes[0].network_public_key = Some(key.clone());
        let t = Topology::new(c.clone()).unwrap();
        assert_eq!(t.base_url(0), "https://node.example:9185");
        let mut expected = [0xab; 33];
        expected[0] = 0x03;
        assert_eq!(t.network_key(0), Some(&expected));
        assert_eq!(t.network_key(1), None);
        let id = BlobId([7; 32]);
        assert_eq!(
            t.metadata_url(0, &id),
            format!("https://node.example:9185/v1/blobs/{id}/metadata")
        );

        let mut without = c.clone();
        without.nodes[0].network_public_key = None;
        assert!(matches!(
            Topology::new(without),
            Err(TopologyError::BadUrl { .. })
        ));
        let mut malformed = c.clone();
        malformed.nodes[0].network_public_key = Some(format!("04{}", "ab".repeat(32)));
        assert!(matches!(
            Topology::new(malformed),
            Err(TopologyError::BadKey { .. })
        ));
        let mut other_scheme = c;
        other_scheme.nodes[0].url = "ftp://node.example".to_owned();
        assert!(matches!(
            Topology::new(other_scheme),
            Err(TopologyError::BadUrl { .. })
        ));
    }

    #[tokio::test]
    async fn an_https_url_without_a_pin_is_refused_before_connecting() {
        let client = NodeClient::new();
        let result = client
            .get("https://127.0.0.1:9/x", None, 10, Duration::from_secs(5))
            .await;
        assert!(matches!(result, Err(NodeError::BadUrl(_))), "{result:?}");
    }

    #[test]
    fn error_envelopes_yield_their_reason() {
        let body = br#"{"error":{"code":400,"status":"FAILED_PRECONDITION","message":"m","details":[{"@type":"ErrorInfo","reason":"SHARD_NOT_ASSIGNED","domain":"storage.walrus.space","metadata":{}}]}}"#;
        assert_eq!(envelope_reason(body).as_deref(), Some("SHARD_NOT_ASSIGNED"));
        assert_eq!(
            envelope_reason(br#"{"error":{"status":"INTERNAL"}}"#).as_deref(),
            Some("INTERNAL")
        );
        assert_eq!(envelope_reason(b"not json"), None);
    }
}
