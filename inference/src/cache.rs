//! A small single-flight LRU cache with a negative TTL, used for parsed models and for plans.
//!
//! Guarantees:
//! - single flight: however many callers ask for a missing key together, one build runs; the
//!   others wait for its result. The build runs as a detached task, so a caller that goes away
//!   (client disconnect) does not cancel it for the others.
//! - bounded: at most `max_entries` values and at most `max_weight` total weight; the least
//!   recently used go first. The value just inserted is never the one evicted, so a single value
//!   heavier than `max_weight` is still served (alone).
//! - negative cache: a build failure that is the model's fault ([`InferenceError::is_model_fault`])
//!   is remembered for `negative_ttl` and answered without building again.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::InferenceError;

type Outcome<V> = Option<Result<V, InferenceError>>;

pub(crate) struct FlightCache<K, V> {
    inner: Mutex<Inner<K, V>>,
    max_entries: usize,
    max_weight: u64,
    negative_ttl: Duration,
    builds: AtomicU64,
}

struct Inner<K, V> {
    ready: HashMap<K, Ready<V>>,
    flights: HashMap<K, watch::Receiver<Outcome<V>>>,
    negative: HashMap<K, (Instant, InferenceError)>,
    weight: u64,
    tick: u64,
}

struct Ready<V> {
    value: V,
    weight: u64,
    last_used: u64,
}

impl<K, V> FlightCache<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(max_entries: usize, max_weight: u64, negative_ttl: Duration) -> Self {
        FlightCache {
            inner: Mutex::new(Inner {
                ready: HashMap::new(),
                flights: HashMap::new(),
                negative: HashMap::new(),
                weight: 0,
                tick: 0,
            }),
            max_entries: max_entries.max(1),
            max_weight,
            negative_ttl,
            builds: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        // No code path panics while holding the lock; if one ever did, the maps are still
        // consistent (every update is a single insert or remove), so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value, marking it used.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        inner.ready.get_mut(key).map(|r| {
            r.last_used = tick;
            r.value.clone()
        })
    }

    /// The cached value, or the result of the one build in flight for `key`, starting it with
    /// `build` (which yields the value and its weight) if none is.
    pub async fn get_or_build<F, Fut>(
        self: &Arc<Self>,
        key: K,
        build: F,
    ) -> Result<V, InferenceError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, u64), InferenceError>> + Send + 'static,
    {
        let mut rx = {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(r) = inner.ready.get_mut(&key) {
                r.last_used = tick;
                return Ok(r.value.clone());
            }
            match inner.negative.get(&key) {
                Some((until, err)) if Instant::now() < *until => return Err(err.clone()),
                Some(_) => {
                    inner.negative.remove(&key);
                }
                None => {}
            }
            match inner.flights.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inner.flights.insert(key.clone(), rx.clone());
                    drop(inner);
                    self.builds.fetch_add(1, Ordering::Relaxed);
                    let fut = build();
                    let this = Arc::clone(self);
                    tokio::spawn(async move {
                        let result = fut.await;
                        let shared = this.finish(key, result);
                        // Receivers may all be gone; the value is cached either way.
                        let _ = tx.send(Some(shared));
                    });
                    rx
                }
            }
        };
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or_else(|| {
            Err(InferenceError::Internal(
                "the build task was lost (panic?)".into(),
            ))
        })
    }

    /// Record a finished build: cache the value (evicting as needed) or remember the failure.
    fn finish(
        &self,
        key: K,
        result: Result<(V, u64), InferenceError>,
    ) -> Result<V, InferenceError> {
        let mut inner = self.lock();
        inner.flights.remove(&key);
        match result {
            Ok((value, weight)) => {
                inner.tick += 1;
                let tick = inner.tick;
                if let Some(old) = inner.ready.insert(
                    key.clone(),
                    Ready {
                        value: value.clone(),
                        weight,
                        last_used: tick,
                    },
                ) {
                    inner.weight -= old.weight;
                }
                inner.weight += weight;
                while inner.ready.len() > self.max_entries || inner.weight > self.max_weight {
                    let victim = inner
                        .ready
                        .iter()
                        .filter(|(k, _)| **k != key)
                        .min_by_key(|(_, r)| r.last_used)
                        .map(|(k, _)| k.clone());
                    let Some(victim) = victim else { break };
                    if let Some(r) = inner.ready.remove(&victim) {
                        inner.weight -= r.weight;
                    }
                }
                Ok(value)
            }
            Err(err) => {
                if err.is_model_fault() && !self.negative_ttl.is_zero() {
                    let now = Instant::now();
                    inner.negative.retain(|_, (until, _)| *until > now);
                    inner
                        .negative
                        .insert(key, (now + self.negative_ttl, err.clone()));
                }
                Err(err)
            }
        }
    }

    /// Builds started so far (each single flight counts once).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    /// (entries, total weight) of cached values.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.ready.len(), inner.weight)
    }

    #[cfg(test)]
    pub fn contains(&self, key: &K) -> bool {
        self.lock().ready.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::BlobId;

    fn cache(entries: usize, weight: u64) -> Arc<FlightCache<u32, u32>> {
        Arc::new(FlightCache::new(entries, weight, Duration::from_secs(60)))
    }

    #[tokio::test]
    async fn single_flight_builds_once() {
        let c = cache(8, 1000);
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let c = c.clone();
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                c.get_or_build(1, move || async move {
                    gate.notified().await;
                    Ok((42, 1))
                })
                .await
            }));
        }
        // Let every task register before the build may finish.
        while c.lock().flights.is_empty() {
            tokio::task::yield_now().await;
        }
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 42);
        }
        assert_eq!(c.builds(), 1);
    }

    #[tokio::test]
    async fn lru_bounds_count_and_weight() {
        let c = cache(3, 10);
        for k in 0..3 {
            c.get_or_build(k, move || async move { Ok((k, 2)) })
                .await
                .unwrap();
        }
        assert_eq!(c.usage(), (3, 6));
        c.get(&0); // 1 is now the least recently used
        c.get_or_build(3, || async { Ok((3, 2)) }).await.unwrap();
        assert!(!c.contains(&1) && c.contains(&0) && c.contains(&2) && c.contains(&3));
        assert_eq!(c.usage(), (3, 6));
        // A heavy value pushes out as many as needed, but never itself.
        c.get_or_build(4, || async { Ok((4, 9)) }).await.unwrap();
        assert_eq!(c.usage(), (1, 9));
        c.get_or_build(5, || async { Ok((5, 50)) }).await.unwrap();
        assert_eq!(c.usage(), (1, 50));
        assert!(c.contains(&5));
    }

    #[tokio::test]
    async fn model_faults_are_remembered_other_failures_are_not() {
        let c = cache(4, 100);
        let invalid = InferenceError::InvalidModel {
            model: BlobId([1; 32]),
            reason: "x".into(),
        };
        let e = invalid.clone();
        assert!(c
            .get_or_build(1, move || async move { Err(e) })
            .await
            .is_err());
        // Remembered: this build would succeed but is not run.
        assert!(c.get_or_build(1, || async { Ok((1, 1)) }).await.is_err());
        assert_eq!(c.builds(), 1);

        assert!(c
            .get_or_build(2, || async {
                Err(InferenceError::Internal("flaky".into()))
            })
            .await
            .is_err());
        assert_eq!(c.get_or_build(2, || async { Ok((2, 1)) }).await.unwrap(), 2);

        let short = Arc::new(FlightCache::<u32, u32>::new(4, 100, Duration::ZERO));
        let e = invalid.clone();
        assert!(short
            .get_or_build(1, move || async move { Err(e) })
            .await
            .is_err());
        assert_eq!(
            short
                .get_or_build(1, || async { Ok((7, 1)) })
                .await
                .unwrap(),
            7
        );
    }
}
