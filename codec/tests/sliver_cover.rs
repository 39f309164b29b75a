//! The suffix-cover check (`merkle::verify_sliver_with_cover`) against the full expansion: for
//! many committee sizes and blob lengths, every sliver (systematic rows, the last partial row,
//! all-zero padding rows, recovery rows, and secondary slivers) passes with its own cover and
//! fails with a changed byte or any changed, missing or extra cover node.

use bytes::Bytes;
use codec::merkle::{
    leaf_hash, root_from_leaf_hashes, root_from_prefix_and_cover, suffix_cover, suffix_cover_len,
    verify_sliver_and_cover, verify_sliver_with_cover, Node,
};
use codec::{encode, EncodingConfig, Sliver, SliverKind};

#[test]
fn cover_and_prefix_give_the_root_for_every_shape() {
    for count in 0usize..=70 {
        let leaves: Vec<Node> = (0..count)
            .map(|i| leaf_hash(&(i as u64 * 31 + 7).to_le_bytes()))
            .collect();
        let root = root_from_leaf_hashes(&leaves);
        for start in 0..=count {
            let cover = suffix_cover(&leaves, start).unwrap();
            assert_eq!(Some(cover.len()), suffix_cover_len(count, start));
            assert!(
                cover.len() <= (usize::BITS - count.leading_zeros()) as usize + 1,
                "at most one node per level"
            );
            assert_eq!(
                root_from_prefix_and_cover(&leaves[..start], count, &cover),
                Some(root),
                "count {count}, start {start}"
            );
            // A changed node, a missing one or an extra one never gives the root.
            for i in 0..cover.len() {
                let mut forged = cover.clone();
                forged[i][i % 32] ^= 1;
                assert_ne!(
                    root_from_prefix_and_cover(&leaves[..start], count, &forged),
                    Some(root)
                );
            }
            if !cover.is_empty() {
                let short = &cover[..cover.len() - 1];
                assert_eq!(
                    root_from_prefix_and_cover(&leaves[..start], count, short),
                    None
                );
            }
            let mut long = cover.clone();
            long.push([9; 32]);
            assert_eq!(
                root_from_prefix_and_cover(&leaves[..start], count, &long),
                None
            );
            // A changed prefix leaf never gives the root.
            if start > 0 {
                let mut prefix = leaves[..start].to_vec();
                prefix[start / 2][0] ^= 0x80;
                assert_ne!(
                    root_from_prefix_and_cover(&prefix, count, &cover),
                    Some(root)
                );
            }
        }
        assert_eq!(suffix_cover(&leaves, count + 1), None);
        assert_eq!(suffix_cover_len(count, count + 1), None);
    }
}

/// The rows the disk tier stores for a blob: `row_len` bytes each, the last one zero-padded,
/// rows past the blob's end all zeros.
fn row_of(blob: &[u8], row_len: usize, row: usize) -> Vec<u8> {
    let mut out = vec![0u8; row_len];
    let start = (row * row_len).min(blob.len());
    let end = ((row + 1) * row_len).min(blob.len());
    out[..end - start].copy_from_slice(&blob[start..end]);
    out
}

fn check_blob(n: u16, len: usize) {
    let config = EncodingConfig::new(n).unwrap();
    let blob: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let encoded = encode(&config, &blob).unwrap();
    let meta = &encoded.metadata;
    let ss = meta.symbol_size();
    let row_len = config.row_len(ss) as usize;
    let kp = usize::from(config.n_primary_source_symbols());
    let mut covers = Vec::new();
    for (i, verified) in encoded.primary.iter().enumerate() {
        let sliver: Sliver = verified.clone().into_inner();
        if i < kp {
            // Systematic rows are the blob's bytes as the disk tier lays them out.
            assert_eq!(
                sliver.data.as_ref(),
                &row_of(&blob, row_len, i)[..],
                "n {n}, len {len}, row {i}"
            );
        }
        let cover = verify_sliver_and_cover(meta, &sliver).unwrap();
        let k = usize::from(config.n_secondary_source_symbols());
        assert_eq!(Some(cover.len()), suffix_cover_len(usize::from(n), k));
        verify_sliver_with_cover(meta, &sliver, &cover)
            .unwrap_or_else(|e| panic!("n {n}, len {len}, row {i}: {e}"));
        // A flipped byte anywhere in the row fails, at the start, middle and end.
        for at in [0, sliver.data.len() / 2, sliver.data.len() - 1] {
            let mut data = sliver.data.to_vec();
            data[at] ^= 0x01;
            let changed = Sliver {
                data: Bytes::from(data),
                ..sliver.clone()
            };
            assert!(verify_sliver_with_cover(meta, &changed, &cover).is_err());
            assert!(verify_sliver_and_cover(meta, &changed).is_err());
        }
        // Every forged cover node fails, as does a cover with a node missing or added.
        for j in 0..cover.len() {
            let mut forged = cover.clone();
            forged[j][31] ^= 0x40;
            assert!(verify_sliver_with_cover(meta, &sliver, &forged).is_err());
        }
        assert!(verify_sliver_with_cover(meta, &sliver, &cover[1..]).is_err());
        let mut long = cover.clone();
        long.push(cover[0]);
        assert!(verify_sliver_with_cover(meta, &sliver, &long).is_err());
        covers.push((sliver, cover));
    }
    // Another row's cover fails, unless it is the same nodes (rows whose recovery symbols are
    // equal: zero padding rows, or with one recovery symbol two rows of equal parity).
    for (i, (sliver, own)) in covers.iter().enumerate() {
        let (other, cover) = &covers[(i + 1) % covers.len()];
        if cover != own {
            assert!(
                verify_sliver_with_cover(meta, sliver, cover).is_err(),
                "n {n}, len {len}, row {i}: {:?} / {:?}",
                sliver.data,
                other.data
            );
        }
    }
    // Secondary slivers take the same check.
    for verified in encoded.secondary.iter().take(3) {
        let sliver = verified.clone().into_inner();
        let cover = verify_sliver_and_cover(meta, &sliver).unwrap();
        verify_sliver_with_cover(meta, &sliver, &cover).unwrap();
        assert_eq!(sliver.kind, SliverKind::Secondary);
    }
}

#[test]
fn the_cover_check_matches_the_full_check_for_every_row() {
    for n in [4u16, 5, 7, 10, 13, 31, 64, 100] {
        let config = EncodingConfig::new(n).unwrap();
        let kp = u64::from(config.n_primary_source_symbols());
        let ks = u64::from(config.n_secondary_source_symbols());
        let source = (kp * ks) as usize;
        // Empty, tiny, one row and either side of it, a partial last row, full blobs at one and
        // two bytes per symbol, and lengths that leave all-zero padding rows.
        let mut lens = vec![
            0,
            1,
            3,
            2 * ks as usize - 1,
            2 * ks as usize,
            2 * ks as usize + 1,
        ];
        lens.extend([
            source,
            source + 1,
            2 * source,
            3 * source - 5,
            5 * source + 17,
        ]);
        for len in lens {
            check_blob(n, len);
        }
    }
}

#[test]
fn a_large_committee_checks_every_row() {
    check_blob(300, 150_001);
}

#[test]
fn shape_errors_are_reported_not_panicked() {
    let config = EncodingConfig::new(10).unwrap();
    let encoded = encode(&config, b"hello").unwrap();
    let meta = &encoded.metadata;
    let good = encoded.primary[0].clone().into_inner();
    let cover = verify_sliver_and_cover(meta, &good).unwrap();
    for bad in [
        Sliver {
            index: 10,
            ..good.clone()
        },
        Sliver {
            symbol_size: good.symbol_size + 2,
            ..good.clone()
        },
        Sliver {
            data: good.data.slice(1..),
            ..good.clone()
        },
    ] {
        assert!(verify_sliver_and_cover(meta, &bad).is_err());
        assert!(verify_sliver_with_cover(meta, &bad, &cover).is_err());
    }
}
