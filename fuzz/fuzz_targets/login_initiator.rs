//! Fuzz target: `InitiatorLogin::handle_response` fed a sequence of
//! arbitrary Login Responses (RFC 7143 §6.3, §11.13). Asserts no panic and
//! an end within the PDU bound. See `drivers/login.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // each target drives one role
#[path = "../drivers/login.rs"]
mod driver;

fuzz_target!(|input: &[u8]| {
    driver::initiator(input);
});
