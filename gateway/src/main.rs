//! `walrus-gateway`: serve Walrus blobs over HTTP from a committee of storage nodes (or an
//! embedded simulated one), or print a file's Blob ID. Parses arguments and calls the library.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use codec::ConsistencyCheck;
use gateway::config::parse_size;
use gateway::{Gateway, GatewayConfig};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use storage_sim::committee::Committee;
use storage_sim::{SimConfig, SimNetwork};

mod quilt_cli;

#[derive(Parser)]
#[command(version, about = "Verified, cached edge gateway for Walrus blobs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the aggregator read API (`GET /v1/blobs/{id}`) with verified fills and a cache.
    Serve(Box<ServeArgs>),
    /// Store files on Walrus through a gateway's `PUT /v1/blobs`; prints `<blob_id>  <file>`.
    ///
    /// Each file is streamed as the request body (memory stays at a few MiB whatever its size),
    /// with a progress bar on a terminal. A refused upload prints the gateway's status and
    /// message (413 with its size limit, 401, 403, 451).
    Put {
        #[arg(long, default_value = "http://127.0.0.1:31415")]
        gateway: String,
        /// Bearer token, if the gateway requires one to publish.
        #[arg(long, env = "WALRUS_GATEWAY_PUBLISH_TOKEN")]
        token: Option<String>,
        /// Store the files as one quilt (`PUT /v1/quilts`), each a patch named by its file
        /// name; prints `<quilt_patch_id>  <file>`.
        #[arg(long)]
        quilt: bool,
        /// Files to store (`-` reads standard input).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Download a blob, verify it against its Blob ID as it arrives, and write it (never
    /// unverified bytes); or download a quilt patch by its quilt patch ID.
    ///
    /// The gateway's `/v1/blobs/{id}/metadata` is checked against the Blob ID, then every row
    /// of the blob against it as the row arrives; memory stays at a few rows (a row is 1/kp of
    /// the blob: 1.5 MB of a 500 MB blob on 1000 shards). With --output, the blob goes to a
    /// temporary file next to the target that is renamed into place only once all of it
    /// verified: on any failure nothing is left at the target. To standard output, each row is
    /// written as soon as it verified: every byte written is verified, but a failure midway
    /// leaves a verified prefix there (and a non-zero exit). A closed standard output
    /// (`get … | head`) ends the command quietly with exit code 141.
    ///
    /// A quilt patch ID (50 characters) streams `/v1/blobs/by-quilt-patch-id/{id}`. Checked:
    /// the quilt's metadata against the quilt's Blob ID, that the patch's columns are the
    /// quilt's, and that the body is no longer than those columns and as long as declared. NOT
    /// checked: the patch's bytes against the quilt's Blob ID (that needs the quilt's column
    /// slivers); to verify them, `get` the quilt's Blob ID (the whole quilt) instead.
    Get {
        #[arg(long, default_value = "http://127.0.0.1:31415")]
        gateway: String,
        /// Committee size the Blob ID is for; default: what the gateway reports on /status.
        #[arg(long)]
        n_shards: Option<u16>,
        /// The Blob ID, or a quilt patch ID (base64url: it may start with `-`, which is not
        /// taken for an option).
        #[arg(allow_hyphen_values = true)]
        blob_id: String,
        /// Output file (renamed into place once verified); default: standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Check an inference proof stored as a blob: download it and the model (each verified
    /// against its Blob ID), check the signature, re-run the model locally on the inputs and
    /// compare outputs. Exits non-zero naming the first failed check.
    ///
    /// A proof stored as a quilt patch (`proof.quilt_patch_id`) is read by its patch ID; its
    /// bytes are not checked against the quilt's Blob ID, and need not be: the signature covers
    /// the record, which commits to the outputs.
    VerifyProof {
        #[arg(long, default_value = "http://127.0.0.1:31415")]
        gateway: String,
        /// Committee size the Blob IDs are for; default: what the gateway reports on /status.
        #[arg(long)]
        n_shards: Option<u16>,
        /// Also require the proof to be signed by this ed25519 public key (hex).
        #[arg(long)]
        signer: Option<String>,
        /// The proof's Blob ID (`proof.blob_id`) or quilt patch ID (`proof.quilt_patch_id`)
        /// (base64url: it may start with `-`, which is not taken for an option).
        #[arg(allow_hyphen_values = true)]
        proof_blob_id: String,
        /// The JSON request body that was sent: `{"inputs": {...}}`.
        #[arg(long)]
        inputs: PathBuf,
    },
    /// Print the committee the gateway would read from (epoch, state, shards, and per node its
    /// name, URL, shard count and TLS key), read exactly as `serve` reads it: an operator's
    /// first check that the chain path works.
    Committee {
        #[command(flatten)]
        source: SourceArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the Blob ID of a file (`-` reads standard input), for the committee size of
    /// --gateway (what it reports on /status), or --n-shards, or else 1000 (Walrus mainnet and
    /// testnet).
    BlobId {
        /// Shards in the committee the ID is for.
        #[arg(long, conflicts_with = "gateway")]
        n_shards: Option<u16>,
        /// Take the committee size from this gateway (`x-walrus-n-shards` on `GET /status`).
        #[arg(long, value_name = "URL")]
        gateway: Option<String>,
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Consistency {
    /// Re-hash every systematic row that was reconstructed (Walrus's default).
    Default,
    /// Re-encode the whole blob and compare Blob IDs before sending a byte.
    Strict,
}

/// Where the committee comes from: at most one of --network, --walrus-config, --committee;
/// none = the embedded simulated network (or upstreams only).
#[derive(clap::Args)]
struct SourceArgs {
    /// Read the committee from Sui: the built-in `mainnet` or `testnet` objects and full node.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["walrus_config", "committee"])]
    network: Option<chain::network::Preset>,
    /// Read the committee from Sui as Walrus's own client_config.yaml describes it
    /// (system_object, staking_object, rpc_urls; single- or multi-context).
    #[arg(long, value_name = "FILE", conflicts_with = "committee")]
    walrus_config: Option<PathBuf>,
    /// The context of a multi-context --walrus-config (default: its default_context).
    #[arg(long, value_name = "NAME", requires = "walrus_config")]
    walrus_context: Option<String>,
    /// Sui full-node gRPC URL, replacing the network's (repeatable, tried in order).
    #[arg(long = "sui-rpc", value_name = "URL")]
    sui_rpc: Vec<String>,
    /// Longest wait for one Sui gRPC call.
    #[arg(long, default_value_t = 10_000)]
    sui_timeout_ms: u64,
    /// Reach the chain's storage nodes over `https` (every real node: TLS pinned to the
    /// on-chain key) or plain `http` (simulators and local test networks only).
    #[arg(long, default_value = "https", value_name = "SCHEME")]
    storage_node_scheme: gateway::committee::NodeScheme,
    /// A static committee file (as walrus-sim writes it).
    #[arg(long)]
    committee: Option<PathBuf>,
}

impl SourceArgs {
    /// The chain to read, if the committee comes from one.
    fn network(&self) -> anyhow::Result<Option<chain::network::NetworkConfig>> {
        let mut network = match (&self.network, &self.walrus_config) {
            (Some(preset), _) => preset.config(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                chain::network::parse_client_config(&text, self.walrus_context.as_deref())
                    .with_context(|| {
                        format!("{} is not a usable Walrus client config", path.display())
                    })?
            }
            (None, None) => {
                if !self.sui_rpc.is_empty() {
                    bail!("--sui-rpc needs --network or --walrus-config");
                }
                return Ok(None);
            }
        };
        if !self.sui_rpc.is_empty() {
            network.rpc_urls = self.sui_rpc.clone();
        }
        Ok(Some(network))
    }

    fn reader(&self, network: chain::network::NetworkConfig) -> gateway::chain_reader::ChainReader {
        gateway::chain_reader::ChainReader::new(network, Duration::from_millis(self.sui_timeout_ms))
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Plain TCP listener: HTTP/1.1, and HTTP/2 without TLS (h2c) for clients that use prior
    /// knowledge (they open with the HTTP/2 preface, as `curl --http2-prior-knowledge` and
    /// gRPC-style clients do; there is no `Upgrade: h2c`). For a local load balancer or sidecar.
    #[arg(long, visible_alias = "listen", default_value = "127.0.0.1:31415")]
    bind: SocketAddr,
    /// Do not open the plain HTTP/1.1 + h2c listener (--bind/--listen): serve only on
    /// --https-listen and/or --h3-listen.
    #[arg(long)]
    no_plain: bool,
    /// Serve the plain listener's HTTP/1.1 with hyper alone, instead of the lean GET/HEAD
    /// server that sends memory-tier blobs with sendfile (for comparison and diagnosis).
    #[arg(long)]
    hyper_http1: bool,
    /// Also serve HTTP/1.1 and HTTP/2 over TLS here, chosen by ALPN (needs --tls-cert/--tls-key
    /// or --tls-self-signed).
    #[arg(long)]
    https_listen: Option<SocketAddr>,
    /// Also serve HTTP/3 over QUIC on this UDP address (needs a certificate). Responses on the
    /// TCP listeners then advertise it with `Alt-Svc` (only then: without --h3-listen no
    /// response carries Alt-Svc). Its port must be reachable over UDP where TCP is.
    #[arg(long)]
    h3_listen: Option<SocketAddr>,
    /// PEM certificate chain (leaf first) for --https-listen and --h3-listen.
    #[arg(long, requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Generate a self-signed certificate for local use and print its SHA-256 fingerprint.
    /// Needs --https-listen or --h3-listen (the plain listener has no TLS): refused alone.
    #[arg(long)]
    tls_self_signed: bool,
    /// Names the self-signed certificate is valid for (repeatable).
    #[arg(long, default_values = ["localhost", "127.0.0.1", "::1"], requires = "tls_self_signed")]
    tls_self_signed_name: Vec<String>,
    /// Write the self-signed certificate (PEM) here, for clients' `--cacert`.
    #[arg(long, requires = "tls_self_signed")]
    tls_self_signed_out: Option<PathBuf>,
    /// Requests open at once on one HTTP/2 or HTTP/3 connection.
    #[arg(long, default_value_t = 200)]
    max_streams_per_connection: u32,
    /// Close a connection with no request in flight for this long (HTTP/1.1 keep-alive on
    /// hyper, HTTP/2 and HTTP/3 with a GOAWAY; QUIC also closes a silent connection).
    #[arg(long, default_value_t = 30_000)]
    idle_timeout_ms: u64,
    /// Largest UDP payload HTTP/3 may send (upper bound of path MTU discovery), 1200-65527.
    /// The default fits any Ethernet path; raise it only where larger datagrams are carried
    /// (65507 on loopback, 8952 with 9000-byte jumbo frames): fewer, larger packets cut QUIC's
    /// per-packet CPU cost. Above 6500, UDP segmentation offload is turned off.
    #[arg(long, default_value_t = gateway::h3::DEFAULT_MAX_UDP_PAYLOAD,
          value_parser = clap::value_parser!(u16).range(1200..=65527))]
    h3_max_udp_payload: u16,
    /// Blob requests one connection may hold slots for at once (HTTP/2 and HTTP/3 multiplex
    /// many); beyond it 429, without touching the global --max-concurrent-requests pool.
    /// 0: only the global bound.
    #[arg(long, default_value_t = 64)]
    max_requests_per_connection: usize,
    /// Blob requests all connections from one client address may hold at once. 0 (default):
    /// off, because clients behind one NAT or proxy share an address; loopback clients are
    /// exempt unless --client-share-loopback.
    #[arg(long, default_value_t = 0)]
    max_requests_per_client: usize,
    /// Apply --max-requests-per-client to loopback clients too.
    #[arg(long)]
    client_share_loopback: bool,
    /// A request head must arrive within this long: the first one from the connection's
    /// start (after the TLS handshake), later ones on the lean HTTP/1.1 server from the end of
    /// the previous response.
    #[arg(long, default_value_t = 30_000)]
    header_read_timeout_ms: u64,
    /// A TLS handshake must complete within this long.
    #[arg(long, default_value_t = 10_000)]
    tls_handshake_timeout_ms: u64,
    /// A response (HTTP/2, HTTP/3: a stream) the client takes no bytes of for this long is
    /// reset and its request slot freed; a TCP connection whose writes stall this long closes.
    #[arg(long, default_value_t = 60_000)]
    write_stall_timeout_ms: u64,
    /// Send an HTTP/2 PING this often; 0: never.
    #[arg(long, default_value_t = 20_000)]
    h2_keepalive_interval_ms: u64,
    /// Close an HTTP/2 connection whose PING is not answered within this long.
    #[arg(long, default_value_t = 20_000)]
    h2_keepalive_timeout_ms: u64,
    /// A request body that sends nothing for this long fails (400).
    #[arg(long, default_value_t = 15_000)]
    body_timeout_ms: u64,
    /// A request body not complete this long after it was first read fails (400).
    #[arg(long, default_value_t = 600_000)]
    body_total_timeout_ms: u64,
    /// Serve GET /metrics on a plain listener of its own at this address; the public
    /// listeners then answer 404 at /metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// A denylist of Blob IDs, in the Walrus aggregator's --blocklist format (a YAML list:
    /// `- <blob id>` per line, or `[]`); the file must exist. Listed blobs answer 451
    /// FORBIDDEN_BLOB and are purged and never fetched, published or run. Re-read when it
    /// changes and on SIGHUP; PUT/DELETE /admin/blocklist/{id} edit it.
    #[arg(long, value_name = "FILE")]
    blocklist: Option<PathBuf>,
    /// Write one line per request here (`-`: standard output): arrival time, client, method,
    /// target, protocol, status, body bytes, duration, X-Cache tier, and for misses the wait
    /// for the fill. A thread of its own writes it; when it falls behind, lines are dropped
    /// and counted (gateway_access_log_dropped_total) rather than slow a response.
    #[arg(long, value_name = "PATH|-")]
    access_log: Option<String>,
    /// Access log lines: `combined` (NCSA combined, then `cache= duration= fill= complete=`)
    /// or `json` (one object per line).
    #[arg(long, default_value = "combined", value_name = "combined|json")]
    access_log_format: gateway::access_log::Format,
    /// Diagnostic log lines on standard error: `text` or `json` (one object per line). Filter
    /// with RUST_LOG (default `info`); colour only when standard error is a terminal and
    /// NO_COLOR is unset.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Blob attributes (the Sui Blob object's metadata) that GET /v1/blobs/by-object-id/{id}
    /// returns as response headers, as the Walrus aggregator's --allowed-headers; any other
    /// attribute is dropped. Case-insensitive; one or more names.
    #[arg(long, num_args = 1.., value_name = "HEADER",
          default_values_t = gateway::config::DEFAULT_ALLOWED_HEADERS.map(String::from))]
    allowed_headers: Vec<String>,
    #[command(flatten)]
    source: SourceArgs,
    /// An aggregator-compatible upstream (a Walrus aggregator or a parent walrus-gateway),
    /// tried before the storage nodes; repeatable, in order of preference. Everything it sends
    /// is verified against the Blob ID before it is cached or served.
    #[arg(long = "upstream", value_name = "URL")]
    upstreams: Vec<gateway::upstream::Upstream>,
    /// Committee size Blob IDs are checked for when there is no --committee (upstreams only).
    #[arg(long, default_value_t = 1000)]
    n_shards: u16,
    /// Ask the next upstream too when the current one has sent no verified bytes after this.
    #[arg(long, default_value_t = 500)]
    upstream_hedge_ms: u64,
    /// Longest wait for an upstream's response headers.
    #[arg(long, default_value_t = 10_000)]
    upstream_timeout_ms: u64,
    /// Shards of the embedded network.
    #[arg(long, default_value_t = 10)]
    sim_shards: u16,
    /// Nodes of the embedded network.
    #[arg(long, default_value_t = 4)]
    sim_nodes: usize,
    /// Store this file in the embedded network at start and print its Blob ID (repeatable).
    #[arg(long)]
    seed: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "default")]
    consistency: Consistency,
    /// Memory cache size, e.g. `1GiB`.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    memory_cache: u64,
    /// Larger blobs skip the memory tier (they are kept on disk when there is a disk tier).
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    memory_max_object: u64,
    /// Directory of the disk tier (survives restarts; locked: one gateway per directory).
    /// Without it, `$XDG_CACHE_HOME/walrus-gateway` (else `~/.cache/walrus-gateway`), capped
    /// at half the free space there; if another gateway holds that one, memory only.
    #[arg(long, conflicts_with = "no_disk_cache")]
    cache_dir: Option<PathBuf>,
    /// No disk tier: memory only (blobs over --memory-max-object are then never cached).
    #[arg(long)]
    no_disk_cache: bool,
    /// Disk tier size, e.g. `50GiB` (quarantined files included). If the device fills first, the
    /// bound in force drops to what fits there and the tier evicts.
    #[arg(long, default_value = "50GiB", value_parser = parse_size)]
    disk_cache: u64,
    /// Bytes per second the background scrub re-reads cached files to check them against their
    /// Blob IDs (a failing file is quarantined and refilled), e.g. `64MiB`; `0` turns it off.
    /// An upper bound: the scrub runs at idle CPU priority and slows while requests keep the
    /// cores busy (achieved rate in `GET /admin/cache`).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    scrub_rate: u64,
    /// Bearer token for the admin API (/admin/...); without it there is no admin API.
    #[arg(long, env = "WALRUS_GATEWAY_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Refuse `PUT /v1/blobs` (403), e.g. on a read-only edge.
    #[arg(long)]
    no_publish: bool,
    /// Bearer token required to publish (`PUT /v1/blobs`); without it anyone may publish.
    #[arg(long, env = "WALRUS_GATEWAY_PUBLISH_TOKEN")]
    publish_token: Option<String>,
    /// A Walrus publisher (that you run) to forward uploads and stored proofs to, for a
    /// gateway reading the committee from Sui (--network, --walrus-config): storing there needs
    /// on-chain registration and payment, which the publisher does. Its answer is passed
    /// through, and the bytes are cached only if it names the Blob ID they encode to.
    #[arg(long, value_name = "URL")]
    publisher: Option<gateway::upstream::Upstream>,
    /// Longest a forwarded upload and the publisher's answer may take.
    #[arg(long, default_value_t = 300_000)]
    publisher_timeout_ms: u64,
    /// Largest upload accepted (413 beyond), e.g. `1GiB`.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    max_upload: u64,
    /// Uploads larger than this wait in an unnamed temporary file instead of memory.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    upload_spool: u64,
    /// Publishes (uploads and stored inference proofs) at once; beyond, 503 with Retry-After,
    /// before the body is read.
    #[arg(long, default_value_t = 4)]
    max_concurrent_publishes: usize,
    /// Memory all publishes together may hold, each counted at its estimated peak (8-9 times
    /// the upload, reserved before its body is read); beyond, 503 with Retry-After. One
    /// publish alone is always admitted.
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    publish_memory: u64,
    /// Memory inference request bodies and their parsed inputs may hold together (each
    /// counted at twice its body, reserved before it is read); beyond, 503 with Retry-After.
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    inference_memory: u64,
    /// Refuse blobs above this size (403); default: the committee's maximum.
    #[arg(long, value_parser = parse_size)]
    max_blob_size: Option<u64>,
    /// Blob requests served at once; beyond this, 429.
    #[arg(long, default_value_t = 1024)]
    max_concurrent_requests: usize,
    /// Blobs filled at once; a request needing one more gets 429.
    #[arg(long, default_value_t = 64)]
    max_concurrent_fills: usize,
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Sliver requests in flight per fill.
    #[arg(long, default_value_t = 256)]
    max_slivers_in_flight: usize,
    /// Nodes asked for metadata at once.
    #[arg(long, default_value_t = 3)]
    metadata_fanout: usize,
    #[arg(long, default_value_t = 10_000)]
    metadata_timeout_ms: u64,
    #[arg(long, default_value_t = 60_000)]
    sliver_timeout_ms: u64,
    /// Ask for another sliver when one takes longer than this.
    #[arg(long, default_value_t = 2_000)]
    hedge_after_ms: u64,
    /// Blobs at least this long stream as soon as their first rows verify; shorter ones are
    /// answered once fully verified (so failures get a status, not an aborted body).
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    stream_from: u64,
    /// Wait for verified metadata before requesting slivers, even for blobs seen before (by
    /// default only blobs never seen wait: two round trips per fill instead of one).
    #[arg(long)]
    no_prefetch_slivers: bool,
    /// How long a "not found" (nodes holding 2f+1 shards, or every upstream, said so) is
    /// answered 404 without asking again, per Blob ID (at most 100,000 remembered), e.g. 30s,
    /// 500ms; 0: not remembered. A blob read right after certification can briefly 404, so
    /// keep it short. Publishing the blob here forgets it.
    #[arg(long, default_value = "30s", value_parser = gateway::config::parse_duration)]
    negative_ttl: Duration,
    /// The same in milliseconds (the old name of `--negative-ttl`); overrides it if given.
    #[arg(long, hide = true)]
    negative_cache_ttl_ms: Option<u64>,
    /// How often a cached deletable blob's status is asked of the nodes again; a blob its
    /// owner deleted is then dropped from memory and disk (e.g. `1h`, `10m`, `30s`).
    #[arg(long, default_value = "1h", value_parser = gateway::config::parse_duration)]
    revalidate_deletable: Duration,
    /// How long a by-object-id lookup (the Sui object's Blob ID and attributes) is reused
    /// before the full node is asked again (e.g. `10s`, `1m`); `0s`: ask on every request.
    /// Concurrent lookups of one object make one request either way.
    #[arg(long, default_value = "10s", value_parser = gateway::config::parse_duration)]
    object_cache_ttl: Duration,
    /// ed25519 key signing inference proofs, created if absent; default:
    /// `<cache-dir>/gateway-identity.key`; with neither, a key that lasts as long as the process.
    #[arg(long)]
    identity_key: Option<PathBuf>,
    /// Store every inference proof, as if each request asked `"proof": "store"`.
    #[arg(long)]
    store_proofs: bool,
    /// Stored proofs are batched: a batch closes this many milliseconds after its oldest proof
    /// (or at --proof-batch-max) and is stored as one quilt, each proof a patch, cut where the
    /// quilt costs the fewest encoded bytes per proof (the rest start the next batch); the
    /// answer names `proof.quilt_id` and `proof.quilt_patch_id`.
    #[arg(long, default_value_t = 250)]
    proof_batch_ms: u64,
    /// Most proofs in one batch (also capped by what a quilt of the committee holds: one fewer
    /// than its secondary symbols). 0: no batching, each proof stored as a blob of its own
    /// (`proof.blob_id`).
    #[arg(long, default_value_t = 256)]
    proof_batch_max: usize,
    /// Proofs waiting for (or in) their batch's publish at once; one more is refused with 503
    /// before the model runs.
    #[arg(long, default_value_t = 4096)]
    proof_queue: usize,
    /// Bytes of those proofs at once; one more that does not fit is refused with 503.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    proof_queue_bytes: u64,
    /// Inference runs at once (off the reactor); default: the number of cores.
    #[arg(long)]
    inference_concurrency: Option<usize>,
    /// Inference requests that may wait for a run slot (429 beyond); default: 64 per slot.
    #[arg(long)]
    inference_queue: Option<usize>,
    /// Longest inference run before 504, answered at the deadline; the run stops at its next
    /// operator boundary and frees its slot.
    #[arg(long, default_value_t = 30_000)]
    inference_timeout_ms: u64,
    /// Longest wait for an inference run slot; a request still waiting then gets 429 saying the
    /// run slots stayed busy (a full queue is 429 at once, saying so).
    #[arg(long, default_value_t = 5_000)]
    inference_queue_wait_ms: u64,
    /// Largest model blob fetched and parsed for inference (413 beyond).
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    max_model_size: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::BlobId {
            n_shards,
            gateway,
            file,
        } => blob_id(n_shards, gateway.as_deref(), &file),
        Command::Put {
            gateway,
            token,
            quilt: true,
            files,
        } => quilt_cli::put(&gateway, token.as_deref(), &files),
        Command::Put {
            gateway,
            token,
            files,
            ..
        } => put(&gateway, token.as_deref(), &files),
        Command::Get {
            gateway,
            n_shards,
            blob_id,
            output,
        } => get(&gateway, n_shards, &blob_id, output.as_deref()),
        Command::VerifyProof {
            gateway,
            n_shards,
            signer,
            proof_blob_id,
            inputs,
        } => verify_proof(
            &gateway,
            n_shards,
            signer.as_deref(),
            &proof_blob_id,
            &inputs,
        ),
        Command::Serve(args) => serve(*args),
        Command::Committee { source, json } => print_committee(&source, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::from(BROKEN_PIPE_EXIT),
        Err(e) => {
            eprintln!("walrus-gateway: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// What a shell reports for a process killed by SIGPIPE (128 + 13): `get … | head` ends with
/// it, as `cat` would, without a message.
const BROKEN_PIPE_EXIT: u8 = 141;

/// Standard output's reader went away.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<gateway::client::ClientError>()
            .is_some_and(|c| c.is_broken_pipe())
            || cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// An error and its causes on one line, each cause once: a cause whose text the line already
/// holds (an error that prints its source, as many do) is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// `walrus-gateway committee`: read the committee as `serve` would and print it.
fn print_committee(source: &SourceArgs, json: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let view = match source.network()? {
        Some(net) => {
            let reader = source.reader(net);
            let (committee, cost) = runtime
                .block_on(reader.read())
                .context("cannot read the committee from the chain")?;
            CommitteeView::from_chain(&committee, source.storage_node_scheme, cost.rpcs)
        }
        None => {
            let Some(path) = &source.committee else {
                bail!("nothing to print: give --network, --walrus-config or --committee");
            };
            let committee = Committee::load(path)
                .with_context(|| format!("cannot load the committee {}", path.display()))?;
            CommitteeView::from_file(&committee)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", view.table());
    }
    Ok(())
}

/// What `committee` prints.
#[derive(serde::Serialize)]
struct CommitteeView {
    epoch: Option<u32>,
    epoch_state: Option<&'static str>,
    n_shards: u16,
    rpcs: Option<u32>,
    nodes: Vec<NodeView>,
    previous_nodes: Option<usize>,
}

#[derive(serde::Serialize)]
struct NodeView {
    name: String,
    url: String,
    shards: usize,
    /// The on-chain TLS key (33-byte compressed P-256, hex), if any.
    network_public_key: Option<String>,
}

impl CommitteeView {
    fn from_chain(
        c: &chain::ChainCommittee,
        scheme: gateway::committee::NodeScheme,
        rpcs: u32,
    ) -> Self {
        Self {
            epoch: Some(c.epoch),
            epoch_state: Some(c.epoch_state.name()),
            n_shards: c.n_shards,
            rpcs: Some(rpcs),
            nodes: c
                .current
                .iter()
                .map(|m| NodeView {
                    name: m.name.clone(),
                    url: format!("{}://{}", scheme.as_str(), m.network_address),
                    shards: m.shards.len(),
                    network_public_key: Some(m.key_hex()),
                })
                .collect(),
            previous_nodes: Some(c.previous.len()),
        }
    }

    fn from_file(c: &Committee) -> Self {
        Self {
            epoch: None,
            epoch_state: None,
            n_shards: c.n_shards,
            rpcs: None,
            nodes: c
                .nodes
                .iter()
                .map(|n| NodeView {
                    name: n.name.clone(),
                    url: n.url.clone(),
                    shards: n.shards.len(),
                    network_public_key: n.network_public_key.clone(),
                })
                .collect(),
            previous_nodes: None,
        }
    }

    fn table(&self) -> String {
        let mut out = String::new();
        match (self.epoch, self.epoch_state) {
            (Some(epoch), Some(state)) => out.push_str(&format!(
                "epoch {epoch} ({state}), {} shards, {} nodes ({} in the previous committee), read in {} gRPC calls\n",
                self.n_shards,
                self.nodes.len(),
                self.previous_nodes.unwrap_or(0),
                self.rpcs.unwrap_or(0),
            )),
            _ => out.push_str(&format!(
                "static committee file: {} shards, {} nodes\n",
                self.n_shards,
                self.nodes.len()
            )),
        }
        let name_width = self
            .nodes
            .iter()
            .map(|n| n.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let url_width = self
            .nodes
            .iter()
            .map(|n| n.url.len())
            .max()
            .unwrap_or(3)
            .max(3);
        out.push_str(&format!(
            "{:name_width$}  {:url_width$}  {:>6}  key\n",
            "name", "url", "shards"
        ));
        for n in &self.nodes {
            // The key's first 8 bytes identify it; --json prints it whole.
            let key = n
                .network_public_key
                .as_deref()
                .map_or_else(|| "-".to_owned(), |k| format!("{}…", &k[..k.len().min(16)]));
            out.push_str(&format!(
                "{:name_width$}  {:url_width$}  {:>6}  {key}\n",
                n.name, n.url, n.shards
            ));
        }
        out
    }
}

fn blob_id(n_shards: Option<u16>, gateway: Option<&str>, file: &Path) -> anyhow::Result<()> {
    let n_shards = match (n_shards, gateway) {
        (Some(n), _) => n,
        (None, Some(gateway)) => runtime()?.block_on(gateway::client::n_shards(gateway))?,
        (None, None) => 1000,
    };
    let config = codec::EncodingConfig::new(n_shards)?;
    let bytes = read_limited(file, config.max_blob_size())?;
    println!("{}", codec::blob_id(n_shards, &bytes)?);
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn put(gateway: &str, token: Option<&str>, files: &[PathBuf]) -> anyhow::Result<()> {
    let runtime = runtime()?;
    for file in files {
        let label = file.display().to_string();
        let id = runtime
            .block_on(gateway::client::put_file(gateway, token, file, &label))
            .with_context(|| format!("cannot store {label}"))?;
        println!("{id}  {label}");
    }
    Ok(())
}

fn get(
    gateway: &str,
    n_shards: Option<u16>,
    id: &str,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let id: gateway::client::ContentId = id.parse()?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let n = match n_shards {
            Some(n) => n,
            None => gateway::client::n_shards(gateway).await?,
        };
        let out = match output {
            Some(path) => gateway::client::Output::File(path),
            None => gateway::client::Output::Stdout,
        };
        match id {
            gateway::client::ContentId::Blob(id) => {
                gateway::client::get(gateway, id, n, out).await?
            }
            gateway::client::ContentId::Patch(id) => {
                gateway::client::get_patch(gateway, id, n, out).await?
            }
        };
        Ok(())
    })
}

fn verify_proof(
    gateway: &str,
    n_shards: Option<u16>,
    signer: Option<&str>,
    id: &str,
    inputs: &Path,
) -> anyhow::Result<()> {
    let proof: gateway::client::ContentId = id.parse()?;
    let body = read_limited(inputs, gateway::api::inference::MAX_BODY as u64)?;
    let runtime = runtime()?;
    let verified = runtime.block_on(async {
        let n = match n_shards {
            Some(n) => n,
            None => gateway::client::n_shards(gateway).await?,
        };
        anyhow::Ok(gateway::verify::verify_stored_proof(gateway, n, proof, &body, signer).await?)
    })?;
    let comparison = match verified.comparison {
        inference::Comparison::Bitwise => "bitwise".to_owned(),
        inference::Comparison::Within(t) => format!(
            "within {} relative (largest difference {:e})",
            t.relative, verified.max_abs_diff
        ),
    };
    println!(
        "ok: proof {id} for model {} signed by {}; outputs re-computed and match ({comparison})",
        verified.model, verified.public_key
    );
    Ok(())
}

/// Read a file (or stdin for `-`), refusing more than `max` bytes.
fn read_limited(file: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let reader: Box<dyn Read> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
        )
    };
    let mut bytes = Vec::new();
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", file.display()))?;
    if bytes.len() as u64 > max {
        bail!(
            "{} is larger than the {max}-byte maximum for this committee size",
            file.display()
        );
    }
    Ok(bytes)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    raise_descriptor_limit();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve_async(args))
}

/// Diagnostic logs on standard error, filtered by RUST_LOG (default `info`): text with colour
/// only on a terminal without NO_COLOR (files and journald get no escape codes), or JSON.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .init(),
    }
}

/// Connections, disk-tier files and memory-tier files all hold descriptors: take the hard limit
/// as the soft one (as nginx's `worker_rlimit_nofile` would), and let memory files use at most
/// a quarter of it.
fn raise_descriptor_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    let files = getrlimit(Resource::Nofile).current.unwrap_or(1 << 20);
    let budget = usize::try_from((files / 4).min(1 << 16)).unwrap_or(1 << 16);
    gateway::memfile::set_budget(budget);
    tracing::debug!(
        open_files = files,
        memory_files = budget,
        "descriptor limits"
    );
}

async fn serve_async(args: ServeArgs) -> anyhow::Result<()> {
    let config = GatewayConfig {
        bind: args.bind,
        plain_listener: !args.no_plain,
        lean_http1: !args.hyper_http1,
        consistency: match args.consistency {
            Consistency::Default => ConsistencyCheck::Default,
            Consistency::Strict => ConsistencyCheck::Strict,
        },
        memory_cache_bytes: args.memory_cache,
        memory_max_object: args.memory_max_object,
        cache_dir: disk_tier_dir(&args),
        cache_dir_is_default: args.cache_dir.is_none(),
        disk_cache_bytes: args.disk_cache,
        scrub_rate: args.scrub_rate,
        admin_token: args.admin_token.clone(),
        publish_enabled: !args.no_publish,
        publish_token: args.publish_token.clone(),
        publisher: args.publisher.clone(),
        publisher_timeout: Duration::from_millis(args.publisher_timeout_ms),
        max_upload: args.max_upload,
        upload_spool_threshold: args.upload_spool,
        max_concurrent_publishes: args.max_concurrent_publishes,
        publish_memory: args.publish_memory,
        inference_memory: args.inference_memory,
        max_concurrent_requests: args.max_concurrent_requests,
        max_concurrent_fills: args.max_concurrent_fills,
        max_connections: args.max_connections,
        max_slivers_in_flight: args.max_slivers_in_flight,
        metadata_fanout: args.metadata_fanout,
        metadata_timeout: Duration::from_millis(args.metadata_timeout_ms),
        sliver_timeout: Duration::from_millis(args.sliver_timeout_ms),
        hedge_after: Duration::from_millis(args.hedge_after_ms),
        max_blob_size: args.max_blob_size,
        prefetch_slivers: !args.no_prefetch_slivers,
        stream_from_bytes: args.stream_from,
        upstreams: args.upstreams.clone(),
        upstream_hedge: Duration::from_millis(args.upstream_hedge_ms),
        upstream_timeout: Duration::from_millis(args.upstream_timeout_ms),
        identity_key: args.identity_key.clone(),
        store_proofs: args.store_proofs,
        proof_batch: Duration::from_millis(args.proof_batch_ms),
        proof_batch_max: args.proof_batch_max,
        proof_queue: args.proof_queue,
        proof_queue_bytes: args.proof_queue_bytes,
        inference_concurrency: args.inference_concurrency,
        inference_queue: args.inference_queue,
        inference_timeout: Duration::from_millis(args.inference_timeout_ms),
        inference_queue_wait: Duration::from_millis(args.inference_queue_wait_ms),
        max_model_size: args.max_model_size,
        https_listen: args.https_listen,
        h3_listen: args.h3_listen,
        tls: tls_identity(&args)?,
        max_streams_per_connection: args.max_streams_per_connection,
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        h3_max_udp_payload: args.h3_max_udp_payload,
        negative_cache_ttl: args
            .negative_cache_ttl_ms
            .map_or(args.negative_ttl, Duration::from_millis),
        revalidate_deletable: args.revalidate_deletable,
        object_cache_ttl: args.object_cache_ttl,
        max_requests_per_connection: args.max_requests_per_connection,
        max_requests_per_client: args.max_requests_per_client,
        client_share_loopback: args.client_share_loopback,
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
        tls_handshake_timeout: Duration::from_millis(args.tls_handshake_timeout_ms),
        write_stall_timeout: Duration::from_millis(args.write_stall_timeout_ms),
        h2_keepalive_interval: (args.h2_keepalive_interval_ms > 0)
            .then(|| Duration::from_millis(args.h2_keepalive_interval_ms)),
        h2_keepalive_timeout: Duration::from_millis(args.h2_keepalive_timeout_ms),
        body_timeout: Duration::from_millis(args.body_timeout_ms),
        body_total_timeout: Duration::from_millis(args.body_total_timeout_ms),
        metrics_listen: args.metrics_listen,
        blocklist: args.blocklist.clone(),
        access_log: args.access_log.as_deref().map(|destination| {
            gateway::access_log::AccessLogConfig::new(destination, args.access_log_format)
        }),
        allowed_headers: args
            .allowed_headers
            .iter()
            .map(|h| {
                http::HeaderName::from_bytes(h.trim().as_bytes())
                    .map_err(|_| anyhow::anyhow!("--allowed-headers: {h:?} is not a header name"))
            })
            .collect::<anyhow::Result<_>>()?,
        ..GatewayConfig::default()
    };
    use gateway::server::CommitteeSource;
    let (source, network) = match (args.source.network()?, &args.source.committee) {
        (Some(net), _) => {
            if !args.seed.is_empty() {
                bail!("--seed stores files in the embedded network; it cannot be used with a chain-backed network");
            }
            tracing::info!(network = %net.name, rpc = ?net.rpc_urls, staking = %net.staking_object,
                "reading the committee from Sui");
            let source = CommitteeSource::Chain {
                reader: Box::new(args.source.reader(net)),
                scheme: args.source.storage_node_scheme,
                policy: chain::committee::RefreshPolicy::default(),
            };
            (source, None)
        }
        (None, _) if args.publisher.is_some() => {
            bail!("--publisher is for a gateway that reads the committee from Sui (--network or --walrus-config); with --committee or the embedded network, uploads go to the nodes directly");
        }
        (None, Some(path)) => {
            if !args.seed.is_empty() {
                bail!("--seed stores files in the embedded network; it cannot be used with --committee");
            }
            let committee = Committee::load(path)
                .with_context(|| format!("cannot load the committee {}", path.display()))?;
            (CommitteeSource::Static(committee), None)
        }
        (None, None) if !args.upstreams.is_empty() => {
            if !args.seed.is_empty() {
                bail!("--seed stores files in the embedded network; it cannot be used with --upstream alone");
            }
            codec::EncodingConfig::new(args.n_shards)
                .with_context(|| format!("--n-shards {}", args.n_shards))?;
            tracing::info!(
                upstreams = args.upstreams.len(),
                n_shards = args.n_shards,
                "no --committee: reading only from upstreams (publishing is off)"
            );
            let committee = Committee {
                n_shards: args.n_shards,
                nodes: Vec::new(),
            };
            (CommitteeSource::Static(committee), None)
        }
        (None, None) => {
            let network = SimNetwork::start(SimConfig {
                n_shards: args.sim_shards,
                nodes: args.sim_nodes,
                ..SimConfig::default()
            })
            .await
            .context("cannot start the embedded storage-sim network")?;
            tracing::info!(
                nodes = args.sim_nodes,
                shards = args.sim_shards,
                "no --committee given: started an embedded storage-sim network in this process"
            );
            let network = std::sync::Arc::new(network);
            for file in &args.seed {
                let bytes = read_limited(file, network.config().max_blob_size())?;
                let net = network.clone();
                let id = tokio::task::spawn_blocking(move || net.store(&bytes))
                    .await
                    .context("seeding task failed")?
                    .with_context(|| format!("cannot seed {}", file.display()))?;
                tracing::info!(blob_id = %id, file = %file.display(), "seeded the embedded network");
                println!("{id}");
            }
            (CommitteeSource::Static(network.committee()), Some(network))
        }
    };
    // Created on first start, so the key a proof names is fixed before the first request.
    match config.identity_key_path() {
        Some(path) => {
            let identity = inference::Identity::load_or_create(&path)
                .with_context(|| format!("cannot load the identity key {}", path.display()))?;
            tracing::info!(public_key = %identity.public_key_hex(), path = %path.display(), "inference proofs are signed with this key");
        }
        None => tracing::warn!(
            "no --identity-key or --cache-dir: inference proofs are signed with a key that lasts \
             only as long as this process"
        ),
    }
    let (default_dir, max_object) = (config.cache_dir.clone(), config.memory_max_object);
    let gateway = Gateway::bind_source(config, source).await?;
    if let Some(addr) = gateway.plain_addr() {
        println!("listening on http://{addr}");
    }
    if let Some(addr) = gateway.https_addr() {
        println!("listening on https://{addr}");
    }
    if let Some(addr) = gateway.h3_addr() {
        println!("listening on HTTP/3 (UDP) {addr}");
    }
    if let Some(addr) = gateway.metrics_addr() {
        println!("metrics on http://{addr}/metrics");
    }
    // After the listening lines (scripts read those first), and not `println!`: a reader that
    // closed our stdout once it had the address must not kill the gateway with EPIPE.
    let disk_line = match gateway.api().filler().cache().disk() {
        Some(disk) => format!(
            "disk tier {}, up to {} bytes{}",
            disk.root().display(),
            disk.capacity(),
            match args.cache_dir {
                Some(_) => "",
                None => " (the default directory; --cache-dir to choose, --no-disk-cache for none)",
            }
        ),
        None => format!(
            "no disk tier ({}): blobs over {max_object} bytes are never cached",
            match (args.no_disk_cache, default_dir) {
                (true, _) => "--no-disk-cache".to_owned(),
                (false, Some(dir)) => format!("{} is in use by another gateway", dir.display()),
                (false, None) =>
                    "no cache directory: neither XDG_CACHE_HOME nor HOME is set".to_owned(),
            }
        ),
    };
    let _ = std::io::Write::write_all(&mut std::io::stdout(), format!("{disk_line}\n").as_bytes());
    gateway.serve(shutdown_signal()).await;
    if let Some(network) = network {
        if let Ok(network) = std::sync::Arc::try_unwrap(network) {
            network.shutdown().await;
        }
    }
    Ok(())
}

/// The disk tier's directory: `--cache-dir`, none with `--no-disk-cache`, else the platform
/// cache directory (`$XDG_CACHE_HOME/walrus-gateway`, else `$HOME/.cache/walrus-gateway`).
fn disk_tier_dir(args: &ServeArgs) -> Option<PathBuf> {
    if args.no_disk_cache {
        return None;
    }
    if let Some(dir) = &args.cache_dir {
        return Some(dir.clone());
    }
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("XDG_CACHE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".cache")))
        .map(|base| base.join("walrus-gateway"))
}

/// The certificate of the TLS listeners: loaded from PEM files, or generated (its fingerprint
/// printed and its PEM written where asked).
fn tls_identity(args: &ServeArgs) -> anyhow::Result<Option<gateway::tls::TlsIdentity>> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let identity = gateway::tls::TlsIdentity::from_pem_files(cert, key)?;
        tracing::info!(sha256 = %identity.fingerprint(), "loaded the TLS certificate");
        return Ok(Some(identity));
    }
    if !args.tls_self_signed {
        return Ok(None);
    }
    if args.https_listen.is_none() && args.h3_listen.is_none() {
        bail!("--tls-self-signed makes a certificate for --https-listen or --h3-listen; give one of them (the plain listener speaks no TLS)");
    }
    let generated = gateway::tls::TlsIdentity::self_signed(&args.tls_self_signed_name)?;
    if let Some(path) = &args.tls_self_signed_out {
        std::fs::write(path, &generated.cert_pem)
            .with_context(|| format!("cannot write the certificate to {}", path.display()))?;
    }
    println!(
        "self-signed TLS certificate SHA-256 fingerprint {}",
        generated.identity.fingerprint()
    );
    Ok(Some(generated.identity))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}
