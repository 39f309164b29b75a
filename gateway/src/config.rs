//! Gateway configuration: every limit the read path enforces, in one place, with defaults
//! chosen for a single edge host. Also the parser for human byte sizes (`64MiB`).

use codec::ConsistencyCheck;
use std::net::SocketAddr;
use std::time::Duration;

/// Limits and policies of one gateway instance.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to listen for HTTP/1.1 and h2c.
    pub bind: SocketAddr,
    /// Open the plain HTTP/1.1 + h2c listener at `bind`; off, only the TLS listeners serve.
    pub plain_listener: bool,
    /// A request head must arrive within this long (a connection's first one counted from its
    /// start, after the TLS handshake); on the lean HTTP/1.1 server this also bounds an idle
    /// kept-alive connection.
    pub header_read_timeout: Duration,
    /// Answer the plain listener's HTTP/1.1 `GET`/`HEAD` with the lean server ([`crate::h1`]:
    /// `sendfile` from memory files, one `writev` per small response); off, hyper serves them.
    pub lean_http1: bool,
    /// A TCP connection (HTTP/2 and HTTP/3: a stream) whose writes make no progress this long
    /// (the client stopped reading) is closed (reset), and its request slot freed.
    pub write_stall_timeout: Duration,
    /// Whole-blob check after decoding (`Default` re-hashes reconstructed rows, `Strict`
    /// re-encodes the blob and compares Blob IDs, and then nothing streams before the check).
    pub consistency: ConsistencyCheck,
    /// Bytes of verified blobs kept in memory.
    pub memory_cache_bytes: u64,
    /// Larger blobs are served but not kept in memory.
    pub memory_max_object: u64,
    /// Blob requests served at once (hits, misses, streams); one more answers 429.
    pub max_concurrent_requests: usize,
    /// Distinct blobs being filled at once; a request that would start one more answers 429.
    pub max_concurrent_fills: usize,
    /// Open client connections; further connections wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Sliver requests in flight per fill.
    pub max_slivers_in_flight: usize,
    /// Metadata requests sent at once (the first reply that verifies wins).
    pub metadata_fanout: usize,
    /// Timeout of one metadata request, body included.
    pub metadata_timeout: Duration,
    /// Timeout of one sliver request, body included.
    pub sliver_timeout: Duration,
    /// A sliver request slower than this is hedged by asking for another sliver.
    pub hedge_after: Duration,
    /// Blobs at least this long start streaming as soon as their first rows verify (a failure
    /// after that aborts the body); shorter ones answer only once every byte is verified, so a
    /// failure gets a proper status. `Strict` never streams early.
    pub stream_from_bytes: u64,
    /// Aggregator-compatible upstreams (`--upstream`), tried in order before the storage nodes.
    pub upstreams: Vec<crate::upstream::Upstream>,
    /// Ask the next upstream too when the current one has not delivered verified bytes by then.
    pub upstream_hedge: Duration,
    /// Longest wait for an upstream's response headers (and a whole metadata response).
    pub upstream_timeout: Duration,
    /// Request the systematic slivers together with the metadata (one round trip per fill
    /// instead of two) for Blob IDs seen to exist before; an ID never seen waits for its
    /// metadata, so a random ID costs no sliver requests.
    pub prefetch_slivers: bool,
    /// Refuse blobs longer than this (403 `BLOB_TOO_LARGE`); `None`: the committee's maximum.
    pub max_blob_size: Option<u64>,
    /// Directory of the disk tier; `None`: memory only.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Bytes the disk tier may hold (files, headers included).
    pub disk_cache_bytes: u64,
    /// `cache_dir` is the default one (`serve` without `--cache-dir`), not one the operator
    /// named: when another gateway holds it, run memory-only instead of refusing to start, and
    /// bound the tier by half the device's free space too.
    pub cache_dir_is_default: bool,
    /// Bytes per second the disk scrub re-verifies against Blob IDs; 0: no scrub. `serve`'s
    /// `--scrub-rate` defaults to 64 MiB/s; the library default is off, so embedded gateways
    /// (and tests) ask nodes for nothing they did not ask for.
    pub scrub_rate: u64,
    /// Bearer token of the admin API (`/admin/...`); `None`: no admin API at all.
    pub admin_token: Option<String>,
    /// Whether `PUT /v1/blobs` publishes (otherwise 403).
    pub publish_enabled: bool,
    /// Bearer token required by `PUT /v1/blobs`; `None`: open.
    pub publish_token: Option<String>,
    /// A Walrus publisher that chain-backed gateways forward uploads to (`--publisher`).
    pub publisher: Option<crate::upstream::Upstream>,
    /// Longest a forwarded upload and the publisher's answer may take.
    pub publisher_timeout: Duration,
    /// Largest upload (413 beyond, before reading when the length is declared).
    pub max_upload: u64,
    /// Uploads above this size wait in a temporary file instead of memory.
    pub upload_spool_threshold: u64,
    /// Seconds clients are told to wait after a 503 or 429.
    pub retry_after_secs: u32,
    /// Publishes (uploads and stored proofs) received, encoded or sent at once; beyond, 503
    /// with `Retry-After` before the body is read.
    pub max_concurrent_publishes: usize,
    /// Memory all publishes together may hold, each counted at its
    /// [`crate::publish::memory_cost`] (about 8-9 times the upload) from before its body is
    /// read; beyond, 503. One publish alone is always admitted (its share is capped here).
    pub publish_memory: u64,
    /// Memory inference request bodies and their parsed inputs may hold together (each
    /// counted at twice its body), reserved before the body is read; beyond, 503.
    pub inference_memory: u64,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub shutdown_grace: Duration,
    /// The gateway's ed25519 key signing inference proofs (`--identity-key`), created on first
    /// use if absent; `None`: `gateway-identity.key` in `cache_dir`, or a key for this process only.
    pub identity_key: Option<std::path::PathBuf>,
    /// Publish every inference proof as a blob (as if each request asked `"proof": "store"`).
    pub store_proofs: bool,
    /// Stored proofs (issue 16): a batch of them closes this long after its first proof
    /// (`--proof-batch-ms`) ...
    pub proof_batch: Duration,
    /// ... or once it holds this many (`--proof-batch-max`, capped by what one quilt of the
    /// committee holds), and is stored as one quilt, each proof a patch. 0: each proof is
    /// stored as a blob of its own (`proof.blob_id`), the behaviour before quilts.
    pub proof_batch_max: usize,
    /// Proofs waiting for their batch's publish at once (`--proof-queue`); one more is 503.
    pub proof_queue: usize,
    /// Bytes of those proofs at once (`--proof-queue-bytes`); one more is 503.
    pub proof_queue_bytes: u64,
    /// Inference runs at once, off the reactor; the rest queue with a deadline. `None`: cores.
    pub inference_concurrency: Option<usize>,
    /// Inference requests that may wait for a run slot (429 beyond). `None`: 64 per slot.
    pub inference_queue: Option<usize>,
    /// Longest inference run before 504, answered at the deadline; the run stops at its next
    /// operator boundary and frees its slot.
    pub inference_timeout: Duration,
    /// Longest wait for an inference run slot before 429 (`--inference-queue-wait-ms`).
    pub inference_queue_wait: Duration,
    /// Largest model blob fetched and parsed (413 beyond, refused from its metadata).
    pub max_model_size: u64,
    /// Where to serve HTTP/1.1 and HTTP/2 over TLS (ALPN); `None`: no HTTPS listener.
    pub https_listen: Option<SocketAddr>,
    /// Where to serve HTTP/3 over QUIC (UDP); `None`: no HTTP/3. The TCP listeners then
    /// advertise it with `Alt-Svc`.
    pub h3_listen: Option<SocketAddr>,
    /// Certificate and key of the HTTPS and HTTP/3 listeners (required by either).
    pub tls: Option<crate::tls::TlsIdentity>,
    /// Requests open at once on one HTTP/2 or HTTP/3 connection; the peer is told not to
    /// open more.
    pub max_streams_per_connection: u32,
    /// A connection with no request in flight this long is closed (HTTP/2 and HTTP/3 with a
    /// GOAWAY; HTTP/1.1 keep-alive on hyper; the lean HTTP/1.1 server bounds the wait for the
    /// next request with `header_read_timeout`); QUIC also closes a connection silent this long.
    pub idle_timeout: Duration,
    /// Largest UDP payload HTTP/3 sends (path MTU discovery's upper bound); see
    /// [`crate::h3::H3Limits::max_udp_payload`].
    pub h3_max_udp_payload: u16,
    /// How long a blob that nodes (or every upstream) said does not exist is answered 404
    /// without asking again; zero: not remembered. Dropped when the blob is published here.
    pub negative_cache_ttl: Duration,
    /// How often a cached deletable blob's status is checked again with the nodes; one found
    /// deleted is dropped (`--revalidate-deletable`).
    pub revalidate_deletable: Duration,
    /// How long a by-object-id lookup (the Sui object's Blob ID and attributes) is reused
    /// without asking the full node again; zero: every request asks (`--object-cache-ttl`).
    pub object_cache_ttl: Duration,
    /// Blob requests one connection may hold slots for at once (HTTP/2 and HTTP/3 multiplex
    /// many); one more answers 429 without touching the global pool. 0: only the global bound.
    pub max_requests_per_connection: usize,
    /// Blob requests all connections from one client address may hold at once; 0 (default):
    /// off, since clients behind one NAT or proxy share an address.
    pub max_requests_per_client: usize,
    /// Apply `max_requests_per_client` to loopback clients too (off by default: load generators
    /// and a local proxy or sidecar all come from loopback).
    pub client_share_loopback: bool,
    /// A TLS handshake (HTTPS) must complete within this long.
    pub tls_handshake_timeout: Duration,
    /// HTTP/2 PINGs a connection this often (`None`: never); no answer within
    /// `h2_keepalive_timeout` closes it.
    pub h2_keepalive_interval: Option<Duration>,
    pub h2_keepalive_timeout: Duration,
    /// A request body that delivers no byte for this long fails (the request answers 400).
    pub body_timeout: Duration,
    /// A request body not complete this long after it was first read fails.
    pub body_total_timeout: Duration,
    /// Serve `GET /metrics` on a listener of its own here; the public listeners then answer 404
    /// there.
    pub metrics_listen: Option<SocketAddr>,
    /// The denylist file (`--blocklist`, the Walrus aggregator's YAML format); `None`: nothing
    /// is blocked and the blocklist admin routes answer 409.
    pub blocklist: Option<std::path::PathBuf>,
    /// One line per request here (`--access-log`), written off the request path; `None`: no
    /// access log (request durations are still measured).
    pub access_log: Option<crate::access_log::AccessLogConfig>,
    /// `GET /v1/blobs/by-object-id/{id}` (`--allowed-headers`): the blob attributes that become
    /// response headers; every other attribute is dropped. The aggregator's default list.
    pub allowed_headers: Vec<http::HeaderName>,
}

/// The Walrus aggregator's default `--allowed-headers`.
pub const DEFAULT_ALLOWED_HEADERS: [&str; 7] = [
    "content-type",
    "authorization",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-location",
    "link",
];

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 31415)),
            consistency: ConsistencyCheck::Default,
            memory_cache_bytes: 1 << 30,
            memory_max_object: 256 << 20,
            max_concurrent_requests: 1024,
            max_concurrent_fills: 64,
            max_connections: 10_000,
            max_slivers_in_flight: 256,
            metadata_fanout: 3,
            metadata_timeout: Duration::from_secs(10),
            sliver_timeout: Duration::from_secs(60),
            hedge_after: Duration::from_secs(2),
            stream_from_bytes: 16 << 20,
            upstreams: Vec::new(),
            upstream_hedge: Duration::from_millis(500),
            upstream_timeout: Duration::from_secs(10),
            prefetch_slivers: true,
            max_blob_size: None,
            cache_dir: None,
            disk_cache_bytes: 50 << 30,
            cache_dir_is_default: false,
            scrub_rate: 0,
            admin_token: None,
            publish_enabled: true,
            publish_token: None,
            publisher: None,
            publisher_timeout: Duration::from_secs(300),
            max_upload: 1 << 30,
            upload_spool_threshold: 64 << 20,
            retry_after_secs: 5,
            max_concurrent_publishes: 4,
            publish_memory: 2 << 30,
            inference_memory: 512 << 20,
            shutdown_grace: Duration::from_secs(10),
            identity_key: None,
            store_proofs: false,
            proof_batch: Duration::from_millis(250),
            proof_batch_max: 256,
            proof_queue: 4096,
            proof_queue_bytes: 256 << 20,
            inference_concurrency: None,
            inference_queue: None,
            inference_timeout: Duration::from_secs(30),
            inference_queue_wait: Duration::from_secs(5),
            max_model_size: 256 << 20,
            https_listen: None,
            h3_listen: None,
            tls: None,
            max_streams_per_connection: 200,
            idle_timeout: Duration::from_secs(30),
            h3_max_udp_payload: crate::h3::DEFAULT_MAX_UDP_PAYLOAD,
            plain_listener: true,
            lean_http1: true,
            header_read_timeout: Duration::from_secs(30),
            write_stall_timeout: crate::stall::WRITE_STALL_TIMEOUT,
            negative_cache_ttl: Duration::from_secs(30),
            revalidate_deletable: Duration::from_secs(3600),
            object_cache_ttl: Duration::from_secs(10),
            max_requests_per_connection: 64,
            max_requests_per_client: 0,
            client_share_loopback: false,
            tls_handshake_timeout: Duration::from_secs(10),
            h2_keepalive_interval: Some(Duration::from_secs(20)),
            h2_keepalive_timeout: Duration::from_secs(20),
            body_timeout: Duration::from_secs(15),
            body_total_timeout: Duration::from_secs(600),
            metrics_listen: None,
            blocklist: None,
            access_log: None,
            allowed_headers: DEFAULT_ALLOWED_HEADERS
                .iter()
                .map(|h| http::HeaderName::from_static(h))
                .collect(),
        }
    }
}

impl GatewayConfig {
    /// The identity key file: `identity_key`, else `gateway-identity.key` in `cache_dir`; `None`
    /// (neither set): proofs are signed with a key generated for this process only.
    pub fn identity_key_path(&self) -> Option<std::path::PathBuf> {
        self.identity_key.clone().or_else(|| {
            self.cache_dir
                .as_ref()
                .map(|dir| dir.join("gateway-identity.key"))
        })
    }
}

/// Why a byte size did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeParseError {
    #[error("empty size")]
    Empty,
    #[error("{0:?} is not a number of bytes")]
    NotANumber(String),
    #[error("unknown unit {0:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")]
    UnknownUnit(String),
    #[error("{0:?} does not fit in 64 bits")]
    Overflow(String),
}

/// Parse `1234`, `64KiB`, `1 GiB`, `10MB` (binary and decimal units, case-insensitive).
pub fn parse_size(text: &str) -> Result<u64, SizeParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SizeParseError::Empty);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| SizeParseError::NotANumber(text.to_owned()))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(SizeParseError::UnknownUnit(unit.trim().to_owned())),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| SizeParseError::Overflow(text.to_owned()))
}

/// Why a duration did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationParseError {
    #[error("{0:?} is not a duration: a whole number and a unit (ms, s, m, h), e.g. 30s")]
    Invalid(String),
}

/// Parse `30s`, `500ms`, `2m`, `1h`, `0` (a whole number and a unit; `0` needs none).
pub fn parse_duration(text: &str) -> Result<Duration, DurationParseError> {
    let invalid = || DurationParseError::Invalid(text.to_owned());
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    let millis_per: u64 = match unit.trim() {
        "" if number == 0 => 0,
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(millis_per)
        .map(Duration::from_millis)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_a_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "30",
            "s",
            "1.5s",
            "-1s",
            "5 parsecs",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10mb"), Ok(10_000_000));
        assert_eq!(parse_size(""), Err(SizeParseError::Empty));
        assert!(matches!(
            parse_size("GiB"),
            Err(SizeParseError::NotANumber(_))
        ));
        assert!(matches!(
            parse_size("5 parsecs"),
            Err(SizeParseError::UnknownUnit(_))
        ));
        assert!(matches!(
            parse_size("99999999999TiB"),
            Err(SizeParseError::Overflow(_))
        ));
    }
}
