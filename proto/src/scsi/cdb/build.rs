//! Built CDBs without allocation ([`Cdb`]), shortcut builders for the
//! commands the initiator sends most, and the UNMAP parameter list (SBC-4 §5.30.2).

use std::fmt;

use super::{be16, be32, be64, CdbSize, Command, Opcode, Rw};

/// A built CDB: up to 16 bytes, no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cdb {
    pub(super) b: [u8; 16],
    len: u8,
}

impl Default for Cdb {
    fn default() -> Self {
        Self::new()
    }
}

impl Cdb {
    pub fn new() -> Self {
        Cdb { b: [0; 16], len: 0 }
    }
    pub(super) fn start(&mut self, op: Opcode, len: u8) {
        self.b = [0; 16];
        self.b[0] = op.0;
        self.len = len;
    }
    pub(super) fn put16(&mut self, at: usize, v: u16) {
        self.b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    pub(super) fn put32(&mut self, at: usize, v: u32) {
        self.b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    pub(super) fn put64(&mut self, at: usize, v: u64) {
        self.b[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.b[..self.len as usize]
    }
    /// Sets bits the usage masks call reserved (for tests and for the
    /// future control channel).
    pub fn set_byte(&mut self, at: usize, v: u8) {
        if at < self.len as usize {
            self.b[at] = v;
        }
    }
}

impl fmt::Debug for Cdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl AsRef<[u8]> for Cdb {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Convenience builders with the argument order initiators use.
pub fn read16(lba: u64, blocks: u32, fua: bool) -> Cdb {
    Command::Read {
        size: CdbSize::Sixteen,
        rw: Rw {
            lba,
            blocks,
            fua,
            ..Rw::default()
        },
    }
    .encode()
}
pub fn write16(lba: u64, blocks: u32, fua: bool) -> Cdb {
    Command::Write {
        size: CdbSize::Sixteen,
        rw: Rw {
            lba,
            blocks,
            fua,
            ..Rw::default()
        },
    }
    .encode()
}
pub fn read10(lba: u32, blocks: u16, fua: bool) -> Cdb {
    Command::Read {
        size: CdbSize::Ten,
        rw: Rw {
            lba: lba as u64,
            blocks: blocks as u32,
            fua,
            ..Rw::default()
        },
    }
    .encode()
}
pub fn write10(lba: u32, blocks: u16, fua: bool) -> Cdb {
    Command::Write {
        size: CdbSize::Ten,
        rw: Rw {
            lba: lba as u64,
            blocks: blocks as u32,
            fua,
            ..Rw::default()
        },
    }
    .encode()
}
pub fn synchronize_cache16(lba: u64, blocks: u32) -> Cdb {
    Command::SynchronizeCache {
        size: CdbSize::Sixteen,
        lba,
        blocks,
        immed: false,
    }
    .encode()
}
pub fn write_same16(lba: u64, blocks: u32, unmap: bool, ndob: bool) -> Cdb {
    Command::WriteSame {
        size: CdbSize::Sixteen,
        lba,
        blocks,
        unmap,
        ndob,
        group: 0,
    }
    .encode()
}
pub fn unmap(param_len: u16) -> Cdb {
    Command::Unmap {
        param_len,
        group: 0,
    }
    .encode()
}
pub fn inquiry(evpd: bool, page_code: u8, alloc_len: u16) -> Cdb {
    Command::Inquiry {
        evpd,
        page_code,
        alloc_len,
    }
    .encode()
}
pub fn read_capacity16(alloc_len: u32) -> Cdb {
    Command::ReadCapacity16 { alloc_len }.encode()
}
pub fn report_luns(alloc_len: u32) -> Cdb {
    Command::ReportLuns {
        select_report: 0,
        alloc_len,
    }
    .encode()
}
pub fn test_unit_ready() -> Cdb {
    Command::TestUnitReady.encode()
}

/// Most block descriptors one UNMAP parameter list can carry: its length
/// field is 16 bits (8-byte header + 16 bytes per descriptor <= 65535).
pub const MAX_UNMAP_DESCRIPTORS: usize = 4095;

/// UNMAP parameter list (SBC-4 §5.32.2): header + 16-byte block descriptors.
/// At most [`MAX_UNMAP_DESCRIPTORS`] ranges are encoded: callers split
/// longer lists into several UNMAP commands (the initiator's `unmap` does).
pub fn encode_unmap_params(ranges: &[(u64, u32)]) -> Vec<u8> {
    let ranges = &ranges[..ranges.len().min(MAX_UNMAP_DESCRIPTORS)];
    let mut out = Vec::with_capacity(8 + 16 * ranges.len());
    let desc_len = (ranges.len() * 16) as u16;
    out.extend_from_slice(&(desc_len + 6).to_be_bytes());
    out.extend_from_slice(&desc_len.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    for (lba, n) in ranges {
        out.extend_from_slice(&lba.to_be_bytes());
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
    }
    out
}

/// Error in an UNMAP parameter list: the byte offset for the field pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamError {
    pub byte: u16,
}

/// Parses an UNMAP parameter list into (LBA, blocks) ranges. An empty list
/// (fewer than 8 bytes) gives no ranges.
pub fn parse_unmap_params(p: &[u8]) -> Result<Vec<(u64, u32)>, ParamError> {
    if p.len() < 8 {
        return Ok(Vec::new());
    }
    let desc_len = be16(&p[2..]) as usize;
    let avail = (p.len() - 8).min(desc_len);
    if !desc_len.is_multiple_of(16) {
        return Err(ParamError { byte: 2 });
    }
    let n = avail / 16;
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let d = &p[8 + i * 16..8 + i * 16 + 16];
        v.push((be64(d), be32(&d[8..])));
    }
    Ok(v)
}
