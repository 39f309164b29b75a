//! Committee-derived encoding parameters (SPEC §1, §2, §8).
//!
//! Everything here is arithmetic on `n_shards` and the blob length; nothing panics on any input.

use crate::error::CodecError;
use reed_solomon_simd::ReedSolomonEncoder;

/// Largest RS2 symbol size: symbols must be 2-byte aligned and fit a u16.
pub const MAX_SYMBOL_SIZE: u16 = u16::MAX - 1;

/// The parameters of RS2 for a committee of `n_shards` shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncodingConfig {
    n: u16,
    f: u16,
}

/// Which of the two one-dimensional codes to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Axis {
    /// `kp` source symbols, `2f` recovery symbols: expands columns; decodes primary slivers.
    Primary,
    /// `ks` source symbols, `f` recovery symbols: expands rows; decodes secondary slivers.
    Secondary,
}

impl EncodingConfig {
    /// Parameters for `n_shards`; fewer than 4 shards (no secondary recovery symbols) or counts the
    /// Reed-Solomon crate cannot handle are errors.
    pub fn new(n_shards: u16) -> Result<Self, CodecError> {
        if n_shards < 4 {
            return Err(CodecError::TooFewShards(n_shards));
        }
        let config = Self {
            n: n_shards,
            f: (n_shards - 1) / 3,
        };
        for axis in [Axis::Primary, Axis::Secondary] {
            let (k, r) = config.code(axis);
            if !ReedSolomonEncoder::supports(k, r) {
                return Err(CodecError::UnsupportedShardCount(n_shards));
            }
        }
        Ok(config)
    }

    pub fn n_shards(&self) -> u16 {
        self.n
    }

    /// Maximum number of Byzantine shards, `floor((n-1)/3)`.
    pub fn f(&self) -> u16 {
        self.f
    }

    /// `kp = n - 2f`: rows of the message matrix, symbols per secondary sliver.
    pub fn n_primary_source_symbols(&self) -> u16 {
        self.n - 2 * self.f
    }

    /// `ks = n - f`: columns of the message matrix, symbols per primary sliver.
    pub fn n_secondary_source_symbols(&self) -> u16 {
        self.n - self.f
    }

    /// Shards needed for a quorum of answers (`2f + 1`), e.g. to believe a "not found".
    pub fn quorum(&self) -> u16 {
        2 * self.f + 1
    }

    /// `(source, recovery)` symbol counts of one of the two codes.
    pub(crate) fn code(&self, axis: Axis) -> (usize, usize) {
        let n = usize::from(self.n);
        let f = usize::from(self.f);
        match axis {
            Axis::Primary => (n - 2 * f, 2 * f),
            Axis::Secondary => (n - f, f),
        }
    }

    /// Largest blob this committee can encode: `kp * ks * 65534`.
    pub fn max_blob_size(&self) -> u64 {
        self.source_symbols() * u64::from(MAX_SYMBOL_SIZE)
    }

    fn source_symbols(&self) -> u64 {
        u64::from(self.n_primary_source_symbols()) * u64::from(self.n_secondary_source_symbols())
    }

    /// Symbol size for a blob of `len` bytes: `ceil(max(len,1) / (kp*ks))`, rounded up to even.
    pub fn symbol_size(&self, len: u64) -> Result<u16, CodecError> {
        let max = self.max_blob_size();
        if len > max {
            return Err(CodecError::BlobTooLarge { len, max });
        }
        let ss = len.max(1).div_ceil(self.source_symbols());
        let ss = ss + (ss % 2);
        // len <= kp*ks*65534 guarantees ss <= 65534.
        u16::try_from(ss).map_err(|_| CodecError::BlobTooLarge { len, max })
    }

    /// Bytes in a primary sliver (`ks` symbols).
    pub fn primary_sliver_len(&self, symbol_size: u16) -> usize {
        usize::from(self.n_secondary_source_symbols()) * usize::from(symbol_size)
    }

    /// Bytes in a secondary sliver (`kp` symbols).
    pub fn secondary_sliver_len(&self, symbol_size: u16) -> usize {
        usize::from(self.n_primary_source_symbols()) * usize::from(symbol_size)
    }

    /// Bytes of one row of the message matrix, i.e. of one systematic primary sliver.
    pub fn row_len(&self, symbol_size: u16) -> u64 {
        self.primary_sliver_len(symbol_size) as u64
    }

    /// What Walrus charges storage on: `n*(64n+32) + n*(kp+ks)*ss` (SPEC §8).
    pub fn encoded_length(&self, len: u64) -> Result<u64, CodecError> {
        let ss = u64::from(self.symbol_size(len)?);
        let n = u64::from(self.n);
        let per_shard =
            u64::from(self.n_primary_source_symbols() + self.n_secondary_source_symbols()) * ss;
        Ok(n * (64 * n + 32) + n * per_shard)
    }

    /// The systematic primary slivers (rows) that hold blob bytes `[start, end)` of a blob of
    /// `len` bytes; empty when the range is empty.
    pub fn rows_for_range(
        &self,
        len: u64,
        start: u64,
        end: u64,
    ) -> Result<std::ops::Range<u16>, CodecError> {
        let row = self.row_len(self.symbol_size(len)?);
        if start >= end {
            return Ok(0..0);
        }
        // Both quotients are < kp <= u16::MAX because end <= len <= kp * row.
        let first = (start / row).min(u64::from(u16::MAX)) as u16;
        let last = (end - 1) / row;
        let last = last.min(u64::from(self.n_primary_source_symbols() - 1)) as u16;
        Ok(first..last + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_match_the_spec_table() {
        for (n, f, kp, ks) in [
            (4, 1, 2, 3),
            (7, 2, 3, 5),
            (10, 3, 4, 7),
            (100, 33, 34, 67),
            (1000, 333, 334, 667),
        ] {
            let c = EncodingConfig::new(n).unwrap();
            assert_eq!(
                (
                    c.f(),
                    c.n_primary_source_symbols(),
                    c.n_secondary_source_symbols()
                ),
                (f, kp, ks)
            );
        }
    }

    #[test]
    fn small_committees_are_errors() {
        for n in 0..4 {
            assert_eq!(EncodingConfig::new(n), Err(CodecError::TooFewShards(n)));
        }
    }

    #[test]
    fn symbol_sizes_and_limits() {
        let c10 = EncodingConfig::new(10).unwrap();
        assert_eq!(c10.symbol_size(1000).unwrap(), 36);
        assert_eq!(c10.symbol_size(0).unwrap(), 2);
        assert_eq!(c10.max_blob_size(), 1_834_952);
        assert_eq!(c10.symbol_size(1_834_952).unwrap(), 65534);
        assert!(matches!(
            c10.symbol_size(1_834_953),
            Err(CodecError::BlobTooLarge { .. })
        ));
        let c1000 = EncodingConfig::new(1000).unwrap();
        assert_eq!(c1000.symbol_size(1_000_000).unwrap(), 6);
        assert_eq!(c1000.max_blob_size(), 14_599_533_452);
        assert_eq!(c1000.encoded_length(17).unwrap(), 66_034_000);
        assert_eq!(
            EncodingConfig::new(100).unwrap().max_blob_size(),
            149_286_452
        );
        assert!(c1000.symbol_size(u64::MAX).is_err());
    }

    #[test]
    fn rows_cover_ranges() {
        let c = EncodingConfig::new(10).unwrap();
        // ss = 36, row = 252 bytes, 4 rows.
        assert_eq!(c.rows_for_range(1000, 0, 1).unwrap(), 0..1);
        assert_eq!(c.rows_for_range(1000, 251, 253).unwrap(), 0..2);
        assert_eq!(c.rows_for_range(1000, 999, 1000).unwrap(), 3..4);
        assert_eq!(c.rows_for_range(1000, 5, 5).unwrap(), 0..0);
    }
}
