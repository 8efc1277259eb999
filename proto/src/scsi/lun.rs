//! Logical unit numbers (SAM-5 §4.7): the 8-byte LUN field with the
//! peripheral device (00b) and flat space (01b) addressing methods, and the
//! REPORT LUNS parameter data (SPC-5 §6.33).

/// An 8-byte LUN field as carried in iSCSI PDUs (big-endian in a `u64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Lun(pub u64);

/// The REPORT LUNS well-known logical unit (SPC-5 §8.2: W-LUN C101h).
pub const REPORT_LUNS_WLUN: Lun = Lun(0xC101_0000_0000_0000);

impl Lun {
    /// Encodes a LUN number: peripheral addressing (SAM-5 §4.7.7.2) below
    /// 256, flat space addressing (§4.7.7.4) up to 16383.
    pub fn from_number(n: u16) -> Self {
        let first = if n < 256 {
            (n as u64) << 48
        } else {
            (0x4000 | (n as u64 & 0x3FFF)) << 48
        };
        Lun(first)
    }

    /// The raw 8-byte field, big-endian in a u64.
    pub fn from_u64(raw: u64) -> Self {
        Lun(raw)
    }

    pub fn to_u64(self) -> u64 {
        self.0
    }

    pub fn from_wire(b: [u8; 8]) -> Self {
        Lun(u64::from_be_bytes(b))
    }

    pub fn to_wire(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// The LUN number if this is a single-level peripheral or flat LUN
    /// (the remaining levels must be zero), else `None`.
    pub fn number(self) -> Option<u16> {
        if self.0 & 0x0000_FFFF_FFFF_FFFF != 0 {
            return None;
        }
        let first = (self.0 >> 48) as u16;
        match first >> 14 {
            0b00 if first >> 8 == 0 => Some(first & 0xFF),
            0b01 => Some(first & 0x3FFF),
            _ => None,
        }
    }
}

/// Builds REPORT LUNS parameter data (SPC-5 §6.33, table 228): 4-byte LUN
/// LIST LENGTH, 4 reserved bytes, then one 8-byte entry per LUN. The full
/// list is returned; the caller truncates to the allocation length.
pub fn encode_report_luns(luns: &[Lun]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 8 * luns.len());
    out.extend_from_slice(&((luns.len() * 8) as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    for l in luns {
        out.extend_from_slice(&l.to_wire());
    }
    out
}

/// Parses REPORT LUNS data. Returns the LUNs present in `buf` and the total
/// list length the target claims (to detect truncation).
pub fn parse_report_luns(buf: &[u8]) -> Option<(Vec<Lun>, u32)> {
    if buf.len() < 8 {
        return None;
    }
    let total = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let avail = (buf.len() - 8).min(total as usize) / 8;
    let luns = (0..avail)
        .map(|i| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&buf[8 + i * 8..16 + i * 8]);
            Lun::from_wire(w)
        })
        .collect();
    Some((luns, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peripheral_and_flat() {
        assert_eq!(Lun::from_number(0).to_wire(), [0; 8]);
        assert_eq!(Lun::from_number(5).to_wire(), [0, 5, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Lun::from_number(300).to_wire(),
            [0x41, 0x2C, 0, 0, 0, 0, 0, 0]
        );
        for n in [0u16, 1, 255, 256, 1000, 16383] {
            assert_eq!(Lun::from_number(n).number(), Some(n));
        }
        assert_eq!(REPORT_LUNS_WLUN.number(), None);
        assert_eq!(Lun(0x0001_0001_0000_0000).number(), None);
        assert_eq!(Lun(0x0100_0000_0000_0000).number(), None);
    }

    #[test]
    fn report_luns_round_trip() {
        let luns = [
            Lun::from_number(0),
            Lun::from_number(3),
            Lun::from_number(400),
        ];
        let b = encode_report_luns(&luns);
        assert_eq!(b.len(), 32);
        assert_eq!(&b[..4], &[0, 0, 0, 24]);
        let (p, total) = parse_report_luns(&b).unwrap();
        assert_eq!(p, luns);
        assert_eq!(total, 24);
        let (p, total) = parse_report_luns(&b[..20]).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(total, 24);
        assert!(parse_report_luns(&b[..7]).is_none());
    }
}
