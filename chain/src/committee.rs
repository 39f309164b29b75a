//! The committee as the chain states it, checked: which node holds which shards, at which
//! address, with which TLS key; the epoch and its state; and when to look again.
//!
//! [`ChainCommittee::assemble`] applies the checks the official Rust client makes
//! (`walrus-sui` `Committee::new`, NETWORK.md §3): every pool's ID equals its node ID and the
//! committee key, every member holds at least one shard, every shard `0..n_shards` is held
//! exactly once, and every network key is a 33-byte compressed P-256 point.

use crate::move_types::{CommitteeMap, StakingInnerV1, StakingPool};
use crate::object_id::ObjectId;
use std::collections::HashMap;
use std::time::Duration;

/// `staking_inner::EpochState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state")]
pub enum EpochState {
    /// Shards are moving to the new committee; `weight` shards have attested so far. Both
    /// committees serve reads: a blob certified before this epoch is read from the previous one.
    #[serde(rename = "EpochChangeSync")]
    ChangeSync { weight: u16 },
    /// The change completed at `at_ms`.
    #[serde(rename = "EpochChangeDone")]
    ChangeDone { at_ms: u64 },
    /// The next committee is chosen; the current epoch started at `epoch_start_ms`.
    #[serde(rename = "NextParamsSelected")]
    NextParamsSelected { epoch_start_ms: u64 },
}

impl EpochState {
    pub fn name(&self) -> &'static str {
        match self {
            EpochState::ChangeSync { .. } => "EpochChangeSync",
            EpochState::ChangeDone { .. } => "EpochChangeDone",
            EpochState::NextParamsSelected { .. } => "NextParamsSelected",
        }
    }

    pub fn is_transitioning(&self) -> bool {
        matches!(self, EpochState::ChangeSync { .. })
    }
}

/// One storage node of a committee.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommitteeMember {
    pub node_id: ObjectId,
    pub name: String,
    /// `host:port`; the node's URL is `https://{network_address}`.
    pub network_address: String,
    /// SEC1-compressed P-256 point: the key the node's TLS certificate must carry.
    #[serde(serialize_with = "hex_key")]
    pub network_public_key: [u8; 33],
    pub shards: Vec<u16>,
}

fn hex_key<S: serde::Serializer>(key: &[u8; 33], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::network_key::to_hex(key))
}

impl CommitteeMember {
    /// The key in hex, as committee files write it.
    pub fn key_hex(&self) -> String {
        crate::network_key::to_hex(&self.network_public_key)
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.network_address)
    }
}

/// A checked view of `StakingInnerV1` and the pools of its committees.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainCommittee {
    pub epoch: u32,
    pub epoch_state: EpochState,
    pub n_shards: u16,
    pub epoch_duration_ms: u64,
    pub first_epoch_start_ms: u64,
    /// The committee of `epoch`, sorted by node ID.
    pub current: Vec<CommitteeMember>,
    /// The committee of `epoch - 1`; empty at genesis.
    pub previous: Vec<CommitteeMember>,
}

/// Why the chain's committee cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitteeProblem {
    #[error("the {which} committee is empty")]
    Empty { which: &'static str },
    #[error("no staking pool object for node {0}")]
    MissingPool(ObjectId),
    #[error("staking pool {pool} names node {node_id} (expected {expected})")]
    PoolMismatch {
        pool: ObjectId,
        node_id: ObjectId,
        expected: ObjectId,
    },
    #[error("node {node} ({name}) has a {len}-byte network key; a compressed P-256 point has 33 bytes starting with 02 or 03")]
    BadNetworkKey {
        node: ObjectId,
        name: String,
        len: usize,
    },
    #[error("node {node} ({name}) has an unusable network address {address:?}")]
    BadAddress {
        node: ObjectId,
        name: String,
        address: String,
    },
    #[error("node {0} holds no shards in the {1} committee")]
    NoShards(ObjectId, &'static str),
    #[error("shard {shard} is out of range for {n_shards} shards ({which} committee)")]
    ShardOutOfRange {
        shard: u16,
        n_shards: u16,
        which: &'static str,
    },
    #[error("shard {shard} is held twice in the {which} committee")]
    DuplicateShard { shard: u16, which: &'static str },
    #[error("the {which} committee holds {held} of {n_shards} shards")]
    MissingShards {
        held: usize,
        n_shards: u16,
        which: &'static str,
    },
    #[error("the chain says there are {0} shards; the codec needs at least 4")]
    BadShardCount(u16),
}

impl ChainCommittee {
    /// Check `inner`'s current and previous committees against `pools` (keyed by object ID).
    pub fn assemble(
        inner: &StakingInnerV1,
        pools: &HashMap<ObjectId, StakingPool>,
    ) -> Result<Self, CommitteeProblem> {
        if inner.n_shards < 4 {
            return Err(CommitteeProblem::BadShardCount(inner.n_shards));
        }
        let current = members(&inner.committee, pools, inner.n_shards, "current")?;
        if current.is_empty() {
            return Err(CommitteeProblem::Empty { which: "current" });
        }
        let previous = members(&inner.previous_committee, pools, inner.n_shards, "previous")?;
        Ok(Self {
            epoch: inner.epoch,
            epoch_state: inner.epoch_state,
            n_shards: inner.n_shards,
            epoch_duration_ms: inner.epoch_duration,
            first_epoch_start_ms: inner.first_epoch_start,
            current,
            previous,
        })
    }

    /// Node IDs whose pools [`ChainCommittee::assemble`] needs: the current and previous
    /// committees, each once, in order.
    pub fn pool_ids(inner: &StakingInnerV1) -> Vec<ObjectId> {
        let mut ids: Vec<ObjectId> = inner
            .committee
            .iter()
            .chain(&inner.previous_committee)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// When the next epoch is expected to start (ms since the Unix epoch), as the Rust SDK
    /// estimates it: the current epoch's start plus its duration, with the start taken from
    /// the epoch state (or `now` while the change is in progress).
    pub fn expected_next_epoch_ms(&self, now_ms: u64) -> u64 {
        let start = match self.epoch_state {
            _ if self.epoch == 0 => return self.first_epoch_start_ms,
            EpochState::ChangeSync { .. } => now_ms,
            EpochState::ChangeDone { at_ms } => at_ms,
            EpochState::NextParamsSelected { epoch_start_ms } => epoch_start_ms,
        };
        start.saturating_add(self.epoch_duration_ms)
    }

    /// How long to wait before reading the chain again (NETWORK.md §5.3): `policy.sync` while
    /// the epoch changes, `policy.near` within `policy.near_window` of the expected next epoch,
    /// else `policy.normal`.
    pub fn next_refresh(&self, now_ms: u64, policy: &RefreshPolicy) -> Duration {
        if self.epoch_state.is_transitioning() {
            return policy.sync;
        }
        let next = self.expected_next_epoch_ms(now_ms);
        let near_ms = u64::try_from(policy.near_window.as_millis()).unwrap_or(u64::MAX);
        if next.saturating_sub(now_ms) <= near_ms {
            policy.near
        } else {
            policy.normal
        }
    }
}

/// Refresh intervals (defaults: the Rust SDK's, and 1 s while shards move).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshPolicy {
    pub normal: Duration,
    pub near: Duration,
    pub near_window: Duration,
    pub sync: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            normal: Duration::from_secs(30),
            near: Duration::from_secs(5),
            near_window: Duration::from_secs(300),
            sync: Duration::from_secs(1),
        }
    }
}

fn members(
    map: &CommitteeMap,
    pools: &HashMap<ObjectId, StakingPool>,
    n_shards: u16,
    which: &'static str,
) -> Result<Vec<CommitteeMember>, CommitteeProblem> {
    if map.is_empty() {
        return Ok(Vec::new());
    }
    let mut held = vec![false; usize::from(n_shards)];
    let mut count = 0usize;
    let mut out = Vec::with_capacity(map.len());
    for (node_id, shards) in map {
        let pool = pools
            .get(node_id)
            .ok_or(CommitteeProblem::MissingPool(*node_id))?;
        for id in [pool.id, pool.node_info.node_id] {
            if id != *node_id {
                return Err(CommitteeProblem::PoolMismatch {
                    pool: pool.id,
                    node_id: pool.node_info.node_id,
                    expected: *node_id,
                });
            }
        }
        let info = &pool.node_info;
        let key: [u8; 33] = info
            .network_public_key
            .as_slice()
            .try_into()
            .ok()
            .filter(|k: &[u8; 33]| matches!(k[0], 2 | 3))
            .ok_or_else(|| CommitteeProblem::BadNetworkKey {
                node: *node_id,
                name: info.name.clone(),
                len: info.network_public_key.len(),
            })?;
        if !valid_address(&info.network_address) {
            return Err(CommitteeProblem::BadAddress {
                node: *node_id,
                name: info.name.clone(),
                address: info.network_address.chars().take(200).collect(),
            });
        }
        if shards.is_empty() {
            return Err(CommitteeProblem::NoShards(*node_id, which));
        }
        for &shard in shards {
            let slot =
                held.get_mut(usize::from(shard))
                    .ok_or(CommitteeProblem::ShardOutOfRange {
                        shard,
                        n_shards,
                        which,
                    })?;
            if std::mem::replace(slot, true) {
                return Err(CommitteeProblem::DuplicateShard { shard, which });
            }
            count += 1;
        }
        out.push(CommitteeMember {
            node_id: *node_id,
            name: info.name.clone(),
            network_address: info.network_address.clone(),
            network_public_key: key,
            shards: shards.clone(),
        });
    }
    if count != usize::from(n_shards) {
        return Err(CommitteeProblem::MissingShards {
            held: count,
            n_shards,
            which,
        });
    }
    Ok(out)
}

/// `host[:port]` with no scheme, path, user or whitespace: what can follow `https://`.
fn valid_address(address: &str) -> bool {
    !address.is_empty()
        && address.len() <= 255
        && address.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::move_types::{StorageNodeInfo, TableRef};

    fn pool(id: u8, key_prefix: u8) -> StakingPool {
        let mut key = vec![key_prefix];
        key.extend([id; 32]);
        StakingPool::new_active(
            StorageNodeInfo {
                name: format!("n{id}"),
                node_id: ObjectId([id; 32]),
                network_address: format!("127.0.0.1:{}", 9000 + u16::from(id)),
                public_key: vec![0; 96],
                next_epoch_public_key: None,
                network_public_key: key,
                metadata: ObjectId::default(),
            },
            1,
        )
    }

    fn inner(committee: CommitteeMap, previous: CommitteeMap) -> StakingInnerV1 {
        StakingInnerV1 {
            n_shards: 4,
            epoch_duration: 60_000,
            first_epoch_start: 1_000,
            pools: TableRef::default(),
            epoch: 3,
            active_set: ObjectId::default(),
            next_committee: None,
            committee,
            previous_committee: previous,
            next_epoch_params: None,
            epoch_state: EpochState::ChangeDone { at_ms: 10_000 },
            next_epoch_public_keys: ObjectId::default(),
        }
    }

    fn pools(ps: Vec<StakingPool>) -> HashMap<ObjectId, StakingPool> {
        ps.into_iter().map(|p| (p.id, p)).collect()
    }

    #[test]
    fn a_sound_committee_assembles() {
        let i = inner(
            vec![
                (ObjectId([1; 32]), vec![0, 2]),
                (ObjectId([2; 32]), vec![1, 3]),
            ],
            vec![(ObjectId([1; 32]), vec![0, 1, 2, 3])],
        );
        assert_eq!(ChainCommittee::pool_ids(&i).len(), 2);
        let c = ChainCommittee::assemble(&i, &pools(vec![pool(1, 2), pool(2, 3)])).unwrap();
        assert_eq!(c.current.len(), 2);
        assert_eq!(c.previous[0].shards, vec![0, 1, 2, 3]);
        assert_eq!(c.current[1].url(), "https://127.0.0.1:9002");
        assert_eq!(c.current[0].key_hex(), format!("02{}", "01".repeat(32)));
    }

    #[test]
    fn broken_committees_are_refused_with_a_reason() {
        let good = pools(vec![pool(1, 2), pool(2, 2)]);
        let two = |a: Vec<u16>, b: Vec<u16>| {
            inner(
                vec![(ObjectId([1; 32]), a), (ObjectId([2; 32]), b)],
                Vec::new(),
            )
        };
        let check = |i: StakingInnerV1, p: &HashMap<ObjectId, StakingPool>| {
            ChainCommittee::assemble(&i, p).unwrap_err()
        };
        assert!(matches!(
            check(two(vec![0, 1], vec![1, 2, 3]), &good),
            CommitteeProblem::DuplicateShard { shard: 1, .. }
        ));
        assert!(matches!(
            check(two(vec![0, 1], vec![2]), &good),
            CommitteeProblem::MissingShards { held: 3, .. }
        ));
        assert!(matches!(
            check(two(vec![0, 1], vec![2, 9]), &good),
            CommitteeProblem::ShardOutOfRange { shard: 9, .. }
        ));
        assert!(matches!(
            check(two(vec![0, 1, 2, 3], vec![]), &good),
            CommitteeProblem::NoShards(..)
        ));
        assert!(matches!(
            check(two(vec![0, 1], vec![2, 3]), &pools(vec![pool(1, 2)])),
            CommitteeProblem::MissingPool(_)
        ));
        let mut liar = pools(vec![pool(1, 2), pool(2, 2)]);
        liar.get_mut(&ObjectId([2; 32])).unwrap().node_info.node_id = ObjectId([7; 32]);
        assert!(matches!(
            check(two(vec![0, 1], vec![2, 3]), &liar),
            CommitteeProblem::PoolMismatch { .. }
        ));
        assert!(matches!(
            check(
                two(vec![0, 1], vec![2, 3]),
                &pools(vec![pool(1, 2), pool(2, 4)])
            ),
            CommitteeProblem::BadNetworkKey { .. }
        ));
        let mut bad_address = pools(vec![pool(1, 2), pool(2, 2)]);
        bad_address
            .get_mut(&ObjectId([1; 32]))
            .unwrap()
            .node_info
            .network_address = "evil.com/path?x".into();
        assert!(matches!(
            check(two(vec![0, 1], vec![2, 3]), &bad_address),
            CommitteeProblem::BadAddress { .. }
        ));
        assert!(matches!(
            check(inner(Vec::new(), Vec::new()), &good),
            CommitteeProblem::Empty { .. }
        ));
    }

    #[test]
    fn refresh_is_sooner_near_and_during_an_epoch_change() {
        let i = inner(vec![(ObjectId([1; 32]), vec![0, 1, 2, 3])], Vec::new());
        let mut c = ChainCommittee::assemble(&i, &pools(vec![pool(1, 2)])).unwrap();
        let policy = RefreshPolicy {
            near_window: Duration::from_secs(10),
            ..RefreshPolicy::default()
        };
        // Done at 10 s, 60 s epochs: the next starts at 70 s.
        assert_eq!(c.expected_next_epoch_ms(20_000), 70_000);
        assert_eq!(c.next_refresh(20_000, &policy), policy.normal);
        assert_eq!(c.next_refresh(61_000, &policy), policy.near);
        assert_eq!(c.next_refresh(90_000, &policy), policy.near);
        c.epoch_state = EpochState::ChangeSync { weight: 0 };
        assert_eq!(c.next_refresh(20_000, &policy), policy.sync);
    }
}
