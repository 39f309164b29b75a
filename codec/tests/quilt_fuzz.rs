//! Property and fuzz-style tests of the quilt codec (`codec::quilt`), in the style of
//! `fuzz_codec.rs`: random patches round-trip through the encoder and both decoders (whole
//! quilt, and only the columns a patch needs); mutated quilts, indexes and patch IDs (flipped
//! bytes, forged lengths) never panic and never allocate beyond a small multiple of the input;
//! whatever index the decoder accepts encodes back to the same bytes (BCS is canonical).

use bytes::Bytes;
use codec::quilt::{
    decode_index, decode_patch, encode_quilt, ColumnSet, ColumnSource, PatchInput, QuiltError,
    QuiltIndex, QuiltPatchId, QuiltView,
};
use codec::{BlobId, EncodingConfig};
use fuzzkit::{largest_allocation, mutated, Edits, Mutation};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[global_allocator]
static ALLOCATOR: fuzzkit::AllocationProbe = fuzzkit::AllocationProbe;

fn allocation_bound(n: usize) -> usize {
    4 * n + 4096
}

fn mutation() -> impl Strategy<Value = Mutation> {
    Edits {
        huge_lengths: &[1 << 60, u64::MAX, (1 << 31) - 1, 1 << 32, 65_536],
        ..Edits::default()
    }
    .strategy()
}

/// Identifiers Walrus accepts: printable, no trailing whitespace.
fn identifier() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.\\-é日 ]{0,40}[a-zA-Z0-9é日]"
}

type Patch = (String, BTreeMap<String, String>, Vec<u8>);

fn patches(max: usize) -> impl Strategy<Value = Vec<Patch>> {
    prop::collection::btree_map(
        identifier(),
        (
            prop::collection::btree_map("[a-z]{0,6}", "[a-zé]{0,6}", 0..4),
            prop::collection::vec(any::<u8>(), 0..600),
        ),
        1..=max,
    )
    .prop_map(|m| m.into_iter().map(|(id, (t, d))| (id, t, d)).collect())
}

fn inputs(patches: &[Patch]) -> Vec<PatchInput<'_>> {
    patches
        .iter()
        .map(|(identifier, tags, data)| PatchInput {
            identifier: identifier.clone(),
            tags: tags.clone(),
            data,
        })
        .collect()
}

/// The columns of a whole quilt, as verified secondary slivers would give them.
fn columns(config: &EncodingConfig, view: &QuiltView<'_>, keep: impl Fn(u16) -> bool) -> ColumnSet {
    let mut set = ColumnSet::new(config);
    for c in 0..view.n_columns() as u16 {
        if keep(c) {
            let mut col = Vec::new();
            view.append(usize::from(c), 0, view.column_size(), &mut col);
            set.insert(c, Bytes::from(col)).unwrap();
        }
    }
    set
}

/// Decode everything decodable from `quilt`; must not panic or over-allocate.
fn decode_all(config: &EncodingConfig, quilt: &[u8]) -> Result<(), TestCaseError> {
    let Ok(view) = QuiltView::new(config, quilt) else {
        return Ok(());
    };
    let (index, largest) = largest_allocation(|| decode_index(&view));
    prop_assert!(largest <= allocation_bound(quilt.len()), "{largest} bytes");
    if let Ok(index) = index {
        prop_assert_eq!(
            QuiltIndex::from_bcs(&index.to_bcs().unwrap(), 0).map(|i| i.patches.len()),
            Ok(index.patches.len())
        );
    }
    for col in 0..view.n_columns() + 2 {
        let (patch, largest) = largest_allocation(|| decode_patch(&view, col));
        prop_assert!(largest <= allocation_bound(quilt.len()), "{largest} bytes");
        drop(patch);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn patches_round_trip_whole_and_by_columns(patches in patches(6)) {
        let config = EncodingConfig::new(10).unwrap();
        let inputs = inputs(&patches);
        let quilt = encode_quilt(&config, &inputs).unwrap();
        let view = QuiltView::new(&config, &quilt.data).unwrap();
        let index = decode_index(&view).unwrap();
        prop_assert_eq!(&index, &quilt.index);
        let id = BlobId([3; 32]);
        for p in &index.patches {
            let want = patches.iter().find(|q| q.0 == p.identifier).unwrap();
            let got = decode_patch(&view, usize::from(p.start_index)).unwrap();
            prop_assert_eq!(&got.tags, &want.1);
            prop_assert_eq!(&got.data, &want.2);
            // Only the index columns and the patch's own: the same patch.
            let index_cols = index.patches[0].start_index;
            let set = columns(&config, &view, |c| c < index_cols || p.columns().contains(&c));
            prop_assert_eq!(&decode_index(&set).unwrap(), &index);
            prop_assert_eq!(decode_patch(&set, usize::from(p.start_index)).unwrap(), got);
            // Without its last column, the patch is refused, naming what is missing.
            let short = columns(&config, &view, |c| c + 1 != p.end_index);
            if !p.columns().is_empty() && (p.end_index - p.start_index > 1 || !want.2.is_empty()) {
                prop_assert!(matches!(
                    decode_patch(&short, usize::from(p.start_index)),
                    Err(QuiltError::MissingColumns(_))
                ));
            }
            let pid = p.patch_id(id);
            prop_assert_eq!(pid.to_string().parse::<QuiltPatchId>(), Ok(pid));
        }
    }

    #[test]
    fn mutated_quilts_never_panic_or_overallocate(
        patches in patches(4),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let config = EncodingConfig::new(10).unwrap();
        let quilt = encode_quilt(&config, &inputs(&patches)).unwrap();
        let len = quilt.data.len();
        let mut bytes = mutated(quilt.data, &mutations);
        // Keep the length a quilt's, so the edits reach the index and patch decoders.
        bytes.resize(len, 0);
        decode_all(&config, &bytes)?;
    }

    #[test]
    fn mutated_indexes_are_refused_or_canonical(
        patches in patches(6),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let config = EncodingConfig::new(10).unwrap();
        let quilt = encode_quilt(&config, &inputs(&patches)).unwrap();
        let bytes = mutated(quilt.index.to_bcs().unwrap(), &mutations);
        let (index, largest) = largest_allocation(|| QuiltIndex::from_bcs(&bytes, 1));
        prop_assert!(largest <= allocation_bound(bytes.len()), "{largest} bytes");
        if let Ok(index) = index {
            prop_assert_eq!(index.to_bcs().unwrap(), bytes);
        }
    }

    #[test]
    fn random_bytes_and_ids_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), text in "[A-Za-z0-9_=+/-]{0,80}") {
        let config = EncodingConfig::new(4).unwrap();
        let (_, largest) = largest_allocation(|| QuiltIndex::from_bcs(&bytes, 0));
        prop_assert!(largest <= allocation_bound(bytes.len()), "{largest} bytes");
        decode_all(&config, &bytes)?;
        if let Ok(id) = text.parse::<QuiltPatchId>() {
            prop_assert_eq!(id.to_string(), text);
        }
    }
}

#[test]
fn a_forged_index_length_allocates_nothing_large() {
    let config = EncodingConfig::new(10).unwrap();
    let data = b"x".to_vec();
    let quilt = encode_quilt(
        &config,
        &[PatchInput {
            identifier: "a".into(),
            tags: BTreeMap::new(),
            data: &data,
        }],
    )
    .unwrap();
    let mut bytes = quilt.data.clone();
    // The index length sits in column 0, bytes 1..5 of the column: the first symbol's.
    bytes[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
    let view = QuiltView::new(&config, &bytes).unwrap();
    let (index, largest) = largest_allocation(|| decode_index(&view));
    assert!(matches!(index, Err(QuiltError::Malformed(_))), "{index:?}");
    assert!(largest < 4096, "{largest}");
}
