//! A node's blob store: verified metadata and slivers, kept as the exact BCS bytes served.
//!
//! Guarantees: only metadata that verified against its Blob ID and slivers that verified
//! against that metadata are ever inserted (callers hold [`VerifiedMetadata`] and the codec's
//! verification results); with a data directory, a value is on disk before it is visible in
//! memory, so a restarted node serves at least what it acknowledged.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use codec::{BlobId, SliverKind, VerifiedMetadata};

use crate::persist::NodeDir;

/// What a node holds for one blob.
#[derive(Debug, Clone)]
pub(crate) struct StoredBlob {
    pub metadata: Arc<VerifiedMetadata>,
    /// BCS `BlobMetadataWithId`, as served by `GET …/metadata`.
    pub metadata_with_id: Bytes,
    /// The epoch in which the blob was first stored on the network.
    pub certified_epoch: u32,
    /// BCS `SliverData` by sliver pair index.
    pub primary: HashMap<u16, Bytes>,
    pub secondary: HashMap<u16, Bytes>,
}

impl StoredBlob {
    fn slivers(&self, kind: SliverKind) -> &HashMap<u16, Bytes> {
        match kind {
            SliverKind::Primary => &self.primary,
            SliverKind::Secondary => &self.secondary,
        }
    }

    fn slivers_mut(&mut self, kind: SliverKind) -> &mut HashMap<u16, Bytes> {
        match kind {
            SliverKind::Primary => &mut self.primary,
            SliverKind::Secondary => &mut self.secondary,
        }
    }
}

/// One node's storage, in memory and optionally mirrored to a directory.
#[derive(Debug, Default)]
pub(crate) struct NodeStore {
    blobs: RwLock<HashMap<BlobId, StoredBlob>>,
    disk: Option<NodeDir>,
}

impl NodeStore {
    pub(crate) fn new(disk: Option<NodeDir>) -> Self {
        Self {
            blobs: RwLock::default(),
            disk,
        }
    }

    /// True when writes go to disk (and so should run off the async reactor).
    pub(crate) fn is_persistent(&self) -> bool {
        self.disk.is_some()
    }

    pub(crate) fn metadata(&self, blob_id: &BlobId) -> Option<(Arc<VerifiedMetadata>, Bytes)> {
        let blobs = self.blobs.read().expect("store lock poisoned");
        blobs
            .get(blob_id)
            .map(|b| (b.metadata.clone(), b.metadata_with_id.clone()))
    }

    /// The certified epoch recorded with the blob's metadata.
    pub(crate) fn certified_epoch(&self, blob_id: &BlobId) -> Option<u32> {
        let blobs = self.blobs.read().expect("store lock poisoned");
        blobs.get(blob_id).map(|b| b.certified_epoch)
    }

    /// Every blob with the slivers of the pairs `keep` selects (metadata included even when no
    /// pair is kept), cheaply cloned; used to hand shards to their next owner.
    pub(crate) fn export(&self, keep: impl Fn(&BlobId, u16) -> bool) -> Vec<StoredBlob> {
        let blobs = self.blobs.read().expect("store lock poisoned");
        blobs
            .iter()
            .map(|(id, blob)| StoredBlob {
                metadata: blob.metadata.clone(),
                metadata_with_id: blob.metadata_with_id.clone(),
                certified_epoch: blob.certified_epoch,
                primary: filtered(&blob.primary, |pair| keep(id, pair)),
                secondary: filtered(&blob.secondary, |pair| keep(id, pair)),
            })
            .collect()
    }

    pub(crate) fn sliver(&self, blob_id: &BlobId, pair: u16, kind: SliverKind) -> Option<Bytes> {
        let blobs = self.blobs.read().expect("store lock poisoned");
        blobs.get(blob_id)?.slivers(kind).get(&pair).cloned()
    }

    /// Number of blobs whose metadata this node holds.
    pub(crate) fn blob_count(&self) -> usize {
        self.blobs.read().expect("store lock poisoned").len()
    }

    /// Store verified metadata. Returns `false` when it was already stored.
    pub(crate) fn insert_metadata(
        &self,
        metadata: Arc<VerifiedMetadata>,
        metadata_with_id: Bytes,
        certified_epoch: u32,
    ) -> io::Result<bool> {
        let blob_id = metadata.blob_id();
        if self
            .blobs
            .read()
            .expect("store lock poisoned")
            .contains_key(&blob_id)
        {
            return Ok(false);
        }
        if let Some(disk) = &self.disk {
            disk.write_metadata(&blob_id, &metadata_with_id, certified_epoch)?;
        }
        let mut blobs = self.blobs.write().expect("store lock poisoned");
        Ok(match blobs.entry(blob_id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(StoredBlob {
                    metadata,
                    metadata_with_id,
                    certified_epoch,
                    primary: HashMap::new(),
                    secondary: HashMap::new(),
                });
                true
            }
        })
    }

    /// Store a verified sliver (as its BCS) of a blob whose metadata is stored. Returns
    /// `Ok(false)` if the metadata is missing.
    pub(crate) fn insert_sliver(
        &self,
        blob_id: &BlobId,
        pair: u16,
        kind: SliverKind,
        sliver_bcs: Bytes,
    ) -> io::Result<bool> {
        if !self
            .blobs
            .read()
            .expect("store lock poisoned")
            .contains_key(blob_id)
        {
            return Ok(false);
        }
        if let Some(disk) = &self.disk {
            disk.write_sliver(blob_id, pair, kind, &sliver_bcs)?;
        }
        let mut blobs = self.blobs.write().expect("store lock poisoned");
        match blobs.get_mut(blob_id) {
            Some(blob) => {
                blob.slivers_mut(kind).insert(pair, sliver_bcs);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Whether this sliver is stored.
    pub(crate) fn has_sliver(&self, blob_id: &BlobId, pair: u16, kind: SliverKind) -> bool {
        let blobs = self.blobs.read().expect("store lock poisoned");
        blobs
            .get(blob_id)
            .is_some_and(|b| b.slivers(kind).contains_key(&pair))
    }

    /// Insert a blob loaded from this node's own directory, without writing it back.
    pub(crate) fn restore(&self, blob: StoredBlob) {
        let blob_id = blob.metadata.blob_id();
        self.blobs
            .write()
            .expect("store lock poisoned")
            .insert(blob_id, blob);
    }
}

fn filtered(slivers: &HashMap<u16, Bytes>, keep: impl Fn(u16) -> bool) -> HashMap<u16, Bytes> {
    slivers
        .iter()
        .filter(|(pair, _)| keep(**pair))
        .map(|(pair, bytes)| (*pair, bytes.clone()))
        .collect()
}
