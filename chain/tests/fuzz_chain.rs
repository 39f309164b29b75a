//! Fuzz-style property tests for every parser of bytes that come from a Sui full node or an
//! operator's file: the BCS of the Move objects the read path decodes (`Staking`, the
//! `Field<u64, StakingInnerV1>`, `StakingPool`, `SystemStateInnerV1`), the committee assembled
//! from them, gRPC / gRPC-Web framing and its text form, the `sui.rpc.v2` protobuf answers,
//! `grpc-message` percent-decoding, object IDs, network keys, type strings, and
//! `client_config.yaml`.
//!
//! Each decoder gets random bytes and valid encodings mutated (truncated, extended, bytes
//! flipped, inserted or removed, a length prefix replaced by a huge one). Every case checks that
//! the decoder returns instead of panicking and that its largest single allocation is bounded by
//! the input's size (a declared length of 2^60 allocates nothing); where an encoder exists, valid
//! values round-trip, and BCS accepted after a mutation encodes back to exactly those bytes (BCS
//! has one encoding per value). Case counts keep the file to seconds in the dev profile.

use bytes::{Bytes, BytesMut};
use chain::bcs::{Reader, Writer};
use chain::blob_object::{BlobObject, MetadataField, SharedBlob, StorageResource};
use chain::committee::ChainCommittee;
use chain::grpc::{self, Frame};
use chain::move_types::{
    Authorized, BlsCommittee, BlsCommitteeMember, CommitteeMap, EpochParams, EventBlob, Field,
    FutureAccounting, MoveValue, PoolState, StakingInnerV1, StakingPool, StorageNodeInfo,
    SystemStateInnerV1, TableRef, VersionedObject, VotingParams,
};
use chain::{proto, EpochState, ObjectId};
use fuzzkit::{largest_allocation, mutated, uleb128, Edits, Mutation};
use proptest::prelude::*;
use prost::Message;
use std::collections::HashMap;

#[global_allocator]
static ALLOCATOR: fuzzkit::AllocationProbe = fuzzkit::AllocationProbe;

/// What a decoder may reserve for an `n`-byte input: decoded structs are wider than their wire
/// form (a committee entry is 33 bytes on the wire and 56 in memory), plus slack for messages.
fn allocation_bound(n: usize) -> usize {
    8 * n + 4096
}

/// Edits of BCS, protobuf and text bodies, forged length prefixes included.
fn mutation() -> impl Strategy<Value = Mutation> {
    Edits {
        huge_lengths: &[1 << 60, u64::MAX, u32::MAX as u64, 1 << 28],
        ..Edits::default()
    }
    .strategy()
}

// ---- Move values ----

fn object_id() -> impl Strategy<Value = ObjectId> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(ObjectId),
        (0u8..4).prop_map(|b| ObjectId([b; 32])),
    ]
}

fn table() -> impl Strategy<Value = TableRef> {
    (object_id(), any::<u64>()).prop_map(|(id, size)| TableRef { id, size })
}

fn committee() -> impl Strategy<Value = CommitteeMap> {
    prop::collection::vec(
        (object_id(), prop::collection::vec(any::<u16>(), 0..6)),
        0..5,
    )
}

fn epoch_state() -> impl Strategy<Value = EpochState> {
    prop_oneof![
        any::<u16>().prop_map(|weight| EpochState::ChangeSync { weight }),
        any::<u64>().prop_map(|at_ms| EpochState::ChangeDone { at_ms }),
        any::<u64>().prop_map(|epoch_start_ms| EpochState::NextParamsSelected { epoch_start_ms }),
    ]
}

fn staking_inner() -> impl Strategy<Value = StakingInnerV1> {
    (
        (
            any::<u16>(),
            any::<u64>(),
            any::<u64>(),
            table(),
            any::<u32>(),
        ),
        (
            object_id(),
            prop::option::of(committee()),
            committee(),
            committee(),
        ),
        (
            prop::option::of(any::<(u64, u64, u64)>()),
            epoch_state(),
            object_id(),
        ),
    )
        .prop_map(
            |(
                (n_shards, epoch_duration, first_epoch_start, pools, epoch),
                (active_set, next_committee, committee, previous_committee),
                (params, epoch_state, next_epoch_public_keys),
            )| StakingInnerV1 {
                n_shards,
                epoch_duration,
                first_epoch_start,
                pools,
                epoch,
                active_set,
                next_committee,
                committee,
                previous_committee,
                next_epoch_params: params.map(|(a, b, c)| EpochParams {
                    total_capacity_size: a,
                    storage_price_per_unit_size: b,
                    write_price_per_unit_size: c,
                }),
                epoch_state,
                next_epoch_public_keys,
            },
        )
}

fn node_info() -> impl Strategy<Value = StorageNodeInfo> {
    (
        "\\PC{0,12}",
        object_id(),
        "[a-z0-9.:-]{0,24}",
        prop::collection::vec(any::<u8>(), 0..100),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        prop::collection::vec(any::<u8>(), 0..40),
        object_id(),
    )
        .prop_map(
            |(
                name,
                node_id,
                network_address,
                public_key,
                next_epoch_public_key,
                network_public_key,
                metadata,
            )| StorageNodeInfo {
                name,
                node_id,
                network_address,
                public_key,
                next_epoch_public_key,
                network_public_key,
                metadata,
            },
        )
}

fn pending() -> impl Strategy<Value = Vec<(u32, u64)>> {
    prop::collection::vec(any::<(u32, u64)>(), 0..4)
}

fn authorized() -> impl Strategy<Value = Authorized> {
    prop_oneof![
        object_id().prop_map(Authorized::Address),
        object_id().prop_map(Authorized::ObjectId),
    ]
}

fn staking_pool() -> impl Strategy<Value = StakingPool> {
    (
        (
            object_id(),
            prop_oneof![
                Just(PoolState::Active),
                any::<u32>().prop_map(PoolState::Withdrawing),
                Just(PoolState::Withdrawn)
            ],
            any::<(u64, u64, u64)>(),
            node_info(),
            any::<(u32, u32, u64, u64)>(),
        ),
        (pending(), pending(), pending(), any::<u16>(), table()),
        (
            pending(),
            any::<(u64, u64)>(),
            authorized(),
            authorized(),
            table(),
        ),
    )
        .prop_map(
            |(
                (id, state, (sp, wp, nc), node_info, (activation_epoch, latest_epoch, wal, shares)),
                (psw, paw, pcr, commission_rate, exchange_rates),
                (pending_stake, (rewards_pool, commission), receiver, governance, extra_fields),
            )| StakingPool {
                id,
                state,
                voting_params: VotingParams {
                    storage_price: sp,
                    write_price: wp,
                    node_capacity: nc,
                },
                node_info,
                activation_epoch,
                latest_epoch,
                wal_balance: wal,
                num_shares: shares,
                pending_shares_withdraw: psw,
                pre_active_withdrawals: paw,
                pending_commission_rate: pcr,
                commission_rate,
                exchange_rates,
                pending_stake,
                rewards_pool,
                commission,
                commission_receiver: receiver,
                governance_authorized: governance,
                extra_fields,
            },
        )
}

fn event_blob() -> impl Strategy<Value = EventBlob> {
    any::<([u8; 32], u64)>().prop_map(|(blob_id, n)| EventBlob {
        blob_id,
        ending_checkpoint_sequence_number: n,
    })
}

fn system_state() -> impl Strategy<Value = SystemStateInnerV1> {
    (
        prop::collection::vec(
            (
                prop::collection::vec(any::<u8>(), 0..100),
                any::<u16>(),
                object_id(),
            ),
            0..4,
        ),
        any::<(u16, u32)>(),
        prop::collection::vec(any::<u8>(), 0..100),
        any::<(u64, u64, u64, u64, u32, u32)>(),
        prop::collection::vec(any::<(u32, u64, u64)>(), 0..4),
        prop::option::of(event_blob()),
        prop::collection::vec((event_blob(), any::<u16>()), 0..3),
        object_id(),
    )
        .prop_map(
            |(members, (n_shards, epoch), key, (t, u, s, w, i, l), fa, latest, agg, deny)| {
                SystemStateInnerV1 {
                    committee: BlsCommittee {
                        members: members
                            .into_iter()
                            .map(|(public_key, weight, node_id)| BlsCommitteeMember {
                                public_key,
                                weight,
                                node_id,
                            })
                            .collect(),
                        n_shards,
                        epoch,
                        total_aggregated_key: key,
                    },
                    total_capacity_size: t,
                    used_capacity_size: u,
                    storage_price_per_unit_size: s,
                    write_price_per_unit_size: w,
                    future_accounting_current_index: i,
                    future_accounting_length: l,
                    future_accounting: fa
                        .into_iter()
                        .map(
                            |(epoch, used_capacity, rewards_to_distribute)| FutureAccounting {
                                epoch,
                                used_capacity,
                                rewards_to_distribute,
                            },
                        )
                        .collect(),
                    latest_certified_event_blob: latest,
                    aggregate_weight_per_blob: agg,
                    deny_list_sizes: deny,
                }
            },
        )
}

fn versioned() -> impl Strategy<Value = VersionedObject> {
    (
        object_id(),
        any::<u64>(),
        object_id(),
        prop::option::of(object_id()),
    )
        .prop_map(
            |(id, version, package_id, new_package_id)| VersionedObject {
                id,
                version,
                package_id,
                new_package_id,
            },
        )
}

/// Decode `bytes` as `T`: never a panic, allocation bounded by the input, and accepted bytes
/// are the canonical encoding of what they decoded to.
fn check_decoder<T: MoveValue + std::fmt::Debug>(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (decoded, largest) = largest_allocation(|| T::from_bcs(bytes));
    prop_assert!(
        largest <= allocation_bound(bytes.len()),
        "{} bytes allocated for a {}-byte input",
        largest,
        bytes.len()
    );
    if let Ok(value) = decoded {
        prop_assert_eq!(
            value.to_bcs(),
            bytes,
            "accepted non-canonical bytes as {:?}",
            value
        );
    }
    Ok(())
}

/// Every object decoder on the same bytes (a node may answer any object with any bytes).
fn check_all_decoders(bytes: &[u8]) -> Result<(), TestCaseError> {
    check_decoder::<VersionedObject>(bytes)?;
    check_decoder::<Field<StakingInnerV1>>(bytes)?;
    check_decoder::<StakingInnerV1>(bytes)?;
    check_decoder::<StakingPool>(bytes)?;
    check_decoder::<SystemStateInnerV1>(bytes)?;
    check_decoder::<EpochState>(bytes)?;
    check_decoder::<BlobObject>(bytes)?;
    check_decoder::<SharedBlob>(bytes)?;
    check_decoder::<MetadataField>(bytes)?;
    Ok(())
}

// ---- by-object-id: Blob, SharedBlob, Metadata ----

fn blob_object() -> impl Strategy<Value = BlobObject> {
    (
        (
            object_id(),
            any::<u32>(),
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<u8>(),
        ),
        (
            prop::option::of(any::<u32>()),
            object_id(),
            any::<(u32, u32, u64)>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (id, registered_epoch, blob_id, size, encoding_type),
                (certified, sid, (start, end, bytes), deletable),
            )| {
                BlobObject {
                    id,
                    registered_epoch,
                    blob_id,
                    size,
                    encoding_type,
                    certified_epoch: certified,
                    storage: StorageResource {
                        id: sid,
                        start_epoch: start,
                        end_epoch: end,
                        storage_size: bytes,
                    },
                    deletable,
                }
            },
        )
}

fn metadata_field() -> impl Strategy<Value = MetadataField> {
    (
        object_id(),
        prop::collection::vec(any::<u8>(), 0..12),
        prop::collection::vec(("\\PC{0,12}", "\\PC{0,24}"), 0..6),
    )
        .prop_map(|(id, name, attributes)| MetadataField {
            id,
            name,
            attributes,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn blob_objects_round_trip_and_survive_mutation(
        blob in blob_object(),
        funds in any::<u64>(),
        shared_id in object_id(),
        field in metadata_field(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        prop_assert_eq!(BlobObject::from_bcs(&blob.to_bcs()), Ok(blob));
        let shared = SharedBlob { id: shared_id, blob, funds };
        prop_assert_eq!(SharedBlob::from_bcs(&shared.to_bcs()), Ok(shared));
        prop_assert_eq!(MetadataField::from_bcs(&field.to_bcs()), Ok(field.clone()));
        check_all_decoders(&mutated(blob.to_bcs(), &mutations))?;
        check_all_decoders(&mutated(shared.to_bcs(), &mutations))?;
        check_all_decoders(&mutated(field.to_bcs(), &mutations))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn move_values_round_trip(
        staking in versioned(),
        inner in staking_inner(),
        name in any::<u64>(),
        field_id in object_id(),
        pool in staking_pool(),
        system in system_state(),
    ) {
        prop_assert_eq!(VersionedObject::from_bcs(&staking.to_bcs()), Ok(staking));
        let field = Field { id: field_id, name, value: inner };
        prop_assert_eq!(Field::<StakingInnerV1>::from_bcs(&field.to_bcs()), Ok(field));
        prop_assert_eq!(StakingPool::from_bcs(&pool.to_bcs()), Ok(pool));
        prop_assert_eq!(SystemStateInnerV1::from_bcs(&system.to_bcs()), Ok(system));
    }

    #[test]
    fn mutated_staking_objects_never_panic_or_overallocate(
        staking in versioned(),
        inner in staking_inner(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        check_all_decoders(&mutated(staking.to_bcs(), &mutations))?;
        let field = Field { id: ObjectId([5; 32]), name: 3, value: inner };
        check_all_decoders(&mutated(field.to_bcs(), &mutations))?;
    }

    #[test]
    fn mutated_pools_and_system_state_never_panic_or_overallocate(
        pool in staking_pool(),
        system in system_state(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        check_all_decoders(&mutated(pool.to_bcs(), &mutations))?;
        check_all_decoders(&mutated(system.to_bcs(), &mutations))?;
    }

    #[test]
    fn random_bytes_never_panic_or_overallocate(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check_all_decoders(&bytes)?;
    }

    /// The committee check on whatever the chain sent: a refusal or a committee in which every
    /// shard is held exactly once, never a panic.
    #[test]
    fn committees_assembled_from_mutated_objects_hold_every_shard_once(
        n in 4u16..12,
        owners in prop::collection::vec(0u8..4, 12),
        pools in prop::collection::vec(staking_pool(), 4),
        mutations in prop::collection::vec(mutation(), 0..3),
        inner in staking_inner(),
    ) {
        // A consistent committee to start from: shard s belongs to node owners[s].
        let mut map: CommitteeMap = Vec::new();
        for (s, &o) in owners.iter().take(usize::from(n)).enumerate() {
            let id = ObjectId([o + 1; 32]);
            match map.iter_mut().find(|(node, _)| *node == id) {
                Some((_, shards)) => shards.push(s as u16),
                None => map.push((id, vec![s as u16])),
            }
        }
        let mut by_id = HashMap::new();
        for (i, mut pool) in pools.into_iter().enumerate() {
            let id = ObjectId([i as u8 + 1; 32]);
            pool.id = id;
            pool.node_info.node_id = id;
            pool.node_info.network_address = format!("127.0.0.1:{}", 9000 + i);
            let mut key = vec![2u8];
            key.extend([i as u8; 32]);
            pool.node_info.network_public_key = key;
            let bytes = mutated(pool.to_bcs(), &mutations);
            if let Ok(pool) = StakingPool::from_bcs(&bytes) {
                by_id.insert(id, pool);
            }
        }
        let inner = StakingInnerV1 {
            n_shards: n,
            committee: map.clone(),
            previous_committee: map,
            ..inner
        };
        let Ok(inner) = StakingInnerV1::from_bcs(&mutated(inner.to_bcs(), &mutations)) else {
            return Ok(());
        };
        if let Ok(committee) = ChainCommittee::assemble(&inner, &by_id) {
            for members in [&committee.current, &committee.previous] {
                if members.is_empty() {
                    continue;
                }
                let mut shards: Vec<u16> = members.iter().flat_map(|m| m.shards.clone()).collect();
                shards.sort_unstable();
                prop_assert_eq!(shards, (0..committee.n_shards).collect::<Vec<_>>());
            }
        }
    }
}

// ---- gRPC framing ----

fn frames() -> impl Strategy<Value = Vec<(bool, Vec<u8>, u32, String)>> {
    prop::collection::vec(
        (
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..200),
            0u32..20,
            "\\PC{0,30}",
        ),
        0..5,
    )
}

fn framed(parts: &[(bool, Vec<u8>, u32, String)]) -> Bytes {
    let mut body = BytesMut::new();
    for (trailer, message, status, text) in parts {
        if *trailer {
            body.extend_from_slice(&grpc::encode_trailers(*status, text));
        } else {
            body.extend_from_slice(&grpc::encode_message(message));
        }
    }
    body.freeze()
}

fn check_frames(body: &[u8], limit: usize) -> Result<(), TestCaseError> {
    let owned = Bytes::copy_from_slice(body);
    let (frames, largest) = largest_allocation(|| grpc::decode_frames(owned, limit));
    prop_assert!(largest <= allocation_bound(body.len()), "{largest} bytes");
    if let Ok(frames) = frames {
        for frame in &frames {
            if let Frame::Message(m) = frame {
                prop_assert!(m.len() <= limit);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn grpc_frames_round_trip_in_binary_and_text(parts in frames(), split in any::<prop::sample::Index>()) {
        let body = framed(&parts);
        let decoded = grpc::decode_frames(body.clone(), 1 << 20).unwrap();
        prop_assert_eq!(decoded.len(), parts.len());
        for (frame, (trailer, message, status, text)) in decoded.iter().zip(&parts) {
            match frame {
                Frame::Message(m) => {
                    prop_assert!(!trailer);
                    prop_assert_eq!(&m[..], &message[..]);
                }
                Frame::Trailers(t) => {
                    prop_assert!(trailer);
                    prop_assert_eq!(&t[0], &("grpc-status".to_owned(), status.to_string()));
                    // Trailer values are trimmed, as HTTP field values are.
                    let sent = text.trim_matches(|c: char| c == ' ' || c == '\t');
                    let got = t.get(1).map(|(_, v)| grpc::percent_decode(v)).unwrap_or_default();
                    prop_assert_eq!(got.trim_matches(|c: char| c == ' ' || c == '\t'), sent);
                }
            }
        }
        // gRPC-Web text, flushed in two separately padded chunks.
        let at = split.index(body.len() + 1);
        let mut text = grpc::encode_text(&body[..at]).to_vec();
        text.extend_from_slice(&grpc::encode_text(&body[at..]));
        prop_assert_eq!(grpc::decode_text(&text), Ok(body));
    }

    #[test]
    fn mutated_grpc_bodies_never_panic_or_overallocate(
        parts in frames(),
        mutations in prop::collection::vec(mutation(), 1..4),
        limit in prop_oneof![Just(0usize), Just(64), Just(1 << 20)],
    ) {
        let body = mutated(framed(&parts).to_vec(), &mutations);
        check_frames(&body, limit)?;
        let text = mutated(grpc::encode_text(&framed(&parts)).to_vec(), &mutations);
        let (decoded, largest) = largest_allocation(|| grpc::decode_text(&text));
        prop_assert!(largest <= allocation_bound(text.len()), "{largest} bytes");
        if let Ok(decoded) = decoded {
            check_frames(&decoded, limit)?;
        }
    }

    #[test]
    fn a_forged_frame_length_is_refused_before_buffering(len in any::<u32>(), tail in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut body = vec![0u8];
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(&tail);
        let result = grpc::decode_frames(Bytes::from(body), 32);
        if len as usize > 32 {
            prop_assert_eq!(result, Err(grpc::FrameError::TooLarge { len: len as usize, limit: 32 }));
        } else if len as usize > tail.len() {
            prop_assert_eq!(result, Err(grpc::FrameError::Truncated));
        }
    }

    #[test]
    fn grpc_messages_percent_decode_back(text in "\\PC{0,40}", junk in "[%0-9a-fA-F+\\-]{0,12}") {
        prop_assert_eq!(grpc::percent_decode(&grpc::percent_encode(&text)), text.clone());
        let _ = grpc::percent_decode(&format!("{text}{junk}"));
    }
}

// ---- protobuf answers ----

fn bcs_field() -> impl Strategy<Value = Option<proto::Bcs>> {
    prop::option::of(
        (
            prop::option::of("[A-Za-z:_0-9]{0,20}"),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..80)),
        )
            .prop_map(|(name, value)| proto::Bcs { name, value }),
    )
}

fn object() -> impl Strategy<Value = proto::Object> {
    (
        (
            bcs_field(),
            prop::option::of("0x[0-9a-f]{1,64}"),
            prop::option::of(any::<u64>()),
        ),
        (
            prop::option::of("\\PC{0,20}"),
            prop::option::of(
                (
                    prop::option::of(0i32..6),
                    prop::option::of("0x[0-9a-f]{1,8}"),
                    prop::option::of(any::<u64>()),
                )
                    .prop_map(|(kind, address, version)| proto::Owner {
                        kind,
                        address,
                        version,
                    }),
            ),
            prop::option::of("\\PC{0,40}"),
        ),
        (
            prop::option::of(any::<bool>()),
            bcs_field(),
            prop::option::of(any::<u64>()),
        ),
    )
        .prop_map(
            |((bcs, object_id, version), (digest, owner, object_type), (hpt, contents, rebate))| {
                proto::Object {
                    bcs,
                    object_id,
                    version,
                    digest,
                    owner,
                    object_type,
                    has_public_transfer: hpt,
                    contents,
                    previous_transaction: None,
                    storage_rebate: rebate,
                }
            },
        )
}

fn batch() -> impl Strategy<Value = proto::BatchGetObjectsResponse> {
    prop::collection::vec(
        prop_oneof![
            object().prop_map(|o| Some(proto::get_object_result::Result::Object(o))),
            (any::<i32>(), "\\PC{0,20}").prop_map(|(code, message)| {
                Some(proto::get_object_result::Result::Error(proto::Status {
                    code,
                    message,
                    details: vec![proto::Any {
                        type_url: "t".into(),
                        value: vec![1, 2],
                    }],
                }))
            }),
            Just(None),
        ],
        0..4,
    )
    .prop_map(|results| proto::BatchGetObjectsResponse {
        objects: results
            .into_iter()
            .map(|result| proto::GetObjectResult { result })
            .collect(),
    })
}

fn service_info() -> impl Strategy<Value = proto::GetServiceInfoResponse> {
    (
        prop::option::of("[1-9A-Za-z]{0,44}"),
        prop::option::of("[a-z]{0,10}"),
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u64>()),
        prop::option::of(any::<(i64, i32)>()),
        prop::option::of("\\PC{0,10}"),
    )
        .prop_map(|(chain_id, chain, epoch, height, ts, server)| {
            proto::GetServiceInfoResponse {
                chain_id,
                chain,
                epoch,
                checkpoint_height: height,
                timestamp: ts.map(|(seconds, nanos)| proto::Timestamp { seconds, nanos }),
                lowest_available_checkpoint: None,
                lowest_available_checkpoint_objects: None,
                server,
            }
        })
}

fn check_proto(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (_, largest) = largest_allocation(|| {
        let _ = proto::GetObjectResponse::decode(bytes);
        let _ = proto::BatchGetObjectsResponse::decode(bytes);
        let _ = proto::GetServiceInfoResponse::decode(bytes);
    });
    prop_assert!(largest <= allocation_bound(bytes.len()), "{largest} bytes");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn protobuf_answers_round_trip(o in object(), b in batch(), s in service_info()) {
        let single = proto::GetObjectResponse { object: Some(o) };
        prop_assert_eq!(proto::GetObjectResponse::decode(&single.encode_to_vec()[..]).unwrap(), single);
        prop_assert_eq!(proto::BatchGetObjectsResponse::decode(&b.encode_to_vec()[..]).unwrap(), b);
        prop_assert_eq!(proto::GetServiceInfoResponse::decode(&s.encode_to_vec()[..]).unwrap(), s);
    }

    #[test]
    fn mutated_protobuf_answers_never_panic_or_overallocate(
        b in batch(),
        s in service_info(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        check_proto(&mutated(b.encode_to_vec(), &mutations))?;
        check_proto(&mutated(s.encode_to_vec(), &mutations))?;
    }

    #[test]
    fn random_protobuf_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_proto(&bytes)?;
    }
}

// ---- text from the chain and from files ----

const SINGLE: &str =
    "system_object: 0xa2637d13d171b278eadfa8a3fbe8379b5e471e1f3739092e5243da17fc8090eb
staking_object: 0xca7cf321e47a1fc9bfd032abc31b253f5063521fd5b4c431f2cdd3fee1b4ec00
rpc_urls:
- http://127.0.0.1:9000
";

const MULTI: &str = "contexts:
  mainnet:
    system_object: 0x2134d52768ea07e8c43570ef975eb3e4c27a39fa6396bef985b5abc58d03ddd2
    staking_object: 0x10b9d30c28448939ce6c4d6c6e0ffce4a7f8a4ada8248bdad09ef8b70e4a3904
    rpc_urls:
      - https://fullnode.mainnet.sui.io:443
  testnet:
    system_object: 0x6c2547cbbc38025cf3adac45f63cb0a8d12ecf777cdc75a4971612bf97fdf6af
    staking_object: 0xbe46180321c30aab2f8b3501e24048377287fa708018a5b7c2792b35fe339ee3
    rpc_urls:
      - https://fullnode.testnet.sui.io:443
default_context: testnet
";

fn check_client_config(text: &str, context: Option<&str>) -> Result<(), TestCaseError> {
    let (parsed, largest) =
        largest_allocation(|| chain::network::parse_client_config(text, context));
    // serde_yaml's own structures are a few hundred bytes per node, whatever the input.
    prop_assert!(largest <= 64 * text.len() + 65_536, "{largest} bytes");
    if let Ok(config) = parsed {
        prop_assert!(!config.rpc_urls.is_empty());
        for url in &config.rpc_urls {
            prop_assert!(url.starts_with("http://") || url.starts_with("https://"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_client_configs_never_panic(
        multi in any::<bool>(),
        mutations in prop::collection::vec(mutation(), 1..4),
        context in prop::option::of(prop::sample::select(vec!["mainnet", "testnet", "x"])),
    ) {
        let base = if multi { MULTI } else { SINGLE };
        let bytes = mutated(base.as_bytes().to_vec(), &mutations);
        check_client_config(&String::from_utf8_lossy(&bytes), context)?;
    }

    #[test]
    fn yaml_like_text_never_panics(text in "[a-z_:0-9x \\n\\-\\[\\]{}&*!|>\"',#]{0,200}") {
        check_client_config(&text, None)?;
    }

    #[test]
    fn object_ids_round_trip_and_junk_is_refused(bytes in any::<[u8; 32]>(), junk in "\\PC{0,70}") {
        let id = ObjectId(bytes);
        prop_assert_eq!(id.to_string().parse::<ObjectId>(), Ok(id));
        prop_assert_eq!(id.to_string().to_uppercase().replacen("0X", "0x", 1).parse::<ObjectId>(), Ok(id));
        if let Ok(parsed) = junk.parse::<ObjectId>() {
            // Only `0x` and 1 to 64 hex digits parse, to the same value as their full form.
            let hex = &junk[2..];
            prop_assert!(junk.len() <= 66 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
            prop_assert_eq!(format!("{hex:0>64}").to_lowercase(), parsed.to_string()[2..].to_owned());
        }
    }

    #[test]
    fn network_keys_parse_only_from_66_hex_digits(key in any::<[u8; 33]>(), junk in "\\PC{0,70}") {
        let hex = chain::network_key::to_hex(&key);
        let parsed = chain::network_key::parse_hex(&hex);
        if matches!(key[0], 2 | 3) {
            prop_assert_eq!(parsed, Some(key));
            prop_assert_eq!(chain::network_key::parse_hex(&format!("0x{hex}")), Some(key));
        } else {
            prop_assert_eq!(parsed, None);
        }
        // Multi-byte characters must not split a hex pair (a slice across them would panic).
        let _ = chain::network_key::parse_hex(&junk);
        let mut point = vec![4u8];
        point.extend_from_slice(&key);
        point.extend_from_slice(&key[..31]);
        prop_assert_eq!(chain::network_key::compress_p256_point(&point).map(|k| k[1..].to_vec()), Some(key[..32].to_vec()));
        let _ = chain::network_key::compress_p256_point(junk.as_bytes());
    }

    #[test]
    fn type_strings_never_panic(text in "\\PC{0,60}", package in any::<[u8; 32]>()) {
        let _ = chain::move_types::normalize_type(&text);
        let _ = chain::move_types::package_of(&text, "staking", "Staking");
        let pkg = ObjectId(package);
        let full = chain::move_types::type_of::staking(&pkg);
        prop_assert_eq!(chain::move_types::package_of(&full, "staking", "Staking"), Some(pkg));
        // Stripping leading zeros of the address is the short form Sui writes.
        let short = format!("0x{}::staking::Staking", full[2..66].trim_start_matches('0'));
        prop_assert_eq!(chain::move_types::package_of(&short, "staking", "Staking"), Some(pkg));
    }
}

/// Forged lengths kept as explicit cases: a vector or byte string claiming up to 2^32-1
/// elements (BCS lengths are u32) in a short input is refused before anything is reserved; a
/// ULEB128 beyond 32 bits is malformed.
#[test]
fn forged_huge_lengths_allocate_nothing() {
    for declared in [u64::from(u32::MAX), 1 << 28, 1 << 60, u64::MAX] {
        let mut w = Writer::new();
        w.raw(&uleb128(declared));
        w.raw(&[7; 40]);
        let bytes = w.into_bytes();
        let (result, largest) = largest_allocation(|| {
            let mut r = Reader::new(&bytes);
            r.vec("v", 1, |r| r.u8("x"))
        });
        assert!(result.is_err(), "declared {declared}");
        assert!(largest <= 4096, "declared {declared}: {largest} bytes");
        // A committee claiming that many members, at its position in `StakingInnerV1`.
        let mut inner = Writer::new();
        inner
            .u16(10)
            .u64(1)
            .u64(2)
            .raw(&[0; 40])
            .u32(1)
            .raw(&[0; 32])
            .u8(0);
        inner.raw(&uleb128(declared)).raw(&[1; 64]);
        let bytes = inner.into_bytes();
        let (result, largest) = largest_allocation(|| StakingInnerV1::from_bcs(&bytes));
        assert!(result.is_err(), "declared {declared}");
        assert!(largest <= 4096, "declared {declared}: {largest} bytes");
    }
}

/// A YAML alias bomb ("billion laughs") is refused without expanding it.
#[test]
fn yaml_alias_bombs_are_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let prev = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    text.push_str("system_object: *a9\n");
    let (result, largest) = largest_allocation(|| chain::network::parse_client_config(&text, None));
    assert!(result.is_err());
    assert!(largest <= 16 << 20, "{largest} bytes");
}

/// The probe itself: a large allocation is seen, so the bounds above can fail.
#[test]
fn the_allocation_probe_sees_large_allocations() {
    let (v, largest) = largest_allocation(|| vec![0u8; 1 << 20]);
    assert_eq!(v.len(), 1 << 20);
    assert!(largest >= 1 << 20);
}
