//! Errors of the codec, named in the caller's words: what was wrong with the input.

use crate::blob_id::BlobId;

/// Everything that can go wrong when encoding, verifying or decoding Walrus data.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("n_shards must be at least 4 (got {0}): with fewer shards the secondary code has no recovery symbols")]
    TooFewShards(u16),
    #[error("n_shards = {0} is not supported by the Reed-Solomon code")]
    UnsupportedShardCount(u16),
    #[error("blob of {len} bytes exceeds the maximum of {max} bytes for this committee size")]
    BlobTooLarge { len: u64, max: u64 },
    #[error("unsupported encoding type {0} (only RS2 = 1 is supported)")]
    UnsupportedEncodingType(u8),
    #[error("metadata has {got} sliver-pair hashes, expected one per shard ({expected})")]
    WrongHashCount { expected: usize, got: usize },
    #[error("metadata does not match the Blob ID: it hashes to {computed}, expected {expected}")]
    BlobIdMismatch { expected: BlobId, computed: BlobId },
    #[error("invalid sliver: {0}")]
    InvalidSliver(#[from] SliverError),
    #[error("not enough distinct verified slivers to decode: have {have}, need {need}")]
    NotEnoughSlivers { have: usize, need: usize },
    #[error("the blob is inconsistently encoded: {0}")]
    InconsistentBlob(String),
    #[error("malformed BCS: {0}")]
    Bcs(#[from] BcsError),
    #[error("Reed-Solomon failure: {0}")]
    ReedSolomon(String),
}

/// Why a sliver failed verification against the blob's metadata.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SliverError {
    #[error("sliver index {index} is out of range for {n_shards} shards")]
    IndexOutOfRange { index: u16, n_shards: u16 },
    #[error(
        "sliver index {got} does not belong to sliver pair {pair} (expected index {expected})"
    )]
    WrongIndex { pair: u16, expected: u16, got: u16 },
    #[error("symbol size {got} does not match the {expected} implied by the blob length")]
    WrongSymbolSize { expected: u16, got: u16 },
    #[error("sliver holds {got} bytes, expected {expected}")]
    WrongLength { expected: usize, got: usize },
    #[error("sliver's Merkle root does not match the metadata's hash for pair {pair}")]
    MerkleMismatch { pair: u16 },
}

/// Why bytes could not be decoded as BCS.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BcsError {
    #[error("unexpected end of input: needed {needed} more bytes at offset {offset}")]
    UnexpectedEnd { offset: usize, needed: usize },
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    #[error("malformed ULEB128 length at offset {0}")]
    BadLength(usize),
    #[error("length {len} at offset {offset} exceeds the limit of {limit}")]
    LengthTooLarge { offset: usize, len: u64, limit: u64 },
    #[error("unknown {what} variant {variant}")]
    UnknownVariant { what: &'static str, variant: u64 },
    #[error("empty Merkle node in metadata (never produced for real blobs)")]
    EmptyNode,
}
