//! Durable pins: `pins.json`, its atomic rewrite and its salvage when damaged.

use super::{unique_stamp, write_atomically, DiskCache, DiskError};
use codec::BlobId;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

impl DiskCache {
    /// Pin or unpin a blob: pinned blobs are never evicted. Persisted across restarts.
    /// The change takes effect only once `pins.json` holds it: an error (a full or read-only
    /// device) leaves the pins as they were, in memory and on disk. Changes are serialised.
    pub fn set_pinned(&self, id: BlobId, pinned: bool) -> Result<bool, DiskError> {
        let _serial = self.pins_guard();
        let mut pins = self.lock().pins.clone();
        let changed = if pinned {
            pins.insert(id)
        } else {
            pins.remove(&id)
        };
        if !changed {
            return Ok(false);
        }
        self.save_pins(&pins)?;
        // Only pin changes write this set, and they hold `pins_lock`: `pins` is the current
        // set plus this change.
        self.lock().pins = pins;
        Ok(true)
    }

    /// Persist `pins` as `pins.json` (sorted, so the file is stable), recreating the cache's
    /// directories if they were deleted.
    pub(super) fn save_pins(&self, pins: &HashSet<BlobId>) -> Result<(), DiskError> {
        let mut ids: Vec<String> = pins.iter().map(|p| p.to_string()).collect();
        ids.sort();
        let body =
            serde_json::to_vec_pretty(&ids).map_err(|e| DiskError::Io(io::Error::other(e)))?;
        let (path, tmp) = (self.root.join("pins.json"), self.root.join("tmp"));
        let write = || {
            #[cfg(test)]
            self.simulated_space(body.len() as u64)?;
            write_atomically(&path, &tmp, &body)
        };
        match write() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.recreate_dirs()? => Ok(write()?),
            // A full device: make room as a blob write would, then try once more.
            Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                self.out_of_space(body.len() as u64);
                Ok(write()?)
            }
            other => Ok(other?),
        }
    }

    pub fn is_pinned(&self, id: &BlobId) -> bool {
        self.lock().pins.contains(id)
    }
}

/// The pins in `path`, and whether the file was unreadable (then it has been moved aside to
/// `pins.json.corrupt-<stamp>`, and the returned pins are the Blob IDs that could still be read
/// from it, which the caller writes back). Never a silent loss: every dropped entry is logged.
pub(super) fn load_pins(path: &Path) -> (HashSet<BlobId>, bool) {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (HashSet::new(), false),
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "cannot read the pins file; starting with no pins (the file is left as it is until the next pin change)");
            return (HashSet::new(), false);
        }
    };
    match serde_json::from_slice::<Vec<String>>(&bytes) {
        Ok(ids) => {
            let mut pins = HashSet::new();
            for text in &ids {
                match text.parse() {
                    Ok(id) => {
                        pins.insert(id);
                    }
                    Err(e) => {
                        tracing::error!(entry = %text, error = %e, path = %path.display(), "pins file holds an entry that is not a Blob ID; dropping it")
                    }
                }
            }
            (pins, false)
        }
        Err(e) => {
            let pins = salvage_pins(&bytes);
            let aside = path.with_file_name(format!("pins.json.corrupt-{}", unique_stamp()));
            match fs::rename(path, &aside) {
                Ok(()) => tracing::error!(
                    error = %e,
                    path = %path.display(),
                    kept = pins.len(),
                    moved_to = %aside.display(),
                    "pins file is not valid JSON; keeping the Blob IDs still readable in it, and the file itself aside"
                ),
                Err(move_error) => tracing::error!(
                    error = %e,
                    path = %path.display(),
                    kept = pins.len(),
                    %move_error,
                    "pins file is not valid JSON and cannot be moved aside; keeping the Blob IDs still readable in it"
                ),
            }
            (pins, true)
        }
    }
}

/// Every Blob ID written out in `bytes` (a damaged pins file: truncated, interleaved, ...).
pub(super) fn salvage_pins(bytes: &[u8]) -> HashSet<BlobId> {
    String::from_utf8_lossy(bytes)
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter_map(|token| token.parse().ok())
        .collect()
}
