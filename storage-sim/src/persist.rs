//! `--data-dir` persistence: what a node stored survives a restart.
//!
//! Layout under the data directory:
//! * `sim.json`: the shard count and node names the directory was written for; a restart with
//!   a different shard count is refused rather than serving metadata that cannot verify;
//! * `<node name>/<blob id>/metadata.bcs`: the node's `BlobMetadataWithId`;
//! * `<node name>/<blob id>/certified_epoch`: the epoch the blob was first stored in (decimal;
//!   written before `metadata.bcs`; a blob without it, from before epochs advanced, counts as
//!   certified in epoch 1);
//! * `<node name>/<blob id>/<pair>.primary.bcs` and `<pair>.secondary.bcs`: `SliverData` BCS;
//! * `keys/<node name>.pem`: the node's P-256 network key, PKCS#8 PEM, mode 0600;
//! * `epoch.json`: the epoch, the shard assignment of its committee and the first epoch's start
//!   time, rewritten at every epoch change so a restarted network resumes that epoch.
//!
//! Guarantee: every file is written with `write_atomic` (temporary file in the same
//! directory, `fsync`, `rename`, `fsync` of the directory), so after a crash a file is either
//! absent or complete. Leftover temporary files are removed on load. On load everything is
//! verified again (metadata against its Blob ID, slivers against the metadata); files that
//! fail are skipped with a warning, never served.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use codec::{BlobId, SliverKind};

const TEMP_PREFIX: &str = ".tmp-";

/// Write `bytes` to `path` so that readers and crashes only ever see the old or the new file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, None)
}

/// [`write_atomic`] for secrets: the file is created readable by its owner only.
pub(crate) fn write_atomic_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, Some(0o600))
}

fn write_atomic_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        file_name.to_string_lossy()
    ));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if let Some(mode) = mode {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(mode);
        }
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)?;
        // Make the rename itself durable.
        fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// The manifest recorded in `sim.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Manifest {
    pub n_shards: u16,
    pub nodes: Vec<String>,
}

/// What `epoch.json` records.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct EpochFile {
    pub epoch: u32,
    /// Shards per node index in the current committee.
    pub assignment: Vec<Vec<u16>>,
    pub first_epoch_start_ms: u64,
}

const EPOCH_FILE: &str = "epoch.json";

/// The recorded epoch state, if any (an unreadable file is reported, not ignored).
pub(crate) fn load_epoch_file(dir: &Path) -> Result<Option<EpochFile>, String> {
    let path = dir.join(EPOCH_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is not valid: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

pub(crate) fn save_epoch_file(dir: &Path, state: &EpochFile) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(state).expect("epoch state serializes");
    write_atomic(&dir.join(EPOCH_FILE), &json)
}

/// Where node `name`'s network key is kept.
pub(crate) fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("keys").join(format!("{name}.pem"))
}

const CERTIFIED_EPOCH_FILE: &str = "certified_epoch";

/// One node's directory of stored blobs.
#[derive(Debug, Clone)]
pub(crate) struct NodeDir {
    root: PathBuf,
}

/// A blob as found on disk, not yet verified.
#[derive(Debug)]
pub(crate) struct LoadedBlob {
    pub blob_id: BlobId,
    pub metadata_with_id: Vec<u8>,
    /// `None` when the file is absent or unreadable.
    pub certified_epoch: Option<u32>,
    pub slivers: Vec<(u16, SliverKind, Bytes)>,
}

fn sliver_file(pair: u16, kind: SliverKind) -> String {
    format!("{pair}.{}.bcs", kind.as_str())
}

fn parse_sliver_file(name: &str) -> Option<(u16, SliverKind)> {
    let stem = name.strip_suffix(".bcs")?;
    let (pair, kind) = stem.split_once('.')?;
    Some((pair.parse().ok()?, kind.parse().ok()?))
}

/// Open (creating if needed) a data directory for a committee, checking its manifest.
pub(crate) fn open_data_dir(dir: &Path, manifest: &Manifest) -> Result<Vec<NodeDir>, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let manifest_path = dir.join("sim.json");
    match fs::read(&manifest_path) {
        Ok(bytes) => {
            let found: Manifest = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not a valid manifest: {e}", manifest_path.display()))?;
            if found.n_shards != manifest.n_shards {
                return Err(format!(
                    "{} was written for {} shards, not {}",
                    dir.display(),
                    found.n_shards,
                    manifest.n_shards
                ));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", manifest_path.display())),
    }
    let json = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
    write_atomic(&manifest_path, &json)
        .map_err(|e| format!("cannot write {}: {e}", manifest_path.display()))?;
    manifest
        .nodes
        .iter()
        .map(|name| {
            let root = dir.join(name);
            fs::create_dir_all(&root)
                .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
            Ok(NodeDir { root })
        })
        .collect()
}

impl NodeDir {
    fn blob_dir(&self, blob_id: &BlobId) -> io::Result<PathBuf> {
        let dir = self.root.join(blob_id.to_string());
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// The certified epoch first, so that stored metadata always has its epoch.
    pub(crate) fn write_metadata(
        &self,
        blob_id: &BlobId,
        metadata_with_id: &[u8],
        certified_epoch: u32,
    ) -> io::Result<()> {
        let dir = self.blob_dir(blob_id)?;
        write_atomic(
            &dir.join(CERTIFIED_EPOCH_FILE),
            certified_epoch.to_string().as_bytes(),
        )?;
        write_atomic(&dir.join("metadata.bcs"), metadata_with_id)
    }

    pub(crate) fn write_sliver(
        &self,
        blob_id: &BlobId,
        pair: u16,
        kind: SliverKind,
        sliver_bcs: &[u8],
    ) -> io::Result<()> {
        write_atomic(
            &self.blob_dir(blob_id)?.join(sliver_file(pair, kind)),
            sliver_bcs,
        )
    }

    /// Everything stored in this node's directory. Temporary files are deleted; unreadable or
    /// unrecognized entries are skipped with a warning.
    pub(crate) fn load(&self) -> io::Result<Vec<LoadedBlob>> {
        let mut blobs = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(blob_id) = name.parse::<BlobId>() else {
                tracing::warn!(path = %entry.path().display(), "ignoring unexpected entry");
                continue;
            };
            let dir = entry.path();
            let metadata_with_id = match fs::read(dir.join("metadata.bcs")) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "blob without metadata skipped");
                    continue;
                }
            };
            let certified_epoch = match fs::read_to_string(dir.join(CERTIFIED_EPOCH_FILE)) {
                Ok(text) => match text.trim().parse::<u32>() {
                    Ok(epoch) => Some(epoch),
                    Err(_) => {
                        tracing::warn!(path = %dir.display(), "unreadable certified epoch ignored");
                        None
                    }
                },
                Err(_) => None,
            };
            let mut slivers = Vec::new();
            for file in fs::read_dir(&dir)? {
                let file = file?;
                let file_name = file.file_name().to_string_lossy().into_owned();
                if file_name.starts_with(TEMP_PREFIX) {
                    // An interrupted write: the rename never happened, so nothing refers to it.
                    let _ = fs::remove_file(file.path());
                    continue;
                }
                if file_name == "metadata.bcs" || file_name == CERTIFIED_EPOCH_FILE {
                    continue;
                }
                let Some((pair, kind)) = parse_sliver_file(&file_name) else {
                    tracing::warn!(path = %file.path().display(), "ignoring unexpected file");
                    continue;
                };
                slivers.push((pair, kind, Bytes::from(fs::read(file.path())?)));
            }
            blobs.push(LoadedBlob {
                blob_id,
                metadata_with_id,
                certified_epoch,
                slivers,
            });
        }
        Ok(blobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliver_file_names_round_trip() {
        for kind in [SliverKind::Primary, SliverKind::Secondary] {
            assert_eq!(parse_sliver_file(&sliver_file(17, kind)), Some((17, kind)));
        }
        assert_eq!(parse_sliver_file("x.primary.bcs"), None);
        assert_eq!(parse_sliver_file("1.tertiary.bcs"), None);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn manifest_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest {
            n_shards: 10,
            nodes: vec!["node-0".into()],
        };
        open_data_dir(dir.path(), &m).unwrap();
        let other = Manifest {
            n_shards: 7,
            ..m.clone()
        };
        assert!(open_data_dir(dir.path(), &other).is_err());
        open_data_dir(dir.path(), &m).unwrap();
    }
}
