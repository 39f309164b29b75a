//! A counting gate whose waiters are admitted lowest priority value first (a semaphore that is
//! a priority queue rather than FIFO). Fills use it to verify slivers one per core, lowest row
//! first, so the rows a response streams next are the ones verified next.
//!
//! Cancellation-safe: a waiter dropped before its turn is skipped, and a turn handed to a
//! waiter that has just gone is returned to the gate by dropping it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

pub(super) struct Gate {
    state: Arc<Mutex<State>>,
}

struct State {
    free: usize,
    /// `(priority, arrival)` → where to send the turn; lowest first, FIFO among equals.
    waiting: BinaryHeap<Reverse<(u32, u64, Waiter)>>,
    arrivals: u64,
}

struct Waiter(oneshot::Sender<Turn>);

// Ordering only looks at (priority, arrival), which are unique per waiter.
impl PartialEq for Waiter {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// The right to run; returned to the gate on drop.
pub(super) struct Turn {
    state: Arc<Mutex<State>>,
    /// False for a turn that must not return to the gate (see `Drop`).
    armed: bool,
}

impl Gate {
    pub(super) fn new(slots: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                free: slots.max(1),
                waiting: BinaryHeap::new(),
                arrivals: 0,
            })),
        }
    }

    /// Wait for a turn; lower `priority` values go first.
    pub(super) async fn enter(&self, priority: u32) -> Turn {
        let rx = {
            let mut state = lock(&self.state);
            if state.free > 0 {
                state.free -= 1;
                return Turn {
                    state: self.state.clone(),
                    armed: true,
                };
            }
            let (tx, rx) = oneshot::channel();
            let arrival = state.arrivals;
            state.arrivals += 1;
            state.waiting.push(Reverse((priority, arrival, Waiter(tx))));
            rx
        };
        match rx.await {
            Ok(turn) => turn,
            // Senders leave the queue only by sending (or to a waiter that has gone), so this
            // cannot happen while we wait; if it did, running ungated is the safe fallback.
            Err(_) => Turn {
                state: self.state.clone(),
                armed: false,
            },
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = lock(&self.state);
        while let Some(Reverse((_, _, Waiter(tx)))) = state.waiting.pop() {
            let turn = Turn {
                state: self.state.clone(),
                armed: true,
            };
            match tx.send(turn) {
                Ok(()) => return,
                // That waiter left: disarm the turn it did not take (dropping it armed would
                // re-enter this lock) and offer the slot to the next one.
                Err(mut turn) => turn.armed = false,
            }
        }
        state.free += 1;
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_enter_lowest_priority_first() {
        let gate = Arc::new(Gate::new(1));
        let first = gate.enter(0).await;
        let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for priority in [5u32, 1, 3, 2, 4] {
            let (waiter, order_tx) = (gate.clone(), order_tx.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = waiter.enter(priority).await;
                order_tx.send(priority).unwrap();
            }));
            // Let each waiter queue before the next one.
            while lock(&gate.state).waiting.len() < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        drop(order_tx);
        let mut order = Vec::new();
        while let Some(p) = order_rx.recv().await {
            order.push(p);
        }
        assert_eq!(order, vec![1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn cancelled_waiters_do_not_leak_turns() {
        let gate = Arc::new(Gate::new(1));
        let held = gate.enter(0).await;
        let waiting = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _turn = gate.enter(1).await;
            })
        };
        while lock(&gate.state).waiting.is_empty() {
            tokio::task::yield_now().await;
        }
        waiting.abort();
        let _ = waiting.await;
        drop(held);
        // The slot is free again: entering does not wait.
        let turn = tokio::time::timeout(Duration::from_secs(10), gate.enter(2))
            .await
            .expect("the turn came back to the gate");
        assert_eq!(lock(&gate.state).free, 0);
        drop(turn);
        assert_eq!(lock(&gate.state).free, 1);
    }
}
