//! `walrus-gateway serve` end to end, as the README runs it: with an embedded simulated network
//! seeded from a file, and against an external committee file.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use storage_sim::{SimConfig, SimNetwork};

/// A `serve` process, killed when dropped.
struct Served {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Served {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
            .arg("serve")
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary runs");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdout }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("stdout is readable");
        assert!(!line.is_empty(), "serve exited early");
        line.trim_end().to_owned()
    }

    /// The address from the `listening on http://ADDR` line.
    fn address(&mut self) -> String {
        let line = self.line();
        line.strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_owned()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let mut served = Served::start(&["--seed", path.to_str().unwrap()]);
    let id = served.line();
    assert_eq!(id, codec::blob_id(10, &data).unwrap().to_string());
    let base = served.address();
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
    let mut served = Served::start(&["--committee", committee.to_str().unwrap()]);
    let base = served.address();
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
    let mut parent = Served::start(&["--seed", path.to_str().unwrap()]);
    let id = parent.line();
    let parent_base = parent.address();
    let mut edge = Served::start(&["--upstream", &parent_base, "--n-shards", "10"]);
    let base = edge.address();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = runtime.block_on(get(&format!("{base}/v1/blobs/{id}")));
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), &data[..]);
    // No storage nodes behind the edge: nowhere to publish to.
    let status = runtime.block_on(put(&format!("{base}/v1/blobs")));
    assert_eq!(status, 403);
    // And a parent can be made read-only the same way.
    let mut read_only = Served::start(&["--no-publish"]);
    let base = read_only.address();
    let status = runtime.block_on(put(&format!("{base}/v1/blobs")));
    assert_eq!(status, 403);
}
