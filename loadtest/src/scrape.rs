//! The target's Prometheus `/metrics`, scraped before and after a run: a parser for the text
//! exposition format and the counter deltas the report shows (cache hits and misses, bytes
//! fetched upstream), found by name so any gateway that follows the `gateway_*` naming works.
//! Targets without `/metrics` (nginx) simply have no server-side figures.

use serde::Serialize;
use std::collections::BTreeMap;

/// Series kept in the report at most (the rest are summarised by the matched sums).
const MAX_SERIES: usize = 200;

/// One scrape: counter series (name with labels, as rendered) → value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub counters: BTreeMap<String, f64>,
}

/// Parse the text format, keeping counters: series whose `# TYPE` is `counter`, or, when no
/// type is given, whose name ends in `_total`. Malformed lines are skipped.
pub fn parse(text: &str) -> Scrape {
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    let mut counters = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE") {
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    types.insert(name, kind);
                }
            }
            continue;
        }
        let Some((series, name, rest)) = split_series(line) else {
            continue;
        };
        // OpenMetrics types a counter by its name without `_total`.
        let is_counter = match types
            .get(name)
            .or_else(|| types.get(name.trim_end_matches("_total")))
        {
            Some(kind) => *kind == "counter",
            None => name.ends_with("_total"),
        };
        if !is_counter {
            continue;
        }
        let Some(value) = rest.split_whitespace().next().and_then(parse_value) else {
            continue;
        };
        counters.insert(series.to_owned(), value);
    }
    Scrape { counters }
}

/// `(series with labels, metric name, the rest)` of a sample line.
fn split_series(line: &str) -> Option<(&str, &str, &str)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut end = name_end;
    if line[name_end..].starts_with('{') {
        // Find the closing brace outside quoted label values.
        let mut in_quotes = false;
        let mut escaped = false;
        let mut close = None;
        for (i, c) in line[name_end..].char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '}' if !in_quotes => {
                    close = Some(name_end + i + 1);
                    break;
                }
                _ => {}
            }
        }
        end = close?;
    }
    Some((&line[..end], name, &line[end..]))
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok().filter(|v: &f64| !v.is_nan()),
    }
}

/// What changed on the server during the run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MetricsDelta {
    /// Every `gateway_*` counter that moved, by series.
    pub counters: BTreeMap<String, f64>,
    /// Sum of the deltas of counters named like `gateway_*hit*`.
    pub hits: Option<f64>,
    /// Sum of the deltas of counters named like `gateway_*miss*`.
    pub misses: Option<f64>,
    /// hits / (hits + misses).
    pub hit_ratio: Option<f64>,
    /// Sum of the deltas of counters named like `gateway_*upstream_bytes*`.
    pub upstream_bytes: Option<f64>,
    /// Which series each sum was made of.
    pub matched: BTreeMap<String, Vec<String>>,
}

/// The deltas between two scrapes (a series missing before counts from 0).
pub fn delta(before: &Scrape, after: &Scrape) -> MetricsDelta {
    let mut out = MetricsDelta::default();
    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
    for (series, value) in &after.counters {
        let name = series.split('{').next().unwrap_or(series);
        if !name.starts_with("gateway_") {
            continue;
        }
        let d = value - before.counters.get(series).copied().unwrap_or(0.0);
        let group = if name.contains("upstream_bytes") {
            Some("upstream_bytes")
        } else if name.contains("miss") {
            Some("misses")
        } else if name.contains("hit") {
            Some("hits")
        } else {
            None
        };
        if let Some(group) = group {
            *sums.entry(group).or_insert(0.0) += d;
            out.matched
                .entry(group.to_owned())
                .or_default()
                .push(series.clone());
        }
        if d != 0.0 && out.counters.len() < MAX_SERIES {
            out.counters.insert(series.clone(), d);
        }
    }
    out.hits = sums.get("hits").copied();
    out.misses = sums.get("misses").copied();
    out.upstream_bytes = sums.get("upstream_bytes").copied();
    if let (Some(h), Some(m)) = (out.hits, out.misses) {
        if h + m > 0.0 {
            out.hit_ratio = Some(h / (h + m));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP gateway_cache_hits_total Blob requests answered from the cache.
# TYPE gateway_cache_hits_total counter
gateway_cache_hits_total 10
# TYPE gateway_cache_misses_total counter
gateway_cache_misses_total 5
# TYPE gateway_upstream_bytes_total counter
gateway_upstream_bytes_total 1000
# TYPE gateway_requests_in_flight gauge
gateway_requests_in_flight 3
# TYPE gateway_sliver_requests_total counter
gateway_sliver_requests_total{kind="primary"} 7
gateway_sliver_requests_total{kind="odd } \" value"} 1 1700000000
# TYPE gateway_fill_seconds summary
gateway_fill_seconds{quantile="0.5"} 0.1
gateway_fill_seconds_count 4
other_total 99
garbage line here
"#;

    #[test]
    fn parses_counters_only() {
        let s = parse(BEFORE);
        assert_eq!(s.counters["gateway_cache_hits_total"], 10.0);
        assert_eq!(
            s.counters["gateway_sliver_requests_total{kind=\"primary\"}"],
            7.0
        );
        assert_eq!(
            s.counters["gateway_sliver_requests_total{kind=\"odd } \\\" value\"}"],
            1.0
        );
        assert_eq!(s.counters["other_total"], 99.0);
        assert!(!s.counters.contains_key("gateway_requests_in_flight"));
        assert!(!s
            .counters
            .keys()
            .any(|k| k.starts_with("gateway_fill_seconds")));
        assert!(!s.counters.keys().any(|k| k.starts_with("garbage")));
    }

    #[test]
    fn deltas_find_hits_misses_and_upstream_bytes() {
        let before = parse(BEFORE);
        let after = parse(
            &BEFORE
                .replace("hits_total 10", "hits_total 40")
                .replace("misses_total 5", "misses_total 15")
                .replace("bytes_total 1000", "bytes_total 5000"),
        );
        let d = delta(&before, &after);
        assert_eq!(d.hits, Some(30.0));
        assert_eq!(d.misses, Some(10.0));
        assert_eq!(d.hit_ratio, Some(0.75));
        assert_eq!(d.upstream_bytes, Some(4000.0));
        assert_eq!(d.matched["hits"], vec!["gateway_cache_hits_total"]);
        assert_eq!(d.counters.len(), 3, "only moved gateway_* counters");
        assert!(!d.counters.contains_key("other_total"));
    }

    #[test]
    fn no_gateway_metrics_means_no_figures() {
        let d = delta(&parse(""), &parse("# nothing\n"));
        assert_eq!(d, MetricsDelta::default());
    }
}
