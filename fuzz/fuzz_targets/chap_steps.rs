//! Fuzz target: CHAP `decode_binary`, `parse_identifier` and the
//! `TargetChap` / `InitiatorChap` steps on arbitrary key/value lists
//! (RFC 7143 §12.1.3). See `drivers/chap.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../drivers/chap.rs"]
mod driver;

fuzz_target!(|input: &[u8]| {
    driver::run(input);
});
