//! Basic Header Segment helpers (RFC 7143 §11.2.1).
//!
//! Every PDU starts with a 48-byte BHS. The fields common to all opcodes are
//! at fixed offsets; the rest is opcode specific and named in each PDU file.

use crate::serial::SerialNumber;

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;

/// Byte 0: bit 6 is the immediate-delivery bit, bits 0..5 the opcode.
pub(crate) const OPCODE: usize = 0;
/// Byte 1: opcode-specific flags (bit 7 is usually the final bit).
pub(crate) const FLAGS: usize = 1;
/// Byte 4: TotalAHSLength, in 4-byte words.
pub(crate) const TOTAL_AHS_LENGTH: usize = 4;
/// Bytes 5..8: DataSegmentLength (24 bits, big-endian), excluding padding.
pub(crate) const DATA_SEGMENT_LENGTH: usize = 5;
/// Bytes 8..16: LUN or opcode-specific fields.
pub(crate) const LUN: usize = 8;
/// Bytes 16..20: Initiator Task Tag.
pub(crate) const ITT: usize = 16;

/// Immediate delivery bit in byte 0.
pub(crate) const IMMEDIATE_BIT: u8 = 0x40;
/// Mask of the opcode bits in byte 0.
pub(crate) const OPCODE_MASK: u8 = 0x3f;
/// Final bit in byte 1 for most opcodes.
pub(crate) const FINAL_BIT: u8 = 0x80;

/// Read-only view of a BHS.
#[derive(Clone, Copy)]
pub(crate) struct Bhs<'a>(pub(crate) &'a [u8; BHS_LEN]);

impl Bhs<'_> {
    pub(crate) fn u8(&self, off: usize) -> u8 {
        self.0[off]
    }
    pub(crate) fn flag(&self, off: usize, mask: u8) -> bool {
        self.0[off] & mask != 0
    }
    pub(crate) fn u16(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.0[off], self.0[off + 1]])
    }
    pub(crate) fn u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_be_bytes(b)
    }
    /// A 32-bit sequence number (RFC 7143 §4.2.2: serial arithmetic).
    pub(crate) fn sn(&self, off: usize) -> SerialNumber {
        SerialNumber(self.u32(off))
    }
    pub(crate) fn u64(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[off..off + 8]);
        u64::from_be_bytes(b)
    }
    pub(crate) fn immediate(&self) -> bool {
        self.flag(OPCODE, IMMEDIATE_BIT)
    }
    pub(crate) fn final_bit(&self) -> bool {
        self.flag(FLAGS, FINAL_BIT)
    }
    pub(crate) fn lun(&self) -> u64 {
        self.u64(LUN)
    }
    pub(crate) fn itt(&self) -> u32 {
        self.u32(ITT)
    }
    pub(crate) fn total_ahs_length(&self) -> usize {
        usize::from(self.0[TOTAL_AHS_LENGTH]) * 4
    }
    pub(crate) fn data_segment_length(&self) -> u32 {
        u32::from_be_bytes([
            0,
            self.0[DATA_SEGMENT_LENGTH],
            self.0[DATA_SEGMENT_LENGTH + 1],
            self.0[DATA_SEGMENT_LENGTH + 2],
        ])
    }
}

/// A BHS being built; starts all-zero (reserved fields stay 0).
pub(crate) struct BhsMut(pub(crate) [u8; BHS_LEN]);

impl BhsMut {
    pub(crate) fn new() -> Self {
        BhsMut([0; BHS_LEN])
    }
    pub(crate) fn set_u8(&mut self, off: usize, v: u8) {
        self.0[off] = v;
    }
    pub(crate) fn set_flag(&mut self, off: usize, mask: u8, on: bool) {
        if on {
            self.0[off] |= mask;
        } else {
            self.0[off] &= !mask;
        }
    }
    pub(crate) fn set_u16(&mut self, off: usize, v: u16) {
        self.0[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn set_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn set_sn(&mut self, off: usize, v: SerialNumber) {
        self.set_u32(off, v.get());
    }
    pub(crate) fn set_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn set_immediate(&mut self, on: bool) {
        self.set_flag(OPCODE, IMMEDIATE_BIT, on);
    }
    pub(crate) fn set_final(&mut self, on: bool) {
        self.set_flag(FLAGS, FINAL_BIT, on);
    }
    pub(crate) fn set_lun(&mut self, lun: u64) {
        self.set_u64(LUN, lun);
    }
    pub(crate) fn set_itt(&mut self, itt: u32) {
        self.set_u32(ITT, itt);
    }
}

/// Declares an open enumeration: a newtype over an integer with named
/// constants, which keeps (and re-encodes) values it does not know.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($ty:ty) {
            $( $(#[$vmeta:meta])* $var:ident = $val:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $ty);

        impl $name {
            $( $(#[$vmeta])* pub const $var: $name = $name($val); )*

            /// The constant's name, or `None` for a value this crate does not know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( v if v == $val => Some(stringify!($var)), )*
                    _ => None,
                }
            }

            /// Whether the value is one of the named constants.
            pub fn is_known(self) -> bool {
                self.name().is_some()
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}(Unknown({:#x}))", stringify!($name), self.0),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Debug::fmt(self, f)
            }
        }

        impl From<$ty> for $name {
            fn from(v: $ty) -> Self {
                $name(v)
            }
        }

        impl From<$name> for $ty {
            fn from(v: $name) -> $ty {
                v.0
            }
        }
    };
}
pub(crate) use open_enum;
