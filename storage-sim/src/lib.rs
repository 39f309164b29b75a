//! A simulated Walrus storage-node committee on one machine, for the gateway's tests, demos and
//! load tests.
//!
//! [`SimNetwork::start`] runs `nodes` HTTP servers on `127.0.0.1` (HTTPS with
//! [`SimConfig::tls`]), each a storage node owning some of the `n_shards` shards (round-robin
//! by default) and speaking the storage-node REST API of SPEC §10 (module [`api`] lists what
//! is simulated and how). Blobs get in either directly ([`SimNetwork::store`], no HTTP) or
//! through the real `PUT` endpoints. Faults ([`faults`]) can be injected per node at start-up
//! and at run time, from the library or through the loopback admin endpoint `POST /sim/faults`.
//! With a data directory ([`persist`]) a restarted network serves what it stored, with the same
//! keys, in the same epoch.
//!
//! Like real nodes, every node has a node ID and a P-256 network key ([`identity`]); with TLS
//! it presents a self-signed certificate of that key named as real nodes name theirs. The epoch
//! is live ([`epoch`]): [`SimNetwork::advance_epoch`] (or a timer) moves about a third of the
//! shards, hands their slivers over, and goes through `EpochChangeSync` to `EpochChangeDone`;
//! [`SimNetwork::move_node`] moves a node to another port. [`chain_view`] describes all of it
//! as the chain would ([`ChainView`]) and lets a stand-in Sui full node drive it
//! ([`ChainControl`]).
//!
//! Guarantees:
//! * bytes served for a blob are exactly its BCS metadata and sliver encodings (as
//!   `walrus-core` produces them), unless a fault says otherwise;
//! * a node never stores metadata that does not match its Blob ID, nor a sliver that does not
//!   verify against the stored metadata and its path's pair index;
//! * each sliver pair is served only by the node owning its shard (SPEC §7 rotation) in the
//!   current epoch, and while an epoch change syncs also by the shard's previous owner (read
//!   only); others answer `400 FAILED_PRECONDITION / SHARD_NOT_ASSIGNED`. Only epoch changes
//!   move shards, never faults;
//! * every node holding a blob reports the same status: certified in the epoch the blob was
//!   first stored in.

pub mod api;
mod body;
pub mod chain_view;
pub mod committee;
pub mod epoch;
pub mod faults;
pub mod identity;
pub mod lifecycle;
mod network;
mod node;
pub mod persist;
mod recovery;
mod response;
mod store;
pub mod sui;

use std::path::PathBuf;

pub use chain_view::{ChainControl, ChainNode, ChainView};
pub use committee::{Committee, CommitteeError, CommitteeNode};
pub use epoch::{EpochChange, BLOB_LIFETIME_EPOCHS};
pub use faults::{FaultsError, FaultsFile, NodeFaults};
pub use identity::server_name_from_public_key;
pub use lifecycle::BlobLife;
pub use network::SimNetwork;
pub use response::{GLOBAL_ERROR_DOMAIN, STORAGE_NODE_ERROR_DOMAIN};

/// How to build a simulated committee.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Number of shards (the encoding's `n`); at least 4.
    pub n_shards: u16,
    /// Number of storage nodes; at most `n_shards` (each node owns at least one shard).
    pub nodes: usize,
    /// Node `i` listens on `base_port + i`; 0 lets the OS pick a free port per node.
    pub base_port: u16,
    /// Keep every node's storage in this directory and restore it on start.
    pub data_dir: Option<PathBuf>,
    /// Shards per node; `None` = round-robin (shard `s` on node `s % nodes`).
    pub assignment: Option<Vec<Vec<u16>>>,
    /// Per-node faults at start; shorter than `nodes` = the rest without faults.
    pub faults: Vec<NodeFaults>,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with each node's self-signed certificate of
    /// its network key; the committee then lists `https://` URLs and the keys.
    pub tls: bool,
    /// How long an epoch change stays in `EpochChangeSync` (old owners still serve the shards
    /// they gave away) before `EpochChangeDone`.
    pub epoch_sync_ms: u64,
    /// Advance the epoch every this many seconds; `None` = only when asked.
    pub epoch_secs: Option<u64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            n_shards: 10,
            nodes: 4,
            base_port: 0,
            data_dir: None,
            assignment: None,
            faults: Vec::new(),
            tls: false,
            epoch_sync_ms: 2000,
            epoch_secs: None,
        }
    }
}

/// Requests that reached one node's handler, faulty answers included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// `GET /v1/blobs/{id}/metadata`.
    pub metadata_gets: u64,
    /// `GET /v1/blobs/{id}/slivers/{pair}/primary`.
    pub primary_sliver_gets: u64,
    /// `GET /v1/blobs/{id}/slivers/{pair}/secondary`.
    pub secondary_sliver_gets: u64,
    /// Metadata and sliver `PUT`s.
    pub puts: u64,
    /// Metadata, sliver and blob status `GET`s.
    pub status_gets: u64,
    /// `GET /v1/blobs/{id}/recoverySymbols`.
    pub recovery_symbol_gets: u64,
}

impl std::ops::Add for NodeCounters {
    type Output = NodeCounters;

    fn add(self, o: NodeCounters) -> NodeCounters {
        NodeCounters {
            metadata_gets: self.metadata_gets + o.metadata_gets,
            primary_sliver_gets: self.primary_sliver_gets + o.primary_sliver_gets,
            secondary_sliver_gets: self.secondary_sliver_gets + o.secondary_sliver_gets,
            puts: self.puts + o.puts,
            status_gets: self.status_gets + o.status_gets,
            recovery_symbol_gets: self.recovery_symbol_gets + o.recovery_symbol_gets,
        }
    }
}

/// Why the simulated network could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator configuration: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    #[error(transparent)]
    Committee(#[from] CommitteeError),
    #[error("invalid faults: {0}")]
    InvalidFaults(String),
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("node {node} could not listen on its port {port} again: {reason}")]
    Rebind {
        node: usize,
        port: u16,
        reason: String,
    },
    #[error("no node {node}: the committee has {nodes} nodes")]
    NoSuchNode { node: usize, nodes: usize },
    #[error("no node {0:?}: expected a node index or name")]
    UnknownNode(String),
    #[error("node identity: {0}")]
    Identity(String),
    #[error("data directory: {0}")]
    DataDir(String),
    #[error("storage write failed: {0}")]
    Storage(std::io::Error),
    #[error("the network is shut down")]
    ShutDown,
}
