//! Base58 (the Bitcoin alphabet), as Sui writes digests and chain identifiers.

const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Encode `bytes`; leading zero bytes become leading `1`s.
pub fn encode(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = Vec::with_capacity(bytes.len() * 138 / 100 + 1);
    for &byte in bytes {
        let mut carry = u32::from(byte);
        for digit in digits.iter_mut() {
            carry += u32::from(*digit) << 8;
            *digit = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    std::iter::repeat_n('1', zeros)
        .chain(
            digits
                .iter()
                .rev()
                .map(|&d| ALPHABET[usize::from(d)] as char),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_encodings() {
        // Bitcoin's base58 reference cases.
        assert_eq!(super::encode(b""), "");
        assert_eq!(super::encode(&[0, 0, 1]), "112");
        assert_eq!(super::encode(b"hello world"), "StV1DL6CwTryKyV");
        assert_eq!(super::encode(&[0xff; 4]), "7YXq9G");
        // A 32-byte digest, as Sui prints them.
        assert_eq!(super::encode(&[0xff; 32]).len(), 44);
    }
}
