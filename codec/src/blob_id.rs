//! The Blob ID (SPEC §6) and the sliver-pair ↔ shard rotation (SPEC §7).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::fmt;
use std::str::FromStr;

use crate::merkle::Node;

/// A Walrus Blob ID: BLAKE2b-256 over `(encoding type, length, metadata root)`.
///
/// Text form is RFC 4648 base64url without padding, exactly 43 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 32]);

/// Why a text is not a Blob ID.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BlobIdParseError {
    #[error("a Blob ID is 43 base64url characters, got {0}")]
    WrongLength(usize),
    #[error("a Blob ID is base64url without padding: {0}")]
    NotBase64(String),
}

impl BlobId {
    pub const LENGTH: usize = 32;

    /// The ID of a blob with this encoding type byte, length and metadata root hash.
    pub fn from_parts(encoding_type: u8, unencoded_length: u64, root: &Node) -> Self {
        let mut state = crate::merkle::hash_params().to_state();
        state.update(&[encoding_type]);
        state.update(&unencoded_length.to_le_bytes());
        state.update(root);
        let mut id = [0u8; 32];
        id.copy_from_slice(state.finalize().as_bytes());
        Self(id)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The rotation offset: the ID read as a big-endian 256-bit integer, modulo `n_shards`.
    pub fn rotation_offset(&self, n_shards: u16) -> u16 {
        let n = u32::from(n_shards.max(1));
        let acc = self
            .0
            .iter()
            .fold(0u32, |acc, &b| (acc * 256 + u32::from(b)) % n);
        acc as u16
    }

    /// The shard that stores sliver pair `pair`.
    pub fn shard_for_pair(&self, pair: u16, n_shards: u16) -> u16 {
        let n = u32::from(n_shards.max(1));
        ((u32::from(pair) + u32::from(self.rotation_offset(n_shards))) % n) as u16
    }

    /// The sliver pair stored on shard `shard`.
    pub fn pair_for_shard(&self, shard: u16, n_shards: u16) -> u16 {
        let n = u32::from(n_shards.max(1));
        ((u32::from(shard) + n - u32::from(self.rotation_offset(n_shards))) % n) as u16
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

impl FromStr for BlobId {
    type Err = BlobIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 43 {
            return Err(BlobIdParseError::WrongLength(s.len()));
        }
        let mut out = [0u8; 33];
        // The standard engine rejects padding and non-canonical trailing bits.
        let n = URL_SAFE_NO_PAD
            .decode_slice(s.as_bytes(), &mut out)
            .map_err(|e| BlobIdParseError::NotBase64(e.to_string()))?;
        let bytes: [u8; 32] = out[..n]
            .try_into()
            .map_err(|_| BlobIdParseError::WrongLength(s.len()))?;
        Ok(Self(bytes))
    }
}

impl serde::Serialize for BlobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for BlobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_malformed_ids() {
        let good = "RV5Io9fgU7sWMkNXE7IUo8QbTxJS4Gs9aaJU6xabCsw";
        let id: BlobId = good.parse().unwrap();
        assert_eq!(id.to_string(), good);
        for bad in [
            "",
            "abc",
            &format!("{good}="),
            &format!("{good}A"),
            &good[..42],
        ] {
            assert!(bad.parse::<BlobId>().is_err(), "{bad:?}");
        }
        // Standard-alphabet characters and non-canonical trailing bits are errors.
        assert!("RV5Io9fgU7sWMkNXE7IUo8QbTxJS4Gs9aaJU6xabCs+"
            .parse::<BlobId>()
            .is_err());
        assert!("RV5Io9fgU7sWMkNXE7IUo8QbTxJS4Gs9aaJU6xabCsx"
            .parse::<BlobId>()
            .is_err());
    }

    #[test]
    fn rotation_is_a_bijection() {
        let id: BlobId = "RV5Io9fgU7sWMkNXE7IUo8QbTxJS4Gs9aaJU6xabCsw"
            .parse()
            .unwrap();
        assert_eq!(id.rotation_offset(10), 4);
        assert_eq!(id.shard_for_pair(0, 10), 4);
        assert_eq!(id.shard_for_pair(6, 10), 0);
        for p in 0..10 {
            assert_eq!(id.pair_for_shard(id.shard_for_pair(p, 10), 10), p);
        }
    }
}
