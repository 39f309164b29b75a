//! Fault injection: what a simulated node does wrong, per node, changeable at run time.
//!
//! [`NodeFaults`] is at once the library value ([`crate::SimNetwork::set_faults`]), the JSON
//! body of the admin endpoint `POST /sim/faults`, and one table of the TOML `--faults FILE`
//! ([`FaultsFile`]). Every fault is off by default, and faults never change a node's shard
//! assignment, so tests know exactly which shards a faulty node affects.
//!
//! Where each fault applies (requests under `/sim/` are never faulted):
//! * `offline`: the listener is closed (connection refused); open connections are shut down
//!   (idle ones at once, busy ones after their response). The node comes back on the same port.
//! * `latency_ms` + uniform `0..=jitter_ms`: added before every `/v1/` response.
//! * `error_rate`/`error_status`: with that probability a `/v1/` request is answered `500
//!   INTERNAL` or `503 UNAVAILABLE` (the default) with the Walrus error envelope.
//! * `bandwidth_bytes_per_sec`, `stall`, `truncate`: shape the response body (metadata, slivers,
//!   JSON alike). `stall` sends the headers, then nothing; `truncate` sends half the body, then
//!   aborts the connection (the `Content-Length` announces the whole body).
//! * `corrupt_slivers`, `wrong_index`, `wrong_symbol_size`: served slivers stay valid BCS but
//!   carry flipped data bytes, the index of another sliver, or another symbol size.
//! * `wrong_metadata`: the served `BlobMetadataWithId` carries the requested Blob ID followed by
//!   the metadata of another blob, so only a client that checks the hashes notices.
//! * `lie_not_found`: 404 for metadata and slivers the node has, and `nonexistent` statuses.
//! * `forbidden`: 451 `FORBIDDEN_BLOB` for metadata, slivers and recovery symbols (the node's
//!   deny list).
//! * `corrupt_recovery_symbols`: served recovery symbols stay valid BCS with their real proofs,
//!   but carry a flipped data byte, so none verifies.
//! * `wrong_tls_key` (TLS only): connections accepted while it is set get a certificate of
//!   another key; setting or clearing it closes open connections (gracefully) so clients
//!   reconnect and see the change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Per-node faults; serde + Default (all off); also the TOML format of `--faults FILE` and the
/// JSON body of `POST /sim/faults`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeFaults {
    /// Listener closed: connection refused.
    pub offline: bool,
    /// Fixed delay added before every API response.
    pub latency_ms: u64,
    /// Extra delay, uniform in `0..=jitter_ms`, added on top of `latency_ms`.
    pub jitter_ms: u64,
    /// Response bodies are sent at most this fast (in slices of 1/20 s).
    pub bandwidth_bytes_per_sec: Option<u64>,
    /// Probability in `[0, 1]` that a request is answered with `error_status`.
    pub error_rate: f64,
    /// 500 or 503 (the default when `None`).
    pub error_status: Option<u16>,
    /// Send headers, then silence.
    pub stall: bool,
    /// Body cut short (half of it, then the connection is aborted).
    pub truncate: bool,
    /// Flip bytes in sliver data.
    pub corrupt_slivers: bool,
    /// Serve slivers with the index of another sliver.
    pub wrong_index: bool,
    /// Serve slivers with a symbol size that does not match the blob.
    pub wrong_symbol_size: bool,
    /// Metadata of another blob (behind the requested Blob ID).
    pub wrong_metadata: bool,
    /// 404 for everything it has.
    pub lie_not_found: bool,
    /// With TLS: present a certificate made from another P-256 key (with the CN and SANs of the
    /// real one), so a client pinning the on-chain `network_public_key` must refuse the node.
    pub wrong_tls_key: bool,
    /// 451 `FORBIDDEN_BLOB` for every blob's metadata and slivers, as a node whose deny list
    /// names the blob (NETWORK.md §7.2). Blob statuses are answered as usual.
    pub forbidden: bool,
    /// Flip a byte of every recovery symbol's data (proofs unchanged).
    pub corrupt_recovery_symbols: bool,
}

/// Why a fault description is unusable.
#[derive(Debug, thiserror::Error)]
pub enum FaultsError {
    #[error("error_rate must be between 0 and 1, got {0}")]
    BadErrorRate(f64),
    #[error("error_status must be 500 or 503, got {0}")]
    BadErrorStatus(u16),
    #[error("bandwidth_bytes_per_sec must be at least 1")]
    ZeroBandwidth,
    #[error("cannot read faults file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("faults file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("faults file names node {0:?}, which is neither a node index nor a node name")]
    UnknownNode(String),
}

impl NodeFaults {
    /// Check the ranges that serde cannot: probabilities, status codes, bandwidth.
    pub fn validate(&self) -> Result<(), FaultsError> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(FaultsError::BadErrorRate(self.error_rate));
        }
        if let Some(status) = self.error_status {
            if status != 500 && status != 503 {
                return Err(FaultsError::BadErrorStatus(status));
            }
        }
        if self.bandwidth_bytes_per_sec == Some(0) {
            return Err(FaultsError::ZeroBandwidth);
        }
        Ok(())
    }

    /// True when no fault is set.
    pub fn is_clean(&self) -> bool {
        *self == NodeFaults::default()
    }

    /// The HTTP status of injected errors.
    pub fn error_status(&self) -> u16 {
        self.error_status.unwrap_or(503)
    }

    /// True when the response body must be streamed rather than sent whole.
    pub(crate) fn shapes_body(&self) -> bool {
        self.stall || self.truncate || self.bandwidth_bytes_per_sec.is_some()
    }

    /// The delay to add to one response, drawn from `rng`.
    pub(crate) fn delay(&self, rng: &FaultRng) -> Duration {
        let jitter = if self.jitter_ms == 0 {
            0
        } else {
            rng.below(self.jitter_ms.saturating_add(1))
        };
        Duration::from_millis(self.latency_ms.saturating_add(jitter))
    }

    /// Whether this request gets an injected error, drawn from `rng`.
    pub(crate) fn inject_error(&self, rng: &FaultRng) -> bool {
        self.error_rate >= 1.0 || (self.error_rate > 0.0 && rng.unit() < self.error_rate)
    }
}

/// The `--faults FILE` TOML format: defaults for every node, then per-node overrides whose
/// fields are merged over the defaults. Nodes are named by index or by name.
///
/// ```toml
/// [all]
/// latency_ms = 20
/// jitter_ms = 10
///
/// [node.0]
/// offline = true
///
/// [node.node-3]
/// corrupt_slivers = true
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultsFile {
    /// Faults of every node not listed in `node` (and the base the listed ones start from).
    pub all: NodeFaults,
    /// Per node (index or name), the merged faults.
    pub node: BTreeMap<String, NodeFaults>,
}

impl FaultsFile {
    /// Parse the TOML text of a faults file.
    pub fn parse(text: &str) -> Result<FaultsFile, String> {
        let mut root: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        for key in root.keys() {
            if key != "all" && key != "node" {
                return Err(format!(
                    "unknown table [{key}] (expected [all] and [node.<index or name>])"
                ));
            }
        }
        let all_table = match root.remove("all") {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t,
            Some(_) => return Err("`all` must be a table".into()),
        };
        let all: NodeFaults = toml::Value::Table(all_table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| format!("[all]: {e}"))?;
        all.validate().map_err(|e| format!("[all]: {e}"))?;
        let mut node = BTreeMap::new();
        match root.remove("node") {
            None => {}
            Some(toml::Value::Table(nodes)) => {
                for (name, value) in nodes {
                    let toml::Value::Table(overrides) = value else {
                        return Err(format!("[node.{name}] must be a table"));
                    };
                    let mut merged = all_table.clone();
                    merged.extend(overrides);
                    let faults: NodeFaults = toml::Value::Table(merged)
                        .try_into()
                        .map_err(|e: toml::de::Error| format!("[node.{name}]: {e}"))?;
                    faults
                        .validate()
                        .map_err(|e| format!("[node.{name}]: {e}"))?;
                    node.insert(name, faults);
                }
            }
            Some(_) => return Err("`node` must be a table of tables".into()),
        }
        Ok(FaultsFile { all, node })
    }

    /// Read and parse a faults file.
    pub fn load(path: &Path) -> Result<FaultsFile, FaultsError> {
        let text = std::fs::read_to_string(path).map_err(|source| FaultsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| FaultsError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// The faults of each of the nodes named `names` (node `i` is also known as `"i"`).
    pub fn resolve(&self, names: &[String]) -> Result<Vec<NodeFaults>, FaultsError> {
        let mut out = vec![self.all.clone(); names.len()];
        for (key, faults) in &self.node {
            let index = key
                .parse::<usize>()
                .ok()
                .filter(|&i| i < names.len())
                .or_else(|| names.iter().position(|n| n == key))
                .ok_or_else(|| FaultsError::UnknownNode(key.clone()))?;
            out[index] = faults.clone();
        }
        Ok(out)
    }
}

/// A small, lock-free pseudo-random source for fault decisions (SplitMix64). Not
/// cryptographic; faults only need to be unpredictable enough to look like a flaky network.
#[derive(Debug)]
pub(crate) struct FaultRng(AtomicU64);

impl FaultRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// Seeded from the clock and an address, so separate runs differ.
    pub(crate) fn from_entropy(salt: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self::new(nanos ^ salt.rotate_left(32))
    }

    pub(crate) fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant for fault injection).
    pub(crate) fn below(&self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_all_off_and_validate() {
        let f = NodeFaults::default();
        assert!(f.is_clean());
        f.validate().unwrap();
        assert_eq!(f.error_status(), 503);
        assert!(!f.inject_error(&FaultRng::new(1)));
        assert_eq!(f.delay(&FaultRng::new(1)), Duration::ZERO);
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        let bad_rate = NodeFaults {
            error_rate: 1.5,
            ..Default::default()
        };
        assert!(matches!(
            bad_rate.validate(),
            Err(FaultsError::BadErrorRate(_))
        ));
        let bad_status = NodeFaults {
            error_status: Some(404),
            ..Default::default()
        };
        assert!(matches!(
            bad_status.validate(),
            Err(FaultsError::BadErrorStatus(404))
        ));
        let zero = NodeFaults {
            bandwidth_bytes_per_sec: Some(0),
            ..Default::default()
        };
        assert!(matches!(zero.validate(), Err(FaultsError::ZeroBandwidth)));
    }

    #[test]
    fn json_rejects_unknown_fields() {
        let f: NodeFaults = serde_json::from_str(r#"{"offline": true, "latency_ms": 5}"#).unwrap();
        assert!(f.offline);
        assert_eq!(f.latency_ms, 5);
        assert!(serde_json::from_str::<NodeFaults>(r#"{"ofline": true}"#).is_err());
    }

    #[test]
    fn delays_stay_within_latency_plus_jitter_and_vary() {
        let f = NodeFaults {
            latency_ms: 10,
            jitter_ms: 5,
            ..Default::default()
        };
        let rng = FaultRng::new(42);
        let delays: Vec<u128> = (0..200).map(|_| f.delay(&rng).as_millis()).collect();
        assert!(delays.iter().all(|d| (10..=15).contains(d)));
        assert!(delays.contains(&10) && delays.contains(&15));
    }

    #[test]
    fn error_rate_is_a_probability() {
        let rng = FaultRng::new(7);
        let half = NodeFaults {
            error_rate: 0.5,
            ..Default::default()
        };
        let hits = (0..1000).filter(|_| half.inject_error(&rng)).count();
        // Binomial(1000, 0.5): this window is more than 9 standard deviations wide.
        assert!((350..=650).contains(&hits), "{hits}");
        let always = NodeFaults {
            error_rate: 1.0,
            ..Default::default()
        };
        assert!((0..100).all(|_| always.inject_error(&rng)));
    }

    #[test]
    fn faults_file_merges_node_overrides_over_all() {
        let file = FaultsFile::parse(
            r#"
            [all]
            latency_ms = 20
            [node.1]
            offline = true
            [node.node-2]
            latency_ms = 0
            corrupt_slivers = true
            "#,
        )
        .unwrap();
        let names: Vec<String> = (0..4).map(|i| format!("node-{i}")).collect();
        let faults = file.resolve(&names).unwrap();
        assert_eq!(faults[0].latency_ms, 20);
        assert!(faults[1].offline && faults[1].latency_ms == 20);
        assert!(faults[2].corrupt_slivers && faults[2].latency_ms == 0);
        assert_eq!(faults[3], file.all);
    }

    #[test]
    fn faults_file_errors_are_reported() {
        assert!(FaultsFile::parse("[al]\noffline = true").is_err());
        assert!(FaultsFile::parse("[all]\nofline = true").is_err());
        assert!(FaultsFile::parse("[node.0]\nerror_rate = 2.0").is_err());
        let file = FaultsFile::parse("[node.9]\noffline = true").unwrap();
        assert!(matches!(
            file.resolve(&["node-0".to_string()]),
            Err(FaultsError::UnknownNode(_))
        ));
    }
}
