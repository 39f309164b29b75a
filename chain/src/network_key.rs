//! A storage node's network key: the P-256 point its TLS certificate must carry, stored on chain
//! SEC1-compressed (33 bytes, `02`/`03` ‖ X; NETWORK.md §6.2) and written in hex in committee
//! files. Certificates carry the uncompressed form `04 ‖ X ‖ Y`; compressing it (the parity of Y
//! picks the sign) gives a form to compare with the chain's.

/// A compressed P-256 point.
pub type NetworkKey = [u8; 33];

/// Compress an uncompressed SEC1 P-256 point `04 ‖ X ‖ Y` to `02|03 ‖ X`.
pub fn compress_p256_point(point: &[u8]) -> Option<NetworkKey> {
    if point.len() != 65 || point[0] != 0x04 {
        return None;
    }
    let mut key = [0u8; 33];
    key[0] = 0x02 | (point[64] & 1);
    key[1..].copy_from_slice(&point[1..33]);
    Some(key)
}

/// Lower-case hex of any bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A key from 66 hex digits (an optional `0x` first), if they encode a compressed point's form
/// (`02`/`03` first); whether X is on the curve is left to the TLS handshake.
pub fn parse_hex(hex: &str) -> Option<NetworkKey> {
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    if hex.len() != 66 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; 33];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    matches!(key[0], 2 | 3).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compress_and_round_trip_through_hex() {
        let mut point = [0u8; 65];
        point[0] = 4;
        point[1..33].copy_from_slice(&[0xab; 32]);
        point[64] = 7;
        let key = compress_p256_point(&point).unwrap();
        assert_eq!(key[0], 3);
        assert_eq!(key[1..], [0xab; 32]);
        point[64] = 8;
        assert_eq!(compress_p256_point(&point).unwrap()[0], 2);
        assert_eq!(compress_p256_point(&point[..64]), None);
        assert_eq!(parse_hex(&to_hex(&key)), Some(key));
        assert_eq!(parse_hex(&format!("0x{}", to_hex(&key))), Some(key));
        assert_eq!(parse_hex(&format!("04{}", "ab".repeat(32))), None);
        assert_eq!(parse_hex("02ab"), None);
    }
}
