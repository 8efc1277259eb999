//! Fuzz target: the control-channel parsers (vendor command CDB + SET
//! Data-Out, switch list, control VPD page, tag bits); the first byte picks
//! the parser. See `drivers/control.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../drivers/control.rs"]
mod driver;

fuzz_target!(|input: &[u8]| driver::run(input));
