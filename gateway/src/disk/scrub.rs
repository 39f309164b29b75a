//! The scrub: re-verify every cached file against its Blob ID, in the background, at a bounded
//! rate. A quilt patch's file is checked against its quilt's ID, its columns rebuilt from the
//! file and what is kept beside it (`disk/patch.rs`); the rest of this page is about blobs.
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
//! The check is cheap after the first pass over a file. A row's hash in the metadata is the
//! Merkle root over its expansion: its own `ks` symbols, then `f` recovery symbols. The first
//! pass expands each row (the full check, as a fill makes it) and keeps, beside the metadata,
//! the *suffix cover* of the recovery leaves (at most one node per tree level; see
//! `codec::merkle::verify_sliver_with_cover`). Later passes hash only the row's own bytes and
//! combine them with the kept nodes: no Reed–Solomon, about 1/3 fewer bytes hashed. That is as
//! strong against a changed row (the root commits to every source leaf); a forged or damaged
//! kept node can only make an intact row fail, and then the file is quarantined (and refilled)
//! and the nodes are dropped, so the next pass makes the full check again.
//!
//! Meta file (`meta/<blob-id>`): either the bare BCS `BlobMetadataWithId` (written before the
//! covers existed, or before a file's first full check), or, once a pass has checked the file
//! in full:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | magic `WGMETA\0` + version byte `2` |
//! | 8 | 4 | length `L` of the BCS body |
//! | 12 | L | BCS `BlobMetadataWithId` |
//! | 12 + L | 4 | rows `R` with blob bytes |
//! | 16 + L | 2 | nodes per row `C` |
//! | 18 + L | 2 | reserved (0) |
//! | 20 + L | 32·R·C | each row's suffix cover, row by row, bottom up |
//! | end − 4 | 4 | CRC32C of everything before |
//!
//! The CRC32C tells rot in this file from a changed row: a file whose CRC fails is dropped (and
//! its metadata fetched again) instead of failing the blob's file.
//!
//! Pace and priority: bytes are read at most `rate` bytes per second (0 turns the scrub off);
//! after a full pass the next starts [`PASS_INTERVAL`] later. The thread runs under Linux's
//! `SCHED_IDLE` (nice 19 where that is refused): it gets a core only when nothing else wants it,
//! so on a busy gateway it slows down or pauses rather than taking time from requests, and on
//! an idle one it runs at `rate`. A gateway busy on every core for hours therefore scrubs
//! little; `oldest_unscrubbed_age_secs` and the achieved rate show it. Memory: one row plus
//! its expansion at a time, as a fill verifying one sliver, and the covers of the file being
//! checked (`32·C` bytes a row).

use super::format::{read_header, DiskKey, HEADER_LEN};
use super::{write_atomically, DiskCache, DiskError};
use bytes::Bytes;
use codec::merkle::{self, Node};
use codec::{BlobId, Sliver, SliverKind, VerifiedMetadata};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Pause between the end of one pass and the start of the next.
pub const PASS_INTERVAL: Duration = Duration::from_secs(60);

/// The meta file's magic: `WGMETA\0` and the version byte (see the module docs).
const META_MAGIC: [u8; 8] = *b"WGMETA\0\x02";
/// Bytes of the meta file before the BCS body, and between it and the covers.
const META_HEAD: usize = 12;
const META_COVER_HEAD: usize = 8;

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
    /// The bound on bytes read per second; 0: off.
    pub rate: u64,
    /// Bytes checked per second in the current pass so far (the last pass between passes):
    /// below `rate` when requests kept the scrub's core busy.
    pub achieved_rate: u64,
    /// How the scrub thread is scheduled: `idle` (`SCHED_IDLE`), `nice-19`, or `normal`.
    pub priority: &'static str,
    /// Passes completed since start.
    pub passes: u64,
    /// Files checked and files in the current pass.
    pub pass_files_done: u64,
    pub pass_files: u64,
    /// Bytes checked so far in the current pass (moves row by row).
    pub pass_bytes_done: u64,
    pub files_scrubbed: u64,
    pub bytes_scrubbed: u64,
    /// Files checked with a kept suffix cover (no expansion) and files checked in full.
    pub files_checked_with_cover: u64,
    pub files_checked_in_full: u64,
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
    pub(super) verified_at: HashMap<DiskKey, Instant>,
    /// When the current (or last) pass started.
    pass_started: Option<Instant>,
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
    /// A quilt patch's file that cannot be checked (what is kept beside it is missing or
    /// damaged): dropped from the tier, so its next read fetches its columns again.
    Dropped { reason: String },
}

/// A meta file's contents: the verified metadata and, once a pass has checked the file in
/// full, each row's suffix cover (`nodes_per_row` nodes a row, rows in order).
struct StoredMeta {
    meta: VerifiedMetadata,
    covers: Option<Vec<Node>>,
}

/// The rows of a blob's file that hold blob bytes, the nodes a suffix cover of one of its
/// primary slivers has, and a row's length.
fn cover_shape(meta: &VerifiedMetadata) -> (usize, usize, u64) {
    let config = meta.config();
    let row_len = config.row_len(meta.symbol_size());
    let rows = meta.unencoded_length().div_ceil(row_len.max(1)) as usize;
    let per_row = merkle::suffix_cover_len(
        usize::from(config.n_shards()),
        usize::from(config.n_secondary_source_symbols()),
    )
    .unwrap_or(0);
    (rows, per_row, row_len)
}

fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// The meta file body for `meta` with `covers` (see the module docs).
fn encode_meta_file(meta: &VerifiedMetadata, covers: &[Node]) -> Vec<u8> {
    let body = codec::bcs::encode_metadata_with_id(&meta.blob_id(), meta.metadata());
    let (rows, per_row, _) = cover_shape(meta);
    let mut out =
        Vec::with_capacity(META_HEAD + body.len() + META_COVER_HEAD + covers.len() * 32 + 4);
    out.extend_from_slice(&META_MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    out.extend_from_slice(&(per_row as u16).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    for node in covers {
        out.extend_from_slice(node);
    }
    let sum = crc32c(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// The parts of a meta file with covers.
struct MetaFileParts<'a> {
    body: &'a [u8],
    rows: u32,
    per_row: u16,
    nodes: &'a [u8],
}

/// Split a meta file with covers into its BCS body and its covers (`None` for a bare BCS file);
/// `Err` when it has the magic but its checksum or lengths are wrong.
fn decode_meta_file(bytes: &[u8]) -> Result<Option<MetaFileParts<'_>>, String> {
    if bytes.len() < META_HEAD || bytes[..8] != META_MAGIC {
        return Ok(None);
    }
    let Some((content, sum)) = bytes.split_last_chunk::<4>() else {
        return Err("too short".into());
    };
    if crc32c(content) != u32::from_le_bytes(*sum) {
        return Err("its CRC32C does not match".into());
    }
    let body_len = u32::from_le_bytes(content[8..12].try_into().expect("4 bytes")) as usize;
    let rest = &content[META_HEAD..];
    if rest.len() < body_len + META_COVER_HEAD {
        return Err("truncated".into());
    }
    let (body, rest) = rest.split_at(body_len);
    let rows = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
    let per_row = u16::from_le_bytes(rest[4..6].try_into().expect("2 bytes"));
    let nodes = &rest[META_COVER_HEAD..];
    if nodes.len() as u64 != u64::from(rows) * u64::from(per_row) * 32 {
        return Err("its covers have the wrong length".into());
    }
    Ok(Some(MetaFileParts {
        body,
        rows,
        per_row,
        nodes,
    }))
}

impl DiskCache {
    fn meta_path(&self, id: &BlobId) -> std::path::PathBuf {
        self.root.join("meta").join(id.to_string())
    }

    /// Keep `meta` (already verified) beside the file of its blob, without covers (the next
    /// pass checks the file in full and adds them).
    pub fn store_metadata(&self, meta: &VerifiedMetadata) -> io::Result<()> {
        let body = codec::bcs::encode_metadata_with_id(&meta.blob_id(), meta.metadata());
        self.write_meta_file(&meta.blob_id(), &body)
    }

    fn write_meta_file(&self, id: &BlobId, body: &[u8]) -> io::Result<()> {
        let path = self.meta_path(id);
        let write = || write_atomically(&path, &self.root.join("tmp"), body);
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
        self.load_meta_file(id, config).map(|stored| stored.meta)
    }

    /// Whether the metadata beside `id`'s file carries the suffix covers of its rows (what the
    /// first full check adds), and how many rows they cover.
    pub fn stored_cover_rows(&self, id: &BlobId, config: codec::EncodingConfig) -> Option<usize> {
        let stored = self.load_meta_file(id, config)?;
        let (_, per_row, _) = cover_shape(&stored.meta);
        Some(stored.covers?.len() / per_row.max(1))
    }

    fn load_meta_file(&self, id: &BlobId, config: codec::EncodingConfig) -> Option<StoredMeta> {
        let bytes = std::fs::read(self.meta_path(id)).ok()?;
        let drop_it = |why: &dyn std::fmt::Display| {
            tracing::warn!(blob_id = %id, error = %why, "metadata kept beside a cached file does not verify; fetching it again");
            self.remove_metadata(id);
            None
        };
        let (body, covers) = match decode_meta_file(&bytes) {
            Ok(None) => (&bytes[..], None),
            Ok(Some(parts)) => (parts.body, Some((parts.rows, parts.per_row, parts.nodes))),
            Err(e) => return drop_it(&e),
        };
        let meta = match VerifiedMetadata::from_bcs(*id, body, config) {
            Ok(meta) => meta,
            Err(e) => return drop_it(&e),
        };
        let (rows, per_row, _) = cover_shape(&meta);
        let covers = covers.and_then(|(r, c, nodes)| {
            // Covers of another shape (another encoding) are ignored: the next full check
            // writes them again.
            (r as usize == rows && usize::from(c) == per_row).then(|| {
                nodes
                    .chunks_exact(32)
                    .map(|n| n.try_into().expect("32 bytes"))
                    .collect()
            })
        });
        Some(StoredMeta { meta, covers })
    }

    pub(super) fn remove_metadata(&self, id: &BlobId) {
        let _ = std::fs::remove_file(self.meta_path(id));
    }

    /// What is kept beside a file of either kind.
    pub(super) fn remove_metadata_of(&self, key: &DiskKey) {
        match key {
            DiskKey::Blob(id) => self.remove_metadata(id),
            DiskKey::Patch(id) => self.remove_patch_frame(id),
        }
    }

    /// Check `id`'s file against `meta`, reading at most `rate` bytes per second (0: no pause):
    /// with the covers kept beside it if there are (and they belong to `meta`), else in full,
    /// keeping the covers for the next time. A file that fails is quarantined before this
    /// returns.
    pub fn scrub_file(
        &self,
        id: &BlobId,
        meta: &VerifiedMetadata,
        rate: u64,
    ) -> Result<ScrubOutcome, DiskError> {
        let covers = self
            .load_meta_file(id, *meta.config())
            .filter(|stored| stored.meta == *meta)
            .and_then(|stored| stored.covers);
        self.scrub_file_with(id, meta, covers, rate)
    }

    fn scrub_file_with(
        &self,
        id: &BlobId,
        meta: &VerifiedMetadata,
        covers: Option<Vec<Node>>,
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
        let symbol_size = meta.symbol_size();
        let (rows, per_row, row_len) = cover_shape(meta);
        let with_cover = covers.is_some();
        let mut new_covers = Vec::with_capacity(if with_cover { 0 } else { rows * per_row });
        let started = Instant::now();
        let mut read = 0u64;
        let mut row = 0u16;
        // One row buffer for the whole file: a fresh multi-MiB buffer per row would be mapped,
        // faulted in and unmapped each time, taking the process's memory-map lock that the
        // request threads need too (and this thread runs at idle priority).
        let mut buf = vec![0u8; row_len as usize];
        while read < len {
            let take = row_len.min(len - read);
            if let Err(e) = std::os::unix::fs::FileExt::read_exact_at(
                &header.file,
                &mut buf[..take as usize],
                HEADER_LEN + read,
            ) {
                return Ok(self.scrub_failed(id, format!("row {row} unreadable: {e}")));
            }
            // The last row is padded with zeros, as the encoder pads it.
            buf[take as usize..].fill(0);
            let sliver = Sliver {
                kind: SliverKind::Primary,
                index: row,
                symbol_size,
                data: Bytes::from(std::mem::take(&mut buf)),
            };
            let checked = match &covers {
                Some(covers) => {
                    let at = usize::from(row) * per_row;
                    merkle::verify_sliver_with_cover(meta, &sliver, &covers[at..at + per_row])
                }
                None => merkle::verify_sliver_and_cover(meta, &sliver)
                    .map(|cover| new_covers.extend(cover)),
            };
            if let Err(e) = checked {
                if with_cover {
                    // The row or the kept nodes changed; either way they are not to be trusted
                    // again: the next pass checks the refilled file in full.
                    if let Err(e) = self.store_metadata(meta) {
                        tracing::debug!(blob_id = %id, error = %e, "cannot drop the covers kept beside a cached file");
                    }
                }
                let how = if with_cover {
                    " (checked with the kept covers)"
                } else {
                    ""
                };
                return Ok(self.scrub_failed(
                    id,
                    format!("row {row} does not match the Blob ID{how}: {e}"),
                ));
            }
            // The buffer back (no copy: the `Bytes` is its only holder).
            buf = Vec::from(sliver.data);
            read += take;
            row += 1;
            self.scrub_progress(take, started);
            if rate > 0 {
                let due = Duration::from_secs_f64(read as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        if !with_cover {
            if let Err(e) = self.write_meta_file(id, &encode_meta_file(meta, &new_covers)) {
                tracing::debug!(blob_id = %id, error = %e, "cannot keep the rows' covers beside a cached file");
            }
        }
        {
            let mut state = self.scrub_state();
            if with_cover {
                state.stats.files_checked_with_cover += 1;
            } else {
                state.stats.files_checked_in_full += 1;
            }
        }
        self.metrics.scrub_files.increment(1);
        self.metrics.scrub_bytes.increment(len);
        self.metrics.kinds.scrubbed(&DiskKey::Blob(*id));
        Ok(ScrubOutcome::Verified { bytes: len })
    }

    /// Count `bytes` more checked in this pass and publish the rate achieved so far.
    pub(super) fn scrub_progress(&self, bytes: u64, file_started: Instant) {
        let mut state = self.scrub_state();
        state.stats.pass_bytes_done += bytes;
        let since = *state.pass_started.get_or_insert(file_started);
        let secs = since.elapsed().as_secs_f64();
        if secs > 0.0 {
            state.stats.achieved_rate = (state.stats.pass_bytes_done as f64 / secs) as u64;
            self.metrics
                .scrub_achieved_rate
                .set(state.stats.achieved_rate as f64);
        }
    }

    fn scrub_failed(&self, id: &BlobId, reason: String) -> ScrubOutcome {
        self.scrub_failed_key(&DiskKey::Blob(*id), reason)
    }

    /// A file that does not match the ID it is checked against (a patch's: its quilt's):
    /// quarantined and counted.
    pub(super) fn scrub_failed_key(&self, key: &DiskKey, reason: String) -> ScrubOutcome {
        tracing::error!(%key, kind = key.kind(), %reason, "the scrub found a cached file that does not match its Blob ID");
        // Quarantined before it is counted: whoever sees the count finds the file gone.
        self.quarantine_key(key, &format!("scrub: {reason}"));
        self.metrics.scrub_failures.increment(1);
        self.metrics.kinds.scrub_failed(key);
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
        let mut ids: Vec<DiskKey> = {
            let index = self.lock();
            let blobs = index.entries.keys().map(|&id| DiskKey::Blob(id));
            blobs
                .chain(index.patches.keys().map(|&id| DiskKey::Patch(id)))
                .collect()
        };
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
            state.stats.pass_bytes_done = 0;
            state.pass_started = Some(Instant::now());
            state.stats.unscrubbable = 0;
        }
        let mut checked = 0;
        for key in ids {
            if !keep_going() {
                return checked;
            }
            let id = match key {
                DiskKey::Blob(id) => id,
                DiskKey::Patch(patch_id) => {
                    // Everything a patch's check needs is kept beside its file.
                    let outcome = self.scrub_patch(&patch_id, encoding);
                    self.scrub_counted(key, outcome);
                    continue;
                }
            };
            let stored = match self.load_meta_file(&id, encoding) {
                Some(stored) => Some(stored),
                None => match runtime.block_on(source.metadata(id)) {
                    Ok(meta) => {
                        if let Err(e) = self.store_metadata(&meta) {
                            tracing::debug!(blob_id = %id, error = %e, "cannot keep metadata beside a cached file");
                        }
                        Some(StoredMeta {
                            meta: (*meta).clone(),
                            covers: None,
                        })
                    }
                    Err(e) => {
                        tracing::info!(blob_id = %id, error = %e, "cannot scrub a cached file: its metadata is not available now; it stays served, checked by its checksums");
                        None
                    }
                },
            };
            let outcome = match stored {
                Some(StoredMeta { meta, covers }) => self.scrub_file_with(&id, &meta, covers, rate),
                None => {
                    self.metrics.scrub_unscrubbable.increment(1);
                    let mut state = self.scrub_state();
                    state.stats.unscrubbable += 1;
                    state.stats.pass_files_done += 1;
                    continue;
                }
            };
            checked += u64::from(self.scrub_counted(key, outcome));
        }
        self.scrub_state().stats.passes += 1;
        checked
    }

    /// Record how `key`'s check ended in the pass's stats; true if the file was checked.
    fn scrub_counted(&self, key: DiskKey, outcome: Result<ScrubOutcome, DiskError>) -> bool {
        let mut state = self.scrub_state();
        state.stats.pass_files_done += 1;
        let checked = match outcome {
            Ok(ScrubOutcome::Verified { bytes }) => {
                state.stats.files_scrubbed += 1;
                state.stats.bytes_scrubbed += bytes;
                state.verified_at.insert(key, Instant::now());
                true
            }
            Ok(ScrubOutcome::Failed { .. }) => {
                state.stats.failures += 1;
                state.verified_at.remove(&key);
                true
            }
            Ok(ScrubOutcome::Dropped { .. }) => {
                self.metrics.scrub_unscrubbable.increment(1);
                state.stats.unscrubbable += 1;
                state.verified_at.remove(&key);
                false
            }
            Ok(ScrubOutcome::Gone) => {
                state.verified_at.remove(&key);
                false
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "the scrub could not read a cached file");
                false
            }
        };
        let age = self.oldest_unscrubbed(&state);
        self.metrics.scrub_oldest_age.set(age.as_secs_f64());
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
            let priority = lower_priority();
            if let Some(disk) = disk.upgrade() {
                disk.scrub_state().stats.priority = priority;
            }
            scrub_loop(&disk, &source, &source_weak, &runtime, rate);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the disk scrub");
    }
}

/// Put the calling thread (the scrub's) at the lowest CPU priority; returns what it got.
///
/// The scrub is background work: it should take a core only when requests leave it idle, and
/// `rate` caps it then. Nice 19 is not enough for that: CFS still gives a nice-19 thread about
/// 1.5 % of a contended core per runnable nice-0 thread, and with the gateway on one core the
/// scrub at 64 MiB/s cost 1 MiB hits 17 % at nice 19 (28 % at nice 0; BENCHMARKS.md). Under
/// `SCHED_IDLE` it runs only when nothing else is runnable there. Both are per thread on Linux.
fn lower_priority() -> &'static str {
    let mut got = "normal";
    if let Err(e) = rustix::process::setpriority_process(None, 19) {
        tracing::debug!(error = %e, "cannot lower the disk scrub's nice value");
    } else {
        got = "nice-19";
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[repr(C)]
        struct SchedParam {
            sched_priority: std::ffi::c_int,
        }
        const SCHED_IDLE: std::ffi::c_int = 5;
        extern "C" {
            fn sched_setscheduler(
                pid: std::ffi::c_int,
                policy: std::ffi::c_int,
                param: *const SchedParam,
            ) -> std::ffi::c_int;
        }
        let param = SchedParam { sched_priority: 0 };
        // SAFETY: `param` is a valid `struct sched_param` for the call's duration; pid 0 is
        // the calling thread (Linux schedules threads, not processes), and lowering one's own
        // policy needs no privilege.
        if unsafe { sched_setscheduler(0, SCHED_IDLE, &param) } == 0 {
            got = "idle";
        } else {
            tracing::debug!(error = %io::Error::last_os_error(), "cannot put the disk scrub under SCHED_IDLE; it keeps nice 19");
        }
    }
    got
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
