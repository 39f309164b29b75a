//! The plain listener's lean HTTP/1.1 server (`gateway::h1`): it must answer exactly as hyper
//! does (same status, headers and bytes, request by request, over raw TCP), keep pipelined
//! requests in order, hand requests with bodies and h2c to hyper on the same connection, count
//! what it serves in the same metrics, cut off heads that never complete, and close idle
//! connections at once on shutdown.

mod harness;

use bytes::Bytes;
use gateway::{Gateway, GatewayConfig};
use harness::{blob, config, Scenario};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(30);

/// One response read off a raw connection.
#[derive(Debug, PartialEq)]
struct Raw {
    status_line: String,
    /// `name: value`, lowercased names, sorted, without `date`.
    headers: Vec<String>,
    body: Bytes,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            h.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(": "))
        })
    }
}

/// A keep-alive connection speaking HTTP/1.1 by hand, so framing is checked byte for byte.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.expect("connects"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).await.expect("request written");
    }

    /// Read one response; `head_only` for an answer to HEAD (no body follows its length).
    async fn read(&mut self, head_only: bool) -> Raw {
        tokio::time::timeout(DEADLINE, self.read_inner(head_only))
            .await
            .expect("response within the deadline")
    }

    async fn read_inner(&mut self, head_only: bool) -> Raw {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = response
                .parse(&self.buf)
                .expect("a well-formed response head")
            {
                let code = response.code.expect("status");
                let status_line = format!("{} {}", code, response.reason.unwrap_or(""));
                let mut list: Vec<String> = response
                    .headers
                    .iter()
                    .map(|h| {
                        format!(
                            "{}: {}",
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value)
                        )
                    })
                    .collect();
                assert!(
                    list.iter().any(|h| h.starts_with("date: ")),
                    "every response carries Date: {list:?}"
                );
                list.retain(|h| !h.starts_with("date: "));
                list.sort();
                assert!(
                    !list.iter().any(|h| h.starts_with("transfer-encoding")),
                    "blob answers have a length: {list:?}"
                );
                let length: usize = list
                    .iter()
                    .find_map(|h| h.strip_prefix("content-length: "))
                    .map_or(0, |v| v.parse().expect("numeric length"));
                let no_body = head_only || code == 304 || code == 204;
                let body_len = if no_body { 0 } else { length };
                self.buf.drain(..len);
                while self.buf.len() < body_len {
                    self.fill().await;
                }
                let body = Bytes::from(self.buf.drain(..body_len).collect::<Vec<u8>>());
                return Raw {
                    status_line,
                    headers: list,
                    body,
                };
            }
            self.fill().await;
        }
    }

    async fn fill(&mut self) {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed mid-response");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// True once the server has closed the connection (and nothing is left unread).
    async fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(DEADLINE, self.stream.read(&mut byte)).await,
            Ok(Ok(0))
        )
    }
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: gw\r\n{extra}\r\n").into_bytes()
}

fn request(method: &str, path: &str, extra: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: gw\r\n{extra}\r\n").into_bytes()
}

/// Wait until the memory tier holds `id` in a sealed memory file (it moves there in the
/// background after a fill).
async fn wait_for_memory_file(s: &Scenario, id: &codec::BlobId) {
    for _ in 0..400 {
        let cached = s.api().filler().cache().memory_get(id).await;
        if cached.is_some_and(|blob| blob.memory_file().is_some()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{id} never moved into a memory file");
}

/// A second gateway on the same nodes whose plain HTTP/1.1 is hyper alone.
async fn hyper_twin(s: &Scenario, base: GatewayConfig) -> gateway::RunningGateway {
    Gateway::bind(
        GatewayConfig {
            lean_http1: false,
            ..base
        },
        s.net.committee().clone(),
    )
    .await
    .expect("gateway binds")
    .spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_and_hyper_answer_every_request_alike() {
    let s = Scenario::start(10, 4).await;
    let twin = hyper_twin(&s, config()).await;
    // A small blob stays in heap memory; a large one moves to a sealed memory file (sendfile).
    let small = blob(10_000, 1);
    let large = blob(300_000, 2);
    // Above 1 MiB a memory file is written from its mapping instead of sent with sendfile.
    let huge = blob(1_500_000, 8);
    let small_id = s.store(&small).await;
    let large_id = s.store(&large).await;
    let huge_id = s.store(&huge).await;
    let unknown = codec::BlobId([42; 32]);
    let mut lean = Conn::open(s.addr).await;
    let mut plain = Conn::open(twin.addr()).await;
    for (id, data) in [(small_id, &small), (large_id, &large), (huge_id, &huge)] {
        let path = format!("/v1/blobs/{id}");
        let cases: Vec<(Vec<u8>, bool)> = vec![
            (get(&path, ""), false), // miss (fills)
            (get(&path, ""), false), // memory hit
            (get(&path, "Range: bytes=5-20\r\n"), false),
            (get(&path, "Range: bytes=-10\r\n"), false),
            (get(&path, "Range: bytes=999999999-\r\n"), false),
            (get(&path, &format!("If-None-Match: \"{id}\"\r\n")), false),
            (get(&path, "Accept: image/png\r\n"), false),
            (get(&path, "Content-Length: 0\r\n"), false),
            (request("HEAD", &path, ""), true),
            (
                get(&format!("{path}/byte-range?start=3&length=7"), ""),
                false,
            ),
        ];
        for (i, (raw, head_only)) in cases.into_iter().enumerate() {
            lean.send(&raw).await;
            plain.send(&raw).await;
            let (a, b) = (lean.read(head_only).await, plain.read(head_only).await);
            assert_eq!(a, b, "{}", String::from_utf8_lossy(&raw));
            if i == 0 && data.len() >= 64 * 1024 {
                // Hits from here on are sent with sendfile from the blob's memory file.
                wait_for_memory_file(&s, &id).await;
            }
        }
        lean.send(&get(&path, "")).await;
        let whole = lean.read(false).await;
        assert_eq!(whole.status_line, "200 OK");
        assert_eq!(whole.header("x-cache"), Some("hit-memory"));
        assert_eq!(&whole.body[..], &data[..]);
        // `Accept: */*` changes nothing in the answer but rules out the memory-hit lane: the
        // general path must answer the same, byte for byte, on both servers.
        let general = get(&path, "Accept: */*\r\n");
        lean.send(&general).await;
        plain.send(&general).await;
        assert_eq!(lean.read(false).await, whole);
        assert_eq!(plain.read(false).await, whole);
    }
    // Not found: the message counts the shards that answered, which varies run to run.
    let missing = get(&format!("/v1/blobs/{unknown}"), "");
    lean.send(&missing).await;
    plain.send(&missing).await;
    let (a, b) = (lean.read(false).await, plain.read(false).await);
    assert_eq!((&a.status_line, &a.headers), (&b.status_line, &b.headers));
    assert_eq!(a.status_line, "404 Not Found");
    for (raw, head_only) in [
        (get("/v1/blobs/not-a-blob-id", ""), false),
        (get("/status", ""), false),
        (request("HEAD", "/status", ""), true),
        (get("/nowhere", ""), false),
        (get(&format!("/v1/blobs/{small_id}?x=1"), ""), false),
    ] {
        lean.send(&raw).await;
        plain.send(&raw).await;
        let (a, b) = (lean.read(head_only).await, plain.read(head_only).await);
        assert_eq!(a, b, "{}", String::from_utf8_lossy(&raw));
    }
    // `Connection: close` is answered, announced, and the connection closed, by both.
    let close = get(&format!("/v1/blobs/{small_id}"), "Connection: close\r\n");
    lean.send(&close).await;
    plain.send(&close).await;
    let (a, b) = (lean.read(false).await, plain.read(false).await);
    assert_eq!(a, b);
    assert_eq!(a.header("connection"), Some("close"));
    assert!(lean.closed().await && plain.closed().await);
    twin.shutdown().await.expect("twin stops");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let s = Scenario::start(10, 4).await;
    let data = blob(200_000, 4);
    let id = s.store(&data).await;
    let path = format!("/v1/blobs/{id}");
    let mut conn = Conn::open(s.addr).await;
    let mut burst = get(&path, "");
    burst.extend(get(&path, "Range: bytes=0-9\r\n"));
    burst.extend(get("/status", ""));
    burst.extend(get(&path, ""));
    burst.extend(request("HEAD", &path, "Connection: close\r\n"));
    conn.send(&burst).await;
    let first = conn.read(false).await;
    assert_eq!(first.header("x-cache"), Some("miss"));
    assert_eq!(&first.body[..], &data[..]);
    let range = conn.read(false).await;
    assert_eq!(range.status_line, "206 Partial Content");
    assert_eq!(&range.body[..], &data[..10]);
    let status = conn.read(false).await;
    assert_eq!(&status.body[..], b"OK");
    let hit = conn.read(false).await;
    assert_eq!(hit.header("x-cache"), Some("hit-memory"));
    assert_eq!(&hit.body[..], &data[..]);
    let head = conn.read(true).await;
    assert_eq!(head.header("content-length"), Some("200000"));
    assert_eq!(head.header("connection"), Some("close"));
    assert!(conn.closed().await);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_h2c_are_handed_to_hyper_on_the_same_connection() {
    let s = Scenario::start(10, 4).await;
    let data = blob(100_000, 5);
    let id = s.store(&data).await;
    let path = format!("/v1/blobs/{id}");
    let mut conn = Conn::open(s.addr).await;
    conn.send(&get(&path, "")).await;
    assert_eq!(&conn.read(false).await.body[..], &data[..]);
    // A PUT (a body) goes to hyper, which then serves the rest of the connection.
    let upload = blob(5_000, 6);
    let mut put = format!(
        "PUT /v1/blobs HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n",
        upload.len()
    )
    .into_bytes();
    put.extend_from_slice(&upload);
    conn.send(&put).await;
    let published = conn.read(false).await;
    assert_eq!(published.status_line, "200 OK");
    let json: serde_json::Value = serde_json::from_slice(&published.body).unwrap();
    let new_id = json["newlyCreated"]["blobObject"]["blobId"]
        .as_str()
        .expect("a newly created blob")
        .to_owned();
    conn.send(&get(&format!("/v1/blobs/{new_id}"), "")).await;
    let back = conn.read(false).await;
    assert_eq!(back.header("x-cache"), Some("hit-memory"));
    assert_eq!(&back.body[..], &upload[..]);
    // HTTP/1.0 and a malformed head go to hyper too, which answers them as it always did.
    let mut old = Conn::open(s.addr).await;
    old.send(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await;
    let answer = old.read(false).await;
    assert_eq!(&answer.body[..], &data[..]);
    let mut bad = Conn::open(s.addr).await;
    bad.send(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n").await;
    assert!(bad.read(false).await.status_line.starts_with("400"));
    // h2c with prior knowledge.
    let reply = harness::send(&s.h2_client(), s.addr, http::Method::GET, &path, &[]).await;
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(&reply.bytes()[..], &data[..]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hits_are_counted_like_any_other() {
    let s = Scenario::start(10, 4).await;
    let data = blob(150_000, 7);
    let id = s.store(&data).await;
    let path = format!("/v1/blobs/{id}");
    let mut conn = Conn::open(s.addr).await;
    conn.send(&get(&path, "")).await;
    conn.read(false).await;
    let hits = s
        .metric("gateway_cache_hits_total{tier=\"memory\"}")
        .await
        .unwrap_or(0.0);
    let served = s
        .metric("gateway_bytes_served_total{source=\"memory\"}")
        .await
        .unwrap_or(0.0);
    let ok = s
        .metric("gateway_responses_total{status=\"200\"}")
        .await
        .unwrap_or(0.0);
    for _ in 0..3 {
        conn.send(&get(&path, "")).await;
        assert_eq!(&conn.read(false).await.body[..], &data[..]);
    }
    assert_eq!(
        s.metric("gateway_cache_hits_total{tier=\"memory\"}").await,
        Some(hits + 3.0)
    );
    assert_eq!(
        s.metric("gateway_bytes_served_total{source=\"memory\"}")
            .await,
        Some(served + 3.0 * data.len() as f64)
    );
    // A metrics request is counted once answered, after its own rendering: since `ok` was
    // read, 3 hits and 3 metrics requests (the one that read `ok` and the two checks above).
    assert_eq!(
        s.metric("gateway_responses_total{status=\"200\"}").await,
        Some(ok + 6.0)
    );
    assert_eq!(s.metric("gateway_requests_in_flight").await, Some(0.0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_never_completes_is_cut_off() {
    let s = Scenario::with(
        storage_sim::SimConfig {
            n_shards: 10,
            nodes: 4,
            ..storage_sim::SimConfig::default()
        },
        GatewayConfig {
            header_read_timeout: Duration::from_millis(300),
            ..config()
        },
    )
    .await;
    // Half a request head, then silence: the connection is closed without an answer.
    let mut slow = Conn::open(s.addr).await;
    slow.send(b"GET /status HTTP/1.1\r\nHost: gw\r\n").await;
    assert!(slow.closed().await, "a partial head held its connection");
    // An idle kept-alive connection ends the same way once the timeout has passed.
    let mut idle = Conn::open(s.addr).await;
    idle.send(&get("/status", "")).await;
    assert_eq!(&idle.read(false).await.body[..], b"OK");
    assert!(idle.closed().await, "an idle connection was kept forever");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_at_once() {
    let net = std::sync::Arc::new(
        storage_sim::SimNetwork::start(storage_sim::SimConfig {
            n_shards: 10,
            nodes: 4,
            ..storage_sim::SimConfig::default()
        })
        .await
        .expect("sim network starts"),
    );
    // A grace period and a header timeout far longer than the test's guard: if shutdown waited
    // for the idle connection instead of closing it, the guard below would fail.
    let gateway = Gateway::bind(
        GatewayConfig {
            shutdown_grace: Duration::from_secs(600),
            header_read_timeout: Duration::from_secs(600),
            ..config()
        },
        net.committee().clone(),
    )
    .await
    .expect("gateway binds")
    .spawn();
    let mut idle = Conn::open(gateway.addr()).await;
    idle.send(&get("/status", "")).await;
    assert_eq!(&idle.read(false).await.body[..], b"OK");
    tokio::time::timeout(DEADLINE, gateway.shutdown())
        .await
        .expect("shutdown did not wait for the idle connection")
        .expect("gateway stops");
    assert!(idle.closed().await);
    if let Ok(net) = std::sync::Arc::try_unwrap(net) {
        net.shutdown().await;
    }
}
