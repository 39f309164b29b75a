//! Servers the load generator is tested against, all on `127.0.0.1:0` and stopped at the end:
//! the real gateway in front of a simulated committee ([`GatewayScene`]), and a tiny in-test
//! aggregator ([`Origin`]) that also implements the publisher's `PUT /v1/blobs` and can be
//! told to serve wrong bytes. [`GatewayScene::start_tls`] adds the gateway's HTTPS and HTTP/3
//! listeners with a self-signed certificate.

#![allow(dead_code)]

use bytes::Bytes;
use codec::BlobId;
use gateway::tls::TlsIdentity;
use gateway::{Gateway, GatewayConfig, RunningGateway};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use loadtest::client::Target;
use loadtest::config::{PopulationSpec, RunConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage_sim::{SimConfig, SimNetwork};
use tokio::net::TcpListener;

/// Shards of every committee in these tests.
pub const N_SHARDS: u16 = 10;
/// The admin token of [`GatewayScene`]'s gateway.
pub const ADMIN_TOKEN: &str = "loadtest-admin";

/// Run the `walrus-loadtest` binary with `args` (off the reactor) and collect its output.
pub async fn run_binary(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let binary = env!("CARGO_BIN_EXE_walrus-loadtest");
    tokio::task::spawn_blocking(move || std::process::Command::new(binary).args(&args).output())
        .await
        .unwrap()
        .expect("the binary runs")
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

/// A run configuration with bounds suited to tests: a request count, a generous deadline
/// that only matters if something hangs, and no progress line.
pub fn test_config(target: &str, population: PopulationSpec, requests: u64) -> RunConfig {
    let mut config = RunConfig::new(Target::parse(target, false).unwrap(), population);
    config.max_requests = Some(requests);
    config.duration = Duration::from_secs(120);
    config.timeout = Duration::from_secs(30);
    config.n_shards = Some(N_SHARDS);
    config.progress = false;
    config
}

/// A simulated committee with blobs stored, and the gateway in front of it.
pub struct GatewayScene {
    pub net: Arc<SimNetwork>,
    gateway: Option<RunningGateway>,
    pub url: String,
    /// `(Blob ID, size)` of the stored blobs.
    pub blobs: Vec<(BlobId, usize)>,
    dir: tempfile::TempDir,
    /// With [`GatewayScene::start_tls`]: the HTTPS listener's URL, the HTTP/3 listener's UDP
    /// port, and the self-signed certificate's PEM file.
    pub https_url: Option<String>,
    pub h3_port: Option<u16>,
    pub cacert: Option<PathBuf>,
}

impl GatewayScene {
    pub async fn start(sizes: &[usize]) -> Self {
        Self::start_with(sizes, false).await
    }

    /// Also serve HTTPS (HTTP/1.1 and HTTP/2) and HTTP/3 with a fresh self-signed
    /// certificate for `localhost` and `127.0.0.1`.
    pub async fn start_tls(sizes: &[usize]) -> Self {
        Self::start_with(sizes, true).await
    }

    async fn start_with(sizes: &[usize], tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let net = Arc::new(
            SimNetwork::start(SimConfig {
                n_shards: N_SHARDS,
                nodes: 4,
                ..SimConfig::default()
            })
            .await
            .expect("sim starts"),
        );
        let mut blobs = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let data = blob(len, i as u64 + 1);
            let n = net.clone();
            let id = tokio::task::spawn_blocking(move || n.store(&data))
                .await
                .unwrap()
                .expect("sim stores");
            blobs.push((id, len));
        }
        let mut config = GatewayConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            metadata_timeout: Duration::from_secs(5),
            sliver_timeout: Duration::from_secs(5),
            hedge_after: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(2),
            admin_token: Some(ADMIN_TOKEN.into()),
            ..GatewayConfig::default()
        };
        let mut cacert = None;
        if tls {
            let generated = TlsIdentity::self_signed(&["localhost".into(), "127.0.0.1".into()])
                .expect("a certificate");
            let pem = dir.path().join("gateway.pem");
            std::fs::write(&pem, &generated.cert_pem).unwrap();
            cacert = Some(pem);
            config.https_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            config.h3_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            config.tls = Some(generated.identity);
        }
        let gateway = Gateway::bind(config, net.committee().clone())
            .await
            .expect("gateway binds")
            .spawn();
        let url = format!("http://{}", gateway.addr());
        Self {
            net,
            https_url: gateway.https_addr().map(|a| format!("https://{a}")),
            h3_port: gateway.h3_addr().map(|a| a.port()),
            cacert,
            gateway: Some(gateway),
            url,
            blobs,
            dir,
        }
    }

    /// A blob list file; with sizes or without (then they are learned).
    pub fn list(&self, with_sizes: bool) -> PathBuf {
        let path = self.dir.path().join(format!("blobs-{with_sizes}.txt"));
        let text: String = self
            .blobs
            .iter()
            .map(|(id, len)| {
                if with_sizes {
                    format!("{id} {len}\n")
                } else {
                    format!("{id}\n")
                }
            })
            .collect();
        std::fs::write(&path, format!("# test blobs\n{text}")).unwrap();
        path
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// URL of a storage node (its admin endpoint reaches every node).
    pub fn sim_admin(&self) -> String {
        self.node_url(1)
    }

    /// URL of storage node `index`.
    pub fn node_url(&self, index: usize) -> String {
        self.net.committee().nodes[index].url.clone()
    }

    pub async fn stop(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await.expect("gateway stops");
        }
        if let Ok(net) = Arc::try_unwrap(self.net) {
            net.shutdown().await;
        }
    }
}

/// A minimal aggregator + publisher: `PUT /v1/blobs`, `GET`/`HEAD /v1/blobs/{id}` with single
/// ranges, `GET /status` answering `{"n_shards":10}`, and `POST /v1/inference/{model}` echoing
/// its JSON input. Blob IDs are the real ones.
pub struct Origin {
    pub url: String,
    /// Flip one byte of every full read.
    pub corrupt: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

type Store = Arc<Mutex<HashMap<String, Bytes>>>;

impl Origin {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let store: Store = Arc::default();
        let corrupt = Arc::new(AtomicBool::new(false));
        let flag = corrupt.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let store = store.clone();
                let flag = flag.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let store = store.clone();
                        let corrupt = flag.load(Ordering::Relaxed);
                        async move {
                            Ok::<_, std::convert::Infallible>(handle(request, store, corrupt).await)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, corrupt, task }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn handle(request: Request<Incoming>, store: Store, corrupt: bool) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    if path == "/status" {
        return reply(StatusCode::OK, r#"{"n_shards":10}"#);
    }
    if let Some(model) = path.strip_prefix("/v1/inference/") {
        // Echo the JSON input under the model's name; anything else is a 400.
        let body = request.into_body().collect().await.unwrap().to_bytes();
        return match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(input) => reply(
                StatusCode::OK,
                serde_json::json!({ "model": model, "output": input }).to_string(),
            ),
            Err(_) => reply(StatusCode::BAD_REQUEST, "not JSON"),
        };
    }
    if path == "/v1/blobs" && method == Method::PUT {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let bytes = body.clone();
        let id = tokio::task::spawn_blocking(move || codec::blob_id(N_SHARDS, &bytes))
            .await
            .unwrap()
            .unwrap()
            .to_string();
        let previous = store.lock().unwrap().insert(id.clone(), body.clone());
        let json = if previous.is_some() {
            format!(r#"{{"alreadyCertified":{{"blobId":"{id}","endEpoch":53}}}}"#)
        } else {
            format!(
                r#"{{"newlyCreated":{{"blobObject":{{"id":"0x1","blobId":"{id}","size":{}}},"cost":1}}}}"#,
                body.len()
            )
        };
        return reply(StatusCode::OK, json);
    }
    let Some(id) = path.strip_prefix("/v1/blobs/") else {
        return reply(StatusCode::NOT_FOUND, "no such route");
    };
    let Some(bytes) = store.lock().unwrap().get(id).cloned() else {
        return reply(StatusCode::NOT_FOUND, "no such blob");
    };
    let len = bytes.len();
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    let (status, body) = match range {
        Some((start, end)) if start <= end && end < len => {
            (StatusCode::PARTIAL_CONTENT, bytes.slice(start..=end))
        }
        Some(_) => return reply(StatusCode::RANGE_NOT_SATISFIABLE, ""),
        None if corrupt && len > 0 => {
            let mut wrong = bytes.to_vec();
            wrong[len / 2] ^= 0x40;
            (StatusCode::OK, Bytes::from(wrong))
        }
        None => (StatusCode::OK, bytes),
    };
    let mut response = reply(
        status,
        if method == Method::HEAD {
            Bytes::new()
        } else {
            body.clone()
        },
    );
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, body.len().into());
    if let Some((start, end)) = range {
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{len}").parse().unwrap(),
        );
    }
    response
}
