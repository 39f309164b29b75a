//! The simulated committee: start-up (assignment, listeners, data directory), direct seeding,
//! run-time fault control, counters and shutdown.
//!
//! Guarantees: after [`SimNetwork::start`] returns, every node that is not `offline` is
//! listening on the URL in [`SimNetwork::committee`]; a node keeps its port and shards for
//! the life of the network, whatever its faults.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use codec::{bcs, BlobId, EncodingConfig, SliverKind, VerifiedMetadata};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::committee::{Committee, CommitteeNode};
use crate::faults::NodeFaults;
use crate::node::{self, ListenerState, NodeState};
use crate::persist::{self, Manifest, NodeDir};
use crate::store::{NodeStore, StoredBlob};
use crate::{NodeCounters, SimConfig, SimError};

/// The epoch every simulated node reports; the simulation has no epoch changes.
pub(crate) const SIM_EPOCH: u32 = 1;

/// The content of the blob whose metadata a `wrong_metadata` node serves instead.
const DECOY_BLOB: &[u8] = b"walrus-sim: the metadata of some other blob";

/// State shared by all nodes' tasks and handlers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: EncodingConfig,
    pub epoch: u32,
    pub nodes: Vec<NodeState>,
    /// Owner node of each shard.
    pub owner: Vec<usize>,
    pub started: Instant,
    decoy: OnceLock<Bytes>,
}

impl Shared {
    /// A node by index (`"3"`) or name (`"node-3"`).
    pub(crate) fn node_index(&self, key: &str) -> Option<usize> {
        key.parse::<usize>()
            .ok()
            .filter(|&i| i < self.nodes.len())
            .or_else(|| self.nodes.iter().position(|n| n.name == key))
    }

    fn check_node(&self, node: usize) -> Result<&NodeState, SimError> {
        self.nodes.get(node).ok_or(SimError::NoSuchNode {
            node,
            nodes: self.nodes.len(),
        })
    }

    pub(crate) fn set_faults(&self, node: usize, faults: NodeFaults) -> Result<(), SimError> {
        faults
            .validate()
            .map_err(|e| SimError::InvalidFaults(e.to_string()))?;
        self.check_node(node)?.faults.send_replace(faults);
        Ok(())
    }

    /// Set faults, then wait until the node's listener matches them.
    pub(crate) async fn apply_faults(
        &self,
        node: usize,
        faults: NodeFaults,
    ) -> Result<(), SimError> {
        let offline = faults.offline;
        self.set_faults(node, faults)?;
        let state = &self.nodes[node].listener;
        let mut rx = state.subscribe();
        let reached = rx
            .wait_for(|s| match s {
                ListenerState::Open => !offline,
                ListenerState::Closed => offline,
                ListenerState::Failed(_) => !offline,
                ListenerState::Starting => false,
            })
            .await
            .map_err(|_| SimError::ShutDown)?
            .clone();
        match reached {
            ListenerState::Failed(why) => Err(SimError::Rebind {
                node,
                port: self.nodes[node].port,
                reason: why,
            }),
            _ => Ok(()),
        }
    }

    /// BCS `BlobMetadata` (without ID) of a blob nobody asked for, computed once.
    pub(crate) async fn decoy_metadata(&self) -> Bytes {
        if let Some(bytes) = self.decoy.get() {
            return bytes.clone();
        }
        let config = self.config;
        let bytes = tokio::task::spawn_blocking(move || {
            let metadata = codec::compute_metadata(&config, DECOY_BLOB)
                .expect("a 43-byte blob fits every committee");
            Bytes::from(bcs::encode_metadata(metadata.metadata()))
        })
        .await
        .expect("computing metadata does not panic");
        self.decoy.get_or_init(|| bytes).clone()
    }
}

/// A running simulated committee. Dropping it stops the nodes in the background; prefer
/// [`SimNetwork::shutdown`], which waits for them.
#[derive(Debug)]
pub struct SimNetwork {
    shared: Arc<Shared>,
    committee: Committee,
    data_dir: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn assignment(config: &SimConfig) -> Result<Vec<Vec<u16>>, SimError> {
    let n = config.n_shards;
    let shards = match &config.assignment {
        None => (0..config.nodes)
            .map(|i| {
                (0..n)
                    .filter(|s| usize::from(*s) % config.nodes == i)
                    .collect()
            })
            .collect(),
        Some(a) => {
            if a.len() != config.nodes {
                return Err(SimError::InvalidConfig(format!(
                    "the assignment lists {} nodes, but the committee has {}",
                    a.len(),
                    config.nodes
                )));
            }
            a.clone()
        }
    };
    Ok(shards)
}

impl SimNetwork {
    /// Bind every node's listener, restore the data directory (if any), and start serving.
    pub async fn start(config: SimConfig) -> Result<SimNetwork, SimError> {
        let encoding = EncodingConfig::new(config.n_shards)?;
        if config.nodes == 0 {
            return Err(SimError::InvalidConfig(
                "at least one node is needed".into(),
            ));
        }
        if config.nodes > usize::from(config.n_shards) {
            return Err(SimError::InvalidConfig(format!(
                "{} nodes cannot each own one of {} shards",
                config.nodes, config.n_shards
            )));
        }
        if config.faults.len() > config.nodes {
            return Err(SimError::InvalidConfig(format!(
                "faults are given for {} nodes, but the committee has {}",
                config.faults.len(),
                config.nodes
            )));
        }
        for faults in &config.faults {
            faults
                .validate()
                .map_err(|e| SimError::InvalidFaults(e.to_string()))?;
        }
        let shards = assignment(&config)?;
        let names: Vec<String> = (0..config.nodes).map(|i| format!("node-{i}")).collect();

        let mut listeners = Vec::with_capacity(config.nodes);
        for i in 0..config.nodes {
            let port = if config.base_port == 0 {
                0
            } else {
                u16::try_from(usize::from(config.base_port) + i).map_err(|_| {
                    SimError::InvalidConfig(format!(
                        "base port {} + {} nodes exceeds 65535",
                        config.base_port, config.nodes
                    ))
                })?
            };
            let listener = node::bind(port).map_err(|source| SimError::Bind { port, source })?;
            let port = listener
                .local_addr()
                .map_err(|source| SimError::Bind { port, source })?
                .port();
            listeners.push((listener, port));
        }
        let committee = Committee {
            n_shards: config.n_shards,
            nodes: names
                .iter()
                .zip(&listeners)
                .zip(&shards)
                .map(|((name, (_, port)), shards)| CommitteeNode {
                    name: name.clone(),
                    url: format!("http://127.0.0.1:{port}"),
                    shards: shards.clone(),
                    network_public_key: None,
                })
                .collect(),
        };
        committee.validate()?;

        let dirs: Vec<Option<NodeDir>> = match &config.data_dir {
            None => vec![None; config.nodes],
            Some(dir) => {
                let manifest = Manifest {
                    n_shards: config.n_shards,
                    nodes: names.clone(),
                };
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || persist::open_data_dir(&dir, &manifest))
                    .await
                    .expect("opening the data directory does not panic")
                    .map_err(SimError::DataDir)?
                    .into_iter()
                    .map(Some)
                    .collect()
            }
        };

        let mut owner = vec![0usize; usize::from(config.n_shards)];
        for (i, node_shards) in shards.iter().enumerate() {
            for &s in node_shards {
                owner[usize::from(s)] = i;
            }
        }
        let mut nodes = Vec::with_capacity(config.nodes);
        for (i, ((name, (_, port)), dir)) in names.iter().zip(&listeners).zip(dirs).enumerate() {
            let mut owns = vec![false; usize::from(config.n_shards)];
            for &s in &shards[i] {
                owns[usize::from(s)] = true;
            }
            let store = Arc::new(NodeStore::new(dir.clone()));
            if let Some(dir) = dir {
                let store = store.clone();
                let restored = tokio::task::spawn_blocking(move || restore(&store, &dir, encoding))
                    .await
                    .expect("restoring does not panic")
                    .map_err(SimError::DataDir)?;
                tracing::info!(node = %name, blobs = restored, "restored from the data directory");
            }
            let faults = config.faults.get(i).cloned().unwrap_or_default();
            nodes.push(NodeState::new(name.clone(), *port, owns, store, faults));
        }

        let shared = Arc::new(Shared {
            config: encoding,
            epoch: SIM_EPOCH,
            nodes,
            owner,
            started: Instant::now(),
            decoy: OnceLock::new(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tasks = listeners
            .into_iter()
            .enumerate()
            .map(|(i, (listener, _))| {
                tokio::spawn(node::run(
                    shared.clone(),
                    i,
                    Some(listener),
                    shutdown_rx.clone(),
                ))
            })
            .collect();
        // Offline-at-start nodes must refuse connections by the time we return.
        for node in &shared.nodes {
            let mut rx = node.listener.subscribe();
            let _ = rx.wait_for(|s| *s != ListenerState::Starting).await;
        }
        Ok(SimNetwork {
            shared,
            committee,
            data_dir: config.data_dir,
            shutdown,
            tasks,
        })
    }

    /// The committee: node names, URLs and shards.
    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    /// The encoding parameters of this committee.
    pub fn config(&self) -> &EncodingConfig {
        &self.shared.config
    }

    /// The data directory, if the network persists.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref()
    }

    /// Encode `blob` and store its metadata on every node and each sliver pair on the node
    /// owning the pair's shard, directly (no HTTP). CPU-bound (and file I/O with a data
    /// directory): from async code, call it from `spawn_blocking` for large blobs.
    pub fn store(&self, blob: &[u8]) -> Result<BlobId, SimError> {
        let encoded = codec::encode(&self.shared.config, blob)?;
        let blob_id = encoded.metadata.blob_id();
        let with_id = Bytes::from(bcs::encode_metadata_with_id(
            &blob_id,
            encoded.metadata.metadata(),
        ));
        let metadata = Arc::new(encoded.metadata.clone());
        for node in &self.shared.nodes {
            node.store
                .insert_metadata(metadata.clone(), with_id.clone())
                .map_err(SimError::Storage)?;
        }
        let n = self.shared.config.n_shards();
        for pair in 0..n {
            let shard = blob_id.shard_for_pair(pair, n);
            let node = &self.shared.nodes[self.shared.owner[usize::from(shard)]];
            let (primary, secondary) = encoded.pair(pair).expect("pair < n");
            for (kind, sliver) in [
                (SliverKind::Primary, primary),
                (SliverKind::Secondary, secondary),
            ] {
                node.store
                    .insert_sliver(
                        &blob_id,
                        pair,
                        kind,
                        Bytes::from(bcs::encode_sliver(sliver)),
                    )
                    .map_err(SimError::Storage)?;
            }
        }
        Ok(blob_id)
    }

    /// Replace node `node`'s faults. Returns at once; an `offline` change takes effect when the
    /// node's task next runs (use [`SimNetwork::apply_faults`] to wait for it).
    pub fn set_faults(&self, node: usize, faults: NodeFaults) -> Result<(), SimError> {
        self.shared.set_faults(node, faults)
    }

    /// Replace node `node`'s faults and wait until they took effect: an offline node refuses
    /// connections, a revived node listens on its port again.
    pub async fn apply_faults(&self, node: usize, faults: NodeFaults) -> Result<(), SimError> {
        self.shared.apply_faults(node, faults).await
    }

    /// Node `node`'s current faults.
    pub fn faults(&self, node: usize) -> Result<NodeFaults, SimError> {
        Ok(self.shared.check_node(node)?.faults.borrow().clone())
    }

    /// Requests that reached node `node`'s handler (panics if `node` is out of range).
    pub fn counters(&self, node: usize) -> NodeCounters {
        self.shared.nodes[node].counters.snapshot()
    }

    /// Sum of all nodes' counters.
    pub fn total_counters(&self) -> NodeCounters {
        self.shared
            .nodes
            .iter()
            .map(|n| n.counters.snapshot())
            .fold(NodeCounters::default(), |a, b| a + b)
    }

    /// Zero every node's counters.
    pub fn reset_counters(&self) {
        for node in &self.shared.nodes {
            node.counters.reset();
        }
    }

    /// Number of blobs whose metadata node `node` holds.
    pub fn blob_count(&self, node: usize) -> usize {
        self.shared.nodes[node].store.blob_count()
    }

    /// Stop every node: listeners close, connections finish their current response (shaped
    /// bodies abort), and the tasks are awaited.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for SimNetwork {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Load one node's directory, verifying everything; returns the number of blobs restored.
fn restore(store: &NodeStore, dir: &NodeDir, config: EncodingConfig) -> Result<usize, String> {
    let loaded = dir
        .load()
        .map_err(|e| format!("cannot read the data directory: {e}"))?;
    let n = config.n_shards();
    let mut count = 0;
    for blob in loaded {
        let metadata = match bcs::decode_metadata_with_id(&blob.metadata_with_id) {
            Ok((id, metadata)) if id == blob.blob_id => {
                VerifiedMetadata::verify(id, metadata, config).map_err(|e| e.to_string())
            }
            Ok((id, _)) => Err(format!("file holds the metadata of {id}")),
            Err(e) => Err(e.to_string()),
        };
        let metadata = match metadata {
            Ok(m) => Arc::new(m),
            Err(e) => {
                tracing::warn!(blob_id = %blob.blob_id, error = %e, "stored metadata skipped");
                continue;
            }
        };
        let mut stored = StoredBlob {
            metadata: metadata.clone(),
            metadata_with_id: Bytes::from(blob.metadata_with_id),
            primary: Default::default(),
            secondary: Default::default(),
        };
        let mut candidates = Vec::new();
        let mut slivers = Vec::new();
        for (pair, kind, bytes) in blob.slivers {
            match bcs::decode_sliver(&bytes, kind) {
                Ok(s) if s.index < n && s.pair_index(n) == pair => {
                    candidates.push((pair, kind, bytes));
                    slivers.push(s);
                }
                Ok(_) => {
                    tracing::warn!(blob_id = %blob.blob_id, pair, "stored sliver has the wrong index; skipped")
                }
                Err(e) => {
                    tracing::warn!(blob_id = %blob.blob_id, pair, error = %e, "stored sliver skipped")
                }
            }
        }
        for ((pair, kind, bytes), verified) in
            candidates.into_iter().zip(metadata.verify_slivers(slivers))
        {
            match verified {
                Ok(_) => {
                    match kind {
                        SliverKind::Primary => stored.primary.insert(pair, bytes),
                        SliverKind::Secondary => stored.secondary.insert(pair, bytes),
                    };
                }
                Err(e) => {
                    tracing::warn!(blob_id = %blob.blob_id, pair, error = %e, "stored sliver fails verification; skipped")
                }
            }
        }
        store.restore(stored);
        count += 1;
    }
    Ok(count)
}
