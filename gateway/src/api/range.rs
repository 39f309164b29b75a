//! The `Range` request header (RFC 9110 §14), reduced to what an immutable blob needs.
//!
//! One `bytes` range in any of its three forms (`a-b`, `a-`, `-n`) is honoured with 206; a
//! satisfiable-looking header that selects nothing is 416; several ranges, other units or a
//! malformed header are ignored (RFC 9110 allows it), and the whole blob is sent with 200.
//! Parsing is pure and total: any byte string yields a [`RangeRequest`], never a panic.
//!
//! `If-Range` (RFC 9110 §13.1.5) makes the range conditional: it is honoured only if the
//! header is exactly this representation's strong ETag (the aggregator's unquoted form of the
//! Blob ID too); a weak tag, another tag, a date (blobs have no `Last-Modified`, so a date never
//! matches) or several values mean the whole blob.

/// One byte-range spec, before the blob length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last`, both inclusive.
    FromTo(u64, u64),
    /// `first-`: to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// What a `Range` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No header, or one we ignore (several ranges, another unit, bad syntax): send it all.
    Whole,
    /// Exactly one byte range.
    Single(RangeSpec),
}

/// Headers longer than this are ignored rather than parsed.
const MAX_HEADER_LEN: usize = 1024;

/// Parse a `Range` header value.
pub fn parse(value: &[u8]) -> RangeRequest {
    if value.len() > MAX_HEADER_LEN {
        return RangeRequest::Whole;
    }
    let Ok(text) = std::str::from_utf8(value) else {
        return RangeRequest::Whole;
    };
    let Some((unit, set)) = text.trim().split_once('=') else {
        return RangeRequest::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Whole;
    }
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return RangeRequest::Whole;
    };
    parse_spec(spec).map_or(RangeRequest::Whole, RangeRequest::Single)
}

fn parse_spec(spec: &str) -> Option<RangeSpec> {
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return Some(RangeSpec::Suffix(number(last)?));
    }
    let first = number(first)?;
    if last.is_empty() {
        return Some(RangeSpec::From(first));
    }
    let last = number(last)?;
    // `last < first` is invalid syntax (RFC 9110 §14.1.1): ignore the header.
    (last >= first).then_some(RangeSpec::FromTo(first, last))
}

fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Whether a `Range` may be honoured given the request's `If-Range` values: true without the
/// header, else only for a strong match with `etag` (a quoted entity tag).
pub fn if_range_holds<'a>(
    values: impl IntoIterator<Item = &'a http::HeaderValue>,
    etag: &str,
) -> bool {
    let mut values = values.into_iter();
    let Some(value) = values.next() else {
        return true;
    };
    if values.next().is_some() {
        // A single-valued field given twice: no sound reading, so no range.
        return false;
    }
    let value = value.as_bytes().trim_ascii();
    // Strong comparison: `W/"…"` never matches. An unquoted tag (the aggregator's ETag form) is
    // not a date either, so it can only be meant as the Blob ID.
    value == etag.as_bytes() || value == etag.trim_matches('"').as_bytes()
}

impl RangeSpec {
    /// The half-open byte range `[start, end)` this selects in a blob of `len` bytes, or `None`
    /// when it selects nothing (416).
    pub fn resolve(&self, len: u64) -> Option<(u64, u64)> {
        match *self {
            RangeSpec::FromTo(first, last) => {
                (first < len).then(|| (first, last.saturating_add(1).min(len)))
            }
            RangeSpec::From(first) => (first < len).then_some((first, len)),
            RangeSpec::Suffix(n) => (n > 0 && len > 0).then(|| (len - n.min(len), len)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_three_single_forms_parse() {
        assert_eq!(
            parse(b"bytes=0-99"),
            RangeRequest::Single(RangeSpec::FromTo(0, 99))
        );
        assert_eq!(
            parse(b"bytes=100-"),
            RangeRequest::Single(RangeSpec::From(100))
        );
        assert_eq!(
            parse(b"bytes=-5"),
            RangeRequest::Single(RangeSpec::Suffix(5))
        );
        assert_eq!(
            parse(b"Bytes = 1 - 2 "),
            RangeRequest::Single(RangeSpec::FromTo(1, 2))
        );
    }

    #[test]
    fn everything_else_means_the_whole_blob() {
        for header in [
            &b""[..],
            b"bytes=0-1,5-6",
            b"items=0-1",
            b"bytes=5-1",
            b"bytes=-",
            b"bytes=a-b",
            b"bytes=+1-2",
            b"bytes=99999999999999999999999-",
            b"bytes 0-1",
            b"bytes=",
            b"\xff\xfe",
        ] {
            assert_eq!(parse(header), RangeRequest::Whole, "{header:?}");
        }
    }

    #[test]
    fn resolution_clamps_and_rejects() {
        assert_eq!(RangeSpec::FromTo(0, 99).resolve(50), Some((0, 50)));
        assert_eq!(RangeSpec::FromTo(50, 99).resolve(50), None);
        assert_eq!(RangeSpec::From(49).resolve(50), Some((49, 50)));
        assert_eq!(RangeSpec::Suffix(500).resolve(50), Some((0, 50)));
        assert_eq!(RangeSpec::Suffix(0).resolve(50), None);
        assert_eq!(RangeSpec::Suffix(3).resolve(0), None);
        assert_eq!(RangeSpec::From(0).resolve(0), None);
        assert_eq!(RangeSpec::FromTo(0, u64::MAX).resolve(7), Some((0, 7)));
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        use http::HeaderValue;
        let etag = "\"abc\"";
        let holds = |values: &[&str]| {
            let values: Vec<HeaderValue> = values
                .iter()
                .map(|v| HeaderValue::from_str(v).unwrap())
                .collect();
            if_range_holds(&values, etag)
        };
        assert!(holds(&[]));
        assert!(holds(&["\"abc\""]));
        assert!(holds(&[" \"abc\" "]));
        assert!(holds(&["abc"]), "the aggregator's unquoted form");
        assert!(!holds(&["W/\"abc\""]), "weak tags never match strongly");
        assert!(!holds(&["\"abd\""]));
        assert!(!holds(&["\"abc\", \"abc\""]));
        assert!(!holds(&["\"abc\"", "\"abc\""]));
        assert!(
            !holds(&["Sun, 06 Nov 1994 08:49:37 GMT"]),
            "no Last-Modified to compare"
        );
        assert!(!holds(&[""]));
    }

    fn spec() -> impl Strategy<Value = RangeSpec> {
        prop_oneof![
            (0u64..1 << 40, 0u64..1 << 40).prop_map(|(a, d)| RangeSpec::FromTo(a, a + d)),
            (0u64..1 << 40).prop_map(RangeSpec::From),
            (0u64..1 << 40).prop_map(RangeSpec::Suffix),
        ]
    }

    fn render(spec: RangeSpec) -> String {
        match spec {
            RangeSpec::FromTo(a, b) => format!("bytes={a}-{b}"),
            RangeSpec::From(a) => format!("bytes={a}-"),
            RangeSpec::Suffix(n) => format!("bytes=-{n}"),
        }
    }

    proptest! {
        #[test]
        fn rendered_specs_parse_back(spec in spec()) {
            prop_assert_eq!(parse(render(spec).as_bytes()), RangeRequest::Single(spec));
        }

        #[test]
        fn resolved_ranges_are_non_empty_and_inside_the_blob(spec in spec(), len in 0u64..1 << 41) {
            if let Some((start, end)) = spec.resolve(len) {
                prop_assert!(start < end && end <= len);
                match spec {
                    RangeSpec::FromTo(a, b) => prop_assert_eq!((start, end), (a, (b + 1).min(len))),
                    RangeSpec::From(a) => prop_assert_eq!((start, end), (a, len)),
                    RangeSpec::Suffix(n) => prop_assert_eq!(end - start, n.min(len)),
                }
            } else {
                let satisfiable = match spec {
                    RangeSpec::FromTo(a, _) | RangeSpec::From(a) => a < len,
                    RangeSpec::Suffix(n) => n > 0 && len > 0,
                };
                prop_assert!(!satisfiable);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn several_ranges_are_ignored(a in spec(), b in spec()) {
            let header = format!("{}, {}", render(a), render(b).trim_start_matches("bytes="));
            prop_assert_eq!(parse(header.as_bytes()), RangeRequest::Whole);
        }
    }
}
