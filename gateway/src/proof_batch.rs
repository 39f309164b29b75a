//! Stored inference proofs, batched (issue 16): the proofs of requests that arrive within a
//! window (`--proof-batch-ms`) or up to a count (`--proof-batch-max`) are handed to one publish,
//! which stores them as the patches of one quilt ([`crate::api::inference`] does the encoding and
//! the publishing), and each request gets its own proof's place back.
//!
//! There is no background task: the first request of a batch leads it. It waits until one
//! window has passed since the batch's oldest proof arrived (or the batch is full), then for
//! one of a few publish permits (the batch keeps growing, up to its maximum, while it waits:
//! under load batches get larger, not more numerous), seals the batch and publishes it with its
//! own request's handle on the gateway, then answers every request in it. The others wait for
//! that answer.
//!
//! **Where a batch is cut** (by encoded cost). A quilt's cost on Walrus is its metadata
//! (`n·(64n+32)` bytes, the same for any size) plus `n·(kp+ks)` symbols, and its symbol size is
//! the smallest at which the index and every patch fit their own whole columns. Per proof it
//! falls as proofs are added, until the index is squeezed into the last free columns: at n = 100
//! a quilt of 66 proofs of ~750 bytes costs twice as much per proof as one of 62. So the sealed
//! batch is cut at the prefix (in arrival order) whose quilt costs the fewest encoded bytes per
//! distinct proof ([`QuiltCost`], computed as `codec::quilt` lays the quilt out; every prefix
//! is costed as it forms, since the cost is not monotone: at n = 100, 31 proofs of two columns
//! each are a local optimum). The proofs after the cut go to the front of the next batch, which
//! closes one window after *its* oldest proof arrived: they never wait a second window, and
//! after a full batch they still have a window to gather company. If no batch is open, the
//! first of them whose request is still waiting leads them.
//!
//! Guarantees:
//! * **Nothing is reported stored that was not.** A request is answered with a place only from
//!   the publish that stored its proof; a failed publish answers each of its requests with that
//!   failure.
//! * **Nothing lost or reordered.** Every proof of a sealed batch is published in this batch's
//!   quilt or handed, in order, to the front of the next batch.
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
use codec::{BlobId, EncodingConfig};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::time::Instant;

/// How often a proof is submitted again after its batch was dropped by a cancelled leader.
const ATTEMPTS: usize = 3;

/// The batching policy.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// How long a batch stays open after its oldest proof arrived (`--proof-batch-ms`).
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
    /// The committee's encoding, to cut each batch where its quilt costs the fewest encoded
    /// bytes per proof; `None`: batches are cut only at `max`.
    pub quilt: Option<EncodingConfig>,
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

/// What a waiting request is told.
enum Told<E> {
    /// Its proof's place, or why it was not stored.
    Answer(Answer<E>),
    /// Lead this batch (proofs left after a cut, its own among them); its own answer comes
    /// on the receiver.
    Lead(Arc<Batch<E>>, oneshot::Receiver<Told<E>>),
}

struct Pending<E> {
    item: Item,
    /// When the proof first joined a batch: its batch closes one window later at the latest.
    since: Instant,
    tx: oneshot::Sender<Told<E>>,
}

/// Encoded bytes of a quilt of proofs, as `codec::quilt::encode_quilt` lays it out (no tags):
/// the BCS index after a 5-byte prefix in the first columns, then each patch (6-byte header,
/// u16-prefixed BCS identifier, data) in its own whole columns, at the smallest even symbol
/// size at which all of them fit (the index in at most `MAX_INDEX_COLUMNS` columns); and what
/// Walrus stores for a blob that long (SPEC §8, [`EncodingConfig::encoded_length`]).
#[derive(Debug, Clone)]
pub struct QuiltCost {
    config: EncodingConfig,
    /// Bytes of the index so far (its 5-byte prefix and ULEB128 count excluded).
    index_entries: usize,
    /// Bytes of each patch so far.
    patches: Vec<usize>,
}

impl QuiltCost {
    pub fn new(config: EncodingConfig) -> Self {
        Self {
            config,
            index_entries: 0,
            patches: Vec::new(),
        }
    }

    /// Add one proof (a distinct identifier) to the quilt.
    pub fn add(&mut self, identifier: &str, data_len: usize) {
        let ident = uleb128_len(identifier.len()) + identifier.len();
        // end_index (u16), identifier, empty tags map (one ULEB128 zero).
        self.index_entries += 2 + ident + 1;
        self.patches
            .push(codec::quilt::PATCH_HEADER_SIZE + 2 + ident + data_len);
    }

    /// Proofs in the quilt.
    pub fn len(&self) -> usize {
        self.patches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patches.is_empty()
    }

    /// The quilt's symbol size, or `None` if these patches fit no quilt of the committee.
    pub fn symbol_size(&self) -> Option<usize> {
        let rows = usize::from(self.config.n_primary_source_symbols());
        let cols = usize::from(self.config.n_secondary_source_symbols());
        if self.patches.is_empty() || self.patches.len() + 1 > cols {
            return None;
        }
        let index = codec::quilt::QUILT_INDEX_PREFIX_SIZE
            + uleb128_len(self.patches.len())
            + self.index_entries;
        let parts = || std::iter::once(index).chain(self.patches.iter().copied());
        let fits =
            |symbol: usize| parts().map(|p| p.div_ceil(symbol * rows)).sum::<usize>() <= cols;
        let total: usize = parts().sum();
        let mut low = total
            .div_ceil(cols * rows)
            .max(index.div_ceil(rows * codec::quilt::MAX_INDEX_COLUMNS))
            .max(codec::quilt::QUILT_INDEX_PREFIX_SIZE.div_ceil(rows))
            .max(1);
        // Every part in at most cols / parts columns: enough.
        let largest = parts().max().unwrap_or(0);
        let mut high = largest
            .div_ceil(cols / (self.patches.len() + 1) * rows)
            .max(low);
        while low < high {
            let mid = (low + high) / 2;
            if fits(mid) {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        let symbol = low.next_multiple_of(2);
        (symbol <= usize::from(codec::MAX_SYMBOL_SIZE)).then_some(symbol)
    }

    /// Bytes of the quilt blob (`kp·ks` symbols).
    pub fn quilt_len(&self) -> Option<u64> {
        let symbol = self.symbol_size()? as u64;
        Some(
            symbol
                * u64::from(self.config.n_primary_source_symbols())
                * u64::from(self.config.n_secondary_source_symbols()),
        )
    }

    /// Encoded bytes Walrus stores for the quilt.
    pub fn encoded(&self) -> Option<u64> {
        self.config.encoded_length(self.quilt_len()?).ok()
    }
}

fn uleb128_len(mut value: usize) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

/// The proofs of a batch in arrival order, and the cheapest place to cut them.
struct Queue<E> {
    pending: Vec<Pending<E>>,
    /// The quilt of the distinct proofs so far (`None`: no cost model).
    cost: Option<QuiltCost>,
    seen: HashSet<String>,
    /// The cheapest prefix so far: its length in entries, its encoded bytes and distinct proofs.
    best: Option<(usize, u64, usize)>,
    /// A proof that fits no quilt with those before it arrived: the batch is full.
    overflow: bool,
}

impl<E> Queue<E> {
    fn new(model: Option<EncodingConfig>) -> Self {
        Self {
            pending: Vec::new(),
            cost: model.map(QuiltCost::new),
            seen: HashSet::new(),
            best: None,
            overflow: false,
        }
    }

    fn push(&mut self, p: Pending<E>) {
        if let Some(cost) = &mut self.cost {
            if !self.overflow && self.seen.insert(p.item.identifier.clone()) {
                cost.add(&p.item.identifier, p.item.data.len());
            }
            if !self.overflow {
                match cost.encoded() {
                    Some(bytes) => {
                        let proofs = cost.len();
                        // Cheaper per proof, or as cheap (then the longer prefix): `bytes /
                        // proofs <= best / best_proofs`.
                        let better = self.best.is_none_or(|(_, best, best_proofs)| {
                            u128::from(bytes) * best_proofs as u128
                                <= u128::from(best) * proofs as u128
                        });
                        if better {
                            self.best = Some((self.pending.len() + 1, bytes, proofs));
                        }
                    }
                    // Prefixes only grow: none after this one fits either.
                    None => self.overflow = true,
                }
            }
        }
        self.pending.push(p);
    }

    /// Entries of the cheapest prefix of at most `max` entries (without a cost model: the
    /// first `max`); at least one.
    fn cut(&self, max: usize) -> usize {
        let cheapest = match (&self.cost, self.best) {
            (Some(_), Some((len, _, _))) => len,
            (Some(_), None) => 1,
            (None, _) => self.pending.len(),
        };
        cheapest.min(max).max(1)
    }

    /// Whether the batch takes no more proofs: it holds `max`, or a proof that fits no quilt
    /// with those before it. (Not when a proof makes it dearer per proof than a shorter
    /// prefix: the cost falls again further on, e.g. at n = 100 a quilt of 31 proofs of 750
    /// bytes is a local optimum, as patches of two columns each, and 62 the best.)
    fn full(&self, max: usize) -> bool {
        self.pending.len() >= max || self.overflow
    }

    /// When the batch closes at the latest: one window after its oldest proof arrived.
    fn deadline(&self, window: Duration) -> Option<Instant> {
        self.pending.first().map(|p| p.since + window)
    }

    /// Put `rest` (older proofs) before those queued, and cost the prefixes again.
    fn prepend(&mut self, rest: Vec<Pending<E>>) {
        let later = std::mem::take(&mut self.pending);
        let model = self.cost.as_ref().map(|c| c.config);
        *self = Queue::new(model);
        for p in rest.into_iter().chain(later) {
            self.push(p);
        }
    }
}

/// A batch being filled; sealed once taken out of [`Batcher::open`].
struct Batch<E> {
    queue: Mutex<Queue<E>>,
    /// Told when the batch becomes full, or older proofs joined it (its deadline moved); a
    /// permit is kept if its leader does not wait yet.
    due: Notify,
}

impl<E> Batch<E> {
    fn new(queue: Queue<E>) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(queue),
            due: Notify::new(),
        })
    }
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
    fn seal(&self) -> Queue<E> {
        let mut open = lock(&self.batcher.open);
        if open.as_ref().is_some_and(|b| Arc::ptr_eq(b, &self.batch)) {
            *open = None;
        }
        drop(open);
        let model = self.batcher.config.quilt;
        std::mem::replace(&mut *lock(&self.batch.queue), Queue::new(model))
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

    /// Store `item` in the next batch and wait for its place. If this request leads a batch,
    /// `publish` stores it: it gets the batch's distinct proofs and answers each, in order.
    pub async fn submit<F, Fut>(&self, item: Item, publish: F) -> Result<Placed, BatchError<E>>
    where
        F: Fn(Vec<Item>) -> Fut,
        Fut: Future<Output = Vec<Answer<E>>>,
    {
        let _slot = self.admit(item.data.len() as u64)?;
        'attempts: for _ in 0..ATTEMPTS {
            let (tx, mut rx) = oneshot::channel();
            let pending = Pending {
                item: item.clone(),
                since: Instant::now(),
                tx,
            };
            let led = {
                let mut open = lock(&self.open);
                match open.as_ref() {
                    Some(batch) => {
                        let mut queue = lock(&batch.queue);
                        queue.push(pending);
                        if queue.full(self.config.max) {
                            batch.due.notify_one();
                            drop(queue);
                            *open = None;
                        }
                        None
                    }
                    None => {
                        let mut queue = Queue::new(self.config.quilt);
                        queue.push(pending);
                        let batch = Batch::new(queue);
                        if self.config.max > 1 {
                            *open = Some(batch.clone());
                        }
                        Some(batch)
                    }
                }
            };
            if let Some(batch) = led {
                self.lead(batch, &publish).await;
            }
            loop {
                match rx.await {
                    Ok(Told::Answer(answer)) => return answer.map_err(BatchError::Failed),
                    // Proofs left after a cut, this one's among them: lead them.
                    Ok(Told::Lead(batch, next)) => {
                        self.lead(batch, &publish).await;
                        rx = next;
                    }
                    // The leader went away with the batch: submit again.
                    Err(_) => continue 'attempts,
                }
            }
        }
        Err(BatchError::Abandoned)
    }

    async fn lead<F, Fut>(&self, batch: Arc<Batch<E>>, publish: &F)
    where
        F: Fn(Vec<Item>) -> Fut,
        Fut: Future<Output = Vec<Answer<E>>>,
    {
        let leading = Leading {
            batcher: self,
            batch,
        };
        if self.config.max > 1 {
            loop {
                let (deadline, full) = {
                    let queue = lock(&leading.batch.queue);
                    (
                        queue.deadline(self.config.window),
                        queue.full(self.config.max),
                    )
                };
                let Some(deadline) = deadline.filter(|_| !full) else {
                    break;
                };
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    // Full, or older proofs joined: look again.
                    () = leading.batch.due.notified() => {}
                }
            }
        }
        // The semaphore is never closed.
        let Ok(_permit) = self.publishes.acquire().await else {
            return;
        };
        let queue = leading.seal();
        let cut = queue.cut(self.config.max);
        let mut pending = queue.pending;
        if cut < pending.len() {
            self.hand_over(pending.split_off(cut));
        }
        // Identical proofs (the same identifier: the same record, so the same bytes) once.
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut items = Vec::new();
        let mut waiters: Vec<Vec<oneshot::Sender<Told<E>>>> = Vec::new();
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
                let _ = tx.send(Told::Answer(answer.clone()));
            }
        }
        drop(leading);
    }

    /// The proofs after a batch's cut (in order) go to the front of the open batch, whose
    /// deadline is then theirs; with no batch open, they make one, led by the first of them
    /// whose request still waits (no one waiting: nobody is left to answer).
    fn hand_over(&self, rest: Vec<Pending<E>>) {
        let mut open = lock(&self.open);
        if let Some(batch) = open.as_ref() {
            let mut queue = lock(&batch.queue);
            queue.prepend(rest);
            let full = queue.full(self.config.max);
            drop(queue);
            batch.due.notify_one();
            if full {
                *open = None;
            }
            return;
        }
        let mut queue = Queue::new(self.config.quilt);
        for p in rest {
            queue.push(p);
        }
        let full = queue.full(self.config.max);
        let batch = Batch::new(queue);
        let led = {
            let mut queue = lock(&batch.queue);
            queue.pending.iter_mut().any(|p| {
                let (tx, rx) = oneshot::channel();
                let waiter = std::mem::replace(&mut p.tx, tx);
                waiter.send(Told::Lead(batch.clone(), rx)).is_ok()
            })
        };
        if led && !full && self.config.max > 1 {
            *open = Some(batch);
        }
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
            quilt: None,
        }
    }

    fn item(i: usize) -> Item {
        Item {
            identifier: format!("proof-{i}"),
            data: Bytes::from(vec![i as u8; 10]),
        }
    }

    /// Where a fake publish places `count` proofs in its quilt number `quilt`: one column each.
    fn placed_in<E>(quilt: u64, count: usize) -> Vec<Result<Placed, E>> {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&quilt.to_le_bytes());
        (0..count)
            .map(|i| {
                Ok(Placed {
                    quilt_id: BlobId(id),
                    patch_id: QuiltPatchId {
                        quilt_id: BlobId(id),
                        start_index: i as u16 + 1,
                        end_index: i as u16 + 2,
                    },
                })
            })
            .collect()
    }

    /// A publish that "stores" each batch as quilt number `calls`, patch `i` at column `i + 1`.
    fn fake(
        calls: &Arc<AtomicU64>,
        sizes: &Arc<Mutex<Vec<usize>>>,
        fail: bool,
    ) -> impl Fn(Vec<Item>) -> std::future::Ready<Vec<Answer<String>>> {
        let calls = calls.clone();
        let sizes = sizes.clone();
        move |items| {
            let quilt = calls.fetch_add(1, Ordering::SeqCst);
            lock(&sizes).push(items.len());
            std::future::ready(if fail {
                (0..items.len())
                    .map(|_| Err(format!("nodes refused quilt {quilt}")))
                    .collect()
            } else {
                placed_in(quilt, items.len())
            })
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

    /// A proof as the gateway stores it: a 64-hex identifier and `len` bytes.
    fn proof(i: usize, len: usize) -> Item {
        Item {
            identifier: format!("{:064x}", i + 1),
            data: Bytes::from(vec![i as u8; len]),
        }
    }

    fn cost_of(n: u16, items: &[Item]) -> QuiltCost {
        let mut cost = QuiltCost::new(EncodingConfig::new(n).unwrap());
        for it in items {
            cost.add(&it.identifier, it.data.len());
        }
        cost
    }

    #[test]
    fn the_cost_model_lays_quilts_out_as_the_codec_does() {
        for (n, counts) in [
            (10, &[1usize, 2, 5, 6][..]),
            (100, &[1, 16, 61, 62, 63, 64, 65, 66][..]),
            (1000, &[1, 64, 200, 256][..]),
        ] {
            for &count in counts {
                for len in [0, 1, 752, 3000] {
                    // Mixed sizes too: every fourth proof is larger.
                    let items: Vec<Item> = (0..count)
                        .map(|i| proof(i, if i % 4 == 3 { len * 3 + 7 } else { len }))
                        .collect();
                    let inputs: Vec<codec::quilt::PatchInput<'_>> = items
                        .iter()
                        .map(|it| codec::quilt::PatchInput {
                            identifier: it.identifier.clone(),
                            tags: Default::default(),
                            data: &it.data,
                        })
                        .collect();
                    let config = EncodingConfig::new(n).unwrap();
                    let cost = cost_of(n, &items);
                    match codec::quilt::encode_quilt(&config, &inputs) {
                        Ok(quilt) => {
                            assert_eq!(
                                cost.symbol_size(),
                                Some(usize::from(quilt.symbol_size)),
                                "n {n}, {count} proofs of {len}"
                            );
                            assert_eq!(cost.quilt_len(), Some(quilt.data.len() as u64));
                        }
                        Err(e) => assert_eq!(cost.symbol_size(), None, "{e}"),
                    }
                }
            }
        }
        // One patch more than a quilt holds.
        let items: Vec<Item> = (0..67).map(|i| proof(i, 752)).collect();
        assert_eq!(cost_of(100, &items).encoded(), None);
    }

    /// Encoded bytes per proof of quilts of `count` proofs of 752 bytes (the MLP's proofs).
    fn per_proof(n: u16, count: usize) -> u64 {
        let items: Vec<Item> = (0..count).map(|i| proof(i, 752)).collect();
        (cost_of(n, &items).encoded().unwrap() as f64 / count as f64).round() as u64
    }

    #[test]
    fn at_n_100_a_quilt_of_62_costs_least_per_proof() {
        // BENCHMARKS.md "Stored proofs in quilts": 64 cost 16,994 per proof, 66 cost 30,252.
        assert_eq!(per_proof(100, 64), 16_994);
        assert_eq!(per_proof(100, 66), 30_252);
        // 31 is a local optimum (two columns per patch), dearer than 62.
        assert!(per_proof(100, 31) < per_proof(100, 32));
        assert!(per_proof(100, 62) < per_proof(100, 31));
        let best = (1..=66).min_by_key(|&k| (per_proof(100, k), usize::MAX - k));
        assert_eq!(best, Some(62));
        assert_eq!(per_proof(100, 62), 14_610);
        // At n = 10 and n = 1000 the fullest quilt (or the 256 cap) is the cheapest.
        let best = (1..=6).min_by_key(|&k| (per_proof(10, k), usize::MAX - k));
        assert_eq!(best, Some(6));
        assert!(per_proof(1000, 256) < per_proof(1000, 255));
    }

    /// Each quilt published: when, and its proofs' identifiers.
    type Quilts = Arc<Mutex<Vec<(Instant, Vec<String>)>>>;

    /// A publish that records the identifiers of each quilt and when it ran.
    fn recorder(quilts: &Quilts) -> impl Fn(Vec<Item>) -> std::future::Ready<Vec<Answer<String>>> {
        let quilts = quilts.clone();
        move |items| {
            let mut all = lock(&quilts);
            let quilt = all.len() as u64;
            all.push((
                Instant::now(),
                items.iter().map(|it| it.identifier.clone()).collect(),
            ));
            std::future::ready(placed_in(quilt, items.len()))
        }
    }

    /// Submit `count` proofs of 752 bytes at n = 100, one after another at the same instant;
    /// the quilts published (with their times) and each proof's place.
    async fn submit_at_n_100(
        count: usize,
        max: usize,
    ) -> (Vec<(Instant, Vec<String>)>, Vec<Placed>) {
        let batcher = Arc::new(Batcher::<String>::new(BatchConfig {
            quilt: Some(EncodingConfig::new(100).unwrap()),
            ..config(max)
        }));
        let quilts = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..count {
            let (b, q) = (batcher.clone(), quilts.clone());
            tasks.push(tokio::spawn(async move {
                b.submit(proof(i, 752), recorder(&q)).await
            }));
            // In arrival order.
            tokio::task::yield_now().await;
        }
        let mut placed = Vec::new();
        for t in tasks {
            placed.push(t.await.unwrap().unwrap());
        }
        assert_eq!(batcher.queued(), 0);
        let quilts = lock(&quilts).clone();
        (quilts, placed)
    }

    /// Every proof published once, in arrival order, and answered with its own place.
    fn check_order(quilts: &[(Instant, Vec<String>)], placed: &[Placed], count: usize) {
        let published: Vec<String> = quilts.iter().flat_map(|q| q.1.clone()).collect();
        let submitted: Vec<String> = (0..count).map(|i| proof(i, 752).identifier).collect();
        assert_eq!(published, submitted, "lost, repeated or reordered");
        let mut i = 0;
        for (q, (_, ids)) in quilts.iter().enumerate() {
            for column in 0..ids.len() {
                assert_eq!(placed[i].quilt_id.as_bytes()[0] as usize, q);
                assert_eq!(placed[i].patch_id.start_index as usize, column + 1);
                i += 1;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_at_n_100_is_cut_where_proofs_cost_least() {
        let t0 = Instant::now();
        // 70 proofs at once (cap 66, what a quilt holds): the 63rd makes the batch dearer
        // per proof than its first 62, so it closes there; the rest wait one window at most.
        let (quilts, placed) = submit_at_n_100(70, 66).await;
        let sizes: Vec<usize> = quilts.iter().map(|q| q.1.len()).collect();
        assert_eq!(sizes, vec![62, 8]);
        assert_eq!(quilts[0].0, t0, "a full batch does not wait for its window");
        assert_eq!(quilts[1].0, t0 + Duration::from_millis(250));
        check_order(&quilts, &placed, 70);
    }

    #[tokio::test(start_paused = true)]
    async fn proofs_left_after_a_cut_are_led_by_one_of_them_and_wait_no_second_window() {
        let t0 = Instant::now();
        // The 63rd proof is left alone after the cut, with no batch open: it leads itself,
        // closing one window after it arrived.
        let (quilts, placed) = submit_at_n_100(63, 66).await;
        let sizes: Vec<usize> = quilts.iter().map(|q| q.1.len()).collect();
        assert_eq!(sizes, vec![62, 1]);
        assert_eq!(quilts[1].0, t0 + Duration::from_millis(250));
        check_order(&quilts, &placed, 63);
        // Without the cost model the batch closes at its maximum, as before.
        let batcher = Arc::new(Batcher::<String>::new(config(66)));
        let quilts = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..70 {
            let (b, q) = (batcher.clone(), quilts.clone());
            tasks.push(tokio::spawn(async move {
                b.submit(proof(i, 752), recorder(&q)).await
            }));
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let sizes: Vec<usize> = lock(&quilts).iter().map(|q| q.1.len()).collect();
        assert_eq!(sizes, vec![66, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_grown_past_its_cut_while_waiting_for_a_permit_hands_its_rest_on() {
        // One publish at a time, and the first takes a while: the second batch grows past its
        // cheapest cut (and closes there) while it waits; its rest goes on, in order.
        let batcher = Arc::new(Batcher::<String>::new(BatchConfig {
            quilt: Some(EncodingConfig::new(100).unwrap()),
            ..config(66)
        }));
        let quilts: Quilts = Arc::new(Mutex::new(Vec::new()));
        let slow = {
            let quilts = quilts.clone();
            move |items: Vec<Item>| {
                let record = recorder(&quilts);
                async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    record(items).await
                }
            }
        };
        let mut tasks = Vec::new();
        for i in 0..140 {
            let (b, slow) = (batcher.clone(), slow.clone());
            tasks.push(tokio::spawn(
                async move { b.submit(proof(i, 752), slow).await },
            ));
            tokio::task::yield_now().await;
        }
        let mut placed = Vec::new();
        for t in tasks {
            placed.push(t.await.unwrap().unwrap());
        }
        let quilts = lock(&quilts).clone();
        let sizes: Vec<usize> = quilts.iter().map(|q| q.1.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 140, "{sizes:?}");
        assert!(sizes.iter().all(|&n| n <= 62), "{sizes:?}");
        assert_eq!(sizes[..2], [62, 62], "{sizes:?}");
        check_order(&quilts, &placed, 140);
        assert_eq!(batcher.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gone_request_after_the_cut_hands_the_lead_to_the_next_one() {
        let t0 = Instant::now();
        let batcher = Arc::new(Batcher::<String>::new(BatchConfig {
            quilt: Some(EncodingConfig::new(100).unwrap()),
            ..config(66)
        }));
        let quilts: Quilts = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..64 {
            let (b, q) = (batcher.clone(), quilts.clone());
            tasks.push(tokio::spawn(async move {
                b.submit(proof(i, 752), recorder(&q)).await
            }));
            tokio::task::yield_now().await;
        }
        // The 63rd request goes away before the window closes: the 64th leads the rest.
        let gone = tasks.remove(62);
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let quilts = lock(&quilts).clone();
        let sizes: Vec<usize> = quilts.iter().map(|q| q.1.len()).collect();
        assert_eq!(sizes, vec![62, 2]);
        assert_eq!(quilts[1].0, t0 + Duration::from_millis(250));
        assert_eq!(
            quilts[1].1,
            vec![proof(62, 752).identifier, proof(63, 752).identifier]
        );
        assert_eq!(batcher.queued(), 0);
    }
}
