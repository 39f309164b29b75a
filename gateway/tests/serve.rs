//! `walrus-gateway serve` end to end, as the README runs it: with an embedded simulated network
//! seeded from a file, and against an external committee file.

mod harness;

use bytes::Bytes;
use harness::Served;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::process::Command;
use storage_sim::{SimConfig, SimNetwork};

/// A `serve` process on a free plain port.
fn serve(args: &[&str]) -> Served {
    let mut all = vec!["--bind", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Served::start(&all)
}

/// The address from a `listening on http://ADDR` line.
fn address(served: &mut Served) -> String {
    served.line_after("listening on ")
}

async fn get(url: &str) -> (u16, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client
        .get(url.parse().unwrap())
        .await
        .expect("serve answers");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

async fn put(url: &str) -> u16 {
    let client = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
    let request = http::Request::put(url)
        .body(http_body_util::Full::new(Bytes::from_static(b"new blob")))
        .unwrap();
    client.request(request).await.unwrap().status().as_u16()
}

#[test]
fn serve_seeds_an_embedded_network_and_serves_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hello.txt");
    let data = b"hello, walrus\n".repeat(1000);
    std::fs::write(&path, &data).unwrap();
    let mut served = serve(&["--seed", path.to_str().unwrap()]);
    let id = served.line();
    assert_eq!(id, codec::blob_id(10, &data).unwrap().to_string());
    let base = address(&mut served);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = runtime.block_on(get(&format!("{base}/v1/blobs/{id}")));
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), &data[..]);
}

#[test]
fn serve_reads_from_a_committee_file() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let committee = dir.path().join("committee.json");
    let data = b"from an external committee".repeat(100);
    let (net, id) = runtime.block_on(async {
        let net = SimNetwork::start(SimConfig::default()).await.unwrap();
        let id = net.store(&data).unwrap();
        (net, id)
    });
    net.committee().save(&committee).unwrap();
    let mut served = serve(&["--committee", committee.to_str().unwrap()]);
    let base = address(&mut served);
    let (status, body) = runtime.block_on(get(&format!("{base}/v1/blobs/{id}")));
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), &data[..]);
    drop(served);
    runtime.block_on(net.shutdown());
}

#[test]
fn serve_refuses_seeding_an_external_committee() {
    let out = Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
        .args(["serve", "--committee", "/no/such/file", "--seed", "/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("--seed"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn serve_as_an_edge_reads_through_a_parent_and_refuses_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let mut parent = serve(&["--seed", path.to_str().unwrap()]);
    let id = parent.line();
    let parent_base = address(&mut parent);
    let mut edge = serve(&["--upstream", &parent_base, "--n-shards", "10"]);
    let base = address(&mut edge);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = runtime.block_on(get(&format!("{base}/v1/blobs/{id}")));
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), &data[..]);
    // No storage nodes behind the edge: nowhere to publish to.
    let status = runtime.block_on(put(&format!("{base}/v1/blobs")));
    assert_eq!(status, 403);
    // And a parent can be made read-only the same way.
    let mut read_only = serve(&["--no-publish"]);
    let base = address(&mut read_only);
    let status = runtime.block_on(put(&format!("{base}/v1/blobs")));
    assert_eq!(status, 403);
}
