//! The two Reed-Solomon codes of RS2 on top of `reed-solomon-simd` 3.x (SPEC §3).
//!
//! Two ways in:
//! * per symbol sequence (`expand`): the shards are the symbols themselves, as Walrus does it;
//! * batched (`expand_wide`, `decode_wide`): many columns that use the same code go through one
//!   call. The crate maps bytes to GF(2^16) elements per 64-byte block (byte i pairs with byte
//!   32+i; a shorter tail of t bytes pairs byte i with byte t/2+i), so concatenating symbols whose
//!   size is not a multiple of 64 would pair the wrong bytes. We therefore re-lay each shard out
//!   element by element ("wide layout"): element j of the sequence keeps its own (low, high) byte
//!   pair. The code acts on each element position independently, so the result, laid back out,
//!   is exactly what per-symbol calls give (checked against the vectors and by a unit test).
//!   Wide shards are processed in fixed stripes, in parallel.

use crate::config::{Axis, EncodingConfig};
use crate::error::CodecError;
use rayon::prelude::*;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use std::cell::RefCell;

/// Bytes per shard per batched call: big enough to amortize the call, small enough for cache.
const STRIPE_BYTES: usize = 4096;

thread_local! {
    static ENCODER: RefCell<Option<ReedSolomonEncoder>> = const { RefCell::new(None) };
    static DECODER: RefCell<Option<ReedSolomonDecoder>> = const { RefCell::new(None) };
}

fn rs_err(e: reed_solomon_simd::Error) -> CodecError {
    CodecError::ReedSolomon(e.to_string())
}

/// Run `f` with this thread's encoder reset to `(k, r, shard_bytes)`.
fn with_encoder<T>(
    k: usize,
    r: usize,
    shard_bytes: usize,
    f: impl FnOnce(&mut ReedSolomonEncoder) -> Result<T, CodecError>,
) -> Result<T, CodecError> {
    ENCODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot.as_mut() {
            Some(enc) => enc.reset(k, r, shard_bytes).map_err(rs_err)?,
            None => *slot = Some(ReedSolomonEncoder::new(k, r, shard_bytes).map_err(rs_err)?),
        }
        f(slot.as_mut().expect("encoder was just set"))
    })
}

fn with_decoder<T>(
    k: usize,
    r: usize,
    shard_bytes: usize,
    f: impl FnOnce(&mut ReedSolomonDecoder) -> Result<T, CodecError>,
) -> Result<T, CodecError> {
    DECODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot.as_mut() {
            Some(dec) => dec.reset(k, r, shard_bytes).map_err(rs_err)?,
            None => *slot = Some(ReedSolomonDecoder::new(k, r, shard_bytes).map_err(rs_err)?),
        }
        f(slot.as_mut().expect("decoder was just set"))
    })
}

/// Expand `k` consecutive symbols of `symbol_size` bytes with the code of `axis`, appending the
/// recovery symbols to `out` (so `out` gets `r * symbol_size` more bytes).
pub(crate) fn expand_into(
    config: &EncodingConfig,
    axis: Axis,
    symbols: &[u8],
    symbol_size: usize,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let (k, r) = config.code(axis);
    debug_assert_eq!(symbols.len(), k * symbol_size);
    with_encoder(k, r, symbol_size, |enc| {
        for symbol in symbols.chunks_exact(symbol_size) {
            enc.add_original_shard(symbol).map_err(rs_err)?;
        }
        let result = enc.encode().map_err(rs_err)?;
        for recovery in result.recovery_iter() {
            out.extend_from_slice(recovery);
        }
        Ok(())
    })
}

/// Runs of element positions in a shard of `size` bytes, in element order:
/// `(offset of the low bytes, offset of the high bytes, element count)`.
fn element_runs(size: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let blocks = size / 64;
    let tail = size % 64;
    (0..blocks)
        .map(|b| (64 * b, 64 * b + 32, 32))
        .chain((tail > 0).then_some((64 * blocks, 64 * blocks + tail / 2, tail / 2)))
}

/// Copy elements from one layout to another: both run lists enumerate the same element order.
fn transcode(
    src: &[u8],
    src_runs: impl Iterator<Item = (usize, usize, usize)>,
    dst: &mut [u8],
    mut dst_runs: impl Iterator<Item = (usize, usize, usize)>,
) {
    let (mut dlo, mut dhi, mut dlen) = (0, 0, 0);
    for (slo, shi, slen) in src_runs {
        let mut done = 0;
        while done < slen {
            if dlen == 0 {
                (dlo, dhi, dlen) = dst_runs
                    .next()
                    .expect("layouts hold the same number of elements");
            }
            let k = (slen - done).min(dlen);
            dst[dlo..dlo + k].copy_from_slice(&src[slo + done..slo + done + k]);
            dst[dhi..dhi + k].copy_from_slice(&src[shi + done..shi + done + k]);
            dlo += k;
            dhi += k;
            dlen -= k;
            done += k;
        }
    }
}

fn symbol_runs(len: usize, symbol_size: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..len / symbol_size).flat_map(move |c| {
        element_runs(symbol_size)
            .map(move |(l, h, n)| (l + c * symbol_size, h + c * symbol_size, n))
    })
}

/// Symbols (each in the crate's per-symbol layout) → one wide shard.
pub(crate) fn to_wide(symbols: &[u8], symbol_size: usize) -> Vec<u8> {
    let mut wide = vec![0u8; symbols.len()];
    transcode(
        symbols,
        symbol_runs(symbols.len(), symbol_size),
        &mut wide,
        element_runs(symbols.len()),
    );
    wide
}

/// One wide shard → symbols, written into `out` (same length).
pub(crate) fn from_wide(wide: &[u8], symbol_size: usize, out: &mut [u8]) {
    transcode(
        wide,
        element_runs(wide.len()),
        out,
        symbol_runs(wide.len(), symbol_size),
    );
}

fn stripes(len: usize) -> impl IndexedParallelIterator<Item = std::ops::Range<usize>> {
    (0..len.div_ceil(STRIPE_BYTES))
        .into_par_iter()
        .map(move |s| s * STRIPE_BYTES..((s + 1) * STRIPE_BYTES).min(len))
}

/// Encode `k` wide shards of equal length with the code of `axis`; returns the `r` recovery
/// shards (wide layout).
pub(crate) fn expand_wide(
    config: &EncodingConfig,
    axis: Axis,
    shards: &[&[u8]],
) -> Result<Vec<Vec<u8>>, CodecError> {
    let (k, r) = config.code(axis);
    debug_assert_eq!(shards.len(), k);
    let len = shards[0].len();
    let parts: Vec<Vec<u8>> = stripes(len)
        .map(|range| {
            with_encoder(k, r, range.len(), |enc| {
                for shard in shards {
                    enc.add_original_shard(&shard[range.clone()])
                        .map_err(rs_err)?;
                }
                let result = enc.encode().map_err(rs_err)?;
                let mut out = Vec::with_capacity(r * range.len());
                for recovery in result.recovery_iter() {
                    out.extend_from_slice(recovery);
                }
                Ok(out)
            })
        })
        .collect::<Result<_, _>>()?;
    let mut out = vec![vec![0u8; len]; r];
    for (range, part) in (0..len.div_ceil(STRIPE_BYTES))
        .map(|s| s * STRIPE_BYTES..((s + 1) * STRIPE_BYTES).min(len))
        .zip(&parts)
    {
        for (shard, chunk) in out.iter_mut().zip(part.chunks_exact(range.len())) {
            shard[range.clone()].copy_from_slice(chunk);
        }
    }
    Ok(out)
}

/// Recover the `k` source shards (wide layout) of the code of `axis` from exactly `k` distinct
/// shards given as `(symbol index, wide shard)`; index `< k` is a source shard.
pub(crate) fn decode_wide(
    config: &EncodingConfig,
    axis: Axis,
    shards: &[(usize, &[u8])],
) -> Result<Vec<Vec<u8>>, CodecError> {
    let (k, r) = config.code(axis);
    let len = shards[0].1.len();
    let mut out: Vec<Option<Vec<u8>>> = vec![None; k];
    for (index, shard) in shards {
        if *index < k {
            out[*index] = Some(shard.to_vec());
        }
    }
    let missing: Vec<usize> = (0..k).filter(|i| out[*i].is_none()).collect();
    if !missing.is_empty() {
        let parts: Vec<Vec<u8>> = stripes(len)
            .map(|range| {
                with_decoder(k, r, range.len(), |dec| {
                    for (index, shard) in shards {
                        let piece = &shard[range.clone()];
                        if *index < k {
                            dec.add_original_shard(*index, piece).map_err(rs_err)?;
                        } else {
                            dec.add_recovery_shard(*index - k, piece).map_err(rs_err)?;
                        }
                    }
                    let result = dec.decode().map_err(rs_err)?;
                    let mut part = Vec::with_capacity(missing.len() * range.len());
                    for &m in &missing {
                        let restored = result.restored_original(m).ok_or_else(|| {
                            CodecError::ReedSolomon(format!("source shard {m} was not restored"))
                        })?;
                        part.extend_from_slice(restored);
                    }
                    Ok(part)
                })
            })
            .collect::<Result<_, _>>()?;
        let mut restored = vec![vec![0u8; len]; missing.len()];
        let mut start = 0;
        for part in &parts {
            let width = part.len() / missing.len();
            for (shard, chunk) in restored.iter_mut().zip(part.chunks_exact(width)) {
                shard[start..start + width].copy_from_slice(chunk);
            }
            start += width;
        }
        for (m, shard) in missing.into_iter().zip(restored) {
            out[m] = Some(shard);
        }
    }
    Ok(out
        .into_iter()
        .map(|s| s.expect("every source shard is present or restored"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_layout_round_trips() {
        for ss in [2usize, 6, 36, 64, 70, 302, 1000] {
            let m = 9;
            let symbols: Vec<u8> = (0..ss * m).map(|i| (i * 13 + 1) as u8).collect();
            let wide = to_wide(&symbols, ss);
            let mut back = vec![0u8; symbols.len()];
            from_wide(&wide, ss, &mut back);
            assert_eq!(back, symbols, "ss = {ss}");
        }
    }

    #[test]
    fn batched_encoding_equals_per_symbol_encoding() {
        let config = EncodingConfig::new(10).unwrap();
        for axis in [Axis::Primary, Axis::Secondary] {
            let (k, r) = config.code(axis);
            for ss in [2usize, 36, 302, 4100] {
                let columns = 5;
                // k shards, each a sequence of `columns` symbols.
                let shards: Vec<Vec<u8>> = (0..k)
                    .map(|s| {
                        (0..columns * ss)
                            .map(|i| (i * 31 + s * 7 + 5) as u8)
                            .collect()
                    })
                    .collect();
                let wide: Vec<Vec<u8>> = shards.iter().map(|s| to_wide(s, ss)).collect();
                let refs: Vec<&[u8]> = wide.iter().map(|w| w.as_slice()).collect();
                let recovered = expand_wide(&config, axis, &refs).unwrap();
                for c in 0..columns {
                    let column: Vec<u8> = shards
                        .iter()
                        .flat_map(|s| s[c * ss..(c + 1) * ss].to_vec())
                        .collect();
                    let mut expected = Vec::new();
                    expand_into(&config, axis, &column, ss, &mut expected).unwrap();
                    for (j, rec) in recovered.iter().enumerate().take(r) {
                        let mut symbols = vec![0u8; rec.len()];
                        from_wide(rec, ss, &mut symbols);
                        assert_eq!(
                            &symbols[c * ss..(c + 1) * ss],
                            &expected[j * ss..(j + 1) * ss]
                        );
                    }
                }
                // Decode from the last k of the n shards.
                let all: Vec<&[u8]> = refs
                    .iter()
                    .copied()
                    .chain(recovered.iter().map(|v| v.as_slice()))
                    .collect();
                let n = k + r;
                let given: Vec<(usize, &[u8])> = (n - k..n).map(|i| (i, all[i])).collect();
                let decoded = decode_wide(&config, axis, &given).unwrap();
                assert_eq!(decoded, wide);
            }
        }
    }
}
