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
    pub cache_hits: Counter,
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
    /// Requests refused because a bound was hit (429).
    pub overloaded: Counter,
    /// Blob requests currently being served.
    pub requests_in_flight: Gauge,
    /// Fill duration, metadata to last verified byte.
    pub fill_seconds: Histogram,
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let (
            cache_hits,
            cache_misses,
            fills_started,
            fills_succeeded,
            metadata_fills,
            metadata_requests,
        ) = metrics::with_local_recorder(&recorder, || {
            (
                metrics::counter!("gateway_cache_hits_total"),
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
                metrics::counter!("gateway_bytes_served_total"),
                metrics::counter!("gateway_overloaded_total"),
                metrics::gauge!("gateway_requests_in_flight"),
                metrics::histogram!("gateway_fill_seconds"),
            )
        });
        Arc::new(Self {
            recorder,
            handle,
            cache_hits,
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

    /// Count a storage node's failure to deliver (`reason` is one of our fixed words).
    pub fn node_failure(&self, node: &str, reason: &'static str) {
        metrics::with_local_recorder(&self.recorder, || {
            metrics::counter!("gateway_node_failures_total", "node" => node.to_owned(), "reason" => reason)
                .increment(1)
        });
    }

    /// Count a response by status code.
    pub fn response(&self, status: u16) {
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

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drain histogram buckets so memory stays bounded between scrapes; call periodically.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// How often [`Telemetry::upkeep`] should run.
    pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
}
