//! Decoding a blob from verified slivers, with Walrus's consistency checks (SPEC §9.4–§9.5).

use crate::config::{Axis, EncodingConfig};
use crate::encode::compute_metadata;
use crate::error::CodecError;
use crate::metadata::VerifiedMetadata;
use crate::rs;
use crate::sliver::{expanded_root, SliverKind, VerifiedSliver};
use bytes::Bytes;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// How much of the encoding to re-check after decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsistencyCheck {
    /// Re-hash every systematic row that was reconstructed rather than fetched (Walrus's default).
    #[default]
    Default,
    /// Re-encode the whole blob and require the same Blob ID: proves the entire encoding.
    Strict,
    /// Only the per-sliver Merkle checks already done.
    Skip,
}

/// A decoded blob as a sequence of chunks; when the systematic slivers were at hand the chunks
/// are slices of the sliver buffers themselves (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBlob {
    chunks: Vec<Bytes>,
    len: u64,
}

impl DecodedBlob {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// The blob as one buffer (copies unless it is a single chunk).
    pub fn into_bytes(self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.into_iter().next().expect("one chunk"),
            _ => Bytes::from(self.chunks.concat()),
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks.concat()
    }
}

/// Decode the blob of `meta` from slivers verified against it: any `kp` distinct primary
/// slivers or any `ks` distinct secondary slivers. Slivers verified for another blob are errors.
pub fn decode(
    meta: &VerifiedMetadata,
    slivers: Vec<VerifiedSliver>,
    check: ConsistencyCheck,
) -> Result<DecodedBlob, CodecError> {
    let config = meta.config();
    let mut primary = BTreeMap::new();
    let mut secondary = BTreeMap::new();
    for sliver in slivers {
        if sliver.blob_id() != meta.blob_id() || sliver.symbol_size != meta.symbol_size() {
            return Err(CodecError::InconsistentBlob(format!(
                "a sliver verified for blob {} was given to decode blob {}",
                sliver.blob_id(),
                meta.blob_id()
            )));
        }
        let sliver = sliver.into_inner();
        match sliver.kind {
            SliverKind::Primary => primary.insert(sliver.index, sliver.data),
            SliverKind::Secondary => secondary.insert(sliver.index, sliver.data),
        };
    }
    let kp = usize::from(config.n_primary_source_symbols());
    let ks = usize::from(config.n_secondary_source_symbols());
    let rows = if primary.len() >= kp {
        rows_from_primary(meta, primary, check)?
    } else if secondary.len() >= ks {
        rows_from_secondary(meta, secondary, check)?
    } else if secondary.len() > primary.len() {
        return Err(CodecError::NotEnoughSlivers {
            have: secondary.len(),
            need: ks,
        });
    } else {
        return Err(CodecError::NotEnoughSlivers {
            have: primary.len(),
            need: kp,
        });
    };
    let blob = assemble(meta, rows);
    if check == ConsistencyCheck::Strict {
        let recomputed = compute_metadata(config, &blob.to_vec())?.blob_id();
        if recomputed != meta.blob_id() {
            return Err(CodecError::InconsistentBlob(format!(
                "re-encoding the decoded blob gives Blob ID {recomputed}, not {}",
                meta.blob_id()
            )));
        }
    }
    Ok(blob)
}

/// Truncate the `kp` rows to the blob length.
fn assemble(meta: &VerifiedMetadata, rows: Vec<Bytes>) -> DecodedBlob {
    let len = meta.unencoded_length();
    let mut remaining = len as usize;
    let chunks = rows
        .into_iter()
        .map_while(|row| {
            let take = row.len().min(remaining);
            remaining -= take;
            (take > 0).then(|| row.slice(..take))
        })
        .collect();
    DecodedBlob { chunks, len }
}

/// Re-check reconstructed systematic rows against their primary hashes, as a reader that
/// fetched them would (SPEC §9.5 Default). Bytes past the blob's end are zero in a real encoding,
/// so they are zeroed before hashing: a writer's nonzero padding shows up as a mismatch.
fn check_rows(meta: &VerifiedMetadata, rows: &[Bytes], which: &[usize]) -> Result<(), CodecError> {
    let config = meta.config();
    let ss = usize::from(meta.symbol_size());
    let row_len = config.primary_sliver_len(meta.symbol_size());
    let len = meta.unencoded_length() as usize;
    which.par_iter().try_for_each(|&i| {
        let start = i * row_len;
        let mut row = rows[i].to_vec();
        if start + row_len > len {
            row[len.saturating_sub(start)..].fill(0);
        }
        let root = expanded_root(config, SliverKind::Primary, &row, ss)?;
        if root != meta.metadata().hashes[i].primary {
            return Err(CodecError::InconsistentBlob(format!(
                "reconstructed systematic primary sliver {i} does not match its hash"
            )));
        }
        Ok(())
    })
}

fn rows_from_primary(
    meta: &VerifiedMetadata,
    slivers: BTreeMap<u16, Bytes>,
    check: ConsistencyCheck,
) -> Result<Vec<Bytes>, CodecError> {
    let config = meta.config();
    let kp = usize::from(config.n_primary_source_symbols());
    let ss = usize::from(meta.symbol_size());
    // Lowest indices first: the systematic slivers need no decoding.
    let chosen: Vec<(usize, Bytes)> = slivers
        .into_iter()
        .take(kp)
        .map(|(i, d)| (usize::from(i), d))
        .collect();
    if chosen.iter().all(|(i, _)| *i < kp) {
        return Ok(chosen.into_iter().map(|(_, d)| d).collect());
    }
    let wide: Vec<(usize, Vec<u8>)> = chosen
        .par_iter()
        .map(|(i, d)| (*i, rs::to_wide(d, ss)))
        .collect();
    let refs: Vec<(usize, &[u8])> = wide.iter().map(|(i, w)| (*i, w.as_slice())).collect();
    let decoded = rs::decode_wide(config, Axis::Primary, &refs)?;
    let present: BTreeMap<usize, Bytes> = chosen.into_iter().filter(|(i, _)| *i < kp).collect();
    let rows: Vec<Bytes> = decoded
        .into_par_iter()
        .enumerate()
        .map(|(i, w)| match present.get(&i) {
            Some(d) => d.clone(),
            None => {
                let mut row = vec![0u8; w.len()];
                rs::from_wide(&w, ss, &mut row);
                Bytes::from(row)
            }
        })
        .collect();
    if check == ConsistencyCheck::Default {
        let rebuilt: Vec<usize> = (0..kp).filter(|i| !present.contains_key(i)).collect();
        check_rows(meta, &rows, &rebuilt)?;
    }
    Ok(rows)
}

fn rows_from_secondary(
    meta: &VerifiedMetadata,
    slivers: BTreeMap<u16, Bytes>,
    check: ConsistencyCheck,
) -> Result<Vec<Bytes>, CodecError> {
    let config: &EncodingConfig = meta.config();
    let kp = usize::from(config.n_primary_source_symbols());
    let ks = usize::from(config.n_secondary_source_symbols());
    let ss = usize::from(meta.symbol_size());
    let chosen: Vec<(usize, Bytes)> = slivers
        .into_iter()
        .take(ks)
        .map(|(i, d)| (usize::from(i), d))
        .collect();
    let columns: Vec<Vec<u8>> = if chosen.iter().all(|(i, _)| *i < ks) {
        chosen.into_iter().map(|(_, d)| d.to_vec()).collect()
    } else {
        let wide: Vec<(usize, Vec<u8>)> = chosen
            .par_iter()
            .map(|(i, d)| (*i, rs::to_wide(d, ss)))
            .collect();
        let refs: Vec<(usize, &[u8])> = wide.iter().map(|(i, w)| (*i, w.as_slice())).collect();
        rs::decode_wide(config, Axis::Secondary, &refs)?
            .into_par_iter()
            .map(|w| {
                let mut column = vec![0u8; w.len()];
                rs::from_wide(&w, ss, &mut column);
                column
            })
            .collect()
    };
    // Transpose: row r is symbol r of every column, in column order.
    let rows: Vec<Bytes> = (0..kp)
        .into_par_iter()
        .map(|r| {
            let mut row = Vec::with_capacity(ks * ss);
            for column in &columns {
                row.extend_from_slice(&column[r * ss..(r + 1) * ss]);
            }
            Bytes::from(row)
        })
        .collect();
    if check == ConsistencyCheck::Default {
        check_rows(meta, &rows, &(0..kp).collect::<Vec<_>>())?;
    }
    Ok(rows)
}
