//! The control-channel parsers on untrusted bytes (shared by the
//! `control_parse` fuzz target and `proto/tests/fuzz_smoke_control.rs`).
//!
//! The first byte picks the parser, the rest is its input. Asserts: no
//! panic; what parses re-encodes to bytes that parse back to the same value.

use proto::scsi::control::{
    decode_switches, encode_switches, strip_tag, tag_of, ControlVpd, CtlCommand,
};

pub const PARSERS: u8 = 4;

pub fn run(input: &[u8]) {
    let Some((&sel, b)) = input.split_first() else {
        return;
    };
    match sel % PARSERS {
        0 => command(b),
        1 => switches(b),
        2 => vpd(b),
        _ => tags(b),
    }
}

/// CtlCommand::decode, then (for SET) the Data-Out after the 16-byte CDB.
pub fn command(b: &[u8]) {
    let Ok(cmd) = CtlCommand::decode(b) else {
        return;
    };
    let n = CtlCommand::param_len(b);
    let data = b.get(16..).unwrap_or_default();
    let Ok(full) = cmd.with_data_out(&data[..n.min(data.len())]) else {
        return;
    };
    let cdb = full.encode().expect("a decoded command re-encodes");
    let again = CtlCommand::decode(&cdb).expect("re-encoded CDB decodes");
    let again = again
        .with_data_out(&full.data_out().unwrap_or_default())
        .expect("re-encoded data decodes");
    assert_eq!(again, full);
}

pub fn switches(b: &[u8]) {
    if let Ok(list) = decode_switches(b) {
        let bytes = encode_switches(&list);
        assert_eq!(decode_switches(&bytes).expect("round trip"), list);
        assert!(bytes.len() <= b.len());
    }
}

pub fn vpd(b: &[u8]) {
    if let Ok(v) = ControlVpd::decode(b) {
        let page = v.encode(b[0]);
        assert_eq!(ControlVpd::decode(&page).expect("round trip"), v);
    }
}

pub fn tags(b: &[u8]) {
    let tag = tag_of(b);
    match strip_tag(b) {
        Some((t, stripped)) => {
            assert_eq!(Some(t), tag);
            assert_eq!(tag_of(&stripped), None);
        }
        None => assert_eq!(tag, None),
    }
}
