//! Reads a hostile or unlucky client should not be able to make expensive or wrong (issue 21,
//! items 8, 9, 14, 15): a missing Blob ID costs the nodes one lookup however often it is asked,
//! a random ID never costs sliver requests, a stalled node costs one fill its delay and not
//! every fill, and blob responses are safe to put behind a shared cache and to open in a
//! browser (`Vary`, `nosniff`, `CSP: sandbox`) and answer conditionals as RFC 9110 says.
//! Everything runs on loopback against the storage simulator; request counts come from its
//! per-node counters and the gateway's metrics, never from timing.

mod harness;

use harness::{blob, config, Reply, Scenario};
use http::{Method, StatusCode};
use std::time::Duration;
use storage_sim::{NodeFaults, SimConfig};

fn missing_id() -> codec::BlobId {
    codec::BlobId([0x5a; 32])
}

fn sliver_gets(s: &Scenario) -> u64 {
    let c = s.counters();
    c.primary_sliver_gets + c.secondary_sliver_gets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_gets_of_a_missing_blob_cost_one_lookup_and_no_slivers() {
    let s = Scenario::start(10, 4).await;
    s.net.reset_counters();
    let path = format!("/v1/blobs/{}", missing_id());
    // Ten at once (one shared lookup), then ten one after another (remembered), then the
    // other read shapes, which need only metadata: all answered from the same lookup.
    let concurrent: Vec<_> = (0..10)
        .map(|_| {
            let (client, addr, path) = (s.h2_client(), s.addr, path.clone());
            tokio::spawn(async move { harness::send(&client, addr, Method::GET, &path, &[]).await })
        })
        .collect();
    for request in concurrent {
        assert_eq!(request.await.unwrap().status, StatusCode::NOT_FOUND);
    }
    for _ in 0..10 {
        assert_eq!(s.get(&path).await.status, StatusCode::NOT_FOUND);
    }
    for (method, headers) in [
        (Method::HEAD, vec![]),
        (Method::GET, vec![("range", "bytes=0-9")]),
    ] {
        let reply = s.request(method, &path, &headers).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    let counters = s.counters();
    // "Not found" needs nodes holding 2f + 1 = 7 of the 10 shards: at most all 4 nodes, once.
    assert!(
        (1..=4).contains(&counters.metadata_gets),
        "{counters:?}: one metadata lookup for 22 requests"
    );
    assert_eq!(
        sliver_gets(&s),
        0,
        "{counters:?}: no sliver prefetch for an unseen ID"
    );
    let hits = s
        .metric("gateway_negative_cache_total{event=\"hit\"}")
        .await
        .unwrap_or(0.0);
    assert!(
        hits >= 11.0,
        "later requests were answered from memory ({hits})"
    );
    assert_eq!(
        s.metric("gateway_negative_cache_total{event=\"stored\"}")
            .await,
        Some(1.0)
    );
    s.stop().await;
}

/// An edge gateway reading only through a parent: a missing ID asked of the edge twenty times
/// reaches the parent once (its metadata and blob requests, sent together).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_asks_its_parent_about_a_missing_blob_once() {
    let parent = Scenario::start(10, 4).await;
    let edge_config = gateway::GatewayConfig {
        upstreams: vec![format!("http://{}", parent.addr).parse().unwrap()],
        ..config()
    };
    let edge = gateway::Gateway::bind(
        edge_config,
        storage_sim::committee::Committee {
            n_shards: 10,
            nodes: Vec::new(),
        },
    )
    .await
    .expect("edge binds")
    .spawn();
    let client = parent.h2_client();
    let path = format!("/v1/blobs/{}", missing_id());
    for _ in 0..20 {
        let reply = harness::send(&client, edge.addr(), Method::GET, &path, &[]).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    // (Without the edge's negative cache: 40, two per request.)
    let parent_404s = parent
        .metric("gateway_responses_total{status=\"404\"}")
        .await
        .unwrap_or(0.0);
    assert!(
        (1.0..=2.0).contains(&parent_404s),
        "the parent answered {parent_404s} requests for the missing blob"
    );
    edge.shutdown().await.expect("edge stops");
    parent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_miss_expires_after_its_ttl() {
    let mut cfg = config();
    cfg.negative_cache_ttl = Duration::from_millis(1_500);
    let s = Scenario::with(SimConfig::default(), cfg).await;
    let data = blob(3_000, 21);
    let id = codec::blob_id(10, &data).unwrap();
    let path = format!("/v1/blobs/{id}");
    assert_eq!(s.get(&path).await.status, StatusCode::NOT_FOUND);
    // Stored behind the gateway's back: the miss is still believed until it expires.
    assert_eq!(s.store(&data).await, id);
    assert_eq!(s.get(&path).await.status, StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let reply = s.get(&path).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_miss_does_not_outlive_a_publish_here() {
    let mut cfg = config();
    cfg.negative_cache_ttl = Duration::from_secs(600);
    // Too large for the memory tier: the publish does not leave a cached copy that would
    // answer before the negative cache is consulted.
    cfg.memory_max_object = 1_000;
    let s = Scenario::with(SimConfig::default(), cfg).await;
    let data = blob(20_000, 22);
    let id = codec::blob_id(10, &data).unwrap();
    let path = format!("/v1/blobs/{id}");
    assert_eq!(s.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(s.get(&path).await.status, StatusCode::NOT_FOUND);
    let put = s
        .send_body(Method::PUT, "/v1/blobs", &[], data.clone())
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    let reply = s.get(&path).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Read from the nodes, and (too large for memory, no disk tier) not kept.
    assert_eq!(reply.header("x-cache"), Some("miss-uncacheable"));
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    assert_eq!(
        s.metric("gateway_negative_cache_total{event=\"dropped\"}")
            .await,
        Some(1.0)
    );
    s.stop().await;
}

/// n = 10 on 4 nodes (node `i` holds shards `i, i+4, i+8`): without the stalled node, 3 nodes
/// hold 7 primary slivers, and 4 (`kp`) are enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_node_is_asked_last_by_later_fills() {
    let mut cfg = config();
    // Long enough that a healthy node on a loaded machine is not hedged in the later fills.
    cfg.hedge_after = Duration::from_millis(1_000);
    let s = Scenario::with(SimConfig::default(), cfg).await;
    let first = blob(40_000, 23);
    let first_id = s.store(&first).await;
    let others: Vec<Vec<u8>> = (0..3).map(|i| blob(40_000, 24 + i)).collect();
    let mut other_ids = Vec::new();
    for data in &others {
        other_ids.push(s.store(data).await);
    }
    // Stall the node holding the first blob's first row, so its first fill must ask it.
    let stalled = s.node_for_pair(&first_id, 0);
    let name = s.node_name(stalled);
    s.faults(
        stalled,
        NodeFaults {
            stall: true,
            ..NodeFaults::default()
        },
    )
    .await;
    let reply = s.get(&format!("/v1/blobs/{first_id}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &first[..]);
    // Asked once: after its hedge, its other slivers wait behind the other nodes'.
    assert_eq!(s.net.counters(stalled).primary_sliver_gets, 1);
    assert_eq!(
        s.metric(&format!(
            "gateway_node_marked_slow_total{{node=\"{name}\"}}"
        ))
        .await,
        Some(1.0)
    );
    // (A healthy node slowed by a loaded test machine may be marked too: at least this one.)
    assert!(s.metric("gateway_nodes_slow").await >= Some(1.0));

    // Later cold fills get everything they need from the other nodes first.
    s.net.reset_counters();
    for (id, data) in other_ids.iter().zip(&others) {
        let reply = s.get(&format!("/v1/blobs/{id}")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.bytes().as_ref(), &data[..]);
    }
    let asked = s.net.counters(stalled);
    assert_eq!(
        (
            asked.metadata_gets,
            asked.primary_sliver_gets,
            asked.secondary_sliver_gets
        ),
        (0, 0, 0),
        "the stalled node was not asked while the others sufficed"
    );
    assert!(s.counters().primary_sliver_gets >= 3 * 4, "the others were");
    s.stop().await;
}

/// Request headers of a case.
type Headers<'a> = &'a [(&'a str, &'a str)];

fn assert_safe_blob_headers(reply: &Reply, what: &str) {
    let vary = reply
        .header("vary")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        vary.contains("accept") && vary.contains("content-type"),
        "{what}: Vary {vary:?}"
    );
    assert_eq!(
        reply.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        reply.header("content-security-policy"),
        Some("sandbox"),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_chosen_content_types_vary_and_are_sandboxed() {
    let s = Scenario::start(10, 4).await;
    let html = b"<html><script>alert(document.domain)</script></html>".to_vec();
    let id = s.store(&html).await;
    let path = format!("/v1/blobs/{id}");
    // The aggregator's rule stays: Accept without a wildcard is echoed, else (GET) the
    // request's Content-Type; nothing otherwise.
    let cases: [(Headers, Option<&str>); 4] = [
        (&[("accept", "text/html")], Some("text/html")),
        (
            &[("accept", "*/*"), ("content-type", "text/html")],
            Some("text/html"),
        ),
        (&[], None),
        (&[("range", "bytes=0-5")], None),
    ];
    let h2 = s.h2_client();
    for round in ["cold", "cached"] {
        for (headers, expected) in cases {
            for (transport, reply) in [
                ("http/1.1", s.request(Method::GET, &path, headers).await),
                (
                    "h2c",
                    harness::send(&h2, s.addr, Method::GET, &path, headers).await,
                ),
            ] {
                let what = format!("{round} {transport} {headers:?}");
                assert!(reply.status.is_success(), "{what}: {}", reply.status);
                assert_eq!(reply.header("content-type"), expected, "{what}");
                assert_safe_blob_headers(&reply, &what);
            }
        }
    }
    let head = s.request(Method::HEAD, &path, &[]).await;
    assert_safe_blob_headers(&head, "HEAD");
    let not_modified = s
        .request(
            Method::GET,
            &path,
            &[("if-none-match", &format!("\"{id}\""))],
        )
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_safe_blob_headers(&not_modified, "304");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_star_needs_a_blob_that_exists() {
    let s = Scenario::start(10, 4).await;
    let star = [("if-none-match", "*")];
    for method in [Method::GET, Method::HEAD] {
        let missing = s
            .request(
                method.clone(),
                &format!("/v1/blobs/{}", missing_id()),
                &star,
            )
            .await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{method}");
    }
    let data = blob(30_000, 25);
    let id = s.store(&data).await;
    s.net.reset_counters();
    let path = format!("/v1/blobs/{id}");
    let present = s.request(Method::GET, &path, &star).await;
    assert_eq!(present.status, StatusCode::NOT_MODIFIED);
    assert!(present.bytes().is_empty());
    assert_eq!(present.header("etag"), Some(format!("\"{id}\"").as_str()));
    // Existence is a metadata question: no fill, no sliver requests.
    assert_eq!(sliver_gets(&s), 0);
    let byte_range = s
        .request(
            Method::GET,
            &format!("{path}/byte-range?start=0&length=10"),
            &star,
        )
        .await;
    assert_eq!(byte_range.status, StatusCode::NOT_MODIFIED);
    // A named ETag still answers without asking anyone.
    s.net.reset_counters();
    let tagged = s
        .request(
            Method::GET,
            &format!("/v1/blobs/{}", missing_id()),
            &[("if-none-match", &format!("\"{}\"", missing_id()))],
        )
        .await;
    assert_eq!(tagged.status, StatusCode::NOT_MODIFIED);
    assert_eq!(s.counters().metadata_gets, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_under_a_mismatched_if_range_gets_the_whole_blob() {
    let s = Scenario::start(10, 4).await;
    let data = blob(30_000, 26);
    let id = s.store(&data).await;
    let path = format!("/v1/blobs/{id}");
    let etag = format!("\"{id}\"");
    let unquoted = id.to_string();
    let weak = format!("W/{etag}");
    for round in ["cold", "cached"] {
        for if_range in [
            "\"another\"",
            weak.as_str(),
            "Sun, 06 Nov 1994 08:49:37 GMT",
        ] {
            let reply = s
                .request(
                    Method::GET,
                    &path,
                    &[("range", "bytes=10-19"), ("if-range", if_range)],
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{round} If-Range {if_range}");
            assert_eq!(reply.header("content-range"), None);
            assert_eq!(
                reply.bytes().as_ref(),
                &data[..],
                "{round} If-Range {if_range}"
            );
        }
        for if_range in [etag.as_str(), unquoted.as_str()] {
            let reply = s
                .request(
                    Method::GET,
                    &path,
                    &[("range", "bytes=10-19"), ("if-range", if_range)],
                )
                .await;
            assert_eq!(
                reply.status,
                StatusCode::PARTIAL_CONTENT,
                "{round} {if_range}"
            );
            assert_eq!(reply.bytes().as_ref(), &data[10..20]);
        }
    }
    s.stop().await;
}
