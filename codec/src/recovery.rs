//! Recovery symbols (SPEC §9 item 6, §10): one symbol of the expanded matrix with a Merkle proof,
//! as a storage node serves them on `GET /v1/blobs/{id}/recoverySymbols`, and the rebuilding of
//! a sliver from enough of them.
//!
//! Symbol `F[i][j]` sits where primary sliver `i` and secondary sliver `j` cross. Taken from
//! primary sliver `i` (expanded with the secondary code) it helps rebuild secondary sliver `j`,
//! and its proof is for leaf `j` of the tree whose root is `primary_hash[i]`; taken from
//! secondary sliver `j` (expanded with the primary code) it helps rebuild primary sliver `i`,
//! against `secondary_hash[n-1-j]` at leaf `i`. Any `k` verified symbols of one target (`kp` for
//! a secondary sliver, `ks` for a primary one) rebuild it, since the code is MDS.
//!
//! Wire format (walrus-core `GeneralRecoverySymbol`, BCS): the decoding symbol as the enum
//! `ByAxis` (variant `0` = `Primary`: a symbol that rebuilds a primary sliver, `1` =
//! `Secondary`: one that rebuilds a secondary sliver), its `index: u16` (the sliver it was taken
//! from) and `data` (ULEB128 length + bytes); then `target_index: u16`; then the proof
//! `{path: Vec<Node>}`, each `Node` `0x00` (`Empty`, the padding sibling) or `0x01 || 32 bytes`.
//!
//! Guarantees: decoding untrusted bytes is bounded (counts, lengths, path depth) and never
//! panics; a [`VerifiedRecoverySymbol`] exists only after its proof matched the metadata (as
//! walrus-core's `GeneralRecoverySymbol::verify`); a rebuilt sliver is returned only after it
//! verified against the metadata like any fetched sliver.

use crate::bcs::{put_uleb128, Reader};
use crate::blob_id::BlobId;
use crate::config::{EncodingConfig, MAX_SYMBOL_SIZE};
use crate::error::{BcsError, CodecError};
use crate::merkle::{self, MerkleProof, Node, EMPTY_NODE};
use crate::metadata::VerifiedMetadata;
use crate::sliver::{Sliver, SliverKind, VerifiedSliver};
use bytes::Bytes;
use reed_solomon_simd::ReedSolomonDecoder;

/// Deepest proof a decoder accepts: a tree over at most `u16::MAX` leaves is 16 levels deep.
const MAX_PATH_LEN: usize = 16;

/// Smallest encoded symbol: variant, index, empty data, target index, empty path.
const MIN_SYMBOL_BYTES: usize = 1 + 2 + 1 + 2 + 1;

/// One recovery symbol as received: untrusted until [`verify_symbol`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySymbol {
    /// The kind of sliver this symbol rebuilds (the `ByAxis` variant); it was taken from a
    /// sliver of the other kind.
    pub target_kind: SliverKind,
    /// The index of the sliver it was taken from.
    pub source_index: u16,
    /// `symbol_size` bytes.
    pub data: Bytes,
    /// The index of the sliver it rebuilds; also the proof's leaf index.
    pub target_index: u16,
    pub proof: MerkleProof,
}

impl RecoverySymbol {
    /// The symbol's `(primary sliver index, secondary sliver index)`: its `id=<p>-<s>` in a query.
    pub fn id(&self) -> (u16, u16) {
        match self.target_kind {
            SliverKind::Secondary => (self.source_index, self.target_index),
            SliverKind::Primary => (self.target_index, self.source_index),
        }
    }
}

/// A recovery symbol whose proof matched the metadata of `blob_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRecoverySymbol {
    symbol: RecoverySymbol,
    blob_id: BlobId,
}

impl VerifiedRecoverySymbol {
    pub fn blob_id(&self) -> BlobId {
        self.blob_id
    }
}

impl std::ops::Deref for VerifiedRecoverySymbol {
    type Target = RecoverySymbol;
    fn deref(&self) -> &RecoverySymbol {
        &self.symbol
    }
}

/// Why a recovery symbol cannot be used, or a sliver not rebuilt.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RecoveryError {
    #[error("symbol index {index} is out of range for {n_shards} shards")]
    IndexOutOfRange { index: u16, n_shards: u16 },
    #[error("symbol holds {got} bytes, the blob's symbol size is {expected}")]
    WrongSymbolSize { expected: u16, got: usize },
    #[error("symbol rebuilds {got_kind:?} sliver {got}, not {want_kind:?} sliver {want}")]
    WrongTarget {
        want_kind: SliverKind,
        want: u16,
        got_kind: SliverKind,
        got: u16,
    },
    #[error("proof has {got} levels, a tree of {n_shards} leaves has at most {max}")]
    ProofTooLong {
        got: usize,
        max: usize,
        n_shards: u16,
    },
    #[error("proof of symbol {primary}-{secondary} does not match the metadata")]
    ProofMismatch { primary: u16, secondary: u16 },
    #[error("symbol is for blob {got}, not {expected}")]
    WrongBlob { expected: BlobId, got: BlobId },
    #[error("need {need} symbols from distinct slivers, have {have}")]
    NotEnoughSymbols { have: usize, need: usize },
    #[error("the rebuilt sliver does not verify: {0}")]
    Rebuilt(CodecError),
}

fn put_node(out: &mut Vec<u8>, node: &Node) {
    // The tree's padding sibling is the `Empty` variant on the wire, as walrus-core sends it.
    if *node == EMPTY_NODE {
        out.push(0);
    } else {
        out.push(1);
        out.extend_from_slice(node);
    }
}

fn put_symbol(out: &mut Vec<u8>, symbol: &RecoverySymbol) {
    out.push(match symbol.target_kind {
        SliverKind::Primary => 0,
        SliverKind::Secondary => 1,
    });
    out.extend_from_slice(&symbol.source_index.to_le_bytes());
    put_uleb128(out, symbol.data.len() as u64);
    out.extend_from_slice(&symbol.data);
    out.extend_from_slice(&symbol.target_index.to_le_bytes());
    put_uleb128(out, symbol.proof.path.len() as u64);
    for node in &symbol.proof.path {
        put_node(out, node);
    }
}

/// BCS of `Vec<GeneralRecoverySymbol>`: a node's answer to `GET …/recoverySymbols`.
pub fn encode_symbols(symbols: &[RecoverySymbol]) -> Vec<u8> {
    let size: usize = symbols
        .iter()
        .map(|s| 8 + s.data.len() + 33 * s.proof.path.len())
        .sum();
    let mut out = Vec::with_capacity(size + 5);
    put_uleb128(&mut out, symbols.len() as u64);
    for symbol in symbols {
        put_symbol(&mut out, symbol);
    }
    out
}

fn read_node(r: &mut Reader<'_>) -> Result<Node, BcsError> {
    match r.uleb128()? {
        0 => Ok(EMPTY_NODE),
        1 => r.array::<32>(),
        variant => Err(BcsError::UnknownVariant {
            what: "Merkle node",
            variant,
        }),
    }
}

fn read_symbol(r: &mut Reader<'_>, bytes: &Bytes) -> Result<RecoverySymbol, BcsError> {
    let target_kind = match r.uleb128()? {
        0 => SliverKind::Primary,
        1 => SliverKind::Secondary,
        variant => {
            return Err(BcsError::UnknownVariant {
                what: "decoding symbol axis",
                variant,
            })
        }
    };
    let source_index = u16::from_le_bytes(r.array::<2>()?);
    let len = r.length(1, u64::from(MAX_SYMBOL_SIZE))?;
    let start = r.position();
    r.take(len)?;
    let data = bytes.slice(start..start + len);
    let target_index = u16::from_le_bytes(r.array::<2>()?);
    let depth = r.length(1, MAX_PATH_LEN as u64)?;
    let mut path = Vec::with_capacity(depth);
    for _ in 0..depth {
        path.push(read_node(r)?);
    }
    Ok(RecoverySymbol {
        target_kind,
        source_index,
        data,
        target_index,
        proof: MerkleProof { path },
    })
}

/// Decode BCS `Vec<GeneralRecoverySymbol>` from untrusted bytes, at most `max_count` symbols
/// (a node holds at most one per shard it owns); symbol data are zero-copy slices of `bytes`.
pub fn decode_symbols(bytes: &Bytes, max_count: usize) -> Result<Vec<RecoverySymbol>, BcsError> {
    let mut r = Reader::new(bytes);
    let count = r.length(MIN_SYMBOL_BYTES, max_count as u64)?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(read_symbol(&mut r, bytes)?);
    }
    r.finish()?;
    Ok(out)
}

/// Levels of a Walrus Merkle tree over `leaves` leaves (walrus-core `merkle::path_length`).
fn path_length(leaves: usize) -> usize {
    if leaves <= 1 {
        0
    } else {
        (leaves - 1).ilog2() as usize + 1
    }
}

/// The recovery symbols for `targets` (sliver indices of the other kind) taken from `source`,
/// a sliver this node holds, with proofs: what a node answers (walrus-service
/// `RecoverySymbolService`). `source` is trusted (the node's own, verified when stored).
pub fn symbols_from(
    config: &EncodingConfig,
    source: &Sliver,
    targets: &[u16],
) -> Result<Vec<RecoverySymbol>, CodecError> {
    let ss = usize::from(source.symbol_size);
    let n = usize::from(config.n_shards());
    let mut full = Vec::with_capacity(n * ss);
    full.extend_from_slice(&source.data);
    crate::rs::expand_into(
        config,
        source.kind.expanding_axis(),
        &source.data,
        ss,
        &mut full,
    )?;
    let mut leaves = vec![EMPTY_NODE; n];
    merkle::leaf_hashes(&full, ss, &mut leaves);
    let target_kind = match source.kind {
        SliverKind::Primary => SliverKind::Secondary,
        SliverKind::Secondary => SliverKind::Primary,
    };
    let full = Bytes::from(full);
    targets
        .iter()
        .map(|&t| {
            let at = usize::from(t);
            let proof = MerkleProof::new(&leaves, at).ok_or(
                crate::error::SliverError::IndexOutOfRange {
                    index: t,
                    n_shards: config.n_shards(),
                },
            )?;
            Ok(RecoverySymbol {
                target_kind,
                source_index: source.index,
                data: full.slice(at * ss..(at + 1) * ss),
                target_index: t,
                proof,
            })
        })
        .collect()
}

/// Check `symbol` against `meta` as walrus-core's `GeneralRecoverySymbol::verify` does, and that
/// it rebuilds sliver `target_index` of kind `target_kind`: indices in range, the blob's symbol
/// size, a proof no deeper than the tree, and the proof's root equal to the source sliver's
/// hash in the metadata.
pub fn verify_symbol(
    meta: &VerifiedMetadata,
    symbol: RecoverySymbol,
    target_kind: SliverKind,
    target_index: u16,
) -> Result<VerifiedRecoverySymbol, RecoveryError> {
    let n = meta.config().n_shards();
    for index in [symbol.source_index, symbol.target_index] {
        if index >= n {
            return Err(RecoveryError::IndexOutOfRange { index, n_shards: n });
        }
    }
    let ss = meta.symbol_size();
    if symbol.data.len() != usize::from(ss) {
        return Err(RecoveryError::WrongSymbolSize {
            expected: ss,
            got: symbol.data.len(),
        });
    }
    if symbol.target_kind != target_kind || symbol.target_index != target_index {
        return Err(RecoveryError::WrongTarget {
            want_kind: target_kind,
            want: target_index,
            got_kind: symbol.target_kind,
            got: symbol.target_index,
        });
    }
    let max = path_length(usize::from(n));
    if symbol.proof.path.len() > max {
        return Err(RecoveryError::ProofTooLong {
            got: symbol.proof.path.len(),
            max,
            n_shards: n,
        });
    }
    let source_kind = match target_kind {
        SliverKind::Primary => SliverKind::Secondary,
        SliverKind::Secondary => SliverKind::Primary,
    };
    let (_, root) = meta.expected_hash(source_kind, symbol.source_index);
    let leaf = merkle::leaf_hash(&symbol.data);
    if !symbol
        .proof
        .verify(&root, &leaf, usize::from(symbol.target_index))
    {
        let (primary, secondary) = symbol.id();
        return Err(RecoveryError::ProofMismatch { primary, secondary });
    }
    Ok(VerifiedRecoverySymbol {
        symbol,
        blob_id: meta.blob_id(),
    })
}

/// Rebuild sliver `target_index` of kind `target_kind` from verified symbols (the first `k` from
/// distinct source slivers are used: `kp` for a secondary sliver, `ks` for a primary one), then
/// verify it against the metadata like any fetched sliver.
pub fn rebuild_sliver(
    meta: &VerifiedMetadata,
    target_kind: SliverKind,
    target_index: u16,
    symbols: &[VerifiedRecoverySymbol],
) -> Result<VerifiedSliver, RecoveryError> {
    let config = meta.config();
    let n = usize::from(config.n_shards());
    let (k, r) = config.code(target_kind.expanding_axis());
    let ss = usize::from(meta.symbol_size());
    let mut chosen: Vec<Option<&[u8]>> = vec![None; n];
    let mut have = 0;
    for s in symbols {
        if s.blob_id != meta.blob_id() {
            return Err(RecoveryError::WrongBlob {
                expected: meta.blob_id(),
                got: s.blob_id,
            });
        }
        if s.target_kind != target_kind || s.target_index != target_index {
            return Err(RecoveryError::WrongTarget {
                want_kind: target_kind,
                want: target_index,
                got_kind: s.target_kind,
                got: s.target_index,
            });
        }
        let slot = &mut chosen[usize::from(s.source_index)];
        if slot.is_none() && have < k {
            *slot = Some(&s.data);
            have += 1;
        }
    }
    if have < k {
        return Err(RecoveryError::NotEnoughSymbols { have, need: k });
    }
    let mut data = vec![0u8; k * ss];
    if chosen[..k].iter().all(Option::is_some) {
        // All source symbols at hand: nothing to decode.
        for (i, s) in chosen[..k].iter().enumerate() {
            data[i * ss..(i + 1) * ss].copy_from_slice(s.expect("checked above"));
        }
    } else {
        let rs = |e: reed_solomon_simd::Error| {
            RecoveryError::Rebuilt(CodecError::ReedSolomon(e.to_string()))
        };
        let mut decoder = ReedSolomonDecoder::new(k, r, ss).map_err(rs)?;
        for (i, s) in chosen.iter().enumerate() {
            let Some(s) = s else { continue };
            if i < k {
                decoder.add_original_shard(i, s).map_err(rs)?;
            } else {
                decoder.add_recovery_shard(i - k, s).map_err(rs)?;
            }
        }
        let result = decoder.decode().map_err(rs)?;
        for (i, s) in chosen[..k].iter().enumerate() {
            let symbol = match s {
                Some(s) => *s,
                None => result.restored_original(i).ok_or_else(|| {
                    RecoveryError::Rebuilt(CodecError::ReedSolomon(format!(
                        "source symbol {i} was not restored"
                    )))
                })?,
            };
            data[i * ss..(i + 1) * ss].copy_from_slice(symbol);
        }
    }
    meta.verify_sliver(Sliver {
        kind: target_kind,
        index: target_index,
        symbol_size: meta.symbol_size(),
        data: Bytes::from(data),
    })
    .map_err(RecoveryError::Rebuilt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::encode;
    use proptest::prelude::*;

    fn blob(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Every symbol that rebuilds secondary sliver `column`, from every primary sliver.
    fn column_symbols(
        config: &EncodingConfig,
        encoded: &crate::encode::EncodedBlob,
        column: u16,
    ) -> Vec<RecoverySymbol> {
        (0..config.n_shards())
            .map(|p| {
                symbols_from(config, &encoded.primary[usize::from(p)], &[column])
                    .unwrap()
                    .remove(0)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// Any `kp` verified symbols of a column rebuild exactly the encoder's secondary sliver.
        #[test]
        fn random_symbol_subsets_rebuild_every_column(
            n in prop::sample::select(vec![4u16, 7, 10, 13]),
            len in 0usize..3000,
            seed in any::<u64>(),
        ) {
            let config = EncodingConfig::new(n).unwrap();
            let data = blob(len, seed);
            let encoded = encode(&config, &data).unwrap();
            let meta = &encoded.metadata;
            let kp = usize::from(config.n_primary_source_symbols());
            for column in 0..n {
                let mut symbols = column_symbols(&config, &encoded, column);
                // A seeded shuffle: a different subset per column.
                let mut x = seed ^ u64::from(column) ^ 0x5555;
                for i in (1..symbols.len()).rev() {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    symbols.swap(i, (x >> 33) as usize % (i + 1));
                }
                let verified: Vec<_> = symbols
                    .into_iter()
                    .take(kp)
                    .map(|s| verify_symbol(meta, s, SliverKind::Secondary, column).unwrap())
                    .collect();
                let rebuilt = rebuild_sliver(meta, SliverKind::Secondary, column, &verified).unwrap();
                let pair = SliverKind::Secondary.pair_index(column, n);
                let (_, expected) = encoded.pair(pair).unwrap();
                prop_assert_eq!(&rebuilt.data, &expected.data);
                prop_assert_eq!(rebuilt.index, column);
            }
        }
    }

    #[test]
    fn primary_slivers_rebuild_from_secondary_symbols() {
        let config = EncodingConfig::new(10).unwrap();
        let encoded = encode(&config, &blob(1000, 3)).unwrap();
        let ks = usize::from(config.n_secondary_source_symbols());
        for row in 0..10u16 {
            let symbols: Vec<_> = (0..10u16)
                .rev()
                .take(ks)
                .map(|pair| {
                    let (_, secondary) = encoded.pair(pair).unwrap();
                    let s = symbols_from(&config, secondary, &[row]).unwrap().remove(0);
                    verify_symbol(&encoded.metadata, s, SliverKind::Primary, row).unwrap()
                })
                .collect();
            let rebuilt =
                rebuild_sliver(&encoded.metadata, SliverKind::Primary, row, &symbols).unwrap();
            assert_eq!(rebuilt.data, encoded.pair(row).unwrap().0.data);
        }
    }

    #[test]
    fn wire_format_round_trips_and_is_bounded() {
        let config = EncodingConfig::new(10).unwrap();
        let encoded = encode(&config, &blob(1000, 9)).unwrap();
        let symbols = column_symbols(&config, &encoded, 3);
        let bytes = Bytes::from(encode_symbols(&symbols));
        assert_eq!(decode_symbols(&bytes, 10).unwrap(), symbols);
        // Layout of the first: variant 1 (Secondary), source index 0, 36 data bytes, target 3,
        // then a 4-level path (10 leaves).
        assert_eq!(&bytes[..5], &[10, 1, 0, 0, 36]);
        assert_eq!(&bytes[5 + 36..5 + 36 + 3], &[3, 0, 4]);
        // Leaf 8 of 10 has padding siblings: they go out as the Empty node.
        let padded = symbols_from(&config, &encoded.primary[0], &[8]).unwrap();
        assert!(padded[0].proof.path.contains(&EMPTY_NODE));
        let wire = encode_symbols(&padded);
        assert_eq!(
            decode_symbols(&Bytes::from(wire.clone()), 1).unwrap(),
            padded
        );
        assert!(wire.len() < 1 + 6 + 36 + 1 + 4 * 33);

        assert!(matches!(
            decode_symbols(&bytes, 9),
            Err(BcsError::LengthTooLarge { .. })
        ));
        for cut in [0, 1, 5, bytes.len() - 1] {
            assert!(decode_symbols(&bytes.slice(..cut), 10).is_err());
        }
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        assert!(decode_symbols(&Bytes::from(trailing), 10).is_err());
        // A claimed count or symbol length far beyond the body allocates nothing.
        let forged = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x07, 1, 0, 0]);
        assert!(decode_symbols(&forged, usize::MAX).is_err());
        let forged = Bytes::from_static(&[1, 1, 0, 0, 0xff, 0xff, 0x03, 9]);
        assert!(decode_symbols(&forged, 1).is_err());
        // An unknown axis or node variant.
        let mut bad = bytes.to_vec();
        bad[1] = 2;
        assert!(decode_symbols(&Bytes::from(bad), 10).is_err());
    }

    #[test]
    fn tampered_symbols_and_proofs_are_rejected() {
        let config = EncodingConfig::new(10).unwrap();
        let encoded = encode(&config, &blob(1000, 5)).unwrap();
        let meta = &encoded.metadata;
        let good = column_symbols(&config, &encoded, 2).remove(4);
        verify_symbol(meta, good.clone(), SliverKind::Secondary, 2).unwrap();

        let mut data = good.data.to_vec();
        data[7] ^= 1;
        let flipped = RecoverySymbol {
            data: Bytes::from(data),
            ..good.clone()
        };
        assert!(matches!(
            verify_symbol(meta, flipped, SliverKind::Secondary, 2),
            Err(RecoveryError::ProofMismatch {
                primary: 4,
                secondary: 2
            })
        ));
        let mut proof = good.clone();
        proof.proof.path[1][0] ^= 1;
        assert!(verify_symbol(meta, proof, SliverKind::Secondary, 2).is_err());
        let mut deep = good.clone();
        deep.proof.path.push([7u8; 32]);
        assert!(matches!(
            verify_symbol(meta, deep, SliverKind::Secondary, 2),
            Err(RecoveryError::ProofTooLong { .. })
        ));
        // Claimed from another primary sliver, or for another column.
        let moved = RecoverySymbol {
            source_index: 5,
            ..good.clone()
        };
        assert!(verify_symbol(meta, moved, SliverKind::Secondary, 2).is_err());
        assert!(matches!(
            verify_symbol(meta, good.clone(), SliverKind::Secondary, 3),
            Err(RecoveryError::WrongTarget { .. })
        ));
        let short = RecoverySymbol {
            data: good.data.slice(..10),
            ..good.clone()
        };
        assert!(matches!(
            verify_symbol(meta, short, SliverKind::Secondary, 2),
            Err(RecoveryError::WrongSymbolSize { .. })
        ));
        let far = RecoverySymbol {
            source_index: 10,
            ..good.clone()
        };
        assert!(matches!(
            verify_symbol(meta, far, SliverKind::Secondary, 2),
            Err(RecoveryError::IndexOutOfRange { .. })
        ));

        // Too few, or repeated sources, do not rebuild.
        let kp = usize::from(config.n_primary_source_symbols());
        let verified: Vec<_> = column_symbols(&config, &encoded, 2)
            .into_iter()
            .map(|s| verify_symbol(meta, s, SliverKind::Secondary, 2).unwrap())
            .collect();
        let mut repeated = verified[..kp - 1].to_vec();
        repeated.push(verified[0].clone());
        assert!(matches!(
            rebuild_sliver(meta, SliverKind::Secondary, 2, &repeated),
            Err(RecoveryError::NotEnoughSymbols { .. })
        ));
        assert!(rebuild_sliver(meta, SliverKind::Secondary, 3, &verified).is_err());
    }
}
