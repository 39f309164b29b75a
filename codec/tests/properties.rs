//! Property tests: decoding from any sufficient subset of slivers returns the blob, and any
//! single flipped byte in a sliver or in metadata is rejected.

use bytes::Bytes;
use codec::{
    bcs, decode, encode, ConsistencyCheck, EncodedBlob, EncodingConfig, SliverKind,
    VerifiedMetadata, VerifiedSliver,
};
use proptest::prelude::*;

fn blob_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 1..8),
        prop::collection::vec(any::<u8>(), 8..5000),
    ]
}

/// Decode from the slivers of `kind` picked by `indices`, re-verifying each from its BCS form
/// as a reader that fetched them over the network would.
fn decode_subset(
    encoded: &EncodedBlob,
    kind: SliverKind,
    indices: &[usize],
    check: ConsistencyCheck,
) -> Vec<u8> {
    let meta = &encoded.metadata;
    let source = match kind {
        SliverKind::Primary => &encoded.primary,
        SliverKind::Secondary => &encoded.secondary,
    };
    let slivers: Vec<VerifiedSliver> = indices
        .iter()
        .map(|&i| {
            let wire = Bytes::from(bcs::encode_sliver(&source[i]));
            meta.verify_sliver(bcs::decode_sliver(&wire, kind).unwrap())
                .unwrap()
        })
        .collect();
    decode(meta, slivers, check).unwrap().to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_kp_primaries_or_ks_secondaries_decode(
        n in 4u16..=40,
        blob in blob_strategy(),
        seed in any::<u64>(),
        check in prop_oneof![Just(ConsistencyCheck::Default), Just(ConsistencyCheck::Strict), Just(ConsistencyCheck::Skip)],
    ) {
        let config = EncodingConfig::new(n).unwrap();
        let encoded = encode(&config, &blob).unwrap();
        let kp = usize::from(config.n_primary_source_symbols());
        let ks = usize::from(config.n_secondary_source_symbols());
        let primaries = pick(usize::from(n), kp, seed);
        prop_assert_eq!(decode_subset(&encoded, SliverKind::Primary, &primaries, check), blob.clone());
        let secondaries = pick(usize::from(n), ks, seed.rotate_left(17));
        prop_assert_eq!(decode_subset(&encoded, SliverKind::Secondary, &secondaries, check), blob);
    }

    #[test]
    fn a_flipped_sliver_byte_is_rejected(
        n in 4u16..=20,
        blob in blob_strategy(),
        which in any::<prop::sample::Index>(),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
        secondary in any::<bool>(),
    ) {
        let config = EncodingConfig::new(n).unwrap();
        let encoded = encode(&config, &blob).unwrap();
        let (kind, slivers) = if secondary {
            (SliverKind::Secondary, &encoded.secondary)
        } else {
            (SliverKind::Primary, &encoded.primary)
        };
        let sliver = which.get(slivers);
        let mut wire = bcs::encode_sliver(sliver);
        let at = position.index(wire.len());
        wire[at] ^= 1 << bit;
        // Rejected, unless the flip turned it into the genuine sliver of another index (in a
        // blob whose slivers repeat, such as the empty blob, a flipped index can do that).
        let accepted_wrongly = match bcs::decode_sliver(&Bytes::from(wire), kind) {
            Err(_) => false,
            Ok(parsed) => match encoded.metadata.verify_sliver(parsed) {
                Err(_) => false,
                Ok(v) => **slivers.get(usize::from(v.index)).unwrap() != *v,
            },
        };
        prop_assert!(!accepted_wrongly, "flipping bit {} of byte {} was accepted", bit, at);
    }

    #[test]
    fn a_flipped_metadata_byte_is_rejected(
        n in 4u16..=20,
        blob in blob_strategy(),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let config = EncodingConfig::new(n).unwrap();
        let meta = codec::compute_metadata(&config, &blob).unwrap();
        let mut wire = bcs::encode_metadata_with_id(&meta.blob_id(), meta.metadata());
        prop_assert!(VerifiedMetadata::from_bcs(meta.blob_id(), &wire, config).is_ok());
        let at = position.index(wire.len());
        wire[at] ^= 1 << bit;
        prop_assert!(VerifiedMetadata::from_bcs(meta.blob_id(), &wire, config).is_err());
    }

    #[test]
    fn bcs_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = bcs::decode_metadata(&bytes);
        let _ = bcs::decode_metadata_with_id(&bytes);
        let _ = bcs::decode_sliver(&Bytes::from(bytes), SliverKind::Primary);
    }
}

/// `count` distinct indices out of `0..n`, chosen by `seed`.
fn pick(n: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    let mut state = seed | 1;
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        all.swap(i, (state % (i as u64 + 1)) as usize);
    }
    all.truncate(count);
    all
}

#[test]
fn large_committees_decode_from_random_subsets() {
    for (n, len, seed) in [
        (100u16, 70_000usize, 1u64),
        (100, 1, 2),
        (1000, 300_000, 3),
        (1000, 0, 4),
    ] {
        let config = EncodingConfig::new(n).unwrap();
        let blob: Vec<u8> = (0..len)
            .map(|i| (i * 7 + 13) as u8 ^ (i >> 8) as u8)
            .collect();
        let encoded = encode(&config, &blob).unwrap();
        let kp = usize::from(config.n_primary_source_symbols());
        let ks = usize::from(config.n_secondary_source_symbols());
        let primaries = pick(usize::from(n), kp, seed);
        assert_eq!(
            decode_subset(
                &encoded,
                SliverKind::Primary,
                &primaries,
                ConsistencyCheck::Default
            ),
            blob,
            "n={n}"
        );
        let secondaries = pick(usize::from(n), ks, seed + 100);
        assert_eq!(
            decode_subset(
                &encoded,
                SliverKind::Secondary,
                &secondaries,
                ConsistencyCheck::Default
            ),
            blob,
            "n={n}"
        );
    }
}

#[test]
fn too_few_slivers_is_an_error_not_a_panic() {
    let config = EncodingConfig::new(10).unwrap();
    let encoded = encode(&config, b"hello walrus").unwrap();
    let three = encoded.primary[..3].to_vec();
    assert_eq!(
        decode(&encoded.metadata, three, ConsistencyCheck::Default),
        Err(codec::CodecError::NotEnoughSlivers { have: 3, need: 4 })
    );
}

#[test]
fn slivers_of_another_blob_are_refused() {
    let config = EncodingConfig::new(10).unwrap();
    let a = encode(&config, b"blob a").unwrap();
    let b = encode(&config, b"blob b").unwrap();
    assert!(matches!(
        decode(
            &a.metadata,
            b.primary[..4].to_vec(),
            ConsistencyCheck::Default
        ),
        Err(codec::CodecError::InconsistentBlob(_))
    ));
}

#[test]
fn default_check_catches_nonzero_padding_in_a_reconstructed_row() {
    // A malicious writer puts nonzero padding into the last systematic row and commits to it.
    // Readers that fetch that row directly get data (the known gap); a reader that reconstructs
    // it must fail the Default check, and Strict always fails.
    let config = EncodingConfig::new(10).unwrap();
    let blob = vec![7u8; 1000];
    let honest = encode(&config, &blob).unwrap();
    // Encode 1008 bytes (the padded matrix) with a nonzero last byte, then claim length 1000.
    let mut padded = blob.clone();
    padded.resize(1008, 0);
    padded[1007] = 1;
    let forged = encode(&config, &padded).unwrap();
    let mut metadata = forged.metadata.metadata().clone();
    metadata.unencoded_length = 1000;
    let id = metadata.compute_blob_id();
    let meta = VerifiedMetadata::verify(id, metadata, config).unwrap();
    assert_ne!(meta.blob_id(), honest.metadata.blob_id());
    let verified = |range: std::ops::Range<usize>| -> Vec<VerifiedSliver> {
        range
            .map(|i| {
                meta.verify_sliver(forged.primary[i].clone().into_inner())
                    .unwrap()
            })
            .collect()
    };
    // Systematic rows fetched: Default returns data, Strict refuses.
    assert_eq!(
        decode(&meta, verified(0..4), ConsistencyCheck::Default)
            .unwrap()
            .to_vec(),
        blob
    );
    assert!(decode(&meta, verified(0..4), ConsistencyCheck::Strict).is_err());
    // Row 3 reconstructed: Default refuses.
    assert!(matches!(
        decode(&meta, verified(4..8), ConsistencyCheck::Default),
        Err(codec::CodecError::InconsistentBlob(_))
    ));
}
