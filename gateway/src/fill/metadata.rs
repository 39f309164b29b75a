//! Fetching a blob's metadata: a fan-out to a few nodes at a time, the first reply that verifies
//! against the Blob ID wins, and "not found" only on a `2f+1`-shard quorum (SPEC §9 step 2).
//! A 451 (the node's deny list) counts toward that quorum too; when 404s and 451s together
//! reach it, the blob is "blocked by the nodes" if more shards said 451 than 404, else "not
//! found" (NETWORK.md §7.2, as Walrus's clients judge it).
//! Nodes that have been slow or failing lately are asked after all the others.

use super::health::Outcome;
use super::{Inner, ReadError};
use crate::nodes::{NodeError, Topology};
use codec::{BlobId, VerifiedMetadata};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

/// Largest BCS metadata for `config`: 32 (ID) + 2 (enum tags) + 8 (length) + up to 3 (ULEB128
/// n) + 66 per shard.
pub(super) fn metadata_limit(config: &codec::EncodingConfig) -> u64 {
    45 + 66 * u64::from(config.n_shards())
}

/// Ask nodes for metadata, `metadata_fanout` at a time, until one reply verifies.
pub(super) async fn fetch_metadata(
    inner: &Arc<Inner>,
    topology: &Arc<Topology>,
    id: BlobId,
) -> Result<Arc<VerifiedMetadata>, ReadError> {
    let config = *topology.config();
    let nodes = topology.node_count();
    // Start at a node chosen by the ID, so different blobs spread over the committee; nodes
    // that have been slow or failing lately come after every other one.
    let first = usize::from(id.rotation_offset(u16::try_from(nodes).unwrap_or(u16::MAX).max(1)));
    let slow = inner.slow_nodes(topology);
    let rotated = || (0..nodes).map(|i| (first + i) % nodes);
    let mut order = rotated()
        .filter(|&node| !slow[node])
        .chain(rotated().filter(|&node| slow[node]));
    let limit = metadata_limit(&config) as usize;
    let timeout = inner.config.metadata_timeout;
    let mut requests = JoinSet::new();
    let mut not_found = 0u16;
    let mut forbidden = 0u16;
    let mut failed = 0usize;
    let mut laggards = Laggards {
        inner,
        topology,
        pending: HashMap::new(),
    };
    inner.telemetry.metadata_fills.increment(1);
    loop {
        while requests.len() < inner.config.metadata_fanout.max(1) {
            let Some(node) = order.next() else { break };
            let client = inner.client.clone();
            let topology = topology.clone();
            inner.telemetry.metadata_requests.increment(1);
            laggards.pending.insert(node, Instant::now());
            requests.spawn(async move {
                let reply = client.metadata(&topology, node, &id, limit, timeout).await;
                (node, reply)
            });
        }
        let Some(joined) = requests.join_next().await else {
            return Err(ReadError::Unavailable(format!(
                "no storage node returned metadata that verifies ({failed} failed, nodes holding \
                 {not_found} shards said not found, {forbidden} blocked)"
            )));
        };
        let (node, reply) = joined.map_err(|e| ReadError::Internal(e.to_string()))?;
        laggards.pending.remove(&node);
        let name = &topology.node(node).name;
        let body = match reply {
            Ok(body) => body,
            Err(NodeError::NotFound) => {
                // An answer in time: "not found" says nothing bad about the node.
                inner.node_outcome(topology, node, Outcome::Good);
                not_found += topology.weight(node);
                if let Some(e) = judge_absent(not_found, forbidden, &config) {
                    return Err(e);
                }
                continue;
            }
            Err(NodeError::Forbidden) => {
                inner.node_outcome(topology, node, Outcome::Good);
                forbidden += topology.weight(node);
                if let Some(e) = judge_absent(not_found, forbidden, &config) {
                    return Err(e);
                }
                continue;
            }
            Err(e @ NodeError::Pinning(_)) => {
                failed += 1;
                inner.node_outcome(topology, node, Outcome::Failed);
                inner.telemetry.node_failure(name, e.kind());
                inner.telemetry.node_tls_pin_failure(name);
                // The node may have a new key or address on chain: re-read its pool object.
                inner.committees.request_refresh();
                tracing::warn!(node = %name, blob_id = %id, error = %e,
                    "storage node's TLS certificate does not carry its on-chain network key");
                continue;
            }
            Err(e) => {
                failed += 1;
                inner.node_outcome(topology, node, Outcome::Failed);
                inner.telemetry.node_failure(name, e.kind());
                // Counted per node in the metrics; the lookup logs once if it fails.
                tracing::debug!(node = %name, blob_id = %id, error = %e, "metadata request failed");
                continue;
            }
        };
        inner.telemetry.upstream_bytes.increment(body.len() as u64);
        let verified = codec::bcs::decode_metadata_with_id(&body)
            .map_err(|e| e.to_string())
            .and_then(|(claimed, meta)| {
                if claimed != id {
                    return Err(format!("it is for blob {claimed}"));
                }
                VerifiedMetadata::verify(id, meta, config).map_err(|e| e.to_string())
            });
        match verified {
            Ok(meta) => {
                inner.node_outcome(topology, node, Outcome::Good);
                let len = meta.unencoded_length();
                if let Some(max) = inner.config.max_blob_size {
                    if len > max {
                        return Err(ReadError::TooLarge { len, max });
                    }
                }
                return Ok(Arc::new(meta));
            }
            Err(reason) => {
                failed += 1;
                inner.node_outcome(topology, node, Outcome::Failed);
                inner.telemetry.node_failure(name, "invalid_metadata");
                tracing::warn!(
                    node = %name, blob_id = %id, %reason,
                    "storage node served metadata that does not verify against the Blob ID"
                );
            }
        }
    }
}

/// Once nodes holding a quorum of shards said 404 or 451: 451 if more shards said 451
/// ([`ReadError::ForbiddenByNodes`]), else not found.
pub(super) fn judge_absent(
    not_found: u16,
    forbidden: u16,
    config: &codec::EncodingConfig,
) -> Option<ReadError> {
    if not_found.saturating_add(forbidden) < config.quorum() {
        return None;
    }
    Some(if forbidden > not_found {
        ReadError::ForbiddenByNodes {
            shards: forbidden,
            n_shards: config.n_shards(),
        }
    } else {
        ReadError::NotFound {
            shards: not_found.saturating_add(forbidden),
            n_shards: config.n_shards(),
        }
    })
}

/// Metadata requests still unanswered when the fan-out ends (another node answered first):
/// those older than `hedge_after` count against their node's health, as a hedged sliver
/// request does, so a node that stalls only on metadata is still asked last next time.
struct Laggards<'a> {
    inner: &'a Inner,
    topology: &'a Topology,
    pending: HashMap<usize, Instant>,
}

impl Drop for Laggards<'_> {
    fn drop(&mut self) {
        let hedge_after = self.inner.config.hedge_after;
        for (&node, started) in &self.pending {
            if started.elapsed() >= hedge_after {
                self.inner
                    .node_outcome(self.topology, node, Outcome::Hedged);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absence_is_judged_at_quorum_and_451_wins_only_with_more_weight() {
        // n = 10: quorum 7.
        let config = codec::EncodingConfig::new(10).unwrap();
        assert_eq!(judge_absent(3, 3, &config), None);
        assert!(matches!(
            judge_absent(0, 7, &config),
            Some(ReadError::ForbiddenByNodes { shards: 7, .. })
        ));
        assert!(matches!(
            judge_absent(3, 4, &config),
            Some(ReadError::ForbiddenByNodes { shards: 4, .. })
        ));
        assert!(matches!(
            judge_absent(4, 3, &config),
            Some(ReadError::NotFound { shards: 7, .. })
        ));
    }
}
