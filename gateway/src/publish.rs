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
//! * The encoded blob is verified by construction, so the caller may cache it.

use crate::nodes::{NodeClient, Topology};
use bytes::Bytes;
use codec::{bcs, CodecError, EncodedBlob, EncodingConfig, SliverKind};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};

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
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            slivers_in_flight_per_node: 16,
            attempts: 2,
            background_retry_for: Duration::from_secs(60),
        }
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
    pub encoded: Arc<EncodedBlob>,
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
}

/// Encode `blob` and store it on the committee.
pub async fn publish(
    topology: Arc<Topology>,
    client: NodeClient,
    config: PublishConfig,
    blob: Bytes,
) -> Result<Published, PublishError> {
    let codec_config: EncodingConfig = *topology.config();
    let encoded = tokio::task::spawn_blocking(move || codec::encode(&codec_config, &blob))
        .await
        .map_err(|e| PublishError::Internal(format!("encoder task failed: {e}")))??;
    let encoded = Arc::new(encoded);
    let blob_id = encoded.metadata.blob_id();
    let n = codec_config.n_shards();
    let needed = codec_config.quorum();

    let mut pairs_of: Vec<Vec<u16>> = vec![Vec::new(); topology.node_count()];
    for pair in 0..n {
        pairs_of[topology.node_for_pair(&blob_id, pair)].push(pair);
    }
    // true: the publish succeeded, keep retrying failed nodes; false: stop.
    let (decided_tx, decided_rx) = watch::channel(None::<bool>);
    let (report_tx, mut report_rx) = mpsc::channel(topology.node_count().max(1));
    let mut expected = 0;
    for (node, pairs) in pairs_of.into_iter().enumerate() {
        if pairs.is_empty() {
            continue;
        }
        expected += 1;
        let job = NodeJob {
            node,
            pairs,
            topology: topology.clone(),
            encoded: encoded.clone(),
            client: client.clone(),
            config: config.clone(),
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
                encoded_length: codec_config.encoded_length(encoded.metadata.unencoded_length())?,
                encoded,
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
    pairs: Vec<u16>,
    topology: Arc<Topology>,
    encoded: Arc<EncodedBlob>,
    client: NodeClient,
    config: PublishConfig,
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
        let blob_id = self.encoded.metadata.blob_id();
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
        let blob_id = self.encoded.metadata.blob_id();
        let meta_body = Bytes::from(bcs::encode_metadata(self.encoded.metadata.metadata()));
        let (timeout, attempts) = (self.config.request_timeout, self.config.attempts);
        let mut already = retry(attempts, || {
            self.client.put_metadata(
                &self.topology,
                self.node,
                &blob_id,
                meta_body.clone(),
                timeout,
            )
        })
        .await
        .map_err(|e| format!("metadata: {e}"))?;
        let permits = Arc::new(Semaphore::new(
            self.config.slivers_in_flight_per_node.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for &pair in &self.pairs {
            let (primary, secondary) = self.encoded.pair(pair).expect("pair < n");
            for (kind, sliver) in [
                (SliverKind::Primary, primary),
                (SliverKind::Secondary, secondary),
            ] {
                let body = Bytes::from(bcs::encode_sliver(sliver));
                let permit = permits.clone();
                let (client, topology) = (self.client.clone(), self.topology.clone());
                tasks.spawn(async move {
                    let _permit = permit.acquire_owned().await.map_err(|e| e.to_string())?;
                    retry(attempts, || {
                        client.put_sliver(&topology, &blob_id, pair, kind, body.clone(), timeout)
                    })
                    .await
                    .map_err(|e| format!("{} sliver of pair {pair}: {e}", kind.as_str()))
                });
            }
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
