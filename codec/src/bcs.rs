//! BCS wire formats of the storage-node API (SPEC §10): `BlobMetadataWithId`, `BlobMetadata`,
//! and the bare `SliverData` struct.
//!
//! Decoders read untrusted bytes: every length is checked against what is left before anything
//! is allocated, ULEB128 must be canonical, enum variants must be known, and trailing bytes are
//! an error. Nothing here panics on any input.

use crate::blob_id::BlobId;
use crate::error::BcsError;
use crate::merkle::Node;
use crate::metadata::{BlobMetadata, SliverPairHashes, RS2};
use crate::sliver::{Sliver, SliverKind};
use bytes::Bytes;

/// BCS's own cap on sequence lengths.
const MAX_SEQUENCE_LENGTH: u64 = (1 << 31) - 1;

pub(crate) fn put_uleb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_node(out: &mut Vec<u8>, node: &Node) {
    out.push(1);
    out.extend_from_slice(node);
}

/// BCS of `BlobMetadata` (`V1` variant).
pub fn encode_metadata(meta: &BlobMetadata) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + 66 * meta.hashes.len());
    out.push(0); // BlobMetadata::V1
    out.push(meta.encoding_type);
    out.extend_from_slice(&meta.unencoded_length.to_le_bytes());
    put_uleb128(&mut out, meta.hashes.len() as u64);
    for h in &meta.hashes {
        put_node(&mut out, &h.primary);
        put_node(&mut out, &h.secondary);
    }
    out
}

/// BCS of `BlobMetadataWithId`, as served by `GET /v1/blobs/{id}/metadata`.
pub fn encode_metadata_with_id(blob_id: &BlobId, meta: &BlobMetadata) -> Vec<u8> {
    let mut out = blob_id.0.to_vec();
    out.extend_from_slice(&encode_metadata(meta));
    out
}

/// BCS of the bare `SliverData` struct: data, symbol size, sliver index.
pub fn encode_sliver(sliver: &Sliver) -> Vec<u8> {
    let mut out = Vec::with_capacity(sliver.data.len() + 10);
    put_uleb128(&mut out, sliver.data.len() as u64);
    out.extend_from_slice(&sliver.data);
    out.extend_from_slice(&sliver.symbol_size.to_le_bytes());
    out.extend_from_slice(&sliver.index.to_le_bytes());
    out
}

/// A bounded, canonical BCS reader over untrusted bytes (also the quilt index's).
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// The bytes read since `start` (a former [`Reader::position`]).
    pub(crate) fn read_since(&self, start: usize) -> &'a [u8] {
        &self.buf[start..self.pos]
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], BcsError> {
        if n > self.remaining() {
            return Err(BcsError::UnexpectedEnd {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], BcsError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn uleb128(&mut self) -> Result<u64, BcsError> {
        let start = self.pos;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                // Canonical form: no redundant trailing zero groups.
                if byte == 0 && self.pos - start > 1 {
                    return Err(BcsError::BadLength(start));
                }
                return Ok(value);
            }
            if shift >= 28 {
                // More than a u32's worth: no BCS length or variant is that large.
                return Err(BcsError::BadLength(start));
            }
        }
        Err(BcsError::BadLength(start))
    }

    /// A length prefix for `element_size`-byte elements, bounded by what is left and `limit`.
    pub(crate) fn length(&mut self, element_size: usize, limit: u64) -> Result<usize, BcsError> {
        let offset = self.pos;
        let len = self.uleb128()?;
        let limit = limit
            .min(MAX_SEQUENCE_LENGTH)
            .min((self.remaining() / element_size.max(1)) as u64);
        if len > limit {
            return Err(BcsError::LengthTooLarge { offset, len, limit });
        }
        Ok(len as usize)
    }

    fn variant(&mut self, what: &'static str, allowed: u64) -> Result<(), BcsError> {
        let variant = self.uleb128()?;
        if variant != allowed {
            return Err(BcsError::UnknownVariant { what, variant });
        }
        Ok(())
    }

    fn node(&mut self) -> Result<Node, BcsError> {
        match self.uleb128()? {
            1 => self.array::<32>(),
            0 => Err(BcsError::EmptyNode),
            variant => Err(BcsError::UnknownVariant {
                what: "Merkle node",
                variant,
            }),
        }
    }

    pub(crate) fn finish(self) -> Result<(), BcsError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(BcsError::TrailingBytes(n)),
        }
    }
}

fn read_metadata(r: &mut Reader<'_>) -> Result<BlobMetadata, BcsError> {
    r.variant("BlobMetadata", 0)?;
    r.variant("encoding type", u64::from(RS2))?;
    let unencoded_length = u64::from_le_bytes(r.array::<8>()?);
    // Each pair is at least 66 bytes on the wire; shard indices are u16.
    let count = r.length(66, u64::from(u16::MAX))?;
    let mut hashes = Vec::with_capacity(count);
    for _ in 0..count {
        let primary = r.node()?;
        let secondary = r.node()?;
        hashes.push(SliverPairHashes { primary, secondary });
    }
    Ok(BlobMetadata {
        encoding_type: RS2,
        unencoded_length,
        hashes,
    })
}

/// Decode `BlobMetadata` (the body of a metadata PUT).
pub fn decode_metadata(bytes: &[u8]) -> Result<BlobMetadata, BcsError> {
    let mut r = Reader::new(bytes);
    let meta = read_metadata(&mut r)?;
    r.finish()?;
    Ok(meta)
}

/// Decode `BlobMetadataWithId` (the body of a metadata GET). The ID is as claimed: verify it.
pub fn decode_metadata_with_id(bytes: &[u8]) -> Result<(BlobId, BlobMetadata), BcsError> {
    let mut r = Reader::new(bytes);
    let id = BlobId(r.array::<32>()?);
    let meta = read_metadata(&mut r)?;
    r.finish()?;
    Ok((id, meta))
}

/// Decode a bare `SliverData` of the given kind (the kind comes from the URL path). The symbol
/// data is a zero-copy slice of `bytes`.
pub fn decode_sliver(bytes: &Bytes, kind: SliverKind) -> Result<Sliver, BcsError> {
    let mut r = Reader::new(bytes);
    let len = r.length(1, MAX_SEQUENCE_LENGTH)?;
    let start = r.pos;
    r.take(len)?;
    let symbol_size = u16::from_le_bytes(r.array::<2>()?);
    let index = u16::from_le_bytes(r.array::<2>()?);
    r.finish()?;
    Ok(Sliver {
        kind,
        index,
        symbol_size,
        data: bytes.slice(start..start + len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uleb128_round_trips_and_rejects_overlong_forms() {
        for v in [0u64, 1, 127, 128, 300, 65535, (1 << 31) - 1] {
            let mut out = Vec::new();
            put_uleb128(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.uleb128().unwrap(), v);
            r.finish().unwrap();
        }
        assert!(Reader::new(&[0x80, 0x00]).uleb128().is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
            .uleb128()
            .is_err());
        assert!(Reader::new(&[0x80]).uleb128().is_err());
    }

    #[test]
    fn forged_lengths_are_rejected_without_allocating() {
        // A sliver claiming 2^31-1 bytes of data in a 10-byte body.
        let body = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x07, 1, 2, 3, 4, 5]);
        assert!(matches!(
            decode_sliver(&body, SliverKind::Primary),
            Err(BcsError::LengthTooLarge { .. })
        ));
        // Metadata claiming 65535 pairs with none present.
        let mut meta = vec![0u8, 1];
        meta.extend_from_slice(&5u64.to_le_bytes());
        meta.extend_from_slice(&[0xff, 0xff, 0x03]);
        assert!(matches!(
            decode_metadata(&meta),
            Err(BcsError::LengthTooLarge { .. })
        ));
    }
}
