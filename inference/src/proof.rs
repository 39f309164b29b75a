//! Proof records: what the gateway signs about each inference, and how anyone checks it.
//!
//! **A proof record is a signed commitment, not a proof of correct execution.** It says "the
//! holder of this ed25519 key claims that model M, run by this engine build on a CPU with these
//! features, mapped inputs hashing to X to outputs hashing to Y". Nothing in it shows the
//! computation was done honestly; a verifier who wants assurance re-runs the model on the same
//! inputs ([`verify`]) and compares, and can hold the key's owner to the signed claim.
//!
//! # Canonical encoding (version 1)
//!
//! The signed bytes are `"walrus-inference/proof/v1\n"` followed by the record as canonical JSON:
//! UTF-8, no whitespace, object keys in ascending byte order (the struct fields below are declared
//! in that order and the encoding is produced by `serde_json`, which keeps declaration order),
//! only strings and non-negative integers (no floats), `outputs` sorted by name. Hashes are
//! lowercase hex BLAKE3 of [`canonical_bytes`](crate::tensor::canonical_bytes) of the named inputs
//! (as sent, before any padding) and of the outputs. The signature is ed25519 (RFC 8032, strict
//! verification) in lowercase hex.
//!
//! A stored proof blob ([`ProofBlob`]) is the JSON `{"outputs": {...}, "proof": {"record": {...},
//! "signature": "..."}}`: it carries the claimed outputs so a verifier on another CPU can compare
//! within a tolerance (the outputs are bound to the record by `outputs_blake3`). The outputs are
//! written with `data_b64` (see [`crate::tensor`]): exact bits, so outputs holding infinities
//! hash back to `outputs_blake3` (JSON numbers would turn them into `null`, read back as NaN),
//! and under half the size of number text. Blobs with `data` arrays read as well.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use codec::BlobId;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::tensor::{canonical_hash, DType, Tensors};

/// The record format this crate writes and understands.
pub const PROOF_VERSION: u32 = 1;
const SIGNING_DOMAIN: &[u8] = b"walrus-inference/proof/v1\n";

/// Which engine build and CPU produced a result. Equal tags mean a re-run must match bitwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineTag {
    /// Always `tract-onnx`.
    pub engine: String,
    /// The exact tract-onnx version ([`crate::TRACT_VERSION`]).
    pub engine_version: String,
    /// Architecture plus the SIMD features tract's kernels select on, e.g. `x86_64+avx+avx2+fma`.
    pub cpu: String,
}

impl EngineTag {
    /// The tag of this process on this machine.
    pub fn local() -> EngineTag {
        EngineTag {
            engine: "tract-onnx".into(),
            engine_version: crate::TRACT_VERSION.into(),
            cpu: cpu_tag(),
        }
    }
}

fn cpu_tag() -> String {
    #[allow(unused_mut)]
    let mut tag = std::env::consts::ARCH.to_string();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, on) in [
            ("sse4.1", std::arch::is_x86_feature_detected!("sse4.1")),
            ("avx", std::arch::is_x86_feature_detected!("avx")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
        ] {
            if on {
                tag.push('+');
                tag.push_str(name);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        for (name, on) in [
            ("neon", std::arch::is_aarch64_feature_detected!("neon")),
            ("fp16", std::arch::is_aarch64_feature_detected!("fp16")),
            (
                "dotprod",
                std::arch::is_aarch64_feature_detected!("dotprod"),
            ),
        ] {
            if on {
                tag.push('+');
                tag.push_str(name);
            }
        }
    }
    tag
}

/// Shape and dtype of one committed output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputCommitment {
    pub dtype: DType,
    pub name: String,
    pub shape: Vec<usize>,
}

/// The signed statement. Field order is the canonical key order: keep it sorted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofRecord {
    /// CPU tag of the signer ([`EngineTag::cpu`]).
    pub cpu: String,
    /// Signing time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    pub engine: String,
    pub engine_version: String,
    /// Hex BLAKE3 of the canonical encoding of the inputs as sent.
    pub inputs_blake3: String,
    pub model: BlobId,
    /// Every output's name, dtype and shape, sorted by name.
    pub outputs: Vec<OutputCommitment>,
    /// Hex BLAKE3 of the canonical encoding of the outputs.
    pub outputs_blake3: String,
    /// Hex ed25519 public key of the signer.
    pub public_key: String,
    /// [`PROOF_VERSION`].
    pub version: u32,
}

impl ProofRecord {
    /// The record for a run: commits to `inputs` and `outputs` as given.
    pub fn new(
        model: BlobId,
        tag: &EngineTag,
        inputs: &Tensors,
        outputs: &Tensors,
        public_key: &VerifyingKey,
    ) -> Self {
        Self::from_hashes(
            model,
            tag,
            &canonical_hash(inputs),
            outputs,
            &canonical_hash(outputs),
            public_key,
        )
    }

    /// The record for a run whose canonical hashes are already known (computed off the reactor
    /// with the run, see [`RunOutcome`](crate::RunOutcome)).
    pub fn from_hashes(
        model: BlobId,
        tag: &EngineTag,
        inputs_blake3: &[u8; 32],
        outputs: &Tensors,
        outputs_blake3: &[u8; 32],
        public_key: &VerifyingKey,
    ) -> Self {
        let created_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        ProofRecord {
            cpu: tag.cpu.clone(),
            created_at_ms,
            engine: tag.engine.clone(),
            engine_version: tag.engine_version.clone(),
            inputs_blake3: hex::encode(inputs_blake3),
            model,
            outputs: outputs
                .iter()
                .map(|(name, t)| OutputCommitment {
                    dtype: t.dtype(),
                    name: name.clone(),
                    shape: t.shape().to_vec(),
                })
                .collect(),
            outputs_blake3: hex::encode(outputs_blake3),
            public_key: hex::encode(public_key.as_bytes()),
            version: PROOF_VERSION,
        }
    }

    /// Canonical JSON of the record (see the module docs).
    pub fn canonical_json(&self) -> Vec<u8> {
        // Only strings, integers, arrays and structs with sorted fields: this cannot fail, and
        // serde_json writes it without whitespace.
        serde_json::to_vec(self).expect("a proof record always serializes")
    }

    /// The exact bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = SIGNING_DOMAIN.to_vec();
        out.extend_from_slice(&self.canonical_json());
        out
    }

    /// The engine tag the record names.
    pub fn engine_tag(&self) -> EngineTag {
        EngineTag {
            engine: self.engine.clone(),
            engine_version: self.engine_version.clone(),
            cpu: self.cpu.clone(),
        }
    }
}

/// A record and its signature: the `proof` field of an inference response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    pub record: ProofRecord,
    /// Hex ed25519 signature over [`ProofRecord::signing_bytes`].
    pub signature: String,
}

impl Proof {
    /// Check that the record was signed by the key the verifier trusts (hex, as
    /// [`Identity::public_key_hex`] prints it), not merely by some key: anyone can sign a record
    /// with a key of their own.
    pub fn check_signer(&self, expected_public_key: &str) -> Result<(), VerifyError> {
        if self
            .record
            .public_key
            .eq_ignore_ascii_case(expected_public_key.trim())
        {
            Ok(())
        } else {
            Err(VerifyError::Signer {
                claimed: self.record.public_key.clone(),
                expected: expected_public_key.trim().to_string(),
            })
        }
    }

    /// Check the signature against the record's own public key.
    pub fn verify_signature(&self) -> Result<(), VerifyError> {
        let key: [u8; 32] = hex::decode(&self.record.public_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(VerifyError::Signature(
                "public key is not 32 hex bytes".into(),
            ))?;
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|e| VerifyError::Signature(format!("bad public key: {e}")))?;
        let sig: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(VerifyError::Signature(
                "signature is not 64 hex bytes".into(),
            ))?;
        key.verify_strict(&self.record.signing_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| VerifyError::Signature("signature does not match the record".into()))
    }
}

/// What is stored as a Walrus blob when a proof is published: the proof plus the claimed outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofBlob {
    #[serde(serialize_with = "crate::tensor::serialize_base64")]
    pub outputs: Tensors,
    pub proof: Proof,
}

impl ProofBlob {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a proof blob always serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<ProofBlob, VerifyError> {
        serde_json::from_slice(bytes).map_err(|e| VerifyError::Malformed(e.to_string()))
    }
}

/// The gateway's signing identity: an ed25519 key kept in a file.
pub struct Identity {
    key: SigningKey,
}

/// Why the identity key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity key {path} is not 64 hex characters (a 32-byte ed25519 seed)")]
    Malformed { path: PathBuf },
    #[error("identity key {path} is readable by others (mode {mode:o}); chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("no randomness for a new identity key: {0}")]
    Random(String),
}

impl Identity {
    /// A fresh key from the OS's randomness.
    pub fn generate() -> Result<Identity, IdentityError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(Identity::from_seed(seed))
    }

    pub fn from_seed(seed: [u8; 32]) -> Identity {
        Identity {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Load the key at `path`, or create it (mode 0600, the seed in hex) if there is none.
    /// Refuses a key file that group or others can read.
    pub fn load_or_create(path: &Path) -> Result<Identity, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        };
        match fs::read_to_string(path) {
            Ok(text) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
                    if mode & 0o077 != 0 {
                        return Err(IdentityError::Permissions {
                            path: path.to_path_buf(),
                            mode,
                        });
                    }
                }
                let seed: [u8; 32] = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| IdentityError::Malformed {
                        path: path.to_path_buf(),
                    })?;
                Ok(Identity::from_seed(seed))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Written whole to a temporary file, synced, then linked into place: a crash
                // never leaves a partial key, and of two gateways starting at once on the same
                // path, one key wins and both use it.
                let dir = match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir,
                    _ => Path::new("."),
                };
                fs::create_dir_all(dir).map_err(io)?;
                let identity = Identity::generate()?;
                let temp = dir.join(format!(
                    ".{}.{}.tmp",
                    path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
                    &identity.public_key_hex()[..16]
                ));
                let mut options = OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let written = (|| {
                    let mut file = options.open(&temp)?;
                    let text = format!("{}\n", hex::encode(identity.key.to_bytes()));
                    file.write_all(text.as_bytes())?;
                    file.sync_all()?;
                    fs::hard_link(&temp, path)
                })();
                let _ = fs::remove_file(&temp);
                match written {
                    Ok(()) => {
                        if let Ok(dir) = fs::File::open(dir) {
                            let _ = dir.sync_all();
                        }
                        Ok(identity)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Identity::load_or_create(path)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key().as_bytes())
    }

    /// Sign a record built by [`ProofRecord::new`] with this identity's public key.
    pub fn sign(&self, record: ProofRecord) -> Proof {
        let signature = self.key.sign(&record.signing_bytes());
        Proof {
            record,
            signature: hex::encode(signature.to_bytes()),
        }
    }

    /// Commit to a finished run (reusing its hashes) and sign it.
    pub fn sign_outcome(&self, outcome: &crate::RunOutcome, tag: &EngineTag) -> Proof {
        self.sign(ProofRecord::from_hashes(
            outcome.model,
            tag,
            &outcome.inputs_blake3,
            &outcome.outputs,
            &outcome.outputs_blake3,
            &self.public_key(),
        ))
    }

    /// Commit to one run and sign it.
    pub fn sign_run(
        &self,
        model: BlobId,
        tag: &EngineTag,
        inputs: &Tensors,
        outputs: &Tensors,
    ) -> Proof {
        self.sign(ProofRecord::new(
            model,
            tag,
            inputs,
            outputs,
            &self.public_key(),
        ))
    }
}

/// Tolerance for comparing a re-run on another engine build or CPU: `|a - b| <= absolute +
/// relative * |claimed|` for floats; integers and bools must match exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub relative: f64,
    pub absolute: f64,
}

impl Default for Tolerance {
    /// 1e-4 relative, 1e-5 absolute: f32 kernels that differ in summation order or FMA use stay
    /// well inside it for the models we serve; a wrong model or input does not.
    fn default() -> Self {
        Tolerance {
            relative: 1e-4,
            absolute: 1e-5,
        }
    }
}

/// How a re-run was compared with the claimed outputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Comparison {
    /// Same engine build and CPU tag: every bit must match.
    Bitwise,
    /// Different engine build or CPU: within the tolerance.
    Within(Tolerance),
}

/// A passed verification.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyReport {
    pub comparison: Comparison,
    /// Largest absolute difference seen between claimed and re-run outputs.
    pub max_abs_diff: f64,
}

/// The check that failed. `verify-proof` prints it and exits non-zero.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum VerifyError {
    #[error("proof blob is malformed: {0}")]
    Malformed(String),
    #[error("proof version {0} is not supported (this build reads {PROOF_VERSION})")]
    Version(u32),
    #[error("signature check failed: {0}")]
    Signature(String),
    #[error("proof is signed by key {claimed}, not the expected {expected}")]
    Signer { claimed: String, expected: String },
    #[error("proof is for model {claimed}, not {expected}")]
    Model { claimed: BlobId, expected: BlobId },
    #[error("inputs do not match the proof: BLAKE3 {actual}, the proof commits to {claimed}")]
    InputsHash { claimed: String, actual: String },
    #[error("claimed outputs do not match the proof: {0}")]
    OutputsHash(String),
    #[error("the local re-run failed: {0}")]
    Rerun(String),
    #[error("re-run output `{output}` differs ({comparison}): {detail}")]
    OutputsDiffer {
        output: String,
        comparison: String,
        detail: String,
    },
}

/// Verify a proof blob against the inputs that were sent and the outputs of a local re-run:
/// version, signature, model, inputs hash, claimed outputs against the record, then re-run
/// outputs against claimed outputs (bitwise when `local` equals the record's engine tag, else
/// within `tolerance`). The first failed check is returned.
pub fn verify(
    blob: &ProofBlob,
    model: &BlobId,
    inputs: &Tensors,
    rerun: &Tensors,
    local: &EngineTag,
    tolerance: Tolerance,
) -> Result<VerifyReport, VerifyError> {
    let record = &blob.proof.record;
    if record.version != PROOF_VERSION {
        return Err(VerifyError::Version(record.version));
    }
    blob.proof.verify_signature()?;
    if record.model != *model {
        return Err(VerifyError::Model {
            claimed: record.model,
            expected: *model,
        });
    }
    let inputs_hash = hex::encode(canonical_hash(inputs));
    if inputs_hash != record.inputs_blake3 {
        return Err(VerifyError::InputsHash {
            claimed: record.inputs_blake3.clone(),
            actual: inputs_hash,
        });
    }
    if hex::encode(canonical_hash(&blob.outputs)) != record.outputs_blake3 {
        return Err(VerifyError::OutputsHash(
            "their BLAKE3 differs from outputs_blake3".into(),
        ));
    }
    let shapes: Vec<OutputCommitment> = blob
        .outputs
        .iter()
        .map(|(name, t)| OutputCommitment {
            dtype: t.dtype(),
            name: name.clone(),
            shape: t.shape().to_vec(),
        })
        .collect();
    if shapes != record.outputs {
        return Err(VerifyError::OutputsHash(
            "names, dtypes or shapes differ from the record".into(),
        ));
    }

    let comparison = if record.engine_tag() == *local {
        Comparison::Bitwise
    } else {
        Comparison::Within(tolerance)
    };
    let differ = |output: &str, detail: String| VerifyError::OutputsDiffer {
        output: output.to_string(),
        comparison: match comparison {
            Comparison::Bitwise => "bitwise, same engine and CPU".into(),
            Comparison::Within(t) => format!("relative {} absolute {}", t.relative, t.absolute),
        },
        detail,
    };
    if let Some(extra) = rerun.keys().find(|k| !blob.outputs.contains_key(*k)) {
        return Err(differ(
            extra,
            "the re-run has an output the proof does not".into(),
        ));
    }
    let mut max_abs_diff = 0f64;
    for (name, claimed) in &blob.outputs {
        let Some(mine) = rerun.get(name) else {
            return Err(differ(name, "missing from the re-run".into()));
        };
        if mine.dtype() != claimed.dtype() || mine.shape() != claimed.shape() {
            return Err(differ(
                name,
                format!(
                    "re-run gives {}{:?}, proof claims {}{:?}",
                    mine.dtype(),
                    mine.shape(),
                    claimed.dtype(),
                    claimed.shape()
                ),
            ));
        }
        let float = matches!(claimed.dtype(), DType::F32 | DType::F64);
        for i in 0..claimed.len() {
            let (a, b) = (
                mine.values().get_f64(i).unwrap_or(f64::NAN),
                claimed.values().get_f64(i).unwrap_or(f64::NAN),
            );
            if a.is_nan() && b.is_nan() {
                continue;
            }
            let diff = (a - b).abs();
            if diff.is_finite() {
                max_abs_diff = max_abs_diff.max(diff);
            }
            let ok = match comparison {
                Comparison::Within(t) if float => {
                    diff <= t.absolute + t.relative * b.abs() || a == b
                }
                _ => a == b,
            };
            if !ok {
                return Err(differ(name, format!("element {i}: re-run {a}, proof {b}")));
            }
        }
        if comparison == Comparison::Bitwise && !mine.bitwise_eq(claimed) {
            return Err(differ(name, "bits differ (e.g. -0.0 vs 0.0)".into()));
        }
    }
    Ok(VerifyReport {
        comparison,
        max_abs_diff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{TensorData, TensorValues};

    fn tensors(v: Vec<f32>) -> Tensors {
        [(
            "y".to_string(),
            TensorData::new(vec![v.len()], TensorValues::F32(v)).unwrap(),
        )]
        .into()
    }

    #[test]
    fn record_json_is_canonical() {
        let id = Identity::from_seed([3; 32]);
        let mut proof = id.sign_run(
            BlobId([9; 32]),
            &EngineTag::local(),
            &tensors(vec![1.0]),
            &tensors(vec![2.0]),
        );
        proof.record.created_at_ms = 1;
        proof.record.cpu = "x86_64".into();
        let json = String::from_utf8(proof.record.canonical_json()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "{json}");
        assert!(!json.contains(' ') && !json.contains('\n'));
        assert!(
            json.starts_with(
                r#"{"cpu":"x86_64","created_at_ms":1,"engine":"tract-onnx","engine_version":"#
            ),
            "{json}"
        );
        // Re-parsing and re-encoding gives the same bytes (what verification relies on).
        let back: ProofRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.canonical_json(), json.as_bytes());
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_key_in_a_new_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not/yet/there/identity.key");
        let keys: Vec<String> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| Identity::load_or_create(&path).unwrap().public_key_hex()))
                .collect();
            starts.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
        let left: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("identity.key")]);
    }

    #[test]
    fn identity_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let a = Identity::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let b = Identity::load_or_create(&path).unwrap();
        assert_eq!(a.public_key_hex(), b.public_key_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                Identity::load_or_create(&path),
                Err(IdentityError::Permissions { .. })
            ));
        }
        fs::write(dir.path().join("bad.key"), "zz").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(
                dir.path().join("bad.key"),
                fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        assert!(matches!(
            Identity::load_or_create(&dir.path().join("bad.key")),
            Err(IdentityError::Malformed { .. })
        ));
    }

    #[test]
    fn tolerance_applies_only_across_engines() {
        let id = Identity::from_seed([4; 32]);
        let model = BlobId([1; 32]);
        let inputs = tensors(vec![1.0]);
        let claimed = tensors(vec![1.0, 100.0]);
        let tag = EngineTag::local();
        let blob = ProofBlob {
            proof: id.sign_run(model, &tag, &inputs, &claimed),
            outputs: claimed,
        };
        let close = tensors(vec![1.0 + 1e-6, 100.0 * (1.0 + 5e-5)]);
        let other = EngineTag {
            cpu: "elsewhere".into(),
            ..tag.clone()
        };
        assert!(matches!(
            verify(&blob, &model, &inputs, &close, &other, Tolerance::default())
                .unwrap()
                .comparison,
            Comparison::Within(_)
        ));
        assert!(matches!(
            verify(&blob, &model, &inputs, &close, &tag, Tolerance::default()),
            Err(VerifyError::OutputsDiffer { .. })
        ));
        let far = tensors(vec![1.0, 100.1]);
        assert!(matches!(
            verify(&blob, &model, &inputs, &far, &other, Tolerance::default()),
            Err(VerifyError::OutputsDiffer { .. })
        ));
        assert!(matches!(
            verify(
                &blob,
                &BlobId([2; 32]),
                &inputs,
                &blob.outputs,
                &tag,
                Tolerance::default()
            ),
            Err(VerifyError::Model { .. })
        ));
    }
}
