//! Hostile clients against the connection layer (issue 21, items 1, 2, 10, 11): HTTP/2
//! connections that grant no flow-control window, silent connections on every listener, request
//! bodies that never come, the HTTP/2 preface mid-connection, HTTP/3 bodies that contradict
//! their `content-length`, and `/metrics` moved to its own listener. Every bound is lowered by
//! configuration so each reproduction runs in seconds; every client here is bounded in count
//! and time and talks to loopback only.

mod harness;

use bytes::Bytes;
use gateway::{Gateway, GatewayConfig, RunningGateway};
use harness::{blob, Reply, Scenario};
use http::{Method, Request, StatusCode};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use storage_sim::SimConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any legitimate request here may take while an attack is under way.
const SERVED_WITHIN: Duration = Duration::from_secs(5);

async fn scenario(tweak: impl FnOnce(&mut GatewayConfig)) -> Scenario {
    let mut config = harness::config();
    tweak(&mut config);
    let sim = SimConfig {
        n_shards: 10,
        nodes: 4,
        ..SimConfig::default()
    };
    Scenario::with(sim, config).await
}

/// An HTTP/2 (h2c) client connection that grants the server no flow-control window on any
/// stream (SETTINGS_INITIAL_WINDOW_SIZE = 0): responses' headers arrive, their bodies never.
struct ZeroWindow {
    client: h2::client::SendRequest<Bytes>,
    driver: tokio::task::JoinHandle<Result<(), h2::Error>>,
    /// Responses whose bodies are never read.
    held: Vec<h2::RecvStream>,
}

impl ZeroWindow {
    async fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (client, connection) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake(tcp)
            .await
            .expect("h2c handshake");
        Self {
            client,
            driver: tokio::spawn(connection),
            held: Vec::new(),
        }
    }

    /// Open `n` GETs of `path` and wait for their response heads; their statuses.
    async fn open(&mut self, path: &str, n: usize) -> Vec<StatusCode> {
        let mut statuses = Vec::new();
        for _ in 0..n {
            let client = self.client.clone().ready().await.expect("stream allowed");
            let mut client = client;
            let request = Request::get(format!("http://gateway{path}"))
                .body(())
                .unwrap();
            let (response, _) = client.send_request(request, true).expect("request sent");
            let response = tokio::time::timeout(SERVED_WITHIN, response)
                .await
                .expect("response head in time")
                .expect("response head");
            statuses.push(response.status());
            self.held.push(response.into_body());
        }
        statuses
    }

    /// Whether the server closed the connection within `within`.
    async fn closed_within(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, &mut self.driver).await.is_ok()
    }
}

impl Drop for ZeroWindow {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A GET on a new HTTP/2 (h2c) connection.
async fn h2_get(addr: SocketAddr, path: &str) -> StatusCode {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
    let driver = tokio::spawn(connection);
    let request = Request::get(format!("http://gateway{path}"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).expect("request sent");
    let response = response.await.expect("response");
    let status = response.status();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    driver.abort();
    status
}

/// A GET on a new HTTP/1.1 connection, within [`SERVED_WITHIN`].
async fn h1_get(addr: SocketAddr, path: &str) -> Reply {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    tokio::time::timeout(
        SERVED_WITHIN,
        harness::send(&client, addr, Method::GET, path, &[]),
    )
    .await
    .expect("served in time")
}

/// Read until the peer closes (`Some(bytes read)`), or `None` if it is still open after
/// `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// The value of `series` in the gateway's metrics (0 when absent).
async fn metric(s: &Scenario, series: &str) -> f64 {
    s.metric(series).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_h2_connections_cannot_take_every_slot() {
    // Scaled from the report (six connections x 200 streams against 1024 slots): six
    // connections x 20 streams against 64 slots, each connection's share 4. Without shares the
    // 120 streams would hold all 64 slots and every other blob request would answer 429.
    let s = scenario(|c| {
        c.max_concurrent_requests = 64;
        c.max_requests_per_connection = 4;
        c.max_streams_per_connection = 20;
        // Long enough that the shares, not the stall sweep, are what is shown here.
        c.write_stall_timeout = Duration::from_secs(30);
    })
    .await;
    let data = blob(256 << 10, 1);
    let id = s.store(&data).await;
    let path = format!("/v1/blobs/{id}");
    assert_eq!(h1_get(s.addr, &path).await.status, StatusCode::OK);

    let mut attackers = Vec::new();
    for _ in 0..6 {
        let mut attacker = ZeroWindow::connect(s.addr).await;
        let statuses = attacker.open(&path, 20).await;
        let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        assert_eq!(ok, 4, "a connection holds exactly its share: {statuses:?}");
        assert!(statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS));
        attackers.push(attacker);
    }
    assert_eq!(metric(&s, "gateway_requests_in_flight").await, 24.0);
    assert_eq!(
        metric(&s, "gateway_share_refused_total{scope=\"connection\"}").await,
        6.0 * 16.0
    );

    // Legitimate clients on HTTP/1.1 (the lean server's memory lane and hyper's general path)
    // and HTTP/2 are served while the attack holds its streams.
    let started = Instant::now();
    let reply = h1_get(s.addr, &path).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().len(), data.len());
    let ranged = h1_get(
        s.addr,
        &format!("/v1/blobs/{id}/byte-range?start=5&length=10"),
    )
    .await;
    assert_eq!(ranged.status, StatusCode::OK);
    assert_eq!(
        tokio::time::timeout(SERVED_WITHIN, h2_get(s.addr, &path))
            .await
            .expect("h2 served in time"),
        StatusCode::OK
    );
    assert!(started.elapsed() < SERVED_WITHIN);
    drop(attackers);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_h2_streams_are_revoked_within_the_stall_bound() {
    let stall = Duration::from_millis(800);
    let s = scenario(|c| {
        c.max_requests_per_connection = 8;
        c.write_stall_timeout = stall;
    })
    .await;
    let id = s.store(&blob(128 << 10, 2)).await;
    let path = format!("/v1/blobs/{id}");
    assert_eq!(h1_get(s.addr, &path).await.status, StatusCode::OK);

    let mut attacker = ZeroWindow::connect(s.addr).await;
    let opened = Instant::now();
    let statuses = attacker.open(&path, 8).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(metric(&s, "gateway_requests_in_flight").await, 8.0);
    // Every stream is stalled: the slots are freed and the connection closed within the bound
    // (plus the sweep period, a quarter of it, and scheduling slack).
    assert!(
        attacker.closed_within(stall * 8).await,
        "the stalled connection was not closed"
    );
    let freed = opened.elapsed();
    assert_eq!(metric(&s, "gateway_requests_in_flight").await, 0.0);
    assert!(freed >= stall, "revoked before the bound: {freed:?}");
    assert_eq!(
        metric(&s, "gateway_deadlines_total{kind=\"response_stall\"}").await,
        8.0
    );
    assert_eq!(
        metric(&s, "gateway_deadlines_total{kind=\"stalled_connection\"}").await,
        1.0
    );

    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_by_their_deadlines() {
    let generated = gateway::tls::TlsIdentity::self_signed(&["localhost".into()]).unwrap();
    let cert = generated.identity.certificate().clone();
    let head = Duration::from_millis(600);
    let idle = Duration::from_millis(900);
    let tweak = |c: &mut GatewayConfig| {
        c.header_read_timeout = head;
        c.idle_timeout = idle;
        c.tls_handshake_timeout = Duration::from_millis(500);
        c.https_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.tls = Some(generated.identity.clone());
    };
    let s = scenario(tweak).await;
    // The same committee behind a gateway with hyper alone on the plain port.
    let mut hyper_config = harness::config();
    tweak(&mut hyper_config);
    hyper_config.lean_http1 = false;
    hyper_config.https_listen = None;
    let hyper_only: RunningGateway = Gateway::bind(hyper_config, s.net.committee().clone())
        .await
        .unwrap()
        .spawn();
    let limit = Duration::from_secs(4);

    // Plain TCP that sends nothing: the lean server and hyper (whose protocol sniffing has no
    // timeout of its own).
    for addr in [s.addr, hyper_only.addr()] {
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert!(
            read_until_closed(&mut silent, limit).await.is_some(),
            "silent TCP stays open on {addr}"
        );
    }
    // A request head that never ends.
    let mut partial = TcpStream::connect(s.addr).await.unwrap();
    partial
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(read_until_closed(&mut partial, limit).await.is_some());

    // h2c: the preface and SETTINGS, then nothing.
    let mut h2c = TcpStream::connect(s.addr).await.unwrap();
    h2c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    assert!(
        read_until_closed(&mut h2c, limit).await.is_some(),
        "a silent h2c connection stays open"
    );

    // TLS: silent before the handshake, and silent after it.
    let https = s.https_addr().unwrap();
    let mut raw = TcpStream::connect(https).await.unwrap();
    assert!(read_until_closed(&mut raw, limit).await.is_some());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(gateway::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = TcpStream::connect(https).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut secure = connector.connect(name, tcp).await.expect("TLS handshake");
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 1024];
        loop {
            match secure.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a silent TLS connection stays open");

    // Idle keep-alive after a request: HTTP/2 gets a GOAWAY, hyper's HTTP/1.1 a close.
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let request = Request::get("http://gateway/status").body(()).unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), StatusCode::OK);
    let idle_started = Instant::now();
    tokio::time::timeout(limit, driver)
        .await
        .expect("an idle h2c connection stays open")
        .unwrap()
        .expect("a clean close (GOAWAY)");
    assert!(idle_started.elapsed() >= idle - Duration::from_millis(100));
    let mut kept = TcpStream::connect(hyper_only.addr()).await.unwrap();
    kept.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut kept, limit)
        .await
        .expect("an idle HTTP/1.1 connection stays open");
    assert!(answer.starts_with(b"HTTP/1.1 200"));

    assert!(metric(&s, "gateway_deadlines_total{kind=\"first_request\"}").await >= 3.0);
    assert!(metric(&s, "gateway_deadlines_total{kind=\"request_head\"}").await >= 1.0);
    assert_eq!(
        metric(&s, "gateway_deadlines_total{kind=\"tls_handshake\"}").await,
        1.0
    );
    assert!(metric(&s, "gateway_deadlines_total{kind=\"idle\"}").await >= 1.0);
    hyper_only.shutdown().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_that_stall_or_trickle_are_cut() {
    let s = scenario(|c| {
        c.body_timeout = Duration::from_millis(500);
        c.body_total_timeout = Duration::from_millis(2000);
    })
    .await;
    let limit = Duration::from_secs(6);
    let status_of =
        |answer: &[u8]| String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned();

    // Declares a body and sends none.
    let started = Instant::now();
    let mut none = TcpStream::connect(s.addr).await.unwrap();
    none.write_all(b"PUT /v1/blobs HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut none, limit).await.expect("cut");
    assert_eq!(status_of(&answer), "HTTP/1.1 400");
    assert!(started.elapsed() >= Duration::from_millis(500));

    // A chunked body that never ends.
    let mut endless = TcpStream::connect(s.addr).await.unwrap();
    endless
        .write_all(b"PUT /v1/blobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut endless, limit).await.expect("cut");
    assert_eq!(status_of(&answer), "HTTP/1.1 400");

    // A trickle: a byte every 200 ms never trips the idle bound; the total bound cuts it.
    let started = Instant::now();
    let mut trickle = TcpStream::connect(s.addr).await.unwrap();
    trickle
        .write_all(b"PUT /v1/blobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let (mut read, mut write) = trickle.into_split();
    let dripping = tokio::spawn(async move {
        for _ in 0..30 {
            if write.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, read.read_to_end(&mut answer)).await;
    assert_eq!(status_of(&answer), "HTTP/1.1 400");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2000) && took < limit,
        "cut after {took:?}"
    );
    dripping.abort();

    // Over HTTP/2 too, and nothing was stored or left in flight.
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let request = Request::put("http://gateway/v1/blobs")
        .header("content-length", "10")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    body.send_data(Bytes::from_static(b"abc"), false).unwrap();
    let response = tokio::time::timeout(limit, response)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    driver.abort();

    assert_eq!(
        metric(&s, "gateway_deadlines_total{kind=\"body_idle\"}").await,
        3.0
    );
    assert_eq!(
        metric(&s, "gateway_deadlines_total{kind=\"body_total\"}").await,
        1.0
    );
    assert_eq!(
        metric(&s, "gateway_publishes_total{outcome=\"stored\"}").await,
        0.0
    );
    // A well-behaved upload still goes through.
    let stored = s
        .send_body(Method::PUT, "/v1/blobs", &[], blob(4096, 3))
        .await;
    assert_eq!(stored.status, StatusCode::OK, "{:?}", stored.body);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_server_refuses_the_h2_preface_after_a_request() {
    let s = scenario(|_| {}).await;
    // As the first bytes of a connection, the preface is HTTP/2.
    assert_eq!(h2_get(s.addr, "/status").await, StatusCode::OK);
    // After an HTTP/1.1 request, it is not (hyper's HTTP/1.1 server closes such a
    // connection; so does the lean one now).
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let rest = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the connection is closed");
    // The rest of the first response, then at most an HTTP/1.1 error: never an HTTP/2 SETTINGS
    // frame (type 4 on stream 0).
    let text = String::from_utf8_lossy(&rest);
    let after_first = text
        .split("\r\n\r\n")
        .skip(1)
        .collect::<Vec<_>>()
        .join("\r\n\r\n");
    let after_first = after_first.trim_start_matches("OK");
    assert!(
        after_first.is_empty() || after_first.starts_with("HTTP/1.1 "),
        "not HTTP/1.1 after the preface: {after_first:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_move_to_a_listener_of_their_own() {
    let s = scenario(|c| c.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)))).await;
    let private = s.metrics_addr().expect("the metrics listener is on");
    // The public port: 404 on the lean server, on hyper's HTTP/1.1 path and on HTTP/2.
    assert_eq!(
        h1_get(s.addr, "/metrics").await.status,
        StatusCode::NOT_FOUND
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    let request = Request::get(format!("http://{}/metrics", s.addr))
        .header("content-length", "0")
        .header("expect", "100-continue")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(h2_get(s.addr, "/metrics").await, StatusCode::NOT_FOUND);
    // The private one serves them, and nothing else.
    let metrics = h1_get(private, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8(metrics.bytes().to_vec()).unwrap();
    assert!(
        text.contains("gateway_responses_total{status=\"404\"} 3"),
        "{text}"
    );
    assert_eq!(
        h1_get(private, "/status").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(h1_get(s.addr, "/status").await.status, StatusCode::OK);
    s.stop().await;
}

/// A QUIC connection to the gateway's HTTP/3 port, trusting `cert`.
async fn quic_connect(
    addr: SocketAddr,
    cert: &rustls_pki_types::CertificateDer<'static>,
) -> (quinn::Endpoint, quinn::Connection) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(gateway::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(quic)));
    let connection = tokio::time::timeout(SERVED_WITHIN, async {
        endpoint.connect(addr, "localhost").unwrap().await
    })
    .await
    .expect("handshake in time")
    .expect("QUIC handshake");
    (endpoint, connection)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_bodies_must_match_their_content_length_and_idle_connections_close() {
    let generated = gateway::tls::TlsIdentity::self_signed(&["localhost".into()]).unwrap();
    let cert = generated.identity.certificate().clone();
    let s = scenario(|c| {
        c.h3_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.tls = Some(generated.identity);
        c.header_read_timeout = Duration::from_millis(600);
        c.idle_timeout = Duration::from_millis(900);
    })
    .await;
    let h3_addr = s.h3_addr().unwrap();
    let (endpoint, connection) = quic_connect(h3_addr, &cert).await;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection.clone()))
        .await
        .expect("HTTP/3 connection");
    let driving = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let put = |declared: Option<&'static str>, body: &'static [u8]| {
        let mut send = send.clone();
        async move {
            let mut request =
                Request::put(format!("https://localhost:{}/v1/blobs", h3_addr.port()));
            if let Some(declared) = declared {
                request = request.header("content-length", declared);
            }
            let mut stream = send.send_request(request.body(()).unwrap()).await.unwrap();
            stream.send_data(Bytes::from_static(body)).await.unwrap();
            stream.finish().await.unwrap();
            let response = tokio::time::timeout(SERVED_WITHIN, stream.recv_response())
                .await
                .expect("answered in time");
            response.map(|r| r.status()).map_err(|e| e.to_string())
        }
    };
    // Fewer bytes than declared, more than declared: malformed (RFC 9114 §4.1.2), 400.
    assert_eq!(
        put(Some("100"), b"hello").await,
        Ok(StatusCode::BAD_REQUEST)
    );
    assert_eq!(put(Some("3"), b"hello").await, Ok(StatusCode::BAD_REQUEST));
    assert_eq!(
        metric(&s, "gateway_publishes_total{outcome=\"stored\"}").await,
        0.0,
        "a malformed body was stored"
    );
    // Exact, or undeclared: stored.
    assert_eq!(put(Some("5"), b"hello").await, Ok(StatusCode::OK));
    assert_eq!(put(None, b"world").await, Ok(StatusCode::OK));
    assert_eq!(
        metric(&s, "gateway_publishes_total{outcome=\"stored\"}").await,
        2.0
    );

    // Idle after its requests, the connection is closed (a GOAWAY, then the close)...
    tokio::time::timeout(Duration::from_secs(5), connection.closed())
        .await
        .expect("an idle HTTP/3 connection stays open");
    driving.abort();
    // ...and one that never sends a request is closed after the header timeout.
    let (silent_endpoint, silent) = quic_connect(h3_addr, &cert).await;
    tokio::time::timeout(Duration::from_secs(5), silent.closed())
        .await
        .expect("a silent HTTP/3 connection stays open");
    assert_eq!(
        metric(&s, "gateway_deadlines_total{kind=\"first_request\"}").await,
        1.0
    );
    assert!(metric(&s, "gateway_deadlines_total{kind=\"idle\"}").await >= 1.0);
    endpoint.close(0u32.into(), b"done");
    silent_endpoint.close(0u32.into(), b"done");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_of_one_client_share_its_bound_when_asked() {
    let s = scenario(|c| {
        c.max_requests_per_connection = 2;
        c.max_requests_per_client = 3;
        // Loopback is exempt by default (load generators, a local proxy); not here.
        c.client_share_loopback = true;
        c.write_stall_timeout = Duration::from_secs(30);
    })
    .await;
    let id = s.store(&blob(64 << 10, 4)).await;
    let path = format!("/v1/blobs/{id}");
    assert_eq!(h1_get(s.addr, &path).await.status, StatusCode::OK);
    let mut one = ZeroWindow::connect(s.addr).await;
    let mut two = ZeroWindow::connect(s.addr).await;
    assert_eq!(
        one.open(&path, 3).await,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(
        two.open(&path, 2).await,
        [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]
    );
    assert_eq!(
        metric(&s, "gateway_share_refused_total{scope=\"connection\"}").await,
        1.0
    );
    assert_eq!(
        metric(&s, "gateway_share_refused_total{scope=\"client\"}").await,
        1.0
    );
    // The client's slots come back when its connections go.
    drop(one);
    drop(two);
    assert!(s.wait_for_metric("gateway_requests_in_flight", 0.0).await);
    assert_eq!(h1_get(s.addr, &path).await.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_h2_reader_that_makes_progress_is_not_cut() {
    let stall = Duration::from_secs(2);
    let s = scenario(|c| c.write_stall_timeout = stall).await;
    let data = blob(512 << 10, 5);
    let id = s.store(&data).await;
    let path = format!("/v1/blobs/{id}");
    assert_eq!(h1_get(s.addr, &path).await.status, StatusCode::OK);

    // 16 KiB every 100 ms: the whole blob takes longer than the stall bound, but a piece of it
    // (64 KiB) moves well within every one.
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let (mut client, connection) = h2::client::Builder::new()
        .initial_window_size(16 << 10)
        .initial_connection_window_size(16 << 10)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let request = Request::get(format!("http://gateway{path}"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let started = Instant::now();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("the slow stream is not reset");
            received.extend_from_slice(&chunk);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
    })
    .await;
    assert!(read.is_ok(), "the slow read did not finish");
    assert_eq!(received.len(), data.len());
    assert!(received == data);
    assert!(
        started.elapsed() > stall,
        "not slow enough to show anything"
    );
    assert_eq!(
        metric(&s, "gateway_deadlines_total{kind=\"response_stall\"}").await,
        0.0
    );
    driver.abort();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h3_stream_that_is_not_read_is_reset_within_the_stall_bound() {
    let generated = gateway::tls::TlsIdentity::self_signed(&["localhost".into()]).unwrap();
    let cert = generated.identity.certificate().clone();
    let stall = Duration::from_millis(800);
    let config = GatewayConfig {
        h3_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        tls: Some(generated.identity),
        write_stall_timeout: stall,
        ..harness::config()
    };
    let sim = SimConfig {
        n_shards: 100,
        nodes: 4,
        ..SimConfig::default()
    };
    let s = Scenario::with(sim, config).await;
    // Far more than the client's stream receive window.
    let id = s.store(&blob(8 << 20, 6)).await;
    let path = format!("/v1/blobs/{id}");
    assert_eq!(h1_get(s.addr, &path).await.status, StatusCode::OK);
    let h3_addr = s.h3_addr().unwrap();
    let (endpoint, connection) = quic_connect(h3_addr, &cert).await;
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .expect("HTTP/3 connection");
    let driving = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let request = Request::get(format!("https://localhost:{}{path}", h3_addr.port()))
        .body(())
        .unwrap();
    let mut stream = send.send_request(request).await.unwrap();
    stream.finish().await.unwrap();
    let response = stream.recv_response().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let started = Instant::now();
    // Read nothing: the stream is reset and its slot freed.
    assert!(
        s.wait_for_metric("gateway_requests_in_flight", 0.0).await,
        "the unread stream still holds its slot"
    );
    assert!(started.elapsed() < stall * 4);
    assert_eq!(
        metric(&s, "gateway_deadlines_total{kind=\"response_stall\"}").await,
        1.0
    );
    let mut read = 0usize;
    let outcome = tokio::time::timeout(SERVED_WITHIN, async {
        loop {
            match stream.recv_data().await {
                Ok(Some(chunk)) => read += bytes::Buf::remaining(&chunk),
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .expect("the stream ends");
    assert!(
        outcome.is_err(),
        "a reset stream ended cleanly after {read} bytes"
    );
    assert!(read < 8 << 20);
    driving.abort();
    endpoint.close(0u32.into(), b"done");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_h2_over_tls_is_held_to_its_share_and_cut_at_the_stall_bound() {
    let generated = gateway::tls::TlsIdentity::self_signed(&["localhost".into()]).unwrap();
    let cert = generated.identity.certificate().clone();
    let stall = Duration::from_millis(800);
    let s = scenario(|c| {
        c.https_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.tls = Some(generated.identity);
        c.max_requests_per_connection = 4;
        c.write_stall_timeout = stall;
    })
    .await;
    let id = s.store(&blob(128 << 10, 7)).await;
    let path = format!("/v1/blobs/{id}");
    assert_eq!(h1_get(s.addr, &path).await.status, StatusCode::OK);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(gateway::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = TcpStream::connect(s.https_addr().unwrap()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let secure = connector.connect(name, tcp).await.expect("TLS handshake");
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake(secure)
        .await
        .expect("h2 over TLS");
    let mut attacker = ZeroWindow {
        client,
        driver: tokio::spawn(connection),
        held: Vec::new(),
    };
    let statuses = attacker.open(&path, 10).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        4,
        "{statuses:?}"
    );
    // A legitimate client is served meanwhile, and the stalled connection is cut.
    assert_eq!(h1_get(s.addr, &path).await.status, StatusCode::OK);
    assert!(
        attacker.closed_within(stall * 8).await,
        "the stalled TLS connection stays open"
    );
    assert!(s.wait_for_metric("gateway_requests_in_flight", 0.0).await);
    s.stop().await;
}

/// One HTTP/2 frame read off a raw connection: (type, flags, stream, payload); `None` when the
/// peer closed.
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], id, payload))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connections_that_stop_answering_pings_are_closed() {
    const PING: u8 = 0x6;
    const ACK: u8 = 0x1;
    // Every other bound far away, so only the keep-alive can close the connection.
    let s = scenario(|c| {
        c.header_read_timeout = Duration::from_secs(60);
        c.idle_timeout = Duration::from_secs(60);
        c.write_stall_timeout = Duration::from_secs(60);
        c.h2_keepalive_interval = Some(Duration::from_millis(200));
        c.h2_keepalive_timeout = Duration::from_millis(300);
    })
    .await;
    // h2c by prior knowledge: the preface, empty SETTINGS, then `GET /status` (HPACK: :method
    // GET, :scheme http, :path as a literal) on stream 1.
    let open = || async {
        let mut conn = TcpStream::connect(s.addr).await.unwrap();
        let mut hello =
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
        let block = [&[0x82u8, 0x86, 0x44, 7][..], b"/status"].concat();
        hello.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
        hello.extend_from_slice(&[0x1, 0x5, 0, 0, 0, 1]);
        hello.extend_from_slice(&block);
        conn.write_all(&hello).await.unwrap();
        conn
    };

    // A client that reads but never answers a PING: closed after interval + timeout.
    let mut mute = open().await;
    let started = Instant::now();
    let mut pinged = false;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some((kind, flags, _, _)) = read_frame(&mut mute).await {
            pinged |= kind == PING && flags & ACK == 0;
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a client that ignores PINGs stays connected"
    );
    assert!(
        pinged,
        "the gateway closed the connection without sending a PING"
    );

    // A client that answers them stays connected well past the same time.
    let mut alive = open().await;
    let mut pings = 0;
    let kept = tokio::time::timeout((started.elapsed() * 3).max(Duration::from_secs(2)), async {
        while let Some((kind, flags, _, payload)) = read_frame(&mut alive).await {
            if kind == PING && flags & ACK == 0 {
                pings += 1;
                let mut pong = vec![0, 0, 8, PING, ACK, 0, 0, 0, 0];
                pong.extend_from_slice(&payload);
                if alive.write_all(&pong).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        kept.is_err(),
        "the gateway closed a connection that answered its PINGs"
    );
    assert!(
        pings >= 2,
        "only {pings} PINGs in the time the mute client was closed in"
    );
    s.stop().await;
}
