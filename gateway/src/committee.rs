//! The committees fills read from, and how they stay current.
//!
//! A [`CommitteeHandle`] hands out immutable [`Committees`] snapshots. A static committee (a
//! committee file, the embedded simulator) never changes. A chain-backed one is kept current by
//! a [`CommitteeWatcher`] task that re-reads the chain ([`crate::chain_reader`]) on the schedule
//! of NETWORK.md §5.3 (30 s; 5 s near the expected epoch change; every second while shards
//! move; and on request after a burst of node failures, at most once per grace period). A new
//! snapshot replaces the old one atomically: a running fill keeps the snapshot it started with,
//! new fills take the new one. A refresh that fails keeps the last good snapshot; it is counted
//! and logged, and the snapshot's age is exported.
//!
//! Which committee serves a read (§5.1): the current one, except while the epoch changes
//! (`EpochChangeSync`), when a blob certified before the current epoch is read from the previous
//! committee, whose nodes still hold the shards being moved. The certified epoch comes from the
//! nodes' blob statuses, aggregated as the official clients do (§7.1).

use crate::chain_reader::{ChainError, ChainReader};
use crate::nodes::{NodeClient, Topology, TopologyError};
use crate::telemetry::Telemetry;
use chain::committee::RefreshPolicy;
use chain::{ChainCommittee, CommitteeMember};
use codec::BlobId;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use storage_sim::committee::{Committee, CommitteeNode};
use tokio::sync::{watch, Notify};

/// One consistent view of who serves reads.
#[derive(Debug)]
pub struct Committees {
    /// The committee of the current epoch (for a static committee: the only one).
    pub current: Arc<Topology>,
    /// The previous epoch's committee, kept only while the epoch changes.
    pub previous: Option<Arc<Topology>>,
    /// What the chain said, for chain-backed committees.
    pub chain: Option<ChainInfo>,
}

/// The chain's side of a snapshot.
#[derive(Debug, Clone)]
pub struct ChainInfo {
    pub network: String,
    pub committee: ChainCommittee,
    /// When the chain was read.
    pub read_at: Instant,
}

impl Committees {
    pub fn fixed(topology: Topology) -> Self {
        Self {
            current: Arc::new(topology),
            previous: None,
            chain: None,
        }
    }

    pub fn epoch(&self) -> Option<u32> {
        self.chain.as_ref().map(|c| c.committee.epoch)
    }
}

/// Shared access to the current [`Committees`]. Cheap to clone.
#[derive(Clone)]
pub struct CommitteeHandle {
    rx: watch::Receiver<Arc<Committees>>,
    refresh: Arc<RefreshRequests>,
    /// The chain reader of a chain-backed committee (by-object-id reads objects through it).
    reader: Option<Arc<ChainReader>>,
}

/// Refresh requests from the fills, collapsed into one wake-up.
#[derive(Default)]
struct RefreshRequests {
    notify: Notify,
}

impl CommitteeHandle {
    pub fn fixed(topology: Topology) -> Self {
        let (_tx, rx) = watch::channel(Arc::new(Committees::fixed(topology)));
        Self {
            rx,
            refresh: Arc::default(),
            reader: None,
        }
    }

    /// The chain reader, for a chain-backed committee.
    pub fn chain_reader(&self) -> Option<&Arc<ChainReader>> {
        self.reader.as_ref()
    }

    /// The committees now. Keep the `Arc` for the length of one operation.
    pub fn snapshot(&self) -> Arc<Committees> {
        self.rx.borrow().clone()
    }

    pub fn current(&self) -> Arc<Topology> {
        self.rx.borrow().current.clone()
    }

    /// Resolves when a new snapshot is published; `false` once no watcher is left.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }

    /// Ask the watcher (if any) to read the chain again soon; it honours its grace period.
    pub fn request_refresh(&self) {
        self.refresh.notify.notify_one();
    }
}

/// Build the read topology of one committee: `https://{address}` pinned to each node's key, or
/// `{scheme}://` when the operator asked for plain HTTP (simulators, local test networks).
pub fn topology_of(
    members: &[CommitteeMember],
    n_shards: u16,
    scheme: NodeScheme,
) -> Result<Topology, TopologyError> {
    let nodes = members
        .iter()
        .map(|m| CommitteeNode {
            name: m.name.clone(),
            url: format!("{}://{}", scheme.as_str(), m.network_address),
            shards: m.shards.clone(),
            network_public_key: Some(m.key_hex()),
        })
        .collect();
    Topology::new(Committee { n_shards, nodes })
}

/// How storage nodes are reached: HTTPS (every real node) or plain HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeScheme {
    #[default]
    Https,
    Http,
}

impl NodeScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeScheme::Https => "https",
            NodeScheme::Http => "http",
        }
    }
}

impl std::str::FromStr for NodeScheme {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "https" => Ok(NodeScheme::Https),
            "http" => Ok(NodeScheme::Http),
            other => Err(format!("unknown scheme {other:?}: expected https or http")),
        }
    }
}

/// Why the committee could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum CommitteeError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("the chain's committee cannot be used: {0}")]
    Topology(#[from] TopologyError),
}

/// Turn a chain read into a snapshot.
pub fn snapshot_of(
    network: &str,
    committee: ChainCommittee,
    scheme: NodeScheme,
) -> Result<Committees, CommitteeError> {
    let current = Arc::new(topology_of(&committee.current, committee.n_shards, scheme)?);
    let previous = if committee.epoch_state.is_transitioning() && !committee.previous.is_empty() {
        Some(Arc::new(topology_of(
            &committee.previous,
            committee.n_shards,
            scheme,
        )?))
    } else {
        None
    };
    Ok(Committees {
        current,
        previous,
        chain: Some(ChainInfo {
            network: network.to_owned(),
            committee,
            read_at: Instant::now(),
        }),
    })
}

/// Keeps a chain-backed [`CommitteeHandle`] current.
pub struct CommitteeWatcher {
    reader: Arc<ChainReader>,
    scheme: NodeScheme,
    policy: RefreshPolicy,
    /// Shortest time between two reads asked for by fills.
    grace: Duration,
    tx: watch::Sender<Arc<Committees>>,
    refresh: Arc<RefreshRequests>,
    telemetry: Arc<Telemetry>,
}

impl CommitteeWatcher {
    /// Read the committee once (failing if that fails: a gateway that cannot see the chain
    /// should not start), then return the handle and the watcher to run.
    pub async fn start(
        reader: ChainReader,
        scheme: NodeScheme,
        policy: RefreshPolicy,
        telemetry: Arc<Telemetry>,
    ) -> Result<(CommitteeHandle, CommitteeWatcher), CommitteeError> {
        let reader = Arc::new(reader);
        let name = reader.network().name.clone();
        let (committee, cost) = reader.read().await?;
        telemetry.chain_refresh(true, cost.rpcs, "ok");
        let snapshot = snapshot_of(&name, committee, scheme)?;
        telemetry.chain_epoch(&snapshot);
        let (tx, rx) = watch::channel(Arc::new(snapshot));
        let refresh = Arc::new(RefreshRequests::default());
        let handle = CommitteeHandle {
            rx,
            refresh: refresh.clone(),
            reader: Some(reader.clone()),
        };
        Ok((
            handle,
            CommitteeWatcher {
                reader,
                scheme,
                policy,
                grace: Duration::from_secs(10),
                tx,
                refresh,
                telemetry,
            },
        ))
    }

    /// Refresh until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last_read = Instant::now();
        loop {
            let wait = {
                let snap = self.tx.borrow();
                let committee = &snap.chain.as_ref().expect("chain snapshots").committee;
                committee.next_refresh(unix_ms(), &self.policy)
            };
            let requested = tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => false,
                () = self.refresh.notify.notified() => true,
            };
            if requested {
                let since = last_read.elapsed();
                if since < self.grace {
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(self.grace - since) => {}
                    }
                }
            }
            last_read = Instant::now();
            self.refresh_once(requested).await;
        }
    }

    async fn refresh_once(&self, requested: bool) {
        let started = Instant::now();
        match self.reader.read().await {
            Ok((committee, cost)) => {
                let name = &self.reader.network().name;
                let old = self.tx.borrow().clone();
                let old_chain = &old.chain.as_ref().expect("chain snapshots").committee;
                if *old_chain == committee {
                    // Nothing changed: keep the snapshot (and the pools' clients) as they are,
                    // only its age restarts.
                    let same = Committees {
                        current: old.current.clone(),
                        previous: old.previous.clone(),
                        chain: Some(ChainInfo {
                            network: name.clone(),
                            committee,
                            read_at: Instant::now(),
                        }),
                    };
                    self.tx.send_replace(Arc::new(same));
                    self.telemetry.chain_refresh(true, cost.rpcs, "ok");
                    return;
                }
                match snapshot_of(name, committee, self.scheme) {
                    Ok(snapshot) => {
                        let c = &snapshot.chain.as_ref().expect("just built").committee;
                        tracing::info!(epoch = c.epoch, state = c.epoch_state.name(),
                            nodes = c.current.len(), previous_nodes = c.previous.len(),
                            requested, elapsed = ?started.elapsed(), "the committee changed");
                        self.telemetry.chain_epoch(&snapshot);
                        self.tx.send_replace(Arc::new(snapshot));
                        self.telemetry.chain_refresh(true, cost.rpcs, "ok");
                    }
                    Err(e) => {
                        self.telemetry.chain_refresh(false, cost.rpcs, "topology");
                        tracing::warn!(error = %e, "the chain's new committee is unusable; keeping the last good one");
                    }
                }
            }
            Err(e) => {
                self.telemetry.chain_refresh(false, 0, e.kind());
                tracing::warn!(error = %e, "reading the committee from the chain failed; keeping the last good one");
            }
        }
    }
}

/// How long a starting gateway waits for its connections to the HTTPS nodes to open.
pub const STARTUP_WARM_LIMIT: Duration = Duration::from_secs(2);

/// Keep connections to the committees' HTTPS nodes open: warm every topology of a snapshot
/// that is not in `warmed` yet, now and whenever a snapshot brings new ones (an epoch change, a
/// moved node), so fills do not pay the TLS handshakes (concurrent first requests to a node
/// would each open a connection and make a handshake before HTTP/2 is known). Ends when the
/// handle's watcher is gone (at once for a static committee).
pub async fn keep_warm(
    client: NodeClient,
    mut handle: CommitteeHandle,
    mut warmed: Vec<Arc<Topology>>,
) {
    loop {
        let snapshot = handle.snapshot();
        let topologies: Vec<Arc<Topology>> = std::iter::once(&snapshot.current)
            .chain(&snapshot.previous)
            .cloned()
            .collect();
        for topology in &topologies {
            if !warmed.iter().any(|w| Arc::ptr_eq(w, topology)) {
                client.warm(topology).await;
            }
        }
        warmed = topologies;
        if !handle.changed().await {
            return;
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A blob's status as one node states it (NETWORK.md §7.1); only what choosing a committee
/// needs is kept, and identical statuses compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BlobStatus {
    Nonexistent,
    Invalid,
    Permanent {
        end_epoch: u32,
        certified: bool,
        initial_certified_epoch: Option<u32>,
    },
    Deletable {
        initial_certified_epoch: Option<u32>,
    },
}

impl BlobStatus {
    /// Parse a node's `{"success":{"code":200,"data":<BlobStatus>}}` answer (camelCase, as the
    /// node's serde writes it; snake_case accepted too).
    pub fn parse(body: &[u8]) -> Option<BlobStatus> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let data = value.get("success")?.get("data")?;
        if data.as_str() == Some("nonexistent") {
            return Some(BlobStatus::Nonexistent);
        }
        let field = |obj: &serde_json::Value, camel: &str, snake: &str| {
            obj.get(camel).or_else(|| obj.get(snake)).cloned()
        };
        let epoch = |v: Option<serde_json::Value>| -> Option<Option<u32>> {
            match v {
                None | Some(serde_json::Value::Null) => Some(None),
                Some(v) => Some(Some(u32::try_from(v.as_u64()?).ok()?)),
            }
        };
        if data.get("invalid").is_some() {
            return Some(BlobStatus::Invalid);
        }
        if let Some(p) = data.get("permanent") {
            return Some(BlobStatus::Permanent {
                end_epoch: u32::try_from(field(p, "endEpoch", "end_epoch")?.as_u64()?).ok()?,
                certified: field(p, "isCertified", "is_certified")?.as_bool()?,
                initial_certified_epoch: epoch(field(
                    p,
                    "initialCertifiedEpoch",
                    "initial_certified_epoch",
                ))?,
            });
        }
        if let Some(d) = data.get("deletable") {
            return Some(BlobStatus::Deletable {
                initial_certified_epoch: epoch(field(
                    d,
                    "initialCertifiedEpoch",
                    "initial_certified_epoch",
                ))?,
            });
        }
        None
    }

    /// The order in which statuses are considered (the latest lifecycle stage first).
    fn rank(&self) -> (u8, u32, bool) {
        match self {
            BlobStatus::Invalid => (3, 0, false),
            BlobStatus::Permanent {
                end_epoch,
                certified,
                ..
            } => (2, *end_epoch, *certified),
            BlobStatus::Deletable { .. } => (1, 0, false),
            BlobStatus::Nonexistent => (0, 0, false),
        }
    }

    pub fn certified_epoch(&self) -> Option<u32> {
        match self {
            BlobStatus::Permanent {
                initial_certified_epoch,
                ..
            }
            | BlobStatus::Deletable {
                initial_certified_epoch,
            } => *initial_certified_epoch,
            _ => None,
        }
    }
}

/// The verified status: from the statuses nodes gave, with their shard weights, the latest
/// one held by at least `validity` shards (NETWORK.md §7.1 steps 3–4).
pub fn aggregate_status(answers: &[(BlobStatus, u16)], validity: u16) -> Option<BlobStatus> {
    let mut groups: Vec<(BlobStatus, u32)> = Vec::new();
    for (status, weight) in answers {
        match groups.iter_mut().find(|(s, _)| s == status) {
            Some((_, w)) => *w += u32::from(*weight),
            None => groups.push((status.clone(), u32::from(*weight))),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.0.rank()));
    groups
        .into_iter()
        .find(|(_, w)| *w >= u32::from(validity))
        .map(|(s, _)| s)
}

/// Ask the nodes of `topology` for `id`'s status until nodes holding a quorum of shards have
/// answered (or all have, or `timeout` passed), and aggregate at validity weight.
pub async fn verified_status(
    client: &NodeClient,
    topology: &Arc<Topology>,
    id: BlobId,
    timeout: Duration,
) -> Option<BlobStatus> {
    let config = *topology.config();
    let mut requests = tokio::task::JoinSet::new();
    for node in 0..topology.node_count() {
        let (client, topology) = (client.clone(), topology.clone());
        requests.spawn(async move {
            let answer = client
                .blob_status(&topology, node, &id, 16 << 10, timeout)
                .await;
            (node, answer)
        });
    }
    let mut answers = Vec::new();
    let mut answered = 0u16;
    let deadline = tokio::time::Instant::now() + timeout;
    while answered < config.quorum() {
        let Ok(Some(joined)) = tokio::time::timeout_at(deadline, requests.join_next()).await else {
            break;
        };
        let Ok((node, answer)) = joined else { continue };
        let weight = topology.weight(node);
        match answer.ok().as_deref().and_then(BlobStatus::parse) {
            Some(status) => {
                answered += weight;
                answers.push((status, weight));
            }
            None => continue,
        }
    }
    aggregate_status(&answers, config.f() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_statuses_parse_in_both_spellings() {
        let permanent = br#"{"success":{"code":200,"data":{"permanent":{"endEpoch":60,"isCertified":true,"statusEvent":{"txDigest":"x","eventSeq":"0"},"deletableCounts":{"count_deletable_total":0,"count_deletable_certified":0},"initialCertifiedEpoch":7}}}}"#;
        assert_eq!(
            BlobStatus::parse(permanent),
            Some(BlobStatus::Permanent {
                end_epoch: 60,
                certified: true,
                initial_certified_epoch: Some(7)
            })
        );
        let snake = br#"{"success":{"data":{"permanent":{"end_epoch":60,"is_certified":false,"initial_certified_epoch":null}}}}"#;
        assert_eq!(BlobStatus::parse(snake).unwrap().certified_epoch(), None);
        let deletable = br#"{"success":{"data":{"deletable":{"initialCertifiedEpoch":3,"deletableCounts":{}}}}}"#;
        assert_eq!(
            BlobStatus::parse(deletable).unwrap().certified_epoch(),
            Some(3)
        );
        assert_eq!(
            BlobStatus::parse(br#"{"success":{"data":"nonexistent"}}"#),
            Some(BlobStatus::Nonexistent)
        );
        for bad in [
            &b"{}"[..],
            b"[",
            br#"{"success":{"data":{"permanent":{"endEpoch":-1}}}}"#,
        ] {
            assert_eq!(BlobStatus::parse(bad), None);
        }
    }

    #[test]
    fn aggregation_takes_the_latest_status_with_validity_weight() {
        let certified = |e| BlobStatus::Permanent {
            end_epoch: 60,
            certified: true,
            initial_certified_epoch: Some(e),
        };
        // n = 10: validity is f + 1 = 4 shards.
        let answers = vec![
            (certified(3), 3),
            (BlobStatus::Nonexistent, 5),
            (certified(3), 1),
        ];
        assert_eq!(aggregate_status(&answers, 4), Some(certified(3)));
        // A lie from nodes below validity weight is not believed.
        let answers = vec![(BlobStatus::Invalid, 3), (certified(2), 7)];
        assert_eq!(aggregate_status(&answers, 4), Some(certified(2)));
        assert_eq!(aggregate_status(&[(certified(2), 3)], 4), None);
    }
}
