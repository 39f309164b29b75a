//! Encoding a blob into metadata and slivers (SPEC §2–§6).
//!
//! The expanded `n × n` matrix is never held whole. Recovery rows `kp..n` come from one batched
//! primary-code pass over the message rows; then every row is expanded with the secondary code
//! and its `n` leaves hashed once. Each leaf hash serves both the row tree (primary hash) and the
//! column tree (secondary hash), so the matrix is hashed once, not twice as Walrus does.

use crate::config::{Axis, EncodingConfig};
use crate::error::CodecError;
use crate::merkle::{self, Node};
use crate::metadata::{BlobMetadata, SliverPairHashes, VerifiedMetadata, RS2};
use crate::rs;
use crate::sliver::{Sliver, SliverKind, VerifiedSliver};
use bytes::Bytes;
use rayon::prelude::*;

/// A blob encoded for storage: its metadata and all `n` primary and `n` secondary slivers,
/// each vector indexed by sliver index.
#[derive(Debug, Clone)]
pub struct EncodedBlob {
    pub metadata: VerifiedMetadata,
    pub primary: Vec<VerifiedSliver>,
    pub secondary: Vec<VerifiedSliver>,
}

impl EncodedBlob {
    /// The two slivers of sliver pair `pair` (primary `pair`, secondary `n-1-pair`).
    pub fn pair(&self, pair: u16) -> Option<(&VerifiedSliver, &VerifiedSliver)> {
        let n = self.primary.len();
        let p = usize::from(pair);
        (p < n).then(|| (&self.primary[p], &self.secondary[n - 1 - p]))
    }
}

/// Encode `blob` for a committee of `config.n_shards()` shards.
pub fn encode(config: &EncodingConfig, blob: &[u8]) -> Result<EncodedBlob, CodecError> {
    let (metadata, slivers) = run(config, blob, true)?;
    let (primary, secondary) = slivers.expect("slivers were requested");
    Ok(EncodedBlob {
        metadata,
        primary,
        secondary,
    })
}

/// Compute only the metadata (and so the Blob ID) of `blob`, keeping no slivers.
pub fn compute_metadata(
    config: &EncodingConfig,
    blob: &[u8],
) -> Result<VerifiedMetadata, CodecError> {
    Ok(run(config, blob, false)?.0)
}

type Slivers = (Vec<VerifiedSliver>, Vec<VerifiedSliver>);

struct ExpandedRow {
    root: Node,
    leaves: Vec<Node>,
    /// The row's `f` secondary-code recovery symbols, kept for the secondary slivers.
    extension: Option<Vec<u8>>,
}

fn run(
    config: &EncodingConfig,
    blob: &[u8],
    keep: bool,
) -> Result<(VerifiedMetadata, Option<Slivers>), CodecError> {
    let symbol_size = config.symbol_size(blob.len() as u64)?;
    let ss = usize::from(symbol_size);
    let n = usize::from(config.n_shards());
    let kp = usize::from(config.n_primary_source_symbols());
    let ks = usize::from(config.n_secondary_source_symbols());
    let row_len = ks * ss;

    let mut matrix = vec![0u8; kp * row_len];
    matrix[..blob.len()].copy_from_slice(blob);

    // Rows kp..n: the primary code over all ks columns at once.
    let wide: Vec<Vec<u8>> = matrix
        .par_chunks(row_len)
        .map(|row| rs::to_wide(row, ss))
        .collect();
    let wide_refs: Vec<&[u8]> = wide.iter().map(Vec::as_slice).collect();
    let recovery_rows: Vec<Vec<u8>> = rs::expand_wide(config, Axis::Primary, &wide_refs)?
        .into_par_iter()
        .map(|w| {
            let mut row = vec![0u8; w.len()];
            rs::from_wide(&w, ss, &mut row);
            row
        })
        .collect();
    drop(wide);

    let rows: Vec<&[u8]> = matrix
        .chunks(row_len)
        .chain(recovery_rows.iter().map(Vec::as_slice))
        .collect();
    let expanded: Vec<ExpandedRow> = rows
        .par_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut full = Vec::with_capacity(n * ss);
            full.extend_from_slice(row);
            rs::expand_into(config, Axis::Secondary, row, ss, &mut full)?;
            let mut leaves = vec![merkle::EMPTY_NODE; n];
            merkle::leaf_hashes(&full, ss, &mut leaves);
            Ok(ExpandedRow {
                root: merkle::root_from_leaf_hashes(&leaves),
                leaves,
                extension: (keep && i < kp).then(|| full[row_len..].to_vec()),
            })
        })
        .collect::<Result<_, CodecError>>()?;

    // Pair p's secondary hash is the root over column n-1-p, whose leaves the rows already hashed.
    let hashes: Vec<SliverPairHashes> = (0..n)
        .into_par_iter()
        .map(|p| {
            let column: Vec<Node> = expanded.iter().map(|row| row.leaves[n - 1 - p]).collect();
            SliverPairHashes {
                primary: expanded[p].root,
                secondary: merkle::root_from_leaf_hashes(&column),
            }
        })
        .collect();
    let metadata = VerifiedMetadata::from_encoder(
        BlobMetadata {
            encoding_type: RS2,
            unencoded_length: blob.len() as u64,
            hashes,
        },
        *config,
        symbol_size,
    );
    if !keep {
        return Ok((metadata, None));
    }

    let make = |kind, index: usize, data: Bytes| {
        VerifiedSliver::new_unchecked(
            metadata.blob_id(),
            Sliver {
                kind,
                index: index as u16,
                symbol_size,
                data,
            },
        )
    };
    let secondary: Vec<VerifiedSliver> = (0..n)
        .map(|j| {
            let mut data = Vec::with_capacity(kp * ss);
            for (r, row) in expanded.iter().take(kp).enumerate() {
                let symbol = if j < ks {
                    &matrix[r * row_len + j * ss..r * row_len + (j + 1) * ss]
                } else {
                    let ext = row
                        .extension
                        .as_ref()
                        .expect("extensions kept for source rows");
                    &ext[(j - ks) * ss..(j - ks + 1) * ss]
                };
                data.extend_from_slice(symbol);
            }
            make(SliverKind::Secondary, j, Bytes::from(data))
        })
        .collect();
    let source = Bytes::from(matrix);
    let primary: Vec<VerifiedSliver> = (0..kp)
        .map(|i| source.slice(i * row_len..(i + 1) * row_len))
        .chain(recovery_rows.into_iter().map(Bytes::from))
        .enumerate()
        .map(|(i, data)| make(SliverKind::Primary, i, data))
        .collect();
    Ok((metadata, Some((primary, secondary))))
}
