//! Fuzz-style property tests for the codec's parsers of untrusted bytes: the BCS bodies storage
//! nodes send (`BlobMetadataWithId`, `BlobMetadata`, `SliverData`) and Blob ID text (every URL
//! path that names a blob).
//!
//! Inputs are random bytes and, more usefully, valid encodings that are then mutated (truncated,
//! extended, bytes flipped or inserted, a length prefix replaced by a huge one). Each case checks
//! that the decoder returns instead of panicking, that the largest single allocation it makes is
//! bounded by the input's size (a declared length of 2^60 allocates nothing), and that whatever
//! it accepts encodes back to exactly the bytes it read (BCS has one encoding per value, so a
//! decoder that accepts anything else is lenient where the reference is not).
//!
//! Case counts keep the whole file to a few seconds in the dev profile, so it runs in CI with
//! the normal `cargo test`.

use bytes::Bytes;
use codec::{
    bcs, BlobId, BlobMetadata, EncodingConfig, SliverKind, SliverPairHashes, VerifiedMetadata,
};
use fuzzkit::{largest_allocation, mutated, uleb128, Edits, Mutation};
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: fuzzkit::AllocationProbe = fuzzkit::AllocationProbe;

/// What a decoder may reserve for an `n`-byte input: a small constant factor of it (decoded
/// structs are wider than their wire form) plus slack for error messages.
fn allocation_bound(n: usize) -> usize {
    4 * n + 4096
}

/// One edit of a valid encoding.
/// Edits of BCS bodies, forged length prefixes included.
fn mutation() -> impl Strategy<Value = Mutation> {
    Edits {
        huge_lengths: &[1 << 60, u64::MAX, (1 << 31) - 1, 1 << 32, 65_536],
        ..Edits::default()
    }
    .strategy()
}

fn node() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

/// Metadata as a (possibly lying) storage node could send it: any length, any hash count.
fn metadata() -> impl Strategy<Value = BlobMetadata> {
    (any::<u64>(), prop::collection::vec((node(), node()), 0..24)).prop_map(
        |(unencoded_length, hashes)| BlobMetadata {
            encoding_type: codec::RS2,
            unencoded_length,
            hashes: hashes
                .into_iter()
                .map(|(primary, secondary)| SliverPairHashes { primary, secondary })
                .collect(),
        },
    )
}

fn sliver_body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), 0..300),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(data, symbol_size, index)| {
            bcs::encode_sliver(&codec::Sliver {
                kind: SliverKind::Primary,
                index,
                symbol_size,
                data: Bytes::from(data),
            })
        })
}

/// Decode `bytes` with every BCS decoder; whatever is accepted must encode back to `bytes`.
fn check_bcs_decoders(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (with_id, largest) = largest_allocation(|| bcs::decode_metadata_with_id(bytes));
    prop_assert!(largest <= allocation_bound(bytes.len()), "{largest} bytes");
    if let Ok((id, meta)) = with_id {
        prop_assert_eq!(bcs::encode_metadata_with_id(&id, &meta), bytes);
    }
    let (bare, largest) = largest_allocation(|| bcs::decode_metadata(bytes));
    prop_assert!(largest <= allocation_bound(bytes.len()), "{largest} bytes");
    if let Ok(meta) = bare {
        prop_assert_eq!(bcs::encode_metadata(&meta), bytes);
    }
    let body = Bytes::copy_from_slice(bytes);
    for kind in [SliverKind::Primary, SliverKind::Secondary] {
        let (sliver, largest) = largest_allocation(|| bcs::decode_sliver(&body, kind));
        // Zero-copy: the data is a slice of the body, nothing of its size is allocated.
        prop_assert!(largest <= 4096, "{largest} bytes");
        if let Ok(sliver) = sliver {
            prop_assert_eq!(sliver.kind, kind);
            prop_assert_eq!(bcs::encode_sliver(&sliver), bytes);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn metadata_round_trips(id in any::<[u8; 32]>(), meta in metadata()) {
        let id = BlobId(id);
        let wire = bcs::encode_metadata_with_id(&id, &meta);
        prop_assert_eq!(bcs::decode_metadata_with_id(&wire), Ok((id, meta.clone())));
        prop_assert_eq!(bcs::decode_metadata(&bcs::encode_metadata(&meta)), Ok(meta));
    }

    #[test]
    fn mutated_metadata_never_panics_or_overallocates(
        id in any::<[u8; 32]>(),
        meta in metadata(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let wire = bcs::encode_metadata_with_id(&BlobId(id), &meta);
        check_bcs_decoders(&mutated(wire, &mutations))?;
        let bare = bcs::encode_metadata(&meta);
        check_bcs_decoders(&mutated(bare, &mutations))?;
    }

    #[test]
    fn mutated_slivers_never_panic_or_overallocate(
        wire in sliver_body(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        check_bcs_decoders(&mutated(wire, &mutations))?;
    }

    #[test]
    fn random_bytes_never_panic_or_overallocate(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_bcs_decoders(&bytes)?;
    }
}

proptest! {
    // Each case encodes a real blob and verifies against it: fewer cases.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The path a node's answer takes in a fill: decode and verify metadata against the Blob ID
    /// that was asked for, then decode and verify a sliver against it. Mutated answers are
    /// errors (never panics); only the genuine bytes verify.
    #[test]
    fn mutated_node_answers_are_refused_by_verification(
        n in 4u16..=16,
        blob in prop::collection::vec(any::<u8>(), 0..2000),
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..3),
    ) {
        let config = EncodingConfig::new(n).unwrap();
        let encoded = codec::encode(&config, &blob).unwrap();
        let meta = &encoded.metadata;
        let id = meta.blob_id();
        let wire = bcs::encode_metadata_with_id(&id, meta.metadata());
        let bad = mutated(wire.clone(), &mutations);
        if let Ok(v) = VerifiedMetadata::from_bcs(id, &bad, config) {
            prop_assert_eq!(&bad, &wire, "mutated metadata verified: {:?}", v.blob_id());
        }
        let sliver = which.get(&encoded.primary);
        let wire = bcs::encode_sliver(sliver);
        let bad = mutated(wire.clone(), &mutations);
        if let Ok(parsed) = bcs::decode_sliver(&Bytes::from(bad.clone()), SliverKind::Primary) {
            if let Ok(v) = meta.verify_sliver(parsed) {
                // Only a genuine sliver of this blob verifies (possibly of another index, when
                // the blob's slivers repeat).
                prop_assert_eq!(&*v, &*encoded.primary[usize::from(v.index)]);
            }
        }
    }
}

/// base64url characters plus the ones a client might confuse with them.
fn id_like_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()
            ),
            1 => prop::sample::select(b"+/=. %\0\xc3".to_vec()),
        ],
        40..46,
    )
    .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn blob_ids_round_trip_as_text(bytes in any::<[u8; 32]>()) {
        let id = BlobId(bytes);
        let text = id.to_string();
        prop_assert_eq!(text.len(), 43);
        prop_assert_eq!(text.parse::<BlobId>(), Ok(id));
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<BlobId>(&json).unwrap(), id);
    }

    /// Any text either is refused or is the one canonical spelling of the ID it parses to (no
    /// padding, no standard-alphabet characters, no non-zero trailing bits).
    #[test]
    fn blob_id_text_is_accepted_only_in_canonical_form(text in id_like_text()) {
        if let Ok(id) = text.parse::<BlobId>() {
            prop_assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn arbitrary_text_never_panics_as_a_blob_id(text in "\\PC{0,80}") {
        if let Ok(id) = text.parse::<BlobId>() {
            prop_assert_eq!(id.to_string(), text.clone());
        }
        let _ = serde_json::from_str::<BlobId>(&format!("{text:?}"));
    }

    #[test]
    fn one_edited_character_of_an_id_is_refused_or_another_canonical_id(
        bytes in any::<[u8; 32]>(),
        at in 0usize..43,
        with in prop::sample::select(b"A_-+/=~9\x7f".to_vec()),
    ) {
        let mut text = BlobId(bytes).to_string().into_bytes();
        text[at] = with;
        let text = String::from_utf8(text).unwrap();
        if let Ok(id) = text.parse::<BlobId>() {
            prop_assert_eq!(id.to_string(), text);
        }
    }
}

/// Forged lengths kept as explicit cases: each must be refused before anything of that size is
/// reserved.
#[test]
fn forged_huge_lengths_allocate_nothing() {
    for declared in [1u64 << 60, u64::MAX, (1 << 31) - 1, 1 << 31, 1 << 40] {
        let mut sliver = uleb128(declared);
        sliver.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let body = Bytes::from(sliver.clone());
        let (result, largest) =
            largest_allocation(|| bcs::decode_sliver(&body, SliverKind::Primary));
        assert!(result.is_err(), "declared {declared}");
        assert!(largest <= 4096, "declared {declared}: {largest} bytes");

        let mut meta = vec![0u8, codec::RS2];
        meta.extend_from_slice(&7u64.to_le_bytes());
        meta.extend_from_slice(&uleb128(declared));
        meta.extend_from_slice(&[1; 66]);
        let (result, largest) = largest_allocation(|| bcs::decode_metadata(&meta));
        assert!(result.is_err(), "declared {declared}");
        assert!(largest <= allocation_bound(meta.len()), "{largest} bytes");
    }
}

/// The probe itself: a large allocation is seen, so the bounds above can fail.
#[test]
fn the_allocation_probe_sees_large_allocations() {
    let (v, largest) = largest_allocation(|| vec![0u8; 1 << 20]);
    assert_eq!(v.len(), 1 << 20);
    assert!(largest >= 1 << 20);
}
