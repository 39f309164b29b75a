//! The storage-node REST API through real HTTP: vectors round trip, PUT paths, statuses,
//! health, and every error path with its JSON envelope.

mod common;

use common::*;
use http::Method;
use storage_sim::{NodeCounters, SimConfig, SimNetwork};

#[tokio::test]
async fn served_bytes_are_exactly_the_vectors_bcs() {
    let (net, v) = network_with_vectors().await;
    let id = v.blob_id();
    for node in &net.committee().nodes {
        let reply = get(&node.url, &metadata_path(&id)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.headers.get(http::header::CONTENT_TYPE).unwrap(),
            "application/octet-stream"
        );
        assert_eq!(reply.body.as_ref(), v.metadata_with_id().as_slice());
    }
    for pair in 0..10u16 {
        let (owner, _) = owner_and_other(&net, &v, pair);
        for kind in ["primary", "secondary"] {
            let reply = get(&owner, &sliver_path(&id, pair, kind)).await;
            assert_eq!(reply.status, 200, "pair {pair} {kind}");
            assert_eq!(reply.body.as_ref(), v.sliver_bcs(pair, kind).as_slice());
        }
    }
    // Pair 0 lives on shard 4 (SPEC §7 example), which round-robin gives to node 0.
    assert_eq!(v.shard(0), 4);
    assert_eq!(net.committee().node_for_shard(4), Some(0));
    let total = net.total_counters();
    assert_eq!(
        total,
        NodeCounters {
            metadata_gets: 4,
            primary_sliver_gets: 10,
            secondary_sliver_gets: 10,
            puts: 0,
            status_gets: 0,
            recovery_symbol_gets: 0,
        }
    );
    net.reset_counters();
    assert_eq!(net.total_counters(), NodeCounters::default());
    net.shutdown().await;
}

#[tokio::test]
async fn blobs_uploaded_over_http_are_served_back() {
    let net = SimNetwork::start(SimConfig::default()).await.unwrap();
    let v = Vectors::load();
    let id = v.blob_id();
    let urls: Vec<String> = net
        .committee()
        .nodes
        .iter()
        .map(|n| n.url.clone())
        .collect();
    // Slivers before metadata are refused: the node cannot verify them.
    let (owner0, _) = owner_and_other(&net, &v, 0);
    put(
        &owner0,
        &sliver_path(&id, 0, "primary"),
        v.sliver_bcs(0, "primary"),
    )
    .await
    .assert_error(400, "FAILED_PRECONDITION", "METADATA_NOT_FOUND");

    for url in &urls {
        let first = put(url, &metadata_path(&id), v.metadata()).await;
        assert_eq!(first.success_data(201), "metadata successfully stored");
        let again = put(url, &metadata_path(&id), v.metadata()).await;
        assert_eq!(again.success_data(200), "metadata already stored");
    }
    // No Content-Type is accepted too.
    let none = call(
        Method::PUT,
        &urls[0],
        &format!("{}?pending=false", metadata_path(&id)),
        Some((v.metadata(), None)),
    )
    .await
    .unwrap();
    assert_eq!(none.success_data(200), "metadata already stored");

    for pair in 0..10u16 {
        let (owner, other) = owner_and_other(&net, &v, pair);
        for kind in ["primary", "secondary"] {
            let path = sliver_path(&id, pair, kind);
            let status = format!("{path}/status");
            assert_eq!(get(&owner, &status).await.success_data(200), "nonexistent");
            let reply = put(&owner, &path, v.sliver_bcs(pair, kind)).await;
            assert_eq!(reply.success_data(200), "sliver stored successfully");
            assert_eq!(get(&owner, &status).await.success_data(200), "stored");
            assert_eq!(
                get(&owner, &path).await.body.as_ref(),
                v.sliver_bcs(pair, kind).as_slice()
            );
            put(&other, &path, v.sliver_bcs(pair, kind))
                .await
                .assert_error(400, "FAILED_PRECONDITION", "SHARD_NOT_ASSIGNED");
        }
    }
    assert_eq!(
        get(&urls[1], &metadata_path(&id)).await.body.as_ref(),
        v.metadata_with_id().as_slice()
    );
    assert_eq!(net.total_counters().puts, 4 * 2 + 1 + 1 + 20 * 2);
    net.shutdown().await;
}

#[tokio::test]
async fn statuses_and_health_have_the_real_json_shape() {
    let (net, v) = network_with_vectors().await;
    let id = v.blob_id();
    let url = net.committee().nodes[0].url.clone();
    let unknown = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    let status = get(&url, &format!("/v1/blobs/{id}/status"))
        .await
        .success_data(200);
    let permanent = &status["permanent"];
    assert_eq!(permanent["isCertified"], true);
    assert!(
        permanent["endEpoch"].as_u64().unwrap()
            > permanent["initialCertifiedEpoch"].as_u64().unwrap()
    );
    assert!(permanent["statusEvent"]["txDigest"].as_str().unwrap().len() >= 32);
    assert_eq!(permanent["statusEvent"]["eventSeq"], "0");
    assert_eq!(permanent["deletableCounts"]["count_deletable_total"], 0);
    assert_eq!(
        get(&url, &format!("/v1/blobs/{unknown}/status"))
            .await
            .success_data(200),
        "nonexistent"
    );
    assert_eq!(
        get(&url, &format!("/v1/blobs/{id}/metadata/status"))
            .await
            .success_data(200),
        "stored"
    );
    assert_eq!(
        get(&url, &format!("/v1/blobs/{unknown}/metadata/status"))
            .await
            .success_data(200),
        "nonexistent"
    );

    let health = get(&url, "/v1/health").await.success_data(200);
    let owned = net.committee().nodes[0].shards.len();
    assert_eq!(health["shardSummary"]["owned"], owned);
    assert_eq!(health["nodeStatus"], "Active");
    assert!(health["uptime"]["secs"].is_u64());
    assert!(health.get("shardDetail").is_none());
    let detailed = get(&url, "/v1/health?detailed=true")
        .await
        .success_data(200);
    assert_eq!(
        detailed["shardDetail"]["owned"].as_array().unwrap().len(),
        owned
    );
    assert_eq!(net.counters(0).status_gets, 4);
    net.shutdown().await;
}

#[tokio::test]
async fn error_paths_answer_with_the_walrus_envelope() {
    let (net, v) = network_with_vectors().await;
    let id = v.blob_id();
    let (owner, other) = owner_and_other(&net, &v, 0);
    let unknown = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    // Unknown blob.
    get(&owner, &metadata_path(unknown))
        .await
        .assert_error(404, "NOT_FOUND", "METADATA_NOT_FOUND");
    get(&owner, &sliver_path(unknown, 0, "primary"))
        .await
        .assert_error(404, "NOT_FOUND", "SLIVER_NOT_FOUND");
    // Wrong shard: the pair's shard belongs to another node.
    let wrong = get(&other, &sliver_path(&id, 0, "primary")).await;
    wrong.assert_error(400, "FAILED_PRECONDITION", "SHARD_NOT_ASSIGNED");
    assert_eq!(wrong.json()["error"]["details"][0]["metadata"]["shard"], 4);
    get(
        &other,
        &format!("{}/status", sliver_path(&id, 0, "secondary")),
    )
    .await
    .assert_error(400, "FAILED_PRECONDITION", "SHARD_NOT_ASSIGNED");
    // Malformed Blob IDs.
    for bad in [
        "abc",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+",
    ] {
        get(&owner, &metadata_path(bad)).await.assert_error(
            400,
            "INVALID_ARGUMENT",
            "INVALID_BLOB_ID",
        );
        put(&owner, &metadata_path(bad), v.metadata())
            .await
            .assert_error(400, "INVALID_ARGUMENT", "INVALID_BLOB_ID");
    }
    // Bad pair index and sliver type.
    get(&owner, &sliver_path(&id, 10, "primary"))
        .await
        .assert_error(400, "INVALID_ARGUMENT", "INDEX_OUT_OF_RANGE");
    get(&owner, &format!("/v1/blobs/{id}/slivers/70000/primary"))
        .await
        .assert_error(400, "INVALID_ARGUMENT", "INVALID_SLIVER_PAIR_INDEX");
    get(&owner, &format!("/v1/blobs/{id}/slivers/0/tertiary"))
        .await
        .assert_error(400, "INVALID_ARGUMENT", "INVALID_SLIVER_TYPE");
    // Malformed BCS, for metadata and slivers.
    put(&owner, &metadata_path(&id), vec![0, 1, 2])
        .await
        .assert_error(400, "INVALID_ARGUMENT", "INVALID_CONTENT_TYPE");
    let mut trailing = v.sliver_bcs(0, "primary");
    trailing.push(0);
    put(&owner, &sliver_path(&id, 0, "primary"), trailing)
        .await
        .assert_error(400, "INVALID_ARGUMENT", "INVALID_CONTENT_TYPE");
    // Wrong Content-Type on a BCS endpoint.
    call(
        Method::PUT,
        &owner,
        &metadata_path(&id),
        Some((v.metadata(), Some("application/json"))),
    )
    .await
    .unwrap()
    .assert_error(400, "INVALID_ARGUMENT", "INVALID_CONTENT_TYPE");
    // Oversize bodies: by Content-Length, for metadata and slivers.
    let big = put(&owner, &metadata_path(&id), vec![0u8; 16 + 66 * 10 + 1]).await;
    big.assert_error(413, "SIZE_EXCEEDED", "BODY_TOO_LARGE");
    assert_eq!(
        big.json()["error"]["details"][0]["metadata"]["limit"],
        16 + 66 * 10
    );
    put(
        &owner,
        &sliver_path(&id, 0, "primary"),
        vec![0u8; 7 * 65534 + 17],
    )
    .await
    .assert_error(413, "SIZE_EXCEEDED", "BODY_TOO_LARGE");
    // Unknown endpoints and methods.
    get(&owner, &format!("/v1/blobs/{id}/decodingSymbols"))
        .await
        .assert_error(404, "NOT_FOUND", "UNKNOWN_ENDPOINT");
    let not_allowed = call(Method::DELETE, &owner, &metadata_path(&id), None)
        .await
        .unwrap();
    assert_eq!(not_allowed.status, 405);
    assert_eq!(
        not_allowed.headers.get(http::header::ALLOW).unwrap(),
        "GET,PUT"
    );
    net.shutdown().await;
}

#[tokio::test]
async fn puts_that_fail_verification_are_never_stored() {
    let net = SimNetwork::start(SimConfig::default()).await.unwrap();
    let v = Vectors::load();
    let id = v.blob_id();
    let (owner, _) = owner_and_other(&net, &v, 0);

    // Metadata under another blob's ID.
    let other_id = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let reply = put(&owner, &metadata_path(other_id), v.metadata()).await;
    reply.assert_error(400, "INVALID_ARGUMENT", "INVALID_METADATA");
    get(&owner, &metadata_path(other_id)).await.assert_error(
        404,
        "NOT_FOUND",
        "METADATA_NOT_FOUND",
    );

    assert_eq!(
        put(&owner, &metadata_path(&id), v.metadata()).await.status,
        201
    );
    // A flipped data byte fails the Merkle check.
    let mut corrupt = v.sliver_bcs(0, "primary");
    corrupt[10] ^= 1;
    put(&owner, &sliver_path(&id, 0, "primary"), corrupt)
        .await
        .assert_error(400, "INVALID_ARGUMENT", "INVALID_SLIVER");
    // A valid sliver of another pair on this node, PUT under pair 0's path.
    let owner_node = net.committee().node_for_shard(v.shard(0)).unwrap();
    let other_pair = (1..10u16)
        .find(|&p| net.committee().node_for_shard(v.shard(p)) == Some(owner_node))
        .unwrap();
    let reply = put(
        &owner,
        &sliver_path(&id, 0, "primary"),
        v.sliver_bcs(other_pair, "primary"),
    )
    .await;
    reply.assert_error(400, "INVALID_ARGUMENT", "INVALID_SLIVER");
    // A secondary sliver PUT as primary has the wrong length for its kind.
    put(
        &owner,
        &sliver_path(&id, 0, "primary"),
        v.sliver_bcs(0, "secondary"),
    )
    .await
    .assert_error(400, "INVALID_ARGUMENT", "INVALID_SLIVER");

    get(&owner, &sliver_path(&id, 0, "primary"))
        .await
        .assert_error(404, "NOT_FOUND", "SLIVER_NOT_FOUND");
    assert_eq!(
        get(
            &owner,
            &format!("{}/status", sliver_path(&id, 0, "primary"))
        )
        .await
        .success_data(200),
        "nonexistent"
    );
    net.shutdown().await;
}

#[tokio::test]
async fn uneven_assignments_and_configuration_errors() {
    let net = SimNetwork::start(SimConfig {
        n_shards: 7,
        nodes: 3,
        assignment: Some(vec![vec![0, 1, 2, 3, 4], vec![5], vec![6]]),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let c = net.committee();
    assert_eq!(c.nodes[0].shards.len(), 5);
    assert_eq!(c.node_for_shard(6), Some(2));
    let health = get(&c.nodes[1].url, "/v1/health").await.success_data(200);
    assert_eq!(health["shardSummary"]["owned"], 1);
    net.shutdown().await;

    for bad in [
        SimConfig {
            n_shards: 3,
            ..SimConfig::default()
        },
        SimConfig {
            nodes: 11,
            ..SimConfig::default()
        },
        SimConfig {
            assignment: Some(vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7, 8, 8]]),
            ..SimConfig::default()
        },
        SimConfig {
            faults: vec![storage_sim::NodeFaults {
                error_rate: 2.0,
                ..Default::default()
            }],
            ..SimConfig::default()
        },
    ] {
        assert!(SimNetwork::start(bad).await.is_err());
    }
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (net, v) = network_with_vectors().await;
    let (owner, _) = owner_and_other(&net, &v, 2);
    let authority = owner.strip_prefix("http://").unwrap().to_owned();
    let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    // Several requests multiplexed on one connection.
    for kind in ["primary", "secondary"] {
        let request = http::Request::builder()
            .uri(format!("{owner}{}", sliver_path(&v.blob_id(), 2, kind)))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.as_ref(), v.sliver_bcs(2, kind).as_slice());
    }
    net.shutdown().await;
}

#[tokio::test]
async fn oversize_chunked_bodies_are_cut_off_while_reading() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (net, v) = network_with_vectors().await;
    let url = net.committee().nodes[0].url.clone();
    let authority = url.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    // No Content-Length: the limit (16 + 66 n = 676 bytes) must be enforced on the stream.
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {authority}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        metadata_path(&v.blob_id())
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..4 {
        stream.write_all(b"100\r\n").await.unwrap();
        stream.write_all(&[0u8; 256]).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"reason\":\"BODY_TOO_LARGE\""), "{text}");
    net.shutdown().await;
}
