//! Blob metadata (per-pair sliver hashes), its root and Blob ID, and verification (SPEC §6).

use crate::blob_id::BlobId;
use crate::config::EncodingConfig;
use crate::error::CodecError;
use crate::merkle::{self, Node};
use crate::sliver::{Sliver, SliverKind, VerifiedSliver};
use rayon::prelude::*;

/// RS2's encoding type byte (variant 1; variant 0 was the retired RaptorQ encoding).
pub const RS2: u8 = 1;

/// The Merkle roots of one sliver pair's two slivers, each over its full expansion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliverPairHashes {
    pub primary: Node,
    pub secondary: Node,
}

/// Metadata as sent on the wire (without a Blob ID): untrusted until verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMetadata {
    /// Always [`RS2`] for metadata that decodes.
    pub encoding_type: u8,
    pub unencoded_length: u64,
    /// One entry per sliver pair, indexed by pair.
    pub hashes: Vec<SliverPairHashes>,
}

impl BlobMetadata {
    /// The Merkle root over `leaf(primary || secondary)` of every pair.
    pub fn root_hash(&self) -> Node {
        let mut input = Vec::with_capacity(self.hashes.len() * 64);
        for h in &self.hashes {
            input.extend_from_slice(&h.primary);
            input.extend_from_slice(&h.secondary);
        }
        let mut leaves = vec![merkle::EMPTY_NODE; self.hashes.len()];
        merkle::leaf_hashes(&input, 64, &mut leaves);
        merkle::root_from_leaf_hashes(&leaves)
    }

    /// The Blob ID these hashes and this length commit to.
    pub fn compute_blob_id(&self) -> BlobId {
        BlobId::from_parts(self.encoding_type, self.unencoded_length, &self.root_hash())
    }
}

/// Metadata checked against its Blob ID and committee size: the only metadata that slivers can
/// be verified against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedMetadata {
    blob_id: BlobId,
    metadata: BlobMetadata,
    config: EncodingConfig,
    symbol_size: u16,
}

impl VerifiedMetadata {
    /// Check `metadata` against `blob_id` for `config` (SPEC §6): encoding type, one hash pair
    /// per shard, a length within the limit, and the recomputed ID.
    pub fn verify(
        blob_id: BlobId,
        metadata: BlobMetadata,
        config: EncodingConfig,
    ) -> Result<Self, CodecError> {
        if metadata.encoding_type != RS2 {
            return Err(CodecError::UnsupportedEncodingType(metadata.encoding_type));
        }
        let n = usize::from(config.n_shards());
        if metadata.hashes.len() != n {
            return Err(CodecError::WrongHashCount {
                expected: n,
                got: metadata.hashes.len(),
            });
        }
        let symbol_size = config.symbol_size(metadata.unencoded_length)?;
        let computed = metadata.compute_blob_id();
        if computed != blob_id {
            return Err(CodecError::BlobIdMismatch {
                expected: blob_id,
                computed,
            });
        }
        Ok(Self {
            blob_id,
            metadata,
            config,
            symbol_size,
        })
    }

    /// Decode a `BlobMetadataWithId` body (as served by a storage node) and verify it against the
    /// Blob ID that was asked for: the ID in the body must be that ID, and the hashes must hash to it.
    pub fn from_bcs(
        requested: BlobId,
        bytes: &[u8],
        config: EncodingConfig,
    ) -> Result<Self, CodecError> {
        let (claimed, metadata) = crate::bcs::decode_metadata_with_id(bytes)?;
        if claimed != requested {
            return Err(CodecError::BlobIdMismatch {
                expected: requested,
                computed: claimed,
            });
        }
        Self::verify(requested, metadata, config)
    }

    /// Built by the encoder, which derived the ID from these very hashes.
    pub(crate) fn from_encoder(
        metadata: BlobMetadata,
        config: EncodingConfig,
        symbol_size: u16,
    ) -> Self {
        Self {
            blob_id: metadata.compute_blob_id(),
            metadata,
            config,
            symbol_size,
        }
    }

    pub fn blob_id(&self) -> BlobId {
        self.blob_id
    }

    pub fn metadata(&self) -> &BlobMetadata {
        &self.metadata
    }

    pub fn config(&self) -> &EncodingConfig {
        &self.config
    }

    pub fn unencoded_length(&self) -> u64 {
        self.metadata.unencoded_length
    }

    pub fn symbol_size(&self) -> u16 {
        self.symbol_size
    }

    /// The hash a sliver's expansion must have.
    pub(crate) fn expected_hash(&self, kind: SliverKind, index: u16) -> (u16, Node) {
        let pair = kind.pair_index(index, self.config.n_shards());
        let hashes = &self.metadata.hashes[usize::from(pair)];
        match kind {
            SliverKind::Primary => (pair, hashes.primary),
            SliverKind::Secondary => (pair, hashes.secondary),
        }
    }

    /// Verify one sliver (SPEC §9.3): index, symbol size, length and Merkle root of its expansion.
    pub fn verify_sliver(&self, sliver: Sliver) -> Result<VerifiedSliver, CodecError> {
        crate::sliver::verify(self, sliver)
    }

    /// Verify many slivers in parallel; each result stands alone.
    pub fn verify_slivers(&self, slivers: Vec<Sliver>) -> Vec<Result<VerifiedSliver, CodecError>> {
        slivers
            .into_par_iter()
            .map(|s| self.verify_sliver(s))
            .collect()
    }
}
