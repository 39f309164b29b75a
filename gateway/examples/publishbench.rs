//! Publish benchmark (issue 6): time to store a 64 MiB blob through `PUT /v1/blobs` on a
//! committee of n = 100 shards on 10 simulated nodes (loopback, no added latency), against the
//! time the codec takes to encode the same blob, measured in the same process and run.
//!
//! `cargo run --release -p walrus-gateway --example publishbench [-- MIB RUNS]`
//! (defaults: 64 MiB, 5 runs). Each run publishes a different blob (the same bytes would be
//! "already certified"). The publish answer comes when nodes holding 2f+1 shards confirmed.

mod common;

use bytes::Bytes;
use common::{median, pseudo_random};
use gateway::{Gateway, GatewayConfig};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Instant;
use storage_sim::{SimConfig, SimNetwork};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let net = SimNetwork::start(SimConfig {
        n_shards: 100,
        nodes: 10,
        ..SimConfig::default()
    })
    .await?;
    let config = GatewayConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        max_upload: 1 << 30,
        memory_cache_bytes: 4 << 30,
        memory_max_object: 1 << 30,
        ..GatewayConfig::default()
    };
    let gateway = Gateway::bind(config, net.committee().clone())
        .await?
        .spawn();
    let codec_config = *net.config();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    let (mut encode_times, mut publish_times) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let blob = Bytes::from(pseudo_random(mib << 20, 1000 + run as u64));
        // Baseline: the codec alone, on the same blob, in this process.
        let data = blob.clone();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || codec::encode(&codec_config, &data)).await??;
        encode_times.push(started.elapsed());
        // The same blob through the gateway.
        let request = Request::put(format!("http://{}/v1/blobs", gateway.addr()))
            .body(Full::new(blob.clone()))?;
        let started = Instant::now();
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let elapsed = started.elapsed();
        anyhow::ensure!(
            status == 200,
            "publish failed: {status} {}",
            String::from_utf8_lossy(&body)
        );
        publish_times.push(elapsed);
        println!(
            "run {run}: encode {:.0} ms, publish {:.0} ms ({:.2}x)",
            encode_times[run].as_secs_f64() * 1e3,
            elapsed.as_secs_f64() * 1e3,
            elapsed.as_secs_f64() / encode_times[run].as_secs_f64()
        );
    }
    let (encode, publish) = (median(encode_times), median(publish_times));
    println!(
        "median of {runs}: encode {:.0} ms ({:.0} MiB/s), publish {:.0} ms ({:.0} MiB/s), ratio {:.2}x",
        encode.as_secs_f64() * 1e3,
        mib as f64 / encode.as_secs_f64(),
        publish.as_secs_f64() * 1e3,
        mib as f64 / publish.as_secs_f64(),
        publish.as_secs_f64() / encode.as_secs_f64()
    );
    gateway.shutdown().await?;
    net.shutdown().await;
    Ok(())
}
