//! The disk tier: one self-checking file per blob under `<cache-dir>/blobs/`, and one per quilt
//! patch read from its columns under `<cache-dir>/patches/` ([`DiskKey`], [`DiskPatch`]), bounded in
//! bytes together. Everything below holds for both kinds.
//!
//! Guarantees:
//! * **No partial blob looks complete.** A blob is written to `<cache-dir>/tmp/`, fsynced, and
//!   renamed into place (then the directory fsynced) only once all of it has been written; the
//!   caller commits only verified blobs. Leftover temporary files are removed at start.
//! * **No corrupted byte is served.** Every chunk (1 MiB) has its CRC32C in a table after the
//!   content; the header carries the Blob ID, length, BLAKE3 of the whole content and a BLAKE3
//!   over the header and the table. A reader checks the header and the file size when it opens,
//!   and each chunk before handing it out, so a stream stops *before* a bad chunk. A file that
//!   fails any check is moved to `<cache-dir>/quarantine/` and dropped from the index. The CRC
//!   guards against rot, torn writes and truncation; tampering that rewrites the table too is
//!   the scrub's to find (it checks files against their Blob ID).
//! * **Upgrades keep the cache.** Files of format 1 (BLAKE3 per chunk, written before format 2)
//!   are read as they are, each chunk checked against its BLAKE3; new files are format 2.
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
//! File layout (format version 2, all integers little endian; format 1 differs only in the
//! version byte and a 32-byte BLAKE3 per chunk in the table):
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | magic `WGBLOB\0` + version byte `2` |
//! | 8 | 32 | Blob ID |
//! | 40 | 8 | content length |
//! | 48 | 4 | chunk size |
//! | 52 | 4 | reserved (0) |
//! | 56 | 32 | BLAKE3 of the content (computed as the file is written) |
//! | 88 | 32 | BLAKE3 of bytes 0..88 followed by the chunk table |
//! | 120 | 8 | reserved (0) |
//! | 128 | length | content |
//! | 128 + length | 4 per chunk | CRC32C (Castagnoli) of each chunk |

mod format;
mod index;
mod lock;
mod metrics;
mod patch;
mod pins;
mod reader;
pub mod scrub;
#[cfg(test)]
mod tests;
mod writer;

pub use format::{DiskKey, CHUNK_SIZE};
pub use metrics::{DiskMetrics, DiskStats, KindMetrics, PatchStat};
pub use patch::{DiskPatch, PatchFrame};
pub use reader::{DiskReader, Fill};
pub use scrub::{MetadataSource, ScrubOutcome, ScrubStats};
pub use writer::DiskWriter;

use codec::BlobId;
use index::Index;
use pins::load_pins;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// Quarantined files kept for inspection; older ones are deleted (and all of them count against
/// the byte bound).
const QUARANTINE_KEEP: usize = 32;
/// The directories under the cache root.
const DIRS: [&str; 5] = ["blobs", "tmp", "quarantine", "meta", "patches"];
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
    #[error("cached file for quilt patch {patch_id} is corrupt: {reason}")]
    CorruptPatch {
        patch_id: codec::quilt::QuiltPatchId,
        reason: String,
    },
    #[error("{key}: wrote {written} bytes, expected {expected}")]
    WrongLength {
        key: DiskKey,
        written: u64,
        expected: u64,
    },
    #[error("quilt patch {patch_id}: {reason}")]
    BadPatch {
        patch_id: codec::quilt::QuiltPatchId,
        reason: String,
    },
    #[error("the cache directory {} is in use by another gateway{}; give each gateway its own --cache-dir", dir.display(), holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    Locked {
        dir: PathBuf,
        /// The holder's pid, as its lock file names it.
        holder: Option<u32>,
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
    /// Held for the tier's life: no second gateway uses this directory meanwhile.
    _lock: lock::DirLock,
    scrub: Mutex<scrub::ScrubState>,
}

impl DiskCache {
    /// Open (creating) the cache under `root`, bounded to `capacity` bytes. Removes leftover
    /// temporary files, loads pins, and starts rebuilding the index in the background.
    pub fn open(root: &Path, capacity: u64, metrics: DiskMetrics) -> Result<Arc<Self>, DiskError> {
        fs::create_dir_all(root)?;
        // Before touching anything inside: a directory in use by another gateway is refused.
        let dir_lock = lock::DirLock::acquire(root)?;
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
            _lock: dir_lock,
            scrub: Mutex::new(scrub::ScrubState::default()),
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
                            index.remove(id);
                        }
                    }
                    "patches" => {
                        let ids: Vec<DiskKey> =
                            index.patches.keys().map(|&id| DiskKey::Patch(id)).collect();
                        for key in ids {
                            index.remove(key);
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
        self.path_of_key(&DiskKey::Blob(*id))
    }

    /// `<root>/<blobs|patches>/<first two characters>/<key>`.
    fn path_of_key(&self, key: &DiskKey) -> PathBuf {
        let name = key.to_string();
        self.root.join(key.dir()).join(&name[..2]).join(name)
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
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

    fn publish_gauges(&self) {
        let index = self.lock();
        self.metrics.bytes.set(index.total as f64);
        self.metrics
            .entries
            .set((index.entries.len() + index.patches.len()) as f64);
        let patch_bytes: u64 = index.patches.values().map(|e| e.file_size).sum();
        let kinds = &self.metrics.kinds;
        kinds.entries[0].set(index.entries.len() as f64);
        kinds.entries[1].set(index.patches.len() as f64);
        kinds.bytes[0].set(index.total.saturating_sub(patch_bytes) as f64);
        kinds.bytes[1].set(patch_bytes as f64);
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
    /// Move a bad file aside and forget it; counted as an integrity failure.
    pub fn quarantine(&self, id: &BlobId, reason: &str) {
        self.quarantine_key(&DiskKey::Blob(*id), reason);
    }

    /// [`DiskCache::quarantine`] for a file of any kind.
    pub fn quarantine_key(&self, key: &DiskKey, reason: &str) {
        tracing::error!(%key, kind = key.kind(), reason, "disk cache file failed its integrity check; quarantined");
        self.metrics.integrity_failures.increment(1);
        self.lock().remove(*key);
        if let DiskKey::Patch(id) = key {
            // What is kept beside a patch file belongs to it alone; a refill writes it again.
            self.remove_patch_frame(id);
        }
        let source = self.path_of_key(key);
        let size = fs::metadata(&source).map(|m| m.len()).unwrap_or(0);
        let target = self
            .root
            .join("quarantine")
            .join(format!("{key}.{}", unique_stamp()));
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

    /// Remove a blob from the disk tier (admin purge), and the patches kept of it if it is a
    /// quilt. Returns whether anything was cached.
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
            let writing = index.writing.remove(&DiskKey::Blob(*id)).is_some();
            let mut was = index.remove(id).is_some() || writing;
            // A purged quilt takes its patches with it (a blocked quilt's patches are its bytes):
            // those indexed or being written, and those on disk the index rebuild has not
            // reached yet (a patch ID starts with its quilt ID: they share the shard directory).
            let mut patches: std::collections::BTreeSet<DiskKey> = index
                .patches
                .keys()
                .filter(|p| p.quilt_id == *id)
                .map(|&p| DiskKey::Patch(p))
                .chain(
                    index
                        .writing
                        .keys()
                        .copied()
                        .filter(|k| matches!(k, DiskKey::Patch(p) if p.quilt_id == *id)),
                )
                .collect();
            let name = id.to_string();
            if let Ok(files) = fs::read_dir(self.root.join("patches").join(&name[..2])) {
                patches.extend(files.flatten().filter_map(|file| {
                    let key = DiskKey::parse("patches", file.file_name().to_str()?)?;
                    matches!(key, DiskKey::Patch(p) if p.quilt_id == *id).then_some(key)
                }));
            }
            for key in patches {
                match fs::remove_file(self.path_of_key(&key)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
                index.writing.remove(&key);
                index.remove(key);
                self.remove_metadata_of(&key);
                was = true;
            }
            was
        };
        self.remove_metadata(id);
        self.publish_gauges();
        Ok(was)
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
        let mut patches: Vec<PatchStat> = index
            .patches
            .iter()
            .map(|(id, e)| PatchStat {
                patch_id: id.to_string(),
                quilt_id: id.quilt_id,
                len: e.len,
                hits: e.hits,
            })
            .collect();
        patches.sort_by(|a, b| b.hits.cmp(&a.hits).then(b.len.cmp(&a.len)));
        patches.truncate(top);
        let patch_bytes: u64 = index.patches.values().map(|e| e.file_size).sum();
        DiskStats {
            entries: index.entries.len() + index.patches.len(),
            blob_entries: index.entries.len(),
            patch_entries: index.patches.len(),
            patch_bytes,
            top_patches: patches,
            bytes: index.total,
            capacity: self.capacity,
            effective_capacity: self.effective_capacity(),
            quarantine_bytes: index.quarantine_total,
            pinned: index.pins.len(),
            index_ready: self.index_ready(),
            indexed_at_start: self.indexed_at_start(),
            top: entries,
            scrub: self.scrub_stats(),
        }
    }

    /// Evict least-recently-used unpinned blobs until the total fits the bound.
    fn enforce_bound(&self) {
        let mut index = self.lock();
        self.make_room(&mut index, 0, None);
        drop(index);
        self.publish_gauges();
    }

    /// Evict least-recently-used unpinned blobs and patches (never `keep`) until `needed` more
    /// bytes fit the bound. Runs under the index lock, so no one sees the tier over its bound.
    fn make_room(&self, index: &mut Index, needed: u64, keep: Option<&DiskKey>) {
        let capacity = self.effective_capacity();
        while index.held() + needed > capacity {
            // Quarantined files are kept only for inspection: they go before any cached blob.
            if index.drop_oldest_quarantined() {
                continue;
            }
            let Some(victim) = index.victim(keep) else {
                tracing::warn!(
                    total = index.total,
                    capacity,
                    "disk cache over its bound, but everything left is pinned"
                );
                return;
            };
            index.remove(victim);
            self.metrics.evictions.increment(1);
            self.metrics.kinds.evicted(&victim);
            self.remove_metadata_of(&victim);
            if let Err(e) = fs::remove_file(self.path_of_key(&victim)) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(key = %victim, error = %e, "could not delete an evicted file");
                }
            }
        }
    }
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
