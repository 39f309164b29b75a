//! Per-gateway metrics, rendered in the Prometheus text format at `GET /metrics`.
//!
//! Each gateway owns its own recorder (not the process-global one), so several gateways in one
//! process (tests, embedded use) keep separate counts. Handles of fixed metrics are registered
//! once; metrics with open-ended labels (node names, status codes) register on use. Label values
//! come from our own committee and status codes, never from client input, so the series count is
//! bounded.
//!
//! Every family has `# HELP` and `# TYPE` ([`FAMILIES`], described at construction: `promtool
//! check metrics` is clean), latencies are histograms with fixed buckets (aggregatable across a
//! fleet), and every labelled failure series with a known label set is registered at 0 from the
//! start, so a `rate()` alert sees the first failure. To add a metric: a line in [`FAMILIES`],
//! then a handle or a method here (see the request and access-log block for the pattern).

use crate::access_log::{AccessLog, Route, Served};
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What a metric family is, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every family the gateway renders (the inference engine's included) with its help text.
/// Families another component registers on use still get their `# HELP` from here.
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    ("gateway_cache_hits_total", Kind::Counter, "Blob requests answered from the cache, by tier."),
    ("gateway_cache_misses_total", Kind::Counter, "Blob requests that needed a fill (storage nodes or upstreams)."),
    ("gateway_fills_started_total", Kind::Counter, "Fills started (one per blob, however many requests wait on it)."),
    ("gateway_fills_succeeded_total", Kind::Counter, "Fills that ended with a verified blob."),
    ("gateway_fills_failed_total", Kind::Counter, "Fills that ended in an error, by reason."),
    ("gateway_fill_seconds", Kind::Histogram, "Fill duration, from the start to the last verified byte (successful fills)."),
    ("gateway_metadata_fills_total", Kind::Counter, "Verified metadata fetches (the first verifying reply of a fan-out)."),
    ("gateway_metadata_requests_total", Kind::Counter, "Metadata requests sent to storage nodes."),
    ("gateway_sliver_requests_total", Kind::Counter, "Sliver requests sent to storage nodes, by kind (primary, secondary)."),
    ("gateway_sliver_fetch_seconds", Kind::Histogram, "Time a fill waited for one sliver body from a storage node (from asking, or from taking over its prefetch), before verification."),
    ("gateway_upstream_bytes_total", Kind::Counter, "Bytes fetched to fill blobs, by source: nodes (storage nodes), upstream (an aggregator, checked whole), parent (a parent gateway, checked row by row)."),
    ("gateway_bytes_served_total", Kind::Counter, "Blob bytes handed to clients, by source (memory, disk, upstream: a fill)."),
    ("gateway_responses_total", Kind::Counter, "Responses, by HTTP status."),
    ("gateway_overloaded_total", Kind::Counter, "Requests refused because a bound was hit (429)."),
    ("gateway_share_refused_total", Kind::Counter, "Blob requests refused because their connection's or client's share of the request slots was taken."),
    ("gateway_requests_in_flight", Kind::Gauge, "Blob requests currently being served."),
    ("gateway_request_duration_seconds", Kind::Histogram, "Request duration, head received to last body byte handed to the transport, by route and cache tier."),
    ("gateway_deadlines_total", Kind::Counter, "Connections, request bodies or responses cut by a deadline, by kind."),
    ("gateway_admission_refused_total", Kind::Counter, "Requests refused at admission before their body was read, by bound."),
    ("gateway_publishes_total", Kind::Counter, "Publishes (uploads and stored proofs), by outcome."),
    ("gateway_published_bytes_total", Kind::Counter, "Bytes of successful publishes."),
    ("gateway_negative_cache_total", Kind::Counter, "Negative-cache events: hit, stored, dropped."),
    ("gateway_node_failures_total", Kind::Counter, "Storage node failures to deliver, by node and reason."),
    ("gateway_node_tls_pin_failures_total", Kind::Counter, "Storage nodes whose TLS certificate did not carry their pinned network key."),
    ("gateway_node_marked_slow_total", Kind::Counter, "Times a storage node was marked slow (asked last for a while)."),
    ("gateway_nodes_slow", Kind::Gauge, "Storage nodes fills currently ask last."),
    ("gateway_upstream_results_total", Kind::Counter, "Results of asking an upstream, by upstream and result."),
    ("gateway_memory_cache_bytes", Kind::Gauge, "Bytes of blobs in the memory tier (updated every 5 s)."),
    ("gateway_memory_cache_entries", Kind::Gauge, "Blobs in the memory tier (updated every 5 s)."),
    ("gateway_memory_files", Kind::Gauge, "Sealed memory files alive (memory-tier blobs and their readers)."),
    ("gateway_disk_cache_bytes", Kind::Gauge, "Bytes of blobs in the disk tier."),
    ("gateway_disk_cache_entries", Kind::Gauge, "Blobs in the disk tier."),
    ("gateway_disk_cache_indexed_at_start", Kind::Gauge, "Blobs found in the disk tier when the gateway started."),
    ("gateway_disk_cache_quarantine_bytes", Kind::Gauge, "Bytes of quarantined disk-tier files."),
    ("gateway_disk_cache_effective_bytes", Kind::Gauge, "The disk tier's bound in force (lower than configured when the device filled first)."),
    ("gateway_disk_cache_integrity_failures_total", Kind::Counter, "Disk-tier files that failed their integrity check."),
    ("gateway_disk_cache_evictions_total", Kind::Counter, "Blobs evicted from the disk tier."),
    ("gateway_disk_cache_write_errors_total", Kind::Counter, "Disk-tier writes that failed."),
    ("gateway_disk_cache_no_space_total", Kind::Counter, "Disk-tier writes that found the device full."),
    ("gateway_disk_cache_dirs_recreated_total", Kind::Counter, "Disk-tier directories recreated after they vanished."),
    ("gateway_chain_refreshes_total", Kind::Counter, "Reads of the committee from the chain, by result."),
    ("gateway_chain_rpcs_total", Kind::Counter, "Sui gRPC calls made to read the committee."),
    ("gateway_chain_epoch", Kind::Gauge, "Epoch of the committee read from the chain."),
    ("gateway_chain_epoch_changing", Kind::Gauge, "1 while the chain's epoch is changing, else 0."),
    ("gateway_chain_committee_nodes", Kind::Gauge, "Storage nodes in the chain's current committee."),
    ("gateway_chain_view_age_seconds", Kind::Gauge, "Seconds since the chain was last read successfully."),
    ("gateway_access_log_dropped_total", Kind::Counter, "Access log lines dropped because the writer fell behind (its queue was full)."),
    ("walrus_gateway_build_info", Kind::Gauge, "Always 1; the labels say which build is running."),
    (::inference::engine::metric::RUNS, Kind::Counter, "Inferences run to completion, by model."),
    (::inference::engine::metric::FAILURES, Kind::Counter, "Failed inference requests, by kind."),
    (::inference::engine::metric::RUN_SECONDS, Kind::Histogram, "Inference run time, run slot acquired to outputs ready, by model."),
    (::inference::engine::metric::QUEUE_WAIT_SECONDS, Kind::Histogram, "Time inference requests waited for a run slot."),
    (::inference::engine::metric::PLAN_BUILDS, Kind::Counter, "Inference plan builds started (one per single flight)."),
    (::inference::engine::metric::PLAN_BUILD_SECONDS, Kind::Histogram, "Time per inference plan build (excluding the wait for the build lock)."),
    (::inference::engine::metric::PLAN_CACHE_ENTRIES, Kind::Gauge, "Inference plans cached."),
    (::inference::engine::metric::PLAN_CACHE_BYTES, Kind::Gauge, "Estimated bytes of cached inference plans (an estimate, not measured)."),
    (::inference::engine::metric::MODEL_LOADS, Kind::Counter, "Model blobs parsed for inference."),
    (::inference::engine::metric::MODEL_PARSE_SECONDS, Kind::Histogram, "Time per model parse (decoding and analysis of the loaded bytes)."),
];

/// Buckets of every latency histogram without its own (seconds): 0.5 ms to 2 min.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// Buckets of request durations: memory hits take tens of microseconds.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Buckets of proofs per stored-proof batch (`--proof-batch-max` is 256 by default).
pub const PROOF_BATCH_BUCKETS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Label values of failure families registered at 0 from the start.
const FILL_FAILURES: &[&str] = &[
    "not_found",
    "unavailable",
    "inconsistent",
    "too_large",
    "overloaded",
    "internal",
];
const NODE_FAILURES: &[&str] = &[
    "timeout",
    "transport",
    "not_found",
    "status",
    "too_large",
    "bad_url",
    "tls_pin",
    "invalid_metadata",
];
const UPSTREAM_RESULTS: &[&str] = &[
    "served",
    "not_found",
    "status",
    "timeout",
    "transport",
    "too_large",
    "truncated",
    "protocol",
    "mismatch",
];
const CHAIN_RESULTS: &[&str] = &[
    "ok",
    "topology",
    "timeout",
    "transport",
    "status",
    "malformed",
    "wrong_chain",
    "not_found",
    "wrong_type",
    "decode",
    "committee",
];
const DEADLINES: &[&str] = &[
    "tls_handshake",
    "first_request",
    "request_head",
    "idle",
    "body_idle",
    "body_total",
    "response_stall",
    "stalled_connection",
];
const INFERENCE_FAILURES: &[&str] = &["bad_input", "queue_full", "timeout", "model", "internal"];
/// Error statuses the gateway answers; each has its `gateway_responses_total` series from the
/// start.
const ERROR_STATUSES: &[&str] = &[
    "400", "401", "403", "404", "405", "413", "416", "429", "451", "500", "502", "503", "504",
];

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
    /// Bytes fetched from storage nodes (sliver and metadata bodies): `source="nodes"`.
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
    /// Request, access-log and fetch-source handles registered once ([`Observed`]).
    observed: Observed,
    /// Where finished requests are logged (`--access-log`), once set.
    access_log: OnceLock<AccessLog>,
    /// Set once the chain refresh series exist.
    chain_results_registered: OnceLock<()>,
}

/// Handles of the request-duration histograms, fetched-byte sources and other metrics this
/// module registers once, so recording never looks a series up.
struct Observed {
    /// `gateway_request_duration_seconds{route,tier}`, indexed by [`Route::index`] and
    /// [`Served::index`] (tiers other than `none` only for blob routes).
    request_seconds: Vec<Histogram>,
    access_log_dropped: Counter,
    bytes_from_upstream: Counter,
    bytes_from_parent: Counter,
    sliver_fetch_seconds: Histogram,
    memory_cache_bytes: Gauge,
    memory_cache_entries: Gauge,
}

impl Observed {
    /// Describe every family and register the series that must exist from the start (runs
    /// under the gateway's recorder).
    fn register() -> Self {
        for &(name, kind, help) in FAMILIES {
            match kind {
                Kind::Counter => metrics::describe_counter!(name, help),
                Kind::Gauge => metrics::describe_gauge!(name, help),
                Kind::Histogram => metrics::describe_histogram!(name, help),
            }
        }
        metrics::gauge!("walrus_gateway_build_info",
            "version" => env!("CARGO_PKG_VERSION"),
            "profile" => if cfg!(debug_assertions) { "debug" } else { "release" })
        .set(1.0);
        for reason in FILL_FAILURES {
            metrics::counter!("gateway_fills_failed_total", "reason" => *reason).absolute(0);
        }
        for kind in DEADLINES {
            metrics::counter!("gateway_deadlines_total", "kind" => *kind).absolute(0);
        }
        for bound in ["publish_slots", "publish_memory", "inference_memory"] {
            metrics::counter!("gateway_admission_refused_total", "bound" => bound).absolute(0);
        }
        for scope in ["connection", "client"] {
            metrics::counter!("gateway_share_refused_total", "scope" => scope).absolute(0);
        }
        for outcome in ["stored", "failed"] {
            metrics::counter!("gateway_publishes_total", "outcome" => outcome).absolute(0);
        }
        metrics::counter!("gateway_published_bytes_total").absolute(0);
        for event in ["hit", "stored", "dropped"] {
            metrics::counter!("gateway_negative_cache_total", "event" => event).absolute(0);
        }
        for status in ERROR_STATUSES {
            metrics::counter!("gateway_responses_total", "status" => *status).absolute(0);
        }
        for kind in INFERENCE_FAILURES {
            metrics::counter!(::inference::engine::metric::FAILURES, "kind" => *kind).absolute(0);
        }
        metrics::gauge!("gateway_nodes_slow").set(0.0);
        // Blob routes by tier; the others have no tier (`none`): see `request_index`.
        let mut request_seconds = Vec::new();
        for route in Route::ALL {
            let tiers: &[Served] = if route == Route::Blob {
                &Served::ALL
            } else {
                &[Served::None]
            };
            for tier in tiers {
                request_seconds.push(metrics::histogram!("gateway_request_duration_seconds",
                    "route" => route.label(), "tier" => tier.label()));
            }
        }
        Self {
            request_seconds,
            access_log_dropped: metrics::counter!("gateway_access_log_dropped_total"),
            bytes_from_upstream: metrics::counter!("gateway_upstream_bytes_total", "source" => "upstream"),
            bytes_from_parent: metrics::counter!("gateway_upstream_bytes_total", "source" => "parent"),
            sliver_fetch_seconds: metrics::histogram!("gateway_sliver_fetch_seconds"),
            memory_cache_bytes: metrics::gauge!("gateway_memory_cache_bytes"),
            memory_cache_entries: metrics::gauge!("gateway_memory_cache_entries"),
        }
    }
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("gateway_request_duration_seconds".into()),
                    REQUEST_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("gateway_proof_batch_proofs".into()),
                    PROOF_BATCH_BUCKETS,
                )
            })
            .expect("the bucket lists are not empty")
            .build_recorder();
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
                metrics::counter!("gateway_upstream_bytes_total", "source" => "nodes"),
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
                        scrub_files: {
                            metrics::describe_counter!(
                                "gateway_disk_scrub_files_total",
                                "Cached files the scrub found matching their Blob ID"
                            );
                            metrics::describe_counter!(
                                "gateway_disk_scrub_bytes_total",
                                metrics::Unit::Bytes,
                                "Bytes of cached files the scrub verified against their Blob ID"
                            );
                            metrics::describe_counter!("gateway_disk_scrub_failures_total", "Cached files the scrub found not matching their Blob ID (each quarantined)");
                            metrics::describe_counter!("gateway_disk_scrub_unscrubbable_total", "Scrub attempts skipped because the blob's metadata was not available");
                            metrics::describe_gauge!("gateway_disk_scrub_oldest_age_seconds", metrics::Unit::Seconds, "Seconds since the least recently scrubbed cached file was last verified");
                            metrics::counter!("gateway_disk_scrub_files_total")
                        },
                        scrub_bytes: metrics::counter!("gateway_disk_scrub_bytes_total"),
                        scrub_failures: metrics::counter!("gateway_disk_scrub_failures_total"),
                        scrub_unscrubbable: metrics::counter!(
                            "gateway_disk_scrub_unscrubbable_total"
                        ),
                        scrub_oldest_age: metrics::gauge!("gateway_disk_scrub_oldest_age_seconds"),
                        scrub_achieved_rate: {
                            metrics::describe_gauge!(
                                "gateway_disk_scrub_achieved_bytes_per_second",
                                "Bytes per second the disk scrub checked in its current or last pass (at most --scrub-rate; less while requests keep its core busy)"
                            );
                            metrics::gauge!("gateway_disk_scrub_achieved_bytes_per_second")
                        },
                        kinds: crate::disk::KindMetrics::register(),
                    },
                )
            });
        let responses = metrics::with_local_recorder(&recorder, || {
            ["200", "206", "304"]
                .map(|status| metrics::counter!("gateway_responses_total", "status" => status))
        });
        let observed = metrics::with_local_recorder(&recorder, Observed::register);
        Arc::new(Self {
            observed,
            access_log: OnceLock::new(),
            chain_results_registered: OnceLock::new(),
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
            // A chain-backed gateway's first read registers every result at 0.
            if self.chain_results_registered.set(()).is_ok() {
                for result in CHAIN_RESULTS {
                    metrics::counter!("gateway_chain_refreshes_total", "result" => *result)
                        .absolute(0);
                }
            }
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

    // Requests, the access log, fetch sources and cache tiers (issue 20).

    /// Index of `(route, tier)` in `Observed::request_seconds` (the order `register` uses).
    fn request_index(route: Route, tier: Served) -> usize {
        if route == Route::Blob {
            tier.index()
        } else {
            Served::ALL.len() + route.index() - 1
        }
    }

    /// Record a finished request's duration (`gateway_request_duration_seconds`).
    pub fn request_done(&self, route: Route, tier: Served, duration: Duration) {
        self.observed.request_seconds[Self::request_index(route, tier)]
            .record(duration.as_secs_f64());
    }

    /// Log every finished request to `log` from now on (once; later calls are ignored).
    pub fn set_access_log(&self, log: AccessLog) {
        let _ = self.access_log.set(log);
    }

    /// The access log, when one is configured.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.get()
    }

    /// `gateway_access_log_dropped_total`, for the access log's writer.
    pub fn access_log_dropped(&self) -> Counter {
        self.observed.access_log_dropped.clone()
    }

    /// Count bytes fetched from an upstream: a parent gateway's rows checked against its
    /// metadata (`parent`), or a blob checked whole (`upstream`: an aggregator).
    pub fn fetched_from_upstream(&self, parent: bool, bytes: u64) {
        if parent {
            self.observed.bytes_from_parent.increment(bytes);
        } else {
            self.observed.bytes_from_upstream.increment(bytes);
        }
    }

    /// Record one sliver request to a storage node, sent to verified body.
    pub fn sliver_fetched(&self, elapsed: Duration) {
        self.observed
            .sliver_fetch_seconds
            .record(elapsed.as_secs_f64());
    }

    /// The memory tier holds `bytes` in `entries` blobs (set by the upkeep task every
    /// [`Telemetry::UPKEEP_INTERVAL`]).
    pub fn memory_tier(&self, bytes: u64, entries: u64) {
        self.observed.memory_cache_bytes.set(bytes as f64);
        self.observed.memory_cache_entries.set(entries as f64);
    }

    /// Register the per-node and per-upstream failure series at 0, so alerts see the first
    /// failure (node names of the starting committee; upstream names as configured).
    pub fn register_failure_series<'a>(
        &self,
        nodes: impl IntoIterator<Item = &'a str>,
        upstreams: impl IntoIterator<Item = &'a str>,
    ) {
        metrics::with_local_recorder(&self.recorder, || {
            for node in nodes {
                for reason in NODE_FAILURES {
                    metrics::counter!("gateway_node_failures_total", "node" => node.to_owned(), "reason" => *reason)
                        .absolute(0);
                }
                metrics::counter!("gateway_node_tls_pin_failures_total", "node" => node.to_owned())
                    .absolute(0);
                metrics::counter!("gateway_node_marked_slow_total", "node" => node.to_owned())
                    .absolute(0);
            }
            for upstream in upstreams {
                for result in UPSTREAM_RESULTS {
                    metrics::counter!("gateway_upstream_results_total", "upstream" => upstream.to_owned(), "result" => *result)
                        .absolute(0);
                }
            }
        });
    }

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

    /// Count a quilt patch served (`gateway_quilt_patch_reads_total{source}`: `hit-memory`,
    /// `hit-disk`, `miss` (a whole-quilt fill) or `cold` (index and patch columns only)).
    pub fn quilt_patch_read(&self, source: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!(
                "gateway_quilt_patch_reads_total",
                "Quilt patches served, by where the quilt's verified bytes came from."
            );
            metrics::counter!("gateway_quilt_patch_reads_total", "source" => source).increment(1)
        });
    }

    /// Count a patch read from a cold quilt's index and patch columns alone, and the secondary
    /// slivers it fetched (`gateway_quilt_cold_patch_slivers`).
    pub fn quilt_cold_patch_read(&self, slivers: usize) {
        self.quilt_patch_read("cold");
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_histogram!(
                "gateway_quilt_cold_patch_slivers",
                "Secondary slivers fetched per patch read from a cold quilt (index and patch columns)."
            );
            metrics::describe_counter!(
                "gateway_quilt_cold_patch_slivers_total",
                "Secondary slivers fetched by patch reads from cold quilts."
            );
            metrics::histogram!("gateway_quilt_cold_patch_slivers").record(slivers as f64);
            metrics::counter!("gateway_quilt_cold_patch_slivers_total").increment(slivers as u64);
        });
    }

    /// Count a quilt published through `PUT /v1/quilts`, and its patches.
    pub fn quilt_published(&self, patches: usize) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!(
                "gateway_quilts_published_total",
                "Quilts stored through PUT /v1/quilts."
            );
            metrics::describe_counter!(
                "gateway_quilt_patches_published_total",
                "Patches in the quilts stored through PUT /v1/quilts."
            );
            metrics::counter!("gateway_quilts_published_total").increment(1);
            metrics::counter!("gateway_quilt_patches_published_total").increment(patches as u64);
        });
    }
}

/// Column recovery (issue 16): a quilt column whose secondary sliver cannot be had is rebuilt
/// from recovery symbols of other nodes. Registered on use, each with its help text.
impl Telemetry {
    /// Count one `GET …/recoverySymbols` sent to a node
    /// (`gateway_recovery_symbol_requests_total`).
    pub fn recovery_symbol_request(&self) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!(
                "gateway_recovery_symbol_requests_total",
                "Recovery-symbol requests sent to storage nodes to rebuild a sliver whose owner failed."
            );
            metrics::counter!("gateway_recovery_symbol_requests_total").increment(1)
        });
    }

    /// Count recovery symbols received that failed verification and were dropped
    /// (`gateway_recovery_symbols_rejected_total`).
    pub fn recovery_symbols_rejected(&self, count: usize) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!(
                "gateway_recovery_symbols_rejected_total",
                "Recovery symbols dropped because their Merkle proof, size or target did not check out."
            );
            metrics::counter!("gateway_recovery_symbols_rejected_total").increment(count as u64)
        });
    }

    /// Count a sliver rebuild from recovery symbols (`gateway_sliver_recoveries_total{outcome}`:
    /// `recovered` or `failed`).
    pub fn sliver_recovery(&self, outcome: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!(
                "gateway_sliver_recoveries_total",
                "Slivers rebuilt from recovery symbols after their owner failed, by outcome (recovered, failed)."
            );
            metrics::counter!("gateway_sliver_recoveries_total", "outcome" => outcome).increment(1)
        });
    }
}

/// Stored proofs batched into quilts (issue 16). Registered on use, each with its help text.
impl Telemetry {
    /// A batch of stored proofs handed to its publish (`gateway_proof_batch_proofs`: its
    /// distinct proofs).
    pub fn proof_batch(&self, proofs: usize) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_histogram!(
                "gateway_proof_batch_proofs",
                "Distinct inference proofs per batch stored as quilts (--proof-batch-ms, --proof-batch-max)."
            );
            metrics::histogram!("gateway_proof_batch_proofs").record(proofs as f64);
        });
    }

    /// A quilt of stored proofs published (`gateway_proof_quilts_published_total`, and its
    /// proofs in `gateway_proof_quilt_patches_total`).
    pub fn proof_quilt_published(&self, proofs: usize) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!(
                "gateway_proof_quilts_published_total",
                "Quilts of inference proofs stored (one per batch, more when a batch was split to fit)."
            );
            metrics::describe_counter!(
                "gateway_proof_quilt_patches_total",
                "Inference proofs stored as patches of those quilts."
            );
            metrics::counter!("gateway_proof_quilts_published_total").increment(1);
            metrics::counter!("gateway_proof_quilt_patches_total").increment(proofs as u64);
        });
    }

    /// A quilt of proofs not stored, each of its requests failed
    /// (`gateway_proof_batch_failures_total`).
    pub fn proof_batch_failed(&self) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!(
                "gateway_proof_batch_failures_total",
                "Quilts of inference proofs whose publish failed; every request in one was answered with the error."
            );
            metrics::counter!("gateway_proof_batch_failures_total").increment(1);
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

/// `GET /v1/blobs/by-object-id/{id}` (issue 17): Sui object lookups by result.
impl Telemetry {
    /// One `Blob` object lookup (`gateway_object_lookups_total{result}`, result a fixed word:
    /// `found`, `cached` (reused within `--object-cache-ttl`, no gRPC call), `invalid_id`,
    /// `not_found`, `not_a_blob`, `malformed`, `chain_error`, `no_chain`)
    /// and the gRPC calls it made (`gateway_object_lookup_rpcs_total`).
    pub fn object_lookup(&self, result: &'static str, rpcs: u32) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::describe_counter!(
                "gateway_object_lookups_total",
                "Sui Blob object lookups of by-object-id requests, by result"
            );
            metrics::describe_counter!(
                "gateway_object_lookup_rpcs_total",
                "Sui gRPC calls made by by-object-id lookups"
            );
            metrics::counter!("gateway_object_lookups_total", "result" => result).increment(1);
            metrics::counter!("gateway_object_lookup_rpcs_total").increment(u64::from(rpcs));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rendered_family_has_help_and_latencies_are_histograms() {
        let telemetry = Telemetry::new();
        telemetry.fill_seconds.record(0.2);
        telemetry.sliver_fetched(Duration::from_millis(3));
        telemetry.request_done(Route::Blob, Served::Memory, Duration::from_micros(50));
        telemetry.register_failure_series(["node-0"], ["http://parent"]);
        telemetry.chain_refresh(true, 1, "ok");
        let text = telemetry.render();
        let mut families = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                families += 1;
                assert!(
                    text.contains(&format!("# HELP {name} ")),
                    "{name} has no help text"
                );
                assert_ne!(kind, "summary", "{name} is a summary");
            }
        }
        assert!(families >= 30, "{families} families");
        for series in [
            "gateway_fills_failed_total{reason=\"unavailable\"} 0",
            "gateway_node_failures_total{node=\"node-0\",reason=\"timeout\"} 0",
            "gateway_upstream_results_total{upstream=\"http://parent\",result=\"mismatch\"} 0",
            "gateway_chain_refreshes_total{result=\"timeout\"} 0",
            "gateway_request_duration_seconds_bucket{route=\"blob\",tier=\"memory\",le=\"0.0001\"} 1",
            "gateway_fill_seconds_bucket{le=\"0.25\"} 1",
            "walrus_gateway_build_info{",
        ] {
            assert!(text.contains(series), "no {series} in\n{text}");
        }
    }
}
