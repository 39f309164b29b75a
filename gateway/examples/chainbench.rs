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
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage_sim::committee::Committee;
use storage_sim::sui::SuiSim;
use storage_sim::{SimConfig, SimNetwork};

/// `GET {path}` through the gateway at `addr`: wall time to the last byte.
async fn read(addr: SocketAddr, path: &str, len: usize) -> anyhow::Result<Duration> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let started = Instant::now();
    let response = client.get(format!("http://{addr}{path}").parse()?).await?;
    anyhow::ensure!(response.status() == 200, "status {}", response.status());
    let body = response.into_body().collect().await?.to_bytes();
    let elapsed = started.elapsed();
    anyhow::ensure!(body.len() == len, "read {} of {len} bytes", body.len());
    Ok(elapsed)
}

/// Cold fills of `id` through a gateway on `committee`: how long the gateway took to start
/// (which includes opening its HTTPS node connections), its first fill, then `runs` more with
/// the blob purged from the cache before each (its verified metadata stays cached, for both
/// transports alike).
async fn fills(
    committee: Committee,
    id: codec::BlobId,
    len: usize,
    runs: usize,
) -> anyhow::Result<(Duration, Duration, Vec<Duration>)> {
    let started = Instant::now();
    let gateway = Gateway::bind(config(), committee).await?.spawn();
    let bind = started.elapsed();
    let path = format!("/v1/blobs/{id}");
    let first = read(gateway.addr(), &path, len).await?;
    let mut warm = Vec::with_capacity(runs);
    for _ in 0..runs {
        gateway.api().filler().cache().purge(&id).await?;
        warm.push(read(gateway.addr(), &path, len).await?);
    }
    gateway.shutdown().await?;
    Ok((bind, first, warm))
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
    println!("cold fill: {fill_mib} MiB at n = 1000 on 100 sim nodes; {runs} rounds, alternating");
    let (mut new_http, mut new_https, mut warm_http, mut warm_https) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..runs {
        let (bind_a, a, warm_a) = servers.block_on(fills(plain.committee(), id, data.len(), 3))?;
        let (bind_b, b, warm_b) = servers.block_on(fills(tls.committee(), id, data.len(), 3))?;
        let ms = |d: &Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
        println!(
            "  round {round}: start http {} / https {} ms; first fill http {} / https {} ms; later fills http {:?} / https {:?} ms",
            ms(&bind_a),
            ms(&bind_b),
            ms(&a),
            ms(&b),
            warm_a.iter().map(ms).collect::<Vec<_>>(),
            warm_b.iter().map(ms).collect::<Vec<_>>(),
        );
        new_http.push(a);
        new_https.push(b);
        warm_http.extend(warm_a);
        warm_https.extend(warm_b);
    }
    for (what, http, https) in [
        ("first fill of a new gateway", new_http, new_https),
        ("later fills", warm_http, warm_https),
    ] {
        let (http, https) = (median(http), median(https));
        println!(
            "  median, {what}: http {:.1} ms, https (pinned, h2) {:.1} ms, ratio {:.2}",
            http.as_secs_f64() * 1e3,
            https.as_secs_f64() * 1e3,
            https.as_secs_f64() / http.as_secs_f64()
        );
    }

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
