//! Fuzz target: the SCSI parsers (CDB, sense, REPORT LUNS, VPD, INQUIRY,
//! READ CAPACITY(16), GET LBA STATUS, mode parameters, UNMAP) on arbitrary
//! bytes; the first byte picks the parser. See `drivers/scsi.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../drivers/scsi.rs"]
mod driver;

fuzz_target!(|input: &[u8]| driver::run(input));
