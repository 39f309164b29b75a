//! Stored inference proofs, batched (issue 16): the proofs of requests that arrive within a
//! window (`--proof-batch-ms`) or up to a count (`--proof-batch-max`) are handed to one publish,
//! which stores them as the patches of one quilt ([`crate::api::inference`] does the encoding and
//! the publishing), and each request gets its own proof's place back.
//!
//! There is no background task: the first request of a batch leads it. It waits for the window
//! to close (or the batch to fill), then for one of a few publish permits (the batch keeps
//! growing, up to its maximum, while it waits: under load batches get larger, not more
//! numerous), seals the batch and publishes it with its own request's handle on the gateway,
//! then answers every request in it. The others wait for that answer.
//!
//! Guarantees:
//! * **Nothing is reported stored that was not.** A request is answered with a place only from
//!   the publish that stored its proof; a failed publish answers each of its requests with that
//!   failure.
//! * **Bounded.** Proofs waiting or being published are bounded in count and bytes; one more is
//!   refused at once ([`BatchError::QueueFull`]), never queued without limit.
//! * **Cancellation.** A leader whose request goes away (client gone, shutdown past its grace)
//!   drops its batch; each waiter sees its answer channel close and submits its proof again
//!   (a few times at most), so no waiter hangs and none is failed for another's disconnect.
//!   Shutdown drains: a batch closes within one window, and in-flight requests wait for it.
//! * Identical proofs in one batch (same record, so the same bytes) are stored once and share
//!   a place.

use crate::budget::{Budget, Reservation};
use bytes::Bytes;
use codec::quilt::QuiltPatchId;
use codec::BlobId;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify, Semaphore};

/// How often a proof is submitted again after its batch was dropped by a cancelled leader.
const ATTEMPTS: usize = 3;

/// The batching policy.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// How long a batch stays open after its first proof (`--proof-batch-ms`).
    pub window: Duration,
    /// Proofs in one batch at most (`--proof-batch-max`, capped by what a quilt of the
    /// committee holds); at least 1.
    pub max: usize,
    /// Proofs waiting or being published at once (`--proof-queue`); one more is refused.
    pub queue: usize,
    /// Bytes of those proofs at once (`--proof-queue-bytes`); one more that does not fit is
    /// refused (one proof alone always fits).
    pub queue_bytes: u64,
    /// Batches published at once; the next batch keeps filling while it waits.
    pub publishes: usize,
}

/// One proof handed to a batch publish.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its patch identifier (unique per proof: a hash of its record).
    pub identifier: String,
    pub data: Bytes,
}

/// Where a proof was stored: the quilt (its Blob ID) and the proof's patch in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub quilt_id: BlobId,
    pub patch_id: QuiltPatchId,
}

/// Why a proof was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError<E> {
    /// The named bound of the queue is reached; nothing was stored.
    #[error("too many proofs are waiting to be stored ({0})")]
    QueueFull(&'static str),
    /// The batch's publish failed (or refused this proof), with its error.
    #[error("{0}")]
    Failed(E),
    /// The proof's batch was dropped by cancelled leaders [`ATTEMPTS`] times in a row.
    #[error("the batch holding the proof was abandoned {ATTEMPTS} times (the gateway is shutting down?)")]
    Abandoned,
}

type Answer<E> = Result<Placed, E>;

struct Pending<E> {
    item: Item,
    tx: oneshot::Sender<Answer<E>>,
}

/// A batch being filled; sealed once taken out of [`Batcher::open`].
struct Batch<E> {
    items: Mutex<Vec<Pending<E>>>,
    /// Told when the batch reaches its maximum (a permit is kept if nobody waits yet).
    full: Notify,
}

/// Proofs waiting to be stored in quilts, in batches.
pub struct Batcher<E> {
    config: BatchConfig,
    /// The batch open to new proofs, if any.
    open: Mutex<Option<Arc<Batch<E>>>>,
    queued: AtomicUsize,
    bytes: Arc<Budget>,
    publishes: Semaphore,
}

/// A proof's share of the queue, given back when its request is answered.
struct Slot<'a> {
    queued: &'a AtomicUsize,
    _bytes: Reservation,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Seals and empties a leader's batch however the leader ends: if it is dropped before it
/// answered, the waiters' channels close and they submit again.
struct Leading<'a, E> {
    batcher: &'a Batcher<E>,
    batch: Arc<Batch<E>>,
}

impl<E> Leading<'_, E> {
    /// Close the batch to new proofs and take what it holds.
    fn seal(&self) -> Vec<Pending<E>> {
        let mut open = lock(&self.batcher.open);
        if open.as_ref().is_some_and(|b| Arc::ptr_eq(b, &self.batch)) {
            *open = None;
        }
        drop(open);
        std::mem::take(&mut *lock(&self.batch.items))
    }
}

impl<E> Drop for Leading<'_, E> {
    fn drop(&mut self) {
        drop(self.seal());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds consistent data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<E: Clone> Batcher<E> {
    pub fn new(config: BatchConfig) -> Self {
        Self {
            config: BatchConfig {
                max: config.max.max(1),
                publishes: config.publishes.max(1),
                ..config
            },
            open: Mutex::new(None),
            queued: AtomicUsize::new(0),
            bytes: Budget::new(config.queue_bytes),
            publishes: Semaphore::new(config.publishes.max(1)),
        }
    }

    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Proofs waiting or being published now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    fn admit(&self, bytes: u64) -> Result<Slot<'_>, BatchError<E>> {
        let taken = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.config.queue).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(BatchError::QueueFull("proofs"));
        }
        match self.bytes.try_reserve(bytes) {
            Some(reservation) => Ok(Slot {
                queued: &self.queued,
                _bytes: reservation,
            }),
            None => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                Err(BatchError::QueueFull("bytes"))
            }
        }
    }

    /// Store `item` in the next batch and wait for its place. If this request leads the batch,
    /// `publish` stores it: it gets the batch's distinct proofs and answers each, in order.
    pub async fn submit<F, Fut>(&self, item: Item, publish: F) -> Result<Placed, BatchError<E>>
    where
        F: FnOnce(Vec<Item>) -> Fut,
        Fut: Future<Output = Vec<Answer<E>>>,
    {
        let _slot = self.admit(item.data.len() as u64)?;
        let mut publish = Some(publish);
        for _ in 0..ATTEMPTS {
            let (tx, rx) = oneshot::channel();
            let pending = Pending {
                item: item.clone(),
                tx,
            };
            let led = {
                let mut open = lock(&self.open);
                match open.as_ref() {
                    Some(batch) => {
                        let mut items = lock(&batch.items);
                        items.push(pending);
                        if items.len() >= self.config.max {
                            batch.full.notify_one();
                            drop(items);
                            *open = None;
                        }
                        None
                    }
                    None => {
                        let batch = Arc::new(Batch {
                            items: Mutex::new(vec![pending]),
                            full: Notify::new(),
                        });
                        if self.config.max > 1 {
                            *open = Some(batch.clone());
                        }
                        Some(batch)
                    }
                }
            };
            if let Some(batch) = led {
                match publish.take() {
                    Some(publish) => self.lead(batch, publish).await,
                    // A leader whose publish answered its own proof with nothing (it answers
                    // every proof, so this is a bug): drop the new batch at once, so its
                    // waiters submit again rather than wait for a leader that cannot publish.
                    None => {
                        drop(Leading {
                            batcher: self,
                            batch,
                        });
                        return Err(BatchError::Abandoned);
                    }
                }
            }
            match rx.await {
                Ok(answer) => return answer.map_err(BatchError::Failed),
                // The leader went away with the batch: submit again.
                Err(_) => continue,
            }
        }
        Err(BatchError::Abandoned)
    }

    async fn lead<F, Fut>(&self, batch: Arc<Batch<E>>, publish: F)
    where
        F: FnOnce(Vec<Item>) -> Fut,
        Fut: Future<Output = Vec<Answer<E>>>,
    {
        let leading = Leading {
            batcher: self,
            batch,
        };
        if self.config.max > 1 {
            tokio::select! {
                () = tokio::time::sleep(self.config.window) => {}
                () = leading.batch.full.notified() => {}
            }
        }
        // The semaphore is never closed.
        let Ok(_permit) = self.publishes.acquire().await else {
            return;
        };
        let pending = leading.seal();
        // Identical proofs (the same identifier: the same record, so the same bytes) once.
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut items = Vec::new();
        let mut waiters: Vec<Vec<oneshot::Sender<Answer<E>>>> = Vec::new();
        for p in pending {
            match index.get(&p.item.identifier) {
                Some(&i) => waiters[i].push(p.tx),
                None => {
                    index.insert(p.item.identifier.clone(), items.len());
                    items.push(p.item);
                    waiters.push(vec![p.tx]);
                }
            }
        }
        let answers = publish(items).await;
        for (answer, txs) in answers.into_iter().zip(waiters) {
            for tx in txs {
                // A waiter that went away has nothing to be told.
                let _ = tx.send(answer.clone());
            }
        }
        drop(leading);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn config(max: usize) -> BatchConfig {
        BatchConfig {
            window: Duration::from_millis(250),
            max,
            queue: 1000,
            queue_bytes: 1 << 20,
            publishes: 1,
        }
    }

    fn item(i: usize) -> Item {
        Item {
            identifier: format!("proof-{i}"),
            data: Bytes::from(vec![i as u8; 10]),
        }
    }

    /// A publish that "stores" each batch as quilt number `calls`, patch `i` at column `i + 1`.
    fn fake(
        calls: &Arc<AtomicU64>,
        sizes: &Arc<Mutex<Vec<usize>>>,
        fail: bool,
    ) -> impl FnOnce(Vec<Item>) -> std::future::Ready<Vec<Answer<String>>> {
        let calls = calls.clone();
        let sizes = sizes.clone();
        move |items| {
            let quilt = calls.fetch_add(1, Ordering::SeqCst);
            lock(&sizes).push(items.len());
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&quilt.to_le_bytes());
            std::future::ready(
                (0..items.len())
                    .map(|i| {
                        if fail {
                            Err(format!("nodes refused quilt {quilt}"))
                        } else {
                            Ok(Placed {
                                quilt_id: BlobId(id),
                                patch_id: QuiltPatchId {
                                    quilt_id: BlobId(id),
                                    start_index: i as u16 + 1,
                                    end_index: i as u16 + 2,
                                },
                            })
                        }
                    })
                    .collect(),
            )
        }
    }

    #[tokio::test(start_paused = true)]
    async fn proofs_within_a_window_share_one_publish() {
        let batcher = Arc::new(Batcher::<String>::new(config(256)));
        let calls = Arc::new(AtomicU64::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (b, c, s) = (batcher.clone(), calls.clone(), sizes.clone());
            tasks.push(tokio::spawn(async move {
                b.submit(item(i), fake(&c, &s, false)).await
            }));
        }
        let mut places = std::collections::HashSet::new();
        for t in tasks {
            let placed = t.await.unwrap().unwrap();
            assert!(places.insert(placed.patch_id), "two proofs got one patch");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(*lock(&sizes), vec![50]);
        assert_eq!(batcher.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_closes_at_its_maximum_and_duplicates_are_stored_once() {
        let batcher = Arc::new(Batcher::<String>::new(config(4)));
        let calls = Arc::new(AtomicU64::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..10 {
            let (b, c, s) = (batcher.clone(), calls.clone(), sizes.clone());
            // Proofs 0 and 1 are the same proof.
            let it = item(if i == 1 { 0 } else { i });
            tasks.push(tokio::spawn(async move {
                b.submit(it, fake(&c, &s, false)).await
            }));
        }
        let mut placed = Vec::new();
        for t in tasks {
            placed.push(t.await.unwrap().unwrap());
        }
        assert_eq!(placed[0], placed[1], "one proof, one place");
        let sizes = lock(&sizes).clone();
        assert_eq!(sizes.iter().sum::<usize>(), 9, "{sizes:?}");
        assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "{sizes:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_publish_fails_every_proof_in_its_batch() {
        let batcher = Arc::new(Batcher::<String>::new(config(256)));
        let calls = Arc::new(AtomicU64::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (b, c, s) = (batcher.clone(), calls.clone(), sizes.clone());
            tasks.push(tokio::spawn(async move {
                b.submit(item(i), fake(&c, &s, true)).await
            }));
        }
        for t in tasks {
            assert_eq!(
                t.await.unwrap(),
                Err(BatchError::Failed("nodes refused quilt 0".into()))
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_bounded_in_count_and_bytes() {
        let batcher = Arc::new(Batcher::<String>::new(BatchConfig {
            queue: 3,
            queue_bytes: 25,
            ..config(256)
        }));
        let calls = Arc::new(AtomicU64::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..2 {
            let (b, c, s) = (batcher.clone(), calls.clone(), sizes.clone());
            tasks.push(tokio::spawn(async move {
                b.submit(item(i), fake(&c, &s, false)).await
            }));
        }
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(batcher.queued(), 2);
        // 20 of 25 bytes are held: 10 more do not fit.
        let refused = batcher.submit(item(7), fake(&calls, &sizes, false)).await;
        assert_eq!(refused, Err(BatchError::QueueFull("bytes")));
        let small = Item {
            identifier: "small".into(),
            data: Bytes::from_static(b"x"),
        };
        let (b, c, s) = (batcher.clone(), calls.clone(), sizes.clone());
        let s2 = small.clone();
        tasks.push(tokio::spawn(async move {
            b.submit(s2, fake(&c, &s, false)).await
        }));
        tokio::task::yield_now().await;
        let refused = batcher.submit(small, fake(&calls, &sizes, false)).await;
        assert_eq!(refused, Err(BatchError::QueueFull("proofs")));
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(batcher.queued(), 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_leader_hands_its_proofs_to_the_next_batch() {
        let batcher = Arc::new(Batcher::<String>::new(config(256)));
        let calls = Arc::new(AtomicU64::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let leader = {
            let (b, c, s) = (batcher.clone(), calls.clone(), sizes.clone());
            tokio::spawn(async move { b.submit(item(0), fake(&c, &s, false)).await })
        };
        tokio::task::yield_now().await;
        let mut waiters = Vec::new();
        for i in 1..5 {
            let (b, c, s) = (batcher.clone(), calls.clone(), sizes.clone());
            waiters.push(tokio::spawn(async move {
                b.submit(item(i), fake(&c, &s, false)).await
            }));
        }
        tokio::task::yield_now().await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        assert_eq!(*lock(&sizes), vec![4], "the waiters were stored together");
        assert_eq!(batcher.queued(), 0);
    }
}
