//! The scrub: re-verify every cached file against its Blob ID, in the background, at a bounded
//! rate.
//!
//! The per-chunk CRC32C catches rot, torn writes and truncation, but not someone (or a bug)
//! that rewrote content *and* its checksums. The scrub closes that gap: it reads each file and
//! checks every row holding blob bytes as a systematic primary sliver against the blob's
//! verified metadata, the same check a fill makes on a sliver from a node. A file that fails is
//! quarantined (so the next read refills it), counted and logged.
//!
//! Metadata is kept beside the file, in `<cache-dir>/meta/<blob-id>` (BCS `BlobMetadataWithId`,
//! re-verified against the Blob ID whenever it is loaded, so a tampered copy is refused, never
//! trusted). A file without it (written before the scrub existed, or whose metadata was lost)
//! gets it from a [`MetadataSource`] (the gateway's filler: its metadata cache, else the nodes),
//! which is then stored beside the file. A blob whose metadata cannot be had (the nodes no
//! longer know it, or are down) is counted as unscrubbable for this pass and tried again on the
//! next; it stays served, checked by its CRC32C.
//!
//! Pace: bytes are read at most `rate` bytes per second (0 turns the scrub off); after a full
//! pass the next starts [`PASS_INTERVAL`] later. Memory: one row plus its expansion at a time,
//! as a fill verifying one sliver.

use super::format::{read_header, HEADER_LEN};
use super::{write_atomically, DiskCache, DiskError};
use bytes::Bytes;
use codec::{BlobId, Sliver, SliverKind, VerifiedMetadata};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Pause between the end of one pass and the start of the next.
pub const PASS_INTERVAL: Duration = Duration::from_secs(60);

/// Where the scrub gets verified metadata for a file that has none beside it.
pub trait MetadataSource: Send + Sync {
    fn metadata(
        &self,
        id: BlobId,
    ) -> Pin<Box<dyn Future<Output = Result<Arc<VerifiedMetadata>, String>> + Send + '_>>;
    /// The committee's encoding, to re-verify metadata stored beside a file.
    fn encoding(&self) -> Option<codec::EncodingConfig>;
}

/// Scrub progress, for `/admin/cache`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScrubStats {
    /// Bytes per second; 0: off.
    pub rate: u64,
    /// Passes completed since start.
    pub passes: u64,
    /// Files checked and files in the current pass.
    pub pass_files_done: u64,
    pub pass_files: u64,
    pub files_scrubbed: u64,
    pub bytes_scrubbed: u64,
    pub failures: u64,
    /// Files whose metadata could not be had in the last attempt (tried again next pass).
    pub unscrubbable: u64,
    /// Seconds since the least recently scrubbed indexed file was last scrubbed (a file never
    /// scrubbed counts from when the scrub first saw it).
    pub oldest_unscrubbed_age_secs: u64,
}

/// What the scrub remembers between files.
#[derive(Default)]
pub(super) struct ScrubState {
    pub(super) stats: ScrubStats,
    /// When each file was last scrubbed (or first seen, if never).
    pub(super) verified_at: HashMap<BlobId, Instant>,
}

/// How one file's scrub ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ScrubOutcome {
    /// Every row with blob bytes matched its sliver hash.
    Verified { bytes: u64 },
    /// A row did not match, or the file's header and length disagree with the metadata: the
    /// file was quarantined.
    Failed { reason: String },
    /// Not indexed any more (evicted, purged) or gone from the directory.
    Gone,
}

impl DiskCache {
    fn meta_path(&self, id: &BlobId) -> std::path::PathBuf {
        self.root.join("meta").join(id.to_string())
    }

    /// Keep `meta` (already verified) beside the file of its blob.
    pub fn store_metadata(&self, meta: &VerifiedMetadata) -> io::Result<()> {
        let body = codec::bcs::encode_metadata_with_id(&meta.blob_id(), meta.metadata());
        let path = self.meta_path(&meta.blob_id());
        let write = || write_atomically(&path, &self.root.join("tmp"), &body);
        match write() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.recreate_dirs()? => write(),
            other => other,
        }
    }

    /// The metadata beside `id`'s file, verified against the Blob ID; `None` if absent or if it
    /// does not verify (then it is deleted, to be fetched again).
    pub fn stored_metadata(
        &self,
        id: &BlobId,
        config: codec::EncodingConfig,
    ) -> Option<VerifiedMetadata> {
        let bytes = std::fs::read(self.meta_path(id)).ok()?;
        match VerifiedMetadata::from_bcs(*id, &bytes, config) {
            Ok(meta) => Some(meta),
            Err(e) => {
                tracing::warn!(blob_id = %id, error = %e, "metadata kept beside a cached file does not verify; fetching it again");
                self.remove_metadata(id);
                None
            }
        }
    }

    pub(super) fn remove_metadata(&self, id: &BlobId) {
        let _ = std::fs::remove_file(self.meta_path(id));
    }

    /// Check `id`'s file against `meta`, reading at most `rate` bytes per second (0: no pause).
    /// A file that fails is quarantined before this returns.
    pub fn scrub_file(
        &self,
        id: &BlobId,
        meta: &VerifiedMetadata,
        rate: u64,
    ) -> Result<ScrubOutcome, DiskError> {
        if self.len_of(id).is_none() {
            return Ok(ScrubOutcome::Gone);
        }
        let (header, _) = match read_header(&self.path_of(id), id) {
            Ok(opened) => opened,
            Err(DiskError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(ScrubOutcome::Gone)
            }
            Err(DiskError::Corrupt { reason, .. }) => return Ok(self.scrub_failed(id, reason)),
            Err(e) => return Err(e),
        };
        let len = meta.unencoded_length();
        if header.len != len {
            let reason = format!(
                "file holds {} bytes, the Blob ID commits to {len}",
                header.len
            );
            return Ok(self.scrub_failed(id, reason));
        }
        let config = meta.config();
        let symbol_size = meta.symbol_size();
        let row_len = config.row_len(symbol_size);
        let started = Instant::now();
        let mut read = 0u64;
        let mut row = 0u16;
        while read < len {
            let take = row_len.min(len - read);
            let mut buf = vec![0u8; row_len as usize];
            if let Err(e) = std::os::unix::fs::FileExt::read_exact_at(
                &header.file,
                &mut buf[..take as usize],
                HEADER_LEN + read,
            ) {
                return Ok(self.scrub_failed(id, format!("row {row} unreadable: {e}")));
            }
            // The last row is padded with zeros, as the encoder pads it.
            let sliver = Sliver {
                kind: SliverKind::Primary,
                index: row,
                symbol_size,
                data: Bytes::from(buf),
            };
            if let Err(e) = meta.verify_sliver(sliver) {
                return Ok(
                    self.scrub_failed(id, format!("row {row} does not match the Blob ID: {e}"))
                );
            }
            read += take;
            row += 1;
            if rate > 0 {
                let due = Duration::from_secs_f64(read as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        self.metrics.scrub_files.increment(1);
        self.metrics.scrub_bytes.increment(len);
        Ok(ScrubOutcome::Verified { bytes: len })
    }

    fn scrub_failed(&self, id: &BlobId, reason: String) -> ScrubOutcome {
        tracing::error!(blob_id = %id, %reason, "the scrub found a cached file that does not match its Blob ID");
        self.metrics.scrub_failures.increment(1);
        self.quarantine(id, &format!("scrub: {reason}"));
        ScrubOutcome::Failed { reason }
    }

    /// Scrub progress so far.
    pub fn scrub_stats(&self) -> ScrubStats {
        let state = self.scrub_state();
        let mut stats = state.stats.clone();
        stats.oldest_unscrubbed_age_secs = self.oldest_unscrubbed(&state).as_secs();
        stats
    }

    fn scrub_state(&self) -> std::sync::MutexGuard<'_, ScrubState> {
        self.scrub.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn oldest_unscrubbed(&self, state: &ScrubState) -> Duration {
        state
            .verified_at
            .values()
            .min()
            .map(|at| at.elapsed())
            .unwrap_or_default()
    }

    /// Run one pass over the files indexed now; returns how many were checked. Blocking.
    /// `keep_going` is asked before each file: false ends the pass there (the gateway stopped).
    pub fn scrub_pass(
        &self,
        source: &dyn MetadataSource,
        runtime: &tokio::runtime::Handle,
        rate: u64,
        keep_going: &dyn Fn() -> bool,
    ) -> u64 {
        let Some(encoding) = source.encoding() else {
            return 0;
        };
        let mut ids: Vec<BlobId> = self.lock().entries.keys().copied().collect();
        {
            let mut state = self.scrub_state();
            let now = Instant::now();
            state.verified_at.retain(|id, _| ids.contains(id));
            for id in &ids {
                state.verified_at.entry(*id).or_insert(now);
            }
            // Least recently verified first.
            ids.sort_by_key(|id| state.verified_at.get(id).copied());
            state.stats.rate = rate;
            state.stats.pass_files = ids.len() as u64;
            state.stats.pass_files_done = 0;
            state.stats.unscrubbable = 0;
        }
        let mut checked = 0;
        for id in ids {
            if !keep_going() {
                return checked;
            }
            let meta = match self.stored_metadata(&id, encoding) {
                Some(meta) => Some(meta),
                None => match runtime.block_on(source.metadata(id)) {
                    Ok(meta) => {
                        if let Err(e) = self.store_metadata(&meta) {
                            tracing::debug!(blob_id = %id, error = %e, "cannot keep metadata beside a cached file");
                        }
                        Some((*meta).clone())
                    }
                    Err(e) => {
                        tracing::info!(blob_id = %id, error = %e, "cannot scrub a cached file: its metadata is not available now; it stays served, checked by its checksums");
                        None
                    }
                },
            };
            let outcome = match meta {
                Some(meta) => self.scrub_file(&id, &meta, rate),
                None => {
                    self.metrics.scrub_unscrubbable.increment(1);
                    let mut state = self.scrub_state();
                    state.stats.unscrubbable += 1;
                    state.stats.pass_files_done += 1;
                    continue;
                }
            };
            let mut state = self.scrub_state();
            state.stats.pass_files_done += 1;
            match outcome {
                Ok(ScrubOutcome::Verified { bytes }) => {
                    checked += 1;
                    state.stats.files_scrubbed += 1;
                    state.stats.bytes_scrubbed += bytes;
                    state.verified_at.insert(id, Instant::now());
                }
                Ok(ScrubOutcome::Failed { .. }) => {
                    checked += 1;
                    state.stats.failures += 1;
                    state.verified_at.remove(&id);
                }
                Ok(ScrubOutcome::Gone) => {
                    state.verified_at.remove(&id);
                }
                Err(e) => {
                    tracing::warn!(blob_id = %id, error = %e, "the scrub could not read a cached file");
                }
            }
            let age = self.oldest_unscrubbed(&state);
            self.metrics.scrub_oldest_age.set(age.as_secs_f64());
        }
        self.scrub_state().stats.passes += 1;
        checked
    }
}

/// Start the scrub on its own thread at `rate` bytes per second (0: not started). It holds
/// only weak references: it ends once the tier or the source is dropped.
pub fn spawn(disk: &Arc<DiskCache>, source: Weak<dyn MetadataSource>, rate: u64) {
    if rate == 0 {
        return;
    }
    disk.scrub_state().stats.rate = rate;
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let disk = Arc::downgrade(disk);
    let source_weak = source.clone();
    let spawned = std::thread::Builder::new()
        .name("disk-scrub".into())
        .spawn(move || {
            // The lowest CPU priority, for this thread only (Linux nice values are per thread):
            // the scrub is background work, so on a busy core it yields to requests, and
            // `rate` caps it when the core is idle. Measured with the gateway pinned to one
            // core: 1 MiB disk hits lost ~28 % to a scrub at 64 MiB/s at normal priority.
            if let Err(e) = rustix::process::setpriority_process(None, 19) {
                tracing::debug!(error = %e, "cannot lower the disk scrub's priority");
            }
            scrub_loop(&disk, &source, &source_weak, &runtime, rate);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the disk scrub");
    }
}

/// The scrub thread's body: a pass, then [`PASS_INTERVAL`] of rest, until the tier is dropped.
fn scrub_loop(
    disk: &Weak<DiskCache>,
    source: &Weak<dyn MetadataSource>,
    source_weak: &Weak<dyn MetadataSource>,
    runtime: &tokio::runtime::Handle,
    rate: u64,
) {
    loop {
        let (Some(cache), Some(source)) = (disk.upgrade(), source.upgrade()) else {
            return;
        };
        if !cache.index_ready() {
            drop((cache, source));
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        // Only this thread's references left: the gateway has stopped.
        let alive = || disk.strong_count() > 1 && source_weak.strong_count() > 1;
        cache.scrub_pass(source.as_ref(), runtime, rate, &alive);
        drop((cache, source));
        // Sleep in short steps, so a dropped tier ends the thread soon.
        let until = Instant::now() + PASS_INTERVAL;
        while Instant::now() < until {
            if disk.strong_count() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
