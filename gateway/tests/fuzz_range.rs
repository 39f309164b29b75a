//! Fuzz-style property test of the `Range` header parser (`api::range`) against an oracle
//! written from its documented rules: exactly one `bytes` range in one of the three forms is
//! honoured; several ranges, other units, bad syntax, `last < first`, numbers past `u64` and
//! headers over 1 KiB are ignored (the whole blob). Headers are built from a grammar that
//! varies case, whitespace, leading zeros, empty list elements, signs and digit counts, so the
//! edges of each rule are hit, not only random bytes (which the unit tests in `range.rs` cover).

use gateway::api::range::{parse, RangeRequest, RangeSpec};
use proptest::prelude::*;

/// One generated header and what the rules say it means.
#[derive(Debug, Clone)]
struct Case {
    header: String,
    expected: RangeRequest,
}

fn ws() -> impl Strategy<Value = &'static str> {
    prop_oneof![6 => Just(""), 1 => Just(" "), 1 => Just("\t"), 1 => Just("  ")]
}

/// A decimal number as written: leading zeros and digit counts past `u64` included.
fn number() -> impl Strategy<Value = (String, Option<u64>)> {
    prop_oneof![
        4 => any::<u64>().prop_map(|n| (n.to_string(), Some(n))),
        4 => (0u64..5000).prop_map(|n| (n.to_string(), Some(n))),
        1 => (0u64..1000, 1usize..4).prop_map(|(n, z)| (format!("{}{n}", "0".repeat(z)), Some(n))),
        1 => Just(("18446744073709551616".to_owned(), None)),
        1 => "[1-9][0-9]{20,24}".prop_map(|s| (s, None)),
        1 => prop::sample::select(vec!["+1", "-", "1.0", "0x10", "1e3", "١"])
            .prop_map(|s| (s.to_owned(), None)),
    ]
}

/// One range spec and what it parses to (`None`: invalid syntax).
fn spec() -> impl Strategy<Value = (String, Option<RangeSpec>)> {
    prop_oneof![
        (number(), ws(), ws(), number()).prop_map(|((a, av), w1, w2, (b, bv))| {
            let spec = match (av, bv) {
                (Some(a), Some(b)) if b >= a => Some(RangeSpec::FromTo(a, b)),
                _ => None,
            };
            (format!("{a}{w1}-{w2}{b}"), spec)
        }),
        (number(), ws()).prop_map(|((a, av), w)| (format!("{a}{w}-"), av.map(RangeSpec::From))),
        (ws(), number()).prop_map(|(w, (n, nv))| (format!("-{w}{n}"), nv.map(RangeSpec::Suffix))),
        prop::sample::select(vec!["-", "", "--1", "1--2", "a-b", "1-2-3"])
            .prop_map(|s| (s.to_owned(), None)),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let unit = prop_oneof![
        8 => prop::sample::select(vec!["bytes", "Bytes", "BYTES", "bYtEs"]).prop_map(|u| (u, true)),
        1 => prop::sample::select(vec!["byte", "items", "", "bytes "]).prop_map(|u| (u, u == "bytes ")),
    ];
    (
        ws(),
        unit,
        ws(),
        prop_oneof![6 => Just("="), 1 => Just(":"), 1 => Just("")],
        prop::collection::vec((spec(), ws()), 1..4),
        prop_oneof![4 => Just(0usize), 1 => 1usize..3],
        ws(),
    )
        .prop_map(|(w0, (unit, unit_ok), w1, eq, specs, empties, w2)| {
            // `a, , b`: empty list elements are allowed and skipped.
            let mut elements: Vec<String> =
                specs.iter().map(|((s, _), w)| format!("{s}{w}")).collect();
            for _ in 0..empties {
                elements.push(String::new());
            }
            let header = format!("{w0}{unit}{w1}{eq}{}{w2}", elements.join(","));
            let non_empty: Vec<&(String, Option<RangeSpec>)> = specs
                .iter()
                .map(|(s, _)| s)
                .filter(|(text, _)| !text.trim().is_empty())
                .collect();
            let expected = match (unit_ok, eq, non_empty.as_slice()) {
                (true, "=", [(_, Some(spec))]) => RangeRequest::Single(*spec),
                _ => RangeRequest::Whole,
            };
            Case { header, expected }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn range_headers_mean_what_the_rules_say(case in case()) {
        prop_assert_eq!(parse(case.header.as_bytes()), case.expected, "{:?}", case.header);
    }

    /// Any byte string: a result, never a panic; a range it honours selects bytes inside the
    /// blob or is refused as unsatisfiable.
    #[test]
    fn any_header_yields_a_request_and_ranges_stay_inside(
        bytes in prop::collection::vec(prop_oneof![
            any::<u8>(),
            prop::sample::select(b"bytes=0123456789-, \t".to_vec()),
        ], 0..80),
        len in prop_oneof![Just(0u64), 0u64..10_000, any::<u64>()],
    ) {
        if let RangeRequest::Single(spec) = parse(&bytes) {
            if let Some((start, end)) = spec.resolve(len) {
                prop_assert!(start < end && end <= len);
            }
        }
    }
}

/// Headers past the 1 KiB bound are ignored whatever they hold.
#[test]
fn long_headers_are_ignored() {
    let header = format!("bytes={}0-1", "0".repeat(1100));
    assert_eq!(parse(header.as_bytes()), RangeRequest::Whole);
    let padded = format!("bytes=0-1{}", " ".repeat(1100));
    assert_eq!(parse(padded.as_bytes()), RangeRequest::Whole);
}
