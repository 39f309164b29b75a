//! The blob cache: holds verified blobs only, bounded in bytes.
//!
//! Today one tier, in memory (moka, weighed by blob length, TinyLFU admission). Callers see
//! [`BlobCache::get`] / [`BlobCache::insert`] and a [`Tier`] for `X-Cache`, so a disk tier can
//! slot in behind the same surface. A [`CachedBlob`] can only be built by the fill from verified
//! rows, and holds them as shared [`Bytes`]: serving a hit clones reference counts, never blob
//! bytes. The verified-metadata cache lives here too, so ranges, `HEAD` and fills of one blob
//! share one metadata fetch.

use bytes::Bytes;
use codec::{BlobId, VerifiedMetadata};
use moka::future::Cache;
use std::sync::Arc;

/// A whole verified blob as the rows it was filled from (each a slice of a sliver buffer).
#[derive(Clone, Debug)]
pub struct CachedBlob {
    chunks: Arc<[Bytes]>,
    len: u64,
}

impl CachedBlob {
    /// Only the fill builds these, from rows it verified.
    pub(crate) fn from_verified_rows(chunks: Vec<Bytes>) -> Self {
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        Self {
            chunks: chunks.into(),
            len,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Zero-copy slices covering bytes `[start, end)`; `end` is clamped to the blob length.
    pub fn slices(&self, start: u64, end: u64) -> Vec<Bytes> {
        let end = end.min(self.len);
        let mut out = Vec::new();
        let mut offset = 0u64;
        for chunk in self.chunks.iter() {
            let chunk_end = offset + chunk.len() as u64;
            if chunk_end > start && offset < end {
                let from = start.saturating_sub(offset) as usize;
                let to = (end.min(chunk_end) - offset) as usize;
                out.push(chunk.slice(from..to));
            }
            if chunk_end >= end {
                break;
            }
            offset = chunk_end;
        }
        out
    }
}

/// Where a hit came from (the `X-Cache` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Memory,
}

impl Tier {
    pub fn header_value(&self) -> &'static str {
        match self {
            Tier::Memory => "hit",
        }
    }
}

/// Verified blobs, bounded in bytes.
#[derive(Clone)]
pub struct BlobCache {
    memory: Cache<BlobId, CachedBlob>,
    /// Blobs longer than this are served but not kept, so one huge blob cannot flush the rest.
    max_object: u64,
}

impl BlobCache {
    pub fn new(capacity_bytes: u64, max_object: u64) -> Self {
        let memory = Cache::builder()
            .max_capacity(capacity_bytes)
            // Weights are u32; blobs over 4 GiB are never admitted (see `insert`).
            .weigher(|_, blob: &CachedBlob| u32::try_from(blob.len().max(1)).unwrap_or(u32::MAX))
            .build();
        Self {
            memory,
            max_object: max_object.min(u64::from(u32::MAX)),
        }
    }

    pub async fn get(&self, id: &BlobId) -> Option<(CachedBlob, Tier)> {
        self.memory.get(id).await.map(|b| (b, Tier::Memory))
    }

    /// Keep a verified blob if it fits the per-object limit; true if offered to the tier.
    pub async fn insert(&self, id: BlobId, blob: CachedBlob) -> bool {
        if blob.len() > self.max_object {
            return false;
        }
        self.memory.insert(id, blob).await;
        true
    }

    /// Bytes currently held (approximate: moka applies writes in batches).
    pub fn weighted_size(&self) -> u64 {
        self.memory.weighted_size()
    }

    pub fn entry_count(&self) -> u64 {
        self.memory.entry_count()
    }
}

/// Verified metadata by Blob ID, bounded in bytes; loads are single-flight.
#[derive(Clone)]
pub struct MetadataCache {
    entries: Cache<BlobId, Arc<VerifiedMetadata>>,
}

impl MetadataCache {
    pub fn new(capacity_bytes: u64) -> Self {
        let entries = Cache::builder()
            .max_capacity(capacity_bytes)
            // 66 bytes of hashes per shard, plus the struct itself.
            .weigher(|_, m: &Arc<VerifiedMetadata>| {
                (m.metadata().hashes.len() as u32).saturating_mul(66) + 128
            })
            .build();
        Self { entries }
    }

    /// The cached metadata, or the result of `load`; concurrent callers share one load, and
    /// errors are not cached.
    pub async fn get_or_load<E, F>(&self, id: BlobId, load: F) -> Result<Arc<VerifiedMetadata>, E>
    where
        F: std::future::Future<Output = Result<Arc<VerifiedMetadata>, E>>,
        E: Clone + Send + Sync + 'static,
    {
        self.entries
            .try_get_with(id, load)
            .await
            .map_err(|e: Arc<E>| (*e).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob() -> CachedBlob {
        CachedBlob::from_verified_rows(vec![
            Bytes::from_static(b"abcd"),
            Bytes::from_static(b"efgh"),
            Bytes::from_static(b"ij"),
        ])
    }

    fn joined(parts: Vec<Bytes>) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn slices_cover_exactly_the_range() {
        let b = blob();
        assert_eq!(b.len(), 10);
        let all = b"abcdefghij";
        for start in 0..=10u64 {
            for end in start..=12u64 {
                let got = joined(b.slices(start, end));
                let e = end.min(10) as usize;
                assert_eq!(got, &all[start as usize..e.max(start as usize)]);
            }
        }
        assert!(b.slices(4, 8).iter().all(|s| !s.is_empty()));
    }

    #[tokio::test]
    async fn oversized_blobs_are_not_admitted() {
        let cache = BlobCache::new(1 << 20, 5);
        let id = BlobId([1; 32]);
        assert!(!cache.insert(id, blob()).await);
        assert!(cache.get(&id).await.is_none());
        let small = CachedBlob::from_verified_rows(vec![Bytes::from_static(b"xy")]);
        assert!(cache.insert(id, small).await);
        assert_eq!(cache.get(&id).await.unwrap().0.len(), 2);
    }
}
