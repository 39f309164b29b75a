//! Walrus's RS2 encoding, byte for byte: committee parameters, Blob IDs, slivers, metadata,
//! verification, decoding and the BCS wire formats (see `SPEC.md` in the shared reference).
//!
//! Pure computation: no sockets, no files. Guarantees:
//! * output is identical to Walrus's `walrus-core` (checked against its vectors);
//! * nothing panics on untrusted input (BCS bodies, Blob ID text, slivers, metadata);
//! * a [`VerifiedSliver`] exists only after its Merkle root matched [`VerifiedMetadata`], which
//!   exists only after its hashes matched the Blob ID, so [`decode`] never sees unverified bytes.
//!
//! CPU-heavy work (Reed-Solomon, BLAKE2b) is parallelized with rayon; call it off any async
//! reactor.

pub mod bcs;
mod blob_id;
mod config;
mod decode;
mod encode;
mod error;
pub mod merkle;
mod metadata;
pub mod quilt;
pub mod recovery;
mod rs;
mod sliver;

pub use blob_id::{BlobId, BlobIdParseError};
pub use config::{EncodingConfig, MAX_SYMBOL_SIZE};
pub use decode::{decode, ConsistencyCheck, DecodedBlob};
pub use encode::{compute_metadata, encode, EncodedBlob};
pub use error::{BcsError, CodecError, SliverError};
pub use metadata::{BlobMetadata, SliverPairHashes, VerifiedMetadata, RS2};
pub use sliver::{Sliver, SliverKind, VerifiedSliver};

/// The Blob ID of `blob` for a committee of `n_shards` shards.
pub fn blob_id(n_shards: u16, blob: &[u8]) -> Result<BlobId, CodecError> {
    Ok(compute_metadata(&EncodingConfig::new(n_shards)?, blob)?.blob_id())
}
