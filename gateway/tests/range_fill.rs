//! Range misses fill the cache (issue 19): parallel-range downloaders (aria2c -x8, hf_transfer)
//! on a cold blob cause one whole-blob fill, about one blob's worth of node traffic, and every
//! later read is a hit. A range is served from the fill's verified rows as soon as they exist;
//! a blob no tier can hold is never filled for a range and says `X-Cache: miss-uncacheable`.
//! Traffic comes from the gateway's `gateway_upstream_bytes_total` and the simulator's
//! per-node counters, never from timing.

mod harness;

use harness::{blob, config, Reply, Scenario};
use http::{Method, StatusCode};
use std::time::Duration;
use storage_sim::{NodeFaults, SimConfig};

const LEN: usize = 20_000_000;

/// Bytes of the `kp` systematic rows of a blob of `len` bytes: what one fill must fetch.
fn systematic_size(s: &Scenario, len: usize) -> u64 {
    let config = s.net.config();
    let symbol = config.symbol_size(len as u64).unwrap();
    u64::from(config.n_primary_source_symbols()) * config.row_len(symbol)
}

/// Eight concurrent `Range` requests, each on its own connection, covering `[0, len)`.
async fn eight_ranges(s: &Scenario, path: &str, len: usize) -> Vec<(usize, usize, Reply)> {
    let part = len.div_ceil(8);
    let requests: Vec<_> = (0..8)
        .map(|i| {
            let (start, end) = (i * part, ((i + 1) * part).min(len));
            let (client, addr, path) = (s.h2_client(), s.addr, path.to_owned());
            tokio::spawn(async move {
                let range = format!("bytes={start}-{}", end - 1);
                let reply =
                    harness::send(&client, addr, Method::GET, &path, &[("range", &range)]).await;
                (start, end, reply)
            })
        })
        .collect();
    let mut replies = Vec::new();
    for request in requests {
        replies.push(request.await.unwrap());
    }
    replies
}

/// Poll `series` until it reads `value`, for up to 60 s; false if it never did.
async fn eventually(s: &Scenario, series: &str, value: f64) -> bool {
    for _ in 0..600 {
        if s.metric(series).await == Some(value) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The aria2c-style read: eight ranges over a cold 20 MB blob (n = 100), then a whole GET.
async fn aria2c_style(head_first: bool) {
    let s = Scenario::start(100, 10).await;
    let data = blob(LEN, 41);
    let id = s.store(&data).await;
    let path = format!("/v1/blobs/{id}");
    s.net.reset_counters();
    if head_first {
        let head = s.request(Method::HEAD, &path, &[]).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(
            head.header("content-length"),
            Some(LEN.to_string().as_str())
        );
        assert_eq!(head.header("x-cache"), Some("miss"));
        assert_eq!(
            s.metric("gateway_fills_started_total").await.unwrap_or(0.0),
            0.0,
            "a HEAD starts no fill"
        );
        let counters = s.counters();
        assert_eq!(
            counters.primary_sliver_gets + counters.secondary_sliver_gets,
            0
        );
    }
    for (start, end, reply) in eight_ranges(&s, &path, LEN).await {
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{start}-{end}");
        let content_range = format!("bytes {start}-{}/{LEN}", end - 1);
        assert_eq!(reply.header("content-range"), Some(content_range.as_str()));
        assert_eq!(reply.header("x-cache"), Some("miss"));
        assert!(
            reply.bytes().as_ref() == &data[start..end],
            "wrong bytes in {start}-{end}"
        );
    }
    assert!(
        eventually(&s, "gateway_fills_succeeded_total", 1.0).await,
        "the ranges' fill completed"
    );
    assert_eq!(
        s.metric("gateway_fills_started_total").await,
        Some(1.0),
        "one fill for eight ranges"
    );
    let kp = u64::from(s.net.config().n_primary_source_symbols());
    let counters = s.counters();
    assert_eq!(
        counters.primary_sliver_gets, kp,
        "{counters:?}: every systematic row fetched once"
    );
    assert_eq!(counters.secondary_sliver_gets, 0, "{counters:?}");
    let fetched = s
        .metric("gateway_upstream_bytes_total{source=\"nodes\"}")
        .await
        .unwrap();
    let systematic = systematic_size(&s, LEN) as f64;
    assert!(
        fetched < 1.3 * systematic,
        "{fetched} bytes fetched from the nodes for a blob of {systematic} systematic bytes"
    );
    let whole = s.get(&path).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.header("x-cache"), Some("hit-memory"));
    assert!(
        whole.bytes().as_ref() == &data[..],
        "wrong bytes in the hit"
    );
    // And ranges are hits too now.
    let range = s
        .request(Method::GET, &path, &[("range", "bytes=1000-1999")])
        .await;
    assert_eq!(range.header("x-cache"), Some("hit-memory"));
    assert_eq!(range.bytes().as_ref(), &data[1000..2000]);
    assert_eq!(s.counters().primary_sliver_gets, kp, "no more node traffic");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_parallel_ranges_over_a_cold_blob_make_one_fill() {
    aria2c_style(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_parallel_ranges_after_a_head_make_one_fill() {
    aria2c_style(true).await;
}

/// n = 10 on 4 nodes: the node holding row 0 stalls (until hedged), so the fill cannot finish
/// for a while; ranges over other rows are served from the rows that verified meanwhile, the
/// first one's rows fetched first and once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_served_from_the_fill_before_it_completes() {
    let mut cfg = config();
    cfg.sliver_timeout = Duration::from_secs(30);
    cfg.hedge_after = Duration::from_secs(3);
    let s = Scenario::with(SimConfig::default(), cfg).await;
    let data = blob(1_000_000, 42);
    let id = s.store(&data).await;
    let config = s.net.config();
    let kp = config.n_primary_source_symbols();
    let row = config.row_len(config.symbol_size(data.len() as u64).unwrap()) as usize;
    let stalled = s.node_for_pair(&id, 0);
    let last = kp - 1;
    assert_ne!(s.node_for_pair(&id, last), stalled);
    s.faults(
        stalled,
        NodeFaults {
            stall: true,
            ..NodeFaults::default()
        },
    )
    .await;
    s.net.reset_counters();
    let path = format!("/v1/blobs/{id}");
    let tail = usize::from(last) * row;
    let range = format!("bytes={}-", tail + 10);
    let reply = s.request(Method::GET, &path, &[("range", &range)]).await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.bytes().as_ref(), &data[tail + 10..]);
    assert_eq!(
        s.metric("gateway_fills_started_total").await,
        Some(1.0),
        "the range started a fill"
    );
    assert_eq!(
        s.metric("gateway_fills_succeeded_total").await,
        Some(0.0),
        "served before the fill completed"
    );
    // A second range, over a row that is not stalled: it joins the fill and is served from
    // its rows, still before the fill completes.
    let second = usize::from(last - 1) * row;
    if s.node_for_pair(&id, last - 1) != stalled {
        let range = format!("bytes={second}-{}", second + 99);
        let reply = s.request(Method::GET, &path, &[("range", &range)]).await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(reply.bytes().as_ref(), &data[second..second + 100]);
        assert_eq!(s.metric("gateway_fills_started_total").await, Some(1.0));
        assert_eq!(s.metric("gateway_fills_succeeded_total").await, Some(0.0));
    }
    assert!(
        eventually(&s, "gateway_fills_succeeded_total", 1.0).await,
        "the fill completed after the hedge"
    );
    let whole = s.get(&path).await;
    assert_eq!(whole.header("x-cache"), Some("hit-memory"));
    assert!(whole.bytes().as_ref() == &data[..]);
    s.stop().await;
}

/// A blob longer than any tier holds (no disk tier, `memory_max_object` below it): a range
/// reads only its rows and starts no fill; every response says it will not be cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_no_tier_can_hold_is_not_filled_for_a_range_and_says_so() {
    let mut cfg = config();
    cfg.memory_max_object = 100_000;
    let s = Scenario::with(SimConfig::default(), cfg).await;
    let data = blob(300_000, 43);
    let id = s.store(&data).await;
    let path = format!("/v1/blobs/{id}");
    s.net.reset_counters();
    let range = s
        .request(Method::GET, &path, &[("range", "bytes=0-999")])
        .await;
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.header("x-cache"), Some("miss-uncacheable"));
    assert_eq!(range.bytes().as_ref(), &data[..1000]);
    assert_eq!(s.counters().primary_sliver_gets, 1, "only the range's row");
    assert_eq!(
        s.metric("gateway_fills_started_total").await.unwrap_or(0.0),
        0.0
    );
    let head = s.request(Method::HEAD, &path, &[]).await;
    assert_eq!(head.header("x-cache"), Some("miss-uncacheable"));
    for _ in 0..2 {
        let whole = s.get(&path).await;
        assert_eq!(whole.status, StatusCode::OK);
        assert_eq!(whole.header("x-cache"), Some("miss-uncacheable"));
        assert!(whole.bytes().as_ref() == &data[..]);
    }
    // A blob that fits is still cached and says a plain miss.
    let small = blob(50_000, 44);
    let small_id = s.store(&small).await;
    let reply = s.get(&format!("/v1/blobs/{small_id}")).await;
    assert_eq!(reply.header("x-cache"), Some("miss"));
    let reply = s.get(&format!("/v1/blobs/{small_id}")).await;
    assert_eq!(reply.header("x-cache"), Some("hit-memory"));
    s.stop().await;
}
