//! Walrus on Sui, as bytes: everything a reader of the real network needs to find the committee,
//! with no sockets and no files, so it can be tested against the reference vectors alone and
//! shared by the gateway (a client) and the simulator (a stand-in full node).
//!
//! * [`object_id`]: Sui addresses and object IDs, and the dynamic-field ID derivation that finds
//!   the versioned inner objects of `System` and `Staking` (NETWORK.md §2.3).
//! * [`bcs`]: a bounded BCS reader and a writer.
//! * [`move_types`]: the Move structs the read path decodes (`Staking`, `StakingInnerV1`,
//!   `StakingPool`, `System`, `SystemStateInnerV1`) in the contracts' field order (§4), with
//!   their type strings (§3).
//! * [`committee`]: the checked committee snapshot assembled from those objects (every shard
//!   owned once, every pool matching its node ID), and when to look again (§5.3).
//! * [`proto`], [`grpc`]: the `sui.rpc.v2` LedgerService messages the read path uses, and gRPC /
//!   gRPC-Web framing.
//! * [`blob_object`]: the `Blob` / `SharedBlob` objects and their `Metadata` attributes field.
//! * [`network`]: mainnet and testnet presets and Walrus's own `client_config.yaml`.
//!
//! Guarantee: decoders never panic on input and reject trailing bytes, unknown enum variants,
//! and lengths beyond what the input holds.

pub mod base58;
pub mod bcs;
// by-object-id (issue 17): the `Blob` object and its attributes.
pub mod blob_object;
pub mod committee;
pub mod grpc;
pub mod move_types;
pub mod network;
pub mod network_key;
pub mod object_id;
pub mod proto;

pub use committee::{ChainCommittee, CommitteeMember, CommitteeProblem, EpochState};
pub use object_id::ObjectId;
