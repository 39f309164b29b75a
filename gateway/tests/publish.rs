//! The publisher path (issue 6): `PUT /v1/blobs` stores a blob on the nodes through the
//! gateway, with limits, a token, and nothing left behind by refused or broken uploads.

mod harness;

use gateway::{Gateway, GatewayConfig};
use harness::{blob, config, Scenario};
use http::{Method, StatusCode};
use std::io::{Read, Write};
use storage_sim::{NodeFaults, SimConfig};

fn ten_single_shard_nodes() -> SimConfig {
    SimConfig {
        n_shards: 10,
        nodes: 10,
        ..SimConfig::default()
    }
}

async fn put(s: &Scenario, data: &[u8], headers: &[(&str, &str)]) -> harness::Reply {
    s.send_body(Method::PUT, "/v1/blobs", headers, data.to_vec())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_blob_is_read_back_through_a_second_gateway_with_an_empty_cache() {
    let s = Scenario::start(10, 4).await;
    let data = blob(300_000, 11);
    let reply = put(&s, &data, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let json = reply.json();
    let id = json["newlyCreated"]["blobObject"]["blobId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(json["newlyCreated"]["blobObject"]["size"], 300_000);
    assert_eq!(json["newlyCreated"]["blobObject"]["encodingType"], "RS2");

    // The Blob ID is the one `walrus-gateway blob-id` computes for the file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob.bin");
    std::fs::write(&file, &data).unwrap();
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
        .args(["blob-id", "--n-shards", "10"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(cli.stdout).unwrap().trim(), id);

    // Written through to the publishing gateway's cache...
    assert_eq!(
        s.get(&format!("/v1/blobs/{id}")).await.header("x-cache"),
        Some("hit-memory")
    );
    // ...and really on the nodes: a second gateway with an empty cache reads it from them.
    let second = Gateway::bind(config(), s.net.committee().clone())
        .await
        .unwrap()
        .spawn();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let reply = harness::send(
        &client,
        second.addr(),
        Method::GET,
        &format!("/v1/blobs/{id}"),
        &[],
    )
    .await;
    assert_eq!(reply.header("x-cache"), Some("miss"));
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    second.shutdown().await.unwrap();

    // Publishing the same bytes again finds them stored.
    let again = put(&s, &data, &[]).await.json();
    assert_eq!(again["alreadyCertified"]["blobId"], id.as_str());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_shards_offline_still_publish_more_than_f_is_504_and_nothing_is_stored() {
    // n = 10, f = 3: quorum 7 shards, one shard per node.
    let s = Scenario::with(ten_single_shard_nodes(), config()).await;
    for node in 0..3 {
        s.faults(
            node,
            NodeFaults {
                offline: true,
                ..NodeFaults::default()
            },
        )
        .await;
    }
    let ok = put(&s, &blob(20_000, 1), &[]).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    assert!(
        ok.json()["newlyCreated"]["confirmedShards"]
            .as_u64()
            .unwrap()
            >= 7
    );

    s.faults(
        3,
        NodeFaults {
            offline: true,
            ..NodeFaults::default()
        },
    )
    .await;
    let data = blob(20_000, 2);
    let failed = put(&s, &data, &[]).await;
    assert_eq!(failed.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(failed.reason(), "INSUFFICIENT_CONFIRMATIONS");
    // Nothing was cached for it: with every node down the gateway has nothing to serve.
    for node in 0..10 {
        s.faults(
            node,
            NodeFaults {
                offline: true,
                ..NodeFaults::default()
            },
        )
        .await;
    }
    let id = codec::blob_id(10, &data).unwrap();
    assert_eq!(
        s.get(&format!("/v1/blobs/{id}")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        s.metric("gateway_publishes_total{outcome=\"failed\"}")
            .await,
        Some(1.0)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_unauthorized_and_disabled_uploads_are_refused_and_store_nothing() {
    let limited = GatewayConfig {
        max_upload: 1000,
        publish_token: Some("secret".into()),
        ..config()
    };
    let mut s = Scenario::with(SimConfig::default(), limited.clone()).await;
    let auth = [("authorization", "Bearer secret")];
    let big = put(&s, &blob(1001, 3), &auth).await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(big.reason(), "BODY_TOO_LARGE");
    assert_eq!(
        put(&s, &blob(100, 4), &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        put(&s, &blob(100, 4), &[("authorization", "Bearer secreT")])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let bad_param = s
        .send_body(Method::PUT, "/v1/blobs?epochz=3", &auth, blob(100, 4))
        .await;
    assert_eq!(bad_param.status, StatusCode::BAD_REQUEST);
    assert_eq!(s.counters().puts, 0, "a refused upload reached the nodes");
    let fine = s
        .send_body(
            Method::PUT,
            "/v1/blobs?epochs=5&permanent=true",
            &auth,
            blob(100, 4),
        )
        .await;
    assert_eq!(fine.status, StatusCode::OK, "{:?}", fine.body);

    s.restart_gateway(GatewayConfig {
        publish_enabled: false,
        ..limited
    })
    .await;
    let disabled = put(&s, &blob(100, 5), &auth).await;
    assert_eq!(disabled.status, StatusCode::FORBIDDEN);
    assert_eq!(disabled.reason(), "PUBLISHING_DISABLED");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_leaves_nothing_behind() {
    let s = Scenario::with(
        SimConfig::default(),
        GatewayConfig {
            upload_spool_threshold: 1000,
            ..config()
        },
    )
    .await;
    let addr = s.addr;
    // Declare 100 000 bytes, send 50 000 (past the spool threshold, so it went to a file), hang up.
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "PUT /v1/blobs HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n"
        )
        .unwrap();
        stream.write_all(&vec![7u8; 50_000]).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
    })
    .await
    .unwrap();
    assert_eq!(
        s.counters().puts,
        0,
        "an incomplete upload reached the nodes"
    );
    // The series exists at 0 from the start (issue 20).
    assert_eq!(
        s.metric("gateway_publishes_total{outcome=\"stored\"}")
            .await,
        Some(0.0)
    );
    // The gateway is fine afterwards.
    let ok = put(&s, &blob(5000, 6), &[]).await;
    assert_eq!(ok.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_put_and_get_commands_round_trip_and_refuse_unverified_bytes() {
    let s = Scenario::start(10, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.bin");
    let data = blob(123_456, 21);
    std::fs::write(&file, &data).unwrap();
    let gateway = format!("http://{}", s.addr);
    let run = |args: Vec<std::ffi::OsString>| {
        tokio::task::block_in_place(|| {
            std::process::Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
                .args(args)
                .output()
                .unwrap()
        })
    };
    let put = run(vec![
        "put".into(),
        "--gateway".into(),
        gateway.clone().into(),
        file.clone().into(),
    ]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let line = String::from_utf8(put.stdout).unwrap();
    let (id, name) = line.trim().split_once("  ").unwrap();
    assert_eq!(name, file.display().to_string());
    assert_eq!(id, codec::blob_id(10, &data).unwrap().to_string());

    let out = dir.path().join("copy.bin");
    let get = run(vec![
        "get".into(),
        "--gateway".into(),
        gateway.clone().into(),
        id.into(),
        "-o".into(),
        out.clone().into(),
    ]);
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert_eq!(std::fs::read(&out).unwrap(), data);

    // Told the wrong committee size, the bytes hash to another ID: nothing is written.
    let wrong = dir.path().join("wrong.bin");
    let refused = run(vec![
        "get".into(),
        "--gateway".into(),
        gateway.into(),
        "--n-shards".into(),
        "13".into(),
        id.into(),
        "-o".into(),
        wrong.clone().into(),
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("do not match"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!wrong.exists());
    s.stop().await;
}
