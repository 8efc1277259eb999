//! EXTENDED COPY (LID1) parameter list parsing (SPC-4 §6.3, SPC-3 §6.3):
//! the 16-byte header, identification-descriptor target descriptors (E4h)
//! and block-to-block segment descriptors (02h). Execution lives in the
//! device server; this module only validates and decodes, in the order the
//! standard's error precedence implies.

use proto::scsi::{Asc, Sense};

/// Copy manager limits, reported by RECEIVE COPY RESULTS (OPERATING
/// PARAMETERS).
pub const MAX_TARGET_DESCRIPTORS: usize = 2;
pub const MAX_SEGMENT_DESCRIPTORS: usize = 8;
pub const MAX_DESCRIPTOR_LIST_LENGTH: usize = 1024;
/// Largest segment, in bytes.
pub const MAX_SEGMENT_LENGTH: u32 = 64 << 20;

pub const HEADER_LEN: usize = 16;
pub const TARGET_DESCRIPTOR_LEN: usize = 32;
pub const TYPE_IDENTIFICATION_TARGET: u8 = 0xE4;
pub const TYPE_BLOCK_TO_BLOCK: u8 = 0x02;
pub const B2B_SEGMENT_LEN: usize = 28;

/// A copy target named by a designation descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub designator_type: u8,
    pub designator: Vec<u8>,
}

/// A block-to-block segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub src: u16,
    pub dst: u16,
    /// Number of blocks counts destination blocks (DC = 1).
    pub dc: bool,
    pub blocks: u16,
    pub src_lba: u64,
    pub dst_lba: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyList {
    pub list_id: u8,
    /// LIST ID USAGE 00b: results are held for RECEIVE COPY RESULTS.
    pub hold: bool,
    pub targets: Vec<Target>,
    pub segments: Vec<Segment>,
}

fn pll_error() -> Sense {
    Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR)
}

/// Parses a LID1 parameter list. `p` is exactly the parameter list.
pub fn parse(p: &[u8]) -> Result<CopyList, Sense> {
    if p.len() < HEADER_LEN {
        return Err(pll_error());
    }
    let tgt_len = u16::from_be_bytes([p[2], p[3]]) as usize;
    let seg_len = u32::from_be_bytes([p[8], p[9], p[10], p[11]]) as usize;
    let inline_len = u32::from_be_bytes([p[12], p[13], p[14], p[15]]) as usize;
    if HEADER_LEN
        .saturating_add(tgt_len)
        .saturating_add(seg_len)
        .saturating_add(inline_len)
        > p.len()
    {
        return Err(pll_error());
    }
    if tgt_len + seg_len > MAX_DESCRIPTOR_LIST_LENGTH {
        return Err(pll_error());
    }
    if inline_len != 0 {
        return Err(Sense::invalid_field_in_parameter_list(12, None));
    }
    if !tgt_len.is_multiple_of(TARGET_DESCRIPTOR_LEN) {
        return Err(Sense::invalid_field_in_parameter_list(2, None));
    }
    if tgt_len / TARGET_DESCRIPTOR_LEN > MAX_TARGET_DESCRIPTORS {
        return Err(Sense::illegal_request(Asc::TOO_MANY_TARGET_DESCRIPTORS));
    }
    let mut targets = Vec::new();
    for (i, d) in p[HEADER_LEN..HEADER_LEN + tgt_len]
        .chunks(TARGET_DESCRIPTOR_LEN)
        .enumerate()
    {
        let off = (HEADER_LEN + i * TARGET_DESCRIPTOR_LEN) as u16;
        // Only identification descriptors of direct-access LUs.
        if d[0] != TYPE_IDENTIFICATION_TARGET {
            return Err(
                Sense::illegal_request(Asc::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE)
                    .with_field_pointer(false, off, None),
            );
        }
        if d[1] & 0x1F != 0 {
            return Err(
                Sense::illegal_request(Asc::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE)
                    .with_field_pointer(false, off + 1, None),
            );
        }
        let dlen = (d[7] as usize).min(20);
        targets.push(Target {
            designator_type: d[5] & 0x0F,
            designator: d[8..8 + dlen].to_vec(),
        });
    }
    let segs = &p[HEADER_LEN + tgt_len..HEADER_LEN + tgt_len + seg_len];
    let mut segments = Vec::new();
    let mut i = 0;
    while i < segs.len() {
        let off = (HEADER_LEN + tgt_len + i) as u16;
        if i + 4 > segs.len() {
            return Err(pll_error());
        }
        if segments.len() == MAX_SEGMENT_DESCRIPTORS {
            return Err(Sense::illegal_request(Asc::TOO_MANY_SEGMENT_DESCRIPTORS));
        }
        let d = &segs[i..];
        if d[0] != TYPE_BLOCK_TO_BLOCK {
            return Err(
                Sense::illegal_request(Asc::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE)
                    .with_field_pointer(false, off, None),
            );
        }
        let len = u16::from_be_bytes([d[2], d[3]]) as usize + 4;
        if len != B2B_SEGMENT_LEN {
            return Err(Sense::invalid_field_in_parameter_list(off + 2, None));
        }
        if d.len() < len {
            return Err(pll_error());
        }
        segments.push(Segment {
            dc: d[1] & 0x02 != 0,
            src: u16::from_be_bytes([d[4], d[5]]),
            dst: u16::from_be_bytes([d[6], d[7]]),
            blocks: u16::from_be_bytes([d[10], d[11]]),
            src_lba: u64::from_be_bytes(d[12..20].try_into().unwrap_or([0; 8])),
            dst_lba: u64::from_be_bytes(d[20..28].try_into().unwrap_or([0; 8])),
        });
        i += len;
    }
    Ok(CopyList {
        list_id: p[0],
        hold: (p[1] >> 3) & 3 == 0,
        targets,
        segments,
    })
}

/// RECEIVE COPY RESULTS, OPERATING PARAMETERS (SPC-3 §6.18.4).
pub fn operating_parameters() -> Vec<u8> {
    let mut b = vec![0u8; 44];
    b[4] = 0x01; // SNLID: list ids are not required.
    b[8..10].copy_from_slice(&(MAX_TARGET_DESCRIPTORS as u16).to_be_bytes());
    b[10..12].copy_from_slice(&(MAX_SEGMENT_DESCRIPTORS as u16).to_be_bytes());
    b[12..16].copy_from_slice(&(MAX_DESCRIPTOR_LIST_LENGTH as u32).to_be_bytes());
    b[16..20].copy_from_slice(&MAX_SEGMENT_LENGTH.to_be_bytes());
    b[35] = 1; // MAXIMUM CONCURRENT COPIES
    let types = [TYPE_BLOCK_TO_BLOCK, TYPE_IDENTIFICATION_TARGET];
    b[43] = types.len() as u8;
    b.extend_from_slice(&types);
    let avail = (b.len() - 4) as u32;
    b[0..4].copy_from_slice(&avail.to_be_bytes());
    b
}

/// RECEIVE COPY RESULTS, COPY STATUS (SPC-3 §6.18.2).
pub fn copy_status(ok: bool, segments_processed: u16, bytes: u64) -> Vec<u8> {
    let mut b = vec![0u8; 12];
    b[3] = 8;
    b[4] = if ok { 0x01 } else { 0x02 };
    b[5..7].copy_from_slice(&segments_processed.to_be_bytes());
    // TRANSFER COUNT UNITS: bytes, or KiB when it does not fit.
    let (units, count) = if bytes <= u32::MAX as u64 {
        (0u8, bytes as u32)
    } else {
        (1u8, (bytes >> 10).min(u32::MAX as u64) as u32)
    };
    b[7] = units;
    b[8..12].copy_from_slice(&count.to_be_bytes());
    b
}

/// Third-party Copy VPD page body (SPC-4 §7.8.17): one Supported Commands
/// descriptor listing EXTENDED COPY (LID1) and RECEIVE COPY RESULTS.
pub fn third_party_copy_vpd() -> Vec<u8> {
    let list: &[(u8, &[u8])] = &[(0x83, &[0x00]), (0x84, &[0x00, 0x03])];
    let mut l = Vec::new();
    for (op, sas) in list {
        l.push(*op);
        l.push(sas.len() as u8);
        l.extend_from_slice(sas);
    }
    let mut d = vec![0x00, 0x01, 0, 0, l.len() as u8];
    d.extend_from_slice(&l);
    while d.len() % 4 != 0 {
        d.push(0);
    }
    let dl = (d.len() - 4) as u16;
    d[2..4].copy_from_slice(&dl.to_be_bytes());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(targets: usize, segs: usize, seg_type: u8, tgt_type: u8) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[0] = 7;
        for _ in 0..targets {
            let mut d = vec![0u8; 32];
            d[0] = tgt_type;
            d[4..8].copy_from_slice(&[0x01, 0x03, 0x00, 16]);
            d[8] = 0x60;
            d[31] = 2; // 512-byte blocks
            p.extend_from_slice(&d);
        }
        for _ in 0..segs {
            let mut d = vec![0u8; 28];
            d[0] = seg_type;
            d[2..4].copy_from_slice(&24u16.to_be_bytes());
            d[10..12].copy_from_slice(&8u16.to_be_bytes());
            d[20..28].copy_from_slice(&100u64.to_be_bytes());
            p.extend_from_slice(&d);
        }
        let tl = (targets * 32) as u16;
        p[2..4].copy_from_slice(&tl.to_be_bytes());
        p[8..12].copy_from_slice(&((segs * 28) as u32).to_be_bytes());
        p
    }

    #[test]
    fn parses_simple_list() {
        let c = parse(&list(1, 1, 2, 0xE4)).unwrap();
        assert_eq!(c.list_id, 7);
        assert!(c.hold);
        assert_eq!(c.targets[0].designator_type, 3);
        assert_eq!(c.targets[0].designator.len(), 16);
        assert_eq!(
            c.segments[0],
            Segment {
                src: 0,
                dst: 0,
                dc: false,
                blocks: 8,
                src_lba: 0,
                dst_lba: 100
            }
        );
    }

    #[test]
    fn errors_in_precedence_order() {
        let asc = |r: Result<CopyList, Sense>| r.unwrap_err().asc;
        let p = list(1, 1, 2, 0xE4);
        assert_eq!(
            asc(parse(&p[..HEADER_LEN + 31])),
            Asc::PARAMETER_LIST_LENGTH_ERROR
        );
        assert_eq!(asc(parse(&p[..10])), Asc::PARAMETER_LIST_LENGTH_ERROR);
        assert_eq!(
            asc(parse(&list(3, 1, 2, 0xE4))),
            Asc::TOO_MANY_TARGET_DESCRIPTORS
        );
        assert_eq!(
            asc(parse(&list(1, 9, 2, 0xE4))),
            Asc::TOO_MANY_SEGMENT_DESCRIPTORS
        );
        assert_eq!(
            asc(parse(&list(1, 1, 2, 0xE0))),
            Asc::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE
        );
        assert_eq!(
            asc(parse(&list(1, 1, 3, 0xE4))),
            Asc::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE
        );
        assert_eq!(
            asc(parse(&list(3, 40, 2, 0xE4))),
            Asc::PARAMETER_LIST_LENGTH_ERROR
        );
    }

    #[test]
    fn reports() {
        let op = operating_parameters();
        assert_eq!(
            u32::from_be_bytes(op[0..4].try_into().unwrap()) as usize,
            op.len() - 4
        );
        assert_eq!(op[43], 2);
        let cs = copy_status(true, 1, 4096);
        assert_eq!((cs[4], cs[6], &cs[8..12]), (1, 1, &[0, 0, 0x10, 0][..]));
        let v = third_party_copy_vpd();
        assert_eq!(v.len() % 4, 0);
        assert_eq!(u16::from_be_bytes([v[2], v[3]]) as usize, v.len() - 4);
        assert_eq!(v[4] as usize, 2 + 1 + 2 + 2);
    }
}
