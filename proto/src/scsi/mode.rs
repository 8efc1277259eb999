//! Mode parameters (SPC-5 §7.5, SBC-4 §6.5): the MODE SENSE / MODE SELECT
//! parameter header, block descriptors and the pages a disk reports.

/// Page codes.
pub mod page {
    pub const READ_WRITE_ERROR_RECOVERY: u8 = 0x01;
    pub const DISCONNECT_RECONNECT: u8 = 0x02;
    pub const CACHING: u8 = 0x08;
    pub const CONTROL: u8 = 0x0A;
    pub const INFORMATIONAL_EXCEPTIONS: u8 = 0x1C;
    pub const ALL: u8 = 0x3F;
}

/// Page control (PC) field of MODE SENSE.
pub mod pc {
    pub const CURRENT: u8 = 0;
    pub const CHANGEABLE: u8 = 1;
    pub const DEFAULT: u8 = 2;
    pub const SAVED: u8 = 3;
}

/// Device-specific parameter bits for direct-access devices (SBC-4 §6.5.1).
pub const DSP_WP: u8 = 0x80;
pub const DSP_DPOFUA: u8 = 0x10;

/// A mode page in wire form: `[page code (PS, SPF), page length, body...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModePage {
    pub page: u8,
    pub subpage: u8,
    pub ps: bool,
    pub body: Vec<u8>,
}

impl ModePage {
    pub fn new(page: u8, body: Vec<u8>) -> Self {
        Self {
            page,
            subpage: 0,
            ps: false,
            body,
        }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let ps = if self.ps { 0x80 } else { 0 };
        // SPC-5 §7.5.7: the page_0 format has a one-byte PAGE LENGTH, so a
        // body over 255 bytes needs the sub_page format (SPF=1) even for
        // subpage 0.
        if self.subpage != 0 || self.body.len() > 255 {
            out.push(ps | 0x40 | (self.page & 0x3F));
            out.push(self.subpage);
            out.extend_from_slice(&(self.body.len() as u16).to_be_bytes());
        } else {
            out.push(ps | (self.page & 0x3F));
            out.push(self.body.len() as u8);
        }
        out.extend_from_slice(&self.body);
    }
}

/// Parses a sequence of mode pages (e.g. the tail of MODE SELECT data).
/// Returns pages with their byte offsets within `b`; a truncated page is an
/// error carrying its offset.
pub fn parse_pages(b: &[u8]) -> Result<Vec<(usize, ModePage)>, usize> {
    let mut v = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let spf = b[i] & 0x40 != 0;
        let (hdr, len) = if spf {
            if i + 4 > b.len() {
                return Err(i);
            }
            (4, u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize)
        } else {
            if i + 2 > b.len() {
                return Err(i);
            }
            (2, b[i + 1] as usize)
        };
        if i + hdr + len > b.len() {
            return Err(i);
        }
        v.push((
            i,
            ModePage {
                page: b[i] & 0x3F,
                subpage: if spf { b[i + 1] } else { 0 },
                ps: b[i] & 0x80 != 0,
                body: b[i + hdr..i + hdr + len].to_vec(),
            },
        ));
        i += hdr + len;
    }
    Ok(v)
}

/// Caching mode page (SBC-4 §6.5.5), page length 12h.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Caching {
    pub wce: bool,
    pub rcd: bool,
}

impl Caching {
    pub fn page(&self) -> ModePage {
        let mut b = vec![0u8; 0x12];
        b[0] = if self.wce { 0x04 } else { 0 } | self.rcd as u8;
        ModePage::new(page::CACHING, b)
    }
    pub fn parse(body: &[u8]) -> Option<Self> {
        let b0 = *body.first()?;
        Some(Self {
            wce: b0 & 0x04 != 0,
            rcd: b0 & 0x01 != 0,
        })
    }
}

/// Control mode page (SPC-5 §7.5.8), page length 0Ah.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Control {
    pub tst: u8,
    pub d_sense: bool,
    pub gltsd: bool,
    pub queue_algorithm_modifier: u8,
    pub qerr: u8,
    pub swp: bool,
    pub tas: bool,
    pub busy_timeout_period: u16,
}

impl Control {
    pub fn page(&self) -> ModePage {
        let mut b = vec![0u8; 0x0A];
        b[0] = ((self.tst & 7) << 5)
            | if self.d_sense { 0x04 } else { 0 }
            | if self.gltsd { 0x02 } else { 0 };
        b[1] = ((self.queue_algorithm_modifier & 0x0F) << 4) | ((self.qerr & 3) << 1);
        b[2] = if self.swp { 0x08 } else { 0 };
        b[3] = if self.tas { 0x40 } else { 0 };
        b[6..8].copy_from_slice(&self.busy_timeout_period.to_be_bytes());
        ModePage::new(page::CONTROL, b)
    }
    pub fn parse(body: &[u8]) -> Option<Self> {
        if body.len() < 4 {
            return None;
        }
        Some(Self {
            tst: body[0] >> 5,
            d_sense: body[0] & 0x04 != 0,
            gltsd: body[0] & 0x02 != 0,
            queue_algorithm_modifier: body[1] >> 4,
            qerr: (body[1] >> 1) & 3,
            swp: body[2] & 0x08 != 0,
            tas: body[3] & 0x40 != 0,
            busy_timeout_period: body
                .get(6..8)
                .map(|s| u16::from_be_bytes([s[0], s[1]]))
                .unwrap_or(0),
        })
    }
}

/// Read-Write Error Recovery page (SBC-4 §6.5.9), page length 0Ah.
pub fn read_write_error_recovery(awre: bool, arre: bool) -> ModePage {
    let mut b = vec![0u8; 0x0A];
    b[0] = if awre { 0x80 } else { 0 } | if arre { 0x40 } else { 0 };
    ModePage::new(page::READ_WRITE_ERROR_RECOVERY, b)
}

/// Disconnect-Reconnect page (SPC-5 §7.5.9), page length 0Eh, all zero.
pub fn disconnect_reconnect() -> ModePage {
    ModePage::new(page::DISCONNECT_RECONNECT, vec![0u8; 0x0E])
}

/// Informational Exceptions Control page (SPC-5 §7.5.14), page length 0Ah.
pub fn informational_exceptions(dexcpt: bool, mrie: u8) -> ModePage {
    let mut b = vec![0u8; 0x0A];
    b[0] = if dexcpt { 0x08 } else { 0 };
    b[1] = mrie & 0x0F;
    ModePage::new(page::INFORMATIONAL_EXCEPTIONS, b)
}

/// Builds MODE SENSE data: header (6- or 10-byte form), an optional block
/// descriptor (short, or long when `long_lba`) and the pages.
pub fn encode_mode_sense(
    ten: bool,
    device_specific: u8,
    block_descriptor: Option<(u64, u32)>,
    long_lba: bool,
    pages: &[ModePage],
) -> Vec<u8> {
    let mut bd = Vec::new();
    if let Some((blocks, len)) = block_descriptor {
        if long_lba && ten {
            bd.extend_from_slice(&blocks.to_be_bytes());
            bd.extend_from_slice(&[0; 4]);
            bd.extend_from_slice(&len.to_be_bytes());
        } else {
            bd.extend_from_slice(&u32::try_from(blocks).unwrap_or(u32::MAX).to_be_bytes());
            bd.push(0);
            bd.extend_from_slice(&len.to_be_bytes()[1..]);
        }
    }
    let mut out = Vec::new();
    if ten {
        out.extend_from_slice(&[
            0,
            0,
            0,
            device_specific,
            (long_lba && !bd.is_empty()) as u8,
            0,
        ]);
        out.extend_from_slice(&(bd.len() as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[0, 0, device_specific, bd.len() as u8]);
    }
    out.extend_from_slice(&bd);
    for p in pages {
        p.encode_into(&mut out);
    }
    if ten {
        let l = (out.len() - 2) as u16;
        out[0..2].copy_from_slice(&l.to_be_bytes());
    } else {
        out[0] = (out.len() - 1).min(255) as u8;
    }
    out
}

/// Decoded MODE SENSE / MODE SELECT parameter list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeParameters {
    pub device_specific: u8,
    pub block_descriptors: Vec<u8>,
    /// Offset of the first page in the list (for field pointers).
    pub pages_offset: usize,
    pub pages: Vec<(usize, ModePage)>,
}

/// Why a mode parameter list was refused: the byte offset for the sense
/// field pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeParamError {
    pub byte: usize,
}

/// Parses a mode parameter list (header + block descriptors + pages).
/// Offsets in the result are relative to the start of `b`.
pub fn parse_mode_parameters(ten: bool, b: &[u8]) -> Result<ModeParameters, ModeParamError> {
    let hdr = if ten { 8 } else { 4 };
    if b.len() < hdr {
        return Err(ModeParamError { byte: 0 });
    }
    let (dsp, bdl) = if ten {
        (b[3], u16::from_be_bytes([b[6], b[7]]) as usize)
    } else {
        (b[2], b[3] as usize)
    };
    if hdr + bdl > b.len() {
        return Err(ModeParamError {
            byte: if ten { 6 } else { 3 },
        });
    }
    let pages = parse_pages(&b[hdr + bdl..])
        .map_err(|o| ModeParamError {
            byte: hdr + bdl + o,
        })?
        .into_iter()
        .map(|(o, p)| (o + hdr + bdl, p))
        .collect();
    Ok(ModeParameters {
        device_specific: dsp,
        block_descriptors: b[hdr..hdr + bdl].to_vec(),
        pages_offset: hdr + bdl,
        pages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_subpage_0_page_round_trips_in_sub_page_format() {
        let page = ModePage {
            page: 0x19,
            subpage: 0,
            ps: false,
            body: vec![0xA5; 300],
        };
        let mut out = Vec::new();
        page.encode_into(&mut out);
        assert_eq!(out[0] & 0x40, 0x40, "SPF must be set for a 300-byte body");
        assert_eq!(out.len(), 4 + 300);
        let parsed = parse_pages(&out).expect("parses");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].1.body.len(), 300);
        assert_eq!(parsed[0].1.subpage, 0);
    }

    #[test]
    fn sense6_layout() {
        let pages = [
            Caching {
                wce: true,
                rcd: false,
            }
            .page(),
            Control {
                d_sense: true,
                ..Default::default()
            }
            .page(),
        ];
        let b = encode_mode_sense(false, DSP_DPOFUA, Some((1000, 512)), false, &pages);
        assert_eq!(b[0] as usize, b.len() - 1);
        assert_eq!(b[2], 0x10);
        assert_eq!(b[3], 8);
        assert_eq!(&b[4..12], &[0, 0, 0x03, 0xE8, 0, 0, 2, 0]);
        assert_eq!(&b[12..14], &[0x08, 0x12]);
        assert_eq!(b[14], 0x04);
        let p = parse_mode_parameters(false, &b).unwrap();
        assert_eq!(p.pages.len(), 2);
        assert_eq!(p.pages[1].0, 12 + 20);
        assert!(Control::parse(&p.pages[1].1.body).unwrap().d_sense);
        assert_eq!(
            Caching::parse(&p.pages[0].1.body).unwrap(),
            Caching {
                wce: true,
                rcd: false
            }
        );
    }

    #[test]
    fn sense10_long_lba() {
        let b = encode_mode_sense(true, 0, Some((1 << 40, 4096)), true, &[]);
        assert_eq!(u16::from_be_bytes([b[0], b[1]]) as usize, b.len() - 2);
        assert_eq!(b[4], 1);
        assert_eq!(&b[6..8], &[0, 16]);
        let p = parse_mode_parameters(true, &b).unwrap();
        assert_eq!(p.block_descriptors.len(), 16);
        assert!(p.pages.is_empty());
    }

    #[test]
    fn truncated_rejected() {
        let b = encode_mode_sense(false, 0, None, false, &[Caching::default().page()]);
        assert_eq!(
            parse_mode_parameters(false, &b[..10]),
            Err(ModeParamError { byte: 4 })
        );
        assert_eq!(
            parse_mode_parameters(false, &b[..3]),
            Err(ModeParamError { byte: 0 })
        );
        let mut sub = Vec::new();
        ModePage {
            page: 0x0A,
            subpage: 1,
            ps: false,
            body: vec![1, 2],
        }
        .encode_into(&mut sub);
        assert_eq!(parse_pages(&sub).unwrap()[0].1.subpage, 1);
        assert!(parse_pages(&sub[..3]).is_err());
    }
}
