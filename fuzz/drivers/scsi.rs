//! SCSI parsers on untrusted bytes (shared by the `scsi_parse` fuzz target
//! and `proto/tests/fuzz_smoke_scsi.rs`).
//!
//! The first byte picks the parser, the rest is its input. Asserts: no
//! panic; results stay within the input; what parses re-encodes (with the
//! crate's own encoders) to bytes that parse back to the same value.

use proto::scsi::cdb::{encode_unmap_params, parse_unmap_params};
use proto::scsi::inquiry::{
    encode_device_identification, encode_lba_status, parse_device_identification, parse_lba_status,
    parse_vpd, vpd, BlockDeviceCharacteristics, BlockLimits, LogicalBlockProvisioning,
    ReadCapacity16, StandardInquiry,
};
use proto::scsi::lun::parse_report_luns;
use proto::scsi::mode::{parse_mode_parameters, parse_pages, Caching, Control, ModePage};
use proto::scsi::{Command, Sense};

/// Number of parsers `run` chooses from (the selector's low 7 bits modulo
/// this; bit 7 picks the 10-byte MODE SENSE form).
pub const PARSERS: u8 = 10;

pub fn run(input: &[u8]) {
    let Some((&sel, b)) = input.split_first() else {
        return;
    };
    match (sel & 0x7F) % PARSERS {
        0 => cdb(b),
        1 => sense(b),
        2 => report_luns(b),
        3 => vpd_page(b),
        4 => standard_inquiry(b),
        5 => read_capacity16(b),
        6 => lba_status(b),
        7 => mode_parameters(sel & 0x80 != 0, b),
        8 => unmap(b),
        _ => device_identification(b),
    }
}

/// Command::parse (target side, CDB from the initiator).
pub fn cdb(b: &[u8]) {
    if let Ok(c) = Command::parse(b) {
        let wire = c.encode();
        assert_eq!(
            Command::parse(wire.as_bytes()),
            Ok(c.clone()),
            "{c:?} re-encoded as {wire:?}"
        );
        let _ = c.data_out_length(512);
        let _ = c.data_out_length(u32::MAX);
    } else if let Err(e) = Command::parse(b) {
        let _ = e.sense().encode(true);
    }
}

/// Sense::parse (initiator side, sense data from the target).
pub fn sense(b: &[u8]) {
    if let Ok(s) = Sense::parse(b) {
        let desc = s.encode_descriptor();
        assert_eq!(Sense::parse(&desc).as_ref(), Ok(&s), "descriptor form");
        let fixed = s.encode_fixed();
        let back = Sense::parse(&fixed).expect("fixed form parses");
        assert_eq!(
            (back.key, back.asc, back.deferred),
            (s.key, s.asc, s.deferred)
        );
    }
}

pub fn report_luns(b: &[u8]) {
    if let Some((luns, total)) = parse_report_luns(b) {
        assert!(luns.len() * 8 <= b.len() - 8);
        assert!(luns.len() as u64 * 8 <= u64::from(total));
        for l in luns {
            let _ = l.number();
            assert_eq!(proto::scsi::Lun::from_wire(l.to_wire()), l);
        }
    } else {
        assert!(b.len() < 8);
    }
}

pub fn vpd_page(b: &[u8]) {
    let Some((page, body)) = parse_vpd(b) else {
        assert!(b.len() < 4);
        return;
    };
    assert!(body.len() <= b.len() - 4);
    match page {
        vpd::DEVICE_IDENTIFICATION => device_identification(body),
        vpd::BLOCK_LIMITS => {
            let l = BlockLimits::parse(body);
            assert_eq!(BlockLimits::parse(&l.encode()), l);
        }
        vpd::BLOCK_DEVICE_CHARACTERISTICS => {
            if let Some(c) = BlockDeviceCharacteristics::parse(body) {
                assert_eq!(BlockDeviceCharacteristics::parse(&c.encode()), Some(c));
            }
        }
        vpd::LOGICAL_BLOCK_PROVISIONING => {
            if let Some(p) = LogicalBlockProvisioning::parse(body) {
                assert_eq!(LogicalBlockProvisioning::parse(&p.encode()), Some(p));
            }
        }
        _ => {
            // Unknown page: every parser must still cope with the body.
            device_identification(body);
            let _ = BlockLimits::parse(body);
            let _ = BlockDeviceCharacteristics::parse(body);
            let _ = LogicalBlockProvisioning::parse(body);
        }
    }
}

pub fn device_identification(b: &[u8]) {
    let ds = parse_device_identification(b);
    let total: usize = ds.iter().map(|d| 4 + d.value.len()).sum();
    assert!(total <= b.len());
    let wire = encode_device_identification(&ds);
    assert_eq!(wire.len(), total);
    assert_eq!(parse_device_identification(&wire), ds);
}

pub fn standard_inquiry(b: &[u8]) {
    match StandardInquiry::parse(b) {
        Some(s) => assert_eq!(StandardInquiry::parse(&s.encode()), Some(s)),
        None => assert!(b.len() < 36),
    }
}

pub fn read_capacity16(b: &[u8]) {
    if let Some(r) = ReadCapacity16::parse(b) {
        assert_eq!(ReadCapacity16::parse(&r.encode()), Some(r));
    }
}

pub fn lba_status(b: &[u8]) {
    if let Some(v) = parse_lba_status(b) {
        assert!(8 + 16 * v.len() <= b.len());
        assert_eq!(parse_lba_status(&encode_lba_status(&v)), Some(v));
    }
}

pub fn mode_parameters(ten: bool, b: &[u8]) {
    let Ok(m) = parse_mode_parameters(ten, b) else {
        return;
    };
    assert!(m.pages_offset <= b.len());
    assert_eq!(
        m.block_descriptors.len() + if ten { 8 } else { 4 },
        m.pages_offset
    );
    for (off, p) in &m.pages {
        assert!(*off >= m.pages_offset && off + p.body.len() <= b.len());
        let _ = Caching::parse(&p.body);
        let _ = Control::parse(&p.body);
    }
    // The pages re-encode to a list that parses to the same pages (a body
    // over 255 bytes goes out in the sub_page format even for subpage 0).
    let pages: Vec<ModePage> = m.pages.into_iter().map(|(_, p)| p).collect();
    let mut wire = Vec::new();
    for p in &pages {
        p.encode_into(&mut wire);
    }
    let again: Vec<ModePage> = parse_pages(&wire)
        .expect("re-encoded pages parse")
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(again, pages);
}

pub fn unmap(b: &[u8]) {
    if let Ok(r) = parse_unmap_params(b) {
        assert!(8 + 16 * r.len() <= b.len().max(8));
        assert_eq!(parse_unmap_params(&encode_unmap_params(&r)), Ok(r));
    }
}
