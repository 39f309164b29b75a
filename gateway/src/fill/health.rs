//! Storage-node health remembered between fills, so a node that stalled or failed recently is
//! asked last instead of costing every fill a hedge delay (issue 21, item 15).
//!
//! Each node (keyed by its base URL, which outlives committee snapshots) has a score: a failed
//! request, a timeout or a request that had to be hedged adds a penalty; a good answer halves
//! it; and it decays with a half-life of [`HALF_LIFE`], so a node that is no longer asked
//! still regains its rank within a few minutes. A node whose score is at least [`SLOW_AT`] is
//! *slow*: fills order it after every other node for metadata and slivers (it is still asked
//! when the others do not suffice, so no blob becomes unreadable). A "not found" answer is a
//! good answer: clients asking for blobs that do not exist cannot make nodes look unhealthy.
//!
//! The table holds at most [`MAX_NODES`] entries (more than any committee); entries whose
//! score decayed to nothing are dropped first.

use crate::nodes::Topology;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A penalty halves in this long.
pub(super) const HALF_LIFE: Duration = Duration::from_secs(30);
/// Score from which a node is asked last.
pub(super) const SLOW_AT: f64 = 0.5;
/// Highest score: a node that failed a hundred requests in one fill recovers as fast (about
/// `log2(MAX_SCORE / SLOW_AT)` half-lives, two minutes) as one that failed four.
const MAX_SCORE: f64 = 8.0;
/// Scores below this are forgotten.
const NEGLIGIBLE: f64 = 0.01;
/// Bound on the table (real committees have about a hundred nodes).
const MAX_NODES: usize = 4096;

/// What a node's request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// It answered in time (with data, or with "not found" for metadata).
    Good,
    /// Still pending past the hedge delay: another node was asked in its place.
    Hedged,
    /// Timeout, transport error, error status, or bytes that did not verify.
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Score {
    value: f64,
    at: Instant,
}

impl Score {
    fn now(&self, now: Instant) -> f64 {
        let halvings =
            now.saturating_duration_since(self.at).as_secs_f64() / HALF_LIFE.as_secs_f64();
        self.value * 0.5f64.powf(halvings)
    }
}

/// A change in a node's standing, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    None,
    /// The node just became slow.
    MarkedSlow,
    /// The node just stopped being slow.
    Recovered,
}

#[derive(Default)]
pub(super) struct NodeHealth {
    scores: Mutex<HashMap<Box<str>, Score>>,
}

impl NodeHealth {
    /// Record what a request to the node at `base` came to.
    pub(super) fn record(&self, base: &str, outcome: Outcome) -> Change {
        self.record_at(base, outcome, Instant::now())
    }

    fn record_at(&self, base: &str, outcome: Outcome, now: Instant) -> Change {
        let mut scores = self.scores.lock().unwrap_or_else(PoisonError::into_inner);
        let before = scores.get(base).map_or(0.0, |s| s.now(now));
        let after = match outcome {
            Outcome::Good => before * 0.5,
            Outcome::Hedged | Outcome::Failed => (before + 1.0).min(MAX_SCORE),
        };
        if after < NEGLIGIBLE {
            scores.remove(base);
        } else {
            if scores.len() >= MAX_NODES && !scores.contains_key(base) {
                scores.retain(|_, s| s.now(now) >= NEGLIGIBLE);
                if scores.len() >= MAX_NODES {
                    // Every entry is live: keep the ones we have (a bound, not a policy).
                    return Change::None;
                }
            }
            scores.insert(
                base.into(),
                Score {
                    value: after,
                    at: now,
                },
            );
        }
        match (before >= SLOW_AT, after >= SLOW_AT) {
            (false, true) => Change::MarkedSlow,
            (true, false) => Change::Recovered,
            _ => Change::None,
        }
    }

    /// Whether each node of `topology` (by index) is slow now.
    pub(super) fn slow_nodes(&self, topology: &Topology) -> Vec<bool> {
        let now = Instant::now();
        let scores = self.scores.lock().unwrap_or_else(PoisonError::into_inner);
        if scores.is_empty() {
            return vec![false; topology.node_count()];
        }
        (0..topology.node_count())
            .map(|node| {
                scores
                    .get(topology.base_url(node))
                    .is_some_and(|s| s.now(now) >= SLOW_AT)
            })
            .collect()
    }

    /// Nodes slow now (for the gauge).
    pub(super) fn slow_count(&self) -> usize {
        let now = Instant::now();
        let scores = self.scores.lock().unwrap_or_else(PoisonError::into_inner);
        scores.values().filter(|s| s.now(now) >= SLOW_AT).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_mark_a_node_slow_and_good_answers_or_time_restore_it() {
        let health = NodeHealth::default();
        let t0 = Instant::now();
        assert_eq!(health.record_at("a", Outcome::Good, t0), Change::None);
        assert_eq!(
            health.record_at("a", Outcome::Hedged, t0),
            Change::MarkedSlow
        );
        assert_eq!(health.record_at("a", Outcome::Failed, t0), Change::None);
        // 2.0 → 1.0 → 0.5 → 0.25: the third good answer restores its rank.
        assert_eq!(health.record_at("a", Outcome::Good, t0), Change::None);
        assert_eq!(health.record_at("a", Outcome::Good, t0), Change::None);
        assert_eq!(health.record_at("a", Outcome::Good, t0), Change::Recovered);

        // Without answers, the score decays: 8 (capped) is below 0.5 after 4 half-lives.
        for _ in 0..20 {
            health.record_at("b", Outcome::Failed, t0);
        }
        let score = |at| health.scores.lock().unwrap()["b"].now(at);
        assert_eq!(score(t0), MAX_SCORE);
        assert!(score(t0 + HALF_LIFE * 3) >= SLOW_AT);
        assert!(score(t0 + HALF_LIFE * 4 + Duration::from_secs(1)) < SLOW_AT);
        assert_eq!(
            health.record_at("b", Outcome::Good, t0 + HALF_LIFE * 5),
            Change::None,
            "already recovered by decay"
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let health = NodeHealth::default();
        let t0 = Instant::now();
        for i in 0..MAX_NODES + 10 {
            health.record_at(&format!("n{i}"), Outcome::Failed, t0);
        }
        assert_eq!(health.scores.lock().unwrap().len(), MAX_NODES);
        // Once the old entries have decayed away, new nodes are tracked again.
        let later = t0 + HALF_LIFE * 20;
        assert_eq!(
            health.record_at("new", Outcome::Failed, later),
            Change::MarkedSlow
        );
        assert_eq!(health.scores.lock().unwrap().len(), 1);
    }
}
