//! What this gateway remembers about Blob IDs between requests, so that asking for a blob that
//! does not exist costs the storage nodes one lookup, not one per request (issue 21, item 8).
//!
//! * **Misses** (a negative cache): a lookup that ended in "not found" (nodes holding `2f+1`
//!   shards, or every upstream, said so) is answered from here for `ttl` (short: seconds), at
//!   most [`MAX_MISSES`] IDs. A blob published or cached through this gateway drops its entry
//!   at once, and a known ID (below) is never recorded as missing (checked before and after
//!   the insert, so a lookup that overlaps a publish leaves no stale miss behind): a
//!   remembered miss never hides a blob this gateway knows exists.
//! * **Known IDs**: Blob IDs whose metadata verified here (or that were published or cached
//!   here), kept longer than their metadata. Only those get their systematic slivers requested
//!   before the metadata arrives: a random ID costs metadata requests only, never sliver
//!   requests.

use super::ReadError;
use codec::BlobId;
use std::time::Duration;

/// Most IDs remembered as missing (about 100 bytes each).
pub(super) const MAX_MISSES: u64 = 100_000;
/// Most IDs remembered as existing (32 bytes plus the cache's own, each).
const MAX_KNOWN: u64 = 200_000;
/// How long an ID is remembered as existing after it was last seen.
const KNOWN_FOR: Duration = Duration::from_secs(24 * 3600);

pub(super) struct Memory {
    /// `None`: misses are not remembered (`ttl` zero).
    misses: Option<moka::future::Cache<BlobId, ReadError>>,
    known: moka::future::Cache<BlobId, ()>,
}

impl Memory {
    pub(super) fn new(miss_ttl: Duration) -> Self {
        Self {
            misses: (!miss_ttl.is_zero()).then(|| {
                moka::future::Cache::builder()
                    .max_capacity(MAX_MISSES)
                    .time_to_live(miss_ttl)
                    .build()
            }),
            known: moka::future::Cache::builder()
                .max_capacity(MAX_KNOWN)
                .time_to_idle(KNOWN_FOR)
                .build(),
        }
    }

    /// The remembered "not found" for `id`, if one is still fresh.
    pub(super) async fn miss(&self, id: &BlobId) -> Option<ReadError> {
        self.misses.as_ref()?.get(id).await
    }

    /// Remember `error` if it says the blob does not exist and the blob is not known to exist.
    /// True if it was recorded now (not already remembered).
    pub(super) async fn record_miss(&self, id: BlobId, error: &ReadError) -> bool {
        let Some(misses) = &self.misses else {
            return false;
        };
        // A verified status saying the blob is gone (or nodes refusing it) holds even for a
        // blob that existed before: it expired, was deleted, or was blocked since.
        let definitive = matches!(
            error,
            ReadError::Gone(_) | ReadError::ForbiddenByNodes { .. }
        );
        if !definitive
            && !matches!(
                error,
                ReadError::NotFound { .. } | ReadError::NotFoundUpstream { .. }
            )
        {
            return false;
        }
        if definitive {
            self.known.invalidate(&id).await;
        } else if self.known.contains_key(&id) {
            return false;
        }
        // A fill and the lookup it made both report the same miss: count it once.
        let fresh = misses.entry(id).or_insert(error.clone()).await.is_fresh();
        // [`Memory::exists`] may have run between the check and the insert: undo it then.
        if !definitive && self.known.contains_key(&id) {
            misses.invalidate(&id).await;
            return false;
        }
        fresh
    }

    /// `id` exists (its metadata verified, or it was published or cached here): forget any
    /// miss and remember it. True if a miss was dropped.
    pub(super) async fn exists(&self, id: BlobId) -> bool {
        // Known first, then the miss dropped: see `record_miss` for the other side.
        self.known.insert(id, ()).await;
        match &self.misses {
            Some(misses) => misses.remove(&id).await.is_some(),
            None => false,
        }
    }

    /// Whether `id` was seen to exist (recently enough to still be remembered).
    pub(super) fn is_known(&self, id: &BlobId) -> bool {
        self.known.contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_found() -> ReadError {
        ReadError::NotFound {
            shards: 7,
            n_shards: 10,
        }
    }

    #[tokio::test]
    async fn misses_are_remembered_until_the_blob_exists() {
        let memory = Memory::new(Duration::from_secs(60));
        let id = BlobId([1; 32]);
        assert!(memory.record_miss(id, &not_found()).await);
        assert!(!memory.record_miss(id, &not_found()).await, "once");
        assert_eq!(memory.miss(&id).await, Some(not_found()));
        assert!(!memory.is_known(&id));
        assert!(memory.exists(id).await, "the miss was dropped");
        assert_eq!(memory.miss(&id).await, None);
        assert!(memory.is_known(&id));
        // A blob seen to exist is not remembered as missing (a lookup that overlapped its
        // publish must not hide it).
        assert!(!memory.record_miss(id, &not_found()).await);
        assert_eq!(memory.miss(&id).await, None);
    }

    #[tokio::test]
    async fn only_not_found_is_remembered() {
        let memory = Memory::new(Duration::from_secs(60));
        let id = BlobId([2; 32]);
        let transient = ReadError::Unavailable("nodes down".into());
        assert!(!memory.record_miss(id, &transient).await);
        assert!(!memory.record_miss(id, &ReadError::Overloaded).await);
        assert_eq!(memory.miss(&id).await, None);
        let upstreams = ReadError::NotFoundUpstream { upstreams: 2 };
        assert!(memory.record_miss(id, &upstreams).await);
        assert_eq!(memory.miss(&id).await, Some(upstreams));
    }

    #[tokio::test]
    async fn misses_expire_and_a_zero_ttl_disables_them() {
        let memory = Memory::new(Duration::from_millis(50));
        let id = BlobId([4; 32]);
        assert!(memory.record_miss(id, &not_found()).await);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(memory.miss(&id).await, None);
        let off = Memory::new(Duration::ZERO);
        assert!(!off.record_miss(id, &not_found()).await);
        assert_eq!(off.miss(&id).await, None);
    }
}
