//! The command line: arguments, their checks, and the [`RunConfig`] they describe. Kept in the
//! library so argument handling is tested like the rest; the binary only calls [`main`].

use crate::client::{Protocol, Target, TlsOptions};
use crate::config::{Inference, Load, PopulationSpec, Preset, RunConfig};
use crate::faults::{parse_faults, FaultPlan};
use crate::parse::{self, SizeDist};
use crate::workload::Mix;
use anyhow::{bail, Context};
use clap::Parser;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Walrus-aware load generator: drives a gateway (or any aggregator-compatible URL), checks
/// every response (lengths; full reads against their Blob ID), and reports throughput, HDR
/// latency percentiles, errors by kind, and the target's cache counters.
///
/// It refuses non-loopback targets unless --allow-remote, and always stops at --duration (or
/// --requests); requests in flight then get at most --timeout to finish.
#[derive(Debug, Parser)]
#[command(name = "walrus-loadtest", version)]
pub struct Cli {
    /// Base URL of the gateway or aggregator, e.g. http://127.0.0.1:31415 or
    /// https://localhost:8443 (TLS).
    #[arg(long)]
    pub target: String,
    /// HTTP version: 1 (HTTP/1.1), 2 (HTTP/2: h2c with prior knowledge on http://, ALPN h2 on
    /// https://) or 3 (HTTP/3 over QUIC; needs an https:// target).
    #[arg(long = "http", default_value = "1", value_parser = ["1", "2", "3"])]
    pub http: String,
    /// HTTP/2 or HTTP/3 connections to spread requests over (HTTP/1.1 uses one per request
    /// in flight).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Trust the certificates in this PEM file for an https:// target (e.g. the file
    /// `walrus-gateway serve --tls-self-signed --tls-self-signed-out FILE` writes). Without
    /// it, the public (Mozilla) roots are trusted.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub cacert: Option<PathBuf>,
    /// UNSAFE: do not verify the https:// target's certificate, so anyone on the path can
    /// read and alter the traffic (full reads are still checked against their Blob ID). For a
    /// quick try on loopback only; prefer --cacert.
    #[arg(long)]
    pub insecure: bool,
    /// UDP port of the target's HTTP/3 listener (--http 3), if not the URL's port.
    #[arg(long, value_name = "PORT")]
    pub h3_port: Option<u16>,
    /// Scenario preset: hit, cold, stampede, faults, inference.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,

    /// Publish N blobs through the target's `PUT /v1/blobs` first.
    #[arg(long, value_name = "N", conflicts_with = "blobs")]
    pub publish: Option<usize>,
    /// Sizes of published blobs: one size or a distribution like 4KiB:70%,1MiB:25%,64MiB:5%.
    #[arg(long, value_name = "DIST", default_value = "1MiB", value_parser = parse::size_dist)]
    pub size: SizeDist,
    /// File of existing Blob IDs, one per line, optionally followed by the size in bytes.
    #[arg(long, value_name = "FILE")]
    pub blobs: Option<PathBuf>,

    /// Closed loop: this many clients, each sending when its last response ended.
    #[arg(long, value_name = "C", conflicts_with = "rate")]
    pub concurrency: Option<usize>,
    /// Open loop: requests per second on a fixed schedule (500/s, 2k/s); latency counts from
    /// the scheduled send time.
    #[arg(long, value_name = "R/s", value_parser = parse::rate)]
    pub rate: Option<f64>,
    /// Open loop: most requests outstanding at once.
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,

    /// Zipf exponent of blob popularity (0: uniform).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Share of requests that are Range reads (20% or 0.2).
    #[arg(long, value_parser = parse::share, default_value = "0")]
    pub range_share: f64,
    /// Largest Range read.
    #[arg(long, value_parser = parse::size, default_value = "64KiB")]
    pub range_max: u64,
    /// Share of requests that are HEAD.
    #[arg(long, value_parser = parse::share, default_value = "0")]
    pub head_share: f64,
    /// Share of requests that are inference calls (needs --infer and --input).
    #[arg(long, value_parser = parse::share)]
    pub infer_share: Option<f64>,
    /// Model ID for `POST /v1/inference/{MODEL_ID}`.
    #[arg(long, value_name = "MODEL_ID", requires = "input")]
    pub infer: Option<String>,
    /// JSON file sent as the inference request body.
    #[arg(long, value_name = "FILE", requires = "infer")]
    pub input: Option<PathBuf>,

    /// Measured time (after warm-up).
    #[arg(long, default_value = "10s", value_parser = parse::duration)]
    pub duration: Duration,
    /// Unmeasured time before measuring.
    #[arg(long, default_value = "0s", value_parser = parse::duration)]
    pub warmup: Duration,
    /// Stop after this many measured requests.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Per-request timeout (headers and body).
    #[arg(long, default_value = "30s", value_parser = parse::duration)]
    pub timeout: Duration,

    /// Shards of the target's committee, for Blob ID checks (default: the target's /status
    /// if it says, else 1000).
    #[arg(long)]
    pub n_shards: Option<u16>,
    /// Share of full reads checked against their Blob ID, besides each blob's first read.
    #[arg(long, value_parser = parse::share, default_value = "1%")]
    pub verify_sample: f64,
    /// Seed of the workload (blob choice, mix, published content).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// A storage-sim node's URL (its loopback admin endpoint `/sim/faults` reaches every
    /// node), for --preset faults; repeatable. A node taken offline cannot be healed through
    /// itself: the run uses a URL that is not the faulted node, and refuses to start if every
    /// one is.
    #[arg(long, value_name = "URL")]
    pub sim_admin: Vec<String>,
    /// Bearer token of the target's admin API. --preset cold --publish needs it: publishing
    /// caches what it stores, so the published blobs are purged (`DELETE /admin/cache/{id}`)
    /// before measuring.
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// Node (index or name) to break.
    #[arg(long, default_value = "0")]
    pub fault_node: String,
    /// Faults to set: inline JSON or a JSON file with storage-sim's NodeFaults fields.
    #[arg(long, default_value = r#"{"offline":true}"#)]
    pub fault: String,
    /// When to break the node (default: a third into the measured time).
    #[arg(long, value_parser = parse::duration)]
    pub fault_at: Option<Duration>,
    /// When to heal it (default: two thirds into the measured time).
    #[arg(long, value_parser = parse::duration)]
    pub fault_clear_at: Option<Duration>,

    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// No progress line, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Allow a target that is not on this machine.
    #[arg(long)]
    pub allow_remote: bool,
}

impl Cli {
    /// Check the arguments together and build the run configuration.
    pub fn config(&self) -> anyhow::Result<RunConfig> {
        let protocol = match self.http.as_str() {
            "1" => Protocol::Http1,
            "2" => Protocol::Http2,
            _ => Protocol::Http3,
        };
        let target = Target::parse(&self.target, self.allow_remote)?;
        if protocol == Protocol::Http3 && !target.is_tls() {
            bail!(
                "--http 3 runs over QUIC, which is always encrypted: give an https:// target (the gateway's --h3-listen, with its --https-listen port or --h3-port)"
            );
        }
        if !target.is_tls() && (self.cacert.is_some() || self.insecure) {
            bail!("--cacert and --insecure apply to https:// targets only");
        }
        match self.h3_port {
            Some(_) if protocol != Protocol::Http3 => bail!("--h3-port needs --http 3"),
            Some(0) => bail!("--h3-port must be a port number from 1 to 65535"),
            _ => {}
        }
        let population = match (&self.blobs, self.publish) {
            (Some(path), None) => PopulationSpec::List(path.clone()),
            (None, Some(count)) => {
                if count == 0 {
                    bail!("--publish needs at least one blob");
                }
                PopulationSpec::Publish {
                    count,
                    sizes: self.size.clone(),
                }
            }
            // The inference preset needs only its model: the one named, or a built-in one.
            (None, None) if self.preset == Some(Preset::Inference) => {
                PopulationSpec::Model(self.infer.clone())
            }
            (None, None) => {
                bail!("say which blobs to read: --publish N (with --size) or --blobs FILE")
            }
            (Some(_), Some(_)) => bail!("--publish and --blobs cannot be combined"),
        };
        if !self.zipf.is_finite() || self.zipf < 0.0 {
            bail!(
                "--zipf must be a finite number of at least 0, got {}",
                self.zipf
            );
        }
        if self.duration.is_zero() {
            bail!("--duration must be positive");
        }
        if self.requests == Some(0) {
            bail!("--requests must be at least 1");
        }
        let mut config = RunConfig::new(target, population);
        config.protocol = protocol;
        config.connections = self.connections.max(1);
        config.tls = TlsOptions {
            cacert: self.cacert.clone(),
            insecure: self.insecure,
        };
        config.h3_port = self.h3_port;
        config.load = match (self.concurrency, self.rate) {
            (Some(0), _) => bail!("--concurrency must be at least 1"),
            (Some(c), None) => Load::Closed { concurrency: c },
            (None, Some(rate)) => Load::Open {
                rate,
                max_in_flight: self.max_in_flight.max(1),
            },
            (None, None) => Load::Closed { concurrency: 16 },
            (Some(_), Some(_)) => bail!("--concurrency and --rate cannot be combined"),
        };
        config.zipf = self.zipf;
        config.range_max = self.range_max.max(1);
        config.duration = self.duration;
        config.warmup = self.warmup;
        config.max_requests = self.requests;
        config.timeout = self.timeout;
        config.n_shards = self.n_shards;
        config.verify_fraction = self.verify_sample;
        config.seed = self.seed;
        config.progress = !self.no_progress && std::io::stderr().is_terminal();
        if let (Some(model), Some(input)) = (&self.infer, &self.input) {
            let bytes = std::fs::read(input)
                .with_context(|| format!("cannot read the inference input {}", input.display()))?;
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .with_context(|| format!("{} is not JSON", input.display()))?;
            config.inference = Some(Inference {
                model: model.clone(),
                input: bytes.into(),
            });
        }
        config.mix = Mix {
            range: self.range_share,
            head: self.head_share,
            infer: self.infer_share.unwrap_or(0.0),
        };
        config.admin_token = self.admin_token.clone();
        if let Some(preset) = self.preset {
            preset.apply(&mut config);
            if preset == Preset::Inference && config.inference.is_none() {
                if self.infer.is_some() || self.input.is_some() {
                    bail!("--preset inference needs --infer MODEL_ID and --input FILE together");
                }
                if !matches!(config.population, PopulationSpec::Model(None)) {
                    bail!("--preset inference with --blobs or --publish needs --infer MODEL_ID and --input FILE (without them it publishes and runs its built-in model)");
                }
                // Published and named once the run starts.
                config.inference = Some(Inference::builtin());
            }
            if preset == Preset::Cold && matches!(config.population, PopulationSpec::Publish { .. })
            {
                if config.admin_token.is_none() {
                    bail!("--preset cold --publish: publishing caches every blob it stores, so reads would be hits; give --admin-token (the target's) to purge them before measuring, or --blobs FILE of blobs not read yet");
                }
                config.purge_published = true;
            }
            if preset == Preset::Faults {
                if self.sim_admin.is_empty() {
                    bail!("--preset faults needs --sim-admin URL (storage-sim nodes, e.g. from its committee file)");
                }
                let mut admins = Vec::new();
                for admin in &self.sim_admin {
                    let admin = Target::parse(admin, false)
                        .context("--sim-admin must be a loopback storage-sim node URL")?;
                    if admin.is_tls() {
                        bail!(
                            "--sim-admin must be an http:// URL (storage-sim nodes speak plain HTTP)"
                        );
                    }
                    admins.push(admin);
                }
                let at = self.fault_at.unwrap_or(self.duration / 3);
                let clear_at = self.fault_clear_at.unwrap_or(self.duration * 2 / 3);
                if clear_at <= at {
                    bail!("--fault-clear-at must come after --fault-at");
                }
                config.faults = Some(FaultPlan {
                    admins,
                    node: self.fault_node.clone(),
                    faults: parse_faults(&self.fault)?,
                    at,
                    clear_at: Some(clear_at),
                });
            }
        }
        config.mix.validate(config.inference.is_some())?;
        Ok(config)
    }
}

/// The binary: parse, run, print the summary, write the reports.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walrus-loadtest: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let config = cli.config()?;
    // Fail on unwritable report paths before loading anything.
    for path in [&cli.json, &cli.html].into_iter().flatten() {
        std::fs::write(path, b"")
            .with_context(|| format!("cannot write the report {}", path.display()))?;
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = match runtime.block_on(crate::run(config)) {
        Ok(report) => report,
        Err(e) => {
            // No empty report files left behind by a run that never happened.
            for path in [&cli.json, &cli.html].into_iter().flatten() {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };
    print!("{}", report.summary());
    if let Some(path) = &cli.json {
        let json = serde_json::to_vec_pretty(&report).context("cannot serialise the report")?;
        std::fs::write(path, json)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
        println!("  JSON report: {}", path.display());
    }
    if let Some(path) = &cli.html {
        std::fs::write(path, crate::html::render(&report))
            .with_context(|| format!("cannot write the report {}", path.display()))?;
        println!("  HTML report: {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scenario;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(
            ["walrus-loadtest", "--target", "http://127.0.0.1:9"]
                .iter()
                .chain(args),
        )
    }

    fn config(args: &[&str]) -> anyhow::Result<RunConfig> {
        cli(args).map_err(anyhow::Error::from)?.config()
    }

    #[test]
    fn a_plain_run_has_defaults() {
        let c = config(&["--publish", "3", "--size", "4KiB:50%,1MiB:50%"]).unwrap();
        assert_eq!(c.load, Load::Closed { concurrency: 16 });
        assert_eq!(c.duration, Duration::from_secs(10));
        assert!(matches!(
            c.population,
            PopulationSpec::Publish { count: 3, .. }
        ));
        assert_eq!(c.protocol, Protocol::Http1);
        assert_eq!(c.scenario, Scenario::Mixed);
    }

    #[test]
    fn open_loop_and_http2() {
        let c = config(&[
            "--blobs",
            "ids.txt",
            "--rate",
            "2k/s",
            "--http",
            "2",
            "--requests",
            "50",
        ])
        .unwrap();
        assert_eq!(
            c.load,
            Load::Open {
                rate: 2000.0,
                max_in_flight: 4096
            }
        );
        assert_eq!(c.protocol, Protocol::Http2);
        assert_eq!(c.max_requests, Some(50));
    }

    #[test]
    fn http3_and_tls_options() {
        let c = Cli::try_parse_from([
            "walrus-loadtest",
            "--target",
            "https://localhost:8443",
            "--publish",
            "1",
            "--http",
            "3",
            "--h3-port",
            "8444",
            "--cacert",
            "gateway.pem",
            "--connections",
            "2",
        ])
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(c.protocol, Protocol::Http3);
        assert_eq!(c.h3_port, Some(8444));
        assert_eq!(c.tls.cacert, Some(PathBuf::from("gateway.pem")));
        assert!(!c.tls.insecure);
        assert_eq!(c.client_options().connections, 2);
        let both = Cli::try_parse_from([
            "walrus-loadtest",
            "--target",
            "https://localhost:8443",
            "--publish",
            "1",
            "--cacert",
            "a.pem",
            "--insecure",
        ]);
        assert!(both.is_err(), "--cacert and --insecure conflict");
    }

    #[test]
    fn bad_arguments_are_refused_with_reasons() {
        let err = |args: &[&str]| format!("{:#}", config(args).unwrap_err());
        assert!(err(&["--publish", "1", "--http", "3"]).contains("give an https:// target"));
        assert!(err(&["--publish", "1", "--insecure"]).contains("https:// targets only"));
        assert!(err(&["--publish", "1", "--cacert", "x.pem"]).contains("https:// targets only"));
        assert!(err(&["--publish", "1", "--h3-port", "9"]).contains("needs --http 3"));
        assert!(err(&[]).contains("--publish N"));
        assert!(err(&["--publish", "0"]).contains("at least one"));
        assert!(err(&["--publish", "1", "--size", "4 parsecs"]).contains("size distribution"));
        assert!(err(&["--publish", "1", "--rate", "fast"]).contains("not a rate"));
        assert!(err(&["--publish", "1", "--duration", "soon"]).contains("not a duration"));
        assert!(err(&["--publish", "1", "--concurrency", "0"]).contains("at least 1"));
        assert!(err(&[
            "--publish",
            "1",
            "--range-share",
            "70%",
            "--head-share",
            "40%"
        ])
        .contains("more than 100%"));
        assert!(err(&["--publish", "1", "--infer-share", "10%"]).contains("--infer"));
        assert!(err(&["--publish", "1", "--preset", "faults"]).contains("--sim-admin"));
        assert!(err(&["--publish", "1", "--preset", "inference"]).contains("--infer"));
        assert!(err(&["--publish", "1", "--zipf=-1"]).contains("--zipf"));
        assert!(err(&["--publish", "1", "--blobs", "x"]).contains("cannot be used with"));
        assert!(
            err(&["--publish", "1", "--concurrency", "2", "--rate", "5"])
                .contains("cannot be used with")
        );
    }

    #[test]
    fn remote_targets_need_consent() {
        let remote = |extra: &[&str]| {
            let mut args = vec![
                "walrus-loadtest",
                "--target",
                "http://192.0.2.1",
                "--publish",
                "1",
            ];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).unwrap().config()
        };
        assert!(format!("{:#}", remote(&[]).unwrap_err()).contains("--allow-remote"));
        assert!(remote(&["--allow-remote"]).is_ok());
    }

    #[test]
    fn faults_preset_schedules_break_and_heal() {
        let c = config(&[
            "--publish",
            "1",
            "--preset",
            "faults",
            "--sim-admin",
            "http://127.0.0.1:7000",
            "--duration",
            "9s",
            "--fault",
            r#"{"latency_ms":50}"#,
        ])
        .unwrap();
        let plan = c.faults.unwrap();
        assert_eq!(plan.at, Duration::from_secs(3));
        assert_eq!(plan.clear_at, Some(Duration::from_secs(6)));
        assert_eq!(plan.faults.latency_ms, 50);
        assert_eq!(plan.node, "0");
        let err = config(&[
            "--publish",
            "1",
            "--preset",
            "faults",
            "--sim-admin",
            "http://10.1.2.3:7000",
        ])
        .unwrap_err();
        assert!(format!("{err:#}").contains("loopback"));
    }

    #[test]
    fn presets_need_no_more_than_they_must() {
        // Inference alone: the built-in model, published by the run.
        let c = config(&["--preset", "inference"]).unwrap();
        assert!(matches!(c.population, PopulationSpec::Model(None)));
        assert!(c.inference.as_ref().unwrap().model.is_empty());
        let model = "A".repeat(43);
        let input = std::env::temp_dir().join("loadtest-cli-input.json");
        std::fs::write(&input, br#"{"inputs":{}}"#).unwrap();
        let c = config(&[
            "--preset",
            "inference",
            "--infer",
            &model,
            "--input",
            input.to_str().unwrap(),
        ])
        .unwrap();
        assert!(matches!(&c.population, PopulationSpec::Model(Some(m)) if *m == model));
        // Cold reads of published blobs need them purged, so the admin token.
        let e = config(&["--preset", "cold", "--publish", "3"]).unwrap_err();
        assert!(e.to_string().contains("--admin-token"), "{e}");
        let c = config(&["--preset", "cold", "--publish", "3", "--admin-token", "t"]).unwrap();
        assert!(c.purge_published);
        assert!(
            !config(&["--preset", "cold", "--blobs", "ids.txt"])
                .unwrap()
                .purge_published
        );
        // Several admin URLs for faults.
        let c = config(&[
            "--preset",
            "faults",
            "--blobs",
            "ids.txt",
            "--sim-admin",
            "http://127.0.0.1:1",
            "--sim-admin",
            "http://127.0.0.1:2",
        ])
        .unwrap();
        assert_eq!(c.faults.unwrap().admins.len(), 2);
    }
}
