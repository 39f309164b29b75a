//! The blob cache: holds verified blobs only, bounded in bytes.
//!
//! Two tiers behind [`BlobCache::get`] / [`BlobCache::insert`]: memory (moka, weighed by blob
//! length, TinyLFU admission) over an optional disk tier ([`crate::disk`]); a [`Tier`] names
//! where a hit came from for `X-Cache`. A [`CachedBlob`] can only be built by the fill from verified
//! rows, and holds them as shared [`Bytes`]: serving a hit clones reference counts, never blob
//! bytes. The verified-metadata cache lives here too, so ranges, `HEAD` and fills of one blob
//! share one metadata fetch.

use crate::disk::{DiskCache, DiskError, DiskReader};
use crate::memfile::MemFile;
use bytes::Bytes;
use codec::{BlobId, VerifiedMetadata};
use moka::future::Cache;
use std::sync::Arc;

/// A whole verified blob as the rows it was filled from (each a slice of a sliver buffer), or,
/// once the memory tier keeps it, as one sealed memory file ([`MemFile`]) that plain HTTP/1.1
/// responses `sendfile` from.
#[derive(Clone, Debug)]
pub struct CachedBlob {
    chunks: Arc<[Bytes]>,
    len: u64,
    file: Option<Arc<MemFile>>,
    /// The headers of a whole-blob `200` memory hit, built once by the API and shared by every
    /// clone (see [`crate::api::Api::memory_hit`]).
    response_head: Arc<std::sync::OnceLock<http::HeaderMap>>,
}

impl CachedBlob {
    /// Only the fill builds these, from rows it verified.
    pub(crate) fn from_verified_rows(chunks: Vec<Bytes>) -> Self {
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        Self {
            chunks: chunks.into(),
            len,
            file: None,
            response_head: Arc::default(),
        }
    }

    /// The same bytes in a sealed memory file, when the blob is long enough to be worth one and
    /// the file budget allows; otherwise `self` unchanged. Copies the blob once: call it off the
    /// reactor for large blobs.
    fn into_memory_file(self) -> Self {
        if self.file.is_some() || self.len < crate::memfile::MIN_LEN {
            return self;
        }
        match MemFile::from_chunks(&self.chunks) {
            Ok(file) => Self {
                chunks: Arc::from([file.bytes().clone()]),
                len: self.len,
                file: Some(Arc::new(file)),
                response_head: self.response_head,
            },
            Err(e) => {
                tracing::debug!(error = %e, "blob stays in heap memory");
                self
            }
        }
    }

    /// See [`CachedBlob::response_head`]'s field.
    pub fn response_head(&self) -> &std::sync::OnceLock<http::HeaderMap> {
        &self.response_head
    }

    /// The same bytes in one buffer (a copy, for a blob held as several rows). A small blob is
    /// kept so in memory: each row would otherwise be its own HTTP/2 DATA frame and write.
    fn contiguous(self) -> Self {
        if self.chunks.len() <= 1 {
            return self;
        }
        Self {
            chunks: Arc::from([Bytes::from(self.chunks.concat())]),
            len: self.len,
            file: None,
            response_head: self.response_head,
        }
    }

    /// The sealed memory file holding the blob, if it is in one.
    pub fn memory_file(&self) -> Option<&Arc<MemFile>> {
        self.file.as_ref()
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

/// Disk hits up to this long are read whole when opened (every chunk checked) and served from
/// that buffer; longer ones stream from the file chunk by chunk.
const DISK_READ_WHOLE: u64 = 1 << 20;

/// Where a hit came from (the `X-Cache` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Memory,
    Disk,
}

impl Tier {
    pub fn header_value(&self) -> &'static str {
        match self {
            Tier::Memory => "hit-memory",
            Tier::Disk => "hit-disk",
        }
    }
}

/// A cache hit: a buffer (in memory, or read whole from disk: its [`Tier`] says which), or a
/// large blob that streams from disk.
pub enum Hit {
    Memory(CachedBlob, Tier),
    Disk(DiskBlob),
}

/// A blob on the disk tier, too large for memory, already opened: its header, size and chunk
/// table checked out. Its bytes are read, each chunk checked, only as a response streams them.
pub struct DiskBlob {
    reader: DiskReader,
    len: u64,
}

impl DiskBlob {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A reader for bytes `[start, end)`.
    pub fn into_reader(self, start: u64, end: u64) -> Result<DiskReader, DiskError> {
        self.reader.restrict(start, end)
    }
}

/// Verified blobs in two tiers, each bounded in bytes: memory (moka: weighed by length, with
/// TinyLFU admission, so a scan of cold blobs cannot flush the hot set) over an optional disk
/// tier that survives restarts. Every verified blob is written through to disk; a disk hit small
/// enough for memory is promoted (offered to moka's admission policy) as it is served.
#[derive(Clone)]
pub struct BlobCache {
    memory: Cache<BlobId, CachedBlob>,
    /// Blobs longer than this skip memory (served from disk, or from their fill).
    max_object: u64,
    disk: Option<Arc<DiskCache>>,
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
            disk: None,
        }
    }

    /// Add a disk tier below memory.
    pub fn with_disk(mut self, disk: Arc<DiskCache>) -> Self {
        self.disk = Some(disk);
        self
    }

    pub fn disk(&self) -> Option<&Arc<DiskCache>> {
        self.disk.as_ref()
    }

    /// Whether a blob of `len` bytes can be kept by any tier (memory's per-object limit, or
    /// the disk tier's bound): a fill of a longer one is served but never cached.
    pub fn can_hold(&self, len: u64) -> bool {
        len <= self.max_object
            || self
                .disk
                .as_ref()
                .is_some_and(|disk| len <= disk.effective_capacity())
    }

    /// Look `id` up in the memory tier only.
    pub async fn memory_get(&self, id: &BlobId) -> Option<CachedBlob> {
        self.memory.get(id).await
    }

    /// Look `id` up in memory, then on disk. A disk copy that fails its checks is quarantined by
    /// the disk tier and reported here as a miss, so the caller refills it.
    pub async fn get(&self, id: &BlobId) -> Option<Hit> {
        if let Some(blob) = self.memory.get(id).await {
            return Some(Hit::Memory(blob, Tier::Memory));
        }
        let disk = self.disk.as_ref()?;
        let len = match disk.len_of(id) {
            Some(len) => len,
            // Right after a restart the index is still being rebuilt: look at the file itself.
            None if !disk.index_ready() => {
                let (disk, blob_id) = (disk.clone(), *id);
                tokio::task::spawn_blocking(move || disk.probe(&blob_id))
                    .await
                    .ok()
                    .flatten()?
            }
            None => return None,
        };
        let promote = len <= self.max_object;
        // A small blob whose file is open and whose bytes are in the page cache is read and
        // checked right here, without a trip to the blocking pool.
        if len <= crate::disk::SMALL_READ {
            match disk.read_small_now(id) {
                Some(Ok(bytes)) => {
                    let blob = CachedBlob::from_verified_rows(vec![bytes]);
                    if promote {
                        self.keep_in_memory(*id, blob.clone()).await;
                    }
                    return Some(Hit::Memory(blob, Tier::Disk));
                }
                Some(Err(e)) => {
                    tracing::warn!(blob_id = %id, error = %e, "disk copy unusable; refilling");
                    return None;
                }
                None => {}
            }
        }
        // A blob memory will not take whose file is open already is handed out at once: the
        // response reads and checks each chunk as it sends it (`disk::DiskReader::fill`).
        if !promote && len > crate::disk::SMALL_READ {
            match disk.reader_now(id, 0..len) {
                Some(Ok(reader)) => return Some(Hit::Disk(DiskBlob { reader, len })),
                Some(Err(e)) => {
                    tracing::warn!(blob_id = %id, error = %e, "disk copy unusable; refilling");
                    return None;
                }
                None => {}
            }
        }
        // Small blobs are read (and checked) whole in the same blocking call that opens them,
        // instead of a second hop to the blocking pool and a channel to stream them.
        let whole = promote || len <= DISK_READ_WHOLE;
        let (disk, blob_id) = (disk.clone(), *id);
        let read = tokio::task::spawn_blocking(move || match disk.reader(&blob_id, 0..len)? {
            Some(reader) if whole => reader.read_all().map(|bytes| Some(Err(bytes))),
            Some(reader) => Ok(Some(Ok(reader))),
            None => Ok(None),
        })
        .await;
        match read {
            Ok(Ok(Some(Ok(reader)))) => Some(Hit::Disk(DiskBlob { reader, len })),
            Ok(Ok(Some(Err(bytes)))) => {
                let blob = CachedBlob::from_verified_rows(vec![bytes]);
                if promote {
                    self.keep_in_memory(*id, blob.clone()).await;
                }
                Some(Hit::Memory(blob, Tier::Disk))
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::warn!(blob_id = %id, error = %e, "disk copy unusable; refilling");
                None
            }
            Err(e) => {
                tracing::error!(blob_id = %id, error = %e, "disk read task failed");
                None
            }
        }
    }

    /// A disk-tier hit on a blob memory will not take, when it needs no wait (memory is not
    /// looked at: the caller has): a small blob read and checked now from the page cache
    /// ([`DiskCache::read_small_now`]), a larger one as a reader of its open file
    /// ([`DiskCache::reader_now`]). `None`: ask [`BlobCache::get`] (a copy found bad is
    /// quarantined by then, so that is a miss).
    pub fn disk_hit_now(&self, id: &BlobId) -> Option<Hit> {
        let disk = self.disk.as_ref()?;
        let len = disk.len_of(id)?;
        if len <= self.max_object {
            return None;
        }
        let hit = if len <= crate::disk::SMALL_READ {
            disk.read_small_now(id)?
                .map(|bytes| Hit::Memory(CachedBlob::from_verified_rows(vec![bytes]), Tier::Disk))
        } else {
            disk.reader_now(id, 0..len)?
                .map(|reader| Hit::Disk(DiskBlob { reader, len }))
        };
        hit.inspect_err(|e| {
            tracing::warn!(blob_id = %id, error = %e, "disk copy unusable; refilling");
        })
        .ok()
    }

    /// Keep a verified blob: in memory if it fits the per-object limit (moka's admission policy
    /// decides), and on disk (written off the reactor; failures are logged and counted, never
    /// fatal). True if it was offered to the memory tier.
    pub async fn insert(&self, id: BlobId, blob: CachedBlob) -> bool {
        if let Some(disk) = &self.disk {
            if !disk.contains(&id) {
                let (disk, chunks) = (disk.clone(), blob.chunks.clone());
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = disk.insert(id, &chunks) {
                        tracing::warn!(blob_id = %id, error = %e, "could not write blob to the disk cache; serving from memory and upstream");
                    }
                });
            }
        }
        if blob.len() > self.max_object {
            return false;
        }
        self.keep_in_memory(id, blob).await;
        true
    }

    /// Offer `blob` to the memory tier at once (so the next request is a hit, never a second
    /// fill), then, for a blob long enough, move it into a sealed memory file in the background
    /// and swap that in, if the entry is still there.
    async fn keep_in_memory(&self, id: BlobId, blob: CachedBlob) {
        let convert = blob.len() >= crate::memfile::MIN_LEN && blob.file.is_none();
        let blob = if convert { blob } else { blob.contiguous() };
        self.memory.insert(id, blob.clone()).await;
        if !convert {
            return;
        }
        let memory = self.memory.clone();
        tokio::spawn(async move {
            let Ok(kept) = tokio::task::spawn_blocking(move || blob.into_memory_file()).await
            else {
                return;
            };
            if kept.file.is_some() {
                // Only in place of the entry: a blob purged or evicted meanwhile stays out.
                memory
                    .entry(id)
                    .and_compute_with(|entry| async move {
                        match entry {
                            Some(_) => moka::ops::compute::Op::Put(kept),
                            None => moka::ops::compute::Op::Nop,
                        }
                    })
                    .await;
            }
        });
    }

    /// Drop `id` from both tiers; true if either held it. Disk first: if the device refuses,
    /// the error comes back with both tiers as they were.
    pub async fn purge(&self, id: &BlobId) -> Result<bool, DiskError> {
        let on_disk = match &self.disk {
            Some(disk) => {
                let (disk, id) = (disk.clone(), *id);
                tokio::task::spawn_blocking(move || disk.purge(&id))
                    .await
                    .map_err(|e| DiskError::Io(std::io::Error::other(e.to_string())))??
            }
            None => false,
        };
        let in_memory = self.memory.remove(id).await.is_some();
        Ok(in_memory || on_disk)
    }

    /// Bytes currently held in memory (approximate: moka applies writes in batches).
    pub fn weighted_size(&self) -> u64 {
        self.memory.weighted_size()
    }

    pub fn entry_count(&self) -> u64 {
        self.memory.entry_count()
    }

    /// Apply the memory tier's pending writes, so [`BlobCache::weighted_size`] and
    /// [`BlobCache::entry_count`] are current (the metrics upkeep runs it periodically).
    pub async fn run_pending_tasks(&self) {
        self.memory.run_pending_tasks().await;
    }
}

/// Open the disk tier `config` asks for: `Ok(None)` when there is none, or when the default
/// directory (no `--cache-dir` given) is held by another gateway (then this one runs
/// memory-only and says so). An explicit directory that is locked is an error. The default
/// directory's bound is also capped at half the free space of its device at start.
pub fn open_disk_tier(
    config: &crate::GatewayConfig,
    metrics: crate::disk::DiskMetrics,
) -> Result<Option<Arc<DiskCache>>, DiskError> {
    let Some(dir) = &config.cache_dir else {
        return Ok(None);
    };
    let mut capacity = config.disk_cache_bytes;
    if config.cache_dir_is_default {
        std::fs::create_dir_all(dir)?;
        if let Ok(stat) = rustix::fs::statvfs(dir.as_path()) {
            let free = stat.f_bavail.saturating_mul(stat.f_frsize);
            capacity = capacity.min(free / 2);
        }
    }
    match DiskCache::open(dir, capacity, metrics) {
        Ok(disk) => Ok(Some(disk)),
        Err(DiskError::Locked { dir, holder }) if config.cache_dir_is_default => {
            tracing::warn!(
                dir = %dir.display(),
                holder = ?holder,
                max_object = config.memory_max_object,
                "the default disk tier directory is in use by another gateway: running memory-only (blobs over the memory tier's per-object limit are not cached); give this gateway its own --cache-dir"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The scrub's metadata comes through the API's filler: its metadata cache, else the nodes.
impl crate::disk::MetadataSource for crate::api::Api {
    fn metadata(
        &self,
        id: BlobId,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Arc<VerifiedMetadata>, String>> + Send + '_>,
    > {
        Box::pin(async move { self.filler().metadata(id).await.map_err(|e| e.to_string()) })
    }

    fn encoding(&self) -> Option<codec::EncodingConfig> {
        Some(*self.filler().topology().config())
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

    /// Remember verified metadata learnt on the way (an upstream fill).
    pub async fn insert(&self, id: BlobId, meta: Arc<VerifiedMetadata>) {
        self.entries.insert(id, meta).await;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn disk_hits_above_the_memory_limit_are_read_whole_or_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskCache::open(dir.path(), 64 << 20, Default::default()).unwrap();
        let cache = BlobCache::new(64 << 20, 1).with_disk(disk.clone());
        let small_id = BlobId([2; 32]);
        let small: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        disk.insert(small_id, &[Bytes::from(small.clone())])
            .unwrap();
        // Above --memory-max-object but small: read whole, served as a disk hit, not promoted.
        match cache.get(&small_id).await {
            Some(Hit::Memory(blob, Tier::Disk)) => {
                assert_eq!(joined(blob.slices(0, blob.len())), small);
            }
            _ => panic!("expected a disk hit read whole"),
        }
        cache.memory.run_pending_tasks().await;
        assert!(!cache.memory.contains_key(&small_id));
        // Longer than DISK_READ_WHOLE: streamed from the file.
        let large_id = BlobId([4; 32]);
        let large = Bytes::from(vec![7u8; DISK_READ_WHOLE as usize + 1]);
        disk.insert(large_id, &[large]).unwrap();
        match cache.get(&large_id).await {
            Some(Hit::Disk(blob)) => assert_eq!(blob.len(), DISK_READ_WHOLE + 1),
            _ => panic!("expected a streaming disk hit"),
        }
    }

    #[tokio::test]
    async fn oversized_blobs_are_not_admitted() {
        let cache = BlobCache::new(1 << 20, 5);
        let id = BlobId([1; 32]);
        assert!(!cache.insert(id, blob()).await);
        assert!(cache.get(&id).await.is_none());
        let small = CachedBlob::from_verified_rows(vec![Bytes::from_static(b"xy")]);
        assert!(cache.insert(id, small).await);
        match cache.get(&id).await {
            Some(Hit::Memory(blob, Tier::Memory)) => assert_eq!(blob.len(), 2),
            _ => panic!("expected a memory hit"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn memory_keeps_small_blobs_whole_and_large_ones_in_memory_files() {
        let cache = BlobCache::new(16 << 20, 8 << 20);
        let small_id = BlobId([2; 32]);
        cache.insert(small_id, blob()).await;
        let small = cache.memory_get(&small_id).await.expect("a memory hit");
        assert_eq!(small.slices(0, 10).len(), 1, "one buffer, not three rows");
        assert_eq!(&small.slices(0, 10)[0][..], b"abcdefghij");
        assert!(small.memory_file().is_none());

        let rows: Vec<Bytes> = (0..4u8).map(|i| Bytes::from(vec![i; 50_000])).collect();
        let want = rows.concat();
        let large_id = BlobId([3; 32]);
        cache
            .insert(large_id, CachedBlob::from_verified_rows(rows))
            .await;
        // A hit at once (the rows), then the memory file once the background copy is done.
        assert!(cache.memory_get(&large_id).await.is_some());
        let mut moved = None;
        for _ in 0..200 {
            match cache.memory_get(&large_id).await {
                Some(blob) if blob.memory_file().is_some() => {
                    moved = Some(blob);
                    break;
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
        let moved = moved.expect("the blob moved into a memory file");
        assert_eq!(moved.slices(0, moved.len()).concat(), want);
        assert_eq!(&moved.memory_file().unwrap().bytes()[..], &want[..]);
    }
}
