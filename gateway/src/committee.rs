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

/// How many shards' nodes must state `status` for it to be believed: validity (`f + 1`, so at
/// least one honest node) for a stage of the blob's life, but a quorum (`2f + 1`) for
/// `nonexistent`. That one answers 404 `BLOB_NOT_FOUND`, and a 404 needs a quorum of shards
/// saying "not found", as for metadata (NETWORK.md §7.2): nodes that are down, slow or unasked
/// never count toward it, so nodes below a quorum cannot make a stored blob vanish.
fn belief_weight(status: &BlobStatus, config: &codec::EncodingConfig) -> u32 {
    match status {
        BlobStatus::Nonexistent => u32::from(config.quorum()),
        _ => u32::from(config.f()) + 1,
    }
}

/// The nodes' status answers for one blob as they come in, with their shard weights, and the
/// weight of the nodes still to answer.
#[derive(Debug)]
pub struct StatusTally {
    config: codec::EncodingConfig,
    /// Identical statuses together, with the shards of the nodes that stated them.
    groups: Vec<(BlobStatus, u32)>,
    /// Shards of the nodes asked that have neither answered nor failed.
    pending: u32,
}

impl StatusTally {
    /// A tally for nodes holding `asked` shards, none answered yet.
    pub fn new(config: codec::EncodingConfig, asked: u32) -> Self {
        Self {
            config,
            groups: Vec::new(),
            pending: asked,
        }
    }

    /// A node holding `weight` shards stated `status`.
    pub fn answer(&mut self, status: BlobStatus, weight: u16) {
        self.pending = self.pending.saturating_sub(u32::from(weight));
        match self.groups.iter_mut().find(|(s, _)| *s == status) {
            Some((_, w)) => *w += u32::from(weight),
            None => self.groups.push((status, u32::from(weight))),
        }
    }

    /// A node holding `weight` shards gave no usable answer (down, error, unparsable): it
    /// counts for nothing, and is no longer waited for.
    pub fn fail(&mut self, weight: u16) {
        self.pending = self.pending.saturating_sub(u32::from(weight));
    }

    /// The verified status so far: going from the latest lifecycle stage down (NETWORK.md
    /// §7.1 step 3), the first status held by enough shards ([`belief_weight`]).
    pub fn verdict(&self) -> Option<BlobStatus> {
        let mut groups: Vec<&(BlobStatus, u32)> = self.groups.iter().collect();
        groups.sort_by_key(|g| std::cmp::Reverse(g.0.rank()));
        groups
            .into_iter()
            .find(|(s, w)| *w >= belief_weight(s, &self.config))
            .map(|(s, _)| s.clone())
    }

    /// Whether the answers so far settle the verdict: whatever the pending nodes say, it
    /// cannot change. Waiting only for a quorum of shards to answer (as Walrus's clients do)
    /// is not enough when nodes lie: with the honest nodes holding the blob still on their
    /// way, "nonexistent" from the first nodes would be the verdict, and a stored blob a 404.
    pub fn settled(&self) -> bool {
        let now = self.verdict();
        let now_rank = now.as_ref().map(BlobStatus::rank);
        // A status the pending nodes alone could carry to validity, later than the verdict.
        if self.pending > u32::from(self.config.f()) && now != Some(BlobStatus::Invalid) {
            return false;
        }
        // A status already stated, later than (or as late as) the verdict, that the pending
        // nodes could carry to its weight.
        !self.groups.iter().any(|(s, w)| {
            Some(s) != now.as_ref()
                && now_rank.is_none_or(|r| s.rank() >= r)
                && w + self.pending >= belief_weight(s, &self.config)
        })
    }
}

/// Ask every node of `topology` for `id`'s status until the answers settle the verdict
/// ([`StatusTally::settled`]; at the latest when every node has answered or failed, or
/// `timeout` passed), and aggregate them ([`StatusTally::verdict`]).
pub async fn verified_status(
    client: &NodeClient,
    topology: &Arc<Topology>,
    id: BlobId,
    timeout: Duration,
) -> Option<BlobStatus> {
    let mut requests = tokio::task::JoinSet::new();
    let mut asked = 0u32;
    for node in 0..topology.node_count() {
        asked += u32::from(topology.weight(node));
        let (client, topology) = (client.clone(), topology.clone());
        requests.spawn(async move {
            let answer = client
                .blob_status(&topology, node, &id, 16 << 10, timeout)
                .await;
            (node, answer)
        });
    }
    let mut tally = StatusTally::new(*topology.config(), asked);
    let deadline = tokio::time::Instant::now() + timeout;
    while !tally.settled() {
        let Ok(Some(joined)) = tokio::time::timeout_at(deadline, requests.join_next()).await else {
            break;
        };
        // A panicked task names no node: its weight stays pending (waited for until the end).
        let Ok((node, answer)) = joined else { continue };
        let weight = topology.weight(node);
        match answer.ok().as_deref().and_then(BlobStatus::parse) {
            Some(status) => tally.answer(status, weight),
            None => tally.fail(weight),
        }
    }
    tally.verdict()
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

    fn certified(e: u32) -> BlobStatus {
        BlobStatus::Permanent {
            end_epoch: 60,
            certified: true,
            initial_certified_epoch: Some(e),
        }
    }

    /// n = 10: f = 3, validity 4 shards, quorum 7.
    fn tally(answers: &[(BlobStatus, u16)]) -> StatusTally {
        let mut tally = StatusTally::new(codec::EncodingConfig::new(10).unwrap(), 10);
        for (status, weight) in answers {
            tally.answer(status.clone(), *weight);
        }
        tally
    }

    #[test]
    fn aggregation_takes_the_latest_status_with_validity_weight() {
        let answers = [
            (certified(3), 3),
            (BlobStatus::Nonexistent, 5),
            (certified(3), 1),
        ];
        assert_eq!(tally(&answers).verdict(), Some(certified(3)));
        // A lie from nodes below validity weight is not believed.
        let answers = [(BlobStatus::Invalid, 3), (certified(2), 7)];
        assert_eq!(tally(&answers).verdict(), Some(certified(2)));
        assert_eq!(tally(&[(certified(2), 3)]).verdict(), None);
    }

    #[test]
    fn nonexistent_needs_a_quorum_of_shards() {
        // Validity weight is not enough for a 404: the nodes holding the blob may be down.
        let mut six = tally(&[(BlobStatus::Nonexistent, 6)]);
        assert_eq!(six.verdict(), None);
        assert!(!six.settled(), "4 pending shards could still make it 10");
        six.fail(4);
        assert!(six.settled());
        assert_eq!(six.verdict(), None);
        assert_eq!(
            tally(&[(BlobStatus::Nonexistent, 7)]).verdict(),
            Some(BlobStatus::Nonexistent)
        );
    }

    /// The flaky `not_found_needs_a_quorum_of_shards` (http_api): nodes 0 and 1 (3 shards each)
    /// lie "nonexistent" about a stored blob; nodes 2 and 3 (2 shards each) hold it. When both
    /// liars and node 2 answered first, 8 shards had answered, a quorum, and the status check
    /// stopped with "nonexistent" at validity weight: a 404 for a stored blob.
    #[test]
    fn a_quorum_of_answers_does_not_settle_a_status_the_late_nodes_can_change() {
        let mut t = tally(&[]);
        assert!(!t.settled());
        t.answer(BlobStatus::Nonexistent, 3);
        t.answer(BlobStatus::Nonexistent, 3);
        assert!(!t.settled());
        t.answer(certified(1), 2);
        assert_eq!(t.verdict(), None, "6 shards are no quorum for a 404");
        assert!(
            !t.settled(),
            "node 3's 2 shards can lift the certified status to 4"
        );
        t.answer(certified(1), 2);
        assert!(t.settled());
        assert_eq!(t.verdict(), Some(certified(1)));

        // The same answers with node 3 down: no status verifies (503, not 404).
        let mut t = tally(&[
            (BlobStatus::Nonexistent, 3),
            (BlobStatus::Nonexistent, 3),
            (certified(1), 2),
        ]);
        t.fail(2);
        assert!(t.settled());
        assert_eq!(t.verdict(), None);
    }

    #[test]
    fn agreeing_nodes_settle_at_a_quorum_as_before() {
        // Honest nodes holding 7 shards agree: the 3 pending ones cannot reach validity.
        let mut t = tally(&[(certified(2), 4)]);
        assert!(!t.settled());
        t.answer(certified(2), 3);
        assert!(t.settled());
        assert_eq!(t.verdict(), Some(certified(2)));
        let gone = tally(&[(BlobStatus::Nonexistent, 7)]);
        assert!(gone.settled());
        // A later status held by validity settles against anything earlier...
        let mut t = tally(&[(BlobStatus::Invalid, 4)]);
        assert!(t.settled(), "nothing is later than invalid");
        t.answer(certified(2), 6);
        assert_eq!(t.verdict(), Some(BlobStatus::Invalid));
        // ...but not while a later one could still reach validity.
        let t = tally(&[(certified(2), 4), (certified(5), 3)]);
        assert_eq!(t.verdict(), Some(certified(2)));
        assert!(
            !t.settled(),
            "end epoch 60 with certified epoch 5 may still reach 4"
        );
    }
}
