//! A blob's status on Walrus and its lifecycle in the cache (issue 17).
//!
//! * **Verdict.** The nodes' verified status (NETWORK.md §7.1: the latest status held by nodes
//!   of at least validity weight, `nonexistent` only by a quorum, asked until the answers
//!   still pending cannot change it, [`crate::committee::verified_status`]) decides what a blob
//!   request answers, as the aggregator does ([`judge`]): `nonexistent` (never registered,
//!   expired, deleted) and `invalid` are 404 `BLOB_NOT_FOUND`; registered but not certified, or
//!   no status that verifies, is 503 `BLOB_UNAVAILABLE`; a certified blob is served, and keeps
//!   its lifetime: `endEpoch` for a permanent blob, "deletable" for one only deletable `Blob`
//!   objects hold (Walrus states no `endEpoch` for those).
//! * **Lifecycle.** [`Lifecycle`] keeps that lifetime per cached Blob ID, in memory, bounded
//!   ([`MAX_ENTRIES`]; one is dropped at random when full, and its blob is re-checked when it is
//!   next served from disk). It is not written to the disk tier: after a restart a blob served
//!   from disk without a known status has its status checked in the background on its first
//!   serve; a blob put in memory by this process without a fill (published here, filled from
//!   an upstream aggregator, which did its own check) has none and is served as before.
//! * **Freshness** ([`Entry::freshness`]): a permanent blob is not served once the committee's
//!   current epoch reaches its `endEpoch` until a re-check shows it was extended; a deletable
//!   blob is re-checked every `--revalidate-deletable`. A re-check that finds it gone drops it
//!   from both tiers.
//! * **Headers** are computed once per entry and epoch ([`Entry::cache_control`],
//!   [`Entry::end_epoch`], and the whole memory-hit head), so the memory-hit lane pays one map
//!   lookup: `Cache-Control: public, max-age=N, immutable` for a permanent blob with N no longer
//!   than its remaining whole epochs (the current epoch's rest is not counted, so N never
//!   overstates), a short `max-age` for a deletable one, and `X-Walrus-End-Epoch` whenever the
//!   end epoch is known. Without a chain view (a fixed committee) the epoch is unknown: permanent
//!   blobs keep the year-long header there and are never expired locally (the nodes' statuses
//!   still are, at fill and re-check).

use crate::committee::BlobStatus;
use codec::BlobId;
use http::{HeaderMap, HeaderValue};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// The year-long header for blobs whose remaining lifetime cannot be known (no chain view).
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Longest `max-age` ever sent (one year, the HTTP convention for "forever").
const MAX_AGE_CAP: u64 = 31_536_000;

/// `max-age` for deletable blobs: downstream caches ask again within a minute.
const DELETABLE_MAX_AGE: u64 = 60;

/// Blob IDs whose lifetime is kept (about 200 bytes each).
pub const MAX_ENTRIES: usize = 1 << 20;

const SHARDS: usize = 16;

/// How long a blob lives on Walrus, as far as serving it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Available through epoch `end_epoch - 1` (`endEpoch` is exclusive).
    Permanent { end_epoch: u32 },
    /// Held only by deletable `Blob` objects: may disappear any time.
    Deletable,
}

/// What a verified status means for a blob request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Serve(Kind),
    /// 404: the status word (`nonexistent`, `invalid`, `expired`).
    Gone(&'static str),
    /// 503: why not (not certified, or no verifiable status).
    Unavailable(&'static str),
}

impl Verdict {
    /// A fixed word for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Serve(_) => "serve",
            Verdict::Gone(_) => "gone",
            Verdict::Unavailable(_) => "unavailable",
        }
    }
}

/// The aggregator's answer for a verified status (`None`: none verified), in `epoch` (the
/// committee's current one, if known).
pub fn judge(status: Option<&BlobStatus>, epoch: Option<u32>) -> Verdict {
    match status {
        None => Verdict::Unavailable("no blob status verified by nodes of validity weight"),
        Some(BlobStatus::Nonexistent) => Verdict::Gone("nonexistent"),
        Some(BlobStatus::Invalid) => Verdict::Gone("invalid"),
        Some(BlobStatus::Permanent {
            certified: false, ..
        })
        | Some(BlobStatus::Deletable {
            initial_certified_epoch: None,
        }) => Verdict::Unavailable("the blob is registered but not certified yet"),
        Some(BlobStatus::Permanent { end_epoch, .. }) => match epoch {
            Some(epoch) if epoch >= *end_epoch => Verdict::Gone("expired"),
            _ => Verdict::Serve(Kind::Permanent {
                end_epoch: *end_epoch,
            }),
        },
        Some(BlobStatus::Deletable { .. }) => Verdict::Serve(Kind::Deletable),
    }
}

/// Whether a cached blob may be served as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// The current epoch reached its `endEpoch`: re-check before serving (maybe extended).
    PastEndEpoch,
    /// A deletable blob not checked for `--revalidate-deletable`.
    Revalidate,
}

/// What the chain says about time: the current epoch and how long one lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Clock {
    pub epoch: Option<u32>,
    pub epoch_duration: Option<Duration>,
}

/// One cached blob's lifetime and its response headers for one epoch.
#[derive(Debug)]
pub struct Entry {
    pub kind: Kind,
    /// When the nodes last stated the status.
    pub checked: Instant,
    /// The clock the headers were computed for.
    clock: Clock,
    cache_control: HeaderValue,
    end_epoch: Option<HeaderValue>,
    /// The whole memory-hit response head, built on the first memory hit in this epoch.
    head: OnceLock<HeaderMap>,
}

impl Entry {
    fn new(kind: Kind, checked: Instant, clock: Clock, revalidate: Duration) -> Self {
        let (cache_control, end_epoch) = match kind {
            Kind::Permanent { end_epoch } => {
                let cache_control = match (clock.epoch, clock.epoch_duration) {
                    (Some(epoch), Some(duration)) => {
                        let whole = u64::from(end_epoch.saturating_sub(epoch).saturating_sub(1));
                        let age = whole.saturating_mul(duration.as_secs()).min(MAX_AGE_CAP);
                        if age == 0 {
                            HeaderValue::from_static("public, no-cache")
                        } else {
                            header_value(&format!("public, max-age={age}, immutable"))
                        }
                    }
                    _ => HeaderValue::from_static(IMMUTABLE),
                };
                (cache_control, Some(HeaderValue::from(end_epoch)))
            }
            Kind::Deletable => {
                let age = DELETABLE_MAX_AGE.min(revalidate.as_secs());
                (header_value(&format!("public, max-age={age}")), None)
            }
        };
        Self {
            kind,
            checked,
            clock,
            cache_control,
            end_epoch,
            head: OnceLock::new(),
        }
    }

    /// Whether the blob may be served now, in `epoch`.
    pub fn freshness(&self, epoch: Option<u32>, revalidate: Duration) -> Freshness {
        match self.kind {
            Kind::Permanent { end_epoch } if epoch.is_some_and(|e| e >= end_epoch) => {
                Freshness::PastEndEpoch
            }
            Kind::Deletable if self.checked.elapsed() >= revalidate => Freshness::Revalidate,
            _ => Freshness::Fresh,
        }
    }

    /// `Cache-Control` for a blob answer.
    pub fn cache_control(&self) -> &HeaderValue {
        &self.cache_control
    }

    /// `X-Walrus-End-Epoch`, when the end epoch is known (permanent blobs).
    pub fn end_epoch(&self) -> Option<&HeaderValue> {
        self.end_epoch.as_ref()
    }

    /// Put this entry's headers on a blob answer.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(http::header::CACHE_CONTROL, self.cache_control.clone());
        if let Some(end) = &self.end_epoch {
            headers.insert(END_EPOCH_HEADER, end.clone());
        }
    }

    /// The memory-hit response head, built once per entry (so once per blob and epoch).
    pub fn head(&self, build: impl FnOnce() -> HeaderMap) -> &HeaderMap {
        self.head.get_or_init(build)
    }

    /// The memory-hit head, if [`Entry::head`] built it.
    pub fn built_head(&self) -> Option<&HeaderMap> {
        self.head.get()
    }
}

/// The end-epoch header's name.
pub const END_EPOCH_HEADER: &str = "x-walrus-end-epoch";

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("no-cache"))
}

/// Lifetimes of cached blobs, by Blob ID; bounded, sharded for cheap concurrent reads.
pub struct Lifecycle {
    shards: Vec<RwLock<HashMap<BlobId, Arc<Entry>>>>,
    per_shard: usize,
    /// `--revalidate-deletable`.
    pub revalidate: Duration,
}

impl Lifecycle {
    pub fn new(revalidate: Duration) -> Self {
        Self::with_capacity(revalidate, MAX_ENTRIES)
    }

    fn with_capacity(revalidate: Duration, entries: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            per_shard: (entries / SHARDS).max(1),
            revalidate,
        }
    }

    fn shard(&self, id: &BlobId) -> &RwLock<HashMap<BlobId, Arc<Entry>>> {
        &self.shards[usize::from(id.as_bytes()[0]) % SHARDS]
    }

    /// The blob's entry with headers for `clock` (rebuilt once when the epoch changed).
    pub fn get(&self, id: &BlobId, clock: Clock) -> Option<Arc<Entry>> {
        let entry = self
            .shard(id)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()?;
        if entry.clock == clock {
            return Some(entry);
        }
        Some(self.insert(
            *id,
            Entry::new(entry.kind, entry.checked, clock, self.revalidate),
        ))
    }

    /// Record a status the nodes just stated.
    pub fn record(&self, id: BlobId, kind: Kind, clock: Clock) -> Arc<Entry> {
        self.insert(id, Entry::new(kind, Instant::now(), clock, self.revalidate))
    }

    fn insert(&self, id: BlobId, entry: Entry) -> Arc<Entry> {
        let entry = Arc::new(entry);
        let mut map = self
            .shard(&id)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.per_shard && !map.contains_key(&id) {
            // Any one: its blob is re-checked when next served from disk.
            if let Some(victim) = map.keys().next().copied() {
                map.remove(&victim);
            }
        }
        map.insert(id, entry.clone());
        entry
    }

    /// Forget a blob (dropped from the cache, or blocked).
    pub fn forget(&self, id: &BlobId) {
        self.shard(id)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permanent(end_epoch: u32, certified: bool) -> BlobStatus {
        BlobStatus::Permanent {
            end_epoch,
            certified,
            initial_certified_epoch: certified.then_some(1),
        }
    }

    #[test]
    fn statuses_answer_as_the_aggregator() {
        assert!(matches!(judge(None, Some(3)), Verdict::Unavailable(_)));
        assert_eq!(
            judge(Some(&BlobStatus::Nonexistent), None),
            Verdict::Gone("nonexistent")
        );
        assert_eq!(
            judge(Some(&BlobStatus::Invalid), None),
            Verdict::Gone("invalid")
        );
        assert!(matches!(
            judge(Some(&permanent(9, false)), Some(3)),
            Verdict::Unavailable(_)
        ));
        let uncertified = BlobStatus::Deletable {
            initial_certified_epoch: None,
        };
        assert!(matches!(
            judge(Some(&uncertified), None),
            Verdict::Unavailable(_)
        ));
        assert_eq!(
            judge(Some(&permanent(9, true)), Some(8)),
            Verdict::Serve(Kind::Permanent { end_epoch: 9 })
        );
        assert_eq!(
            judge(Some(&permanent(9, true)), Some(9)),
            Verdict::Gone("expired")
        );
        assert_eq!(
            judge(Some(&permanent(9, true)), None),
            Verdict::Serve(Kind::Permanent { end_epoch: 9 })
        );
        let deletable = BlobStatus::Deletable {
            initial_certified_epoch: Some(2),
        };
        assert_eq!(
            judge(Some(&deletable), Some(100)),
            Verdict::Serve(Kind::Deletable)
        );
    }

    #[test]
    fn max_age_never_exceeds_the_remaining_whole_epochs() {
        let hour = Duration::from_secs(3600);
        let clock = |epoch| Clock {
            epoch: Some(epoch),
            epoch_duration: Some(Duration::from_secs(1000)),
        };
        let e = Entry::new(
            Kind::Permanent { end_epoch: 10 },
            Instant::now(),
            clock(7),
            hour,
        );
        assert_eq!(e.cache_control(), "public, max-age=2000, immutable");
        assert_eq!(e.end_epoch().unwrap(), "10");
        let last = Entry::new(
            Kind::Permanent { end_epoch: 10 },
            Instant::now(),
            clock(9),
            hour,
        );
        assert_eq!(last.cache_control(), "public, no-cache");
        let far = Entry::new(
            Kind::Permanent {
                end_epoch: u32::MAX,
            },
            Instant::now(),
            clock(1),
            hour,
        );
        assert_eq!(far.cache_control(), "public, max-age=31536000, immutable");
        let unknown = Entry::new(
            Kind::Permanent { end_epoch: 10 },
            Instant::now(),
            Clock::default(),
            hour,
        );
        assert_eq!(unknown.cache_control(), IMMUTABLE);
        let deletable = Entry::new(Kind::Deletable, Instant::now(), clock(1), hour);
        assert_eq!(deletable.cache_control(), "public, max-age=60");
        assert!(deletable.end_epoch().is_none());
    }

    #[test]
    fn freshness_follows_the_epoch_and_the_revalidation_interval() {
        let e = Entry::new(
            Kind::Permanent { end_epoch: 5 },
            Instant::now(),
            Clock::default(),
            Duration::from_secs(1),
        );
        assert_eq!(e.freshness(Some(4), Duration::ZERO), Freshness::Fresh);
        assert_eq!(
            e.freshness(Some(5), Duration::ZERO),
            Freshness::PastEndEpoch
        );
        assert_eq!(e.freshness(None, Duration::ZERO), Freshness::Fresh);
        let d = Entry::new(
            Kind::Deletable,
            Instant::now(),
            Clock::default(),
            Duration::from_secs(1),
        );
        assert_eq!(
            d.freshness(Some(4), Duration::from_secs(60)),
            Freshness::Fresh
        );
        assert_eq!(d.freshness(Some(4), Duration::ZERO), Freshness::Revalidate);
    }

    #[test]
    fn the_map_is_bounded_and_rebuilds_headers_per_epoch() {
        let life = Lifecycle::with_capacity(Duration::from_secs(60), SHARDS * 2);
        for i in 0..=255u8 {
            life.record(BlobId([i; 32]), Kind::Deletable, Clock::default());
        }
        assert!(life.len() <= SHARDS * 2, "{}", life.len());
        let id = BlobId([7; 32]);
        let clock = |epoch| Clock {
            epoch: Some(epoch),
            epoch_duration: Some(Duration::from_secs(10)),
        };
        life.record(id, Kind::Permanent { end_epoch: 5 }, clock(1));
        let a = life.get(&id, clock(1)).unwrap();
        assert_eq!(a.cache_control(), "public, max-age=30, immutable");
        let b = life.get(&id, clock(2)).unwrap();
        assert_eq!(b.cache_control(), "public, max-age=20, immutable");
        assert!(Arc::ptr_eq(&b, &life.get(&id, clock(2)).unwrap()));
        life.forget(&id);
        assert!(life.get(&id, clock(2)).is_none());
    }
}
