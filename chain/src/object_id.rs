//! Sui addresses and object IDs (32 bytes, written `0x` + 64 hex digits) and the derivation of
//! a dynamic field's object ID from its parent and key (NETWORK.md §2.3):
//! `Blake2b-256(0xF0 ‖ parent ‖ u64_le(len(key)) ‖ key ‖ bcs(key type tag))`.

use std::fmt;
use std::str::FromStr;

/// A Sui address or object ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjectId(pub [u8; 32]);

/// Why a string is not an object ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a Sui object ID: {reason}")]
pub struct ParseObjectIdError {
    pub text: String,
    pub reason: &'static str,
}

/// `HashingIntent::ChildObjectId`.
const CHILD_OBJECT_ID_INTENT: u8 = 0xf0;
/// `bcs(TypeTag::U64)`: the TypeTag enum's variant index for `u64`.
pub const TYPE_TAG_U64: u8 = 2;

impl ObjectId {
    /// The ID of the dynamic field of `self` whose key has BCS `key` and type tag BCS `key_type`.
    pub fn dynamic_field_id(&self, key: &[u8], key_type: &[u8]) -> ObjectId {
        let mut state = blake2b_simd::Params::new().hash_length(32).to_state();
        state.update(&[CHILD_OBJECT_ID_INTENT]);
        state.update(&self.0);
        state.update(&(key.len() as u64).to_le_bytes());
        state.update(key);
        state.update(key_type);
        let mut id = [0u8; 32];
        id.copy_from_slice(state.finalize().as_bytes());
        ObjectId(id)
    }

    /// The ID of the `Field<u64, _>` holding version `version` of a versioned object (`System`,
    /// `Staking`): where their inner state lives.
    pub fn versioned_field_id(&self, version: u64) -> ObjectId {
        self.dynamic_field_id(&version.to_le_bytes(), &[TYPE_TAG_U64])
    }
}

impl FromStr for ObjectId {
    type Err = ParseObjectIdError;

    /// `0x` followed by 1 to 64 hex digits; shorter forms (`0x2`) are left-padded with zeros,
    /// as Sui writes its framework addresses.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseObjectIdError {
            text: text.chars().take(80).collect(),
            reason,
        };
        let hex = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .ok_or_else(|| err("it does not start with 0x"))?;
        if hex.is_empty() || hex.len() > 64 {
            return Err(err("it needs 1 to 64 hex digits after 0x"));
        }
        let mut id = [0u8; 32];
        let digits = hex.as_bytes();
        for (i, &d) in digits.iter().rev().enumerate() {
            let v = (d as char)
                .to_digit(16)
                .ok_or_else(|| err("it has a character that is not a hex digit"))?
                as u8;
            id[31 - i / 2] |= if i % 2 == 0 { v } else { v << 4 };
        }
        Ok(ObjectId(id))
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for ObjectId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ObjectId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ObjectId {
        s.parse().unwrap()
    }

    /// NETWORK.md §2.3: derived with the TS SDK and an independent Python BLAKE2b; the ✔ rows
    /// also appear hard-coded in unrelated public code.
    #[test]
    fn versioned_field_ids_match_the_reference_table() {
        let mainnet_system =
            id("0x2134d52768ea07e8c43570ef975eb3e4c27a39fa6396bef985b5abc58d03ddd2");
        let mainnet_staking =
            id("0x10b9d30c28448939ce6c4d6c6e0ffce4a7f8a4ada8248bdad09ef8b70e4a3904");
        let testnet_system =
            id("0x6c2547cbbc38025cf3adac45f63cb0a8d12ecf777cdc75a4971612bf97fdf6af");
        let testnet_staking =
            id("0xbe46180321c30aab2f8b3501e24048377287fa708018a5b7c2792b35fe339ee3");
        let table = [
            (
                mainnet_system,
                1,
                "0xc5e430c7c517e99da14e67928b360f3260de47cb61f55338cdd9119f519c282c",
            ),
            (
                mainnet_system,
                2,
                "0xe7d356f61c74ad511214bb69dc9e38f7cc364c085b007c6ea81461fc8ebe7dfe",
            ),
            (
                mainnet_system,
                3,
                "0x0b2d4076d3a0b82a632144e835cd972527b185bda9d55011a9cc38fe557a475d",
            ),
            (
                mainnet_staking,
                1,
                "0x5849e7cdbdaad46b6c68a5462ed1fc58c302862785769b450c882679bc452999",
            ),
            (
                mainnet_staking,
                2,
                "0x16f1f9fcdf5a746da423d1ad055d88f88b24a9272ca8afb4c0dcf074ae6c730a",
            ),
            (
                mainnet_staking,
                3,
                "0xa1d6719d0447c536a41688d5762449782bed731ac708659d98f9bff668b555b3",
            ),
            (
                mainnet_staking,
                4,
                "0x0ae6c892c35c5532c69c00e1655936ec11b701a3b04951dc63420386e37ef3cb",
            ),
            (
                testnet_system,
                3,
                "0x7fb94d17d38b895b1aaa25319343970b04b3cebfba7940ceddff8dfcedade095",
            ),
            (
                testnet_staking,
                3,
                "0x5343c053fbd861264dcd24ce3eabf652c671e3afa7d25f90b0986a7462830171",
            ),
            (
                testnet_system,
                4,
                "0xfffdecb59f75ba8740810134217645ea660b77144d14536e4e2e821388358720",
            ),
            (
                testnet_staking,
                4,
                "0xb027ae3b569116327b8e063059be97a3bbb13722ae514f8d988b3a28d04b1b70",
            ),
        ];
        for (parent, version, want) in table {
            assert_eq!(
                parent.versioned_field_id(version).to_string(),
                want,
                "{parent} v{version}"
            );
        }
    }

    #[test]
    fn parsing_pads_short_forms_and_rejects_garbage() {
        assert_eq!(id("0x2").0[31], 2);
        assert_eq!(id("0x2").to_string(), format!("0x{}2", "0".repeat(63)));
        assert_eq!(id("0xAB").0[31], 0xab);
        assert_eq!(id("0x123").0[30..], [0x01, 0x23]);
        for bad in [
            "",
            "0x",
            "12",
            "0xg1",
            &format!("0x{}", "1".repeat(65)),
            "0x12 ",
        ] {
            assert!(bad.parse::<ObjectId>().is_err(), "{bad:?}");
        }
    }
}
