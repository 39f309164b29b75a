//! Epochs: the live epoch number, its `EpochState`, the current and previous committees, and
//! the deterministic rule that moves shards at each epoch change.
//!
//! Life of an epoch change ([`crate::SimNetwork::advance_epoch`]):
//! 1. `E → E+1`; shard `s` is a candidate if `(s + E+1) mod 3 == 0` (a third of the shards,
//!    a different third each epoch) and moves from its owner to the next node (round-robin).
//!    A node never ends up without shards: if the move would empty its source, the source
//!    instead swaps it for the target's lowest-index shard that has not moved yet (both count
//!    as moved), and if there is none the shard stays. Moves stop once as many shards moved as
//!    there were candidates (about `n/3`).
//! 2. The moved slivers (and the blobs' metadata and certified epoch) are copied to the new
//!    owners, before and again after the switch, so nothing stored meanwhile is missed.
//! 3. The state is `EpochChangeSync { weight: 0 }`: the new owners serve (and accept writes
//!    for) their shards; the previous owners still serve the shards they gave away, read only.
//! 4. After `epoch_sync_ms`, or at once when another change is asked for, the state becomes
//!    `EpochChangeDone { at_ms }` and the previous owners answer `SHARD_NOT_ASSIGNED` for them.
//!
//! At start the epoch is 1 (or the one recorded in the data directory), the state
//! `EpochChangeDone { at_ms: start time }`, and the previous committee equals the current one:
//! outside a sync the previous committee is never read, and this way a client that looks at it
//! anyway finds the nodes holding the data.

use chain::EpochState;

/// Epochs a stored blob lasts: stored in epoch `E`, its status says `endEpoch = E + 53`
/// (exclusive), the most a real blob can be stored ahead (`max_epochs_ahead` on mainnet). The
/// simulation never expires blobs.
pub const BLOB_LIFETIME_EPOCHS: u32 = 53;

/// `epoch_duration` the chain reports when no epoch timer is set: one day.
pub const DEFAULT_EPOCH_DURATION_MS: u64 = 86_400_000;

/// The result of an epoch change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EpochChange {
    /// The new epoch.
    pub epoch: u32,
    /// Shards whose owner changed.
    pub moved_shards: usize,
}

/// The live epoch state.
#[derive(Debug, Clone)]
pub(crate) struct EpochInfo {
    pub epoch: u32,
    pub state: EpochState,
    /// Shards per node index.
    pub current: Vec<Vec<u16>>,
    pub previous: Vec<Vec<u16>>,
    /// Node index per shard.
    pub owner: Vec<usize>,
    pub prev_owner: Vec<usize>,
}

impl EpochInfo {
    pub(crate) fn new(epoch: u32, at_ms: u64, assignment: Vec<Vec<u16>>, n_shards: u16) -> Self {
        let owner = owners(&assignment, n_shards);
        EpochInfo {
            epoch,
            state: EpochState::ChangeDone { at_ms },
            previous: assignment.clone(),
            current: assignment,
            prev_owner: owner.clone(),
            owner,
        }
    }

    fn syncing(&self) -> bool {
        self.state.is_transitioning()
    }

    /// Node `node` may accept writes for `shard`: it owns it now.
    pub(crate) fn may_write(&self, node: usize, shard: u16) -> bool {
        self.owner.get(usize::from(shard)) == Some(&node)
    }

    /// Node `node` may serve `shard`: it owns it, or owned it before and the change is syncing.
    pub(crate) fn may_read(&self, node: usize, shard: u16) -> bool {
        self.may_write(node, shard)
            || (self.syncing() && self.prev_owner.get(usize::from(shard)) == Some(&node))
    }

    /// Shards `node` serves read only (given away, still syncing).
    pub(crate) fn read_only(&self, node: usize) -> Vec<u16> {
        if !self.syncing() {
            return Vec::new();
        }
        (0..self.owner.len())
            .filter(|&s| self.prev_owner[s] == node && self.owner[s] != node)
            .map(|s| s as u16)
            .collect()
    }

    /// Enter epoch `epoch + 1` with `next` owners: `EpochChangeSync { weight: 0 }`.
    pub(crate) fn switch(&mut self, next: Vec<usize>) {
        let nodes = self.current.len();
        self.epoch += 1;
        self.prev_owner = std::mem::replace(&mut self.owner, next);
        self.previous = std::mem::replace(&mut self.current, assignment(&self.owner, nodes));
        self.state = EpochState::ChangeSync { weight: 0 };
    }
}

/// Node index per shard (the assignment was validated: every shard owned once).
pub(crate) fn owners(assignment: &[Vec<u16>], n_shards: u16) -> Vec<usize> {
    let mut owner = vec![0; usize::from(n_shards)];
    for (node, shards) in assignment.iter().enumerate() {
        for &s in shards {
            owner[usize::from(s)] = node;
        }
    }
    owner
}

/// Shards per node index, ascending.
pub(crate) fn assignment(owner: &[usize], nodes: usize) -> Vec<Vec<u16>> {
    let mut out = vec![Vec::new(); nodes];
    for (shard, &node) in owner.iter().enumerate() {
        out[node].push(shard as u16);
    }
    out
}

/// The owners of epoch `new_epoch`, from those of the epoch before (see the module docs).
pub(crate) fn rotate(owner: &[usize], nodes: usize, new_epoch: u32) -> Vec<usize> {
    let mut next = owner.to_vec();
    if nodes < 2 {
        return next;
    }
    let mut count = vec![0usize; nodes];
    for &o in owner {
        count[o] += 1;
    }
    let mut moved = vec![false; owner.len()];
    let offset = new_epoch as usize % 3;
    let candidate = |s: usize| (s + offset).is_multiple_of(3);
    // Swaps move two shards: stop once as many moved as there are candidates.
    let target = (0..owner.len()).filter(|&s| candidate(s)).count();
    for s in 0..owner.len() {
        if moved.iter().filter(|&&m| m).count() >= target {
            break;
        }
        if !candidate(s) || moved[s] {
            continue;
        }
        let from = next[s];
        let to = (from + 1) % nodes;
        if count[from] > 1 {
            next[s] = to;
            count[from] -= 1;
            count[to] += 1;
            moved[s] = true;
        } else if let Some(t) = (0..owner.len()).find(|&t| next[t] == to && !moved[t]) {
            next[s] = to;
            next[t] = from;
            moved[s] = true;
            moved[t] = true;
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_robin(n: usize, nodes: usize) -> Vec<usize> {
        (0..n).map(|s| s % nodes).collect()
    }

    fn moved(a: &[usize], b: &[usize]) -> usize {
        a.iter().zip(b).filter(|(x, y)| x != y).count()
    }

    #[test]
    fn about_a_third_moves_and_nobody_is_left_empty() {
        for (n, nodes) in [
            (10, 4),
            (10, 3),
            (10, 10),
            (12, 2),
            (1000, 100),
            (7, 7),
            (10, 1),
        ] {
            let mut owner = round_robin(n, nodes);
            for epoch in 2..12 {
                let next = rotate(&owner, nodes, epoch);
                assert_eq!(next, rotate(&owner, nodes, epoch), "deterministic");
                let a = assignment(&next, nodes);
                assert!(a.iter().all(|s| !s.is_empty()), "{n}/{nodes} epoch {epoch}");
                let k = moved(&owner, &next);
                if nodes > 1 {
                    assert!(k > 0 && k <= n.div_ceil(3) + 1, "{n}/{nodes}: {k}");
                } else {
                    assert_eq!(k, 0);
                }
                owner = next;
            }
        }
        // The default committee: exactly the third (1, 4, 7) moves into epoch 2.
        let owner = round_robin(10, 4);
        assert_eq!(moved(&owner, &rotate(&owner, 4, 2)), 3);
    }

    #[test]
    fn switch_keeps_previous_owners_readable_only_while_syncing() {
        let owner = round_robin(10, 4);
        let mut info = EpochInfo::new(1, 5, assignment(&owner, 4), 10);
        assert!(info.may_read(1, 1) && !info.may_read(2, 1));
        info.switch(rotate(&owner, 4, 2));
        assert_eq!(info.epoch, 2);
        assert_eq!(info.state, EpochState::ChangeSync { weight: 0 });
        // Shard 1 moved from node 1 to node 2.
        assert!(info.may_write(2, 1) && !info.may_write(1, 1));
        assert!(info.may_read(1, 1) && info.may_read(2, 1));
        assert_eq!(info.read_only(1), vec![1]);
        info.state = EpochState::ChangeDone { at_ms: 9 };
        assert!(!info.may_read(1, 1));
        assert!(info.read_only(1).is_empty());
    }
}
