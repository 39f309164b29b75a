//! Inference benchmark (issue 7): real ONNX models put on simulated storage nodes and run by
//! Blob ID through a gateway, against tract called in-process through the same engine.
//!
//! ```text
//! inference/bench/fetch-models.sh                      # models + request bodies, once
//! python3 inference/bench/ort_bench.py --json target/bench-models/ort.json   # optional context
//! cargo run --release -p walrus-gateway --example inferbench [-- DIR [RUNS [COLD_RUNS [NAME..]]]]
//! ```
//!
//! DIR (default `target/bench-models`) holds `NAME.onnx` and `NAME.json` (a request body). For
//! each model:
//!
//! * Cold: COLD_RUNS (default 3) fresh gateways on the same committee (n = 100 on 10 sim nodes,
//!   loopback, no added latency), each answering one first `POST /v1/inference/{id}`. The
//!   client's time is split with the gateway's own metrics: the model blob's fill
//!   (`gateway_fill_seconds`), the ONNX parse (`walrus_inference_model_parse_seconds`), the plan
//!   build (`walrus_inference_plan_build_seconds`) and the run (`walrus_inference_run_seconds`,
//!   which includes converting and hashing the tensors); what remains is "other" (request parse,
//!   signing, answer encoding, HTTP, and waits between the steps). Medians per part.
//! * Warm: RUNS (default 200) requests over one HTTP/1.1 keep-alive loopback connection, against
//!   RUNS calls of `Engine::run` (the engine with `StaticModels`: input checks, tract's run on the
//!   blocking pool, output conversion, BLAKE3 of inputs and outputs; no JSON, no signing, no
//!   HTTP) on the same model and parsed input, interleaved in blocks of 10 so load drift hits
//!   both alike. Overhead = gateway p50 − direct p50. Goal: <= 10 % or <= 0.2 ms, whichever is
//!   larger. The gateway-side pieces of the overhead (request JSON parse, signing, answer JSON
//!   encode) are timed in-process as well.
//! * Warm, base64: the same inputs rewritten with `data_b64` and `"output_encoding": "base64"`
//!   (derived from NAME.json in-process; same tensors, so the same plan and proof hashes), RUNS
//!   more requests on the same connection, interleaved in the same blocks as the other two.
//!
//! With DIR/ort.json (written by `ort_bench.py --json`) onnxruntime's p50 is printed beside.
//! Everything shares this machine's cores: gateway, sim nodes and load generator.

use bytes::Bytes;
use codec::BlobId;
use gateway::{Gateway, GatewayConfig};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use inference::{Encoded, Engine, EngineConfig, Identity, StaticModels, TensorEncoding};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage_sim::{SimConfig, SimNetwork};

const ADMIN: &str = "inferbench";
const WARMUP: usize = 5;
const BLOCK: usize = 10;

fn config() -> GatewayConfig {
    GatewayConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_token: Some(ADMIN.into()),
        ..GatewayConfig::default()
    }
}

struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Client {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Client { sender, addr })
    }

    /// POST `body` to `path`; the whole answer, which must be 200.
    async fn post(&mut self, path: &str, body: Bytes) -> anyhow::Result<Bytes> {
        let request = Request::post(format!("http://{}{path}", self.addr))
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(
            status.is_success(),
            "{path}: status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        );
        Ok(body)
    }
}

/// `name_sum` (summed over label sets) from a Prometheus text rendering, in seconds.
fn metric_sum(rendered: &str, name: &str) -> f64 {
    let prefix = format!("{name}_sum");
    rendered
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

struct Cold {
    total: f64,
    fill: f64,
    parse: f64,
    build: f64,
    run: f64,
    /// What the parts leave of the client's time: request parse, signing, answer encoding, HTTP.
    other: f64,
}

struct Warm {
    gateway: Vec<Duration>,
    direct: Vec<Duration>,
    request_parse: f64,
    sign: f64,
    encode: f64,
    answer_bytes: usize,
    /// The same, with `data_b64` in and out.
    b64: WarmBase64,
}

struct WarmBase64 {
    gateway: Vec<Duration>,
    request_parse: f64,
    encode: f64,
    request_bytes: usize,
    answer_bytes: usize,
}

/// The answer as the handler writes it with `"output_encoding": "base64"`: the outputs through
/// `Encoded::write_json`, the rest through serde_json.
fn base64_answer(response: &inference::InferenceResponse) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"model\":");
    serde_json::to_writer(&mut out, &response.model)?;
    out.extend_from_slice(b",\"outputs\":");
    Encoded(&response.outputs, TensorEncoding::Base64).write_json(&mut out)?;
    out.extend_from_slice(b",\"proof\":");
    serde_json::to_writer(&mut out, &response.proof)?;
    out.push(b'}');
    Ok(out)
}

/// onnxruntime's p50 (1 intra-op thread, default) for `name`, from `ort_bench.py --json`.
fn ort_figures(dir: &Path, name: &str) -> Option<(String, f64, f64)> {
    let text = std::fs::read_to_string(dir.join("ort.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let m = &v["models"][name];
    Some((
        v["onnxruntime"].as_str()?.to_string(),
        m["threads1"]["p50_ms"].as_f64()?,
        m["default"]["p50_ms"].as_f64()?,
    ))
}

async fn cold(net: &SimNetwork, id: BlobId, body: &Bytes, runs: usize) -> anyhow::Result<Cold> {
    let mut all: Vec<Cold> = Vec::new();
    for _ in 0..runs {
        // A fresh gateway: nothing cached, no plan.
        let gateway = Gateway::bind(config(), net.committee().clone())
            .await?
            .spawn();
        let mut client = Client::connect(gateway.addr()).await?;
        let started = Instant::now();
        client
            .post(&format!("/v1/inference/{id}"), body.clone())
            .await?;
        let total = ms(started.elapsed());
        let metrics = gateway.api().filler().telemetry().render();
        let part = |name| metric_sum(&metrics, name) * 1e3;
        let c = Cold {
            total,
            fill: part("gateway_fill_seconds"),
            parse: part("walrus_inference_model_parse_seconds"),
            build: part("walrus_inference_plan_build_seconds"),
            run: part("walrus_inference_run_seconds"),
            other: 0.0,
        };
        all.push(Cold {
            other: c.total - c.fill - c.parse - c.build - c.run,
            ..c
        });
        drop(client);
        gateway.shutdown().await?;
    }
    let med = |f: fn(&Cold) -> f64| median(all.iter().map(f).collect());
    Ok(Cold {
        total: med(|c| c.total),
        fill: med(|c| c.fill),
        parse: med(|c| c.parse),
        build: med(|c| c.build),
        run: med(|c| c.run),
        other: med(|c| c.other),
    })
}

async fn warm(
    net: &SimNetwork,
    id: BlobId,
    body: &Bytes,
    body_b64: &Bytes,
    model: &Bytes,
    runs: usize,
) -> anyhow::Result<Warm> {
    let gateway = Gateway::bind(config(), net.committee().clone())
        .await?
        .spawn();
    let mut client = Client::connect(gateway.addr()).await?;
    // Build and warm the plan for this request's signature ahead of traffic.
    client
        .post(&format!("/v1/models/{id}/warm"), body.clone())
        .await?;

    let models = StaticModels::new();
    models.insert(id, model.clone());
    let engine = Engine::new(EngineConfig::default(), Arc::new(models));
    let request = engine.parse_request(body)?;
    engine.warm(id, Some(request.clone())).await?;

    let path = format!("/v1/inference/{id}");
    for _ in 0..WARMUP {
        client.post(&path, body.clone()).await?;
        client.post(&path, body_b64.clone()).await?;
        engine.run(id, request.clone()).await?;
    }
    let (mut through_gateway, mut through_gateway_b64, mut direct) =
        (Vec::new(), Vec::new(), Vec::new());
    while through_gateway.len() < runs {
        let n = BLOCK.min(runs - through_gateway.len());
        for _ in 0..n {
            let started = Instant::now();
            client.post(&path, body.clone()).await?;
            through_gateway.push(started.elapsed());
        }
        for _ in 0..n {
            let started = Instant::now();
            client.post(&path, body_b64.clone()).await?;
            through_gateway_b64.push(started.elapsed());
        }
        for _ in 0..n {
            let request = request.clone();
            let started = Instant::now();
            engine.run(id, request).await?;
            direct.push(started.elapsed());
        }
    }
    through_gateway.sort();
    through_gateway_b64.sort();
    direct.sort();

    // The gateway's own work around a run, piece by piece (medians of 20).
    let identity = Identity::generate()?;
    let (mut parse, mut sign, mut encode) = (vec![], vec![], vec![]);
    let (mut parse_b64, mut encode_b64) = (vec![], vec![]);
    let (mut answer_bytes, mut answer_bytes_b64) = (0, 0);
    for _ in 0..20 {
        let started = Instant::now();
        let parsed_b64 = engine.parse_request(body_b64)?;
        parse_b64.push(ms(started.elapsed()));
        let started = Instant::now();
        let parsed = engine.parse_request(body)?;
        parse.push(ms(started.elapsed()));
        anyhow::ensure!(
            parsed_b64.inputs == parsed.inputs,
            "the base64 body reads other tensors than the JSON one"
        );
        let outcome = engine.run(id, parsed).await?;
        let started = Instant::now();
        let proof = identity.sign_outcome(&outcome, engine.tag());
        sign.push(ms(started.elapsed()));
        let response = inference::InferenceResponse {
            model: id,
            outputs: outcome.outputs,
            proof,
        };
        let started = Instant::now();
        // As the handler does: one pass from the tensors to the bytes.
        let answer = serde_json::to_vec(&response)?;
        encode.push(ms(started.elapsed()));
        answer_bytes = answer.len();
        let started = Instant::now();
        let answer = base64_answer(&response)?;
        encode_b64.push(ms(started.elapsed()));
        answer_bytes_b64 = answer.len();
    }
    drop(client);
    gateway.shutdown().await?;
    Ok(Warm {
        gateway: through_gateway,
        direct,
        request_parse: median(parse),
        sign: median(sign),
        encode: median(encode),
        answer_bytes,
        b64: WarmBase64 {
            gateway: through_gateway_b64,
            request_parse: median(parse_b64),
            encode: median(encode_b64),
            request_bytes: body_b64.len(),
            answer_bytes: answer_bytes_b64,
        },
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-models"));
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    let cold_runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    anyhow::ensure!(
        runs >= 1 && cold_runs >= 1,
        "RUNS and COLD_RUNS must be >= 1"
    );
    let mut names: Vec<String> = args.collect();
    if names.is_empty() {
        names = std::fs::read_dir(&dir)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e}; run inference/bench/fetch-models.sh first",
                    dir.display()
                )
            })?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                Some(name.strip_suffix(".onnx")?.to_string())
            })
            .collect();
        names.sort();
    }
    anyhow::ensure!(
        !names.is_empty(),
        "no models in {}: run inference/bench/fetch-models.sh first",
        dir.display()
    );
    println!(
        "tract-onnx {} on {}; {runs} warm requests per side after {WARMUP} warm-up, \
         {cold_runs} cold runs (medians)",
        inference::TRACT_VERSION,
        inference::EngineTag::local().cpu,
    );

    // n = 100 holds blobs up to 149 MB (n = 10 stops at 1.8 MB).
    let net = Arc::new(
        SimNetwork::start(SimConfig {
            n_shards: 100,
            nodes: 10,
            ..SimConfig::default()
        })
        .await?,
    );
    let mut rows = Vec::new();
    for name in &names {
        let model = Bytes::from(std::fs::read(dir.join(format!("{name}.onnx")))?);
        let body = Bytes::from(std::fs::read(dir.join(format!("{name}.json")))?);
        let id = {
            let model = model.clone();
            let net = net.clone();
            tokio::task::spawn_blocking(move || net.store(&model)).await??
        };
        println!(
            "\n{name}: {:.1} MB model, {:.1} KB request, blob {id}",
            model.len() as f64 / 1e6,
            body.len() as f64 / 1e3
        );
        let c = cold(&net, id, &body, cold_runs).await?;
        println!(
            "  cold first request {:.1} ms = fill {:.1} + ONNX parse {:.1} + plan build {:.1} + \
             run {:.1} + other {:.1}",
            c.total, c.fill, c.parse, c.build, c.run, c.other
        );
        // The same request with data_b64 inputs and base64 outputs.
        let body_b64 = {
            let mut request = inference::InferenceRequest::from_json(
                &body,
                &inference::RequestLimits::default(),
            )?;
            request.output_encoding = TensorEncoding::Base64;
            Bytes::from(request.to_json(TensorEncoding::Base64))
        };
        let w = warm(&net, id, &body, &body_b64, &model, runs).await?;
        let (g50, g90) = (
            ms(percentile(&w.gateway, 0.5)),
            ms(percentile(&w.gateway, 0.9)),
        );
        let (d50, d90) = (
            ms(percentile(&w.direct, 0.5)),
            ms(percentile(&w.direct, 0.9)),
        );
        let overhead = g50 - d50;
        let goal = (0.1 * d50).max(0.2);
        println!(
            "  warm: gateway p50 {g50:.3} ms p90 {g90:.3} ms; direct tract p50 {d50:.3} ms \
             p90 {d90:.3} ms; overhead {overhead:.3} ms ({:.1} %), ratio {:.3}; goal <= \
             {goal:.3} ms: {}",
            100.0 * overhead / d50,
            g50 / d50,
            if overhead <= goal { "met" } else { "MISSED" }
        );
        println!(
            "  gateway pieces (in-process medians): request JSON parse {:.3} ms, sign {:.3} ms, \
             answer JSON encode {:.3} ms ({:.1} KB)",
            w.request_parse,
            w.sign,
            w.encode,
            w.answer_bytes as f64 / 1e3
        );
        let (b50, b90) = (
            ms(percentile(&w.b64.gateway, 0.5)),
            ms(percentile(&w.b64.gateway, 0.9)),
        );
        let overhead_b64 = b50 - d50;
        println!(
            "  warm, base64 in and out: gateway p50 {b50:.3} ms p90 {b90:.3} ms; overhead \
             {overhead_b64:.3} ms ({:.1} %), ratio {:.3}; goal <= {goal:.3} ms: {}",
            100.0 * overhead_b64 / d50,
            b50 / d50,
            if overhead_b64 <= goal {
                "met"
            } else {
                "MISSED"
            }
        );
        println!(
            "  base64 pieces: request {:.1} KB (JSON {:.1} KB) parse {:.3} ms, answer encode \
             {:.3} ms ({:.1} KB)",
            w.b64.request_bytes as f64 / 1e3,
            body.len() as f64 / 1e3,
            w.b64.request_parse,
            w.b64.encode,
            w.b64.answer_bytes as f64 / 1e3
        );
        let ort = ort_figures(&dir, name);
        if let Some((version, one, default)) = &ort {
            println!(
                "  onnxruntime {version}: p50 {one:.3} ms (1 thread), {default:.3} ms (default)"
            );
        }
        rows.push(format!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {g50:.3} | {d50:.3} | {overhead:.3} ({:.1} %) | {:.3} | {b50:.3} | {overhead_b64:.3} ({:.1} %) | {:.3} | {} |",
            c.total,
            c.fill,
            c.parse,
            c.build,
            c.run,
            100.0 * overhead / d50,
            g50 / d50,
            100.0 * overhead_b64 / d50,
            b50 / d50,
            ort.map_or("-".into(), |(_, one, default)| format!("{one:.3} / {default:.3}")),
        ));
    }
    println!(
        "\n| model | cold total ms | fill | parse | plan build | run | gateway p50 ms | direct \
         p50 ms | overhead ms | ratio | base64 gateway p50 ms | base64 overhead ms | base64 ratio \
         | onnxruntime p50 ms (1 thread / default) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    if let Ok(net) = Arc::try_unwrap(net) {
        net.shutdown().await;
    }
    Ok(())
}
