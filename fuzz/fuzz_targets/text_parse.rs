//! Fuzz target: the text key=value parser (RFC 7143 §6.1) over arbitrary
//! bytes. Asserts: no panic, and whatever parses re-encodes to a segment
//! that parses to the same pairs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = proto::text::parse_kv(data) {
        let encoded = proto::text::encode_kv(&pairs);
        let again = proto::text::parse_kv(&encoded).expect("encoded text parses");
        assert_eq!(again, pairs);
    }
});
