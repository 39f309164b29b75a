//! Fuzz-style property test of the request-level parsers behind every listener, driven through
//! the gateway's one handler (`Api::dispatch`, which the lean HTTP/1.1 server, hyper, HTTP/2 and
//! HTTP/3 all call): Blob ID path segments, the `byte-range` query (`start`, `length`),
//! `Range`, `If-None-Match`, `If-Range`, `Accept` and `Content-Type`, each from a grammar of what
//! clients send plus hostile shapes (numbers past `u64`, repeated and unknown keys, lists with
//! empty elements, weak tags, wildcards).
//!
//! Every answer is checked for what a client must be able to rely on whatever it sent: no 5xx
//! (the request was the client's fault or fine), no wrong byte (a 200 or 206 body is exactly the
//! slice of the blob its headers name), no body on a 304. The blob is stored in a
//! simulated committee and read once first, so cases are answered from memory and the run stays
//! bounded (a few seconds).

mod harness;

use bytes::Bytes;
use codec::BlobId;
use harness::Scenario;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::time::Duration;

/// One generated request, and what its query means by the documented rules (`Some` only for
/// exactly one decimal `start` and one decimal `length`, nothing else).
#[derive(Debug, Clone)]
struct Case {
    method: Method,
    target: Target,
    headers: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone)]
enum Target {
    Whole(IdText),
    ByteRange(IdText, String, Option<(u64, u64)>),
    Metadata(IdText),
}

#[derive(Debug, Clone)]
enum IdText {
    Stored,
    /// A well-formed ID nobody stored.
    Unknown([u8; 32]),
    /// Text that is not an ID.
    Junk(String),
}

fn id_text() -> impl Strategy<Value = IdText> {
    prop_oneof![
        12 => Just(IdText::Stored),
        1 => any::<[u8; 32]>().prop_map(IdText::Unknown),
        2 => prop_oneof![
            "[A-Za-z0-9_-]{0,50}",
            Just("%41%41".to_owned()),
            Just("..".to_owned()),
        ]
        .prop_map(IdText::Junk),
    ]
}

fn query_value() -> impl Strategy<Value = (String, Option<u64>)> {
    prop_oneof![
        6 => (0u64..4000).prop_map(|n| (n.to_string(), Some(n))),
        1 => any::<u64>().prop_map(|n| (n.to_string(), Some(n))),
        1 => (0u64..100).prop_map(|n| (format!("00{n}"), Some(n))),
        1 => prop::sample::select(vec!["", "-1", "+1", "1.0", "18446744073709551616", "0x1", "%31"])
            .prop_map(|s| (s.to_owned(), None)),
    ]
}

/// A `start`/`length` query and its meaning.
fn query() -> impl Strategy<Value = (String, Option<(u64, u64)>)> {
    let pair = (
        prop_oneof![
            6 => Just("start"),
            6 => Just("length"),
            1 => prop::sample::select(vec!["x", "START", "", "start "]),
        ],
        query_value(),
        prop_oneof![8 => Just(true), 1 => Just(false)],
    );
    (prop::collection::vec(pair, 0..4), 0usize..2).prop_map(|(pairs, empties)| {
        let mut parts: Vec<String> = pairs
            .iter()
            .map(|(k, (v, _), eq)| {
                if *eq {
                    format!("{k}={v}")
                } else {
                    (*k).to_owned()
                }
            })
            .collect();
        for _ in 0..empties {
            parts.push(String::new());
        }
        let text = parts.join("&");
        let mut start = None;
        let mut length = None;
        let mut ok = true;
        for (k, (_, v), eq) in &pairs {
            // An empty key without `=` is an empty segment, which the gateway skips like the
            // trailing ones.
            if k.is_empty() && !eq {
                continue;
            }
            let slot = match *k {
                "start" => &mut start,
                "length" => &mut length,
                _ => {
                    ok = false;
                    continue;
                }
            };
            match (eq, v) {
                (true, Some(n)) if slot.is_none() => *slot = Some(*n),
                _ => ok = false,
            }
        }
        let meaning = match (ok, start, length) {
            (true, Some(s), Some(l)) if l > 0 => Some((s, l)),
            _ => None,
        };
        (text, meaning)
    })
}

fn range_header() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..4000, 0u64..4000).prop_map(|(a, b)| format!("bytes={a}-{b}")),
        (0u64..4000).prop_map(|a| format!("bytes={a}-")),
        (0u64..4000).prop_map(|n| format!("bytes=-{n}")),
        any::<u64>().prop_map(|a| format!("bytes={a}-")),
        Just("bytes=0-1,3-4".to_owned()),
        Just("bytes=-0".to_owned()),
        Just("items=0-1".to_owned()),
        "[ -~]{0,20}",
    ]
}

fn etag_header() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        Just("STORED".to_owned()),
        Just("\"STORED\"".to_owned()),
        Just("W/\"STORED\"".to_owned()),
        Just("\"other\", W/\"STORED\"".to_owned()),
        Just(", ,".to_owned()),
        "[ -~]{0,30}",
    ]
}

fn header() -> impl Strategy<Value = (&'static str, String)> {
    prop_oneof![
        4 => range_header().prop_map(|v| ("range", v)),
        1 => etag_header().prop_map(|v| ("if-none-match", v)),
        1 => etag_header().prop_map(|v| ("if-range", v)),
        1 => prop::sample::select(vec![
            "text/html",
            "*/*",
            "application/octet-stream",
            "a/b, c/d",
            "text/*;q=0.5",
            ""
        ])
        .prop_map(|v| ("accept", v.to_owned())),
        1 => "[ -~]{0,20}".prop_map(|v| ("content-type", v)),
        1 => "[ -~]{0,20}".prop_map(|v| ("accept", v)),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            8 => Just(Method::GET),
            2 => Just(Method::HEAD),
            1 => Just(Method::OPTIONS),
            1 => Just(Method::DELETE),
        ],
        prop_oneof![
            4 => id_text().prop_map(Target::Whole),
            4 => (id_text(), query()).prop_map(|(id, (q, m))| Target::ByteRange(id, q, m)),
            1 => id_text().prop_map(Target::Metadata),
        ],
        prop::collection::vec(header(), 0..4),
    )
        .prop_map(|(method, target, headers)| Case {
            method,
            target,
            headers,
        })
}

fn id_of(text: &IdText, stored: &BlobId) -> String {
    match text {
        IdText::Stored => stored.to_string(),
        IdText::Unknown(b) => BlobId(*b).to_string(),
        IdText::Junk(s) => s.clone(),
    }
}

/// `bytes a-b/len` of a 206.
fn content_range(value: &str) -> Option<(usize, usize, usize)> {
    let rest = value.strip_prefix("bytes ")?;
    let (range, len) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, len.parse().ok()?))
}

fn check(
    case: &Case,
    blob: &[u8],
    status: StatusCode,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> Result<(), TestCaseError> {
    prop_assert!(!status.is_server_error(), "{status} for {case:?}");
    if status == StatusCode::NOT_MODIFIED {
        prop_assert!(body.is_empty(), "304 with a body for {case:?}");
        return Ok(());
    }
    // `HEAD` bodies are dropped by the transports, not by the handler.
    if case.method == Method::HEAD {
        return Ok(());
    }
    let stored_target = |id: &IdText| matches!(id, IdText::Stored);
    match &case.target {
        Target::Whole(id) if stored_target(id) && case.method == Method::GET => match status {
            StatusCode::OK => prop_assert_eq!(&body[..], blob),
            StatusCode::PARTIAL_CONTENT => {
                let value = headers.get("content-range").and_then(|v| v.to_str().ok());
                let (a, b, len) = value.and_then(content_range).ok_or_else(|| {
                    TestCaseError::fail(format!("206 without a Content-Range: {value:?}"))
                })?;
                prop_assert_eq!(len, blob.len());
                prop_assert!(a <= b && b < blob.len());
                prop_assert_eq!(&body[..], &blob[a..=b]);
            }
            _ => {}
        },
        Target::ByteRange(id, _, meaning) if stored_target(id) && case.method == Method::GET => {
            if status.is_success() {
                let (start, length) = meaning.ok_or_else(|| {
                    TestCaseError::fail(format!("{status} for a malformed query: {case:?}"))
                })?;
                let end = start
                    .checked_add(length)
                    .filter(|&e| e <= blob.len() as u64);
                let end = end.ok_or_else(|| {
                    TestCaseError::fail(format!("{status} past the end: {case:?}"))
                })?;
                let want = &blob[start as usize..end as usize];
                if status == StatusCode::OK {
                    prop_assert_eq!(&body[..], want);
                } else if status == StatusCode::PARTIAL_CONTENT {
                    // A `Range` over the byte range: a slice of it.
                    prop_assert!(
                        want.windows(body.len().max(1)).any(|w| w == &body[..]) || body.is_empty()
                    );
                }
            } else if let Some((start, length)) = meaning {
                // A well-formed query is refused only when it reaches past the blob (416) or
                // is a conditional request that matched (handled above).
                if start
                    .checked_add(*length)
                    .is_some_and(|e| e <= blob.len() as u64)
                {
                    prop_assert!(
                        status == StatusCode::RANGE_NOT_SATISFIABLE
                            || status == StatusCode::TOO_MANY_REQUESTS,
                        "{status} for a valid query: {case:?}"
                    );
                }
            }
        }
        Target::Whole(IdText::Junk(_))
        | Target::ByteRange(IdText::Junk(_), ..)
        | Target::Metadata(IdText::Junk(_)) => {
            prop_assert!(status.is_client_error(), "{status} for a junk ID: {case:?}");
        }
        _ => {}
    }
    Ok(())
}

#[test]
fn hostile_requests_get_client_errors_or_exact_bytes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (scenario, stored, blob) = rt.block_on(async {
        let scenario = Scenario::start(10, 4).await;
        let blob = harness::blob(3000, 7);
        let stored = scenario.store(&blob).await;
        // One read fills the memory cache: the cases below are answered from it.
        assert_eq!(
            scenario.get(&format!("/v1/blobs/{stored}")).await.bytes()[..],
            blob[..]
        );
        (scenario, stored, blob)
    });
    let api = scenario.api().clone();
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let mut runner = TestRunner::new(Config {
        cases: 300,
        ..Config::default()
    });
    runner
        .run(&case(), |case| {
            let path = match &case.target {
                Target::Whole(id) => format!("/v1/blobs/{}", id_of(id, &stored)),
                Target::ByteRange(id, q, _) => {
                    format!("/v1/blobs/{}/byte-range?{q}", id_of(id, &stored))
                }
                Target::Metadata(id) => format!("/v1/blobs/{}/metadata", id_of(id, &stored)),
            };
            let mut request = Request::builder().method(case.method.clone()).uri(&path);
            for (name, value) in &case.headers {
                request = request.header(*name, value.replace("STORED", &stored.to_string()));
            }
            // Shapes `http` itself refuses never reach a server.
            let Ok(request) = request.body(Empty::<Bytes>::new()) else {
                return Ok(());
            };
            let (status, headers, body) = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(20), async {
                    let Ok(response) = api.dispatch(request).await;
                    let (parts, body) = response.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    (parts.status, parts.headers, body)
                })
                .await
                .expect("answered within 20 s")
            });
            *seen.lock().unwrap().entry(status.as_u16()).or_default() += 1;
            check(&case, &blob, status, &headers, &body)
        })
        .unwrap();
    // The grammar reaches the answers the checks are about.
    let seen = seen.into_inner().unwrap();
    for status in [200, 206, 400, 416] {
        assert!(
            seen.get(&status).is_some_and(|&n| n >= 3),
            "{status}: {seen:?}"
        );
    }
    rt.block_on(scenario.stop());
}
