//! What the disk tier reports: metric handles and the `/admin/cache` snapshot.

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
    /// Scrub progress (see [`super::scrub`]).
    pub scrub: super::ScrubStats,
}
