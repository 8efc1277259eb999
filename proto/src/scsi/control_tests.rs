//! Byte-exact tests and properties of the control channel encodings.

use super::*;
use crate::scsi::cdb::{CdbSize, Command, Rw, COMMANDS};
use proptest::prelude::*;

fn rw(lba: u64, blocks: u32) -> Rw {
    Rw {
        lba,
        blocks,
        ..Rw::default()
    }
}

/// A standard READ/WRITE CDB of the given size built by the cdb module.
fn standard(write: bool, size: CdbSize, lba: u64, blocks: u32) -> Vec<u8> {
    let rw = rw(lba, blocks);
    let cmd = if write {
        Command::Write { size, rw }
    } else {
        Command::Read { size, rw }
    };
    cmd.encode().as_bytes().to_vec()
}

#[test]
fn tagged_write10_tag6_is_0xc0() {
    let mut cdb = standard(true, CdbSize::Ten, 0x1234, 8);
    assert_eq!(cdb[6], 0);
    set_tag(&mut cdb, 6).unwrap();
    assert_eq!(cdb[0], 0x2A);
    assert_eq!(cdb[6], 0xC0);
    assert_eq!(tag_of(&cdb), Some(6));
    // Only byte 6 changed.
    let plain = standard(true, CdbSize::Ten, 0x1234, 8);
    for (i, (a, b)) in cdb.iter().zip(&plain).enumerate() {
        if i != 6 {
            assert_eq!(a, b, "byte {i}");
        }
    }
}

#[test]
fn tag_positions_per_size() {
    for (size, byte, val) in [
        (CdbSize::Ten, 6, 0x20),
        (CdbSize::Twelve, 10, 0x20),
        (CdbSize::Sixteen, 15, 0x20),
    ] {
        let mut cdb = standard(false, size, 1, 1);
        set_tag(&mut cdb, 1).unwrap();
        assert_eq!(cdb[byte], val, "{size:?}");
        set_tag(&mut cdb, 7).unwrap();
        assert_eq!(cdb[byte], 0xE0, "{size:?}");
    }
}

#[test]
fn untagged_cdbs_are_standard_and_tag0_clears() {
    for write in [false, true] {
        for size in [CdbSize::Ten, CdbSize::Twelve, CdbSize::Sixteen] {
            let plain = standard(write, size, 77, 3);
            assert_eq!(tag_of(&plain), None);
            let mut c = plain.clone();
            set_tag(&mut c, 0).unwrap();
            assert_eq!(c, plain, "tag 0 leaves a standard CDB unchanged");
            set_tag(&mut c, 5).unwrap();
            assert_ne!(c, plain);
            // A standard device server refuses the tagged CDB...
            assert!(Command::parse(&c).is_err());
            set_tag(&mut c, 0).unwrap();
            assert_eq!(c, plain, "clearing restores the standard bytes");
        }
    }
}

#[test]
fn every_tag_and_size_round_trips_and_strips() {
    for write in [false, true] {
        for size in [CdbSize::Ten, CdbSize::Twelve, CdbSize::Sixteen] {
            for tag in 1..=MAX_TAG {
                let plain = standard(write, size, 0xABCD, 16);
                let mut c = plain.clone();
                set_tag(&mut c, tag).unwrap();
                assert_eq!(tag_of(&c), Some(tag), "{size:?} tag {tag}");
                let (t, stripped) = strip_tag(&c).unwrap();
                assert_eq!(t, tag);
                assert_eq!(&stripped[..plain.len()], &plain[..]);
                // ...and the stripped copy parses as the original command.
                assert_eq!(
                    Command::parse(&stripped).unwrap(),
                    Command::parse(&plain).unwrap()
                );
            }
        }
    }
}

#[test]
fn tag_bits_keep_group_number_low_bits_and_cdl_bits() {
    // GROUP NUMBER bits 4-0 survive tagging.
    let mut c = standard(true, CdbSize::Ten, 0, 1);
    c[6] = 0x1F;
    set_tag(&mut c, 6).unwrap();
    assert_eq!(c[6], 0xDF);
    assert_eq!(tag_of(&c), Some(6));
    // WRITE(16): DLD1/DLD0 (byte 14 bits 7-6) and DLD2 (byte 1 bit 0) are not touched.
    let mut c = standard(true, CdbSize::Sixteen, 0, 1);
    c[14] = 0xC0;
    c[1] |= 1;
    set_tag(&mut c, 3).unwrap();
    assert_eq!((c[14], c[1] & 1, c[15]), (0xC0, 1, 0x60));
}

#[test]
fn tag_cdb_on_built_cdbs() {
    let mut c = Command::Write {
        size: CdbSize::Ten,
        rw: rw(9, 1),
    }
    .encode();
    tag_cdb(&mut c, 6).unwrap();
    assert_eq!(c.as_bytes()[6], 0xC0);
    assert_eq!(tag_of(c.as_bytes()), Some(6));
    let mut inq = Command::TestUnitReady.encode();
    assert_eq!(tag_cdb(&mut inq, 1), Err(ControlError::NotTaggable(0)));
}

#[test]
fn set_tag_errors() {
    let mut c = standard(true, CdbSize::Ten, 0, 1);
    assert_eq!(set_tag(&mut c, 8), Err(ControlError::TagOutOfRange(8)));
    let mut inq = [0x12u8, 0, 0, 0, 36, 0];
    assert_eq!(set_tag(&mut inq, 1), Err(ControlError::NotTaggable(0x12)));
    let mut short = [0x8Au8; 10];
    assert!(matches!(
        set_tag(&mut short, 1),
        Err(ControlError::ShortCdb { need: 16, .. })
    ));
    assert_eq!(tag_of(&[]), None);
    assert_eq!(tag_of(&[0x2A, 0, 0]), None);
    assert_eq!(tag_of(&inq), None);
}

#[test]
fn widen_usage_adds_exactly_the_tag_bits() {
    for spec in COMMANDS {
        let mut u = spec.usage.to_vec();
        widen_usage(&mut u);
        let diff: Vec<(usize, u8)> = u
            .iter()
            .zip(spec.usage)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| (i, a ^ b))
            .collect();
        match tag_field(spec.opcode.0) {
            Some(f) => {
                assert_eq!(diff.len(), 1, "{}", spec.name);
                assert_eq!(diff[0].0, f.byte as usize);
                // The widened bits are the reserved ones minus what was used.
                assert_eq!(
                    diff[0].1 | (spec.usage[f.byte as usize] & f.mask()),
                    f.mask()
                );
            }
            None => assert!(diff.is_empty(), "{}", spec.name),
        }
    }
}

#[test]
fn vendor_cdb_bytes() {
    let c = CtlCommand::List { alloc_len: 4096 }.encode().unwrap();
    assert_eq!(c, [0xC7, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x00]);
    let g = CtlCommand::Get {
        name: "tag7.policy".into(),
        alloc_len: 512,
    }
    .encode()
    .unwrap();
    assert_eq!(&g[..3], &[0xC7, 1, 1]);
    assert_eq!(&g[3..14], b"tag7.policy");
    assert_eq!(&g[14..], &[2, 0]);
    let set = CtlCommand::Set {
        name: "io_mode".into(),
        value: "ro".into(),
    };
    let s = set.encode().unwrap();
    assert_eq!(&s[..3], &[0xC7, 2, 1]);
    assert_eq!(&s[3..14], b"io_mode\0\0\0\0");
    assert_eq!(&s[14..], &[0, 2]);
    assert_eq!(set.data_out().unwrap(), &b"ro"[..]);
    assert_eq!(CtlCommand::param_len(&s), 2);
    let d = CtlCommand::decode(&s).unwrap();
    assert_eq!(
        d,
        CtlCommand::Set {
            name: "io_mode".into(),
            value: String::new()
        }
    );
    assert_eq!(d.with_data_out(b"ro").unwrap(), set);
}

#[test]
fn vendor_cdb_errors() {
    let too_big = CtlCommand::List { alloc_len: 70000 }.encode();
    assert_eq!(too_big, Err(ControlError::AllocTooLarge(70000)));
    for bad in ["", "IO_MODE", "twelve_chars", "a b"] {
        let e = CtlCommand::Get {
            name: bad.into(),
            alloc_len: 1,
        }
        .encode();
        assert!(matches!(e, Err(ControlError::BadName(_))), "{bad:?}");
    }
    for bad in ["", "a=b", "tab\t"] {
        let e = CtlCommand::Set {
            name: "trace".into(),
            value: bad.into(),
        }
        .encode();
        assert_eq!(e, Err(ControlError::BadValue), "{bad:?}");
    }
    let good = CtlCommand::List { alloc_len: 8 }.encode().unwrap();
    assert!(matches!(
        CtlCommand::decode(&good[..15]),
        Err(ControlError::ShortCdb { .. })
    ));
    let mut c = good;
    c[1] = 0x03;
    assert_eq!(CtlCommand::decode(&c), Err(ControlError::ServiceAction(3)));
    c[1] = 0x20;
    assert_eq!(CtlCommand::decode(&c), Err(ControlError::Reserved(1)));
    let mut c = good;
    c[2] = 2;
    assert_eq!(CtlCommand::decode(&c), Err(ControlError::Version(2)));
    let mut c = good;
    c[5] = b'x';
    assert_eq!(CtlCommand::decode(&c), Err(ControlError::Reserved(3)));
    // A name with bytes after its NUL padding is refused.
    let mut g = CtlCommand::Get {
        name: "trace".into(),
        alloc_len: 64,
    }
    .encode()
    .unwrap();
    g[12] = b'x';
    assert!(matches!(
        CtlCommand::decode(&g),
        Err(ControlError::BadName(_))
    ));
    assert_eq!(
        CtlCommand::decode(&[0x28; 16]),
        Err(ControlError::WrongOpcode(0x28))
    );
}

fn sample_switches() -> Vec<Switch> {
    vec![
        Switch {
            name: "io_mode".into(),
            value: "wb".into(),
            writable: true,
            help: "wb|wt|ro".into(),
        },
        Switch {
            name: "tags".into(),
            value: "".into(),
            writable: false,
            help: "".into(),
        },
    ]
}

#[test]
fn switch_list_bytes_and_truncation() {
    let data = encode_switches(&sample_switches());
    let first = [1, 7, 2, 8];
    assert_eq!(&data[..8], &[0, 0, 0, 29, 1, 0, 0, 0]);
    assert_eq!(&data[8..12], &first);
    assert_eq!(&data[12..29], b"io_modewbwb|wt|ro");
    assert_eq!(&data[29..33], &[0, 4, 0, 0]);
    assert_eq!(data.len(), 37);
    assert_eq!(decode_switches(&data).unwrap(), sample_switches());
    assert_eq!(
        decode_switches(&data[..20]),
        Err(ControlError::Truncated {
            what: "switch list",
            need: 37,
            got: 20
        })
    );
    assert!(decode_switches(&data[..5]).is_err());
    let mut bad = data.clone();
    bad[9] = 0; // zero-length name
    assert!(decode_switches(&bad).is_err());
}

#[test]
fn vpd_round_trip_and_bytes() {
    let v = ControlVpd::new(true, false, vec!["io_mode".into(), "trace".into()]);
    let p = v.encode(0x00);
    assert_eq!(
        &p[..16],
        &[0, 0xC7, 0, 26, 1, 1, 0xC7, 7, 6, 5, 10, 5, 15, 5, 0, 2]
    );
    assert_eq!(&p[16..], b"\x07io_mode\x05trace");
    assert_eq!(ControlVpd::decode(&p).unwrap(), v);
    assert!(ControlVpd::decode(&p[..20]).is_err());
    let mut lie = p.clone();
    lie[15] = 3; // more names than bytes
    assert!(ControlVpd::decode(&lie).is_err());
}

proptest! {
    #[test]
    fn prop_tags_round_trip(op in prop::sample::select(vec![0x28u8, 0x2A, 0xA8, 0xAA, 0x88, 0x8A]),
                            body in prop::collection::vec(any::<u8>(), 15), tag in 0u8..=7) {
        let mut cdb = vec![op];
        cdb.extend(body);
        let before = cdb.clone();
        set_tag(&mut cdb, tag).unwrap();
        prop_assert_eq!(tag_of(&cdb), (tag != 0).then_some(tag));
        let f = tag_field(op).unwrap();
        for (i, (a, b)) in cdb.iter().zip(&before).enumerate() {
            if i == f.byte as usize {
                prop_assert_eq!(a & !f.mask(), b & !f.mask());
            } else {
                prop_assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn prop_vendor_cdb_round_trips(sa in 0u8..3, name in "[a-z0-9_.]{1,11}", value in "[!-<>-~]{1,40}",
                                   alloc in 0u32..=65535) {
        let cmd = match sa {
            0 => CtlCommand::List { alloc_len: alloc },
            1 => CtlCommand::Get { name, alloc_len: alloc },
            _ => CtlCommand::Set { name, value },
        };
        let cdb = cmd.encode().unwrap();
        let data = cmd.data_out().unwrap_or_default();
        prop_assert_eq!(CtlCommand::param_len(&cdb), data.len());
        let back = CtlCommand::decode(&cdb).unwrap().with_data_out(&data).unwrap();
        prop_assert_eq!(back, cmd);
    }

    #[test]
    fn prop_decoders_never_panic(data in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = CtlCommand::decode(&data);
        let _ = CtlCommand::param_len(&data);
        let _ = decode_switches(&data);
        let _ = ControlVpd::decode(&data);
        let _ = tag_of(&data);
        let _ = strip_tag(&data);
    }

    #[test]
    fn prop_switch_lists_round_trip(items in prop::collection::vec(
        ("[a-z_.]{1,11}", "[ -~]{0,30}", any::<bool>(), "[ -~]{0,60}"), 0..8)) {
        let list: Vec<Switch> = items.into_iter()
            .map(|(name, value, writable, help)| Switch { name, value, writable, help })
            .collect();
        prop_assert_eq!(decode_switches(&encode_switches(&list)).unwrap(), list);
    }
}
