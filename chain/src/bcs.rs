//! A bounded BCS reader and a writer for the Move values the read path decodes.
//!
//! The reader never allocates more than the input could hold: a vector's element count is
//! checked against the bytes left (every element takes at least one byte) before anything is
//! reserved, and [`Reader::finish`] rejects trailing bytes, as serde's `bcs::from_bytes` does.

use crate::object_id::ObjectId;

/// Why BCS bytes do not decode as the expected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BcsError {
    #[error("the bytes end early: {what} needs {need} more bytes at offset {at}")]
    Truncated {
        what: &'static str,
        at: usize,
        need: usize,
    },
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    #[error("a ULEB128 length at offset {0} is malformed or too large")]
    BadUleb(usize),
    #[error("{what}: unknown variant {variant} at offset {at}")]
    BadVariant {
        what: &'static str,
        variant: u32,
        at: usize,
    },
    #[error("{what}: a length of {len} at offset {at} exceeds the {left} bytes left")]
    BadLength {
        what: &'static str,
        len: usize,
        at: usize,
        left: usize,
    },
    #[error("{what} at offset {at} is not UTF-8")]
    BadUtf8 { what: &'static str, at: usize },
    #[error("{0}")]
    Invalid(String),
}

/// A cursor over BCS bytes.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    pub fn offset(&self) -> usize {
        self.at
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// Succeeds only if every byte was consumed.
    pub fn finish(self) -> Result<(), BcsError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(BcsError::Trailing(n)),
        }
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], BcsError> {
        if self.remaining() < n {
            return Err(BcsError::Truncated {
                what,
                at: self.at,
                need: n - self.remaining(),
            });
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], BcsError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, BcsError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, BcsError> {
        let at = self.at;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(BcsError::BadVariant {
                what,
                variant: u32::from(v),
                at,
            }),
        }
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, BcsError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, BcsError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, BcsError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub fn u256(&mut self, what: &'static str) -> Result<[u8; 32], BcsError> {
        self.array(what)
    }

    pub fn address(&mut self, what: &'static str) -> Result<ObjectId, BcsError> {
        Ok(ObjectId(self.array(what)?))
    }

    /// A ULEB128 value that fits in 32 bits (BCS lengths and variant indices).
    pub fn uleb(&mut self) -> Result<u32, BcsError> {
        let start = self.at;
        let mut value: u64 = 0;
        for shift in (0..35).step_by(7) {
            let byte = self
                .u8("a ULEB128 length")
                .map_err(|_| BcsError::BadUleb(start))?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                // BCS requires the shortest encoding.
                if byte == 0 && shift > 0 {
                    return Err(BcsError::BadUleb(start));
                }
                return u32::try_from(value).map_err(|_| BcsError::BadUleb(start));
            }
        }
        Err(BcsError::BadUleb(start))
    }

    /// An enum's variant index, checked against the number of variants.
    pub fn variant(&mut self, what: &'static str, variants: u32) -> Result<u32, BcsError> {
        let at = self.at;
        let v = self.uleb()?;
        if v >= variants {
            return Err(BcsError::BadVariant {
                what,
                variant: v,
                at,
            });
        }
        Ok(v)
    }

    /// A vector length whose elements take at least `min_size` bytes each.
    pub fn len(&mut self, what: &'static str, min_size: usize) -> Result<usize, BcsError> {
        let at = self.at;
        let len = self.uleb()? as usize;
        if len.saturating_mul(min_size.max(1)) > self.remaining() {
            return Err(BcsError::BadLength {
                what,
                len,
                at,
                left: self.remaining(),
            });
        }
        Ok(len)
    }

    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], BcsError> {
        let len = self.len(what, 1)?;
        self.take(len, what)
    }

    pub fn string(&mut self, what: &'static str) -> Result<String, BcsError> {
        let at = self.at;
        let bytes = self.bytes(what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| BcsError::BadUtf8 { what, at })
    }

    pub fn option<T>(
        &mut self,
        what: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, BcsError>,
    ) -> Result<Option<T>, BcsError> {
        match self.variant(what, 2)? {
            0 => Ok(None),
            _ => read(self).map(Some),
        }
    }

    pub fn vec<T>(
        &mut self,
        what: &'static str,
        min_size: usize,
        mut read: impl FnMut(&mut Self) -> Result<T, BcsError>,
    ) -> Result<Vec<T>, BcsError> {
        let len = self.len(what, min_size)?;
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            out.push(read(self)?);
        }
        Ok(out)
    }
}

/// Appends BCS to a buffer.
#[derive(Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.out.extend_from_slice(v);
        self
    }

    pub fn address(&mut self, v: &ObjectId) -> &mut Self {
        self.raw(&v.0)
    }

    pub fn uleb(&mut self, mut v: u32) -> &mut Self {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.out.push(byte);
                return self;
            }
            self.out.push(byte | 0x80);
        }
    }

    pub fn len(&mut self, len: usize) -> &mut Self {
        self.uleb(u32::try_from(len).expect("BCS lengths fit in 32 bits"))
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.len(v.len()).raw(v)
    }

    pub fn string(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    pub fn option<T>(&mut self, v: Option<&T>, write: impl FnOnce(&mut Self, &T)) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                write(self, v);
                self
            }
        }
    }

    pub fn vec<T>(&mut self, v: &[T], mut write: impl FnMut(&mut Self, &T)) -> &mut Self {
        self.len(v.len());
        for item in v {
            write(self, item);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uleb_round_trips_and_rejects_overlong_forms() {
        for v in [0u32, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let mut w = Writer::new();
            w.uleb(v);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            assert_eq!(r.uleb().unwrap(), v);
            r.finish().unwrap();
        }
        // 0 written in two bytes is not canonical; 2^35 does not fit.
        assert!(Reader::new(&[0x80, 0x00]).uleb().is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x7f]).uleb().is_err());
        assert!(Reader::new(&[0x80]).uleb().is_err());
    }

    #[test]
    fn lengths_are_bounded_by_the_input() {
        // A vector claiming 2^28 elements in a 5-byte input is refused before allocating.
        let mut r = Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x01]);
        assert!(matches!(
            r.vec("v", 1, |r| r.u8("x")),
            Err(BcsError::BadLength { .. })
        ));
        assert!(matches!(
            Reader::new(&[1, 2]).finish(),
            Err(BcsError::Trailing(2))
        ));
        assert!(Reader::new(&[2]).bool("b").is_err());
        assert!(Reader::new(&[1, 0xff]).string("s").is_err());
    }
}
