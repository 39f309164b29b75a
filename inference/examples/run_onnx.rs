//! Run an ONNX file through the engine and print what a gateway would see: the model's spec,
//! the cold path (parse + plan build + first run) and warm per-run latency.
//!
//! ```text
//! cargo run -p walrus-inference --example run_onnx -- MODEL.onnx [REQUEST.json] [RUNS]
//! ```
//!
//! REQUEST.json is a request body (`{"inputs": {...}}`); without it every input is zeros with
//! symbolic axes at 1. For benchmark figures build with `--release`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use codec::BlobId;
use inference::{
    DType, Dim, Engine, EngineConfig, Identity, InferenceRequest, StaticModels, TensorData,
    TensorValues,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .context("usage: run_onnx MODEL.onnx [REQUEST.json] [RUNS]")?;
    let bytes = Bytes::from(std::fs::read(path).with_context(|| format!("reading {path}"))?);
    // A stand-in ID: this tool has no committee, and the engine only needs a stable key.
    let model = BlobId(*blake3::hash(&bytes).as_bytes());
    let models = StaticModels::new();
    models.insert(model, bytes);
    let engine = Engine::new(EngineConfig::default(), Arc::new(models));

    let started = Instant::now();
    let spec = engine.spec(model).await?;
    println!("parsed in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    for input in &spec.inputs {
        println!("input  {} {} {:?}", input.name, input.dtype, input.dims);
    }
    for output in &spec.outputs {
        println!("output {} {:?}", output.name, output.dims);
    }
    println!("padded to buckets: {:?}", spec.paddable);

    let request = match args.get(1).filter(|a| a.ends_with(".json")) {
        Some(file) => engine.parse_request(&std::fs::read(file)?)?,
        None => {
            let inputs = spec
                .inputs
                .iter()
                .map(|i| {
                    let shape: Vec<usize> = i
                        .dims
                        .iter()
                        .map(|d| if let Dim::Fixed(n) = d { *n } else { 1 })
                        .collect();
                    let n = shape.iter().product();
                    let values = match i.dtype {
                        DType::F32 => TensorValues::F32(vec![0.0; n]),
                        DType::F64 => TensorValues::F64(vec![0.0; n]),
                        DType::I64 => TensorValues::I64(vec![0; n]),
                        DType::I32 => TensorValues::I32(vec![0; n]),
                        DType::U8 => TensorValues::U8(vec![0; n]),
                        DType::Bool => TensorValues::Bool(vec![false; n]),
                    };
                    (
                        i.name.clone(),
                        TensorData::new(shape, values).expect("counted"),
                    )
                })
                .collect();
            InferenceRequest::named(inputs)
        }
    };
    let runs: usize = args.last().and_then(|a| a.parse().ok()).unwrap_or(50);

    let started = Instant::now();
    let first = engine.run(model, request.clone()).await?;
    println!(
        "plan build + first run {:.1} ms (plan ~{} KiB)",
        started.elapsed().as_secs_f64() * 1e3,
        engine.stats().plan_bytes / 1024
    );
    for (name, t) in &first.outputs {
        println!("output {name}: {} {:?}", t.dtype(), t.shape());
    }

    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        engine.run(model, request.clone()).await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "warm run over {runs}: p50 {:.3} ms, p90 {:.3} ms, min {:.3} ms",
        pct(0.5),
        pct(0.9),
        times[0]
    );

    let identity = Identity::generate()?;
    let started = Instant::now();
    let response = engine.infer(model, request, &identity).await?;
    println!(
        "run + sign {:.3} ms, outputs BLAKE3 {}",
        started.elapsed().as_secs_f64() * 1e3,
        response.proof.record.outputs_blake3
    );
    Ok(())
}
