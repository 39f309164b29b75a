//! `walrus-sim`: run a simulated Walrus storage-node committee on loopback.
//!
//! ```text
//! walrus-sim --n-shards 10 --nodes 4 --committee-out committee.json --seed photo.jpg
//! ```
//!
//! Start-up order on stdout: one `seeded <blob_id> <file>` line per `--seed`, then (after the
//! committee file and the certificates are written) `ready` on its own line. The committee
//! file is rewritten whenever an epoch change or a node move changes it. Logs go to stderr
//! (`RUST_LOG`). Stops on Ctrl-C or SIGTERM. See `walrus-sim --help` for every option.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Parser;
use storage_sim::{FaultsFile, NodeFaults, SimConfig, SimNetwork};

/// A simulated Walrus storage-node committee: one HTTP server per node on 127.0.0.1, speaking
/// the storage-node REST API (metadata, slivers, statuses, health) with fault injection.
///
/// Prints `seeded <blob_id> <file>` per --seed, then `ready` once the committee file is
/// written. Faults can be changed at run time with `POST /sim/faults[?node=I]` (JSON body, same
/// fields as the --faults TOML tables) on any node, from loopback only; `POST
/// /sim/advance-epoch` and `POST /sim/move-node?node=I` change the epoch and a node's port.
#[derive(Debug, Parser)]
#[command(name = "walrus-sim", version)]
struct Args {
    /// Number of shards (the encoding's n): at least 4; Walrus mainnet has 1000.
    #[arg(long, default_value_t = 10)]
    n_shards: u16,
    /// Number of storage nodes (each owns at least one shard).
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Node i listens on BASE_PORT + i; 0 lets the OS pick free ports.
    #[arg(long, default_value_t = 0)]
    base_port: u16,
    /// Keep every node's storage on disk here; a restarted sim serves what it stored.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Encode FILE and store it on the committee at start-up (repeatable).
    #[arg(long = "seed", value_name = "FILE")]
    seeds: Vec<PathBuf>,
    /// Write the committee JSON ({"n_shards", "nodes": [{"name", "url", "shards"}]}) here.
    #[arg(long)]
    committee_out: Option<PathBuf>,
    /// Uneven shard assignment: a JSON array with one array of shard indices per node.
    #[arg(long, value_name = "FILE")]
    assignment: Option<PathBuf>,
    /// Faults, TOML: an `[all]` table and `[node.<index or name>]` tables of fault fields
    /// (offline, latency_ms, jitter_ms, bandwidth_bytes_per_sec, error_rate, error_status,
    /// stall, truncate, corrupt_slivers, wrong_index, wrong_symbol_size, wrong_metadata,
    /// lie_not_found, wrong_tls_key, forbidden).
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
    /// Take the first K nodes offline (connection refused).
    #[arg(long, value_name = "K", default_value_t = 0)]
    offline_nodes: usize,
    /// Make the K nodes after the offline ones serve corrupted sliver bytes.
    #[arg(long, value_name = "K", default_value_t = 0)]
    corrupt_nodes: usize,
    /// Add this latency to every response of every node (overrides --faults latencies).
    #[arg(long, value_name = "MS")]
    latency_ms: Option<u64>,
    /// Serve HTTPS: each node presents a self-signed certificate of its P-256 network key,
    /// named like a real node's (CN and SAN DNS: the key's *.network.walrus.alt server name;
    /// SAN IP:127.0.0.1); the committee file lists https:// URLs and each node's
    /// network_public_key.
    #[arg(long)]
    tls: bool,
    /// Write every node's certificate (PEM, concatenated) here, e.g. for NODE_EXTRA_CA_CERTS.
    #[arg(long, value_name = "PATH")]
    certs_out: Option<PathBuf>,
    /// Advance the epoch every N seconds (about a third of the shards move each time).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    epoch_secs: Option<u64>,
    /// How long an epoch change stays in EpochChangeSync, old owners still serving.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    epoch_sync_ms: u64,
    /// Also run a simulated Sui full node here (loopback only): `sui.rpc.v2` LedgerService
    /// (native gRPC and gRPC-Web) serving the Walrus System, Staking and pool objects of this
    /// network, plus `POST /sim/epoch` and `POST /sim/nodes/{name}/address`. Prints
    /// `sui <url> system <id> staking <id>` when ready.
    #[arg(long, value_name = "ADDR")]
    sui_listen: Option<std::net::SocketAddr>,
    /// Write a Walrus client_config.yaml pointing at --sui-listen, for
    /// `walrus-gateway serve --walrus-config PATH`.
    #[arg(long, value_name = "PATH", requires = "sui_listen")]
    walrus_config_out: Option<PathBuf>,
}

impl Args {
    fn sim_config(&self) -> anyhow::Result<SimConfig> {
        let names: Vec<String> = (0..self.nodes).map(|i| format!("node-{i}")).collect();
        let mut faults = match &self.faults {
            Some(path) => FaultsFile::load(path)?.resolve(&names)?,
            None => vec![NodeFaults::default(); self.nodes],
        };
        if self.offline_nodes + self.corrupt_nodes > self.nodes {
            bail!(
                "--offline-nodes {} plus --corrupt-nodes {} exceed --nodes {}",
                self.offline_nodes,
                self.corrupt_nodes,
                self.nodes
            );
        }
        for f in faults.iter_mut().take(self.offline_nodes) {
            f.offline = true;
        }
        for f in faults
            .iter_mut()
            .skip(self.offline_nodes)
            .take(self.corrupt_nodes)
        {
            f.corrupt_slivers = true;
        }
        if let Some(ms) = self.latency_ms {
            for f in &mut faults {
                f.latency_ms = ms;
            }
        }
        let assignment = match &self.assignment {
            Some(path) => {
                let text = std::fs::read(path)
                    .with_context(|| format!("reading assignment {}", path.display()))?;
                Some(
                    serde_json::from_slice::<Vec<Vec<u16>>>(&text).with_context(|| {
                        format!("{} is not a JSON array of shard arrays", path.display())
                    })?,
                )
            }
            None => None,
        };
        Ok(SimConfig {
            n_shards: self.n_shards,
            nodes: self.nodes,
            base_port: self.base_port,
            data_dir: self.data_dir.clone(),
            assignment,
            faults,
            tls: self.tls,
            epoch_sync_ms: self.epoch_sync_ms,
            epoch_secs: self.epoch_secs,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let network = SimNetwork::start(args.sim_config()?).await?;
    let network = std::sync::Arc::new(network);
    let mut stdout = std::io::stdout();
    for path in &args.seeds {
        let blob = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let net = network.clone();
        let blob_id = tokio::task::spawn_blocking(move || net.store(&blob))
            .await?
            .with_context(|| format!("seeding {}", path.display()))?;
        writeln!(stdout, "seeded {blob_id} {}", path.display())?;
    }
    for node in &network.committee().nodes {
        tracing::info!(name = %node.name, url = %node.url, shards = node.shards.len(), "node");
    }
    let mut committee_writer = None;
    if let Some(path) = &args.committee_out {
        network.committee().save(path)?;
        committee_writer = Some(tokio::spawn(keep_committee_file(
            network.clone(),
            path.clone(),
        )));
    }
    if let Some(path) = &args.certs_out {
        storage_sim::persist::write_atomic(path, network.certificates_pem().as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let sui = match args.sui_listen {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                anyhow::bail!(
                    "--sui-listen {addr}: the simulated full node listens on loopback only"
                );
            }
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let sui = storage_sim::sui::SuiSim::start(listener, network.chain_control()).await?;
            if let Some(path) = &args.walrus_config_out {
                storage_sim::persist::write_atomic(path, sui.client_config().as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            writeln!(
                stdout,
                "sui {} system {} staking {}",
                sui.url(),
                sui.system_object(),
                sui.staking_object()
            )?;
            Some(sui)
        }
        None => None,
    };
    writeln!(stdout, "ready")?;
    stdout.flush()?;

    wait_for_signal().await?;
    tracing::info!("shutting down");
    if let Some(writer) = committee_writer {
        writer.abort();
        let _ = writer.await;
    }
    if let Some(sui) = sui {
        sui.shutdown().await;
    }
    match std::sync::Arc::try_unwrap(network) {
        Ok(network) => network.shutdown().await,
        Err(network) => drop(network),
    }
    Ok(())
}

/// Rewrite the committee file whenever the committee changes (epochs, node moves).
async fn keep_committee_file(network: std::sync::Arc<SimNetwork>, path: PathBuf) {
    let mut changed = network.chain_control().changed();
    let mut last = network.committee();
    while changed.changed().await.is_ok() {
        let committee = network.committee();
        if committee == last {
            continue;
        }
        match committee.save(&path) {
            Ok(()) => last = committee,
            Err(e) => tracing::warn!(error = %e, "cannot rewrite the committee file"),
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
