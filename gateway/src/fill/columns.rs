//! Secondary slivers as quilt columns: a patch read on a cold quilt fetches only the index
//! columns and the patch's own (issue 16), each verified against the quilt's metadata.
//!
//! Secondary sliver `c < ks` is column `c` of the message matrix, exactly `kp` symbols. A column
//! that cannot be had (owner offline, a lie, a timeout) fails the read with `Unavailable`; the
//! caller then falls back to a whole-quilt fill, which recovers it.

use super::{Filler, ReadError};
use bytes::Bytes;
use codec::{SliverKind, VerifiedMetadata};
use std::sync::Arc;

impl Filler {
    /// Columns `columns` of the blob `meta` describes, each from its secondary sliver, verified;
    /// in the order asked.
    pub async fn read_columns(
        &self,
        meta: &Arc<VerifiedMetadata>,
        columns: &[u16],
    ) -> Result<Vec<(u16, Bytes)>, ReadError> {
        let topology = self.read_topology(meta.blob_id()).await;
        let config = *meta.config();
        let n = config.n_shards();
        let data_len = config.secondary_sliver_len(meta.symbol_size());
        let limit = data_len + 9;
        let mut tasks = tokio::task::JoinSet::new();
        for (at, &column) in columns.iter().enumerate() {
            let topology = topology.clone();
            let meta = meta.clone();
            let filler = self.clone();
            tasks.spawn(async move {
                let this = &filler;
                let pair = SliverKind::Secondary.pair_index(column, n);
                this.inner.telemetry.secondary_sliver_requests.increment(1);
                let body = this
                    .inner
                    .client
                    .sliver(
                        &topology,
                        &meta.blob_id(),
                        pair,
                        SliverKind::Secondary,
                        limit,
                        this.inner.config.sliver_timeout,
                    )
                    .await
                    .map_err(|e| format!("column {column}: {e}"))?;
                this.inner
                    .telemetry
                    .upstream_bytes
                    .increment(body.len() as u64);
                let sliver = codec::bcs::decode_sliver(&body, SliverKind::Secondary)
                    .map_err(|e| format!("column {column}: {e}"))?;
                if sliver.index != column {
                    return Err(format!("asked for column {column}, got {}", sliver.index));
                }
                let verified = tokio::task::spawn_blocking(move || meta.verify_sliver(sliver))
                    .await
                    .map_err(|e| format!("verification task failed: {e}"))?
                    .map_err(|e| format!("column {column}: {e}"))?;
                Ok::<_, String>((at, column, verified.into_inner().data))
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
}
