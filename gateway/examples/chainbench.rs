//! Real-network read path costs, against walrus-sim standing in for the network (all in this
//! process, on loopback):
//!
//! 1. Cold fill of a large blob at n = 1000 over HTTPS/HTTP/2 with pinned keys, against the same
//!    fill over plain HTTP, alternating the two in one run (fresh gateway, so a cold cache, each
//!    time). Medians and their ratio are printed.
//! 2. A committee read of 100 nodes from the simulated Sui full node: gRPC calls per read, and
//!    the reader's own CPU time (thread CPU clock of the thread that runs it; the full node runs
//!    on other threads).
//!
//! `cargo run --release -p walrus-gateway --example chainbench [-- FILL_MIB RUNS]`
//! (defaults: 64 MiB, 5 runs of each transport).

mod common;

use chain::network::NetworkConfig;
use common::{large_blob_config as config, median, pseudo_random};
use gateway::chain_reader::ChainReader;
use gateway::Gateway;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage_sim::committee::Committee;
use storage_sim::sui::SuiSim;
use storage_sim::{SimConfig, SimNetwork};

/// One cold fill through a fresh gateway: wall time of `GET /v1/blobs/{id}` to its last byte.
async fn cold_fill(committee: Committee, path: &str, len: usize) -> anyhow::Result<Duration> {
    let gateway = Gateway::bind(config(), committee).await?.spawn();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let started = Instant::now();
    let response = client
        .get(format!("http://{}{path}", gateway.addr()).parse()?)
        .await?;
    anyhow::ensure!(response.status() == 200, "status {}", response.status());
    let body = response.into_body().collect().await?.to_bytes();
    let elapsed = started.elapsed();
    anyhow::ensure!(body.len() == len, "read {} of {len} bytes", body.len());
    gateway.shutdown().await?;
    Ok(elapsed)
}

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let fill_mib: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(5), |a| a.parse())?;
    let servers = tokio::runtime::Runtime::new()?;

    // --- 1. Cold fill, HTTPS (pinned) against plain HTTP ---
    let nets = servers.block_on(async {
        let plain = SimNetwork::start(SimConfig {
            n_shards: 1000,
            nodes: 100,
            ..SimConfig::default()
        })
        .await?;
        let tls = SimNetwork::start(SimConfig {
            n_shards: 1000,
            nodes: 100,
            tls: true,
            ..SimConfig::default()
        })
        .await?;
        anyhow::Ok((Arc::new(plain), Arc::new(tls)))
    })?;
    let (plain, tls) = nets;
    let data = Arc::new(pseudo_random(fill_mib << 20, 1));
    let id = plain.store(&data)?;
    anyhow::ensure!(tls.store(&data)? == id);
    let path = format!("/v1/blobs/{id}");
    println!(
        "cold fill: {fill_mib} MiB at n = 1000 on 100 sim nodes, {runs} runs each, alternating"
    );
    let (mut http, mut https) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let a = servers.block_on(cold_fill(plain.committee().clone(), &path, data.len()))?;
        let b = servers.block_on(cold_fill(tls.committee().clone(), &path, data.len()))?;
        println!(
            "  run {run}: http {:.1} ms, https (pinned, h2) {:.1} ms",
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3
        );
        http.push(a);
        https.push(b);
    }
    let (http, https) = (median(http), median(https));
    println!(
        "  median: http {:.1} ms, https {:.1} ms, ratio {:.2}",
        http.as_secs_f64() * 1e3,
        https.as_secs_f64() * 1e3,
        https.as_secs_f64() / http.as_secs_f64()
    );

    // --- 2. Committee read of 100 nodes ---
    let sui = servers.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        anyhow::Ok(SuiSim::start(listener, tls.chain_control()).await?)
    })?;
    let network = NetworkConfig {
        name: "walrus-sim".into(),
        system_object: sui.system_object(),
        staking_object: sui.staking_object(),
        rpc_urls: vec![sui.url()],
        chain_id: None,
        package: None,
    };
    // The reader runs on this thread alone, so this thread's CPU clock is its cost.
    let reader_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reader = ChainReader::new(network, Duration::from_secs(10));
    let (committee, _) = reader_rt.block_on(reader.read())?;
    const READS: u32 = 50;
    let (mut rpcs, cpu0, wall0) = (0, thread_cpu(), Instant::now());
    for _ in 0..READS {
        let (c, cost) = reader_rt.block_on(reader.read())?;
        anyhow::ensure!(c == committee);
        rpcs += cost.rpcs;
    }
    let (cpu, wall) = (thread_cpu() - cpu0, wall0.elapsed());
    let nodes = committee.current.len();
    println!(
        "committee read: {nodes} nodes, {} gRPC calls per read (bound 3 + ceil({nodes}/50) = {}), \
         reader CPU {:.2} ms per read, wall {:.2} ms per read ({READS} reads)",
        rpcs / READS,
        3 + nodes.div_ceil(50),
        cpu.as_secs_f64() * 1e3 / f64::from(READS),
        wall.as_secs_f64() * 1e3 / f64::from(READS),
    );
    servers.block_on(sui.shutdown());
    Ok(())
}
