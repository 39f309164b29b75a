//! Recording outcomes and turning them into a report: HDR latency histograms (overall, per
//! second, per request kind, per phase), errors by kind, bytes, the gateway's `x-cache` tags,
//! and the [`Report`] that becomes the summary table, the JSON file and the HTML page.
//!
//! Latencies are recorded in microseconds, from the request's (intended) send time to its last
//! body byte; values beyond the histogram's range are clamped to its top, never dropped.

use crate::scrape::MetricsDelta;
use crate::workload::OpKind;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Largest latency recorded exactly: one hour, in microseconds.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Seconds of per-second timeline kept; later seconds are folded into the last one.
const MAX_TIMELINE_SECS: usize = 24 * 3600;
/// Distinct error messages kept as examples.
const MAX_ERROR_EXAMPLES: usize = 10;

/// The percentiles the report lists.
pub const PERCENTILES: [f64; 7] = [50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0];

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_LATENCY_US)
}

/// What became of one measured request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: OpKind,
    /// Since the start of measurement, when the response ended.
    pub finished_at: Duration,
    pub latency: Duration,
    /// Body bytes received.
    pub bytes: u64,
    /// The error kind (a short snake_case word) and a message, if the request failed.
    pub error: Option<(String, String)>,
    /// The response's `x-cache` header (`hit`/`miss`), if any.
    pub cache: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Counts {
    requests: u64,
    errors: u64,
    bytes: u64,
}

struct Bucket {
    counts: Counts,
    latency: Histogram<u64>,
}

impl Bucket {
    fn new() -> Self {
        Self {
            counts: Counts::default(),
            latency: histogram(),
        }
    }

    fn add(&mut self, outcome: &Outcome) {
        self.counts.requests += 1;
        self.counts.bytes += outcome.bytes;
        if outcome.error.is_some() {
            self.counts.errors += 1;
        } else {
            self.latency.saturating_record(micros(outcome.latency));
        }
    }
}

struct Phase {
    name: String,
    from: Duration,
    bucket: Bucket,
}

/// Collects outcomes while a run goes on. Latency histograms count successful requests only;
/// failures are counted by kind.
pub struct Recorder {
    total: Bucket,
    by_kind: BTreeMap<OpKind, Bucket>,
    timeline: Vec<Bucket>,
    phases: Vec<Phase>,
    errors: BTreeMap<String, u64>,
    error_examples: Vec<String>,
    cache_tags: BTreeMap<String, u64>,
    warmup: Counts,
    verify: VerifyCounts,
    /// Errors not tied to a recorded request (failed Blob ID checks, unsent requests).
    extra_errors: u64,
}

/// Bodies checked against their Blob ID.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct VerifyCounts {
    /// Full reads whose bytes hashed to the Blob ID.
    pub verified: u64,
    /// Full reads whose bytes did not (each also counted as a `wrong_bytes` error).
    pub mismatched: u64,
    /// Full reads chosen for checking but skipped because the checker was busy.
    pub skipped: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            total: Bucket::new(),
            by_kind: BTreeMap::new(),
            timeline: Vec::new(),
            phases: vec![Phase {
                name: "run".into(),
                from: Duration::ZERO,
                bucket: Bucket::new(),
            }],
            errors: BTreeMap::new(),
            error_examples: Vec::new(),
            cache_tags: BTreeMap::new(),
            warmup: Counts::default(),
            verify: VerifyCounts::default(),
            extra_errors: 0,
        }
    }

    pub fn record(&mut self, outcome: &Outcome) {
        self.total.add(outcome);
        self.by_kind
            .entry(outcome.kind)
            .or_insert_with(Bucket::new)
            .add(outcome);
        let second = (outcome.finished_at.as_secs() as usize).min(MAX_TIMELINE_SECS - 1);
        while self.timeline.len() <= second {
            self.timeline.push(Bucket::new());
        }
        self.timeline[second].add(outcome);
        if let Some(phase) = self.phases.last_mut() {
            phase.bucket.add(outcome);
        }
        if let Some((kind, message)) = &outcome.error {
            self.count_error(kind, 1, message);
        }
        if let Some(tag) = &outcome.cache {
            // Bounded: only the values gateways use; anything else is "other". walrus-gateway
            // names the tier of a hit (`hit-memory`, `hit-disk`) and a miss no tier will keep
            // (`miss-uncacheable`).
            let tag = match tag.to_ascii_lowercase().as_str() {
                t @ ("hit" | "hit-memory" | "hit-disk" | "miss" | "miss-uncacheable" | "stale"
                | "expired" | "bypass") => t.to_owned(),
                _ => "other".to_owned(),
            };
            *self.cache_tags.entry(tag).or_insert(0) += 1;
        }
    }

    /// Count an error that is not tied to one recorded request (e.g. a failed Blob ID check).
    pub fn error(&mut self, kind: &str, message: &str) {
        self.error_n(kind, 1, message);
    }

    /// Count `n` errors of one kind at once (not tied to recorded requests).
    pub fn error_n(&mut self, kind: &str, n: u64, message: &str) {
        self.extra_errors += n;
        self.count_error(kind, n, message);
    }

    fn count_error(&mut self, kind: &str, n: u64, message: &str) {
        if n == 0 {
            return;
        }
        *self.errors.entry(kind.to_owned()).or_insert(0) += n;
        let example = format!("{kind}: {message}");
        if self.error_examples.len() < MAX_ERROR_EXAMPLES && !self.error_examples.contains(&example)
        {
            self.error_examples.push(example);
        }
    }

    /// A request made during warm-up: counted, not measured.
    pub fn warmup(&mut self, outcome: &Outcome) {
        self.warmup.requests += 1;
        self.warmup.bytes += outcome.bytes;
        if let Some((kind, message)) = &outcome.error {
            self.warmup.errors += 1;
            let example = format!("warm-up {kind}: {message}");
            if self.error_examples.len() < MAX_ERROR_EXAMPLES
                && !self.error_examples.contains(&example)
            {
                self.error_examples.push(example);
            }
        }
    }

    pub fn verified(&mut self, ok: bool) {
        if ok {
            self.verify.verified += 1;
        } else {
            self.verify.mismatched += 1;
        }
    }

    pub fn verify_skipped(&mut self) {
        self.verify.skipped += 1;
    }

    /// Start a new phase (e.g. "faults on") at `at` since the start of measurement.
    pub fn begin_phase(&mut self, name: &str, at: Duration) {
        self.phases.push(Phase {
            name: name.to_owned(),
            from: at,
            bucket: Bucket::new(),
        });
    }

    /// Requests, errors and `(p50, p99)` in µs so far, for the progress line.
    pub fn progress(&self) -> (u64, u64, u64, u64) {
        let h = &self.total.latency;
        (
            self.total.counts.requests,
            self.total.counts.errors,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
        )
    }

    /// The report, given the run's context and its measured wall time.
    pub fn report(&self, context: RunContext, elapsed: Duration) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let c = &self.total.counts;
        let hits: u64 = self
            .cache_tags
            .iter()
            .filter(|(tag, _)| tag.starts_with("hit"))
            .map(|(_, n)| *n)
            .sum();
        let misses: u64 = self
            .cache_tags
            .iter()
            .filter(|(tag, _)| tag.starts_with("miss"))
            .map(|(_, n)| *n)
            .sum();
        let timeline = self
            .timeline
            .iter()
            .enumerate()
            .map(|(t, b)| TimelinePoint {
                second: t as u64,
                requests: b.counts.requests,
                errors: b.counts.errors,
                bytes: b.counts.bytes,
                p50_us: quantile(&b.latency, 50.0),
                p99_us: quantile(&b.latency, 99.0),
                max_us: b.latency.max(),
            })
            .collect();
        let phases = if self.phases.len() > 1 {
            self.phases
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let until = self.phases.get(i + 1).map_or(elapsed, |n| n.from);
                    let span = until.saturating_sub(p.from).as_secs_f64().max(1e-9);
                    PhaseReport {
                        name: p.name.clone(),
                        from_secs: p.from.as_secs_f64(),
                        until_secs: until.as_secs_f64(),
                        requests: p.bucket.counts.requests,
                        errors: p.bucket.counts.errors,
                        throughput_rps: p.bucket.counts.requests as f64 / span,
                        latency_us: Percentiles::of(&p.bucket.latency),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        Report {
            tool: "walrus-loadtest",
            version: env!("CARGO_PKG_VERSION"),
            context,
            elapsed_secs: secs,
            requests: c.requests,
            ok: c.requests - c.errors,
            errors: c.errors + self.extra_errors,
            throughput_rps: c.requests as f64 / secs,
            bytes: c.bytes,
            bytes_per_sec: c.bytes as f64 / secs,
            latency_us: Percentiles::of(&self.total.latency),
            by_kind: self
                .by_kind
                .iter()
                .map(|(k, b)| {
                    (
                        k.name().to_owned(),
                        KindReport {
                            requests: b.counts.requests,
                            errors: b.counts.errors,
                            bytes: b.counts.bytes,
                            latency_us: Percentiles::of(&b.latency),
                        },
                    )
                })
                .collect(),
            errors_by_kind: self.errors.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            error_examples: self.error_examples.clone(),
            cache: CacheReport {
                x_cache: self.cache_tags.clone(),
                hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
            },
            server_metrics: None,
            verification: self.verify.clone(),
            warmup_requests: self.warmup.requests,
            warmup_errors: self.warmup.errors,
            phases,
            timeline,
            cdf: cdf(&self.total.latency),
        }
    }
}

/// The latency at percentile `p` (0..=100) in µs; 0 for an empty histogram.
pub fn quantile(h: &Histogram<u64>, p: f64) -> u64 {
    if h.is_empty() {
        return 0;
    }
    if p >= 100.0 {
        return h.max();
    }
    h.value_at_percentile(p)
}

/// Points of the latency CDF: `(percentile, µs)` on a log-spaced percentile scale up to the
/// maximum, so the tail is visible.
fn cdf(h: &Histogram<u64>) -> Vec<CdfPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    let mut p = 0.0f64;
    for step in 0..=40 {
        points.push(CdfPoint {
            percentile: p,
            latency_us: h.value_at_percentile(p).max(h.min()),
        });
        // 0, 10, 20, .. 90, then 1/10th of the remaining distance each step.
        p = if step < 9 {
            p + 10.0
        } else {
            100.0 - (100.0 - p) / 1.25893 // 10 steps per decade
        };
        if 100.0 - p < 1e-4 {
            break;
        }
    }
    points.push(CdfPoint {
        percentile: 100.0,
        latency_us: h.max(),
    });
    points
}

/// What was run, for the report's header.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RunContext {
    pub target: String,
    pub protocol: String,
    pub scenario: String,
    /// `closed (concurrency 64)` or `open (500/s)`.
    pub load: String,
    pub blobs: usize,
    pub population_bytes: u64,
    pub zipf: f64,
    pub n_shards: u16,
    /// Unix seconds at the start of measurement.
    pub started_unix: u64,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p75: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let empty = h.is_empty();
        Self {
            count: h.len(),
            min: if empty { 0 } else { h.min() },
            mean: if empty { 0.0 } else { h.mean() },
            p50: quantile(h, 50.0),
            p75: quantile(h, 75.0),
            p90: quantile(h, 90.0),
            p95: quantile(h, 95.0),
            p99: quantile(h, 99.0),
            p99_9: quantile(h, 99.9),
            max: if empty { 0 } else { h.max() },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    pub requests: u64,
    pub errors: u64,
    pub bytes: u64,
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub from_secs: f64,
    pub until_secs: f64,
    pub requests: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheReport {
    /// Responses by `x-cache` header value.
    pub x_cache: BTreeMap<String, u64>,
    /// hit / (hit + miss) from those headers.
    pub hit_ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub second: u64,
    pub requests: u64,
    pub errors: u64,
    pub bytes: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CdfPoint {
    pub percentile: f64,
    pub latency_us: u64,
}

/// Everything a run measured; serialised as the `--json` report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub context: RunContext,
    pub elapsed_secs: f64,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub bytes: u64,
    pub bytes_per_sec: f64,
    /// Successful requests only.
    pub latency_us: Percentiles,
    pub by_kind: BTreeMap<String, KindReport>,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub error_examples: Vec<String>,
    pub cache: CacheReport,
    /// From the target's `/metrics` before and after the run; `None` if it has none.
    pub server_metrics: Option<MetricsDelta>,
    pub verification: VerifyCounts,
    pub warmup_requests: u64,
    pub warmup_errors: u64,
    /// Present when the run had phases (the `faults` scenario).
    pub phases: Vec<PhaseReport>,
    pub timeline: Vec<TimelinePoint>,
    pub cdf: Vec<CdfPoint>,
}

/// Microseconds for people: `850 µs`, `12.3 ms`, `1.20 s`.
pub fn human_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

impl Report {
    /// The end-of-run summary table.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let c = &self.context;
        let _ = writeln!(s, "walrus-loadtest {} → {}", c.scenario, c.target);
        let _ = writeln!(
            s,
            "  {} · {} · {} blobs ({}) · zipf {} · n_shards {}",
            c.protocol,
            c.load,
            c.blobs,
            crate::parse::human_bytes(c.population_bytes as f64),
            c.zipf,
            c.n_shards
        );
        let _ = writeln!(s);
        let row = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "  {k:<22} {v}");
        };
        row(
            &mut s,
            "requests",
            format!(
                "{} in {:.2} s ({} ok, {} errors; warm-up {} not counted)",
                self.requests, self.elapsed_secs, self.ok, self.errors, self.warmup_requests
            ),
        );
        row(
            &mut s,
            "throughput",
            format!(
                "{:.1} req/s, {}/s",
                self.throughput_rps,
                crate::parse::human_bytes(self.bytes_per_sec)
            ),
        );
        let l = &self.latency_us;
        row(
            &mut s,
            "latency",
            format!(
                "p50 {} · p90 {} · p99 {} · p99.9 {} · max {}",
                human_us(l.p50),
                human_us(l.p90),
                human_us(l.p99),
                human_us(l.p99_9),
                human_us(l.max)
            ),
        );
        for (kind, k) in &self.by_kind {
            row(
                &mut s,
                &format!("  {kind}"),
                format!(
                    "{} req, {} err, p50 {}, p99 {}",
                    k.requests,
                    k.errors,
                    human_us(k.latency_us.p50),
                    human_us(k.latency_us.p99)
                ),
            );
        }
        if let Some(ratio) = self.cache.hit_ratio {
            row(
                &mut s,
                "x-cache hit ratio",
                format!("{:.1}% {:?}", ratio * 100.0, self.cache.x_cache),
            );
        }
        match &self.server_metrics {
            Some(m) => {
                if let Some(r) = m.hit_ratio {
                    row(&mut s, "server hit ratio", format!("{:.1}%", r * 100.0));
                }
                if let Some(b) = m.upstream_bytes {
                    row(
                        &mut s,
                        "upstream bytes",
                        format!("{} ({b:.0} B)", crate::parse::human_bytes(b)),
                    );
                }
                for (name, delta) in &m.counters {
                    row(&mut s, &format!("  Δ {name}"), format!("{delta}"));
                }
            }
            None => row(&mut s, "server metrics", "none (no /metrics)".into()),
        }
        let v = &self.verification;
        row(
            &mut s,
            "verified by Blob ID",
            format!(
                "{} ok, {} wrong, {} skipped (checker busy)",
                v.verified, v.mismatched, v.skipped
            ),
        );
        if !self.errors_by_kind.is_empty() {
            row(
                &mut s,
                "errors by kind",
                format!("{:?}", self.errors_by_kind),
            );
            for e in &self.error_examples {
                let _ = writeln!(s, "    e.g. {e}");
            }
        }
        for p in &self.phases {
            row(
                &mut s,
                &format!("phase {}", p.name),
                format!(
                    "{:.1}–{:.1} s: {} req ({:.0}/s), {} err, p50 {}, p99 {}",
                    p.from_secs,
                    p.until_secs,
                    p.requests,
                    p.throughput_rps,
                    p.errors,
                    human_us(p.latency_us.p50),
                    human_us(p.latency_us.p99)
                ),
            );
        }
        for note in &c.notes {
            let _ = writeln!(s, "  note: {note}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(kind: OpKind, at_ms: u64, latency_us: u64) -> Outcome {
        Outcome {
            kind,
            finished_at: Duration::from_millis(at_ms),
            latency: Duration::from_micros(latency_us),
            bytes: 100,
            error: None,
            cache: Some("hit".into()),
        }
    }

    #[test]
    fn percentiles_of_a_known_sample() {
        // 1..=10_000 µs, once each: the p-th percentile is p*100 µs.
        let mut r = Recorder::new();
        for us in 1..=10_000u64 {
            r.record(&ok(OpKind::Get, us / 10, us));
        }
        let report = r.report(RunContext::default(), Duration::from_secs(1));
        let l = &report.latency_us;
        let close = |got: u64, want: u64| {
            // Three significant digits: within 0.1% (plus one unit of rounding).
            let tolerance = want / 1000 + 1;
            assert!(got.abs_diff(want) <= tolerance, "{got} vs {want}");
        };
        close(l.p50, 5_000);
        close(l.p75, 7_500);
        close(l.p90, 9_000);
        close(l.p99, 9_900);
        close(l.p99_9, 9_990);
        close(l.max, 10_000);
        assert_eq!(l.min, 1);
        assert!((l.mean - 5_000.5).abs() < 5.0, "{}", l.mean);
        assert_eq!(l.count, 10_000);
        assert_eq!(report.requests, 10_000);
        assert_eq!(report.throughput_rps, 10_000.0);
        assert_eq!(report.bytes_per_sec, 1_000_000.0);
        assert_eq!(report.cache.hit_ratio, Some(1.0));
        // The CDF is monotone and ends at the maximum.
        let cdf = &report.cdf;
        assert!(cdf
            .windows(2)
            .all(|w| w[0].percentile < w[1].percentile && w[0].latency_us <= w[1].latency_us));
        assert_eq!(cdf.last().unwrap().latency_us, l.max);
        assert_eq!(cdf.last().unwrap().percentile, 100.0);
    }

    #[test]
    fn percentiles_of_a_skewed_sample() {
        // 990 fast requests at 1 ms, 10 slow ones at 1 s: p99 is fast, p99.9 and max slow.
        let mut r = Recorder::new();
        for i in 0..990 {
            r.record(&ok(OpKind::Get, i, 1_000));
        }
        for i in 0..10 {
            r.record(&ok(OpKind::Get, i, 1_000_000));
        }
        let l = r
            .report(RunContext::default(), Duration::from_secs(1))
            .latency_us;
        assert!(l.p50.abs_diff(1_000) <= 1);
        assert!(l.p99.abs_diff(1_000) <= 1);
        assert!(l.p99_9.abs_diff(1_000_000) <= 1_000);
        assert!(l.max.abs_diff(1_000_000) <= 1_000);
    }

    #[test]
    fn an_uncacheable_miss_counts_as_a_miss() {
        let mut r = Recorder::new();
        for (i, tag) in ["hit-memory", "miss-uncacheable", "miss", "weird"]
            .iter()
            .enumerate()
        {
            let mut outcome = ok(OpKind::Get, i as u64 * 10, 100);
            outcome.cache = Some((*tag).into());
            r.record(&outcome);
        }
        let report = r.report(RunContext::default(), Duration::from_secs(1));
        assert_eq!(report.cache.x_cache["miss-uncacheable"], 1);
        assert_eq!(report.cache.x_cache["other"], 1);
        assert_eq!(report.cache.hit_ratio, Some(1.0 / 3.0));
    }

    #[test]
    fn errors_timeline_kinds_and_phases() {
        let mut r = Recorder::new();
        r.record(&ok(OpKind::Get, 100, 500));
        r.record(&ok(OpKind::Head, 1_500, 700));
        r.begin_phase("faults on", Duration::from_secs(2));
        let mut failed = ok(OpKind::Get, 2_500, 9_000);
        failed.error = Some(("http_503".into(), "503 Service Unavailable".into()));
        failed.cache = Some("MISS".into());
        r.record(&failed);
        r.record(&failed);
        r.verified(false);
        r.error("wrong_bytes", "the body hashes to another Blob ID");
        r.verify_skipped();
        let report = r.report(RunContext::default(), Duration::from_secs(3));
        assert_eq!(report.requests, 4);
        assert_eq!(report.ok, 2);
        assert_eq!(report.errors, 3, "two failed requests and one wrong body");
        assert_eq!(report.errors_by_kind["http_503"], 2);
        assert_eq!(report.errors_by_kind["wrong_bytes"], 1);
        assert_eq!(report.error_examples.len(), 2, "examples are deduplicated");
        assert_eq!(
            report.latency_us.count, 2,
            "failures are not in the histogram"
        );
        assert_eq!(report.by_kind["get"].requests, 3);
        assert_eq!(report.by_kind["head"].requests, 1);
        assert_eq!(report.timeline.len(), 3);
        assert_eq!(report.timeline[2].errors, 2);
        assert_eq!(report.cache.x_cache["miss"], 2);
        assert_eq!(report.cache.hit_ratio, Some(0.5));
        assert_eq!(report.phases.len(), 2);
        assert_eq!(report.phases[0].requests, 2);
        assert_eq!(report.phases[1].errors, 2);
        assert_eq!(report.phases[1].until_secs, 3.0);
        assert_eq!(report.verification.mismatched, 1);
        assert_eq!(report.verification.skipped, 1);
        assert!(report.summary().contains("phase faults on"));
    }

    #[test]
    fn empty_runs_report_zeros() {
        let report = Recorder::new().report(RunContext::default(), Duration::ZERO);
        assert_eq!(report.latency_us.p99, 0);
        assert!(report.cdf.is_empty());
        assert_eq!(report.cache.hit_ratio, None);
        assert!(report.summary().contains("requests"));
    }

    #[test]
    fn latencies_beyond_the_range_are_clamped() {
        let mut r = Recorder::new();
        r.record(&ok(OpKind::Get, 0, u64::MAX / 2));
        r.record(&ok(OpKind::Get, 0, 0));
        let l = r
            .report(RunContext::default(), Duration::from_secs(1))
            .latency_us;
        assert_eq!(l.count, 2);
        assert!(l.max >= MAX_LATENCY_US);
        assert_eq!(l.min, 1);
    }

    #[test]
    fn human_latencies() {
        assert_eq!(human_us(850), "850 µs");
        assert_eq!(human_us(12_300), "12.30 ms");
        assert_eq!(human_us(1_200_000), "1.20 s");
    }
}
