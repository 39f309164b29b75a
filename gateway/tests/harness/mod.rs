//! Scenario harness shared by the integration tests: a simulated storage-node committee and a
//! gateway in front of it, both on `127.0.0.1:0`, plus a small HTTP client, so each test reads
//! as "store this, break that, read it back". Everything started here is stopped by
//! [`Scenario::stop`].

#![allow(dead_code)]

pub mod chain_scene;
pub mod h3_client;

use bytes::Bytes;
use codec::BlobId;
use gateway::{Gateway, GatewayConfig, RunningGateway};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use storage_sim::{NodeCounters, NodeFaults, SimConfig, SimNetwork};

/// Guard against a hung test: no request here should take anywhere near this long.
const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

/// Gateway settings for tests: port 0, short timeouts, and hedging off unless a test wants it
/// (so request counts are exact).
pub fn config() -> GatewayConfig {
    GatewayConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        metadata_timeout: Duration::from_secs(5),
        sliver_timeout: Duration::from_secs(5),
        hedge_after: Duration::from_secs(600),
        memory_cache_bytes: 256 << 20,
        retry_after_secs: 1,
        shutdown_grace: Duration::from_secs(2),
        ..GatewayConfig::default()
    }
}

pub struct Scenario {
    pub net: Arc<SimNetwork>,
    gateway: Option<RunningGateway>,
    client: Client<HttpConnector, Empty<Bytes>>,
    pub addr: SocketAddr,
}

/// A response, read to the end (or to where the server aborted it).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// `Err` when the body was cut off.
    pub body: Result<Bytes, String>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn bytes(&self) -> &Bytes {
        match &self.body {
            Ok(b) => b,
            Err(e) => panic!("body of a {} response was aborted: {e}", self.status),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.bytes()).expect("a JSON body")
    }

    /// The reason code of a Walrus error envelope.
    pub fn reason(&self) -> String {
        self.json()["error"]["details"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Scenario {
    /// `n_shards` shards on `nodes` nodes (round-robin: shard `s` on node `s % nodes`).
    pub async fn start(n_shards: u16, nodes: usize) -> Self {
        Self::with(
            SimConfig {
                n_shards,
                nodes,
                ..SimConfig::default()
            },
            config(),
        )
        .await
    }

    pub async fn with(sim: SimConfig, config: GatewayConfig) -> Self {
        let net = Arc::new(SimNetwork::start(sim).await.expect("sim network starts"));
        let gateway = Gateway::bind(config, net.committee().clone())
            .await
            .expect("gateway binds")
            .spawn();
        let addr = gateway.addr();
        Self {
            net,
            gateway: Some(gateway),
            client: Client::builder(TokioExecutor::new()).build_http(),
            addr,
        }
    }

    /// Store a blob in every node directly; returns its Blob ID.
    pub async fn store(&self, blob: &[u8]) -> BlobId {
        store_on(&self.net, blob).await
    }

    pub async fn faults(&self, node: usize, faults: NodeFaults) {
        self.net
            .apply_faults(node, faults)
            .await
            .expect("faults apply");
    }

    pub fn counters(&self) -> NodeCounters {
        self.net.total_counters()
    }

    /// Shards `0..n` held by node `node`.
    pub fn shards_of(&self, node: usize) -> Vec<u16> {
        self.net.committee().nodes[node].shards.clone()
    }

    pub fn node_name(&self, node: usize) -> String {
        self.net.committee().nodes[node].name.clone()
    }

    /// The node holding sliver pair `pair` of `id`.
    pub fn node_for_pair(&self, id: &BlobId, pair: u16) -> usize {
        let n = self.net.committee().n_shards;
        let shard = id.shard_for_pair(pair, n);
        self.net
            .committee()
            .nodes
            .iter()
            .position(|node| node.shards.contains(&shard))
            .expect("every shard has a node")
    }

    /// The HTTPS listener's address, when the config enabled it.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.gateway.as_ref().and_then(RunningGateway::https_addr)
    }

    /// The HTTP/3 listener's (UDP) address, when the config enabled it.
    pub fn h3_addr(&self) -> Option<SocketAddr> {
        self.gateway.as_ref().and_then(RunningGateway::h3_addr)
    }

    /// The running gateway's request handler (engine statistics, the filler).
    pub fn api(&self) -> &Arc<gateway::api::Api> {
        self.gateway.as_ref().expect("gateway running").api()
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, &[]).await
    }

    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        send(&self.client, self.addr, method, path, headers).await
    }

    /// A new client (its own connection pool), e.g. to speak h2c.
    pub fn h2_client(&self) -> Client<HttpConnector, Empty<Bytes>> {
        Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http()
    }

    /// The value of a metric line `name` (with its labels, exactly as rendered), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics").await;
        let text = String::from_utf8(text.bytes().to_vec()).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// The whole `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        String::from_utf8(self.get("/metrics").await.bytes().to_vec()).unwrap()
    }

    /// Shut the gateway down (draining in-flight requests), leaving the nodes running.
    pub async fn stop_gateway(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await.expect("gateway stops");
        }
    }

    /// Poll `series` (boundedly) until it reads `value`; false if it never did.
    pub async fn wait_for_metric(&self, series: &str, value: f64) -> bool {
        for _ in 0..500 {
            if self.metric(series).await == Some(value) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Replace the gateway with a new one built from `config` (same nodes), e.g. to restart
    /// on the same cache directory.
    pub async fn restart_gateway(&mut self, config: GatewayConfig) {
        self.stop_gateway().await;
        let gateway = Gateway::bind(config, self.net.committee().clone())
            .await
            .expect("gateway binds")
            .spawn();
        self.addr = gateway.addr();
        self.gateway = Some(gateway);
    }

    /// A request with a body (admin and publish routes).
    pub async fn send_body(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        send_body(self.addr, method, path, headers, body).await
    }

    pub async fn stop(mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await.expect("gateway stops");
        }
        if let Ok(net) = Arc::try_unwrap(self.net) {
            net.shutdown().await;
        }
    }
}

/// A request with a body to the server at `addr`, on a new connection.
pub async fn send_body(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let request = builder(addr, method, path, headers)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    exchange(&client, request).await
}

pub async fn send(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let request = builder(addr, method, path, headers)
        .body(Empty::new())
        .unwrap();
    exchange(client, request).await
}

fn builder(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> http::request::Builder {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
}

/// Send `request` and read the whole answer (or where it was cut off), within the deadline.
async fn exchange<B>(client: &Client<HttpConnector, B>, request: Request<B>) -> Reply
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let exchange = async {
        let response = client.request(request).await.expect("the gateway answers");
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| e.to_string());
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(REQUEST_DEADLINE, exchange)
        .await
        .expect("request finished before the test deadline")
}

/// A `walrus-gateway serve` process (its stdout piped), killed by its PID when dropped.
pub struct Served {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    /// `XDG_CACHE_HOME` of the process: its default disk tier lands here, never in the real
    /// home. Deleted when dropped (after the process is killed).
    pub cache_home: tempfile::TempDir,
}

impl Served {
    /// `walrus-gateway serve ARGS`.
    pub fn start(args: &[&str]) -> Self {
        let cache_home = tempfile::tempdir().expect("a temporary cache home");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
            .arg("serve")
            .args(args)
            .env("XDG_CACHE_HOME", cache_home.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the binary runs");
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdout,
            cache_home,
        }
    }

    /// The next line of stdout.
    pub fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("stdout is readable");
        assert!(!line.is_empty(), "serve exited early");
        line.trim_end().to_owned()
    }

    /// The rest of the first line of stdout that starts with `prefix` (earlier lines skipped).
    pub fn line_after(&mut self, prefix: &str) -> String {
        loop {
            if let Some(rest) = self.line().strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic pseudo-random bytes.
pub fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

impl Scenario {
    /// The `/metrics`-only listener's address (`metrics_listen`), when it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.gateway
            .as_ref()
            .expect("gateway running")
            .metrics_addr()
    }
}

impl Served {
    /// The process ID of the `serve` process (for /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Run `futures` concurrently on this task and collect their outputs in order.
pub async fn join_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future,
{
    // The futures borrow the client, so they cannot be spawned; poll them together instead.
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

/// Store `blob` on the simulated network `net` (off the async threads: encoding is CPU work);
/// returns its Blob ID.
pub async fn store_on(net: &Arc<SimNetwork>, blob: &[u8]) -> BlobId {
    let net = net.clone();
    let blob = blob.to_vec();
    tokio::task::spawn_blocking(move || net.store(&blob))
        .await
        .unwrap()
        .expect("sim stores the blob")
}

/// Where the disk tier keeps blob `id`'s file under cache directory `dir`.
pub fn blob_file(dir: &std::path::Path, id: &BlobId) -> std::path::PathBuf {
    let name = id.to_string();
    dir.join("blobs").join(&name[..2]).join(name)
}

/// Copy the blob files of `ids` from the cache directory `tests/fixtures/{fixture}` (written
/// by an earlier release) into the cache directory `dir`; returns the fixture's directory.
pub fn copy_fixture_blobs<'a>(
    fixture: &str,
    ids: impl IntoIterator<Item = &'a str>,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    for text in ids {
        let id: BlobId = text.parse().unwrap();
        let to = blob_file(dir, &id);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(blob_file(&from, &id), &to).unwrap();
    }
    from
}

/// `GET /admin/cache` with the admin `token`, as JSON.
pub async fn admin_cache(s: &Scenario, token: &str) -> serde_json::Value {
    let auth = format!("Bearer {token}");
    s.request(Method::GET, "/admin/cache", &[("authorization", &auth)])
        .await
        .json()
}

/// Wait (boundedly) until a (re)started gateway has indexed its disk tier.
pub async fn wait_disk_indexed(s: &Scenario, token: &str) {
    for _ in 0..1000 {
        if admin_cache(s, token).await["disk"]["index_ready"] == true {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("disk index never became ready");
}
