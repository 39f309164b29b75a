//! Per-gateway metrics, rendered in the Prometheus text format at `GET /metrics`.
//!
//! Each gateway owns its own recorder (not the process-global one), so several gateways in one
//! process (tests, embedded use) keep separate counts. Handles of fixed metrics are registered
//! once; metrics with open-ended labels (node names, status codes) register on use. Label values
//! come from our own committee and status codes, never from client input, so the series count is
//! bounded.

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::sync::Arc;
use std::time::Duration;

/// The gateway's metrics.
pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Blob requests answered from the cache.
    pub memory_hits: Counter,
    pub disk_hits: Counter,
    /// Blob requests that needed the storage nodes.
    pub cache_misses: Counter,
    /// Fills started (one per blob, however many requests wait on it).
    pub fills_started: Counter,
    /// Fills that ended with a verified blob.
    pub fills_succeeded: Counter,
    /// Verified metadata fetches (the first verifying reply of a fan-out).
    pub metadata_fills: Counter,
    /// Metadata requests sent to storage nodes.
    pub metadata_requests: Counter,
    /// Primary sliver requests sent to storage nodes.
    pub primary_sliver_requests: Counter,
    /// Secondary sliver requests sent to storage nodes.
    pub secondary_sliver_requests: Counter,
    /// Bytes fetched from storage nodes (sliver and metadata bodies).
    pub upstream_bytes: Counter,
    /// Blob bytes handed to clients.
    pub bytes_served: Counter,
    pub bytes_served_memory: Counter,
    pub bytes_served_disk: Counter,
    disk: crate::disk::DiskMetrics,
    /// Requests refused because a bound was hit (429).
    pub overloaded: Counter,
    /// Blob requests currently being served.
    pub requests_in_flight: Gauge,
    /// Fill duration, metadata to last verified byte.
    pub fill_seconds: Histogram,
    /// `gateway_responses_total` for 200, 206 and 304.
    responses: [Counter; 3],
    /// When the chain was last read successfully (chain-backed committees only): rendered as
    /// `gateway_chain_view_age_seconds`.
    chain_read_at: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let (
            memory_hits,
            cache_misses,
            fills_started,
            fills_succeeded,
            metadata_fills,
            metadata_requests,
        ) = metrics::with_local_recorder(&recorder, || {
            (
                metrics::counter!("gateway_cache_hits_total", "tier" => "memory"),
                metrics::counter!("gateway_cache_misses_total"),
                metrics::counter!("gateway_fills_started_total"),
                metrics::counter!("gateway_fills_succeeded_total"),
                metrics::counter!("gateway_metadata_fills_total"),
                metrics::counter!("gateway_metadata_requests_total"),
            )
        });
        let (
            primary_sliver_requests,
            secondary_sliver_requests,
            upstream_bytes,
            bytes_served,
            overloaded,
            requests_in_flight,
            fill_seconds,
        ) = metrics::with_local_recorder(&recorder, || {
            (
                metrics::counter!("gateway_sliver_requests_total", "kind" => "primary"),
                metrics::counter!("gateway_sliver_requests_total", "kind" => "secondary"),
                metrics::counter!("gateway_upstream_bytes_total"),
                metrics::counter!("gateway_bytes_served_total", "source" => "upstream"),
                metrics::counter!("gateway_overloaded_total"),
                metrics::gauge!("gateway_requests_in_flight"),
                metrics::histogram!("gateway_fill_seconds"),
            )
        });
        let (disk_hits, bytes_served_memory, bytes_served_disk, disk) =
            metrics::with_local_recorder(&recorder, || {
                (
                    metrics::counter!("gateway_cache_hits_total", "tier" => "disk"),
                    metrics::counter!("gateway_bytes_served_total", "source" => "memory"),
                    metrics::counter!("gateway_bytes_served_total", "source" => "disk"),
                    crate::disk::DiskMetrics {
                        integrity_failures: metrics::counter!(
                            "gateway_disk_cache_integrity_failures_total"
                        ),
                        evictions: metrics::counter!("gateway_disk_cache_evictions_total"),
                        write_errors: metrics::counter!("gateway_disk_cache_write_errors_total"),
                        bytes: metrics::gauge!("gateway_disk_cache_bytes"),
                        entries: metrics::gauge!("gateway_disk_cache_entries"),
                        indexed_at_start: metrics::gauge!("gateway_disk_cache_indexed_at_start"),
                        no_space: metrics::counter!("gateway_disk_cache_no_space_total"),
                        dirs_recreated: metrics::counter!(
                            "gateway_disk_cache_dirs_recreated_total"
                        ),
                        quarantine_bytes: metrics::gauge!("gateway_disk_cache_quarantine_bytes"),
                        effective_bytes: metrics::gauge!("gateway_disk_cache_effective_bytes"),
                    },
                )
            });
        let responses = metrics::with_local_recorder(&recorder, || {
            ["200", "206", "304"]
                .map(|status| metrics::counter!("gateway_responses_total", "status" => status))
        });
        Arc::new(Self {
            chain_read_at: std::sync::Mutex::new(None),
            responses,
            recorder,
            handle,
            memory_hits,
            disk_hits,
            bytes_served_memory,
            bytes_served_disk,
            disk,
            cache_misses,
            fills_started,
            fills_succeeded,
            metadata_fills,
            metadata_requests,
            primary_sliver_requests,
            secondary_sliver_requests,
            upstream_bytes,
            bytes_served,
            overloaded,
            requests_in_flight,
            fill_seconds,
        })
    }

    /// Count a cache hit on `tier`.
    pub fn hit(&self, tier: crate::cache::Tier) {
        match tier {
            crate::cache::Tier::Memory => self.memory_hits.increment(1),
            crate::cache::Tier::Disk => self.disk_hits.increment(1),
        }
    }

    /// The counter of bytes served from `tier` (`None`: from a fill or the nodes).
    pub fn served_from(&self, tier: Option<crate::cache::Tier>) -> Counter {
        match tier {
            Some(crate::cache::Tier::Memory) => self.bytes_served_memory.clone(),
            Some(crate::cache::Tier::Disk) => self.bytes_served_disk.clone(),
            None => self.bytes_served.clone(),
        }
    }

    /// Handles for the disk tier to report into this gateway's metrics.
    pub fn disk_metrics(&self) -> crate::disk::DiskMetrics {
        self.disk.clone()
    }

    /// Count a publish and, when it succeeded, its bytes.
    pub fn publish(&self, ok: bool, bytes: u64) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!("gateway_publishes_total", "outcome" => if ok { "stored" } else { "failed" })
                .increment(1);
            metrics::counter!("gateway_published_bytes_total").increment(bytes);
        });
    }

    /// Count a request refused at admission, before its body was read (`bound`:
    /// `publish_slots`, `publish_memory`, `inference_memory`).
    pub fn admission_refused(&self, bound: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!("gateway_admission_refused_total", "bound" => bound).increment(1)
        });
    }

    /// Count a storage node's failure to deliver (`reason` is one of our fixed words).
    pub fn node_failure(&self, node: &str, reason: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!("gateway_node_failures_total", "node" => node.to_owned(), "reason" => reason)
                .increment(1)
        });
    }

    /// Count a storage node whose TLS certificate did not carry its pinned network key (also
    /// counted by [`Telemetry::node_failure`] with reason `tls_pin`; this family is the alarm).
    pub fn node_tls_pin_failure(&self, node: &str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!("gateway_node_tls_pin_failures_total", "node" => node.to_owned())
                .increment(1)
        });
    }

    /// Count a negative-cache event (issue 21, item 8): `hit` (a request answered "not found"
    /// without asking anyone), `stored` (a believed "not found" remembered), `dropped` (a
    /// remembered miss forgotten because the blob was published or cached here).
    pub fn negative_cache(&self, event: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!("gateway_negative_cache_total", "event" => event).increment(1)
        });
    }

    /// A storage node became slow: fills ask it last for a while (issue 21, item 15).
    pub fn node_marked_slow(&self, node: &str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!("gateway_node_marked_slow_total", "node" => node.to_owned())
                .increment(1)
        });
    }

    /// How many storage nodes fills currently ask last (updated as fills start and nodes
    /// change standing).
    pub fn nodes_slow(&self, count: usize) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::gauge!("gateway_nodes_slow").set(count as f64)
        });
    }

    /// Count the result of asking an upstream (`served`, or an `UpstreamError::kind`). Labels
    /// are the configured upstream URLs, so the series count is bounded.
    pub fn upstream_result(&self, upstream: &str, result: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!("gateway_upstream_results_total", "upstream" => upstream.to_owned(), "result" => result)
                .increment(1)
        });
    }

    /// Count a response by status code. The hit path's statuses use handles registered once;
    /// others are looked up by label (a string and a registry lookup), which is fine off it.
    pub fn response(&self, status: u16) {
        match status {
            200 => return self.responses[0].increment(1),
            206 => return self.responses[1].increment(1),
            304 => return self.responses[2].increment(1),
            _ => {}
        }
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!("gateway_responses_total", "status" => status.to_string())
                .increment(1)
        });
    }

    /// Count a fill that ended in an error, by reason.
    pub fn fill_failed(&self, reason: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!("gateway_fills_failed_total", "reason" => reason).increment(1)
        });
    }

    /// Count one read of the committee from the chain (`result`: `ok` or a `ChainError` kind)
    /// and the gRPC calls it made.
    pub fn chain_refresh(&self, ok: bool, rpcs: u32, result: &'static str) {
        if ok {
            *self.chain_read_at.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(std::time::Instant::now());
        }
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!("gateway_chain_refreshes_total", "result" => result).increment(1);
            metrics::counter!("gateway_chain_rpcs_total").increment(u64::from(rpcs));
        });
    }

    /// Export the epoch and committee of a new chain snapshot.
    pub fn chain_epoch(&self, committees: &crate::committee::Committees) {
        let Some(chain) = &committees.chain else {
            return;
        };
        let c = &chain.committee;
        metrics::with_local_recorder(&self.recorder, || {
            metrics::gauge!("gateway_chain_epoch").set(f64::from(c.epoch));
            metrics::gauge!("gateway_chain_epoch_changing").set(
                if c.epoch_state.is_transitioning() {
                    1.0
                } else {
                    0.0
                },
            );
            metrics::gauge!("gateway_chain_committee_nodes").set(c.current.len() as f64);
        });
    }

    /// Seconds since the chain was last read successfully; `None` without a chain.
    pub fn chain_view_age(&self) -> Option<f64> {
        self.chain_read_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed().as_secs_f64())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let age = self.chain_view_age();
        metrics::with_local_recorder(&self.recorder, || {
            metrics::gauge!("gateway_memory_files").set(crate::memfile::live() as f64);
            if let Some(age) = age {
                metrics::gauge!("gateway_chain_view_age_seconds").set(age);
            }
        });
        self.handle.render()
    }

    /// Drain histogram buckets so memory stays bounded between scrapes; call periodically.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// How often [`Telemetry::upkeep`] should run.
    pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

    /// Count a connection, request body or response cut by a deadline
    /// (`gateway_deadlines_total{kind}`; `kind` is one of our fixed words: `tls_handshake`,
    /// `first_request`, `request_head`, `idle`, `body_idle`, `body_total`, `response_stall`,
    /// `stalled_connection`).
    pub fn deadline(&self, kind: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!("gateway_deadlines_total", "kind" => kind).increment(1)
        });
    }

    /// Count a blob request refused because its connection's or client's share of the request
    /// slots was taken (`gateway_share_refused_total{scope}`, `connection` or `client`; also
    /// counted in `gateway_overloaded_total`).
    pub fn share_refused(&self, scope: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!("gateway_share_refused_total", "scope" => scope).increment(1)
        });
    }
}

/// Aggregator parity (issue 17): the denylist. Registered on use, each with its help text.
impl Telemetry {
    /// A request refused because its blob is blocked (`gateway_blocked_total{route}`, route a
    /// fixed word: `blob`, `inference`, `publish`, `concat`, `object`, `fill`).
    pub fn blocked(&self, route: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!(
                "gateway_blocked_total",
                "Requests answered 451 FORBIDDEN_BLOB because the blob is on the blocklist"
            );
            metrics::counter!("gateway_blocked_total", "route" => route).increment(1)
        });
    }

    /// The blocklist was (re)read: its size, and whether the read failed (the list in force
    /// then stays).
    pub fn blocklist_loaded(&self, entries: usize, ok: bool) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_gauge!(
                "gateway_blocklist_entries",
                "Blob IDs on the blocklist in force"
            );
            metrics::describe_counter!(
                "gateway_blocklist_reload_failures_total",
                "Blocklist file reads that failed (unreadable or malformed); the previous list stayed in force"
            );
            metrics::gauge!("gateway_blocklist_entries").set(entries as f64);
            let failures = metrics::counter!("gateway_blocklist_reload_failures_total");
            if !ok {
                failures.increment(1);
            }
        });
    }

    /// A strict consistency check asked for by `strict_consistency_check=true` on a gateway
    /// whose fills do not make one (`result`: `consistent` or `inconsistent`).
    pub fn strict_check(&self, result: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!(
                "gateway_strict_checks_total",
                "Blobs re-encoded on request (strict_consistency_check=true) to check their Blob ID"
            );
            metrics::counter!("gateway_strict_checks_total", "result" => result).increment(1)
        });
    }

    /// A newly blocked blob's bytes were dropped from the cache.
    pub fn blocklist_purged(&self) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!(
                "gateway_blocklist_purged_total",
                "Cached blobs purged from memory and disk because they were blocked"
            );
            metrics::counter!("gateway_blocklist_purged_total").increment(1)
        });
    }
}

/// Blob status and lifecycle (issue 17, [`crate::status`]). Registered on use, each with its
/// help text.
impl Telemetry {
    /// A verified blob status was asked of the nodes (`gateway_status_checks_total{when,
    /// result}`: `when` is `fill` or `revalidate`; `result` is `serve`, `gone` or
    /// `unavailable`).
    pub fn status_check(&self, when: &'static str, result: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!(
                "gateway_status_checks_total",
                "Verified blob statuses asked of the storage nodes, by occasion and verdict"
            );
            metrics::counter!("gateway_status_checks_total", "when" => when, "result" => result)
                .increment(1)
        });
    }

    /// A cached blob's status was checked again before serving it
    /// (`gateway_revalidations_total{reason}`: `end_epoch`, `deletable` or `unknown`).
    pub fn revalidation(&self, reason: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!(
                "gateway_revalidations_total",
                "Cached blobs whose status was checked again before serving, by reason"
            );
            metrics::counter!("gateway_revalidations_total", "reason" => reason).increment(1)
        });
    }

    /// A cached blob was dropped because Walrus no longer serves it
    /// (`gateway_lifecycle_dropped_total{reason}`: `expired`, `deleted` or `nonexistent`).
    pub fn lifecycle_dropped(&self, reason: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!(
                "gateway_lifecycle_dropped_total",
                "Cached blobs dropped from memory and disk because they expired or were deleted"
            );
            metrics::counter!("gateway_lifecycle_dropped_total", "reason" => reason).increment(1)
        });
    }
}

/// Other components (the inference engine) record into the gateway's registry through this, so
/// their metrics appear at the same `/metrics`.
impl metrics::Recorder for Telemetry {
    fn describe_counter(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.recorder.describe_counter(key, unit, description)
    }

    fn describe_gauge(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.recorder.describe_gauge(key, unit, description)
    }

    fn describe_histogram(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.recorder.describe_histogram(key, unit, description)
    }

    fn register_counter(&self, key: &metrics::Key, metadata: &metrics::Metadata<'_>) -> Counter {
        self.recorder.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &metrics::Key, metadata: &metrics::Metadata<'_>) -> Gauge {
        self.recorder.register_gauge(key, metadata)
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> Histogram {
        self.recorder.register_histogram(key, metadata)
    }
}
