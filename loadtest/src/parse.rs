//! Parsers for the command line's human values: byte sizes (`64KiB`), size distributions
//! (`4KiB:70%,1MiB:25%,64MiB:5%`), rates (`500/s`, `2k/s`), durations (`30s`, `2m`, `500ms`)
//! and shares (`20%`, `0.2`). Each rejects bad input with a reason that names the input.

use std::time::Duration;

/// Why a command-line value did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("empty value")]
    Empty,
    #[error("{0:?} is not a size (examples: 4096, 4KiB, 1MiB, 10MB)")]
    Size(String),
    #[error("{0:?} is not a size distribution (example: 4KiB:70%,1MiB:25%,64MiB:5%)")]
    Distribution(String),
    #[error("size distribution weights must add up to more than 0 (got {0:?})")]
    ZeroWeights(String),
    #[error("{0:?} is not a rate (examples: 500/s, 2k/s, 100)")]
    Rate(String),
    #[error("the rate must be positive and finite, got {0:?}")]
    RateRange(String),
    #[error("{0:?} is not a duration (examples: 30s, 2m, 500ms, 1h)")]
    Duration(String),
    #[error("{0:?} is not a share (examples: 20%, 0.2)")]
    Share(String),
    #[error("a share must be between 0 and 1 (0% and 100%), got {0:?}")]
    ShareRange(String),
}

/// Parse `1234`, `4KiB`, `1 MiB`, `10MB`, `2G` (binary units by default for single letters).
pub fn size(text: &str) -> Result<u64, ParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    let bad = || ParseError::Size(text.to_owned());
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(bad());
    }
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(bad()),
    };
    number.checked_mul(multiplier).ok_or_else(bad)
}

/// A discrete distribution of blob sizes: `(size, weight)` pairs with positive total weight.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeDist {
    entries: Vec<(u64, f64)>,
    total: f64,
}

impl SizeDist {
    /// One size, always.
    pub fn fixed(size: u64) -> Self {
        Self {
            entries: vec![(size, 1.0)],
            total: 1.0,
        }
    }

    /// The sizes and their weights as given (weights need not add up to 100%).
    pub fn entries(&self) -> &[(u64, f64)] {
        &self.entries
    }

    /// The size for a uniform draw `u` in `[0, 1)`.
    pub fn sample(&self, u: f64) -> u64 {
        let mut target = u.clamp(0.0, 1.0) * self.total;
        for &(size, weight) in &self.entries {
            if target < weight {
                return size;
            }
            target -= weight;
        }
        // Rounding at the top end: the last entry with weight.
        self.entries
            .iter()
            .rev()
            .find(|(_, w)| *w > 0.0)
            .map_or(0, |(s, _)| *s)
    }

    /// The largest size that can be drawn.
    pub fn max(&self) -> u64 {
        self.entries
            .iter()
            .filter(|(_, w)| *w > 0.0)
            .map(|(s, _)| *s)
            .max()
            .unwrap_or(0)
    }
}

/// Parse `4KiB:70%,1MiB:25%,64MiB:5%`, `4KiB:7,1MiB:3` (relative weights) or a single `1MiB`.
pub fn size_dist(text: &str) -> Result<SizeDist, ParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    let bad = || ParseError::Distribution(text.to_owned());
    let mut entries = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (size_text, weight) = match part.split_once(':') {
            None => (part, 1.0),
            Some((s, w)) => {
                let w = w.trim();
                let weight: f64 = match w.strip_suffix('%') {
                    Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
                    None => w.parse().map_err(|_| bad())?,
                };
                (s, weight)
            }
        };
        if !weight.is_finite() || weight < 0.0 {
            return Err(bad());
        }
        let size = size(size_text).map_err(|_| bad())?;
        entries.push((size, weight));
    }
    let total: f64 = entries.iter().map(|(_, w)| w).sum();
    if total <= 0.0 {
        return Err(ParseError::ZeroWeights(text.to_owned()));
    }
    Ok(SizeDist { entries, total })
}

/// Parse a rate in requests per second: `500/s`, `2k/s`, `30/m`, `100` (per second).
pub fn rate(text: &str) -> Result<f64, ParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    let bad = || ParseError::Rate(text.to_owned());
    let (count, per) = match text.split_once('/') {
        Some((c, p)) => (c.trim(), p.trim()),
        None => (text, "s"),
    };
    let per_secs = match per {
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let (digits, multiplier) = match count.strip_suffix(['k', 'K']) {
        Some(d) => (d, 1_000.0),
        None => (count, 1.0),
    };
    let value: f64 = digits.parse().map_err(|_| bad())?;
    let rate = value * multiplier / per_secs;
    if !rate.is_finite() || rate <= 0.0 {
        return Err(ParseError::RateRange(text.to_owned()));
    }
    Ok(rate)
}

/// Parse `500ms`, `30s`, `2m`, `1h`, or a bare number of seconds.
pub fn duration(text: &str) -> Result<Duration, ParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    let bad = || ParseError::Duration(text.to_owned());
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1_000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3_600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// Parse a share of requests: `20%` or `0.2`, within `[0, 1]`.
pub fn share(text: &str) -> Result<f64, ParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    let value = match text.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| ParseError::Share(text.to_owned()))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(ParseError::ShareRange(text.to_owned()));
    }
    Ok(value)
}

/// Format a byte count for people: `4 KiB`, `1.5 MiB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("4KiB"), Ok(4096));
        assert_eq!(size("4k"), Ok(4096));
        assert_eq!(size("1 MiB"), Ok(1 << 20));
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert_eq!(size("10MB"), Ok(10_000_000));
        assert_eq!(size(""), Err(ParseError::Empty));
        for bad in ["KiB", "4 parsecs", "-1", "1.5MiB", "99999999999999999999"] {
            assert!(matches!(size(bad), Err(ParseError::Size(_))), "{bad}");
        }
        assert!(size("4 parsecs")
            .unwrap_err()
            .to_string()
            .contains("4 parsecs"));
    }

    #[test]
    fn size_distributions() {
        let d = size_dist("4KiB:70%,1MiB:25%,64MiB:5%").unwrap();
        assert_eq!(
            d.entries(),
            &[(4096, 0.7), (1 << 20, 0.25), (64 << 20, 0.05)]
        );
        assert_eq!(d.max(), 64 << 20);
        assert_eq!(d.sample(0.0), 4096);
        assert_eq!(d.sample(0.69), 4096);
        assert_eq!(d.sample(0.71), 1 << 20);
        assert_eq!(d.sample(0.96), 64 << 20);
        assert_eq!(d.sample(1.0), 64 << 20);
        assert_eq!(size_dist("1MiB").unwrap(), SizeDist::fixed(1 << 20));
        // Relative weights.
        let d = size_dist("1k:3,2k:1").unwrap();
        assert_eq!(d.sample(0.74), 1024);
        assert_eq!(d.sample(0.76), 2048);
        for bad in [
            "4KiB:",
            "4KiB:x%",
            "x:10%",
            "4KiB:-5%",
            "4KiB:70%,,1MiB:30%",
        ] {
            assert!(
                matches!(size_dist(bad), Err(ParseError::Distribution(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            size_dist("4KiB:0%"),
            Err(ParseError::ZeroWeights(_))
        ));
    }

    #[test]
    fn size_distribution_sampling_follows_weights() {
        let d = size_dist("1k:70%,2k:25%,3k:5%").unwrap();
        let n = 100_000;
        let mut counts = [0u32; 3];
        for i in 0..n {
            let s = d.sample((f64::from(i) + 0.5) / f64::from(n));
            counts[(s / 1024 - 1) as usize] += 1;
        }
        assert_eq!(counts, [70_000, 25_000, 5_000]);
    }

    #[test]
    fn rates() {
        assert_eq!(rate("500/s"), Ok(500.0));
        assert_eq!(rate("500"), Ok(500.0));
        assert_eq!(rate("2k/s"), Ok(2000.0));
        assert_eq!(rate("120/m"), Ok(2.0));
        assert_eq!(rate("0.5/s"), Ok(0.5));
        for bad in ["fast", "10/fortnight", "/s", "k/s"] {
            assert!(matches!(rate(bad), Err(ParseError::Rate(_))), "{bad}");
        }
        assert!(matches!(rate("0/s"), Err(ParseError::RateRange(_))));
        assert!(matches!(rate("-5/s"), Err(ParseError::RateRange(_))));
    }

    #[test]
    fn durations() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["soon", "5 fortnights", "s", "-1s", "1e999s"] {
            assert!(
                matches!(duration(bad), Err(ParseError::Duration(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn shares() {
        assert_eq!(share("20%"), Ok(0.2));
        assert_eq!(share("0.25"), Ok(0.25));
        assert_eq!(share("0"), Ok(0.0));
        assert_eq!(share("100%"), Ok(1.0));
        assert!(matches!(share("some"), Err(ParseError::Share(_))));
        assert!(matches!(share("120%"), Err(ParseError::ShareRange(_))));
        assert!(matches!(share("-0.1"), Err(ParseError::ShareRange(_))));
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(text in ".{0,40}") {
            let _ = size(&text);
            let _ = size_dist(&text);
            let _ = rate(&text);
            let _ = duration(&text);
            let _ = share(&text);
        }

        #[test]
        fn sizes_round_trip(n in 0u64..1 << 40, unit in 0usize..4) {
            let (suffix, mult) = [("", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("kb", 1000)][unit];
            let expected = n.checked_mul(mult);
            let parsed = size(&format!("{n}{suffix}")).ok();
            proptest::prop_assert_eq!(parsed, expected);
        }

        #[test]
        fn distributions_sample_only_their_sizes(
            weights in proptest::collection::vec(1u32..100, 1..6),
            u in 0.0f64..=1.0,
        ) {
            let text: Vec<String> = weights
                .iter()
                .enumerate()
                .map(|(i, w)| format!("{}KiB:{w}", i + 1))
                .collect();
            let d = size_dist(&text.join(",")).unwrap();
            let s = d.sample(u);
            proptest::prop_assert!(s.is_multiple_of(1024) && s / 1024 >= 1 && s / 1024 <= weights.len() as u64);
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(4096.0), "4 KiB");
        assert_eq!(human_bytes(1536.0 * 1024.0), "1.5 MiB");
        assert_eq!(human_bytes(12.0), "12 B");
    }
}
