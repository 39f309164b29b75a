//! The disk tier: one self-checking file per blob under `<cache-dir>/blobs/`, bounded in bytes.
//!
//! Guarantees:
//! * **No partial blob looks complete.** A blob is written to `<cache-dir>/tmp/`, fsynced, and
//!   renamed into place (then the directory fsynced) only once all of it has been written; the
//!   caller commits only verified blobs. Leftover temporary files are removed at start.
//! * **No corrupted byte is served.** Every chunk (1 MiB) has its BLAKE3 in a table after the
//!   content; the header carries the Blob ID, length, BLAKE3 of the whole content and a BLAKE3
//!   over the header and the table. A reader checks the header and the file size when it opens,
//!   and each chunk before handing it out, so a stream stops *before* a bad chunk. A file that
//!   fails any check is moved to `<cache-dir>/quarantine/` and dropped from the index.
//! * **Bounded.** The index tracks file sizes; committing a blob evicts least-recently-used
//!   unpinned blobs until the total fits. Quarantined files count against the same bound (they
//!   are the first to go). A device that fills before the bound does (`ENOSPC`) lowers the bound
//!   in force to what fits there, evicts, and the write is retried once.
//! * **Pins are durable.** Pin changes are serialised and persisted in `<cache-dir>/pins.json`
//!   (unique temporary file, fsync, rename) before they take effect; a failed write changes
//!   nothing. An unreadable `pins.json` at start is kept aside and the IDs it still holds are
//!   kept, with an error logged.
//! * **Recovers.** A cache directory deleted under a running gateway is recreated by the next
//!   write; a purge that the device refuses (read-only) changes nothing.
//! * **Restart.** `open` returns at once; a background thread rebuilds the index from the
//!   directory (oldest files first, so the LRU order survives), and entries become hits as they are
//!   indexed.
//!
//! All I/O here is blocking: call it from `spawn_blocking` or a dedicated thread.
//!
//! File layout (format version 1, all integers little endian):
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | magic `WGBLOB\0` + version byte `1` |
//! | 8 | 32 | Blob ID |
//! | 40 | 8 | content length |
//! | 48 | 4 | chunk size |
//! | 52 | 4 | reserved (0) |
//! | 56 | 32 | BLAKE3 of the content |
//! | 88 | 32 | BLAKE3 of bytes 0..88 followed by the chunk table |
//! | 120 | 8 | reserved (0) |
//! | 128 | length | content |
//! | 128 + length | 32 per chunk | BLAKE3 of each chunk |

use bytes::Bytes;
use codec::BlobId;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

const MAGIC: [u8; 8] = *b"WGBLOB\x00\x01";
const HEADER_LEN: u64 = 128;
/// Content is checked in chunks of this size: the unit a stream may send after checking it.
pub const CHUNK_SIZE: u32 = 1 << 20;
/// Quarantined files kept for inspection; older ones are deleted (and all of them count against
/// the byte bound).
const QUARANTINE_KEEP: usize = 32;
/// The directories under the cache root.
const DIRS: [&str; 3] = ["blobs", "tmp", "quarantine"];
/// Files kept open between reads (each holds a descriptor).
const OPEN_HANDLES: usize = 1024;
/// Blobs up to this long may be read on the caller's thread when their bytes are in the page
/// cache ([`DiskCache::read_small_now`]).
pub const SMALL_READ: u64 = 64 * 1024;

/// What went wrong in the disk tier.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk cache is full: the blob needs {needed} bytes, the bound is {capacity}")]
    TooLarge { needed: u64, capacity: u64 },
    #[error("no space left on the cache device")]
    NoSpace,
    #[error("the cache device is read-only")]
    ReadOnly,
    #[error("cached file for {blob_id} is corrupt: {reason}")]
    Corrupt { blob_id: BlobId, reason: String },
    #[error("blob {blob_id}: wrote {written} bytes, expected {expected}")]
    WrongLength {
        blob_id: BlobId,
        written: u64,
        expected: u64,
    },
    #[error("disk cache I/O error: {0}")]
    Io(io::Error),
}

impl From<io::Error> for DiskError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::StorageFull => DiskError::NoSpace,
            io::ErrorKind::ReadOnlyFilesystem => DiskError::ReadOnly,
            _ => DiskError::Io(e),
        }
    }
}

/// One indexed blob.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Blob length (content bytes).
    len: u64,
    /// Bytes the file takes (header, content and chunk table): what the bound counts.
    file_size: u64,
    /// Logical clock of the last use: eviction removes the smallest first.
    tick: u64,
    hits: u64,
}

#[derive(Default)]
struct Index {
    entries: HashMap<BlobId, Entry>,
    by_age: BTreeSet<(u64, BlobId)>,
    pins: HashSet<BlobId>,
    /// Writers in progress, by blob: a purge removes the entry, and a writer whose ticket is
    /// gone discards its file at commit instead of bringing the blob back.
    writing: HashMap<BlobId, u64>,
    /// Open, checked files of recently read blobs (at most [`OPEN_HANDLES`]), so a hit skips
    /// the open and the header and table checks. Dropped with the entry: an evicted, purged or
    /// quarantined blob is never read through a stale handle.
    handles: HashMap<BlobId, Arc<OpenBlob>>,
    /// The ids in `handles`, in the order they were opened; the oldest is closed first.
    handle_order: VecDeque<BlobId>,
    total: u64,
    /// Quarantined files kept for inspection (oldest first) with their sizes, and their sum:
    /// they count against the bound and are deleted first to make room.
    quarantined: VecDeque<(PathBuf, u64)>,
    quarantine_total: u64,
    clock: u64,
}

/// A cached blob's file, opened and its header, size and chunk table checked.
struct OpenBlob {
    file: File,
    len: u64,
    table: Arc<[u8]>,
}

impl Index {
    fn next_tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn insert(&mut self, id: BlobId, len: u64, file_size: u64, tick: u64) {
        self.remove(&id);
        self.entries.insert(
            id,
            Entry {
                len,
                file_size,
                tick,
                hits: 0,
            },
        );
        self.by_age.insert((tick, id));
        self.total += file_size;
    }

    fn remove(&mut self, id: &BlobId) -> Option<Entry> {
        if self.handles.remove(id).is_some() {
            self.handle_order.retain(|open| open != id);
        }
        let entry = self.entries.remove(id)?;
        self.by_age.remove(&(entry.tick, *id));
        self.total -= entry.file_size;
        Some(entry)
    }

    /// Keep `handle` for `id` (still indexed), closing the oldest handle beyond the bound.
    fn keep_handle(&mut self, id: BlobId, handle: Arc<OpenBlob>) {
        if !self.entries.contains_key(&id) {
            return;
        }
        if self.handles.insert(id, handle).is_none() {
            self.handle_order.push_back(id);
        }
        if self.handles.len() > OPEN_HANDLES {
            if let Some(oldest) = self.handle_order.pop_front() {
                self.handles.remove(&oldest);
            }
        }
    }

    /// Bytes the tier holds on the device: indexed files and quarantined ones.
    fn held(&self) -> u64 {
        self.total + self.quarantine_total
    }

    /// Delete the oldest quarantined file; false if there is none.
    fn drop_oldest_quarantined(&mut self) -> bool {
        let Some((path, size)) = self.quarantined.pop_front() else {
            return false;
        };
        self.quarantine_total -= size;
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!(path = %path.display(), error = %e, "could not delete a quarantined file");
            }
        }
        true
    }

    fn touch(&mut self, id: &BlobId) {
        let tick = self.next_tick();
        if let Some(entry) = self.entries.get_mut(id) {
            self.by_age.remove(&(entry.tick, *id));
            entry.tick = tick;
            entry.hits += 1;
            self.by_age.insert((tick, *id));
        }
    }

    /// The least recently used blob that is not pinned and not `keep`.
    fn victim(&self, keep: &BlobId) -> Option<BlobId> {
        self.by_age
            .iter()
            .map(|(_, id)| *id)
            .find(|id| id != keep && !self.pins.contains(id))
    }
}

/// Counters and gauges the disk tier reports to (noop handles by default).
#[derive(Clone)]
pub struct DiskMetrics {
    pub integrity_failures: metrics::Counter,
    pub evictions: metrics::Counter,
    pub write_errors: metrics::Counter,
    pub bytes: metrics::Gauge,
    pub entries: metrics::Gauge,
    pub indexed_at_start: metrics::Gauge,
    /// Writes that found the device full (each lowers the bound in force and evicts).
    pub no_space: metrics::Counter,
    /// Times the cache's directories were found missing and recreated.
    pub dirs_recreated: metrics::Counter,
    /// Bytes of quarantined files (counted in the bound).
    pub quarantine_bytes: metrics::Gauge,
    /// The bound in force: the configured one, or less after the device filled first.
    pub effective_bytes: metrics::Gauge,
}

impl Default for DiskMetrics {
    fn default() -> Self {
        Self {
            integrity_failures: metrics::Counter::noop(),
            evictions: metrics::Counter::noop(),
            write_errors: metrics::Counter::noop(),
            bytes: metrics::Gauge::noop(),
            entries: metrics::Gauge::noop(),
            indexed_at_start: metrics::Gauge::noop(),
            no_space: metrics::Counter::noop(),
            dirs_recreated: metrics::Counter::noop(),
            quarantine_bytes: metrics::Gauge::noop(),
            effective_bytes: metrics::Gauge::noop(),
        }
    }
}

/// A snapshot of the disk tier for `/admin/cache` and `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiskStats {
    pub entries: usize,
    pub bytes: u64,
    pub capacity: u64,
    /// The bound in force (below `capacity` after the device filled first).
    pub effective_capacity: u64,
    /// Bytes of quarantined files (part of `bytes`' bound, not of `bytes`).
    pub quarantine_bytes: u64,
    pub pinned: usize,
    pub index_ready: bool,
    pub indexed_at_start: u64,
    /// Most used entries: (Blob ID, length, hits).
    pub top: Vec<(BlobId, u64, u64)>,
}

/// The disk tier. Cheap to share (`Arc`).
pub struct DiskCache {
    root: PathBuf,
    capacity: u64,
    /// The bound eviction works to: `capacity`, or, once the device has run out of space first,
    /// what the tier holds plus what the device has free (recomputed before each write).
    effective: AtomicU64,
    index: Mutex<Index>,
    /// Held across computing, persisting and applying a pin change, so concurrent changes are
    /// persisted one at a time and in the order they apply.
    pins_lock: Mutex<()>,
    /// Tests only: pretend the device holds this many bytes (0: off), to make `ENOSPC`
    /// deterministic.
    #[cfg(test)]
    device_size: AtomicU64,
    index_ready: AtomicBool,
    indexed_at_start: AtomicU64,
    metrics: DiskMetrics,
}

impl DiskCache {
    /// Open (creating) the cache under `root`, bounded to `capacity` bytes. Removes leftover
    /// temporary files, loads pins, and starts rebuilding the index in the background.
    pub fn open(root: &Path, capacity: u64, metrics: DiskMetrics) -> Result<Arc<Self>, DiskError> {
        for dir in DIRS {
            fs::create_dir_all(root.join(dir))?;
        }
        for leftover in fs::read_dir(root.join("tmp"))? {
            let path = leftover?.path();
            tracing::info!(path = %path.display(), "removing a partial blob left by an earlier run");
            let _ = fs::remove_file(&path);
        }
        let (pins, salvaged) = load_pins(&root.join("pins.json"));
        let mut index = Index {
            pins,
            ..Index::default()
        };
        index.quarantined = list_quarantine(&root.join("quarantine"));
        index.quarantine_total = index.quarantined.iter().map(|(_, size)| size).sum();
        while index.quarantined.len() > QUARANTINE_KEEP {
            index.drop_oldest_quarantined();
        }
        let cache = Arc::new(Self {
            root: root.to_path_buf(),
            capacity,
            effective: AtomicU64::new(capacity),
            index: Mutex::new(index),
            pins_lock: Mutex::new(()),
            #[cfg(test)]
            device_size: AtomicU64::new(0),
            index_ready: AtomicBool::new(false),
            indexed_at_start: AtomicU64::new(0),
            metrics,
        });
        if let Ok(stat) = rustix::fs::statvfs(root) {
            let device = stat.f_blocks.saturating_mul(stat.f_frsize);
            if device < capacity {
                tracing::info!(
                    capacity,
                    device,
                    "the disk tier's bound exceeds its device; the first write that finds the device full lowers the bound in force"
                );
            }
        }
        if salvaged {
            // The unreadable file was moved aside: write what was kept, or the next start
            // would find no pins at all.
            let pins = cache.lock().pins.clone();
            if let Err(e) = cache.save_pins(&pins) {
                tracing::error!(error = %e, "cannot rewrite the pins file with the pins kept");
            }
        }
        let background = Arc::clone(&cache);
        std::thread::Builder::new()
            .name("disk-cache-index".into())
            .spawn(move || background.rebuild_index())?;
        Ok(cache)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index half-updated in a way that
        // matters more than losing the cache, so keep serving.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pins_guard(&self) -> MutexGuard<'_, ()> {
        self.pins_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Recreate the cache's directories if something deleted them under us; true if any was
    /// missing.
    fn recreate_dirs(&self) -> io::Result<bool> {
        let mut recreated = false;
        for dir in DIRS {
            let path = self.root.join(dir);
            if path.is_dir() {
                continue;
            }
            {
                // What was in it is gone: stop counting it against the bound (open handles
                // still read their checked files; each goes with its entry).
                let mut index = self.lock();
                match dir {
                    "blobs" => {
                        let ids: Vec<BlobId> = index.entries.keys().copied().collect();
                        for id in ids {
                            index.remove(&id);
                        }
                    }
                    "quarantine" => {
                        index.quarantined.clear();
                        index.quarantine_total = 0;
                    }
                    _ => {}
                }
            }
            fs::create_dir_all(&path)?;
            recreated = true;
        }
        if recreated {
            self.publish_gauges();
            self.metrics.dirs_recreated.increment(1);
            tracing::info!(root = %self.root.display(), "disk cache directories were missing; recreated them");
        }
        Ok(recreated)
    }

    /// The bound in force (see the `effective` field).
    pub fn effective_capacity(&self) -> u64 {
        self.effective.load(Ordering::Relaxed)
    }

    /// Bytes the device has free for us.
    fn free_space(&self) -> u64 {
        #[cfg(test)]
        {
            let size = self.device_size.load(Ordering::Relaxed);
            if size > 0 {
                return size.saturating_sub(self.lock().held());
            }
        }
        match rustix::fs::statvfs(&self.root) {
            Ok(stat) => stat.f_bavail.saturating_mul(stat.f_frsize),
            Err(_) => 0,
        }
    }

    /// Tests only: fail a write as a full device would, when `extra` more bytes would not fit
    /// the simulated device.
    #[cfg(test)]
    fn simulated_space(&self, extra: u64) -> io::Result<()> {
        let size = self.device_size.load(Ordering::Relaxed);
        if size > 0 && self.lock().held() + extra > size {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        Ok(())
    }

    /// Recompute the bound in force as what we hold plus what the device has free, capped at
    /// the configured bound. Only needed once the device has filled first: until then the
    /// configured bound stands.
    fn refresh_effective(&self) {
        if self.effective_capacity() >= self.capacity {
            return;
        }
        let free = self.free_space();
        let held = self.lock().held();
        let bound = held.saturating_add(free).min(self.capacity);
        self.effective.store(bound, Ordering::Relaxed);
        self.metrics.effective_bytes.set(bound as f64);
    }

    /// The device ran out of space before the bound did: lower the bound to what fits there
    /// and evict until `needed` more bytes fit under it.
    fn out_of_space(&self, needed: u64) {
        let free = self.free_space();
        let mut index = self.lock();
        let bound = index.held().saturating_add(free).min(self.capacity);
        self.effective.store(bound, Ordering::Relaxed);
        self.metrics.no_space.increment(1);
        self.metrics.effective_bytes.set(bound as f64);
        tracing::info!(
            configured = self.capacity,
            effective = bound,
            held = index.held(),
            "the cache device is full before the disk tier's bound; lowering the bound and evicting"
        );
        self.make_room(&mut index, needed, None);
        drop(index);
        self.publish_gauges();
    }

    fn path_of(&self, id: &BlobId) -> PathBuf {
        let name = id.to_string();
        self.root.join("blobs").join(&name[..2]).join(name)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the background index rebuild has finished.
    pub fn index_ready(&self) -> bool {
        self.index_ready.load(Ordering::Acquire)
    }

    /// Blobs indexed by the rebuild so far.
    pub fn indexed_at_start(&self) -> u64 {
        self.indexed_at_start.load(Ordering::Relaxed)
    }

    /// Index `id` from its file if it is on disk but not indexed yet (blocking: reads the
    /// header). Lookups use this while the background rebuild runs, so cached blobs are hits
    /// from the first request after a restart, not only once the whole index is rebuilt. A file
    /// that fails its header checks is quarantined. Returns the blob's length.
    pub fn probe(&self, id: &BlobId) -> Option<u64> {
        if let Some(len) = self.len_of(id) {
            return Some(len);
        }
        match read_header(&self.path_of(id), id) {
            Ok((header, file_size)) => {
                let mut index = self.lock();
                if let Some(entry) = index.entries.get(id) {
                    return Some(entry.len);
                }
                if index.writing.contains_key(id) {
                    return None; // Being rewritten (a refill): not ours to index.
                }
                let tick = index.next_tick();
                index.insert(*id, header.len, file_size, tick);
                drop(index);
                self.publish_gauges();
                Some(header.len)
            }
            Err(DiskError::Io(e)) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                self.quarantine(id, &e.to_string());
                None
            }
        }
    }

    fn rebuild_index(&self) {
        let mut found: Vec<(SystemTime, BlobId, u64, u64)> = Vec::new();
        let shards = match fs::read_dir(self.root.join("blobs")) {
            Ok(shards) => shards,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the disk cache; it starts empty");
                self.index_ready.store(true, Ordering::Release);
                return;
            }
        };
        for shard in shards.flatten() {
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                let Some(id) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<BlobId>().ok())
                else {
                    tracing::warn!(path = %path.display(), "ignoring a file that is not named by a Blob ID");
                    continue;
                };
                match read_header(&path, &id) {
                    Ok((header, file_size)) => {
                        let mtime = file
                            .metadata()
                            .and_then(|m| m.modified())
                            .unwrap_or(SystemTime::UNIX_EPOCH);
                        found.push((mtime, id, header.len, file_size));
                    }
                    Err(e) => self.quarantine(&id, &e.to_string()),
                }
            }
        }
        // Oldest first, so the oldest get the smallest ticks and are evicted first.
        found.sort();
        for (_, id, len, file_size) in found {
            let mut index = self.lock();
            if !index.entries.contains_key(&id) {
                let tick = index.next_tick();
                index.insert(id, len, file_size, tick);
            }
            drop(index);
            let indexed = self.indexed_at_start.fetch_add(1, Ordering::Relaxed) + 1;
            self.metrics.indexed_at_start.set(indexed as f64);
        }
        self.index_ready.store(true, Ordering::Release);
        self.enforce_bound();
        self.publish_gauges();
        tracing::info!(
            entries = self.indexed_at_start(),
            "disk cache index rebuilt"
        );
    }

    fn publish_gauges(&self) {
        let index = self.lock();
        self.metrics.bytes.set(index.total as f64);
        self.metrics.entries.set(index.entries.len() as f64);
        self.metrics
            .quarantine_bytes
            .set(index.quarantine_total as f64);
        self.metrics
            .effective_bytes
            .set(self.effective_capacity() as f64);
    }

    /// The length of a cached blob, if it is indexed.
    pub fn len_of(&self, id: &BlobId) -> Option<u64> {
        self.lock().entries.get(id).map(|e| e.len)
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.lock().entries.contains_key(id)
    }

    /// Start writing `id` (of `len` bytes) to a temporary file.
    pub fn writer(self: &Arc<Self>, id: BlobId, len: u64) -> Result<DiskWriter, DiskError> {
        let needed = file_size_for(len);
        self.refresh_effective();
        let capacity = self.effective_capacity();
        if needed > capacity {
            return Err(DiskError::TooLarge { needed, capacity });
        }
        let unique = format!("{id}.{}.tmp", unique_stamp());
        let temp_path = self.root.join("tmp").join(unique);
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp_path)
        };
        let mut file = match create() {
            // The directory was deleted under us: recreate it rather than fail until restart.
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.recreate_dirs()? => create()?,
            other => other?,
        };
        let result = file.write_all(&[0u8; HEADER_LEN as usize]);
        let ticket = {
            let mut index = self.lock();
            let ticket = index.next_tick();
            index.writing.insert(id, ticket);
            ticket
        };
        let writer = DiskWriter {
            cache: Arc::clone(self),
            ticket,
            id,
            len,
            temp_path,
            file: Some(file),
            written: 0,
            content_hash: blake3::Hasher::new(),
            chunk_hash: blake3::Hasher::new(),
            chunk_fill: 0,
            table: Vec::with_capacity(chunk_count(len) as usize * 32),
        };
        result?;
        Ok(writer)
    }

    /// Write a whole blob (already verified) in one call; failures are counted.
    /// A full device lowers the bound in force, evicts and retries once; so does a directory
    /// deleted mid-write (after recreating it).
    pub fn insert(self: &Arc<Self>, id: BlobId, chunks: &[Bytes]) -> Result<(), DiskError> {
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let write = || {
            let mut writer = self.writer(id, len)?;
            for chunk in chunks {
                writer.write(chunk)?;
            }
            writer.commit()
        };
        // The failed writer is dropped (its temporary file deleted) before the retry.
        let result = match write() {
            Err(DiskError::NoSpace) => {
                self.out_of_space(file_size_for(len));
                write()
            }
            Err(DiskError::Io(e))
                if e.kind() == io::ErrorKind::NotFound && self.recreate_dirs().unwrap_or(false) =>
            {
                write()
            }
            other => other,
        };
        if result.is_err() {
            self.metrics.write_errors.increment(1);
        }
        result
    }

    /// Open `range` of a cached blob for reading: `Ok(None)` when it is not indexed. The header,
    /// the file size and the chunk table are checked here; every chunk is checked as it is read.
    pub fn reader(
        self: &Arc<Self>,
        id: &BlobId,
        range: Range<u64>,
    ) -> Result<Option<DiskReader>, DiskError> {
        let (len, handle) = {
            let mut index = self.lock();
            let Some(entry) = index.entries.get(id) else {
                return Ok(None);
            };
            let len = entry.len;
            index.touch(id);
            (len, index.handles.get(id).cloned())
        };
        let opened = (|| -> Result<DiskReader, DiskError> {
            let handle = match handle {
                Some(handle) => handle,
                None => {
                    let (header, _) = read_header(&self.path_of(id), id)?;
                    let handle = Arc::new(OpenBlob {
                        file: header.file,
                        len: header.len,
                        table: header.table.into(),
                    });
                    self.lock().keep_handle(*id, handle.clone());
                    handle
                }
            };
            if handle.len != len {
                return Err(corrupt(id, "length differs from the index"));
            }
            // The file may have been cut short since it was opened and checked (the handle is
            // kept between reads): check its size now, so a short file is a miss and a refill
            // before any response starts, not a body that aborts.
            let on_disk = handle.file.metadata()?.len();
            if on_disk != file_size_for(len) {
                return Err(corrupt(
                    id,
                    &format!(
                        "file is {on_disk} bytes, its header implies {}",
                        file_size_for(len)
                    ),
                ));
            }
            if range.start > range.end || range.end > len {
                return Err(DiskError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "range outside the blob",
                )));
            }
            Ok(DiskReader {
                cache: Arc::clone(self),
                id: *id,
                len: handle.len,
                blob: handle,
                next: range.start,
                end: range.end,
            })
        })();
        match opened {
            Ok(reader) => Ok(Some(reader)),
            Err(DiskError::Corrupt { blob_id, reason }) => {
                self.quarantine(&blob_id, &reason);
                Err(DiskError::Corrupt { blob_id, reason })
            }
            Err(DiskError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                // Deleted behind our back: forget it.
                self.lock().remove(id);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A whole small blob (up to [`SMALL_READ`] bytes), read and checked on the calling thread,
    /// but only when that cannot wait for the disk: its file is already open and its bytes are
    /// in the page cache (`preadv2` with `RWF_NOWAIT`). `None`: not possible now, read it with
    /// [`DiskCache::reader`] on a blocking thread. A chunk that fails its checksum quarantines
    /// the file, as on every other read.
    pub fn read_small_now(&self, id: &BlobId) -> Option<Result<Bytes, DiskError>> {
        let handle = {
            let mut index = self.lock();
            let len = index.entries.get(id)?.len;
            if len > SMALL_READ || len == 0 {
                return None;
            }
            let handle = index.handles.get(id)?.clone();
            index.touch(id);
            handle
        };
        let mut buf = vec![0u8; handle.len as usize];
        let mut done = 0;
        while done < buf.len() {
            let mut slices = [io::IoSliceMut::new(&mut buf[done..])];
            match rustix::io::preadv2(
                &handle.file,
                &mut slices,
                HEADER_LEN + done as u64,
                rustix::io::ReadWriteFlags::NOWAIT,
            ) {
                Ok(0) => break,
                Ok(n) => done += n,
                // Not in the page cache (or no RWF_NOWAIT here): leave it to a blocking read.
                Err(_) => return None,
            }
        }
        let read = if done == buf.len() {
            Ok(&buf[..])
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended early",
            ))
        };
        if let Err(e) = self.check_chunk(id, &handle, 0, read) {
            return Some(Err(e));
        }
        Some(Ok(Bytes::from(buf)))
    }

    /// Check chunk `chunk` of an open blob, as read (`read`), against its BLAKE3 in the
    /// checked table; a chunk that could not be read whole or fails the check quarantines the
    /// file and is `Corrupt`, so its bytes are never handed out.
    fn check_chunk(
        &self,
        id: &BlobId,
        blob: &OpenBlob,
        chunk: u64,
        read: io::Result<&[u8]>,
    ) -> Result<(), DiskError> {
        let reason = match read {
            Err(e) => format!("chunk {chunk} unreadable: {e}"),
            Ok(bytes) => {
                let at = chunk as usize * 32;
                if blake3::hash(bytes).as_bytes()[..] == blob.table[at..at + 32] {
                    return Ok(());
                }
                format!("chunk {chunk} fails its checksum")
            }
        };
        self.quarantine(id, &reason);
        Err(corrupt(id, &reason))
    }

    /// Move a bad file aside and forget it; counted as an integrity failure.
    pub fn quarantine(&self, id: &BlobId, reason: &str) {
        tracing::error!(blob_id = %id, reason, "disk cache file failed its integrity check; quarantined");
        self.metrics.integrity_failures.increment(1);
        self.lock().remove(id);
        let source = self.path_of(id);
        let size = fs::metadata(&source).map(|m| m.len()).unwrap_or(0);
        let target = self
            .root
            .join("quarantine")
            .join(format!("{id}.{}", unique_stamp()));
        let mut moved = fs::rename(&source, &target);
        if matches!(&moved, Err(e) if e.kind() == io::ErrorKind::NotFound)
            && source.exists()
            && self.recreate_dirs().unwrap_or(false)
        {
            moved = fs::rename(&source, &target);
        }
        match moved {
            Ok(()) => {
                let mut index = self.lock();
                index.quarantined.push_back((target, size));
                index.quarantine_total += size;
                while index.quarantined.len() > QUARANTINE_KEEP {
                    index.drop_oldest_quarantined();
                }
            }
            Err(_) => {
                let _ = fs::remove_file(&source);
            }
        }
        self.publish_gauges();
    }

    /// Remove a blob from the disk tier (admin purge). Returns whether it was cached.
    /// The file goes first: a device that refuses (read-only) leaves the blob indexed and any
    /// write in progress untouched, so an error means nothing changed.
    pub fn purge(&self, id: &BlobId) -> Result<bool, DiskError> {
        let was = {
            // Under the lock, so a writer's commit (which renames under it) is either before
            // this (and its file is deleted here) or after (and sees its ticket gone).
            let mut index = self.lock();
            match fs::remove_file(self.path_of(id)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            let writing = index.writing.remove(id).is_some();
            index.remove(id).is_some() || writing
        };
        self.publish_gauges();
        Ok(was)
    }

    /// Pin or unpin a blob: pinned blobs are never evicted. Persisted across restarts.
    /// The change takes effect only once `pins.json` holds it: an error (a full or read-only
    /// device) leaves the pins as they were, in memory and on disk. Changes are serialised.
    pub fn set_pinned(&self, id: BlobId, pinned: bool) -> Result<bool, DiskError> {
        let _serial = self.pins_guard();
        let mut pins = self.lock().pins.clone();
        let changed = if pinned {
            pins.insert(id)
        } else {
            pins.remove(&id)
        };
        if !changed {
            return Ok(false);
        }
        self.save_pins(&pins)?;
        // Only pin changes write this set, and they hold `pins_lock`: `pins` is the current
        // set plus this change.
        self.lock().pins = pins;
        Ok(true)
    }

    /// Persist `pins` as `pins.json` (sorted, so the file is stable), recreating the cache's
    /// directories if they were deleted.
    fn save_pins(&self, pins: &HashSet<BlobId>) -> Result<(), DiskError> {
        let mut ids: Vec<String> = pins.iter().map(|p| p.to_string()).collect();
        ids.sort();
        let body =
            serde_json::to_vec_pretty(&ids).map_err(|e| DiskError::Io(io::Error::other(e)))?;
        let (path, tmp) = (self.root.join("pins.json"), self.root.join("tmp"));
        let write = || {
            #[cfg(test)]
            self.simulated_space(body.len() as u64)?;
            write_atomically(&path, &tmp, &body)
        };
        match write() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.recreate_dirs()? => Ok(write()?),
            // A full device: make room as a blob write would, then try once more.
            Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                self.out_of_space(body.len() as u64);
                Ok(write()?)
            }
            other => Ok(other?),
        }
    }

    pub fn is_pinned(&self, id: &BlobId) -> bool {
        self.lock().pins.contains(id)
    }

    pub fn stats(&self, top: usize) -> DiskStats {
        let index = self.lock();
        let mut entries: Vec<(BlobId, u64, u64)> = index
            .entries
            .iter()
            .map(|(id, e)| (*id, e.len, e.hits))
            .collect();
        entries.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)));
        entries.truncate(top);
        DiskStats {
            entries: index.entries.len(),
            bytes: index.total,
            capacity: self.capacity,
            effective_capacity: self.effective_capacity(),
            quarantine_bytes: index.quarantine_total,
            pinned: index.pins.len(),
            index_ready: self.index_ready(),
            indexed_at_start: self.indexed_at_start(),
            top: entries,
        }
    }

    /// Evict least-recently-used unpinned blobs until the total fits the bound.
    fn enforce_bound(&self) {
        let mut index = self.lock();
        self.make_room(&mut index, 0, None);
        drop(index);
        self.publish_gauges();
    }

    /// Evict least-recently-used unpinned blobs (never `keep`) until `needed` more bytes fit the
    /// bound. Runs under the index lock, so no one sees the tier over its bound.
    fn make_room(&self, index: &mut Index, needed: u64, keep: Option<&BlobId>) {
        let keep = keep.copied().unwrap_or(BlobId([0; 32]));
        let capacity = self.effective_capacity();
        while index.held() + needed > capacity {
            // Quarantined files are kept only for inspection: they go before any cached blob.
            if index.drop_oldest_quarantined() {
                continue;
            }
            let Some(victim) = index.victim(&keep) else {
                tracing::warn!(
                    total = index.total,
                    capacity,
                    "disk cache over its bound, but everything left is pinned"
                );
                return;
            };
            index.remove(&victim);
            self.metrics.evictions.increment(1);
            if let Err(e) = fs::remove_file(self.path_of(&victim)) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(blob_id = %victim, error = %e, "could not delete an evicted blob");
                }
            }
        }
    }
}

/// A blob being written to a temporary file. Dropping it without `commit` deletes the file.
pub struct DiskWriter {
    cache: Arc<DiskCache>,
    /// This writer's registration in `Index::writing`.
    ticket: u64,
    id: BlobId,
    len: u64,
    temp_path: PathBuf,
    file: Option<File>,
    written: u64,
    content_hash: blake3::Hasher,
    chunk_hash: blake3::Hasher,
    chunk_fill: u64,
    table: Vec<u8>,
}

impl DiskWriter {
    /// Append content bytes.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), DiskError> {
        if self.written + data.len() as u64 > self.len {
            return Err(DiskError::WrongLength {
                blob_id: self.id,
                written: self.written + data.len() as u64,
                expected: self.len,
            });
        }
        #[cfg(test)]
        self.cache
            .simulated_space(self.written + data.len() as u64)?;
        let file = self.file.as_mut().expect("file is open until commit");
        file.write_all(data)?;
        self.content_hash.update(data);
        self.written += data.len() as u64;
        while !data.is_empty() {
            let room = (u64::from(CHUNK_SIZE) - self.chunk_fill) as usize;
            let take = room.min(data.len());
            self.chunk_hash.update(&data[..take]);
            self.chunk_fill += take as u64;
            data = &data[take..];
            if self.chunk_fill == u64::from(CHUNK_SIZE) {
                self.finish_chunk();
            }
        }
        Ok(())
    }

    fn finish_chunk(&mut self) {
        self.table
            .extend_from_slice(self.chunk_hash.finalize().as_bytes());
        self.chunk_hash.reset();
        self.chunk_fill = 0;
    }

    /// Finish the file, fsync it, rename it into place and index it, evicting to stay bounded.
    pub fn commit(mut self) -> Result<(), DiskError> {
        if self.written != self.len {
            return Err(DiskError::WrongLength {
                blob_id: self.id,
                written: self.written,
                expected: self.len,
            });
        }
        if self.chunk_fill > 0 {
            self.finish_chunk();
        }
        let header = encode_header(
            &self.id,
            self.len,
            self.content_hash.finalize().as_bytes(),
            &self.table,
        );
        let mut file = self.file.take().expect("file is open until commit");
        file.write_all(&self.table)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header)?;
        file.sync_all()?;
        drop(file);
        let target = self.cache.path_of(&self.id);
        let dir = target.parent().expect("blob paths have a parent");
        // `blobs/` deleted under us: recreate it through `recreate_dirs`, which also forgets
        // the blobs that went with it.
        self.cache.recreate_dirs()?;
        fs::create_dir_all(dir)?;
        {
            // Rename and index under the lock, so a purge is either before (and cancels this
            // writer) or after (and deletes the file).
            let mut index = self.cache.lock();
            if index.writing.get(&self.id) != Some(&self.ticket) {
                tracing::debug!(blob_id = %self.id, "blob purged while being written; discarding");
                return Ok(());
            }
            index.writing.remove(&self.id);
            // Make room first, so neither the index nor the directory goes over the bound.
            let needed = file_size_for(self.len);
            index.remove(&self.id);
            self.cache.make_room(&mut index, needed, Some(&self.id));
            fs::rename(&self.temp_path, &target)?;
            let tick = index.next_tick();
            index.insert(self.id, self.len, needed, tick);
        }
        File::open(dir)?.sync_all()?;
        self.cache.publish_gauges();
        Ok(())
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        {
            let mut index = self.cache.lock();
            if index.writing.get(&self.id) == Some(&self.ticket) {
                index.writing.remove(&self.id);
            }
        }
        if self.file.is_some() || self.temp_path.exists() {
            self.file = None;
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

/// Reads a byte range of a cached blob, one checked chunk at a time.
pub struct DiskReader {
    cache: Arc<DiskCache>,
    id: BlobId,
    blob: Arc<OpenBlob>,
    /// Blob length, from the checked header.
    len: u64,
    next: u64,
    end: u64,
}

impl DiskReader {
    /// The next verified piece of the range, `Ok(None)` at the end. A chunk whose BLAKE3 does
    /// not match quarantines the file and returns `Corrupt` before any of its bytes are returned.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>, DiskError> {
        if self.next >= self.end {
            return Ok(None);
        }
        let chunk_size = u64::from(CHUNK_SIZE);
        let chunk = self.next / chunk_size;
        let chunk_start = chunk * chunk_size;
        let chunk_end = (chunk_start + chunk_size).min(self.len);
        let mut buf = Vec::with_capacity((chunk_end - chunk_start) as usize);
        let read = read_exact_uninit(&self.blob.file, &mut buf, HEADER_LEN + chunk_start);
        self.cache
            .check_chunk(&self.id, &self.blob, chunk, read.map(|()| &buf[..]))?;
        let from = (self.next - chunk_start) as usize;
        let to = (self.end.min(chunk_end) - chunk_start) as usize;
        self.next = chunk_start + to as u64;
        let mut out = Bytes::from(buf);
        if from > 0 || to < out.len() {
            out = out.slice(from..to);
        }
        Ok(Some(out))
    }

    /// The same open file, narrowed to `[start, end)` of the blob.
    pub fn restrict(mut self, start: u64, end: u64) -> Result<Self, DiskError> {
        if start > end || end > self.len {
            return Err(DiskError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range outside the blob",
            )));
        }
        self.next = start;
        self.end = end;
        Ok(self)
    }

    /// Read the whole range into one buffer (for promotion to memory).
    pub fn read_all(mut self) -> Result<Bytes, DiskError> {
        let mut chunks = Vec::new();
        while let Some(chunk) = self.next_chunk()? {
            chunks.push(chunk);
        }
        Ok(match chunks.len() {
            1 => chunks.pop().expect("one chunk"),
            _ => Bytes::from(chunks.concat()),
        })
    }
}

/// Fill `buf`'s spare capacity (without zeroing it first) from `file` at `offset`.
fn read_exact_uninit(file: &File, buf: &mut Vec<u8>, offset: u64) -> io::Result<()> {
    let want = buf.capacity();
    while buf.len() < want {
        let at = offset + buf.len() as u64;
        if rustix::io::pread(file, rustix::buffer::spare_capacity(buf), at)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended early",
            ));
        }
    }
    Ok(())
}

struct Header {
    len: u64,
    table: Vec<u8>,
    file: File,
}

fn corrupt(id: &BlobId, reason: &str) -> DiskError {
    DiskError::Corrupt {
        blob_id: *id,
        reason: reason.to_string(),
    }
}

fn chunk_count(len: u64) -> u64 {
    len.div_ceil(u64::from(CHUNK_SIZE))
}

fn file_size_for(len: u64) -> u64 {
    HEADER_LEN + len + 32 * chunk_count(len)
}

fn encode_header(
    id: &BlobId,
    len: u64,
    content_hash: &[u8; 32],
    table: &[u8],
) -> [u8; HEADER_LEN as usize] {
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(&MAGIC);
    header[8..40].copy_from_slice(&id.0);
    header[40..48].copy_from_slice(&len.to_le_bytes());
    header[48..52].copy_from_slice(&CHUNK_SIZE.to_le_bytes());
    header[56..88].copy_from_slice(content_hash);
    let mut check = blake3::Hasher::new();
    check.update(&header[..88]);
    check.update(table);
    header[88..120].copy_from_slice(check.finalize().as_bytes());
    header
}

/// Open a cached file and check its header, size and chunk table against `id`.
fn read_header(path: &Path, id: &BlobId) -> Result<(Header, u64), DiskError> {
    let mut file = File::open(path)?;
    let file_size = file.metadata()?.len();
    let mut header = [0u8; HEADER_LEN as usize];
    if file_size < HEADER_LEN {
        return Err(corrupt(id, "shorter than its header"));
    }
    file.read_exact(&mut header)?;
    if header[..8] != MAGIC {
        return Err(corrupt(id, "unknown magic or format version"));
    }
    if header[8..40] != id.0 {
        return Err(corrupt(id, "header names another blob"));
    }
    let len = u64::from_le_bytes(header[40..48].try_into().expect("8 bytes"));
    let chunk_size = u32::from_le_bytes(header[48..52].try_into().expect("4 bytes"));
    if chunk_size != CHUNK_SIZE {
        return Err(corrupt(id, "unexpected chunk size"));
    }
    let expected_size = len
        .checked_add(HEADER_LEN)
        .and_then(|s| s.checked_add(32 * chunk_count(len)));
    if expected_size != Some(file_size) {
        return Err(corrupt(
            id,
            &format!("file is {file_size} bytes, its header implies {expected_size:?}"),
        ));
    }
    let mut table = vec![0u8; (32 * chunk_count(len)) as usize];
    file.seek(SeekFrom::Start(HEADER_LEN + len))?;
    file.read_exact(&mut table)?;
    let mut check = blake3::Hasher::new();
    check.update(&header[..88]);
    check.update(&table);
    if check.finalize().as_bytes()[..] != header[88..120] {
        return Err(corrupt(id, "header or chunk table fails its checksum"));
    }
    Ok((Header { len, table, file }, file_size))
}

/// The pins in `path`, and whether the file was unreadable (then it has been moved aside to
/// `pins.json.corrupt-<stamp>`, and the returned pins are the Blob IDs that could still be read
/// from it, which the caller writes back). Never a silent loss: every dropped entry is logged.
fn load_pins(path: &Path) -> (HashSet<BlobId>, bool) {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (HashSet::new(), false),
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "cannot read the pins file; starting with no pins (the file is left as it is until the next pin change)");
            return (HashSet::new(), false);
        }
    };
    match serde_json::from_slice::<Vec<String>>(&bytes) {
        Ok(ids) => {
            let mut pins = HashSet::new();
            for text in &ids {
                match text.parse() {
                    Ok(id) => {
                        pins.insert(id);
                    }
                    Err(e) => {
                        tracing::error!(entry = %text, error = %e, path = %path.display(), "pins file holds an entry that is not a Blob ID; dropping it")
                    }
                }
            }
            (pins, false)
        }
        Err(e) => {
            let pins = salvage_pins(&bytes);
            let aside = path.with_file_name(format!("pins.json.corrupt-{}", unique_stamp()));
            match fs::rename(path, &aside) {
                Ok(()) => tracing::error!(
                    error = %e,
                    path = %path.display(),
                    kept = pins.len(),
                    moved_to = %aside.display(),
                    "pins file is not valid JSON; keeping the Blob IDs still readable in it, and the file itself aside"
                ),
                Err(move_error) => tracing::error!(
                    error = %e,
                    path = %path.display(),
                    kept = pins.len(),
                    %move_error,
                    "pins file is not valid JSON and cannot be moved aside; keeping the Blob IDs still readable in it"
                ),
            }
            (pins, true)
        }
    }
}

/// Every Blob ID written out in `bytes` (a damaged pins file: truncated, interleaved, ...).
fn salvage_pins(bytes: &[u8]) -> HashSet<BlobId> {
    String::from_utf8_lossy(bytes)
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter_map(|token| token.parse().ok())
        .collect()
}

/// Quarantined files under `dir`, oldest first, with their sizes.
fn list_quarantine(dir: &Path) -> VecDeque<(PathBuf, u64)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return VecDeque::new();
    };
    let mut files: Vec<(SystemTime, PathBuf, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, e.path(), meta.len()))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, path, size)| (path, size))
        .collect()
}

/// A suffix no other call in this process (or an earlier one) produces: pid, time, counter.
fn unique_stamp() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}.{nanos}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Write `body` to `path` via a fsynced temporary file in `tmp_dir` and a rename. The temporary
/// name is unique, so concurrent calls never write into each other's file; the temporary file
/// is removed if anything fails.
pub fn write_atomically(path: &Path, tmp_dir: &Path, body: &[u8]) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = tmp_dir.join(format!("{name}.{}.tmp", unique_stamp()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(body)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use codec::BlobId;
    use std::time::{Duration, Instant};

    fn id(n: u8) -> BlobId {
        BlobId([n; 32])
    }

    fn content(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn wait_ready(cache: &DiskCache) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cache.index_ready() {
            assert!(Instant::now() < deadline, "index rebuild did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn open(dir: &std::path::Path, capacity: u64) -> Arc<DiskCache> {
        let cache = DiskCache::open(dir, capacity, DiskMetrics::default()).unwrap();
        wait_ready(&cache);
        cache
    }

    fn read(
        cache: &Arc<DiskCache>,
        id: &BlobId,
        range: std::ops::Range<u64>,
    ) -> Result<Option<Vec<u8>>, DiskError> {
        let Some(mut reader) = cache.reader(id, range)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        while let Some(chunk) = reader.next_chunk()? {
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out))
    }

    fn file_of(dir: &std::path::Path, id: &BlobId) -> std::path::PathBuf {
        let name = id.to_string();
        dir.join("blobs").join(&name[..2]).join(name)
    }

    #[test]
    fn a_lookup_indexes_a_file_the_rebuild_has_not_reached() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (content(3000, 1), content(5000, 2));
        {
            let cache = open(dir.path(), 1 << 20);
            cache.insert(id(1), &[Bytes::from(a.clone())]).unwrap();
            cache.insert(id(2), &[Bytes::from(b.clone())]).unwrap();
        }
        std::fs::write(file_of(dir.path(), &id(2)), b"not a cache file").unwrap();
        // Straight after opening, before (or while) the background rebuild runs.
        let cache = DiskCache::open(dir.path(), 1 << 20, DiskMetrics::default()).unwrap();
        assert_eq!(cache.probe(&id(1)), Some(3000));
        assert_eq!(read(&cache, &id(1), 0..3000).unwrap(), Some(a));
        assert_eq!(cache.probe(&id(2)), None, "a bad file is not indexed");
        assert!(!file_of(dir.path(), &id(2)).exists(), "and is quarantined");
        assert_eq!(cache.probe(&id(3)), None);
        wait_ready(&cache);
        assert_eq!(cache.len_of(&id(1)), Some(3000));
        assert_eq!(cache.len_of(&id(2)), None);

        // A file the index has never seen (here: copied in after the rebuild) is found by probe.
        let other = tempfile::tempdir().unwrap();
        let c = content(4000, 3);
        open(other.path(), 1 << 20)
            .insert(id(3), &[Bytes::from(c.clone())])
            .unwrap();
        let target = file_of(dir.path(), &id(3));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(file_of(other.path(), &id(3)), &target).unwrap();
        assert_eq!(cache.len_of(&id(3)), None);
        assert_eq!(cache.probe(&id(3)), Some(4000));
        assert_eq!(read(&cache, &id(3), 0..4000).unwrap(), Some(c));
    }

    #[test]
    fn round_trips_whole_blobs_and_ranges_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 30);
        let len = 2 * CHUNK_SIZE as usize + 12345;
        let data = content(len, 3);
        let mut writer = cache.writer(id(1), len as u64).unwrap();
        for piece in data.chunks(100_000) {
            writer.write(piece).unwrap();
        }
        writer.commit().unwrap();
        assert_eq!(read(&cache, &id(1), 0..len as u64).unwrap().unwrap(), data);
        for (a, b) in [
            (0u64, 1u64),
            (5, 5),
            (1_048_570, 1_048_590),
            (len as u64 - 1, len as u64),
            (100, 2_100_000),
        ] {
            assert_eq!(
                read(&cache, &id(1), a..b).unwrap().unwrap(),
                &data[a as usize..b as usize],
                "{a}..{b}"
            );
        }
        // Empty blob.
        cache.insert(id(2), &[]).unwrap();
        assert_eq!(
            read(&cache, &id(2), 0..0).unwrap().unwrap(),
            Vec::<u8>::new()
        );
        assert_eq!(cache.len_of(&id(2)), Some(0));
        assert!(read(&cache, &id(9), 0..1).unwrap().is_none());
    }

    #[test]
    fn a_flipped_byte_is_never_served_and_the_file_is_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 30);
        let len = CHUNK_SIZE as usize + 10;
        let data = content(len, 5);
        // Flip a content byte in the second chunk, in the table, and in the header.
        for (n, offset) in [
            (1u8, 128 + CHUNK_SIZE as u64 + 3),
            (2, 128 + len as u64 + 40),
            (3, 60),
        ] {
            cache.insert(id(n), &[Bytes::from(data.clone())]).unwrap();
            let path = file_of(dir.path(), &id(n));
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[offset as usize] ^= 0x10;
            std::fs::write(&path, bytes).unwrap();
            let result = cache.reader(&id(n), 0..len as u64);
            match result {
                Err(DiskError::Corrupt { .. }) => {}
                Ok(Some(mut reader)) => {
                    // Content corruption: the first chunk is good, the second never comes out.
                    let first = reader.next_chunk().unwrap().unwrap();
                    assert_eq!(&first[..], &data[..CHUNK_SIZE as usize]);
                    assert!(matches!(
                        reader.next_chunk(),
                        Err(DiskError::Corrupt { .. })
                    ));
                }
                other => panic!(
                    "case {n}: corrupt file was not detected: {:?}",
                    other.map(|r| r.is_some())
                ),
            }
            assert!(!cache.contains(&id(n)), "case {n}: still indexed");
            assert!(!path.exists(), "case {n}: not moved aside");
            assert!(read(&cache, &id(n), 0..1).unwrap().is_none());
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("quarantine"))
                .unwrap()
                .count(),
            3
        );
    }

    #[test]
    fn small_reads_reuse_the_open_file_and_still_check_every_byte() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 30);
        let data = content(5000, 7);
        cache.insert(id(1), &[Bytes::from(data.clone())]).unwrap();
        // Not opened yet: the caller must take the blocking path.
        assert!(cache.read_small_now(&id(1)).is_none());
        assert_eq!(read(&cache, &id(1), 0..5000).unwrap().unwrap(), data);
        // Open and in the page cache now (ext4, xfs, btrfs and tmpfs honour RWF_NOWAIT).
        let again = cache
            .read_small_now(&id(1))
            .expect("served without blocking");
        assert_eq!(&again.unwrap()[..], &data[..]);
        // A byte flipped in place (same file, through the page cache) is caught by the open
        // handle's next read: never served, quarantined, forgotten.
        let file = OpenOptions::new()
            .write(true)
            .open(file_of(dir.path(), &id(1)))
            .unwrap();
        file.write_all_at(&[data[100] ^ 1], HEADER_LEN + 100)
            .unwrap();
        assert!(matches!(
            cache.read_small_now(&id(1)),
            Some(Err(DiskError::Corrupt { .. }))
        ));
        assert!(!cache.contains(&id(1)));
        assert!(cache.read_small_now(&id(1)).is_none());
        assert!(read(&cache, &id(1), 0..1).unwrap().is_none());
        // A purge closes the handle with the entry.
        cache.insert(id(2), &[Bytes::from(data.clone())]).unwrap();
        assert_eq!(read(&cache, &id(2), 0..10).unwrap().unwrap(), &data[..10]);
        assert!(cache.purge(&id(2)).unwrap());
        assert!(cache.read_small_now(&id(2)).is_none());
        assert!(read(&cache, &id(2), 0..10).unwrap().is_none());
    }

    #[test]
    fn a_file_cut_short_after_it_was_opened_is_caught_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 30);
        let len = CHUNK_SIZE as usize + 10;
        let data = content(len, 3);
        cache.insert(id(1), &[Bytes::from(data.clone())]).unwrap();
        assert_eq!(read(&cache, &id(1), 0..10).unwrap().unwrap(), &data[..10]);
        let path = file_of(dir.path(), &id(1));
        // Cut short under a reader already open: its next chunk is caught.
        let mut reader = cache.reader(&id(1), 0..len as u64).unwrap().unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(HEADER_LEN + CHUNK_SIZE as u64 / 2).unwrap();
        assert!(matches!(
            reader.next_chunk(),
            Err(DiskError::Corrupt { .. })
        ));
        assert!(!cache.contains(&id(1)));
    }

    #[test]
    fn a_file_cut_short_under_a_kept_handle_fails_the_open_not_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 30);
        let len = 2 * CHUNK_SIZE as usize;
        let data = content(len, 4);
        cache.insert(id(1), &[Bytes::from(data.clone())]).unwrap();
        // Opened once: the checked handle is kept for later reads.
        assert_eq!(read(&cache, &id(1), 0..10).unwrap().unwrap(), &data[..10]);
        let path = file_of(dir.path(), &id(1));
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        // The next open sees the short file before handing out a reader: a miss, quarantined.
        assert!(matches!(
            cache.reader(&id(1), 0..len as u64),
            Err(DiskError::Corrupt { .. })
        ));
        assert!(!cache.contains(&id(1)));
        assert!(!path.exists());
        assert!(cache.reader(&id(1), 0..1).unwrap().is_none());
        // And a refill brings it back whole.
        cache.insert(id(1), &[Bytes::from(data.clone())]).unwrap();
        assert_eq!(read(&cache, &id(1), 0..len as u64).unwrap().unwrap(), data);
    }

    #[test]
    fn concurrent_pin_changes_are_all_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 30);
        let ids: Vec<BlobId> = (0..100u8).map(id).collect();
        std::thread::scope(|scope| {
            for chunk in ids.chunks(10) {
                let cache = &cache;
                scope.spawn(move || {
                    for id in chunk {
                        assert!(cache.set_pinned(*id, true).unwrap());
                    }
                });
            }
        });
        let file: Vec<String> =
            serde_json::from_slice(&std::fs::read(dir.path().join("pins.json")).unwrap())
                .expect("pins.json is valid JSON");
        assert_eq!(file.len(), 100);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "no temporary file left"
        );
        drop(cache);
        let cache = open(dir.path(), 1 << 30);
        for id in &ids {
            assert!(cache.is_pinned(id), "{id} lost across the restart");
        }
        assert!(!cache.set_pinned(id(5), true).unwrap(), "already pinned");
        assert!(cache.set_pinned(id(5), false).unwrap());
        assert_eq!(cache.stats(0).pinned, 99);
    }

    #[test]
    fn a_corrupt_pins_file_keeps_what_it_can_and_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = open(dir.path(), 1 << 30);
            for n in 1..=3 {
                cache.set_pinned(id(n), true).unwrap();
            }
        }
        // Cut off in the middle of the last ID written: the other two are still readable.
        let path = dir.path().join("pins.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let (cut, last) = (1..=3u8)
            .map(|n| (text.find(&id(n).to_string()).unwrap(), n))
            .max()
            .unwrap();
        std::fs::write(&path, &text[..cut + 10]).unwrap();
        let kept: Vec<BlobId> = (1..=3u8).filter(|n| *n != last).map(id).collect();
        let cache = open(dir.path(), 1 << 30);
        assert!(kept.iter().all(|id| cache.is_pinned(id)));
        assert_eq!(cache.stats(0).pinned, 2);
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("pins.json.corrupt-")
            })
            .collect();
        assert_eq!(aside.len(), 1, "the damaged file is kept for the operator");
        // What was kept is written back, so it survives the next restart too.
        drop(cache);
        let cache = open(dir.path(), 1 << 30);
        assert!(kept.iter().all(|id| cache.is_pinned(id)));
        assert_eq!(cache.stats(0).pinned, 2);
    }

    #[test]
    fn a_pin_change_that_cannot_be_saved_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 30);
        cache.set_pinned(id(1), true).unwrap();
        let before = std::fs::read(dir.path().join("pins.json")).unwrap();
        // tmp/ is now a file: every save fails, as on a read-only device.
        std::fs::remove_dir(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp"), b"not a directory").unwrap();
        assert!(cache.set_pinned(id(2), true).is_err());
        assert!(cache.set_pinned(id(1), false).is_err());
        assert!(!cache.is_pinned(&id(2)));
        assert!(cache.is_pinned(&id(1)));
        assert_eq!(std::fs::read(dir.path().join("pins.json")).unwrap(), before);
    }

    #[test]
    fn a_purge_the_device_refuses_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 30);
        let data = content(3000, 1);
        cache.insert(id(1), &[Bytes::from(data.clone())]).unwrap();
        // Unlinking a directory fails (EISDIR): stand-in for a read-only remount, which
        // needs root privileges to stage and does not stop root anyway.
        let path = file_of(dir.path(), &id(1));
        let saved = dir.path().join("saved");
        std::fs::rename(&path, &saved).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(cache.purge(&id(1)).is_err());
        assert!(cache.contains(&id(1)), "a failed purge leaves the entry");
        std::fs::remove_dir(&path).unwrap();
        std::fs::rename(&saved, &path).unwrap();
        assert_eq!(read(&cache, &id(1), 0..3000).unwrap().unwrap(), data);
        assert!(cache.purge(&id(1)).unwrap());
        assert!(!cache.contains(&id(1)));
    }

    #[test]
    fn a_deleted_cache_directory_is_recreated_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let cache = open(&root, 1 << 30);
        cache
            .insert(id(1), &[Bytes::from(content(3000, 1))])
            .unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        let data = content(5000, 2);
        cache.insert(id(2), &[Bytes::from(data.clone())]).unwrap();
        assert_eq!(read(&cache, &id(2), 0..5000).unwrap().unwrap(), data);
        // Only what is on the device now counts against the bound.
        let stats = cache.stats(0);
        assert_eq!((stats.entries, stats.bytes), (1, file_size_for(5000)));
        // The deleted blob is forgotten at its next read, not served.
        assert!(read(&cache, &id(1), 0..1).unwrap().is_none());
        // Only blobs/ deleted: the commit recreates it and forgets what went with it.
        std::fs::remove_dir_all(root.join("blobs")).unwrap();
        cache.insert(id(4), &[Bytes::from(data.clone())]).unwrap();
        let stats = cache.stats(0);
        assert_eq!((stats.entries, stats.bytes), (1, file_size_for(5000)));
        assert!(cache.contains(&id(4)));
        cache.insert(id(2), &[Bytes::from(data.clone())]).unwrap();
        cache.set_pinned(id(2), true).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        cache.set_pinned(id(3), true).unwrap();
        drop(cache);
        let cache = open(&root, 1 << 30);
        assert!(cache.is_pinned(&id(2)) && cache.is_pinned(&id(3)));
    }

    #[test]
    fn a_full_device_evicts_lowers_the_bound_and_retries() {
        let dir = tempfile::tempdir().unwrap();
        let blob = 100_000usize;
        let per_file = file_size_for(blob as u64);
        // Configured for 100 files, but the device only holds 5 and a half.
        let cache = open(dir.path(), per_file * 100);
        cache
            .device_size
            .store(per_file * 11 / 2, Ordering::Relaxed);
        for n in 1..=20u8 {
            cache
                .insert(id(n), &[Bytes::from(content(blob, n))])
                .unwrap_or_else(|e| panic!("insert {n}: {e}"));
            assert!(cache.contains(&id(n)));
        }
        let stats = cache.stats(0);
        assert_eq!(stats.entries, 5);
        assert!(stats.effective_capacity < per_file * 6);
        assert!(stats.effective_capacity >= per_file * 5);
        assert!(cache.contains(&id(20)) && !cache.contains(&id(1)));
        assert_eq!(walk_files(&dir.path().join("blobs")), 5);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        // Space freed on the device raises the bound again (never above the configured one).
        cache.device_size.store(per_file * 1000, Ordering::Relaxed);
        cache
            .insert(id(21), &[Bytes::from(content(blob, 21))])
            .unwrap();
        assert_eq!(cache.effective_capacity(), per_file * 100);
        assert_eq!(cache.stats(0).entries, 6);

        // A pin that finds the device full evicts an unpinned blob to be saved.
        cache
            .device_size
            .store(cache.stats(0).bytes, Ordering::Relaxed);
        assert!(cache.set_pinned(id(21), true).unwrap());
        assert!(cache.is_pinned(&id(21)));
        assert_eq!(cache.stats(0).entries, 5);
        assert!(cache.contains(&id(21)));
    }

    #[test]
    fn quarantined_files_count_against_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let blob = 100_000usize;
        let per_file = file_size_for(blob as u64);
        let cache = open(dir.path(), per_file * 4);
        for n in 1..=4u8 {
            cache
                .insert(id(n), &[Bytes::from(content(blob, n))])
                .unwrap();
        }
        // Corrupt two: their files move to quarantine, still on the device.
        for n in [1u8, 2] {
            let path = file_of(dir.path(), &id(n));
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[60] ^= 1;
            std::fs::write(&path, bytes).unwrap();
            assert!(cache.reader(&id(n), 0..1).is_err());
        }
        let stats = cache.stats(0);
        assert_eq!(stats.quarantine_bytes, 2 * per_file);
        assert_eq!(stats.bytes + stats.quarantine_bytes, 4 * per_file);
        // A new blob makes room by deleting quarantined files first, not cached blobs.
        cache
            .insert(id(5), &[Bytes::from(content(blob, 5))])
            .unwrap();
        let stats = cache.stats(0);
        assert!(stats.bytes + stats.quarantine_bytes <= 4 * per_file);
        assert_eq!(stats.entries, 3);
        assert!(cache.contains(&id(3)) && cache.contains(&id(4)));
        assert_eq!(
            std::fs::read_dir(dir.path().join("quarantine"))
                .unwrap()
                .count(),
            1
        );
        // Counted again after a restart.
        drop(cache);
        let cache = open(dir.path(), per_file * 4);
        assert_eq!(cache.stats(0).quarantine_bytes, per_file);
    }

    #[test]
    fn a_short_file_is_detected_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 30);
        cache
            .insert(id(1), &[Bytes::from(content(5000, 1))])
            .unwrap();
        let path = file_of(dir.path(), &id(1));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(
            cache.reader(&id(1), 0..10),
            Err(DiskError::Corrupt { .. })
        ));
        assert!(!cache.contains(&id(1)));
    }

    #[test]
    fn restart_rebuilds_the_index_and_drops_partial_writes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = open(dir.path(), 1 << 30);
            for n in 1..=20u8 {
                cache
                    .insert(id(n), &[Bytes::from(content(1000 + usize::from(n), n))])
                    .unwrap();
            }
            // A fill that never committed (a crash mid-write leaves exactly this).
            let mut partial = cache.writer(id(99), 10_000).unwrap();
            partial.write(&content(5000, 9)).unwrap();
            std::mem::forget(partial);
            // A committed file corrupted while the gateway was down.
            let path = file_of(dir.path(), &id(7));
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[200] ^= 1;
            std::fs::write(&path, bytes).unwrap();
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            1
        );
        let cache = open(dir.path(), 1 << 30);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert!(!cache.contains(&id(99)));
        assert_eq!(cache.indexed_at_start(), 20);
        for n in 1..=20u8 {
            let got = read(&cache, &id(n), 0..1000 + u64::from(n));
            if n == 7 {
                // Header and table are intact, so the rebuild indexed it; the chunk check catches it.
                assert!(matches!(got, Err(DiskError::Corrupt { .. })));
            } else {
                assert_eq!(got.unwrap().unwrap(), content(1000 + usize::from(n), n));
            }
        }
    }

    #[test]
    fn the_bound_holds_and_pinned_blobs_survive_it() {
        let dir = tempfile::tempdir().unwrap();
        let blob = 100_000usize;
        let per_file = 128 + blob as u64 + 32;
        let cache = open(dir.path(), per_file * 5);
        cache.set_pinned(id(1), true).unwrap();
        for n in 1..=30u8 {
            cache
                .insert(id(n), &[Bytes::from(content(blob, n))])
                .unwrap();
            let stats = cache.stats(0);
            assert!(
                stats.bytes <= per_file * 5,
                "bound exceeded after {n}: {}",
                stats.bytes
            );
            // Keep blob 2 hot: it is used after every insert and must not be the LRU victim.
            if n >= 2 {
                assert!(
                    read(&cache, &id(2), 0..1).unwrap().is_some(),
                    "hot blob evicted at {n}"
                );
            }
        }
        assert!(cache.contains(&id(1)), "pinned blob was evicted");
        assert!(cache.contains(&id(30)));
        assert!(!cache.contains(&id(3)));
        let on_disk = walk_files(&dir.path().join("blobs"));
        assert_eq!(on_disk, 5);
        // Pins persist across a restart.
        drop(cache);
        let cache = open(dir.path(), per_file * 5);
        assert!(cache.is_pinned(&id(1)));
        assert!(matches!(
            cache.writer(id(50), per_file * 5),
            Err(DiskError::TooLarge { .. })
        ));
    }

    fn walk_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    walk_files(&e.path())
                } else {
                    1
                }
            })
            .sum()
    }

    #[test]
    fn an_unwritable_cache_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 30);
        // Replace tmp/ with a file: creating temporary files now fails, as on a broken disk.
        std::fs::remove_dir(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp"), b"not a directory").unwrap();
        assert!(matches!(cache.writer(id(1), 10), Err(DiskError::Io(_))));
        assert!(!cache.contains(&id(1)));
    }

    #[test]
    fn a_purge_during_a_write_wins() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 30);
        let mut writer = cache.writer(id(1), 3).unwrap();
        writer.write(b"abc").unwrap();
        assert!(cache.purge(&id(1)).unwrap());
        writer.commit().unwrap();
        assert!(!cache.contains(&id(1)));
        assert_eq!(walk_files(&dir.path().join("blobs")), 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        // A later write of the same blob is not affected.
        cache.insert(id(1), &[Bytes::from_static(b"abc")]).unwrap();
        assert!(cache.contains(&id(1)));
    }

    #[test]
    fn wrong_lengths_are_refused_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 30);
        let mut w = cache.writer(id(1), 10).unwrap();
        assert!(matches!(
            w.write(&[0u8; 11]),
            Err(DiskError::WrongLength { .. })
        ));
        w.write(&[0u8; 5]).unwrap();
        assert!(matches!(w.commit(), Err(DiskError::WrongLength { .. })));
        assert!(!cache.contains(&id(1)));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert_eq!(walk_files(&dir.path().join("blobs")), 0);
    }

    #[test]
    fn thousands_of_entries_are_reindexed_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = open(dir.path(), 1 << 40);
            for n in 0..2000u32 {
                let mut bytes = [0u8; 32];
                bytes[..4].copy_from_slice(&n.to_le_bytes());
                cache
                    .insert(BlobId(bytes), &[Bytes::from(n.to_le_bytes().to_vec())])
                    .unwrap();
            }
        }
        let cache = open(dir.path(), 1 << 40);
        assert_eq!(cache.stats(0).entries, 2000);
    }
}
