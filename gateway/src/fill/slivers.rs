//! Sliver scheduling for one fill or range read: which slivers to ask for, in what order, how
//! many at once, when to hedge, and verifying each reply (on the blocking pool) before use.
//!
//! Order: systematic primaries (their bytes are the blob's rows), then recovery primaries, then
//! secondaries; within each kind, slivers held by nodes that have been slow or failing lately
//! ([`super::health`]) come last, so a stalled node costs one fill a hedge delay, not every
//! fill. A request that fails, lies or is slower than `hedge_after` makes room for the next
//! candidate (and counts against its node's health); the goal is `kp` verified primaries or
//! `ks` verified secondaries (whole blob), or exactly the systematic rows of a range.

use super::health::Outcome;
use super::{Inner, ReadError};
use crate::nodes::{NodeError, Topology};
use bytes::Bytes;
use codec::{BcsError, BlobId, CodecError, SliverKind, VerifiedMetadata, VerifiedSliver};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::{JoinHandle, JoinSet};

/// What a sliver collection must achieve.
pub(super) enum Goal {
    /// `kp` verified primary slivers, or `ks` secondary ones: enough to decode the blob. The
    /// primaries of `first` (rows a range is waiting for) are asked for before all others.
    Blob { first: Range<u16> },
    /// Exactly these systematic primary slivers (rows), no substitutes.
    Rows(Range<u16>),
}

#[derive(Debug, Clone, Copy)]
struct Want {
    kind: SliverKind,
    pair: u16,
}

/// How one sliver request failed.
#[derive(Debug, thiserror::Error)]
enum SliverFailure {
    #[error("{0}")]
    Node(#[from] NodeError),
    #[error("malformed BCS: {0}")]
    Malformed(#[from] BcsError),
    #[error("asked for sliver {expected}, got sliver {got}")]
    WrongIndex { expected: u16, got: u16 },
    #[error("{0}")]
    Invalid(#[from] CodecError),
    #[error("verification task failed: {0}")]
    Internal(String),
}

impl SliverFailure {
    fn kind(&self) -> &'static str {
        match self {
            SliverFailure::Node(e) => e.kind(),
            SliverFailure::Malformed(_) => "malformed_sliver",
            SliverFailure::WrongIndex { .. } => "wrong_index",
            SliverFailure::Invalid(_) => "invalid_sliver",
            SliverFailure::Internal(_) => "internal",
        }
    }

    /// The node answered, but with bytes that are not what it must hold: it lied.
    fn is_lie(&self) -> bool {
        matches!(
            self,
            SliverFailure::Malformed(_)
                | SliverFailure::WrongIndex { .. }
                | SliverFailure::Invalid(_)
        )
    }
}

pub(super) struct Collected {
    pub(super) primary: BTreeMap<u16, VerifiedSliver>,
    pub(super) secondary: BTreeMap<u16, VerifiedSliver>,
    /// First row not yet emitted.
    pub(super) next_row: u16,
}

struct Flight {
    started: Instant,
    /// Past `hedge_after`: still awaited, but no longer counted as on its way.
    slow: bool,
    want: Want,
}

/// Fetch and verify slivers until `goal` is met; emit verified rows (from `emit.0` on) in order,
/// and hand `early` each systematic row that verifies ahead of that order, as it verifies.
pub(super) async fn collect_slivers(
    inner: &Arc<Inner>,
    topology: &Arc<Topology>,
    meta: &Arc<VerifiedMetadata>,
    goal: Goal,
    mut emit: Option<(u16, &mut (dyn FnMut(Bytes) + Send))>,
    mut early: Option<&mut (dyn FnMut(u16, Bytes) + Send)>,
    prefetched: &mut Prefetched,
) -> Result<Collected, ReadError> {
    let config = *meta.config();
    let n = config.n_shards();
    let kp = config.n_primary_source_symbols();
    let ks = config.n_secondary_source_symbols();
    let len = meta.unencoded_length();
    let row_len = config.row_len(meta.symbol_size());
    // Rows holding blob bytes; later systematic rows are padding only.
    let data_rows = len.div_ceil(row_len).min(u64::from(kp)) as u16;
    let id = meta.blob_id();
    let (mut queue, emit_end): (VecDeque<Want>, u16) = match &goal {
        Goal::Blob { first } => {
            let slow = inner.slow_nodes(topology);
            let any_slow = slow.contains(&true);
            let on_slow = |want: &Want| any_slow && slow[topology.node_for_pair(&id, want.pair)];
            let first = first.start.min(n)..first.end.min(n);
            let primaries = first
                .clone()
                .chain((0..n).filter(|pair| !first.contains(pair)))
                .map(|pair| Want {
                    kind: SliverKind::Primary,
                    pair,
                });
            let secondaries = (0..n).map(|index| Want {
                kind: SliverKind::Secondary,
                pair: SliverKind::Secondary.pair_index(index, n),
            });
            let queue = primaries
                .clone()
                .filter(|w| !on_slow(w))
                .chain(primaries.filter(|w| on_slow(w)))
                .chain(secondaries.clone().filter(|w| !on_slow(w)))
                .chain(secondaries.filter(|w| on_slow(w)))
                .collect();
            (queue, data_rows)
        }
        Goal::Rows(rows) => (
            rows.clone()
                .map(|pair| Want {
                    kind: SliverKind::Primary,
                    pair,
                })
                .collect(),
            rows.end.min(data_rows),
        ),
    };
    // Rows a waiting range needs: verified before the others.
    let urgent = match &goal {
        Goal::Blob { first } => first.clone(),
        Goal::Rows(rows) => rows.clone(),
    };
    let mut next_row = emit.as_ref().map_or(0, |(first, _)| *first);
    let mut primary: BTreeMap<u16, VerifiedSliver> = BTreeMap::new();
    let mut secondary: BTreeMap<u16, VerifiedSliver> = BTreeMap::new();
    let mut flights: HashMap<u64, Flight> = HashMap::new();
    let mut requests = JoinSet::new();
    let mut seq = 0u64;
    let mut failures = 0usize;
    // Nodes that answered 451 or 404, and the shards they hold.
    let mut absent = std::collections::HashSet::new();
    let (mut forbidden, mut not_found) = (0u16, 0u16);
    // Nodes that had a request hedged or failed in this fill: their remaining slivers wait
    // behind every other sliver of the same kind, so one stall is not paid twice per fill.
    let mut troubled: HashSet<usize> = HashSet::new();
    let max_in_flight = inner.config.max_slivers_in_flight.max(1);
    let hedge_after = inner.config.hedge_after;
    loop {
        let done = match &goal {
            Goal::Blob { .. } => {
                primary.len() >= usize::from(kp) || secondary.len() >= usize::from(ks)
            }
            Goal::Rows(rows) => rows.clone().all(|r| primary.contains_key(&r)),
        };
        if done {
            break;
        }
        while flights.len() < max_in_flight {
            let on_way = |kind: SliverKind| {
                flights
                    .values()
                    .filter(|f| !f.slow && f.want.kind == kind)
                    .count()
            };
            let need_more = match &goal {
                Goal::Blob { .. } => {
                    primary.len() + on_way(SliverKind::Primary) < usize::from(kp)
                        && secondary.len() + on_way(SliverKind::Secondary) < usize::from(ks)
                }
                Goal::Rows(_) => true,
            };
            if !need_more {
                break;
            }
            let Some(want) = next_want(&mut queue, |w| {
                !troubled.is_empty() && troubled.contains(&topology.node_for_pair(&id, w.pair))
            }) else {
                break;
            };
            seq += 1;
            flights.insert(
                seq,
                Flight {
                    started: Instant::now(),
                    slow: false,
                    want,
                },
            );
            let early = match want.kind {
                SliverKind::Primary => prefetched.0.remove(&want.pair),
                SliverKind::Secondary => None,
            };
            if early.is_none() {
                match want.kind {
                    SliverKind::Primary => inner.telemetry.primary_sliver_requests.increment(1),
                    SliverKind::Secondary => inner.telemetry.secondary_sliver_requests.increment(1),
                }
            }
            let inner = inner.clone();
            let topology = topology.clone();
            let meta = meta.clone();
            let request = seq;
            let urgent = urgent.clone();
            requests.spawn(async move {
                let early = AbortOnDrop(early);
                (
                    request,
                    fetch_sliver(&inner, &topology, meta, want, early, urgent).await,
                )
            });
        }
        if flights.is_empty() {
            let have = match &goal {
                Goal::Blob { .. } => format!("{} of {kp} primary slivers", primary.len()),
                Goal::Rows(rows) => format!(
                    "{} of rows {}..{}",
                    rows.clone().filter(|r| primary.contains_key(r)).count(),
                    rows.start,
                    rows.end
                ),
            };
            return Err(ReadError::Unavailable(format!(
                "only {have} verified after {failures} failed sliver requests"
            )));
        }
        let hedge_at = flights
            .values()
            .filter(|f| !f.slow)
            .map(|f| f.started + hedge_after)
            .min();
        let joined = tokio::select! {
            joined = requests.join_next() => joined,
            () = sleep_until_opt(hedge_at) => {
                let now = Instant::now();
                for flight in flights.values_mut() {
                    if !flight.slow && flight.started + hedge_after <= now {
                        flight.slow = true;
                        let node = topology.node_for_pair(&id, flight.want.pair);
                        inner.node_outcome(topology, node, Outcome::Hedged);
                        troubled.insert(node);
                        tracing::debug!(blob_id = %id, pair = flight.want.pair,
                            kind = flight.want.kind.as_str(), "sliver request is slow; hedging");
                    }
                }
                continue;
            }
        };
        let Some(joined) = joined else { continue };
        let (request, result) =
            joined.map_err(|e| ReadError::Internal(format!("sliver task failed: {e}")))?;
        let Some(flight) = flights.remove(&request) else {
            continue;
        };
        let want = flight.want;
        let node = topology.node_for_pair(&id, want.pair);
        match &result {
            Ok(_) => inner.node_outcome(topology, node, Outcome::Good),
            // Our own task failing says nothing about the node.
            Err(SliverFailure::Internal(_)) => {}
            Err(_) => {
                inner.node_outcome(topology, node, Outcome::Failed);
                troubled.insert(node);
            }
        }
        match result {
            Ok(sliver) => match sliver.kind {
                SliverKind::Primary => {
                    let index = sliver.index;
                    if let Some(early) = early.as_mut() {
                        if index > next_row && index < emit_end {
                            let start = u64::from(index) * row_len;
                            let take = (len - start).min(row_len) as usize;
                            early(index, sliver.data.slice(..take));
                        }
                    }
                    primary.insert(index, sliver);
                }
                SliverKind::Secondary => {
                    secondary.insert(sliver.index, sliver);
                }
            },
            Err(failure) => {
                failures += 1;
                let exact = matches!(goal, Goal::Rows(_));
                let name = &topology.node(node).name;
                inner.telemetry.node_failure(name, failure.kind());
                if let SliverFailure::Node(NodeError::Pinning(_)) = failure {
                    inner.telemetry.node_tls_pin_failure(name);
                    // The node may have a new key or address on chain: re-read its pool object.
                    inner.committees.request_refresh();
                    tracing::warn!(node = %name, blob_id = %id, pair = want.pair,
                        kind = want.kind.as_str(), error = %failure,
                        "storage node's TLS certificate does not carry its on-chain network key");
                } else if failure.is_lie() {
                    tracing::warn!(node = %name, blob_id = %id, pair = want.pair,
                        kind = want.kind.as_str(), error = %failure,
                        "storage node served an invalid sliver; asking for another");
                } else {
                    // Counted per node in the metrics; the fill logs once if it fails.
                    tracing::debug!(node = %name, blob_id = %id, pair = want.pair,
                        kind = want.kind.as_str(), error = %failure, "sliver request failed");
                }
                // Nodes holding a quorum of shards refusing with 451 (their deny lists):
                // the blob is blocked (NETWORK.md §7.2), whatever the metadata node said.
                // Likewise 404s (the blob expired or was deleted since its metadata was
                // cached): not found, as for metadata.
                if let SliverFailure::Node(e @ (NodeError::Forbidden | NodeError::NotFound)) =
                    &failure
                {
                    if absent.insert(node) {
                        if matches!(e, NodeError::Forbidden) {
                            forbidden += topology.weight(node);
                        } else {
                            not_found += topology.weight(node);
                        }
                        if let Some(e) =
                            super::metadata::judge_absent(not_found, forbidden, &config)
                        {
                            return Err(e);
                        }
                    }
                }
                if exact {
                    // No substitute exists for a row: give up now (dropping `requests` aborts
                    // the others) and let the caller fall back to a whole-blob fill.
                    return Err(ReadError::Unavailable(format!(
                        "systematic sliver {} failed: {failure}",
                        want.pair
                    )));
                }
            }
        }
        if let Some((_, emit)) = emit.as_mut() {
            while next_row < emit_end {
                let Some(sliver) = primary.get(&next_row) else {
                    break;
                };
                let start = u64::from(next_row) * row_len;
                let take = (len - start).min(row_len) as usize;
                emit(sliver.data.slice(..take));
                next_row += 1;
            }
        }
    }
    Ok(Collected {
        primary,
        secondary,
        next_row,
    })
}

/// The next sliver to ask for: the queue's head, unless `troubled` says its node misbehaved,
/// then the first later sliver of the same kind on another node (the head keeps its place).
fn next_want(queue: &mut VecDeque<Want>, troubled: impl Fn(&Want) -> bool) -> Option<Want> {
    let head = *queue.front()?;
    if troubled(&head) {
        if let Some(i) = queue
            .iter()
            .position(|w| w.kind == head.kind && !troubled(w))
        {
            return queue.remove(i);
        }
    }
    queue.pop_front()
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Fetch one sliver, check that it is the one asked for, and verify it on the blocking pool.
async fn fetch_sliver(
    inner: &Inner,
    topology: &Topology,
    meta: Arc<VerifiedMetadata>,
    want: Want,
    mut early: AbortOnDrop,
    urgent: Range<u16>,
) -> Result<VerifiedSliver, SliverFailure> {
    let config = meta.config();
    let n = config.n_shards();
    let data_len = match want.kind {
        SliverKind::Primary => config.primary_sliver_len(meta.symbol_size()),
        SliverKind::Secondary => config.secondary_sliver_len(meta.symbol_size()),
    };
    // ULEB128 length (at most 5 bytes) + data + symbol size + index.
    let limit = data_len + 9;
    let asked = Instant::now();
    let body = match early.0.take() {
        Some(handle) => {
            let body = handle
                .await
                .map_err(|e| SliverFailure::Internal(format!("prefetch task failed: {e}")))??;
            if body.len() > limit {
                return Err(NodeError::TooLarge { limit }.into());
            }
            body
        }
        None => {
            inner
                .client
                .sliver(
                    topology,
                    &meta.blob_id(),
                    want.pair,
                    want.kind,
                    limit,
                    inner.config.sliver_timeout,
                )
                .await?
        }
    };
    inner.telemetry.upstream_bytes.increment(body.len() as u64);
    inner.telemetry.sliver_fetched(asked.elapsed());
    let sliver = codec::bcs::decode_sliver(&body, want.kind)?;
    let expected = want.kind.sliver_index(want.pair, n);
    if sliver.index != expected {
        return Err(SliverFailure::WrongIndex {
            expected,
            got: sliver.index,
        });
    }
    // Rows a range waits for first, then rows in order (primary index = row), then
    // secondaries.
    let priority = match want.kind {
        SliverKind::Primary if urgent.contains(&sliver.index) => u32::from(sliver.index),
        SliverKind::Primary => u32::from(n) + u32::from(sliver.index),
        SliverKind::Secondary => 2 * u32::from(n) + u32::from(sliver.index),
    };
    let _turn = inner.verify_gate.enter(priority).await;
    let verified = tokio::task::spawn_blocking(move || meta.verify_sliver(sliver))
        .await
        .map_err(|e| SliverFailure::Internal(e.to_string()))??;
    Ok(verified)
}

/// Request the systematic primary slivers of `id` before its metadata is known, with a
/// body limit from the largest sliver the committee (or `max_blob_size`) allows. Slivers on
/// nodes that have been slow lately are left to the collection, which asks them last.
pub(super) fn prefetch_systematic(
    inner: &Arc<Inner>,
    topology: &Arc<Topology>,
    id: BlobId,
) -> Prefetched {
    let config = *topology.config();
    let max_symbol = inner
        .config
        .max_blob_size
        .and_then(|max| config.symbol_size(max).ok())
        .unwrap_or(codec::MAX_SYMBOL_SIZE);
    let limit = config.primary_sliver_len(max_symbol) + 9;
    let count = config
        .n_primary_source_symbols()
        .min(u16::try_from(inner.config.max_slivers_in_flight.max(1)).unwrap_or(u16::MAX));
    let slow = inner.slow_nodes(topology);
    let any_slow = slow.contains(&true);
    let handles = (0..count)
        .filter(|&pair| !(any_slow && slow[topology.node_for_pair(&id, pair)]))
        .map(|pair| {
            inner.telemetry.primary_sliver_requests.increment(1);
            let inner = inner.clone();
            let topology = topology.clone();
            let handle = tokio::spawn(async move {
                inner
                    .client
                    .sliver(
                        &topology,
                        &id,
                        pair,
                        SliverKind::Primary,
                        limit,
                        inner.config.sliver_timeout,
                    )
                    .await
            });
            (pair, handle)
        })
        .collect();
    Prefetched(handles)
}

/// Sliver requests sent before the metadata arrived, by pair; unused ones are aborted on drop.
#[derive(Default)]
pub(super) struct Prefetched(HashMap<u16, JoinHandle<Result<Bytes, NodeError>>>);

impl Drop for Prefetched {
    fn drop(&mut self) {
        for handle in self.0.values() {
            handle.abort();
        }
    }
}

/// A prefetched request handed to one sliver task, aborted if that task is.
struct AbortOnDrop(Option<JoinHandle<Result<Bytes, NodeError>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slivers_on_troubled_nodes_wait_behind_others_of_their_kind() {
        let want = |kind, pair| Want { kind, pair };
        let (p, s) = (SliverKind::Primary, SliverKind::Secondary);
        let mut queue: VecDeque<Want> =
            [want(p, 0), want(p, 1), want(p, 2), want(s, 3), want(s, 4)]
                .into_iter()
                .collect();
        // Pairs 0 and 2 (and secondary 3) sit on a node that stalled.
        let troubled = |w: &Want| matches!(w.pair, 0 | 2 | 3);
        let mut order = Vec::new();
        while let Some(w) = next_want(&mut queue, troubled) {
            order.push((w.kind == p, w.pair));
        }
        // Primary 1 jumps ahead; the troubled primaries still come before any secondary.
        assert_eq!(
            order,
            vec![(true, 1), (true, 0), (true, 2), (false, 4), (false, 3)]
        );
    }
}
