//! What the disk tier reports: metric handles and the `/admin/cache` snapshot.

use super::DiskKey;
use codec::BlobId;

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
    /// Files and bytes the scrub found matching their Blob ID.
    pub scrub_files: metrics::Counter,
    pub scrub_bytes: metrics::Counter,
    /// Files the scrub found not matching their Blob ID (each quarantined).
    pub scrub_failures: metrics::Counter,
    /// Files the scrub could not check: no metadata to be had for them at the time.
    pub scrub_unscrubbable: metrics::Counter,
    /// Seconds since the least recently scrubbed file was scrubbed.
    pub scrub_oldest_age: metrics::Gauge,
    /// Bytes per second the scrub checked in its current (or last) pass.
    pub scrub_achieved_rate: metrics::Gauge,
    /// The same by kind of file (blob or quilt patch).
    pub kinds: KindMetrics,
}

/// Disk-tier metrics by kind of file (`kind` = `blob` or `patch`, issue 16); index 0 is
/// blobs, 1 patches. Registered with their help texts by [`KindMetrics::register`].
#[derive(Clone)]
pub struct KindMetrics {
    /// Files indexed and their bytes on the device.
    pub entries: [metrics::Gauge; 2],
    pub bytes: [metrics::Gauge; 2],
    /// Files written (committed).
    pub writes: [metrics::Counter; 2],
    /// Files evicted to stay under the bound.
    pub evictions: [metrics::Counter; 2],
    /// Files the scrub verified, and found not matching (each quarantined).
    pub scrub_files: [metrics::Counter; 2],
    pub scrub_failures: [metrics::Counter; 2],
}

const KINDS: [&str; 2] = ["blob", "patch"];

fn slot(key: &DiskKey) -> usize {
    match key {
        DiskKey::Blob(_) => 0,
        DiskKey::Patch(_) => 1,
    }
}

impl KindMetrics {
    /// Handles in the current recorder (call inside the gateway's `with_local_recorder`).
    pub fn register() -> Self {
        metrics::describe_gauge!(
            "gateway_disk_cache_kind_entries",
            "Files in the disk tier, by kind: blob (a whole blob) or patch (a quilt patch read from its columns)."
        );
        metrics::describe_gauge!(
            "gateway_disk_cache_kind_bytes",
            metrics::Unit::Bytes,
            "Bytes of files in the disk tier (headers and checksums included), by kind: blob or patch."
        );
        metrics::describe_counter!(
            "gateway_disk_cache_writes_total",
            "Files written to the disk tier, by kind: blob or patch."
        );
        metrics::describe_counter!(
            "gateway_disk_cache_kind_evictions_total",
            "Files evicted from the disk tier to stay under its bound, by kind: blob or patch."
        );
        metrics::describe_counter!(
            "gateway_disk_scrub_kind_files_total",
            "Cached files the scrub verified (a blob against its Blob ID, a patch against its quilt's), by kind."
        );
        metrics::describe_counter!(
            "gateway_disk_scrub_kind_failures_total",
            "Cached files the scrub found not matching (each quarantined), by kind: blob or patch."
        );
        Self {
            entries: KINDS.map(|k| metrics::gauge!("gateway_disk_cache_kind_entries", "kind" => k)),
            bytes: KINDS.map(|k| metrics::gauge!("gateway_disk_cache_kind_bytes", "kind" => k)),
            writes: KINDS
                .map(|k| metrics::counter!("gateway_disk_cache_writes_total", "kind" => k)),
            evictions: KINDS
                .map(|k| metrics::counter!("gateway_disk_cache_kind_evictions_total", "kind" => k)),
            scrub_files: KINDS
                .map(|k| metrics::counter!("gateway_disk_scrub_kind_files_total", "kind" => k)),
            scrub_failures: KINDS
                .map(|k| metrics::counter!("gateway_disk_scrub_kind_failures_total", "kind" => k)),
        }
    }

    pub(super) fn written(&self, key: &DiskKey) {
        self.writes[slot(key)].increment(1);
    }

    pub(super) fn evicted(&self, key: &DiskKey) {
        self.evictions[slot(key)].increment(1);
    }

    pub(super) fn scrubbed(&self, key: &DiskKey) {
        self.scrub_files[slot(key)].increment(1);
    }

    pub(super) fn scrub_failed(&self, key: &DiskKey) {
        self.scrub_failures[slot(key)].increment(1);
    }
}

impl Default for KindMetrics {
    fn default() -> Self {
        Self {
            entries: [metrics::Gauge::noop(), metrics::Gauge::noop()],
            bytes: [metrics::Gauge::noop(), metrics::Gauge::noop()],
            writes: [metrics::Counter::noop(), metrics::Counter::noop()],
            evictions: [metrics::Counter::noop(), metrics::Counter::noop()],
            scrub_files: [metrics::Counter::noop(), metrics::Counter::noop()],
            scrub_failures: [metrics::Counter::noop(), metrics::Counter::noop()],
        }
    }
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
            scrub_files: metrics::Counter::noop(),
            scrub_bytes: metrics::Counter::noop(),
            scrub_failures: metrics::Counter::noop(),
            scrub_unscrubbable: metrics::Counter::noop(),
            scrub_oldest_age: metrics::Gauge::noop(),
            scrub_achieved_rate: metrics::Gauge::noop(),
            kinds: KindMetrics::default(),
        }
    }
}

/// A snapshot of the disk tier for `/admin/cache` and `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiskStats {
    /// Files of both kinds: `blob_entries` + `patch_entries`.
    pub entries: usize,
    pub blob_entries: usize,
    /// Quilt patches cached by patch ID (issue 16), and the bytes their files take.
    pub patch_entries: usize,
    pub patch_bytes: u64,
    /// Most used patch entries.
    pub top_patches: Vec<PatchStat>,
    pub bytes: u64,
    pub capacity: u64,
    /// The bound in force (below `capacity` after the device filled first).
    pub effective_capacity: u64,
    /// Bytes of quarantined files (part of `bytes`' bound, not of `bytes`).
    pub quarantine_bytes: u64,
    pub pinned: usize,
    pub index_ready: bool,
    pub indexed_at_start: u64,
    /// Most used blob entries: (Blob ID, length, hits).
    pub top: Vec<(BlobId, u64, u64)>,
    /// Scrub progress (see [`super::scrub`]).
    pub scrub: super::ScrubStats,
}

/// A patch entry of the disk tier, as `/admin/cache` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PatchStat {
    pub patch_id: String,
    pub quilt_id: BlobId,
    /// Bytes of the file's content: the patch as its columns hold it (header, identifier,
    /// tags, data).
    pub len: u64,
    pub hits: u64,
}
