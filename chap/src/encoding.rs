//! RFC 7143 §6.1 binary values as used by CHAP_C and CHAP_R, and the CHAP_I
//! number.
//!
//! RFC 7143 §6.1: "hex-constant: hexadecimal constant encoded as a string
//! that starts with "0x" or "0X" followed by 1 or more digits or the letters
//! a, b, c, d, e, f, A, B, C, D, E, and F"; "base64-constant: base64
//! constant encoded as a string that starts with "0b" or "0B" followed by 1
//! or more digits or letters or plus sign "+" or slash "/" or equal sign
//! "="" (RFC 4648 encoding).
//!
//! Leniency: an odd number of hex digits is read with an implicit leading
//! zero (as tgt does); base64 padding may be present or absent.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::ChapError;

/// RFC 7143 §12.1.3: C and R "binary length (not the length of the character
/// string that represents them in encoded form) MUST NOT exceed 1024 bytes".
pub const MAX_BINARY_LEN: usize = 1024;

const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encode as `0x` + lower-case hex (what we always emit).
pub fn encode_binary(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// Encode as `0b` + base64 (RFC 4648, padded).
pub fn encode_base64(bytes: &[u8]) -> String {
    format!("0b{}", STANDARD.encode(bytes))
}

/// Decode a `0x`/`0b` binary value of at most `max_len` decoded bytes. The
/// length is checked on the encoded form before anything is allocated.
pub fn decode_binary(value: &str, max_len: usize) -> Result<Vec<u8>, ChapError> {
    let (is_hex, digits) = match value.as_bytes() {
        [b'0', b'x' | b'X', ..] => (true, &value[2..]),
        [b'0', b'b' | b'B', ..] => (false, &value[2..]),
        _ => return Err(ChapError::BinaryPrefix),
    };
    if digits.is_empty() {
        return Err(ChapError::BinaryEmpty);
    }
    if is_hex {
        if digits.len().div_ceil(2) > max_len {
            return Err(ChapError::BinaryTooLong { max: max_len });
        }
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ChapError::BinaryHex);
        }
        let padded;
        let even = if digits.len() % 2 == 1 {
            padded = format!("0{digits}");
            padded.as_str()
        } else {
            digits
        };
        hex::decode(even).map_err(|_| ChapError::BinaryHex)
    } else {
        // Upper bound of the decoded size: 6 bits per non-padding character.
        if digits.trim_end_matches('=').len() * 3 / 4 > max_len {
            return Err(ChapError::BinaryTooLong { max: max_len });
        }
        let out = BASE64_LENIENT
            .decode(digits)
            .map_err(|_| ChapError::BinaryBase64)?;
        if out.is_empty() {
            return Err(ChapError::BinaryEmpty);
        }
        if out.len() > max_len {
            return Err(ChapError::BinaryTooLong { max: max_len });
        }
        Ok(out)
    }
}

/// Parse CHAP_I: a number 0..=255, decimal (what everyone sends) or
/// `0x` hex (RFC 7143 §6.1 numeric encodings).
pub fn parse_identifier(value: &str) -> Result<u8, ChapError> {
    let bad = || ChapError::BadIdentifier(value.chars().take(16).collect());
    if value.is_empty() || value.len() > 8 {
        return Err(bad());
    }
    let n = if let Some(h) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u32::from_str_radix(h, 16).map_err(|_| bad())?
    } else {
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        value.parse::<u32>().map_err(|_| bad())?
    };
    u8::try_from(n).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hex_forms() {
        assert_eq!(decode_binary("0x00ff", 16), Ok(vec![0, 0xff]));
        assert_eq!(decode_binary("0XAbCd", 16), Ok(vec![0xab, 0xcd]));
        assert_eq!(
            decode_binary("0xabc", 16),
            Ok(vec![0x0a, 0xbc]),
            "odd digit count"
        );
        assert_eq!(encode_binary(&[0xde, 0xad]), "0xdead");
    }

    #[test]
    fn base64_forms() {
        assert_eq!(decode_binary("0bAP8=", 16), Ok(vec![0, 0xff]));
        assert_eq!(
            decode_binary("0BAP8", 16),
            Ok(vec![0, 0xff]),
            "padding optional"
        );
        assert_eq!(encode_base64(&[0, 0xff]), "0bAP8=");
    }

    #[test]
    fn malformed() {
        use ChapError::*;
        for (v, e) in [
            ("", BinaryPrefix),
            ("0", BinaryPrefix),
            ("00ff", BinaryPrefix),
            ("x00ff", BinaryPrefix),
            ("0y00", BinaryPrefix),
            ("0x", BinaryEmpty),
            ("0b", BinaryEmpty),
            ("0x0g", BinaryHex),
            ("0x 00", BinaryHex),
            ("0x00\n", BinaryHex),
            ("0x+1", BinaryHex),
            ("0b!!!!", BinaryBase64),
            ("0bA", BinaryBase64),
            ("0bAP8=AP8=", BinaryBase64),
            ("0b====", BinaryBase64),
        ] {
            assert_eq!(decode_binary(v, 16), Err(e), "{v:?}");
        }
    }

    #[test]
    fn length_bounds() {
        let max = "0x".to_string() + &"ab".repeat(MAX_BINARY_LEN);
        assert_eq!(
            decode_binary(&max, MAX_BINARY_LEN).map(|v| v.len()),
            Ok(1024)
        );
        let over = max.clone() + "ab";
        assert_eq!(
            decode_binary(&over, MAX_BINARY_LEN),
            Err(ChapError::BinaryTooLong { max: 1024 })
        );
        let b = encode_base64(&[7u8; 1024]);
        assert_eq!(decode_binary(&b, MAX_BINARY_LEN).map(|v| v.len()), Ok(1024));
        let b = encode_base64(&[7u8; 1025]);
        assert_eq!(
            decode_binary(&b, MAX_BINARY_LEN),
            Err(ChapError::BinaryTooLong { max: 1024 })
        );
        // A huge value is rejected on its encoded length.
        let huge = "0x".to_string() + &"0".repeat(10_000_000);
        assert_eq!(
            decode_binary(&huge, MAX_BINARY_LEN),
            Err(ChapError::BinaryTooLong { max: 1024 })
        );
    }

    #[test]
    fn identifiers() {
        assert_eq!(parse_identifier("0"), Ok(0));
        assert_eq!(parse_identifier("255"), Ok(255));
        assert_eq!(parse_identifier("007"), Ok(7));
        assert_eq!(parse_identifier("0x1f"), Ok(31));
        for bad in [
            "",
            "256",
            "-1",
            "+1",
            "1.0",
            "0x",
            "0x100",
            "abc",
            " 1",
            "123456789",
        ] {
            assert!(parse_identifier(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 1..300)) {
            prop_assert_eq!(decode_binary(&encode_binary(&data), 300).unwrap(), data.clone());
            prop_assert_eq!(decode_binary(&encode_base64(&data), 300).unwrap(), data);
        }

        #[test]
        fn never_panics(s in "\\PC{0,80}", max in 0usize..64) {
            if let Ok(v) = decode_binary(&s, max) {
                prop_assert!(v.len() <= max && !v.is_empty());
            }
            let _ = parse_identifier(&s);
        }
    }
}
