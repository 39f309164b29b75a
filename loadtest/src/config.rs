//! A run's complete configuration, and the scenario presets (`hit`, `cold`, `stampede`,
//! `faults`, `inference`) as adjustments of it. The binary builds a [`RunConfig`] from its
//! arguments; tests build one directly.

use crate::client::{ClientOptions, Protocol, Target, TlsOptions};
use crate::faults::FaultPlan;
use crate::parse::SizeDist;
use crate::workload::Mix;
use bytes::Bytes;
use std::path::PathBuf;
use std::time::Duration;

/// Where the blobs come from.
#[derive(Debug, Clone)]
pub enum PopulationSpec {
    /// `PUT /v1/blobs` this many blobs with sizes from the distribution.
    Publish { count: usize, sizes: SizeDist },
    /// A file of Blob IDs (optionally with sizes).
    List(PathBuf),
    /// Only an inference model (`--preset inference` without --blobs or --publish): the named
    /// one, or `None`: [`BUILTIN_MODEL`], published by the run.
    Model(Option<String>),
}

/// The model `--preset inference` publishes and runs when given none: the small MLP of the
/// inference crate's tests (`x`: 1×4 f32 → `y`), with the inputs of its first reference case.
pub const BUILTIN_MODEL: &[u8] = include_bytes!("../../inference/tests/models/mlp.onnx");
const BUILTIN_MODEL_CASES: &str = include_str!("../../inference/tests/models/mlp.json");

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// `concurrency` clients, each sending its next request when the last one ended.
    Closed { concurrency: usize },
    /// Requests sent on a fixed schedule whatever the responses do; latency counts from the
    /// scheduled time, so a slow server cannot hide its queue (no coordinated omission).
    /// At most `max_in_flight` are outstanding; beyond that the schedule slips, but latency
    /// still counts from the scheduled time.
    Open { rate: f64, max_in_flight: usize },
}

impl Load {
    pub fn describe(&self) -> String {
        match self {
            Load::Closed { concurrency } => format!("closed loop, concurrency {concurrency}"),
            Load::Open { rate, .. } => format!("open loop, {rate}/s"),
        }
    }
}

/// Which blobs requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Zipf-popular blobs with the configured mix (the `hit`, `faults` and `inference` presets).
    Mixed,
    /// Every request reads a blob not read before, in population order; the run ends when
    /// every blob was read once.
    Cold,
    /// Rounds: every client reads the same not-yet-read blob at the same instant.
    Stampede,
}

/// An inference request: `POST /v1/inference/{model}` with `input` as the JSON body.
#[derive(Debug, Clone)]
pub struct Inference {
    /// Empty for [`Inference::builtin`] until the run published the model.
    pub model: String,
    pub input: Bytes,
}

impl Inference {
    /// [`BUILTIN_MODEL`] with its reference inputs; the run publishes it and fills in `model`.
    pub fn builtin() -> Self {
        let cases: serde_json::Value =
            serde_json::from_str(BUILTIN_MODEL_CASES).expect("the committed reference is JSON");
        let body = serde_json::json!({"inputs": cases["cases"][0]["inputs"]});
        Self {
            model: String::new(),
            input: Bytes::from(body.to_string()),
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: Target,
    pub protocol: Protocol,
    /// HTTP/2 or HTTP/3 connections to spread requests over.
    pub connections: usize,
    /// How an `https://` target's certificate is trusted.
    pub tls: TlsOptions,
    /// UDP port of the target's HTTP/3 listener, when not the URL's port.
    pub h3_port: Option<u16>,
    pub population: PopulationSpec,
    pub scenario: Scenario,
    /// Name shown in the report (`hit`, `cold`, … or `custom`).
    pub scenario_name: String,
    pub load: Load,
    /// Zipf exponent of blob popularity (0: uniform).
    pub zipf: f64,
    pub mix: Mix,
    /// Largest Range request, in bytes.
    pub range_max: u64,
    pub inference: Option<Inference>,
    /// Measured time (after warm-up); the run always stops then.
    pub duration: Duration,
    /// Requests during this time are made but not measured.
    pub warmup: Duration,
    /// Stop after this many measured requests.
    pub max_requests: Option<u64>,
    /// Read every blob once (verifying each) before measuring, so reads are cache hits.
    pub prewarm: bool,
    pub faults: Option<FaultPlan>,
    /// Shards for Blob ID checks; `None`: ask the target's `/status`, else 1000.
    pub n_shards: Option<u16>,
    /// Share of full reads (besides each blob's first) whose bytes are checked against the
    /// Blob ID.
    pub verify_fraction: f64,
    pub seed: u64,
    /// Per request, headers and body.
    pub timeout: Duration,
    /// Print a progress line every second to stderr.
    pub progress: bool,
    /// Bearer token of the target's admin API.
    pub admin_token: Option<String>,
    /// Purge published blobs from the target's cache before measuring (`cold` with
    /// `--publish`: publishing caches what it stores); needs `admin_token`.
    pub purge_published: bool,
}

impl RunConfig {
    /// How the load's client reaches the target.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            protocol: self.protocol,
            connections: self.connections,
            tls: self.tls.clone(),
            h3_port: self.h3_port,
        }
    }

    /// Defaults for everything but the target and the population.
    pub fn new(target: Target, population: PopulationSpec) -> Self {
        Self {
            target,
            protocol: Protocol::Http1,
            connections: 1,
            tls: TlsOptions::default(),
            h3_port: None,
            population,
            scenario: Scenario::Mixed,
            scenario_name: "custom".into(),
            load: Load::Closed { concurrency: 16 },
            zipf: 1.0,
            mix: Mix::default(),
            range_max: 64 << 10,
            inference: None,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            max_requests: None,
            prewarm: false,
            faults: None,
            n_shards: None,
            verify_fraction: 0.01,
            seed: 1,
            timeout: Duration::from_secs(30),
            admin_token: None,
            purge_published: false,
            progress: false,
        }
    }
}

/// The named scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// Warm cache: every blob read once first, then Zipf-popular reads.
    Hit,
    /// Every request reads a blob nobody read before.
    Cold,
    /// All clients read the same cold blob at once, blob after blob.
    Stampede,
    /// Zipf traffic from a cold start while a storage-sim node is broken mid-run and healed
    /// again (hits are immune by design; fills, ranges and HEADs of uncached blobs are not).
    Faults,
    /// Inference requests only.
    Inference,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Hit => "hit",
            Preset::Cold => "cold",
            Preset::Stampede => "stampede",
            Preset::Faults => "faults",
            Preset::Inference => "inference",
        }
    }

    /// Adjust `config` to this scenario. Explicit settings the scenario does not fix (load,
    /// duration, mix shares) are kept.
    pub fn apply(self, config: &mut RunConfig) {
        config.scenario_name = self.name().into();
        match self {
            Preset::Hit => {
                config.scenario = Scenario::Mixed;
                config.prewarm = true;
            }
            Preset::Cold => {
                config.scenario = Scenario::Cold;
                config.prewarm = false;
                config.warmup = Duration::ZERO;
            }
            Preset::Stampede => {
                config.scenario = Scenario::Stampede;
                config.prewarm = false;
                config.warmup = Duration::ZERO;
            }
            Preset::Faults => {
                // Not pre-warmed: fills happen during the run, where the faults can hit them.
                config.scenario = Scenario::Mixed;
                config.prewarm = false;
            }
            Preset::Inference => {
                config.scenario = Scenario::Mixed;
                config.mix = Mix {
                    infer: 1.0,
                    ..Mix::default()
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_set_their_scenario() {
        let target = Target::parse("http://127.0.0.1:1", false).unwrap();
        let mut c = RunConfig::new(target, PopulationSpec::List("x".into()));
        c.warmup = Duration::from_secs(5);
        Preset::Cold.apply(&mut c);
        assert_eq!(c.scenario, Scenario::Cold);
        assert_eq!(c.warmup, Duration::ZERO, "warm-up would use up cold blobs");
        Preset::Hit.apply(&mut c);
        assert!(c.prewarm);
        assert_eq!(c.scenario_name, "hit");
        Preset::Inference.apply(&mut c);
        assert_eq!(c.mix.infer, 1.0);
    }
}
