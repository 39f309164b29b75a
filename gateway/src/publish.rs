//! Publishing a blob (`PUT /v1/blobs`): encode it, send the metadata and every sliver pair to
//! the node that owns the pair's shard (SPEC §7, §10), and succeed once nodes holding at least
//! `2f+1` shards have confirmed all of their pairs.
//!
//! * Encoding runs on the blocking pool; each node is served by its own task with a bounded
//!   number of sliver PUTs in flight and a timeout on every request.
//! * The answer comes as soon as a quorum confirmed. Nodes that failed their first round keep
//!   being retried in the background, for `background_retry_for`, but only when the publish
//!   succeeded: a failed publish reports nothing as stored and stops writing.
//! * "Already stored" is reported when every confirming node said it already held everything
//!   (storage nodes answer 200 instead of 201 for data they have).
//! * The encoded blob is verified by construction, so the caller may cache its rows.
//!
//! Memory: the input is dropped as soon as it is encoded; each node's task owns only its own
//! slivers (freed when that node is done, so background retries keep only the slivers of the
//! nodes that failed) and encodes a sliver's request body only when it is about to send it.
//! What a publish may hold at its peak is [`memory_cost`]; admission ([`PublishGate`]) reserves
//! it from the publish memory budget before the upload's body is read, and each node's task
//! carries its share of that reservation for as long as it holds its slivers. When the last of
//! them is done, the freed heap goes back to the kernel ([`crate::heap`]).

use crate::budget::{Budget, Reservation};
use crate::heap::TrimWhenDone;
use crate::nodes::{NodeClient, Topology};
use bytes::Bytes;
use codec::{bcs, CodecError, EncodingConfig, Sliver, VerifiedMetadata};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// Limits of one publish.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// Timeout of one PUT, body included.
    pub request_timeout: Duration,
    /// Sliver PUTs in flight per node.
    pub slivers_in_flight_per_node: usize,
    /// Tries of one request before the node's first round counts as failed.
    pub attempts: u32,
    /// After a successful publish, how long nodes that failed keep being retried.
    pub background_retry_for: Duration,
    /// Blob IDs refused once encoded ([`crate::blocklist`]): nothing is sent to the nodes.
    pub blocklist: crate::blocklist::Blocklist,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            slivers_in_flight_per_node: 16,
            attempts: 2,
            background_retry_for: Duration::from_secs(60),
            blocklist: crate::blocklist::Blocklist::default(),
        }
    }
}

/// The most memory a publish of `len` bytes may hold at once, the encoder's peak: the input
/// (until it is encoded), the source matrix and its re-laid-out copy, the primary code's
/// recovery rows (twice while they are computed), the secondary slivers and the source rows'
/// secondary extensions. Later, while slivers are sent, less is held: the slivers and at most
/// the request bodies in flight. About 8-9 times the blob for 10 to 1000 shards, 8.86 at
/// n = 100, where a 24 MiB publish measured (issue 21) 164 MiB of peak heap by heaptrack plus
/// the mapped upload, and a peak RSS of 6.8-9.8 times its size. A length the committee cannot
/// store costs nothing here: it is refused before any work.
pub fn memory_cost(config: &EncodingConfig, len: u64) -> u64 {
    let Ok(symbol_size) = config.symbol_size(len.max(1)) else {
        return 0;
    };
    let ss = u64::from(symbol_size);
    let n = u64::from(config.n_shards());
    let kp = u64::from(config.n_primary_source_symbols());
    let ks = u64::from(config.n_secondary_source_symbols());
    let matrix = kp * ks * ss;
    let recovery = (n - kp) * ks * ss;
    let secondary = n * kp * ss;
    let extensions = kp * (n - ks) * ss;
    len + 2 * matrix + 2 * recovery + secondary + extensions
}

/// Admission of publishes: at most `--max-concurrent-publishes` at once, and together at most
/// `--publish-memory` bytes of [`memory_cost`]. Taken before an upload's body is read; a publish
/// that does not fit is refused at once, never queued.
pub struct PublishGate {
    slots: Arc<Semaphore>,
    memory: Arc<Budget>,
}

/// Why a publish was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every publish slot is taken.
    Slots,
    /// The publish memory budget is spent.
    Memory,
}

impl Refusal {
    /// The metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::Slots => "publish_slots",
            Refusal::Memory => "publish_memory",
        }
    }
}

/// An admitted publish: its slot, and its share of the memory budget.
pub struct Admission {
    _slot: OwnedSemaphorePermit,
    pub memory: Reservation,
}

impl PublishGate {
    pub fn new(max_concurrent: usize, memory_bytes: u64) -> Self {
        crate::heap::configure();
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            memory: Budget::new(memory_bytes),
        }
    }

    /// A slot and `bytes` of the budget (capped at the whole budget, so a publish alone always
    /// fits), or why not.
    pub fn try_admit(&self, bytes: u64) -> Result<Admission, Refusal> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Slots)?;
        let memory = self.memory.try_reserve(bytes).ok_or(Refusal::Memory)?;
        Ok(Admission {
            _slot: slot,
            memory,
        })
    }

    /// Bytes of the budget reserved now.
    pub fn memory_in_use(&self) -> u64 {
        self.memory.used()
    }
}

/// What the nodes said about a successful publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    NewlyCreated,
    AlreadyStored,
}

/// A successful publish.
pub struct Published {
    pub metadata: VerifiedMetadata,
    /// The blob's systematic rows (the source primary slivers; the last one is padded past the
    /// blob's end), verified by construction.
    pub rows: Vec<Bytes>,
    pub outcome: Outcome,
    /// Shards whose nodes confirmed before the answer (at least `2f+1`).
    pub confirmed_shards: u16,
    /// What Walrus charges storage on (SPEC §8).
    pub encoded_length: u64,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the blob cannot be encoded: {0}")]
    Encode(#[from] CodecError),
    #[error("only {confirmed} of the {needed} shards needed confirmed the blob ({detail})")]
    InsufficientConfirmations {
        confirmed: u16,
        needed: u16,
        detail: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the blob is blocked on this gateway")]
    Blocked,
}

/// Encode `blob` and store it on the committee. `memory` is the publish's admission; each
/// node's task takes the part of it that covers the slivers it holds, and a clone of `trim`.
pub async fn publish(
    topology: Arc<Topology>,
    client: NodeClient,
    config: PublishConfig,
    blob: Bytes,
    memory: &mut Reservation,
    trim: &Arc<TrimWhenDone>,
) -> Result<Published, PublishError> {
    let codec_config: EncodingConfig = *topology.config();
    // The input is dropped inside the task, as soon as it is encoded.
    let encoded = tokio::task::spawn_blocking(move || codec::encode(&codec_config, &blob))
        .await
        .map_err(|e| PublishError::Internal(format!("encoder task failed: {e}")))??;
    let metadata = encoded.metadata;
    let blob_id = metadata.blob_id();
    if config.blocklist.is_blocked(&blob_id) {
        return Err(PublishError::Blocked);
    }
    let n = codec_config.n_shards();
    let needed = codec_config.quorum();
    let kp = usize::from(codec_config.n_primary_source_symbols());
    let rows: Vec<Bytes> = encoded
        .primary
        .iter()
        .take(kp)
        .map(|s| s.data.clone())
        .collect();
    let encoded_length = codec_config.encoded_length(metadata.unencoded_length())?;

    // Hand each node its own slivers: a node's slivers are freed when it is done with them.
    let mut slivers_of: Vec<Vec<(u16, Sliver)>> = vec![Vec::new(); topology.node_count()];
    let mut primary: Vec<Option<Sliver>> = encoded
        .primary
        .into_iter()
        .map(|s| Some(s.into_inner()))
        .collect();
    let mut secondary: Vec<Option<Sliver>> = encoded
        .secondary
        .into_iter()
        .map(|s| Some(s.into_inner()))
        .collect();
    for pair in 0..n {
        let node = topology.node_for_pair(&blob_id, pair);
        let p = usize::from(pair);
        let s = usize::from(n - 1 - pair);
        for sliver in [primary[p].take(), secondary[s].take()]
            .into_iter()
            .flatten()
        {
            slivers_of[node].push((pair, sliver));
        }
    }
    drop((primary, secondary));
    let metadata_body = Bytes::from(bcs::encode_metadata(metadata.metadata()));

    // true: the publish succeeded, keep retrying failed nodes; false: stop.
    let (decided_tx, decided_rx) = watch::channel(None::<bool>);
    let (report_tx, mut report_rx) = mpsc::channel(topology.node_count().max(1));
    let mut expected = 0;
    let in_flight = config.slivers_in_flight_per_node.max(1);
    for (node, slivers) in slivers_of.into_iter().enumerate() {
        if slivers.is_empty() {
            continue;
        }
        expected += 1;
        let largest = slivers.iter().map(|(_, s)| s.data.len()).max().unwrap_or(0);
        let held: usize = slivers.iter().map(|(_, s)| s.data.len()).sum::<usize>()
            + in_flight.min(slivers.len()) * largest;
        let job = NodeJob {
            node,
            blob_id,
            slivers,
            metadata_body: metadata_body.clone(),
            topology: topology.clone(),
            client: client.clone(),
            config: config.clone(),
            _memory: memory.split(held as u64),
            _trim: trim.clone(),
        };
        let report = report_tx.clone();
        let decided = decided_rx.clone();
        tokio::spawn(job.run(report, decided));
    }
    drop(report_tx);

    let mut confirmed = 0u16;
    let mut all_already = true;
    let mut failures = Vec::new();
    for _ in 0..expected {
        let Some((node, result)) = report_rx.recv().await else {
            break;
        };
        match result {
            Ok(already) => {
                confirmed += topology.weight(node);
                all_already &= already;
            }
            Err(reason) => failures.push(format!("{}: {reason}", topology.node(node).name)),
        }
        if confirmed >= needed {
            let _ = decided_tx.send(Some(true));
            return Ok(Published {
                metadata,
                rows,
                encoded_length,
                outcome: if all_already {
                    Outcome::AlreadyStored
                } else {
                    Outcome::NewlyCreated
                },
                confirmed_shards: confirmed,
            });
        }
    }
    let _ = decided_tx.send(Some(false));
    tracing::warn!(%blob_id, confirmed, needed, failures = ?failures, "publish failed: too few confirmations");
    Err(PublishError::InsufficientConfirmations {
        confirmed,
        needed,
        detail: if failures.is_empty() {
            "no node answered".into()
        } else {
            failures.join("; ")
        },
    })
}

/// Everything one node must store for one blob.
struct NodeJob {
    node: usize,
    blob_id: codec::BlobId,
    /// This node's slivers, with the pair each belongs to.
    slivers: Vec<(u16, Sliver)>,
    metadata_body: Bytes,
    topology: Arc<Topology>,
    client: NodeClient,
    config: PublishConfig,
    /// The part of the publish's memory reservation that covers these slivers and their
    /// request bodies, given back when the job ends.
    _memory: Reservation,
    _trim: Arc<TrimWhenDone>,
}

impl NodeJob {
    async fn run(
        self,
        report: mpsc::Sender<(usize, Result<bool, String>)>,
        mut decided: watch::Receiver<Option<bool>>,
    ) {
        let first = self.store_all().await;
        let failed = first.is_err();
        let _ = report.send((self.node, first)).await;
        drop(report);
        if !failed {
            return;
        }
        // Wait for the verdict: retry only for a publish that succeeded.
        let verdict = match decided.wait_for(Option::is_some).await {
            Ok(v) => *v,
            Err(_) => None,
        };
        if verdict != Some(true) {
            return;
        }
        let name = &self.topology.node(self.node).name;
        let blob_id = self.blob_id;
        let deadline = Instant::now() + self.config.background_retry_for;
        let mut backoff = Duration::from_millis(250);
        while Instant::now() < deadline {
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            match self.store_all().await {
                Ok(_) => {
                    tracing::info!(%blob_id, node = %name, "background retry stored the blob's pairs");
                    return;
                }
                Err(reason) => {
                    tracing::debug!(%blob_id, node = %name, %reason, "background retry failed")
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        tracing::warn!(%blob_id, node = %name, "gave up storing pairs on this node");
    }

    /// Metadata, then every sliver of every pair: `Ok(true)` if the node already had all of it.
    async fn store_all(&self) -> Result<bool, String> {
        let blob_id = self.blob_id;
        let (timeout, attempts) = (self.config.request_timeout, self.config.attempts);
        let mut already = retry(attempts, || {
            self.client.put_metadata(
                &self.topology,
                self.node,
                &blob_id,
                self.metadata_body.clone(),
                timeout,
            )
        })
        .await
        .map_err(|e| format!("metadata: {e}"))?;
        let permits = Arc::new(Semaphore::new(
            self.config.slivers_in_flight_per_node.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for (pair, sliver) in &self.slivers {
            let (pair, sliver) = (*pair, sliver.clone());
            let permit = permits.clone();
            let (client, topology) = (self.client.clone(), self.topology.clone());
            tasks.spawn(async move {
                let _permit = permit.acquire_owned().await.map_err(|e| e.to_string())?;
                // Encoded only now: at most the in-flight bodies exist at once, not a second
                // copy of every sliver.
                let kind = sliver.kind;
                let body = Bytes::from(bcs::encode_sliver(&sliver));
                retry(attempts, || {
                    client.put_sliver(&topology, &blob_id, pair, kind, body.clone(), timeout)
                })
                .await
                .map_err(|e| format!("{} sliver of pair {pair}: {e}", kind.as_str()))
            });
        }
        while let Some(joined) = tasks.join_next().await {
            already &= joined.map_err(|e| format!("sliver task failed: {e}"))??;
        }
        Ok(already)
    }
}

/// Try `call` up to `attempts` times, backing off between tries; the last error if all fail.
async fn retry<F, Fut>(attempts: u32, mut call: F) -> Result<bool, crate::nodes::NodeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, crate::nodes::NodeError>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(already) => return Ok(already),
            Err(e) if attempt + 1 >= attempts.max(1) => return Err(e),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_costs_eight_to_nine_times_the_blob_at_every_committee_size() {
        for n in [10u16, 100, 1000] {
            let config = EncodingConfig::new(n).unwrap();
            let len = config.max_blob_size().min(64 << 20);
            let ratio = memory_cost(&config, len) as f64 / len as f64;
            assert!((7.5..9.5).contains(&ratio), "n = {n}: {ratio}");
        }
        let config = EncodingConfig::new(10).unwrap();
        assert_eq!(memory_cost(&config, config.max_blob_size() + 1), 0);
        assert!(
            memory_cost(&config, 0) > 0,
            "even an empty blob has a matrix"
        );
    }

    #[test]
    fn the_gate_refuses_past_its_slots_and_its_memory_and_frees_both_on_drop() {
        let gate = PublishGate::new(2, 100);
        let a = gate.try_admit(60).unwrap();
        assert_eq!(gate.try_admit(50).err(), Some(Refusal::Memory));
        let b = gate.try_admit(40).unwrap();
        assert_eq!(gate.try_admit(0).err(), Some(Refusal::Slots));
        drop(a);
        assert_eq!(gate.memory_in_use(), 40);
        let c = gate.try_admit(1_000).err();
        assert_eq!(
            c,
            Some(Refusal::Memory),
            "60 left, and 1000 is capped at 100"
        );
        drop(b);
        let alone = gate.try_admit(1_000).unwrap();
        assert_eq!(alone.memory.bytes(), 100);
    }
}
