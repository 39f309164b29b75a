//! Secondary slivers as quilt columns: a patch read on a cold quilt fetches only the index
//! columns and the patch's own (issue 16), each verified against the quilt's metadata.
//!
//! Secondary sliver `c < ks` is column `c` of the message matrix, exactly `kp` symbols. A column
//! that cannot be had from its owner (offline, a lie, a timeout, a sliver that does not verify)
//! is rebuilt from recovery symbols (SPEC §9 item 6): other nodes each send the symbol `F[i][c]`
//! of every primary sliver `i` they hold, with its Merkle proof against `primary_hash[i]`; once
//! `kp` symbols from distinct rows verified, the primary code decodes the column, which is then
//! verified against `secondary_hash` like a fetched sliver. Nodes are asked in waves just large
//! enough (by shard count) to cover the symbols still missing, the biggest first, each node at
//! most once per column, so a healthy network costs `ceil(kp / shards per node)` requests.
//! Only if that fails too does the read fail with `Unavailable`; the caller then falls back to
//! a whole-quilt fill.

use super::{Filler, ReadError};
use crate::nodes::Topology;
use bytes::Bytes;
use codec::quilt;
use codec::recovery::{self, VerifiedRecoverySymbol};
use codec::{SliverKind, VerifiedMetadata};
use std::collections::HashSet;
use std::sync::Arc;

/// Bytes of one recovery symbol on the wire beyond its data: axis, indices, lengths, and a
/// proof of at most 16 nodes of 33 bytes.
const SYMBOL_OVERHEAD: usize = 16 + 16 * 33;

impl Filler {
    /// Columns `columns` of the blob `meta` describes, each from its secondary sliver (or,
    /// when its owner fails, rebuilt from recovery symbols), verified; in the order asked.
    pub async fn read_columns(
        &self,
        meta: &Arc<VerifiedMetadata>,
        columns: &[u16],
    ) -> Result<Vec<(u16, Bytes)>, ReadError> {
        let topology = self.read_topology(meta.blob_id()).await;
        let mut tasks = tokio::task::JoinSet::new();
        for (at, &column) in columns.iter().enumerate() {
            let topology = topology.clone();
            let meta = meta.clone();
            let filler = self.clone();
            tasks.spawn(async move {
                let data = filler.column(&topology, &meta, column).await?;
                Ok::<_, String>((at, column, data))
            });
        }
        let mut out: Vec<Option<(u16, Bytes)>> = vec![None; columns.len()];
        while let Some(joined) = tasks.join_next().await {
            let (at, column, data) = joined
                .map_err(|e| ReadError::Internal(format!("column task failed: {e}")))?
                .map_err(ReadError::Unavailable)?;
            out[at] = Some((column, data));
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Column `column`, from its owner, else rebuilt from recovery symbols.
    async fn column(
        &self,
        topology: &Arc<Topology>,
        meta: &Arc<VerifiedMetadata>,
        column: u16,
    ) -> Result<Bytes, String> {
        let why = match self.fetch_column(topology, meta, column).await {
            Ok(data) => return Ok(data),
            Err(why) => why,
        };
        let blob_id = meta.blob_id();
        let pair = SliverKind::Secondary.pair_index(column, meta.config().n_shards());
        let owner = topology.node_for_pair(&blob_id, pair);
        tracing::info!(%blob_id, column, reason = %why, "a column's owner failed: rebuilding it from recovery symbols");
        match self.recover_column(topology, meta, column, owner).await {
            Ok(data) => {
                self.inner.telemetry.sliver_recovery("recovered");
                Ok(data)
            }
            Err(e) => {
                self.inner.telemetry.sliver_recovery("failed");
                Err(format!("{why}; recovery failed: {e}"))
            }
        }
    }

    /// The secondary sliver of `column` from the node holding it, verified.
    async fn fetch_column(
        &self,
        topology: &Topology,
        meta: &Arc<VerifiedMetadata>,
        column: u16,
    ) -> Result<Bytes, String> {
        let config = *meta.config();
        let n = config.n_shards();
        let limit = config.secondary_sliver_len(meta.symbol_size()) + 9;
        let pair = SliverKind::Secondary.pair_index(column, n);
        self.inner.telemetry.secondary_sliver_requests.increment(1);
        let body = self
            .inner
            .client
            .sliver(
                topology,
                &meta.blob_id(),
                pair,
                SliverKind::Secondary,
                limit,
                self.inner.config.sliver_timeout,
            )
            .await
            .map_err(|e| format!("column {column}: {e}"))?;
        self.inner
            .telemetry
            .upstream_bytes
            .increment(body.len() as u64);
        let sliver = codec::bcs::decode_sliver(&body, SliverKind::Secondary)
            .map_err(|e| format!("column {column}: {e}"))?;
        if sliver.index != column {
            return Err(format!("asked for column {column}, got {}", sliver.index));
        }
        let meta = meta.clone();
        // The check the disk tier's scrub makes on a cached patch's columns too.
        let verified =
            tokio::task::spawn_blocking(move || quilt::verify_column(&meta, column, sliver.data))
                .await
                .map_err(|e| format!("verification task failed: {e}"))?
                .map_err(|e| format!("column {column}: {e}"))?;
        Ok(verified.into_inner().data)
    }

    /// Rebuild `column` from the recovery symbols of nodes other than `skip` (its failed owner).
    async fn recover_column(
        &self,
        topology: &Arc<Topology>,
        meta: &Arc<VerifiedMetadata>,
        column: u16,
        skip: usize,
    ) -> Result<Bytes, String> {
        let kp = usize::from(meta.config().n_primary_source_symbols());
        let n = usize::from(meta.config().n_shards());
        let mut candidates: Vec<usize> = (0..topology.node_count())
            .filter(|&i| i != skip && topology.weight(i) > 0)
            .collect();
        candidates.sort_by_key(|&i| (std::cmp::Reverse(topology.weight(i)), i));
        let mut candidates = candidates.into_iter();
        let mut symbols: Vec<VerifiedRecoverySymbol> = Vec::with_capacity(kp);
        let mut rows: HashSet<u16> = HashSet::with_capacity(kp);
        let mut failures = Vec::new();
        while rows.len() < kp {
            // The next wave: just enough shards to cover the rows still missing.
            let need = kp - rows.len();
            let mut wave = Vec::new();
            let mut covered = 0;
            while covered < need {
                let Some(node) = candidates.next() else { break };
                covered += usize::from(topology.weight(node));
                wave.push(node);
            }
            if wave.is_empty() {
                return Err(format!(
                    "{} of {kp} symbols verified after asking every node ({})",
                    rows.len(),
                    failures.join("; ")
                ));
            }
            let mut tasks = tokio::task::JoinSet::new();
            for node in wave {
                let topology = topology.clone();
                let meta = meta.clone();
                let filler = self.clone();
                tasks.spawn(async move {
                    let result = filler.node_symbols(&topology, &meta, node, column, n).await;
                    (node, result)
                });
            }
            while let Some(joined) = tasks.join_next().await {
                let (node, result) = joined.map_err(|e| format!("recovery task failed: {e}"))?;
                match result {
                    Ok(got) => {
                        for symbol in got {
                            if rows.insert(symbol.source_index) {
                                symbols.push(symbol);
                            }
                        }
                    }
                    Err(e) => failures.push(format!("node {node}: {e}")),
                }
            }
        }
        let meta = meta.clone();
        let rebuilt = tokio::task::spawn_blocking(move || {
            recovery::rebuild_sliver(&meta, SliverKind::Secondary, column, &symbols)
        })
        .await
        .map_err(|e| format!("rebuild task failed: {e}"))?
        .map_err(|e| e.to_string())?;
        Ok(rebuilt.into_inner().data)
    }

    /// The recovery symbols `node` sends for `column`, the ones that verify.
    async fn node_symbols(
        &self,
        topology: &Topology,
        meta: &Arc<VerifiedMetadata>,
        node: usize,
        column: u16,
        n: usize,
    ) -> Result<Vec<VerifiedRecoverySymbol>, String> {
        // One symbol per shard; some slack for a node that gained shards since the committee
        // this read uses.
        let weight = usize::from(topology.weight(node));
        let most = (weight + weight / 2 + 1).min(n);
        let limit = most * (usize::from(meta.symbol_size()) + SYMBOL_OVERHEAD) + 8;
        self.inner.telemetry.recovery_symbol_request();
        let body = self
            .inner
            .client
            .recovery_symbols(
                topology,
                node,
                &meta.blob_id(),
                column,
                SliverKind::Secondary,
                limit,
                self.inner.config.sliver_timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
        self.inner
            .telemetry
            .upstream_bytes
            .increment(body.len() as u64);
        let meta = meta.clone();
        let (verified, rejected) = tokio::task::spawn_blocking(move || {
            let symbols = recovery::decode_symbols(&body, most).map_err(|e| e.to_string())?;
            let total = symbols.len();
            let verified: Vec<_> = symbols
                .into_iter()
                .filter_map(|s| {
                    recovery::verify_symbol(&meta, s, SliverKind::Secondary, column).ok()
                })
                .collect();
            let rejected = total - verified.len();
            Ok::<_, String>((verified, rejected))
        })
        .await
        .map_err(|e| format!("verification task failed: {e}"))??;
        if rejected > 0 {
            self.inner.telemetry.recovery_symbols_rejected(rejected);
        }
        Ok(verified)
    }
}
