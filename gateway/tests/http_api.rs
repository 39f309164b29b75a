//! The HTTP surface: caching headers, HEAD, conditional requests, ranges (header and
//! `byte-range` endpoint), h2c, `/status`, `/metrics`, and every error path with its envelope.

mod harness;

use harness::{blob, config, Scenario};
use http::{Method, StatusCode};
use storage_sim::{NodeFaults, SimConfig};

/// 10,000 bytes at n = 10: symbol size 358, rows of 2,506 bytes, 4 rows.
const LEN: usize = 10_000;
const ROW: usize = 2_506;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_responses_carry_immutable_caching_headers() {
    let s = Scenario::start(10, 4).await;
    let data = blob(LEN, 1);
    let id = s.store(&data).await;
    let path = format!("/v1/blobs/{id}");
    let reply = s.get(&path).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("etag"), Some(format!("\"{id}\"").as_str()));
    assert_eq!(
        reply.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("content-length"), Some("10000"));
    assert_eq!(reply.header("x-cache"), Some("miss"));
    assert_eq!(reply.header("content-type"), None, "no default type");
    // The aggregator's Content-Type rule: echo an Accept without wildcards.
    let typed = s
        .request(Method::GET, &path, &[("accept", "image/png")])
        .await;
    assert_eq!(typed.header("content-type"), Some("image/png"));
    assert_eq!(typed.header("x-cache"), Some("hit-memory"));
    let wildcard = s.request(Method::GET, &path, &[("accept", "*/*")]).await;
    assert_eq!(wildcard.header("content-type"), None);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_reads_only_metadata() {
    let s = Scenario::start(10, 4).await;
    let id = s.store(&blob(LEN, 2)).await;
    s.net.reset_counters();
    let path = format!("/v1/blobs/{id}");
    let head = s.request(Method::HEAD, &path, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some("10000"));
    assert_eq!(head.header("x-cache"), Some("miss"));
    assert!(head.bytes().is_empty());
    let counters = s.counters();
    assert_eq!(
        counters.primary_sliver_gets + counters.secondary_sliver_gets,
        0
    );
    let ranged = s
        .request(Method::HEAD, &path, &[("range", "bytes=-10")])
        .await;
    assert_eq!(ranged.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        ranged.header("content-range"),
        Some("bytes 9990-9999/10000")
    );
    assert_eq!(ranged.header("content-length"), Some("10"));
    s.get(&path).await;
    let hit = s.request(Method::HEAD, &path, &[]).await;
    assert_eq!(hit.header("x-cache"), Some("hit-memory"));
    assert_eq!(hit.header("content-length"), Some("10000"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_answers_304_without_reading() {
    let s = Scenario::start(10, 4).await;
    let id = s.store(&blob(LEN, 3)).await;
    s.net.reset_counters();
    let path = format!("/v1/blobs/{id}");
    // (`*` matches only a blob that exists, so it is looked up: tests/hostile_reads.rs.)
    for tag in [format!("\"{id}\""), format!("W/\"{id}\"")] {
        let reply = s
            .request(Method::GET, &path, &[("if-none-match", &tag)])
            .await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{tag}");
        assert_eq!(reply.header("etag"), Some(format!("\"{id}\"").as_str()));
        assert!(reply.bytes().is_empty());
    }
    assert_eq!(s.counters().metadata_gets, 0);
    let other = s
        .request(
            Method::GET,
            &path,
            &[("if-none-match", "\"something-else\"")],
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
    s.stop().await;
}

/// Every single-range form, on a cold blob (reads only covering rows: a blob too large to
/// cache, so no range starts a fill) and then on a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_ranges_in_every_form() {
    let uncacheable = gateway::GatewayConfig {
        memory_max_object: LEN as u64 - 1,
        ..config()
    };
    let mut s = Scenario::with(SimConfig::default(), uncacheable).await;
    let data = blob(LEN, 4);
    let id = s.store(&data).await;
    let path = format!("/v1/blobs/{id}");
    let cases: [(&str, usize, usize); 6] = [
        ("bytes=0-0", 0, 1),
        ("bytes=3000-3999", 3000, 4000),
        ("bytes=2505-2506", 2505, 2507),
        ("bytes=9000-", 9000, LEN),
        ("bytes=-100", LEN - 100, LEN),
        ("bytes=9990-20000", 9990, LEN),
    ];
    for round in ["cold", "hit"] {
        for (header, start, end) in cases {
            s.net.reset_counters();
            let reply = s.request(Method::GET, &path, &[("range", header)]).await;
            assert_eq!(
                reply.status,
                StatusCode::PARTIAL_CONTENT,
                "{round} {header}"
            );
            let content_range = format!("bytes {start}-{}/{LEN}", end - 1);
            assert_eq!(reply.header("content-range"), Some(content_range.as_str()));
            assert_eq!(
                reply.header("content-length"),
                Some((end - start).to_string().as_str())
            );
            assert_eq!(
                reply.bytes().as_ref(),
                &data[start..end],
                "{round} {header}"
            );
            if round == "cold" {
                let rows = (end - 1) / ROW - start / ROW + 1;
                assert_eq!(
                    s.counters().primary_sliver_gets,
                    rows as u64,
                    "{header} reads only the rows covering it"
                );
                assert_eq!(reply.header("x-cache"), Some("miss-uncacheable"));
            } else {
                assert_eq!(s.counters().primary_sliver_gets, 0);
                assert_eq!(reply.header("x-cache"), Some("hit-memory"));
            }
        }
        if round == "cold" {
            s.restart_gateway(config()).await;
            assert_eq!(s.get(&path).await.bytes().as_ref(), &data[..]);
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_whose_row_is_unavailable_falls_back_to_decoding() {
    let s = Scenario::start(10, 4).await;
    let data = blob(LEN, 5);
    let id = s.store(&data).await;
    let node = s.node_for_pair(&id, 1);
    s.faults(
        node,
        NodeFaults {
            offline: true,
            ..NodeFaults::default()
        },
    )
    .await;
    let reply = s
        .request(
            Method::GET,
            &format!("/v1/blobs/{id}"),
            &[("range", "bytes=3000-3999")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.bytes().as_ref(), &data[3000..4000]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsatisfiable_ranges_are_416_and_multiple_ranges_get_it_all() {
    let s = Scenario::start(10, 4).await;
    let data = blob(LEN, 6);
    let id = s.store(&data).await;
    let empty = s.store(&[]).await;
    let path = format!("/v1/blobs/{id}");
    for header in ["bytes=10000-", "bytes=10000-10005", "bytes=-0"] {
        let reply = s.request(Method::GET, &path, &[("range", header)]).await;
        assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE, "{header}");
        assert_eq!(reply.header("content-range"), Some("bytes */10000"));
        assert_eq!(reply.reason(), "INVALID_BYTE_RANGE");
    }
    let reply = s
        .request(
            Method::GET,
            &format!("/v1/blobs/{empty}"),
            &[("range", "bytes=0-0")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(reply.header("content-range"), Some("bytes */0"));
    for header in ["bytes=0-1,5-6", "bytes=5-1", "lines=1-2"] {
        let reply = s.request(Method::GET, &path, &[("range", header)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{header}");
        assert_eq!(reply.bytes().as_ref(), &data[..]);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_range_endpoint_answers_200_with_its_own_etag() {
    let s = Scenario::start(10, 4).await;
    let data = blob(LEN, 7);
    let id = s.store(&data).await;
    let reply = s
        .get(&format!("/v1/blobs/{id}/byte-range?start=2500&length=100"))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &data[2500..2600]);
    assert_eq!(
        reply.header("etag"),
        Some(format!("\"{id}-2500-100\"").as_str())
    );
    assert_eq!(reply.header("content-length"), Some("100"));
    let whole = s
        .get(&format!("/v1/blobs/{id}/byte-range?start=0&length=10000"))
        .await;
    assert_eq!(whole.bytes().as_ref(), &data[..]);
    for (query, status, reason) in [
        ("start=9999&length=2", 416, "INVALID_BYTE_RANGE"),
        ("start=0&length=0", 416, "INVALID_BYTE_RANGE"),
        (
            "start=18446744073709551615&length=2",
            416,
            "INVALID_BYTE_RANGE",
        ),
        ("start=0", 400, "INVALID_PARAMETERS"),
        ("start=x&length=1", 400, "INVALID_PARAMETERS"),
        ("start=0&length=1&extra=1", 400, "INVALID_PARAMETERS"),
    ] {
        let reply = s.get(&format!("/v1/blobs/{id}/byte-range?{query}")).await;
        assert_eq!(reply.status.as_u16(), status, "{query}");
        assert_eq!(reply.reason(), reason, "{query}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_is_served_on_the_same_port() {
    let s = Scenario::start(10, 4).await;
    let data = blob(LEN, 8);
    let id = s.store(&data).await;
    let client = s.h2_client();
    let reply = harness::send(
        &client,
        s.addr,
        Method::GET,
        &format!("/v1/blobs/{id}"),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics() {
    let s = Scenario::start(10, 4).await;
    let status = s.get("/status").await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.bytes().as_ref(), b"OK");
    let id = s.store(&blob(100, 9)).await;
    s.get(&format!("/v1/blobs/{id}")).await;
    s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(
        s.metric("gateway_cache_hits_total{tier=\"memory\"}").await,
        Some(1.0)
    );
    assert_eq!(s.metric("gateway_cache_misses_total").await, Some(1.0));
    assert_eq!(
        s.metric("gateway_bytes_served_total{source=\"upstream\"}")
            .await,
        Some(100.0)
    );
    assert_eq!(
        s.metric("gateway_bytes_served_total{source=\"memory\"}")
            .await,
        Some(100.0)
    );
    s.get("/v1/blobs/short").await;
    assert_eq!(
        s.metric("gateway_responses_total{status=\"400\"}").await,
        Some(1.0)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_use_the_walrus_envelope() {
    let s = Scenario::start(10, 4).await;
    let malformed = s.get("/v1/blobs/not-a-blob-id").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.reason(), "INVALID_BLOB_ID");
    let json = malformed.json();
    assert_eq!(json["error"]["code"], 400);
    assert_eq!(json["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(json["error"]["details"][0]["domain"], "daemon.walrus.space");
    assert_eq!(malformed.header("content-type"), Some("application/json"));

    let unknown = codec::BlobId([42; 32]);
    let missing = s.get(&format!("/v1/blobs/{unknown}")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.reason(), "BLOB_NOT_FOUND");

    let route = s.get("/v1/nothing-here").await;
    assert_eq!(route.status, StatusCode::NOT_FOUND);
    assert_eq!(route.reason(), "ROUTE_NOT_FOUND");

    let post = s
        .request(Method::POST, &format!("/v1/blobs/{unknown}"), &[])
        .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_needs_a_quorum_of_shards() {
    let s = Scenario::start(10, 4).await;
    // Nodes 0 and 1 (6 shards) down: the 4 shards left saying "not found" are no quorum.
    for node in 0..2 {
        s.faults(
            node,
            NodeFaults {
                offline: true,
                ..NodeFaults::default()
            },
        )
        .await;
    }
    let unknown = codec::BlobId([42; 32]);
    let reply = s.get(&format!("/v1/blobs/{unknown}")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.reason(), "BLOB_UNAVAILABLE");
    // Two nodes lying "not found" about a stored blob are outvoted.
    let data = blob(1000, 10);
    let id = s.store(&data).await;
    for node in 0..2 {
        s.faults(
            node,
            NodeFaults {
                lie_not_found: true,
                ..NodeFaults::default()
            },
        )
        .await;
    }
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    s.stop().await;
}

/// The interleaving that made `not_found_needs_a_quorum_of_shards` flaky, made certain: the
/// liars (6 of 10 shards, no quorum) answer the status check at once, one honest node late. A
/// check that stopped once a quorum had answered saw "nonexistent" from 6 shards against
/// "certified" from 2, and a blob the nodes hold and the gateway verified answered 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liars_answering_first_do_not_make_a_stored_blob_404() {
    let s = Scenario::start(10, 4).await;
    assert_eq!(s.shards_of(0).len() + s.shards_of(1).len(), 6);
    assert_eq!(s.shards_of(3).len(), 2);
    let data = blob(1000, 14);
    let id = s.store(&data).await;
    for node in 0..2 {
        s.faults(
            node,
            NodeFaults {
                lie_not_found: true,
                ..NodeFaults::default()
            },
        )
        .await;
    }
    s.faults(
        3,
        NodeFaults {
            latency_ms: 300,
            ..NodeFaults::default()
        },
    )
    .await;
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_over_the_size_limit_are_403() {
    let mut cfg = config();
    cfg.max_blob_size = Some(1000);
    let s = Scenario::with(SimConfig::default(), cfg).await;
    let small = blob(1000, 11);
    let small_id = s.store(&small).await;
    let big_id = s.store(&blob(1001, 12)).await;
    assert_eq!(
        s.get(&format!("/v1/blobs/{small_id}"))
            .await
            .bytes()
            .as_ref(),
        &small[..]
    );
    let reply = s.get(&format!("/v1/blobs/{big_id}")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.reason(), "BLOB_TOO_LARGE");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_bound_get_429() {
    let mut cfg = config();
    cfg.max_concurrent_requests = 1;
    let s = Scenario::with(SimConfig::default(), cfg).await;
    let id = s.store(&blob(1000, 13)).await;
    // Every node stalls: the first request holds the only slot until its fill times out.
    for node in 0..4 {
        s.faults(
            node,
            NodeFaults {
                stall: true,
                ..NodeFaults::default()
            },
        )
        .await;
    }
    let first = {
        let client = s.h2_client();
        let (addr, path) = (s.addr, format!("/v1/blobs/{id}"));
        tokio::spawn(async move { harness::send(&client, addr, Method::GET, &path, &[]).await })
    };
    assert!(
        s.wait_for_metric("gateway_requests_in_flight", 1.0).await,
        "the first request took the slot"
    );
    let second = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.reason(), "TOO_MANY_REQUESTS");
    assert_eq!(second.header("retry-after"), Some("1"));
    // Status and metrics stay reachable under overload.
    assert_eq!(s.get("/status").await.status, StatusCode::OK);
    first.abort();
    let _ = first.await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_frees_its_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Scenario::with(
        SimConfig {
            n_shards: 100,
            nodes: 4,
            ..SimConfig::default()
        },
        gateway::GatewayConfig {
            write_stall_timeout: std::time::Duration::from_millis(200),
            ..config()
        },
    )
    .await;
    // Far more than the socket buffers on both ends can hold.
    let data = blob(24 << 20, 9);
    let id = s.store(&data).await;
    assert_eq!(
        s.get(&format!("/v1/blobs/{id}")).await.status,
        StatusCode::OK
    );

    // A fixed receive buffer (no autotuning), so the response stalls long before 24 MiB; larger
    // than a loopback segment, so once the client reads, window updates flow at once (a window
    // below one segment leaves the sender probing a closed window with growing back-off, and
    // the drain after the cut-off could outlast the test's deadline).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(256 * 1024).unwrap();
    let mut stream = socket.connect(s.addr).await.unwrap();
    let request = format!("GET /v1/blobs/{id} HTTP/1.1\r\nhost: gateway\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // Wait for the response to start (so its slot is taken: on a loaded machine the request may
    // not even have been read yet), then read nothing more: the response stalls, and the
    // gateway gives up on the connection.
    let mut start = [0u8; 12];
    stream.read_exact(&mut start).await.unwrap();
    assert_eq!(&start, b"HTTP/1.1 200");
    assert!(
        s.wait_for_metric("gateway_requests_in_flight", 0.0).await,
        "the stalled response still holds its request slot"
    );
    let mut received = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut received),
    )
    .await
    .expect("the connection was closed");
    assert!(
        received.len() < data.len(),
        "the whole {} bytes arrived; nothing was cut off",
        data.len()
    );
    s.stop().await;
}

#[tokio::test]
async fn the_plain_listener_can_be_turned_off_when_tls_serves() {
    let committee = storage_sim::committee::Committee {
        n_shards: 10,
        nodes: Vec::new(),
    };
    let refused = gateway::Gateway::bind(
        gateway::GatewayConfig {
            plain_listener: false,
            ..config()
        },
        committee.clone(),
    )
    .await;
    assert!(matches!(
        refused,
        Err(gateway::server::ServerError::NoListener)
    ));
    let tls = gateway::tls::TlsIdentity::self_signed(&["localhost".into()])
        .unwrap()
        .identity;
    let gateway = gateway::Gateway::bind(
        gateway::GatewayConfig {
            plain_listener: false,
            https_listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            tls: Some(tls),
            ..config()
        },
        committee,
    )
    .await
    .unwrap();
    assert_eq!(gateway.plain_addr(), None);
    assert_eq!(Some(gateway.local_addr()), gateway.https_addr());
}
