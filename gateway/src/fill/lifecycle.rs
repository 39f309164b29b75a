//! Blob statuses at fill time and cached blobs' lifecycle ([`crate::status`]): the fill asks
//! the current committee for the blob's verified status while it fetches metadata and slivers,
//! and caches the blob only if the status says to serve it; a cached blob is checked again
//! before it is served past its `endEpoch`, and a deletable one every `--revalidate-deletable`;
//! one found gone is dropped from both tiers and remembered as a miss.

use super::{Filler, ReadError};
use crate::committee::{verified_status, BlobStatus};
use crate::status::{judge, Clock, Entry, Freshness, Kind, Verdict};
use codec::BlobId;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Background status checks running at once, at most (more are skipped, tried on a later hit).
const MAX_BACKGROUND_CHECKS: usize = 256;

/// A status request running beside a fill; aborted if the fill ends first.
pub(super) struct StatusTask(JoinHandle<Option<BlobStatus>>);

impl Drop for StatusTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Blob IDs whose status is being checked in the background.
#[derive(Default)]
pub(super) struct Checking(Mutex<HashSet<BlobId>>);

impl Filler {
    /// The chain's clock now: the current epoch and its duration (unknown for a fixed
    /// committee).
    pub fn clock(&self) -> Clock {
        let snapshot = self.inner.committees.snapshot();
        Clock {
            epoch: snapshot.epoch(),
            epoch_duration: snapshot
                .chain
                .as_ref()
                .map(|c| Duration::from_millis(c.committee.epoch_duration_ms)),
        }
    }

    /// The verified status of `id` from the current committee (NETWORK.md §7.1).
    async fn verified_status(&self, id: BlobId) -> Option<BlobStatus> {
        let topology = self.inner.committees.current();
        if topology.node_count() == 0 {
            return None;
        }
        verified_status(
            &self.inner.client,
            &topology,
            id,
            self.inner.config.metadata_timeout,
        )
        .await
    }

    pub(super) fn spawn_status_check(&self, id: BlobId) -> StatusTask {
        let filler = self.clone();
        StatusTask(tokio::spawn(
            async move { filler.verified_status(id).await },
        ))
    }

    /// What the fill's status check says: the blob's lifetime, or the error to answer. A
    /// check that verified nothing is tried once more (nodes may have been briefly slow).
    pub(super) async fn fill_verdict(
        &self,
        id: BlobId,
        task: Option<StatusTask>,
    ) -> Result<Kind, ReadError> {
        let mut status = match task {
            Some(mut task) => (&mut task.0).await.ok().flatten(),
            None => None,
        };
        if status.is_none() {
            status = self.verified_status(id).await;
        }
        self.fill_judge(status.as_ref())
    }

    /// Before a streaming blob's first row: a verified negative status answers cleanly (404,
    /// 503); no verifiable status yet lets the stream start (`Ok(None)`), and the fill asks
    /// again before it commits, aborting the body if the status still cannot be verified.
    pub(super) async fn streaming_verdict(
        &self,
        mut task: StatusTask,
    ) -> Result<Option<Kind>, ReadError> {
        match (&mut task.0).await.ok().flatten() {
            Some(status) => self.fill_judge(Some(&status)).map(Some),
            None => Ok(None),
        }
    }

    fn fill_judge(&self, status: Option<&BlobStatus>) -> Result<Kind, ReadError> {
        let verdict = judge(status, self.clock().epoch);
        self.inner.telemetry.status_check("fill", verdict.label());
        match verdict {
            Verdict::Serve(kind) => Ok(kind),
            Verdict::Gone(word) => Err(ReadError::Gone(word)),
            Verdict::Unavailable(why) => Err(ReadError::Unavailable(why.to_owned())),
        }
    }

    /// The lifetime entry of a cached blob (headers for this epoch), without any check.
    pub fn lifecycle_entry(&self, id: &BlobId, clock: Clock) -> Option<Arc<Entry>> {
        self.inner.lifecycle.get(id, clock)
    }

    /// `--revalidate-deletable`.
    pub fn revalidate_deletable(&self) -> Duration {
        self.inner.lifecycle.revalidate
    }

    /// Before serving `id` from the cache: its entry if it may be served, after checking its
    /// status again when it is past its `endEpoch` or a deletable blob due for revalidation.
    /// A blob found gone is dropped from both tiers and answers 404; a blob past its
    /// `endEpoch` whose status cannot be verified answers 503. No entry: `Ok(None)`.
    pub async fn check_lifecycle(&self, id: &BlobId) -> Result<Option<Arc<Entry>>, ReadError> {
        let clock = self.clock();
        let Some(entry) = self.inner.lifecycle.get(id, clock) else {
            return Ok(None);
        };
        let freshness = entry.freshness(clock.epoch, self.inner.lifecycle.revalidate);
        let reason = match freshness {
            Freshness::Fresh => return Ok(Some(entry)),
            Freshness::PastEndEpoch => "end_epoch",
            Freshness::Revalidate => "deletable",
        };
        self.inner.telemetry.revalidation(reason);
        let status = self.verified_status(*id).await;
        let verdict = judge(status.as_ref(), clock.epoch);
        self.inner
            .telemetry
            .status_check("revalidate", verdict.label());
        match verdict {
            Verdict::Serve(kind) => Ok(Some(self.inner.lifecycle.record(*id, kind, clock))),
            Verdict::Gone(word) => {
                let why = if freshness == Freshness::PastEndEpoch {
                    "expired"
                } else {
                    "deleted"
                };
                self.drop_gone(id, why, word).await;
                Err(ReadError::Gone(word))
            }
            Verdict::Unavailable(why) if freshness == Freshness::PastEndEpoch => Err(
                ReadError::Unavailable(format!("past its end epoch, and {why}")),
            ),
            // A deletable blob whose status cannot be verified now: served as it was, and
            // checked again after another interval rather than on every request.
            Verdict::Unavailable(_) => {
                Ok(Some(self.inner.lifecycle.record(*id, entry.kind, clock)))
            }
        }
    }

    /// A cached blob with no known status (served from disk after a restart, or its entry
    /// was dropped from the bounded map): check it in the background, so it is served now and
    /// dropped if Walrus no longer has it.
    pub fn check_in_background(&self, id: BlobId) {
        {
            let mut checking = self
                .inner
                .checking
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if checking.len() >= MAX_BACKGROUND_CHECKS || !checking.insert(id) {
                return;
            }
        }
        let filler = self.clone();
        tokio::spawn(async move {
            filler.inner.telemetry.revalidation("unknown");
            let clock = filler.clock();
            let status = filler.verified_status(id).await;
            let verdict = judge(status.as_ref(), clock.epoch);
            filler
                .inner
                .telemetry
                .status_check("revalidate", verdict.label());
            match verdict {
                Verdict::Serve(kind) => {
                    filler.inner.lifecycle.record(id, kind, clock);
                }
                Verdict::Gone(word) => filler.drop_gone(&id, "nonexistent", word).await,
                Verdict::Unavailable(_) => {}
            }
            filler
                .inner
                .checking
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        });
    }

    /// Drop a blob Walrus no longer serves: both tiers, its entry; remembered as a miss.
    async fn drop_gone(&self, id: &BlobId, reason: &'static str, word: &'static str) {
        self.inner.lifecycle.forget(id);
        if let Err(e) = self.inner.cache.purge(id).await {
            tracing::warn!(blob_id = %id, error = %e, "could not drop a blob Walrus no longer serves");
        }
        self.remember_miss(*id, &ReadError::Gone(word)).await;
        self.inner.telemetry.lifecycle_dropped(reason);
        tracing::info!(blob_id = %id, status = word, reason, "dropped a cached blob Walrus no longer serves");
    }
}
