//! The in-memory index of cached files (sizes, LRU order, pins, open handles) and its rebuild
//! from the directory at start. Blobs and quilt patches ([`DiskKey`]) share one LRU order and
//! one byte bound.

use super::format::{read_header, read_header_of, DiskKey, Format};
use super::{DiskCache, DiskError, OPEN_HANDLES};
use codec::quilt::QuiltPatchId;
use codec::BlobId;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

/// One indexed blob or patch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    /// Blob length (content bytes).
    pub(super) len: u64,
    /// Bytes the file takes (header, content and chunk table): what the bound counts.
    pub(super) file_size: u64,
    /// Logical clock of the last use: eviction removes the smallest first.
    pub(super) tick: u64,
    pub(super) hits: u64,
}

#[derive(Default)]
pub(super) struct Index {
    /// Cached blobs.
    pub(super) entries: HashMap<BlobId, Entry>,
    /// Cached quilt patches (issue 16): a map of their own, so the blob read path looks blobs
    /// up by Blob ID as before.
    pub(super) patches: HashMap<QuiltPatchId, Entry>,
    /// Both kinds, least recently used first: eviction takes from the front.
    pub(super) by_age: BTreeSet<(u64, DiskKey)>,
    /// Pinned blobs (patches are not pinned).
    pub(super) pins: HashSet<BlobId>,
    /// Writers in progress, by key: a purge removes the entry, and a writer whose ticket is
    /// gone discards its file at commit instead of bringing the blob back.
    pub(super) writing: HashMap<DiskKey, u64>,
    /// Open, checked files of recently read blobs (at most [`OPEN_HANDLES`]), so a hit skips
    /// the open and the header and table checks. Dropped with the entry: an evicted, purged or
    /// quarantined blob is never read through a stale handle.
    pub(super) handles: HashMap<BlobId, Arc<OpenBlob>>,
    /// The ids in `handles`, in the order they were opened; the oldest is closed first.
    pub(super) handle_order: VecDeque<BlobId>,
    pub(super) total: u64,
    /// Quarantined files kept for inspection (oldest first) with their sizes, and their sum:
    /// they count against the bound and are deleted first to make room.
    pub(super) quarantined: VecDeque<(PathBuf, u64)>,
    pub(super) quarantine_total: u64,
    pub(super) clock: u64,
}

/// A cached blob's file, opened and its header, size and chunk table checked.
pub(super) struct OpenBlob {
    pub(super) file: File,
    /// How its chunks are checked (files of format 1 stay readable).
    pub(super) format: Format,
    pub(super) len: u64,
    pub(super) table: Arc<[u8]>,
}

impl Index {
    pub(super) fn next_tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub(super) fn insert(&mut self, key: impl Into<DiskKey>, len: u64, file_size: u64, tick: u64) {
        let key = key.into();
        self.remove(key);
        let entry = Entry {
            len,
            file_size,
            tick,
            hits: 0,
        };
        match key {
            DiskKey::Blob(id) => self.entries.insert(id, entry),
            DiskKey::Patch(id) => self.patches.insert(id, entry),
        };
        self.by_age.insert((tick, key));
        self.total += file_size;
    }

    pub(super) fn remove(&mut self, key: impl Into<DiskKey>) -> Option<Entry> {
        let key = key.into();
        let entry = match &key {
            DiskKey::Blob(id) => {
                if self.handles.remove(id).is_some() {
                    self.handle_order.retain(|open| open != id);
                }
                self.entries.remove(id)?
            }
            DiskKey::Patch(id) => self.patches.remove(id)?,
        };
        self.by_age.remove(&(entry.tick, key));
        self.total -= entry.file_size;
        Some(entry)
    }

    /// The entry of `key`, if indexed.
    pub(super) fn get(&self, key: &DiskKey) -> Option<&Entry> {
        match key {
            DiskKey::Blob(id) => self.entries.get(id),
            DiskKey::Patch(id) => self.patches.get(id),
        }
    }

    /// Count a use of patch `id` (the LRU order and its hits), as [`Index::touch`] for blobs.
    pub(super) fn touch_patch(&mut self, id: &QuiltPatchId) {
        let tick = self.next_tick();
        if let Some(entry) = self.patches.get_mut(id) {
            self.by_age.remove(&(entry.tick, DiskKey::Patch(*id)));
            entry.tick = tick;
            entry.hits += 1;
            self.by_age.insert((tick, DiskKey::Patch(*id)));
        }
    }

    /// Keep `handle` for `id` (still indexed), closing the oldest handle beyond the bound.
    pub(super) fn keep_handle(&mut self, id: BlobId, handle: Arc<OpenBlob>) {
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
    pub(super) fn held(&self) -> u64 {
        self.total + self.quarantine_total
    }

    /// Delete the oldest quarantined file; false if there is none.
    pub(super) fn drop_oldest_quarantined(&mut self) -> bool {
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

    pub(super) fn touch(&mut self, id: &BlobId) {
        let tick = self.next_tick();
        if let Some(entry) = self.entries.get_mut(id) {
            self.by_age.remove(&(entry.tick, DiskKey::Blob(*id)));
            entry.tick = tick;
            entry.hits += 1;
            self.by_age.insert((tick, DiskKey::Blob(*id)));
        }
    }

    /// The least recently used entry that is not a pinned blob and not `keep`.
    pub(super) fn victim(&self, keep: Option<&DiskKey>) -> Option<DiskKey> {
        self.by_age.iter().map(|(_, key)| *key).find(|key| {
            Some(key) != keep
                && match key {
                    DiskKey::Blob(id) => !self.pins.contains(id),
                    DiskKey::Patch(_) => true,
                }
        })
    }
}
impl DiskCache {
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
                if index.writing.contains_key(&DiskKey::Blob(*id)) {
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

    pub(super) fn rebuild_index(&self) {
        let mut found: Vec<(SystemTime, DiskKey, u64, u64)> = Vec::new();
        for dir in ["blobs", "patches"] {
            let shards = match fs::read_dir(self.root.join(dir)) {
                Ok(shards) => shards,
                Err(e) => {
                    tracing::error!(dir, error = %e, "cannot list the disk cache; it starts without these files");
                    continue;
                }
            };
            for shard in shards.flatten() {
                let Ok(files) = fs::read_dir(shard.path()) else {
                    continue;
                };
                for file in files.flatten() {
                    let path = file.path();
                    let Some(key) = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| DiskKey::parse(dir, n))
                    else {
                        tracing::warn!(path = %path.display(), "ignoring a file that is not named by a Blob ID or a patch ID");
                        continue;
                    };
                    match read_header_of(&path, &key) {
                        Ok((header, file_size)) => {
                            let file_size = file_size + self.beside_bytes(&key);
                            let mtime = file
                                .metadata()
                                .and_then(|m| m.modified())
                                .unwrap_or(SystemTime::UNIX_EPOCH);
                            found.push((mtime, key, header.len, file_size));
                        }
                        Err(e) => self.quarantine_key(&key, &e.to_string()),
                    }
                }
            }
        }
        // Oldest first, so the oldest get the smallest ticks and are evicted first.
        found.sort();
        for (_, key, len, file_size) in found {
            let mut index = self.lock();
            if index.get(&key).is_none() {
                let tick = index.next_tick();
                index.insert(key, len, file_size, tick);
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
}
