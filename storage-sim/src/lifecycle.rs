//! What the simulated chain says about a blob's lifetime, beyond "its metadata is stored":
//! registered but not yet certified, deletable, a shorter `endEpoch` than
//! [`crate::BLOB_LIFETIME_EPOCHS`], or deleted by its owner.
//!
//! Real nodes learn all of this from Sui events; here a test sets it through
//! [`crate::SimNetwork::set_blob_life`], [`crate::SimNetwork::certify_blob`] and
//! [`crate::SimNetwork::delete_blob`]. Every node answers from the same table, so statuses stay
//! identical across nodes. A blob the table does not name is permanent and certified (the
//! simulator's default, see [`crate::api`]). As on real nodes, an expired or deleted blob is
//! `nonexistent` and its metadata and slivers answer 404.

/// One blob's lifetime, as the simulated chain states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlobLife {
    /// Only deletable `Blob` objects exist: the status is `deletable` (which carries no
    /// `endEpoch`, as in Walrus).
    pub deletable: bool,
    /// Registered, data uploaded, but no certificate yet: `isCertified: false` and no
    /// `initialCertifiedEpoch`. Nodes serve its data anyway (they check only registration).
    pub uncertified: bool,
    /// `endEpoch` (exclusive) instead of certified epoch + [`crate::BLOB_LIFETIME_EPOCHS`].
    pub end_epoch: Option<u32>,
    /// Deleted by its owner: `nonexistent` from then on.
    pub deleted: bool,
}

impl BlobLife {
    /// Whether the blob still exists in `epoch` (not deleted, `endEpoch` not reached).
    pub fn exists_in(&self, epoch: u32, default_end: u32) -> bool {
        !self.deleted && epoch < self.end_epoch.unwrap_or(default_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_exists_until_its_end_epoch_or_deletion() {
        let default = BlobLife::default();
        assert!(default.exists_in(53, 54));
        assert!(!default.exists_in(54, 54), "endEpoch is exclusive");
        let short = BlobLife {
            end_epoch: Some(3),
            ..BlobLife::default()
        };
        assert!(short.exists_in(2, 54));
        assert!(!short.exists_in(3, 54));
        let deleted = BlobLife {
            deletable: true,
            deleted: true,
            ..BlobLife::default()
        };
        assert!(!deleted.exists_in(1, 54));
    }
}
