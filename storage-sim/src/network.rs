//! The simulated committee: start-up (assignment, keys, listeners, data directory), direct
//! seeding, run-time fault control, epoch changes, node moves, counters and shutdown.
//!
//! Guarantees: after [`SimNetwork::start`] returns, every node that is not `offline` is
//! listening on the URL in [`SimNetwork::committee`]. A node's port changes only by
//! [`SimNetwork::move_node`], its shards only by [`SimNetwork::advance_epoch`] (see
//! [`crate::epoch`]), never by faults. A blob is placed on the owners of the epoch it is
//! stored in; an epoch change waits for placements in progress, then copies the moved slivers
//! to their new owners before it returns.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codec::{bcs, BlobId, EncodingConfig, SliverKind, VerifiedMetadata};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::chain_view::{ChainControl, ChainNode, ChainView, Control};
use crate::committee::{Committee, CommitteeNode};
use crate::epoch::{self, EpochChange, EpochInfo, DEFAULT_EPOCH_DURATION_MS};
use crate::faults::NodeFaults;
use crate::identity::{NetworkKey, NodeIdentity};
use crate::lifecycle::BlobLife;
use crate::node::{self, ListenerState, NodeState, Relocation};
use crate::persist::{self, EpochFile, Manifest, NodeDir};
use crate::store::{NodeStore, StoredBlob};
use crate::{NodeCounters, SimConfig, SimError};

/// The content of the blob whose metadata a `wrong_metadata` node serves instead.
const DECOY_BLOB: &[u8] = b"walrus-sim: the metadata of some other blob";

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// State shared by all nodes' tasks and handlers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: EncodingConfig,
    pub nodes: Vec<NodeState>,
    /// Nodes serve HTTPS.
    pub tls: bool,
    epoch: RwLock<EpochInfo>,
    /// Held shared while a blob's metadata and slivers are placed on the current owners, and
    /// exclusively while the owners change, so no placement straddles an epoch change.
    placement: RwLock<()>,
    /// The epoch each blob was first stored in (first write wins, so every node reports the
    /// same status).
    certified: RwLock<HashMap<BlobId, u32>>,
    /// Lifetimes the simulated chain states for some blobs ([`crate::lifecycle`]); the rest
    /// are permanent and certified.
    lives: RwLock<HashMap<BlobId, BlobLife>>,
    pub started: Instant,
    first_epoch_start_ms: u64,
    epoch_sync: Duration,
    epoch_timer: Mutex<Option<(Duration, JoinHandle<()>)>>,
    /// One epoch change at a time.
    advancing: tokio::sync::Mutex<()>,
    /// Ticks whenever the chain view changes.
    pub changed: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    data_dir: Option<PathBuf>,
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
                port: self.nodes[node].port(),
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

    /// The live epoch state (held briefly: never across an `await`).
    pub(crate) fn epoch_info(&self) -> RwLockReadGuard<'_, EpochInfo> {
        self.epoch.read().expect("epoch lock poisoned")
    }

    /// Hold while placing a blob on the current owners (see [`Shared::placement`]).
    pub(crate) fn placing(&self) -> RwLockReadGuard<'_, ()> {
        self.placement.read().expect("placement lock poisoned")
    }

    pub(crate) fn bump_changed(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// The certified epoch of a blob stored now: the current epoch, unless it was stored
    /// before.
    pub(crate) fn certify(&self, id: BlobId) -> u32 {
        let epoch = self.epoch_info().epoch;
        *self
            .certified
            .write()
            .expect("certified lock poisoned")
            .entry(id)
            .or_insert(epoch)
    }

    pub(crate) fn certified_epoch(&self, id: &BlobId) -> Option<u32> {
        self.certified
            .read()
            .expect("certified lock poisoned")
            .get(id)
            .copied()
    }

    /// The blob's lifetime as set by a test, if any.
    pub(crate) fn life(&self, id: &BlobId) -> Option<BlobLife> {
        self.lives
            .read()
            .expect("lives lock poisoned")
            .get(id)
            .copied()
    }

    /// Whether a stored blob still exists now (not expired, not deleted).
    pub(crate) fn blob_exists_now(&self, id: &BlobId) -> bool {
        let Some(life) = self.life(id) else {
            return true;
        };
        let certified = self.certified_epoch(id).unwrap_or(1);
        life.exists_in(
            self.epoch_info().epoch,
            certified + crate::BLOB_LIFETIME_EPOCHS,
        )
    }

    fn update_life(&self, id: BlobId, change: impl FnOnce(&mut BlobLife)) {
        change(
            self.lives
                .write()
                .expect("lives lock poisoned")
                .entry(id)
                .or_default(),
        );
    }

    fn epoch_duration_ms(&self) -> u64 {
        match &*self.epoch_timer.lock().expect("timer lock poisoned") {
            Some((every, _)) => every.as_millis() as u64,
            None => DEFAULT_EPOCH_DURATION_MS,
        }
    }

    pub(crate) fn committee(&self) -> Committee {
        let info = self.epoch_info();
        let scheme = if self.tls { "https" } else { "http" };
        Committee {
            n_shards: self.config.n_shards(),
            nodes: self
                .nodes
                .iter()
                .zip(&info.current)
                .map(|(node, shards)| CommitteeNode {
                    name: node.name.clone(),
                    url: format!("{scheme}://127.0.0.1:{}", node.port()),
                    shards: shards.clone(),
                    network_public_key: self
                        .tls
                        .then(|| chain::network_key::to_hex(&node.identity.network_public_key)),
                })
                .collect(),
        }
    }

    pub(crate) fn chain_view(&self) -> ChainView {
        let epoch_duration_ms = self.epoch_duration_ms();
        let info = self.epoch_info();
        ChainView {
            epoch: info.epoch,
            state: info.state,
            n_shards: self.config.n_shards(),
            epoch_duration_ms,
            first_epoch_start_ms: self.first_epoch_start_ms,
            nodes: self
                .nodes
                .iter()
                .map(|node| ChainNode {
                    name: node.name.clone(),
                    node_id: node.identity.node_id,
                    address: format!("127.0.0.1:{}", node.port()),
                    network_public_key: node.identity.network_public_key,
                    bls_public_key: node.identity.bls_public_key.clone(),
                })
                .collect(),
            current: info.current.clone(),
            previous: info.previous.clone(),
        }
    }

    /// Advance the epoch (see [`crate::epoch`]). The change runs in its own task, so a caller
    /// that gives up (a dropped HTTP request, an aborted timer) never leaves it half done.
    pub(crate) fn advance_epoch(
        self: &Arc<Self>,
    ) -> impl std::future::Future<Output = Result<EpochChange, SimError>> + Send + 'static {
        let this = self.clone();
        async move {
            tokio::spawn(this.advance())
                .await
                .map_err(|_| SimError::ShutDown)?
        }
    }

    async fn advance(self: Arc<Self>) -> Result<EpochChange, SimError> {
        let _one_at_a_time = self.advancing.lock().await;
        if *self.shutdown.borrow() {
            return Err(SimError::ShutDown);
        }
        self.finish_sync(None);
        let (new_epoch, moves, next) = {
            let info = self.epoch_info();
            let next = epoch::rotate(&info.owner, self.nodes.len(), info.epoch + 1);
            let moves: Vec<Option<(usize, usize)>> = info
                .owner
                .iter()
                .zip(&next)
                .map(|(&from, &to)| (from != to).then_some((from, to)))
                .collect();
            (info.epoch + 1, moves, next)
        };
        let moved_shards = moves.iter().flatten().count();
        let moves = Arc::new(moves);
        // Copy the bulk while the old owners are still current…
        self.clone().copy_moved(moves.clone()).await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _exclusive = this.placement.write().expect("placement lock poisoned");
            this.epoch
                .write()
                .expect("epoch lock poisoned")
                .switch(next);
        })
        .await
        .expect("switching epochs does not panic");
        self.bump_changed();
        tracing::info!(epoch = new_epoch, moved_shards, "epoch change: syncing");
        // …and again for what was placed between the first copy and the switch.
        let copied = self.clone().copy_moved(moves).await;
        let recorded = self.record_epoch().await;
        self.spawn_sync_timer(new_epoch);
        copied?;
        recorded?;
        Ok(EpochChange {
            epoch: new_epoch,
            moved_shards,
        })
    }

    /// Copy the slivers of moved shards (`moves[shard] = Some((from, to))`) from their old to
    /// their new owners, with the blobs' metadata and certified epochs; what a new owner
    /// already holds is not written again.
    async fn copy_moved(
        self: Arc<Self>,
        moves: Arc<Vec<Option<(usize, usize)>>>,
    ) -> Result<(), SimError> {
        tokio::task::spawn_blocking(move || {
            let n = self.config.n_shards();
            let target = |id: &BlobId, pair: u16| moves[usize::from(id.shard_for_pair(pair, n))];
            for (from, node) in self.nodes.iter().enumerate() {
                if !moves.iter().flatten().any(|&(f, _)| f == from) {
                    continue;
                }
                let leaving =
                    |id: &BlobId, pair: u16| matches!(target(id, pair), Some((f, _)) if f == from);
                for blob in node.store.export(leaving) {
                    let id = blob.metadata.blob_id();
                    let certified = self.certified_epoch(&id).unwrap_or(blob.certified_epoch);
                    for (kind, slivers) in [
                        (SliverKind::Primary, &blob.primary),
                        (SliverKind::Secondary, &blob.secondary),
                    ] {
                        for (&pair, bytes) in slivers {
                            let Some((_, to)) = target(&id, pair) else {
                                continue;
                            };
                            let store = &self.nodes[to].store;
                            if store.metadata(&id).is_none() {
                                store
                                    .insert_metadata(
                                        blob.metadata.clone(),
                                        blob.metadata_with_id.clone(),
                                        certified,
                                    )
                                    .map_err(SimError::Storage)?;
                            }
                            if !store.has_sliver(&id, pair, kind) {
                                store
                                    .insert_sliver(&id, pair, kind, bytes.clone())
                                    .map_err(SimError::Storage)?;
                            }
                        }
                    }
                }
            }
            Ok(())
        })
        .await
        .expect("copying slivers does not panic")
    }

    /// With a data directory, write the epoch and its assignment so a restart resumes them.
    async fn record_epoch(&self) -> Result<(), SimError> {
        let Some(dir) = self.data_dir.clone() else {
            return Ok(());
        };
        let state = {
            let info = self.epoch_info();
            EpochFile {
                epoch: info.epoch,
                assignment: info.current.clone(),
                first_epoch_start_ms: self.first_epoch_start_ms,
            }
        };
        tokio::task::spawn_blocking(move || persist::save_epoch_file(&dir, &state))
            .await
            .expect("writing the epoch file does not panic")
            .map_err(SimError::Storage)
    }

    /// End the sync of the current epoch change (of epoch `only`, if given), if one is on.
    fn finish_sync(&self, only: Option<u32>) {
        let mut info = self.epoch.write().expect("epoch lock poisoned");
        if info.state.is_transitioning() && only.is_none_or(|e| e == info.epoch) {
            info.state = chain::EpochState::ChangeDone { at_ms: now_ms() };
            let epoch = info.epoch;
            drop(info);
            self.bump_changed();
            tracing::info!(epoch, "epoch change: done");
        }
    }

    fn spawn_sync_timer(self: &Arc<Self>, epoch: u32) {
        let this = self.clone();
        let mut shutdown = self.shutdown.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(this.epoch_sync) => this.finish_sync(Some(epoch)),
                () = async { let _ = shutdown.wait_for(|s| *s).await; } => {}
            }
        });
    }

    /// Advance the epoch every `every` (replacing any timer); `None` stops it.
    pub(crate) fn set_epoch_timer(self: &Arc<Self>, every: Option<Duration>) {
        let mut timer = self.epoch_timer.lock().expect("timer lock poisoned");
        if let Some((_, task)) = timer.take() {
            task.abort();
        }
        if let Some(every) = every.filter(|d| !d.is_zero()) {
            let this = self.clone();
            let mut shutdown = self.shutdown.subscribe();
            let task = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(every) => {}
                        () = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
                    }
                    match this.advance_epoch().await {
                        Ok(change) => tracing::debug!(epoch = change.epoch, "epoch timer"),
                        Err(SimError::ShutDown) => break,
                        Err(e) => tracing::warn!(error = %e, "timed epoch change failed"),
                    }
                }
            });
            *timer = Some((every, task));
        }
        drop(timer);
        self.bump_changed();
    }

    /// Move node `key` (index or name) to a new free port; returns `127.0.0.1:PORT`.
    pub(crate) async fn move_node(&self, key: &str) -> Result<String, SimError> {
        let index = self
            .node_index(key)
            .ok_or_else(|| SimError::UnknownNode(key.chars().take(100).collect()))?;
        if *self.shutdown.borrow() {
            return Err(SimError::ShutDown);
        }
        let listener = node::bind(0).map_err(|source| SimError::Bind { port: 0, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| SimError::Bind { port: 0, source })?
            .port();
        let (done, confirmed) = oneshot::channel();
        self.nodes[index]
            .relocate(Relocation {
                listener,
                port,
                done,
            })
            .map_err(|_| SimError::ShutDown)?;
        confirmed.await.map_err(|_| SimError::ShutDown)?;
        Ok(format!("127.0.0.1:{port}"))
    }
}

/// A running simulated committee. Dropping it stops the nodes in the background; prefer
/// [`SimNetwork::shutdown`], which waits for them.
#[derive(Debug)]
pub struct SimNetwork {
    shared: Arc<Shared>,
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

/// What start-up reads from (or creates in) the data directory.
struct Loaded {
    dirs: Vec<Option<NodeDir>>,
    keys: Vec<NetworkKey>,
    recorded: Option<EpochFile>,
}

fn load_or_create(config: &SimConfig, names: &[String]) -> Result<Loaded, SimError> {
    let Some(dir) = &config.data_dir else {
        let keys = names
            .iter()
            .map(|_| NetworkKey::generate())
            .collect::<Result<_, _>>()
            .map_err(SimError::Identity)?;
        return Ok(Loaded {
            dirs: vec![None; names.len()],
            keys,
            recorded: None,
        });
    };
    let manifest = Manifest {
        n_shards: config.n_shards,
        nodes: names.to_vec(),
    };
    let dirs = persist::open_data_dir(dir, &manifest).map_err(SimError::DataDir)?;
    let keys = names
        .iter()
        .map(|name| NetworkKey::load_or_create(&persist::key_path(dir, name)))
        .collect::<Result<_, _>>()
        .map_err(SimError::DataDir)?;
    let recorded = persist::load_epoch_file(dir).map_err(SimError::DataDir)?;
    Ok(Loaded {
        dirs: dirs.into_iter().map(Some).collect(),
        keys,
        recorded,
    })
}

/// A committee of `names` on `ports` with `shards`.
fn committee_of(n_shards: u16, names: &[String], ports: &[u16], shards: &[Vec<u16>]) -> Committee {
    Committee {
        n_shards,
        nodes: names
            .iter()
            .zip(ports)
            .zip(shards)
            .map(|((name, port), shards)| CommitteeNode {
                name: name.clone(),
                url: format!("http://127.0.0.1:{port}"),
                shards: shards.clone(),
                network_public_key: None,
            })
            .collect(),
    }
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
        let configured = assignment(&config)?;
        let names: Vec<String> = (0..config.nodes).map(|i| format!("node-{i}")).collect();
        let started_ms = now_ms();

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
        let ports: Vec<u16> = listeners.iter().map(|(_, port)| *port).collect();
        committee_of(config.n_shards, &names, &ports, &configured).validate()?;

        let loaded = {
            let (config, names) = (config.clone(), names.clone());
            tokio::task::spawn_blocking(move || load_or_create(&config, &names))
                .await
                .expect("loading the data directory does not panic")?
        };
        // A data directory that went through epoch changes resumes its epoch and committee.
        let (epoch, shards, first_epoch_start_ms) = match loaded.recorded {
            None => (1, configured, started_ms),
            Some(recorded) => {
                let fits = committee_of(config.n_shards, &names, &ports, &recorded.assignment)
                    .validate()
                    .is_ok();
                if fits {
                    if config.assignment.is_some()
                        && config.assignment.as_ref() != Some(&recorded.assignment)
                    {
                        tracing::warn!(
                            "the data directory's epoch {} committee replaces the configured assignment",
                            recorded.epoch
                        );
                    }
                    (
                        recorded.epoch.max(1),
                        recorded.assignment,
                        recorded.first_epoch_start_ms,
                    )
                } else {
                    tracing::warn!(
                        "the data directory's committee does not fit this network; using the configured assignment"
                    );
                    (
                        recorded.epoch.max(1),
                        configured,
                        recorded.first_epoch_start_ms,
                    )
                }
            }
        };

        let mut nodes = Vec::with_capacity(config.nodes);
        let mut certified: HashMap<BlobId, u32> = HashMap::new();
        for (i, ((name, port), (dir, key))) in names
            .iter()
            .zip(&ports)
            .zip(loaded.dirs.into_iter().zip(&loaded.keys))
            .enumerate()
        {
            let store = Arc::new(NodeStore::new(dir.clone()));
            if let Some(dir) = dir {
                let store = store.clone();
                let restored = tokio::task::spawn_blocking(move || restore(&store, &dir, encoding))
                    .await
                    .expect("restoring does not panic")
                    .map_err(SimError::DataDir)?;
                tracing::info!(node = %name, blobs = restored.len(), "restored from the data directory");
                for (id, epoch) in restored {
                    let entry = certified.entry(id).or_insert(epoch);
                    *entry = (*entry).min(epoch);
                }
            }
            let identity = NodeIdentity::new(i, name, key).map_err(SimError::Identity)?;
            let faults = config.faults.get(i).cloned().unwrap_or_default();
            nodes.push(NodeState::new(name.clone(), *port, identity, store, faults));
        }

        let shared = Arc::new(Shared {
            config: encoding,
            nodes,
            tls: config.tls,
            epoch: RwLock::new(EpochInfo::new(epoch, started_ms, shards, config.n_shards)),
            placement: RwLock::new(()),
            certified: RwLock::new(certified),
            lives: RwLock::default(),
            started: Instant::now(),
            first_epoch_start_ms,
            epoch_sync: Duration::from_millis(config.epoch_sync_ms),
            epoch_timer: Mutex::new(None),
            advancing: tokio::sync::Mutex::new(()),
            changed: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
            data_dir: config.data_dir.clone(),
            decoy: OnceLock::new(),
        });
        let tasks = listeners
            .into_iter()
            .enumerate()
            .map(|(i, (listener, _))| {
                tokio::spawn(node::run(
                    shared.clone(),
                    i,
                    Some(listener),
                    shared.shutdown.subscribe(),
                ))
            })
            .collect();
        // Offline-at-start nodes must refuse connections by the time we return.
        for node in &shared.nodes {
            let mut rx = node.listener.subscribe();
            let _ = rx.wait_for(|s| *s != ListenerState::Starting).await;
        }
        if let Some(secs) = config.epoch_secs {
            shared.set_epoch_timer(Some(Duration::from_secs(secs)));
        }
        Ok(SimNetwork { shared, tasks })
    }

    /// The current committee: node names, URLs (`https://` with TLS, then with each node's
    /// `network_public_key`) and shards. It changes with epochs and node moves.
    pub fn committee(&self) -> Committee {
        self.shared.committee()
    }

    /// Every node's self-signed certificate, PEM, concatenated (for `NODE_EXTRA_CA_CERTS`).
    pub fn certificates_pem(&self) -> String {
        self.shared
            .nodes
            .iter()
            .map(|node| node.identity.certificate_pem())
            .collect()
    }

    /// The staking state as the chain would describe it.
    pub fn chain_view(&self) -> ChainView {
        self.shared.chain_view()
    }

    /// A handle to read and drive the chain state, independent of this value's lifetime.
    pub fn chain_control(&self) -> Arc<dyn ChainControl> {
        Arc::new(Control(self.shared.clone()))
    }

    /// Advance to the next epoch (see [`crate::epoch`]): moves about a third of the shards,
    /// copies their slivers to the new owners, and enters `EpochChangeSync` for
    /// `epoch_sync_ms`. A change asked for while another is syncing ends that sync first.
    pub async fn advance_epoch(&self) -> Result<EpochChange, SimError> {
        self.shared.advance_epoch().await
    }

    /// Move node `node` (index or name) to a new free port on 127.0.0.1: the old port refuses
    /// connections from then on. Returns the new `127.0.0.1:PORT`.
    pub async fn move_node(&self, node: &str) -> Result<String, SimError> {
        self.shared.move_node(node).await
    }

    /// Advance the epoch every `every` from now on (replacing any earlier timer); `None`
    /// stops it. The chain view's `epoch_duration_ms` follows. Needs a Tokio runtime.
    pub fn set_epoch_timer(&self, every: Option<Duration>) {
        self.shared.set_epoch_timer(every)
    }

    /// The encoding parameters of this committee.
    pub fn config(&self) -> &EncodingConfig {
        &self.shared.config
    }

    /// The data directory, if the network persists.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.shared.data_dir.as_deref()
    }

    /// Encode `blob` and store its metadata on every node and each sliver pair on the node
    /// owning the pair's shard in the current epoch, directly (no HTTP); the blob counts as
    /// certified in the current epoch (or the one it was first stored in). CPU-bound (and file
    /// I/O with a data directory): from async code, call it from `spawn_blocking` for large
    /// blobs.
    pub fn store(&self, blob: &[u8]) -> Result<BlobId, SimError> {
        let encoded = codec::encode(&self.shared.config, blob)?;
        let blob_id = encoded.metadata.blob_id();
        let with_id = Bytes::from(bcs::encode_metadata_with_id(
            &blob_id,
            encoded.metadata.metadata(),
        ));
        let metadata = Arc::new(encoded.metadata.clone());
        let _placing = self.shared.placing();
        let certified = self.shared.certify(blob_id);
        for node in &self.shared.nodes {
            node.store
                .insert_metadata(metadata.clone(), with_id.clone(), certified)
                .map_err(SimError::Storage)?;
        }
        let owner = self.shared.epoch_info().owner.clone();
        let n = self.shared.config.n_shards();
        for pair in 0..n {
            let shard = blob_id.shard_for_pair(pair, n);
            let node = &self.shared.nodes[owner[usize::from(shard)]];
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

    /// State the blob's lifetime on the simulated chain ([`crate::lifecycle`]); every node
    /// answers from it at once.
    pub fn set_blob_life(&self, id: BlobId, life: BlobLife) {
        self.shared.update_life(id, |l| *l = life);
    }

    /// Certify a blob registered as not yet certified: from now on it is certified in the
    /// current epoch.
    pub fn certify_blob(&self, id: BlobId) {
        let epoch = self.shared.epoch_info().epoch;
        self.shared
            .certified
            .write()
            .expect("certified lock poisoned")
            .insert(id, epoch);
        self.shared.update_life(id, |l| l.uncertified = false);
    }

    /// Delete a deletable blob, as its owner would on chain; false (and nothing changes) for a
    /// blob not stated deletable.
    pub fn delete_blob(&self, id: BlobId) -> bool {
        let mut deleted = false;
        self.shared.update_life(id, |l| {
            if l.deletable {
                l.deleted = true;
                deleted = true;
            }
        });
        deleted
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
    /// bodies abort), timers stop, and the node tasks are awaited.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for SimNetwork {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// Load one node's directory, verifying everything; returns the blobs restored with their
/// certified epochs (1 when none was recorded: such data predates epoch changes).
fn restore(
    store: &NodeStore,
    dir: &NodeDir,
    config: EncodingConfig,
) -> Result<Vec<(BlobId, u32)>, String> {
    let loaded = dir
        .load()
        .map_err(|e| format!("cannot read the data directory: {e}"))?;
    let n = config.n_shards();
    let mut restored = Vec::new();
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
        let certified_epoch = blob.certified_epoch.unwrap_or(1);
        let mut stored = StoredBlob {
            metadata: metadata.clone(),
            metadata_with_id: Bytes::from(blob.metadata_with_id),
            certified_epoch,
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
        restored.push((blob.blob_id, certified_epoch));
    }
    Ok(restored)
}
