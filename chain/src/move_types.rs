//! The Walrus Move structs the read path decodes, field by field in the contracts' order
//! (NETWORK.md §4; the TS SDK's generated schemas and the Move sources agree), each with a
//! bounded decoder and an encoder (the simulator's full node serves what the encoder writes).
//! Dynamic fields are `Field<K, V> { id, name: K, value: V }`; only `u64` keys occur here.

use crate::bcs::{BcsError, Reader, Writer};
use crate::committee::EpochState;
use crate::object_id::ObjectId;

/// `Staking` and `System` share this shape: the outer object whose `version` keys the dynamic
/// field that holds the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedObject {
    pub id: ObjectId,
    pub version: u64,
    pub package_id: ObjectId,
    pub new_package_id: Option<ObjectId>,
}

/// `Committee`: node ID → its shards, sorted by node ID on chain.
pub type CommitteeMap = Vec<(ObjectId, Vec<u16>)>;

/// `ObjectTable`, `Table` and `Bag` handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableRef {
    pub id: ObjectId,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EpochParams {
    pub total_capacity_size: u64,
    pub storage_price_per_unit_size: u64,
    pub write_price_per_unit_size: u64,
}

/// `staking_inner::StakingInnerV1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StakingInnerV1 {
    pub n_shards: u16,
    pub epoch_duration: u64,
    pub first_epoch_start: u64,
    pub pools: TableRef,
    pub epoch: u32,
    pub active_set: ObjectId,
    pub next_committee: Option<CommitteeMap>,
    pub committee: CommitteeMap,
    pub previous_committee: CommitteeMap,
    pub next_epoch_params: Option<EpochParams>,
    pub epoch_state: EpochState,
    pub next_epoch_public_keys: ObjectId,
}

/// `staking_pool::PoolState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    Active,
    Withdrawing(u32),
    Withdrawn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VotingParams {
    pub storage_price: u64,
    pub write_price: u64,
    pub node_capacity: u64,
}

/// `PendingValues`: epoch → amount.
pub type PendingValues = Vec<(u32, u64)>;

/// `auth::Authorized`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorized {
    Address(ObjectId),
    ObjectId(ObjectId),
}

/// `storage_node::StorageNodeInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageNodeInfo {
    pub name: String,
    pub node_id: ObjectId,
    /// `host:port` of the node's REST API (HTTPS).
    pub network_address: String,
    /// BLS12-381 G1 key (not needed for reads).
    pub public_key: Vec<u8>,
    pub next_epoch_public_key: Option<Vec<u8>>,
    /// The TLS key: a 33-byte SEC1-compressed P-256 point (Move asserts the length).
    pub network_public_key: Vec<u8>,
    pub metadata: ObjectId,
}

/// `staking_pool::StakingPool`; its object ID is the node ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StakingPool {
    pub id: ObjectId,
    pub state: PoolState,
    pub voting_params: VotingParams,
    pub node_info: StorageNodeInfo,
    pub activation_epoch: u32,
    pub latest_epoch: u32,
    pub wal_balance: u64,
    pub num_shares: u64,
    pub pending_shares_withdraw: PendingValues,
    pub pre_active_withdrawals: PendingValues,
    pub pending_commission_rate: PendingValues,
    pub commission_rate: u16,
    pub exchange_rates: TableRef,
    pub pending_stake: PendingValues,
    pub rewards_pool: u64,
    pub commission: u64,
    pub commission_receiver: Authorized,
    pub governance_authorized: Authorized,
    pub extra_fields: TableRef,
}

/// `bls_aggregate::BlsCommitteeMember`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlsCommitteeMember {
    pub public_key: Vec<u8>,
    pub weight: u16,
    pub node_id: ObjectId,
}

/// `bls_aggregate::BlsCommittee`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlsCommittee {
    pub members: Vec<BlsCommitteeMember>,
    pub n_shards: u16,
    pub epoch: u32,
    pub total_aggregated_key: Vec<u8>,
}

/// `storage_accounting::FutureAccountingRingBuffer` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FutureAccounting {
    pub epoch: u32,
    pub used_capacity: u64,
    pub rewards_to_distribute: u64,
}

/// `event_blob::EventBlob`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventBlob {
    pub blob_id: [u8; 32],
    pub ending_checkpoint_sequence_number: u64,
}

/// `system_state_inner::SystemStateInnerV1` (read by the TS SDK for `n_shards`; not needed by
/// the gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemStateInnerV1 {
    pub committee: BlsCommittee,
    pub total_capacity_size: u64,
    pub used_capacity_size: u64,
    pub storage_price_per_unit_size: u64,
    pub write_price_per_unit_size: u64,
    pub future_accounting_current_index: u32,
    pub future_accounting_length: u32,
    pub future_accounting: Vec<FutureAccounting>,
    pub latest_certified_event_blob: Option<EventBlob>,
    pub aggregate_weight_per_blob: Vec<(EventBlob, u16)>,
    pub deny_list_sizes: ObjectId,
}

/// `0x2::dynamic_field::Field<u64, V>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<V> {
    pub id: ObjectId,
    pub name: u64,
    pub value: V,
}

/// A value with a BCS layout.
pub trait MoveValue: Sized {
    fn read(r: &mut Reader<'_>) -> Result<Self, BcsError>;
    fn write(&self, w: &mut Writer);

    /// Decode exactly `bytes` (no trailing bytes).
    fn from_bcs(bytes: &[u8]) -> Result<Self, BcsError> {
        let mut r = Reader::new(bytes);
        let value = Self::read(&mut r)?;
        r.finish()?;
        Ok(value)
    }

    fn to_bcs(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_bytes()
    }
}

impl MoveValue for VersionedObject {
    fn read(r: &mut Reader<'_>) -> Result<Self, BcsError> {
        Ok(Self {
            id: r.address("id")?,
            version: r.u64("version")?,
            package_id: r.address("package_id")?,
            new_package_id: r.option("new_package_id", |r| r.address("new_package_id"))?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.address(&self.id)
            .u64(self.version)
            .address(&self.package_id)
            .option(self.new_package_id.as_ref(), |w, v| {
                w.address(v);
            });
    }
}

impl<V: MoveValue> MoveValue for Field<V> {
    fn read(r: &mut Reader<'_>) -> Result<Self, BcsError> {
        Ok(Self {
            id: r.address("field id")?,
            name: r.u64("field name")?,
            value: V::read(r)?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.address(&self.id).u64(self.name);
        self.value.write(w);
    }
}

fn read_table(r: &mut Reader<'_>, what: &'static str) -> Result<TableRef, BcsError> {
    Ok(TableRef {
        id: r.address(what)?,
        size: r.u64(what)?,
    })
}

fn write_table(w: &mut Writer, t: &TableRef) {
    w.address(&t.id).u64(t.size);
}

fn read_committee(r: &mut Reader<'_>) -> Result<CommitteeMap, BcsError> {
    r.vec("committee", 33, |r| {
        let node = r.address("committee node")?;
        let shards = r.vec("committee shards", 2, |r| r.u16("shard"))?;
        Ok((node, shards))
    })
}

fn write_committee(w: &mut Writer, c: &CommitteeMap) {
    w.vec(c, |w, (node, shards)| {
        w.address(node).vec(shards, |w, s| {
            w.u16(*s);
        });
    });
}

fn read_pending(r: &mut Reader<'_>, what: &'static str) -> Result<PendingValues, BcsError> {
    r.vec(what, 12, |r| Ok((r.u32(what)?, r.u64(what)?)))
}

fn write_pending(w: &mut Writer, p: &PendingValues) {
    w.vec(p, |w, (e, v)| {
        w.u32(*e).u64(*v);
    });
}

impl MoveValue for EpochState {
    fn read(r: &mut Reader<'_>) -> Result<Self, BcsError> {
        Ok(match r.variant("EpochState", 3)? {
            0 => EpochState::ChangeSync {
                weight: r.u16("EpochChangeSync weight")?,
            },
            1 => EpochState::ChangeDone {
                at_ms: r.u64("EpochChangeDone time")?,
            },
            _ => EpochState::NextParamsSelected {
                epoch_start_ms: r.u64("NextParamsSelected time")?,
            },
        })
    }

    fn write(&self, w: &mut Writer) {
        match *self {
            EpochState::ChangeSync { weight } => w.uleb(0).u16(weight),
            EpochState::ChangeDone { at_ms } => w.uleb(1).u64(at_ms),
            EpochState::NextParamsSelected { epoch_start_ms } => w.uleb(2).u64(epoch_start_ms),
        };
    }
}

impl MoveValue for StakingInnerV1 {
    fn read(r: &mut Reader<'_>) -> Result<Self, BcsError> {
        Ok(Self {
            n_shards: r.u16("n_shards")?,
            epoch_duration: r.u64("epoch_duration")?,
            first_epoch_start: r.u64("first_epoch_start")?,
            pools: read_table(r, "pools")?,
            epoch: r.u32("epoch")?,
            active_set: r.address("active_set")?,
            next_committee: r.option("next_committee", read_committee)?,
            committee: read_committee(r)?,
            previous_committee: read_committee(r)?,
            next_epoch_params: r.option("next_epoch_params", |r| {
                Ok(EpochParams {
                    total_capacity_size: r.u64("next_epoch_params")?,
                    storage_price_per_unit_size: r.u64("next_epoch_params")?,
                    write_price_per_unit_size: r.u64("next_epoch_params")?,
                })
            })?,
            epoch_state: EpochState::read(r)?,
            next_epoch_public_keys: r.address("next_epoch_public_keys")?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.u16(self.n_shards)
            .u64(self.epoch_duration)
            .u64(self.first_epoch_start);
        write_table(w, &self.pools);
        w.u32(self.epoch).address(&self.active_set);
        w.option(self.next_committee.as_ref(), write_committee);
        write_committee(w, &self.committee);
        write_committee(w, &self.previous_committee);
        w.option(self.next_epoch_params.as_ref(), |w, p| {
            w.u64(p.total_capacity_size)
                .u64(p.storage_price_per_unit_size)
                .u64(p.write_price_per_unit_size);
        });
        self.epoch_state.write(w);
        w.address(&self.next_epoch_public_keys);
    }
}

fn read_authorized(r: &mut Reader<'_>, what: &'static str) -> Result<Authorized, BcsError> {
    Ok(match r.variant(what, 2)? {
        0 => Authorized::Address(r.address(what)?),
        _ => Authorized::ObjectId(r.address(what)?),
    })
}

fn write_authorized(w: &mut Writer, a: &Authorized) {
    match a {
        Authorized::Address(id) => w.uleb(0).address(id),
        Authorized::ObjectId(id) => w.uleb(1).address(id),
    };
}

impl MoveValue for StorageNodeInfo {
    fn read(r: &mut Reader<'_>) -> Result<Self, BcsError> {
        Ok(Self {
            name: r.string("node name")?,
            node_id: r.address("node_id")?,
            network_address: r.string("network_address")?,
            public_key: r.bytes("public_key")?.to_vec(),
            next_epoch_public_key: r.option("next_epoch_public_key", |r| {
                Ok(r.bytes("next_epoch_public_key")?.to_vec())
            })?,
            network_public_key: r.bytes("network_public_key")?.to_vec(),
            metadata: r.address("node metadata")?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.string(&self.name)
            .address(&self.node_id)
            .string(&self.network_address)
            .bytes(&self.public_key)
            .option(self.next_epoch_public_key.as_ref(), |w, k| {
                w.bytes(k);
            })
            .bytes(&self.network_public_key)
            .address(&self.metadata);
    }
}

impl MoveValue for StakingPool {
    fn read(r: &mut Reader<'_>) -> Result<Self, BcsError> {
        Ok(Self {
            id: r.address("pool id")?,
            state: match r.variant("PoolState", 3)? {
                0 => PoolState::Active,
                1 => PoolState::Withdrawing(r.u32("PoolState::Withdrawing")?),
                _ => PoolState::Withdrawn,
            },
            voting_params: VotingParams {
                storage_price: r.u64("voting_params")?,
                write_price: r.u64("voting_params")?,
                node_capacity: r.u64("voting_params")?,
            },
            node_info: StorageNodeInfo::read(r)?,
            activation_epoch: r.u32("activation_epoch")?,
            latest_epoch: r.u32("latest_epoch")?,
            wal_balance: r.u64("wal_balance")?,
            num_shares: r.u64("num_shares")?,
            pending_shares_withdraw: read_pending(r, "pending_shares_withdraw")?,
            pre_active_withdrawals: read_pending(r, "pre_active_withdrawals")?,
            pending_commission_rate: read_pending(r, "pending_commission_rate")?,
            commission_rate: r.u16("commission_rate")?,
            exchange_rates: read_table(r, "exchange_rates")?,
            pending_stake: read_pending(r, "pending_stake")?,
            rewards_pool: r.u64("rewards_pool")?,
            commission: r.u64("commission")?,
            commission_receiver: read_authorized(r, "commission_receiver")?,
            governance_authorized: read_authorized(r, "governance_authorized")?,
            extra_fields: read_table(r, "extra_fields")?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.address(&self.id);
        match self.state {
            PoolState::Active => w.uleb(0),
            PoolState::Withdrawing(e) => w.uleb(1).u32(e),
            PoolState::Withdrawn => w.uleb(2),
        };
        w.u64(self.voting_params.storage_price)
            .u64(self.voting_params.write_price)
            .u64(self.voting_params.node_capacity);
        self.node_info.write(w);
        w.u32(self.activation_epoch)
            .u32(self.latest_epoch)
            .u64(self.wal_balance)
            .u64(self.num_shares);
        write_pending(w, &self.pending_shares_withdraw);
        write_pending(w, &self.pre_active_withdrawals);
        write_pending(w, &self.pending_commission_rate);
        w.u16(self.commission_rate);
        write_table(w, &self.exchange_rates);
        write_pending(w, &self.pending_stake);
        w.u64(self.rewards_pool).u64(self.commission);
        write_authorized(w, &self.commission_receiver);
        write_authorized(w, &self.governance_authorized);
        write_table(w, &self.extra_fields);
    }
}

impl StakingPool {
    /// A pool as the simulator registers a node: active, every balance and queue empty.
    pub fn new_active(node_info: StorageNodeInfo, epoch: u32) -> Self {
        let id = node_info.node_id;
        Self {
            id,
            state: PoolState::Active,
            voting_params: VotingParams::default(),
            node_info,
            activation_epoch: epoch,
            latest_epoch: epoch,
            wal_balance: 0,
            num_shares: 0,
            pending_shares_withdraw: Vec::new(),
            pre_active_withdrawals: Vec::new(),
            pending_commission_rate: Vec::new(),
            commission_rate: 0,
            exchange_rates: TableRef::default(),
            pending_stake: Vec::new(),
            rewards_pool: 0,
            commission: 0,
            commission_receiver: Authorized::Address(id),
            governance_authorized: Authorized::Address(id),
            extra_fields: TableRef::default(),
        }
    }
}

fn read_event_blob(r: &mut Reader<'_>) -> Result<EventBlob, BcsError> {
    Ok(EventBlob {
        blob_id: r.u256("event blob id")?,
        ending_checkpoint_sequence_number: r.u64("event blob checkpoint")?,
    })
}

fn write_event_blob(w: &mut Writer, b: &EventBlob) {
    w.raw(&b.blob_id).u64(b.ending_checkpoint_sequence_number);
}

impl MoveValue for SystemStateInnerV1 {
    fn read(r: &mut Reader<'_>) -> Result<Self, BcsError> {
        let members = r.vec("committee members", 35, |r| {
            Ok(BlsCommitteeMember {
                public_key: r.bytes("member public_key")?.to_vec(),
                weight: r.u16("member weight")?,
                node_id: r.address("member node_id")?,
            })
        })?;
        let committee = BlsCommittee {
            members,
            n_shards: r.u16("n_shards")?,
            epoch: r.u32("epoch")?,
            total_aggregated_key: r.bytes("total_aggregated_key")?.to_vec(),
        };
        Ok(Self {
            committee,
            total_capacity_size: r.u64("total_capacity_size")?,
            used_capacity_size: r.u64("used_capacity_size")?,
            storage_price_per_unit_size: r.u64("storage_price_per_unit_size")?,
            write_price_per_unit_size: r.u64("write_price_per_unit_size")?,
            future_accounting_current_index: r.u32("future_accounting")?,
            future_accounting_length: r.u32("future_accounting")?,
            future_accounting: r.vec("future_accounting", 20, |r| {
                Ok(FutureAccounting {
                    epoch: r.u32("accounting epoch")?,
                    used_capacity: r.u64("accounting used_capacity")?,
                    rewards_to_distribute: r.u64("accounting rewards")?,
                })
            })?,
            latest_certified_event_blob: r.option("latest_certified_blob", read_event_blob)?,
            aggregate_weight_per_blob: r.vec("aggregate_weight_per_blob", 42, |r| {
                Ok((read_event_blob(r)?, r.u16("aggregate weight")?))
            })?,
            deny_list_sizes: r.address("deny_list_sizes")?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.vec(&self.committee.members, |w, m| {
            w.bytes(&m.public_key).u16(m.weight).address(&m.node_id);
        });
        w.u16(self.committee.n_shards)
            .u32(self.committee.epoch)
            .bytes(&self.committee.total_aggregated_key)
            .u64(self.total_capacity_size)
            .u64(self.used_capacity_size)
            .u64(self.storage_price_per_unit_size)
            .u64(self.write_price_per_unit_size)
            .u32(self.future_accounting_current_index)
            .u32(self.future_accounting_length)
            .vec(&self.future_accounting, |w, a| {
                w.u32(a.epoch)
                    .u64(a.used_capacity)
                    .u64(a.rewards_to_distribute);
            })
            .option(self.latest_certified_event_blob.as_ref(), write_event_blob)
            .vec(&self.aggregate_weight_per_blob, |w, (b, weight)| {
                write_event_blob(w, b);
                w.u16(*weight);
            })
            .address(&self.deny_list_sizes);
    }
}

/// The Sui framework address `0x2`, where `dynamic_field` lives.
pub const SUI_FRAMEWORK: &str =
    "0x0000000000000000000000000000000000000000000000000000000000000002";

/// The full type string of each object the read path fetches, for Walrus package (original
/// ID) `package`; compare with [`normalize_type`] of what the chain says.
pub mod type_of {
    use super::SUI_FRAMEWORK;
    use crate::object_id::ObjectId;

    pub fn staking(package: &ObjectId) -> String {
        format!("{package}::staking::Staking")
    }

    pub fn system(package: &ObjectId) -> String {
        format!("{package}::system::System")
    }

    pub fn staking_inner_field(package: &ObjectId) -> String {
        format!(
            "{SUI_FRAMEWORK}::dynamic_field::Field<u64, {package}::staking_inner::StakingInnerV1>"
        )
    }

    pub fn system_inner_field(package: &ObjectId) -> String {
        format!(
            "{SUI_FRAMEWORK}::dynamic_field::Field<u64, {package}::system_state_inner::SystemStateInnerV1>"
        )
    }

    pub fn staking_pool(package: &ObjectId) -> String {
        format!("{package}::staking_pool::StakingPool")
    }
}

/// A type string with every address written in full (`0x2` → `0x00…02`, lower case) and no
/// spaces, so that two spellings of one type compare equal.
pub fn normalize_type(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'0' && bytes.get(i + 1).is_some_and(|&x| x == b'x' || x == b'X') {
            let start = i + 2;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_hexdigit() {
                end += 1;
            }
            match text[i..end].parse::<ObjectId>() {
                Ok(id) if end > start => out.push_str(&id.to_string()),
                _ => out.push_str(&text[i..end]),
            }
            i = end;
        } else {
            if c != b' ' {
                out.push(c as char);
            }
            i += 1;
        }
    }
    out
}

/// The package address of a `0x…::module::Name` type whose module and name are as given.
pub fn package_of(type_text: &str, module: &str, name: &str) -> Option<ObjectId> {
    let normalized = normalize_type(type_text);
    let (package, rest) = normalized.split_once("::")?;
    (rest == format!("{module}::{name}"))
        .then(|| package.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(text: &str) -> Vec<u8> {
        hex::decode(text.split_whitespace().collect::<String>()).unwrap()
    }

    fn rep(byte: &str, n: usize) -> String {
        byte.repeat(n)
    }

    /// NETWORK.md §4.1, serialized with the official TS schemas.
    #[test]
    fn staking_outer_object_matches_the_vector() {
        let bytes = unhex(
            "10b9d30c28448939ce6c4d6c6e0ffce4a7f8a4ada8248bdad09ef8b70e4a3904 0300000000000000
             abababababababababababababababababababababababababababababababab 00",
        );
        assert_eq!(bytes.len(), 73);
        let staking = VersionedObject::from_bcs(&bytes).unwrap();
        assert_eq!(
            staking.id.to_string(),
            "0x10b9d30c28448939ce6c4d6c6e0ffce4a7f8a4ada8248bdad09ef8b70e4a3904"
        );
        assert_eq!(staking.version, 3);
        assert_eq!(staking.package_id, ObjectId([0xab; 32]));
        assert_eq!(staking.new_package_id, None);
        assert_eq!(staking.to_bcs(), bytes);
    }

    pub(crate) fn staking_inner_vector() -> Vec<u8> {
        unhex(&format!(
            "a1d6719d0447c536a41688d5762449782bed731ac708659d98f9bff668b555b3
             0300000000000000 e803 0008194800000000 8049d1cd95010000
             {} 0200000000000000 07000000 {} 00
             02 {} 02 0000 0200 {} 01 0100
             01 {} 03 0000 0100 0200
             00 00 0500 {}",
            rep("11", 32),
            rep("22", 32),
            rep("01", 32),
            rep("02", 32),
            rep("01", 32),
            rep("33", 32)
        ))
    }

    #[test]
    fn staking_inner_field_matches_the_vector() {
        let bytes = staking_inner_vector();
        let field = Field::<StakingInnerV1>::from_bcs(&bytes).unwrap();
        assert_eq!(field.name, 3);
        let inner = &field.value;
        assert_eq!(inner.n_shards, 1000);
        assert_eq!(inner.epoch_duration, 1_209_600_000);
        assert_eq!(inner.first_epoch_start, 1_742_914_800_000);
        assert_eq!(
            inner.pools,
            TableRef {
                id: ObjectId([0x11; 32]),
                size: 2
            }
        );
        assert_eq!(inner.epoch, 7);
        assert_eq!(inner.next_committee, None);
        assert_eq!(
            inner.committee,
            vec![
                (ObjectId([1; 32]), vec![0, 2]),
                (ObjectId([2; 32]), vec![1])
            ]
        );
        assert_eq!(
            inner.previous_committee,
            vec![(ObjectId([1; 32]), vec![0, 1, 2])]
        );
        assert_eq!(inner.epoch_state, EpochState::ChangeSync { weight: 5 });
        assert_eq!(inner.next_epoch_public_keys, ObjectId([0x33; 32]));
        assert_eq!(field.to_bcs(), bytes);
    }

    pub(crate) fn staking_pool_vector() -> Vec<u8> {
        unhex(&format!(
            "{} 00 0100000000000000 0200000000000000 0300000000000000
             02 6e31 {} 15 6e6f64652e6578616d706c652e636f6d3a39313835
             60 {} 00 21 02{} {}
             01000000 07000000 0a00000000000000 0a00000000000000 00 00 01 08000000 f401000000000000
             e803 {} 0300000000000000 00 0000000000000000 0000000000000000
             00 {} 01 {} {} 0000000000000000",
            rep("01", 32),
            rep("01", 32),
            rep("11", 96),
            rep("aa", 32),
            rep("44", 32),
            rep("55", 32),
            rep("66", 32),
            rep("77", 32),
            rep("88", 32)
        ))
    }

    #[test]
    fn staking_pool_matches_the_vector() {
        let bytes = staking_pool_vector();
        assert_eq!(bytes.len(), 482);
        let pool = StakingPool::from_bcs(&bytes).unwrap();
        assert_eq!(pool.id, ObjectId([1; 32]));
        assert_eq!(pool.state, PoolState::Active);
        assert_eq!(pool.voting_params.node_capacity, 3);
        let info = &pool.node_info;
        assert_eq!(info.name, "n1");
        assert_eq!(info.node_id, ObjectId([1; 32]));
        assert_eq!(info.network_address, "node.example.com:9185");
        assert_eq!(info.public_key, vec![0x11; 96]);
        assert_eq!(info.network_public_key.len(), 33);
        assert_eq!(info.network_public_key[0], 2);
        assert_eq!(pool.pending_commission_rate, vec![(8, 500)]);
        assert_eq!(pool.commission_rate, 1000);
        assert_eq!(
            pool.commission_receiver,
            Authorized::Address(ObjectId([0x66; 32]))
        );
        assert_eq!(
            pool.governance_authorized,
            Authorized::ObjectId(ObjectId([0x77; 32]))
        );
        assert_eq!(pool.to_bcs(), bytes);
    }

    #[test]
    fn every_truncation_and_extension_is_rejected() {
        for bytes in [staking_inner_vector(), staking_pool_vector()] {
            for cut in 0..bytes.len() {
                assert!(Field::<StakingInnerV1>::from_bcs(&bytes[..cut]).is_err());
                assert!(StakingPool::from_bcs(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Field::<StakingInnerV1>::from_bcs(&longer).is_err());
            assert!(StakingPool::from_bcs(&longer).is_err());
        }
        // An unknown epoch state (a future contract) is an error, not a guess.
        let mut bytes = staking_inner_vector();
        let state_at = bytes.len() - 32 - 3;
        assert_eq!(bytes[state_at], 0);
        bytes[state_at] = 3;
        assert!(matches!(
            Field::<StakingInnerV1>::from_bcs(&bytes),
            Err(BcsError::BadVariant {
                what: "EpochState",
                ..
            })
        ));
    }

    #[test]
    fn system_state_round_trips() {
        let state = SystemStateInnerV1 {
            committee: BlsCommittee {
                members: vec![BlsCommitteeMember {
                    public_key: vec![7; 96],
                    weight: 10,
                    node_id: ObjectId([3; 32]),
                }],
                n_shards: 10,
                epoch: 2,
                total_aggregated_key: vec![8; 96],
            },
            total_capacity_size: 1,
            used_capacity_size: 2,
            storage_price_per_unit_size: 3,
            write_price_per_unit_size: 4,
            future_accounting_current_index: 0,
            future_accounting_length: 1,
            future_accounting: vec![FutureAccounting {
                epoch: 2,
                used_capacity: 5,
                rewards_to_distribute: 6,
            }],
            latest_certified_event_blob: None,
            aggregate_weight_per_blob: Vec::new(),
            deny_list_sizes: ObjectId([9; 32]),
        };
        let bytes = state.to_bcs();
        assert_eq!(SystemStateInnerV1::from_bcs(&bytes).unwrap(), state);
    }

    #[test]
    fn type_strings_normalize_and_yield_their_package() {
        let pkg: ObjectId = "0xfdc88f7d7cf30afab2f82e8380d11ee8f70efb90e863d1de8616fae1bb09ea77"
            .parse()
            .unwrap();
        let short = "0x2::dynamic_field::Field<u64, 0xfdc88f7d7cf30afab2f82e8380d11ee8f70efb90e863d1de8616fae1bb09ea77::staking_inner::StakingInnerV1>";
        assert_eq!(
            normalize_type(short),
            normalize_type(&type_of::staking_inner_field(&pkg))
        );
        assert_eq!(
            package_of(&type_of::staking(&pkg), "staking", "Staking"),
            Some(pkg)
        );
        assert_eq!(
            package_of(&type_of::staking(&pkg), "system", "System"),
            None
        );
        assert_eq!(package_of("garbage", "staking", "Staking"), None);
    }
}
