//! Primary and secondary slivers, and their verification against metadata (SPEC §4, §9.3).

use crate::blob_id::BlobId;
use crate::config::{Axis, EncodingConfig};
use crate::error::{CodecError, SliverError};
use crate::merkle;
use crate::metadata::VerifiedMetadata;
use bytes::Bytes;

/// Which half of a sliver pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SliverKind {
    /// Row `i` of the expanded matrix (`ks` symbols); pair `i`.
    Primary,
    /// Column `j` of the expanded matrix (`kp` symbols); pair `n-1-j`.
    Secondary,
}

impl SliverKind {
    /// The lowercase name used in storage-node URL paths.
    pub fn as_str(&self) -> &'static str {
        match self {
            SliverKind::Primary => "primary",
            SliverKind::Secondary => "secondary",
        }
    }

    /// The sliver pair that holds sliver `index` of this kind (the mapping is its own inverse).
    pub fn pair_index(&self, index: u16, n_shards: u16) -> u16 {
        match self {
            SliverKind::Primary => index,
            SliverKind::Secondary => n_shards.saturating_sub(1).saturating_sub(index),
        }
    }

    /// The sliver index of this kind stored in pair `pair`.
    pub fn sliver_index(&self, pair: u16, n_shards: u16) -> u16 {
        self.pair_index(pair, n_shards)
    }

    /// Symbols in a sliver of this kind.
    pub fn symbol_count(&self, config: &EncodingConfig) -> u16 {
        match self {
            SliverKind::Primary => config.n_secondary_source_symbols(),
            SliverKind::Secondary => config.n_primary_source_symbols(),
        }
    }

    /// The code that expands a sliver of this kind to `n` symbols (the orthogonal one).
    pub(crate) fn expanding_axis(&self) -> Axis {
        match self {
            SliverKind::Primary => Axis::Secondary,
            SliverKind::Secondary => Axis::Primary,
        }
    }
}

impl std::str::FromStr for SliverKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "primary" => Ok(SliverKind::Primary),
            "secondary" => Ok(SliverKind::Secondary),
            other => Err(format!(
                "unknown sliver type {other:?} (expected primary or secondary)"
            )),
        }
    }
}

/// A sliver as received: untrusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sliver {
    pub kind: SliverKind,
    /// The sliver index (not the pair index): for a secondary sliver of pair p it is `n-1-p`.
    pub index: u16,
    pub symbol_size: u16,
    pub data: Bytes,
}

impl Sliver {
    pub fn pair_index(&self, n_shards: u16) -> u16 {
        self.kind.pair_index(self.index, n_shards)
    }
}

/// A sliver whose expansion matched the blob's metadata. Only verification and the encoder
/// make these, so decoding can never consume unverified bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSliver {
    sliver: Sliver,
    /// The blob whose metadata this sliver was checked against.
    blob_id: BlobId,
}

impl VerifiedSliver {
    pub(crate) fn new_unchecked(blob_id: BlobId, sliver: Sliver) -> Self {
        Self { sliver, blob_id }
    }

    pub fn blob_id(&self) -> BlobId {
        self.blob_id
    }

    pub fn into_inner(self) -> Sliver {
        self.sliver
    }
}

impl std::ops::Deref for VerifiedSliver {
    type Target = Sliver;
    fn deref(&self) -> &Sliver {
        &self.sliver
    }
}

/// The Merkle root of a sliver's full expansion (its `n` symbols under the orthogonal code).
pub(crate) fn expanded_root(
    config: &EncodingConfig,
    kind: SliverKind,
    data: &[u8],
    ss: usize,
) -> Result<merkle::Node, CodecError> {
    let mut full = Vec::with_capacity(usize::from(config.n_shards()) * ss);
    full.extend_from_slice(data);
    crate::rs::expand_into(config, kind.expanding_axis(), data, ss, &mut full)?;
    Ok(merkle::root_of_symbols(&full, ss))
}

/// The checks every sliver verification makes before hashing (index, symbol size, length); on
/// success the pair, the expected root, the sliver's symbol count and the symbol size.
pub(crate) fn check_shape(
    meta: &VerifiedMetadata,
    sliver: &Sliver,
) -> Result<(u16, merkle::Node, usize, usize), CodecError> {
    let config = meta.config();
    let n = config.n_shards();
    if sliver.index >= n {
        return Err(SliverError::IndexOutOfRange {
            index: sliver.index,
            n_shards: n,
        }
        .into());
    }
    let ss = meta.symbol_size();
    if sliver.symbol_size != ss {
        return Err(SliverError::WrongSymbolSize {
            expected: ss,
            got: sliver.symbol_size,
        }
        .into());
    }
    let k = usize::from(sliver.kind.symbol_count(config));
    let expected_len = k * usize::from(ss);
    if sliver.data.len() != expected_len {
        return Err(SliverError::WrongLength {
            expected: expected_len,
            got: sliver.data.len(),
        }
        .into());
    }
    let (pair, expected) = meta.expected_hash(sliver.kind, sliver.index);
    Ok((pair, expected, k, usize::from(ss)))
}

pub(crate) fn verify(
    meta: &VerifiedMetadata,
    sliver: Sliver,
) -> Result<VerifiedSliver, CodecError> {
    let (pair, expected, _, ss) = check_shape(meta, &sliver)?;
    if expanded_root(meta.config(), sliver.kind, &sliver.data, ss)? != expected {
        return Err(SliverError::MerkleMismatch { pair }.into());
    }
    Ok(VerifiedSliver::new_unchecked(meta.blob_id(), sliver))
}
