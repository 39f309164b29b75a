//! The `--html` report: one self-contained page (inline CSS and SVG, no scripts, no external
//! assets) with the summary, latency over time (p50/p99/max per second, phases marked) and the
//! latency CDF on a "nines" scale, so the tail is as visible as the median.

use crate::report::{human_us, Report};
use std::fmt::Write as _;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 40.0;

/// Escape text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A log10 axis over `[lo, hi]` µs with ticks at powers of ten.
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    fn new(values: impl Iterator<Item = u64>) -> Self {
        let (mut lo, mut hi) = (f64::MAX, 1.0f64);
        for v in values.filter(|&v| v > 0) {
            lo = lo.min(v as f64);
            hi = hi.max(v as f64);
        }
        if lo > hi {
            lo = 1.0;
        }
        let lo = 10f64.powf(lo.max(1.0).log10().floor());
        let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
        Self { lo, hi }
    }

    /// Pixel y for `us`.
    fn y(&self, us: u64) -> f64 {
        let v = (us.max(1) as f64).clamp(self.lo, self.hi);
        let t = (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10());
        TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - t)
    }

    fn ticks(&self) -> Vec<u64> {
        let mut out = Vec::new();
        let mut v = self.lo;
        while v <= self.hi * 1.0001 {
            out.push(v as u64);
            v *= 10.0;
        }
        out
    }
}

fn x_of(t: f64, max: f64) -> f64 {
    LEFT + (WIDTH - LEFT - RIGHT) * (t / max.max(1e-9))
}

fn svg_open(s: &mut String, title: &str) {
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}">"#,
        escape(title)
    );
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="#fafafa" stroke="#ccc"/>"##,
        WIDTH - LEFT - RIGHT,
        HEIGHT - TOP - BOTTOM
    );
}

fn y_ticks(s: &mut String, axis: &LogAxis) {
    for tick in axis.ticks() {
        let y = axis.y(tick);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            escape(&tick_label(tick))
        );
    }
}

/// Axis labels at powers of ten: `100 µs`, `10 ms`, `1 s`.
fn tick_label(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{} ms", us / 1_000),
        _ => format!("{} s", us / 1_000_000),
    }
}

fn polyline(s: &mut String, points: &[(f64, f64)], color: &str, label: &str) {
    if points.is_empty() {
        return;
    }
    let _ = write!(
        s,
        r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points=""#
    );
    for (x, y) in points {
        let _ = write!(s, "{x:.1},{y:.1} ");
    }
    let _ = write!(s, r#""><title>{}</title></polyline>"#, escape(label));
}

fn legend(s: &mut String, items: &[(&str, &str)]) {
    for (i, (color, label)) in items.iter().enumerate() {
        let x = LEFT + 10.0 + i as f64 * 90.0;
        let _ = write!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="3" fill="{color}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            TOP + 10.0,
            x + 16.0,
            TOP + 14.0,
            escape(label)
        );
    }
}

/// p50, p99 and max per second of measurement, with phase boundaries.
pub fn latency_over_time(report: &Report) -> String {
    let mut s = String::new();
    svg_open(&mut s, "latency over time");
    let points: Vec<_> = report
        .timeline
        .iter()
        .filter(|p| p.requests > p.errors)
        .collect();
    let axis = LogAxis::new(points.iter().flat_map(|p| [p.p50_us, p.max_us]));
    y_ticks(&mut s, &axis);
    let max_t = (report.timeline.len() as f64)
        .max(report.elapsed_secs)
        .max(1.0);
    let step = (max_t / 10.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= max_t {
        let x = x_of(t, max_t);
        let _ = write!(
            s,
            r#"<text x="{x:.1}" y="{}" font-size="11" text-anchor="middle">{t}s</text>"#,
            HEIGHT - BOTTOM + 16.0
        );
        t += step;
    }
    for phase in report.phases.iter().skip(1) {
        let x = x_of(phase.from_secs, max_t);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="#c00" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" font-size="11" fill="#c00">{}</text>"##,
            HEIGHT - BOTTOM,
            x + 4.0,
            TOP + 28.0,
            escape(&phase.name)
        );
    }
    // Each second is plotted at its middle.
    let line = |f: &dyn Fn(&crate::report::TimelinePoint) -> u64| -> Vec<(f64, f64)> {
        points
            .iter()
            .map(|p| (x_of(p.second as f64 + 0.5, max_t), axis.y(f(p))))
            .collect()
    };
    polyline(&mut s, &line(&|p| p.max_us), "#bbb", "max");
    polyline(&mut s, &line(&|p| p.p99_us), "#d62728", "p99");
    polyline(&mut s, &line(&|p| p.p50_us), "#1f77b4", "p50");
    legend(
        &mut s,
        &[("#1f77b4", "p50"), ("#d62728", "p99"), ("#bbb", "max")],
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">seconds since the start of measurement</text></svg>"#,
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - 6.0
    );
    s
}

/// The CDF: x is "nines" (-log10(1 - p)), so 90, 99, 99.9 and 99.99 are evenly spaced.
pub fn latency_cdf(report: &Report) -> String {
    let mut s = String::new();
    svg_open(&mut s, "latency CDF");
    let axis = LogAxis::new(report.cdf.iter().map(|p| p.latency_us));
    y_ticks(&mut s, &axis);
    let nines = |p: f64| -> f64 { -(1.0 - (p / 100.0).min(0.99999)).log10() };
    let max_nines = 5.0;
    for (label, p) in [
        ("0", 0.0),
        ("90", 90.0),
        ("99", 99.0),
        ("99.9", 99.9),
        ("99.99", 99.99),
    ] {
        let x = x_of(nines(p), max_nines);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="#e4e4e4"/><text x="{x:.1}" y="{}" font-size="11" text-anchor="middle">{label}</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 16.0
        );
    }
    let points: Vec<(f64, f64)> = report
        .cdf
        .iter()
        .map(|p| (x_of(nines(p.percentile), max_nines), axis.y(p.latency_us)))
        .collect();
    polyline(&mut s, &points, "#1f77b4", "latency at percentile");
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">percentile (the last point is the maximum)</text></svg>"#,
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - 6.0
    );
    s
}

fn row(s: &mut String, key: &str, value: &str) {
    let _ = write!(
        s,
        "<tr><th>{}</th><td>{}</td></tr>",
        escape(key),
        escape(value)
    );
}

/// The whole page.
pub fn render(report: &Report) -> String {
    let c = &report.context;
    let mut s = String::new();
    let title = format!("walrus-loadtest: {} → {}", c.scenario, c.target);
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:820px}}\
         table{{border-collapse:collapse;margin:1em 0}}th,td{{text-align:left;padding:3px 12px;border-bottom:1px solid #eee}}\
         th{{font-weight:600}}h2{{margin-top:1.6em}}.num td{{text-align:right}}code{{font-size:90%}}\
         </style></head><body><h1>{}</h1>",
        escape(&title),
        escape(&title)
    );
    s.push_str("<table>");
    row(&mut s, "protocol", &c.protocol);
    row(&mut s, "load", &c.load);
    row(
        &mut s,
        "population",
        &format!(
            "{} blobs, {}, Zipf {}",
            c.blobs,
            crate::parse::human_bytes(c.population_bytes as f64),
            c.zipf
        ),
    );
    row(
        &mut s,
        "requests",
        &format!(
            "{} in {:.2} s: {} ok, {} errors (warm-up: {} requests, {} errors)",
            report.requests,
            report.elapsed_secs,
            report.ok,
            report.errors,
            report.warmup_requests,
            report.warmup_errors
        ),
    );
    row(
        &mut s,
        "throughput",
        &format!(
            "{:.1} req/s, {}/s",
            report.throughput_rps,
            crate::parse::human_bytes(report.bytes_per_sec)
        ),
    );
    if let Some(r) = report.cache.hit_ratio {
        row(&mut s, "x-cache hit ratio", &format!("{:.1}%", r * 100.0));
    }
    match &report.server_metrics {
        Some(m) => {
            if let Some(r) = m.hit_ratio {
                row(&mut s, "server hit ratio", &format!("{:.1}%", r * 100.0));
            }
            if let Some(b) = m.upstream_bytes {
                row(&mut s, "upstream bytes", &crate::parse::human_bytes(b));
            }
        }
        None => row(
            &mut s,
            "server metrics",
            "none (the target has no /metrics)",
        ),
    }
    let v = &report.verification;
    row(
        &mut s,
        "checked against the Blob ID",
        &format!(
            "{} ok, {} wrong, {} skipped",
            v.verified, v.mismatched, v.skipped
        ),
    );
    s.push_str("</table><h2>Latency (successful requests)</h2><table class=\"num\"><tr><th>kind</th><th>requests</th><th>errors</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>");
    let mut lat_row = |name: &str, requests: u64, errors: u64, l: &crate::report::Percentiles| {
        let _ = write!(
            s,
            "<tr><th>{}</th><td>{requests}</td><td>{errors}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            human_us(l.p50),
            human_us(l.p90),
            human_us(l.p99),
            human_us(l.p99_9),
            human_us(l.max)
        );
    };
    lat_row("all", report.requests, report.errors, &report.latency_us);
    for (kind, k) in &report.by_kind {
        lat_row(kind, k.requests, k.errors, &k.latency_us);
    }
    for p in &report.phases {
        lat_row(
            &format!(
                "phase {} ({:.1}–{:.1} s)",
                p.name, p.from_secs, p.until_secs
            ),
            p.requests,
            p.errors,
            &p.latency_us,
        );
    }
    s.push_str("</table><h2>Latency over time</h2>");
    s.push_str(&latency_over_time(report));
    s.push_str("<h2>Latency CDF</h2>");
    s.push_str(&latency_cdf(report));
    if !report.errors_by_kind.is_empty() {
        s.push_str("<h2>Errors</h2><table>");
        for (kind, n) in &report.errors_by_kind {
            row(&mut s, kind, &n.to_string());
        }
        s.push_str("</table><ul>");
        for e in &report.error_examples {
            let _ = write!(s, "<li><code>{}</code></li>", escape(e));
        }
        s.push_str("</ul>");
    }
    if let Some(m) = &report.server_metrics {
        if !m.counters.is_empty() {
            s.push_str("<h2>Server counters (change during the run)</h2><table class=\"num\">");
            for (name, delta) in &m.counters {
                row(&mut s, name, &format!("{delta}"));
            }
            s.push_str("</table>");
        }
    }
    if !c.notes.is_empty() {
        s.push_str("<h2>Notes</h2><ul>");
        for note in &c.notes {
            let _ = write!(s, "<li>{}</li>", escape(note));
        }
        s.push_str("</ul>");
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Outcome, Recorder, RunContext};
    use crate::workload::OpKind;
    use std::time::Duration;

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn page_is_self_contained_with_two_charts() {
        let mut r = Recorder::new();
        for i in 0..3000u64 {
            r.record(&Outcome {
                kind: OpKind::Get,
                finished_at: Duration::from_millis(i),
                latency: Duration::from_micros(100 + i * 7),
                bytes: 10,
                error: None,
                cache: None,
            });
        }
        r.begin_phase("faults on node 0", Duration::from_secs(1));
        let context = RunContext {
            target: "http://127.0.0.1:1/<script>".into(),
            ..RunContext::default()
        };
        let page = render(&r.report(context, Duration::from_secs(3)));
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches("<svg").count(), 2);
        assert!(page.contains("<polyline"));
        assert!(page.contains("faults on node 0"));
        assert!(!page.contains("<script>"), "text is escaped");
        assert!(
            !page.contains("src=") && !page.contains("<link"),
            "no external assets"
        );
        assert!(page.trim_end().ends_with("</html>"));
    }

    #[test]
    fn log_axis_covers_the_values() {
        let axis = LogAxis::new([150u64, 42_000].into_iter());
        assert_eq!(axis.ticks(), vec![100, 1_000, 10_000, 100_000]);
        assert!(
            axis.y(150) > axis.y(42_000),
            "larger latencies are higher up"
        );
        let empty = LogAxis::new(std::iter::empty());
        assert_eq!(empty.ticks(), vec![1, 10]);
        assert_eq!(tick_label(100), "100 µs");
        assert_eq!(tick_label(10_000), "10 ms");
        assert_eq!(tick_label(1_000_000), "1 s");
    }
}
