//! Read-path benchmark: cold fill of a large blob through the gateway against its lower bound,
//! and cache-hit throughput at many connections. Everything runs in this process on loopback
//! (simulated nodes, gateway, load generator share the machine's cores).
//!
//! `cargo run --release -p walrus-gateway --example fillbench [-- FILL_MIB HIT_SECONDS]`
//! (defaults: 64 MiB, 10 s). Cold fill: n = 100 shards on 10 sim nodes with 20 ms added latency;
//! the bound is one 20 ms round trip plus the time to verify the `kp` systematic slivers (as
//! the codec bench measures it). Hits: a 1 MiB blob, 64 HTTP/1.1 connections.

mod common;

use bytes::Bytes;
use common::{large_blob_config as config, pseudo_random};
use gateway::Gateway;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage_sim::{NodeFaults, SimConfig, SimNetwork};

const LATENCY_MS: u64 = 20;
const FILL_RUNS: usize = 5;
const CONNECTIONS: usize = 64;

/// GET `path` on a fresh connection: time to the response headers, and the body length.
async fn get_len(addr: SocketAddr, path: &str) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut ttfb = Duration::ZERO;
    let len = read_len(&mut sender, addr, path, || ttfb = started.elapsed()).await?;
    Ok((ttfb, len))
}

async fn read_len(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
    on_headers: impl FnOnce(),
) -> anyhow::Result<u64> {
    let request = Request::get(format!("http://{addr}{path}"))
        .header("host", addr.to_string())
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    on_headers();
    anyhow::ensure!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    let mut body = response.into_body();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            len += data.len() as u64;
        }
    }
    Ok(len)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let fill_mib: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let hit_secs: u64 = args.next().map_or(Ok(10), |a| a.parse())?;

    // --- Cold fill ---
    let net = Arc::new(
        SimNetwork::start(SimConfig {
            n_shards: 100,
            nodes: 10,
            ..SimConfig::default()
        })
        .await?,
    );
    let data = pseudo_random(fill_mib << 20, 1);
    let len = data.len() as u64;
    let id = {
        let net = net.clone();
        let data = data.clone();
        tokio::task::spawn_blocking(move || net.store(&data)).await??
    };
    let encoding = *net.config();
    // The verification part of the bound, measured like the codec bench: verify the kp
    // systematic primary slivers in parallel.
    let encoded = tokio::task::spawn_blocking(move || codec::encode(&encoding, &data)).await??;
    let kp = encoding.n_primary_source_symbols();
    let slivers: Vec<codec::Sliver> = (0..kp)
        .map(|i| encoded.pair(i).expect("pair").0.clone().into_inner())
        .collect();
    let meta = encoded.metadata.clone();
    let verify = tokio::task::spawn_blocking(move || {
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let results = meta.verify_slivers(slivers.clone());
            assert!(results.iter().all(Result::is_ok));
            best = best.min(started.elapsed());
        }
        best
    })
    .await?;
    drop(encoded);
    for node in 0..10 {
        net.apply_faults(
            node,
            NodeFaults {
                latency_ms: LATENCY_MS,
                ..NodeFaults::default()
            },
        )
        .await?;
    }
    let bound = Duration::from_millis(LATENCY_MS) + verify;
    println!(
        "cold fill: {fill_mib} MiB, n = 100 on 10 sim nodes, {LATENCY_MS} ms latency per response"
    );
    println!(
        "  lower bound: {LATENCY_MS} ms round trip + {:.1} ms verifying {kp} slivers = {:.1} ms",
        verify.as_secs_f64() * 1e3,
        bound.as_secs_f64() * 1e3
    );
    // Reference: the same sliver requests, fetched raw (no verification, no gateway).
    let topology = gateway::nodes::Topology::new(net.committee().clone())?;
    let client = gateway::nodes::NodeClient::new();
    let mut transfer = Duration::MAX;
    for _ in 0..FILL_RUNS {
        let started = Instant::now();
        let fetches: Vec<_> = (0..kp)
            .map(|pair| {
                let (topology, client) = (topology.clone(), client.clone());
                tokio::spawn(async move {
                    client
                        .sliver(
                            &topology,
                            &id,
                            pair,
                            codec::SliverKind::Primary,
                            64 << 20,
                            Duration::from_secs(60),
                        )
                        .await
                })
            })
            .collect();
        for fetch in fetches {
            fetch.await??;
        }
        transfer = transfer.min(started.elapsed());
    }
    println!(
        "  reference: raw transfer of the {kp} slivers (no verification) {:.1} ms",
        transfer.as_secs_f64() * 1e3
    );
    let mut fills = Vec::new();
    for run in 0..FILL_RUNS {
        // A fresh gateway each run: its cache is empty.
        let gateway = Gateway::bind(config(), net.committee().clone())
            .await?
            .spawn();
        let started = Instant::now();
        let (ttfb, got) = get_len(gateway.addr(), &format!("/v1/blobs/{id}")).await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(got == len, "read {got} of {len} bytes");
        let metrics = gateway.api().filler().telemetry().render();
        let fill = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("gateway_fill_seconds_sum ")?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(f64::NAN);
        println!(
            "  run {run}: fill {:.1} ms ({:.2}x bound); client: first byte {:.1} ms, last byte {:.1} ms",
            fill * 1e3,
            fill / bound.as_secs_f64(),
            ttfb.as_secs_f64() * 1e3,
            elapsed.as_secs_f64() * 1e3,
        );
        fills.push(Duration::from_secs_f64(fill));
        gateway.shutdown().await?;
    }
    fills.sort();
    println!(
        "  median fill {:.1} ms = {:.2}x the bound",
        fills[FILL_RUNS / 2].as_secs_f64() * 1e3,
        fills[FILL_RUNS / 2].as_secs_f64() / bound.as_secs_f64()
    );
    if let Ok(net) = Arc::try_unwrap(net) {
        net.shutdown().await;
    }

    // --- Hits ---
    let net = SimNetwork::start(SimConfig::default()).await?;
    let hit_blob = pseudo_random(1 << 20, 1);
    let hit_id = net.store(&hit_blob)?;
    let gateway = Gateway::bind(config(), net.committee().clone())
        .await?
        .spawn();
    let addr = gateway.addr();
    let path = format!("/v1/blobs/{hit_id}");
    get_len(addr, &path).await?; // the fill; everything after is a hit
    let requests = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(hit_secs);
    let started = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (requests, bytes, path) = (requests.clone(), bytes.clone(), path.clone());
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                while Instant::now() < deadline {
                    let n = read_len(&mut sender, addr, &path, || ()).await?;
                    requests.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(n, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = requests.load(Ordering::Relaxed) as f64;
    let bytes = bytes.load(Ordering::Relaxed) as f64;
    println!("hits: 1 MiB blob, {CONNECTIONS} HTTP/1.1 connections, {hit_secs} s (load generator in-process)");
    println!(
        "  {:.0} req/s, {:.2} GB/s",
        requests / elapsed,
        bytes / elapsed / 1e9
    );
    gateway.shutdown().await?;
    net.shutdown().await;
    Ok(())
}
