//! Command descriptor blocks: parsers (target side) and builders (initiator
//! side) for the SPC-5 / SBC-4 commands this stack uses.
//!
//! Every supported CDB layout is described once, in [`COMMANDS`], by its
//! CDB USAGE DATA bit mask (SPC-5 §6.35.3, REPORT SUPPORTED OPERATION CODES
//! one-command format): a bit set in the mask is a bit the device server
//! looks at. `Command::parse` rejects every bit outside that mask with
//! INVALID FIELD IN CDB and a field pointer to the offending bit, so the mask
//! the target reports and the bits it accepts can never disagree. This is also
//! the single place where a future control channel claims reserved bits: it
//! widens the mask of the command it rides on.
//!
//! Files: this module holds the operation codes, the usage-mask table and
//! the [`Command`] type; `decode.rs` parses (target side), `encode.rs`
//! builds (initiator side), `rw.rs` is the table of READ/WRITE-shaped
//! operation codes both read, `build.rs` holds [`Cdb`], shortcut builders and
//! the UNMAP parameter list.
//!
//! Protection information is not supported: the RDPROTECT / WRPROTECT /
//! VRPROTECT / ORPROTECT fields are outside the masks, so a non-zero value is
//! rejected (SBC-4 §5.x: "If the logical unit does not support protection
//! information, ... INVALID FIELD IN CDB").

use std::fmt;

/// SCSI operation code. Open newtype: unknown values round-trip.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Opcode(pub u8);

impl Opcode {
    pub const TEST_UNIT_READY: Self = Self(0x00);
    pub const REQUEST_SENSE: Self = Self(0x03);
    pub const READ_6: Self = Self(0x08);
    pub const WRITE_6: Self = Self(0x0A);
    pub const INQUIRY: Self = Self(0x12);
    pub const MODE_SELECT_6: Self = Self(0x15);
    pub const RESERVE_6: Self = Self(0x16);
    pub const RELEASE_6: Self = Self(0x17);
    pub const MODE_SENSE_6: Self = Self(0x1A);
    pub const START_STOP_UNIT: Self = Self(0x1B);
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: Self = Self(0x1E);
    pub const READ_CAPACITY_10: Self = Self(0x25);
    pub const READ_10: Self = Self(0x28);
    pub const WRITE_10: Self = Self(0x2A);
    pub const WRITE_AND_VERIFY_10: Self = Self(0x2E);
    pub const VERIFY_10: Self = Self(0x2F);
    pub const PRE_FETCH_10: Self = Self(0x34);
    pub const SYNCHRONIZE_CACHE_10: Self = Self(0x35);
    pub const READ_DEFECT_DATA_10: Self = Self(0x37);
    pub const WRITE_SAME_10: Self = Self(0x41);
    pub const UNMAP: Self = Self(0x42);
    pub const SANITIZE: Self = Self(0x48);
    pub const MODE_SELECT_10: Self = Self(0x55);
    pub const RESERVE_10: Self = Self(0x56);
    pub const RELEASE_10: Self = Self(0x57);
    pub const MODE_SENSE_10: Self = Self(0x5A);
    pub const PERSISTENT_RESERVE_IN: Self = Self(0x5E);
    pub const PERSISTENT_RESERVE_OUT: Self = Self(0x5F);
    pub const EXTENDED_COPY: Self = Self(0x83);
    pub const RECEIVE_COPY_RESULTS: Self = Self(0x84);
    pub const READ_16: Self = Self(0x88);
    pub const COMPARE_AND_WRITE: Self = Self(0x89);
    pub const WRITE_16: Self = Self(0x8A);
    pub const ORWRITE_16: Self = Self(0x8B);
    pub const WRITE_AND_VERIFY_16: Self = Self(0x8E);
    pub const VERIFY_16: Self = Self(0x8F);
    pub const PRE_FETCH_16: Self = Self(0x90);
    pub const SYNCHRONIZE_CACHE_16: Self = Self(0x91);
    pub const WRITE_SAME_16: Self = Self(0x93);
    pub const WRITE_ATOMIC_16: Self = Self(0x9C);
    pub const SERVICE_ACTION_IN_16: Self = Self(0x9E);
    pub const REPORT_LUNS: Self = Self(0xA0);
    pub const MAINTENANCE_IN: Self = Self(0xA3);
    pub const READ_12: Self = Self(0xA8);
    pub const WRITE_12: Self = Self(0xAA);
    pub const WRITE_AND_VERIFY_12: Self = Self(0xAE);
    pub const VERIFY_12: Self = Self(0xAF);
    pub const READ_DEFECT_DATA_12: Self = Self(0xB7);

    /// Operation codes whose CDB byte 1 bits 4..0 carry a SERVICE ACTION.
    pub fn has_service_action(self) -> bool {
        matches!(
            self,
            Self::SERVICE_ACTION_IN_16
                | Self::MAINTENANCE_IN
                | Self::PERSISTENT_RESERVE_IN
                | Self::PERSISTENT_RESERVE_OUT
                | Self::SANITIZE
                | Self::EXTENDED_COPY
                | Self::RECEIVE_COPY_RESULTS
        )
    }
}

impl fmt::Debug for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Opcode({:#04x})", self.0)
    }
}

/// Service actions used below.
pub mod sa {
    pub const READ_CAPACITY_16: u16 = 0x10;
    pub const GET_LBA_STATUS: u16 = 0x12;
    pub const REPORT_SUPPORTED_OPCODES: u16 = 0x0C;
    pub const REPORT_SUPPORTED_TMFS: u16 = 0x0D;
    pub const SANITIZE_OVERWRITE: u16 = 0x01;
    pub const SANITIZE_BLOCK_ERASE: u16 = 0x02;
    pub const SANITIZE_CRYPTO_ERASE: u16 = 0x03;
    pub const SANITIZE_EXIT_FAILURE_MODE: u16 = 0x1F;
    pub const EXTENDED_COPY_LID1: u16 = 0x00;
    pub const RCR_COPY_STATUS: u16 = 0x00;
    pub const RCR_RECEIVE_DATA: u16 = 0x01;
    pub const RCR_OPERATING_PARAMETERS: u16 = 0x03;
    pub const RCR_FAILED_SEGMENT_DETAILS: u16 = 0x04;
    pub const PRIN_READ_KEYS: u16 = 0x00;
    pub const PRIN_READ_RESERVATION: u16 = 0x01;
    pub const PRIN_REPORT_CAPABILITIES: u16 = 0x02;
    pub const PRIN_READ_FULL_STATUS: u16 = 0x03;
    pub const PROUT_REGISTER: u16 = 0x00;
    pub const PROUT_RESERVE: u16 = 0x01;
    pub const PROUT_RELEASE: u16 = 0x02;
    pub const PROUT_CLEAR: u16 = 0x03;
    pub const PROUT_PREEMPT: u16 = 0x04;
    pub const PROUT_PREEMPT_AND_ABORT: u16 = 0x05;
    pub const PROUT_REGISTER_AND_IGNORE_EXISTING_KEY: u16 = 0x06;
    pub const PROUT_REGISTER_AND_MOVE: u16 = 0x07;
}

/// One supported CDB layout.
#[derive(Debug)]
pub struct CmdSpec {
    pub opcode: Opcode,
    pub service_action: Option<u16>,
    pub name: &'static str,
    /// CDB USAGE DATA: byte 0 is the opcode, every other byte is the mask of
    /// bits the device server uses. Its length is the CDB length.
    pub usage: &'static [u8],
}

const F: u8 = 0xFF;

macro_rules! spec {
    ($op:ident, $name:expr, [$($b:expr),* $(,)?]) => {
        CmdSpec { opcode: Opcode::$op, service_action: None, name: $name, usage: &[Opcode::$op.0, $($b),*] }
    };
    ($op:ident / $sa:expr, $name:expr, [$($b:expr),* $(,)?]) => {
        CmdSpec { opcode: Opcode::$op, service_action: Some($sa), name: $name, usage: &[Opcode::$op.0, $($b),*] }
    };
}

/// Every command the parser accepts, in opcode order. The usage masks are
/// what REPORT SUPPORTED OPERATION CODES returns.
#[rustfmt::skip]
pub static COMMANDS: &[CmdSpec] = &[
    spec!(TEST_UNIT_READY, "TEST UNIT READY", [0, 0, 0, 0, 0]),
    spec!(REQUEST_SENSE, "REQUEST SENSE", [0x01, 0, 0, F, 0]),
    spec!(READ_6, "READ(6)", [0x1F, F, F, F, 0]),
    spec!(WRITE_6, "WRITE(6)", [0x1F, F, F, F, 0]),
    spec!(INQUIRY, "INQUIRY", [0x01, F, F, F, 0]),
    spec!(MODE_SELECT_6, "MODE SELECT(6)", [0x11, 0, 0, F, 0]),
    spec!(RESERVE_6, "RESERVE(6)", [0, 0, 0, 0, 0]),
    spec!(RELEASE_6, "RELEASE(6)", [0, 0, 0, 0, 0]),
    spec!(MODE_SENSE_6, "MODE SENSE(6)", [0x08, F, F, F, 0]),
    spec!(START_STOP_UNIT, "START STOP UNIT", [0x01, 0, 0x0F, 0xF7, 0]),
    spec!(PREVENT_ALLOW_MEDIUM_REMOVAL, "PREVENT ALLOW MEDIUM REMOVAL", [0, 0, 0, 0x03, 0]),
    spec!(READ_CAPACITY_10, "READ CAPACITY(10)", [0, F, F, F, F, 0, 0, 0x01, 0]),
    spec!(READ_10, "READ(10)", [0x1A, F, F, F, F, 0x3F, F, F, 0]),
    spec!(WRITE_10, "WRITE(10)", [0x1A, F, F, F, F, 0x3F, F, F, 0]),
    spec!(WRITE_AND_VERIFY_10, "WRITE AND VERIFY(10)", [0x16, F, F, F, F, 0x3F, F, F, 0]),
    spec!(VERIFY_10, "VERIFY(10)", [0x16, F, F, F, F, 0x3F, F, F, 0]),
    spec!(PRE_FETCH_10, "PRE-FETCH(10)", [0x02, F, F, F, F, 0x3F, F, F, 0]),
    spec!(SYNCHRONIZE_CACHE_10, "SYNCHRONIZE CACHE(10)", [0x06, F, F, F, F, 0x3F, F, F, 0]),
    spec!(READ_DEFECT_DATA_10, "READ DEFECT DATA(10)", [0, 0x1F, 0, 0, 0, 0, F, F, 0]),
    spec!(WRITE_SAME_10, "WRITE SAME(10)", [0x08, F, F, F, F, 0x3F, F, F, 0]),
    spec!(UNMAP, "UNMAP", [0, 0, 0, 0, 0, 0x3F, F, F, 0]),
    spec!(SANITIZE / sa::SANITIZE_OVERWRITE, "SANITIZE", [0xBF, 0, 0, 0, 0, 0, F, F, 0]),
    spec!(SANITIZE / sa::SANITIZE_BLOCK_ERASE, "SANITIZE", [0xBF, 0, 0, 0, 0, 0, F, F, 0]),
    spec!(SANITIZE / sa::SANITIZE_CRYPTO_ERASE, "SANITIZE", [0xBF, 0, 0, 0, 0, 0, F, F, 0]),
    spec!(SANITIZE / sa::SANITIZE_EXIT_FAILURE_MODE, "SANITIZE", [0xBF, 0, 0, 0, 0, 0, F, F, 0]),
    spec!(MODE_SELECT_10, "MODE SELECT(10)", [0x11, 0, 0, 0, 0, 0, F, F, 0]),
    spec!(RESERVE_10, "RESERVE(10)", [0, 0, 0, 0, 0, 0, 0, 0, 0]),
    spec!(RELEASE_10, "RELEASE(10)", [0, 0, 0, 0, 0, 0, 0, 0, 0]),
    spec!(MODE_SENSE_10, "MODE SENSE(10)", [0x18, F, F, 0, 0, 0, F, F, 0]),
    spec!(PERSISTENT_RESERVE_IN / sa::PRIN_READ_KEYS, "PERSISTENT RESERVE IN", [0x1F, 0, 0, 0, 0, 0, F, F, 0]),
    spec!(PERSISTENT_RESERVE_IN / sa::PRIN_READ_RESERVATION, "PERSISTENT RESERVE IN", [0x1F, 0, 0, 0, 0, 0, F, F, 0]),
    spec!(PERSISTENT_RESERVE_IN / sa::PRIN_REPORT_CAPABILITIES, "PERSISTENT RESERVE IN", [0x1F, 0, 0, 0, 0, 0, F, F, 0]),
    spec!(PERSISTENT_RESERVE_IN / sa::PRIN_READ_FULL_STATUS, "PERSISTENT RESERVE IN", [0x1F, 0, 0, 0, 0, 0, F, F, 0]),
    spec!(PERSISTENT_RESERVE_OUT / sa::PROUT_REGISTER, "PERSISTENT RESERVE OUT", [0x1F, F, 0, 0, F, F, F, F, 0]),
    spec!(PERSISTENT_RESERVE_OUT / sa::PROUT_RESERVE, "PERSISTENT RESERVE OUT", [0x1F, F, 0, 0, F, F, F, F, 0]),
    spec!(PERSISTENT_RESERVE_OUT / sa::PROUT_RELEASE, "PERSISTENT RESERVE OUT", [0x1F, F, 0, 0, F, F, F, F, 0]),
    spec!(PERSISTENT_RESERVE_OUT / sa::PROUT_CLEAR, "PERSISTENT RESERVE OUT", [0x1F, F, 0, 0, F, F, F, F, 0]),
    spec!(PERSISTENT_RESERVE_OUT / sa::PROUT_PREEMPT, "PERSISTENT RESERVE OUT", [0x1F, F, 0, 0, F, F, F, F, 0]),
    spec!(PERSISTENT_RESERVE_OUT / sa::PROUT_PREEMPT_AND_ABORT, "PERSISTENT RESERVE OUT", [0x1F, F, 0, 0, F, F, F, F, 0]),
    spec!(PERSISTENT_RESERVE_OUT / sa::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY, "PERSISTENT RESERVE OUT", [0x1F, F, 0, 0, F, F, F, F, 0]),
    spec!(PERSISTENT_RESERVE_OUT / sa::PROUT_REGISTER_AND_MOVE, "PERSISTENT RESERVE OUT", [0x1F, F, 0, 0, F, F, F, F, 0]),
    spec!(EXTENDED_COPY / sa::EXTENDED_COPY_LID1, "EXTENDED COPY(LID1)", [0x1F, 0, 0, 0, 0, 0, 0, 0, 0, F, F, F, F, 0, 0]),
    spec!(RECEIVE_COPY_RESULTS / sa::RCR_COPY_STATUS, "RECEIVE COPY STATUS(LID1)", [0x1F, F, 0, 0, 0, 0, 0, 0, 0, F, F, F, F, 0, 0]),
    spec!(RECEIVE_COPY_RESULTS / sa::RCR_OPERATING_PARAMETERS, "RECEIVE COPY OPERATING PARAMETERS", [0x1F, 0, 0, 0, 0, 0, 0, 0, 0, F, F, F, F, 0, 0]),
    spec!(READ_16, "READ(16)", [0x1A, F, F, F, F, F, F, F, F, F, F, F, F, 0x3F, 0]),
    spec!(COMPARE_AND_WRITE, "COMPARE AND WRITE", [0x1A, F, F, F, F, F, F, F, F, 0, 0, 0, F, 0x3F, 0]),
    spec!(WRITE_16, "WRITE(16)", [0x1A, F, F, F, F, F, F, F, F, F, F, F, F, 0x3F, 0]),
    spec!(ORWRITE_16, "ORWRITE(16)", [0x1A, F, F, F, F, F, F, F, F, F, F, F, F, 0x3F, 0]),
    spec!(WRITE_AND_VERIFY_16, "WRITE AND VERIFY(16)", [0x16, F, F, F, F, F, F, F, F, F, F, F, F, 0x3F, 0]),
    spec!(VERIFY_16, "VERIFY(16)", [0x16, F, F, F, F, F, F, F, F, F, F, F, F, 0x3F, 0]),
    spec!(PRE_FETCH_16, "PRE-FETCH(16)", [0x02, F, F, F, F, F, F, F, F, F, F, F, F, 0x3F, 0]),
    spec!(SYNCHRONIZE_CACHE_16, "SYNCHRONIZE CACHE(16)", [0x06, F, F, F, F, F, F, F, F, F, F, F, F, 0x3F, 0]),
    spec!(WRITE_SAME_16, "WRITE SAME(16)", [0x09, F, F, F, F, F, F, F, F, F, F, F, F, 0x3F, 0]),
    spec!(WRITE_ATOMIC_16, "WRITE ATOMIC(16)", [0x18, F, F, F, F, F, F, F, F, 0, 0, F, F, 0x3F, 0]),
    spec!(SERVICE_ACTION_IN_16 / sa::READ_CAPACITY_16, "READ CAPACITY(16)", [0x1F, F, F, F, F, F, F, F, F, F, F, F, F, 0x01, 0]),
    spec!(SERVICE_ACTION_IN_16 / sa::GET_LBA_STATUS, "GET LBA STATUS", [0x1F, F, F, F, F, F, F, F, F, F, F, F, F, 0, 0]),
    spec!(REPORT_LUNS, "REPORT LUNS", [0, F, 0, 0, 0, F, F, F, F, 0, 0]),
    spec!(MAINTENANCE_IN / sa::REPORT_SUPPORTED_OPCODES, "REPORT SUPPORTED OPERATION CODES", [0x1F, 0x87, F, F, F, F, F, F, F, 0, 0]),
    spec!(MAINTENANCE_IN / sa::REPORT_SUPPORTED_TMFS, "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", [0x1F, 0x80, 0, 0, 0, F, F, F, F, 0, 0]),
    spec!(READ_12, "READ(12)", [0x1A, F, F, F, F, F, F, F, F, 0x3F, 0]),
    spec!(WRITE_12, "WRITE(12)", [0x1A, F, F, F, F, F, F, F, F, 0x3F, 0]),
    spec!(WRITE_AND_VERIFY_12, "WRITE AND VERIFY(12)", [0x16, F, F, F, F, F, F, F, F, 0x3F, 0]),
    spec!(VERIFY_12, "VERIFY(12)", [0x16, F, F, F, F, F, F, F, F, 0x3F, 0]),
    spec!(READ_DEFECT_DATA_12, "READ DEFECT DATA(12)", [0x1F, F, F, F, F, F, F, F, F, 0, 0]),
];

/// Looks up the layout for `opcode` (and `service_action` for opcodes that
/// have them).
pub fn lookup(opcode: Opcode, service_action: Option<u16>) -> Option<&'static CmdSpec> {
    COMMANDS.iter().find(|c| {
        c.opcode == opcode && (c.service_action.is_none() || c.service_action == service_action)
    })
}

/// Why a CDB was refused. Maps to ILLEGAL REQUEST sense in
/// [`CdbError::sense`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CdbError {
    #[error("empty CDB")]
    Empty,
    #[error("unsupported operation code {0:?}")]
    Unsupported(Opcode),
    #[error("CDB for {opcode:?} is {len} bytes, shorter than its layout")]
    Truncated { opcode: Opcode, len: usize },
    #[error("invalid field in CDB at byte {byte} bit {bit:?}")]
    InvalidField { byte: u16, bit: Option<u8> },
}

impl CdbError {
    /// The sense data the device server returns for this error.
    pub fn sense(&self) -> super::sense::Sense {
        use super::sense::{Asc, Sense};
        match *self {
            CdbError::Empty | CdbError::Unsupported(_) => {
                Sense::illegal_request(Asc::INVALID_COMMAND_OPERATION_CODE)
                    .with_field_pointer(true, 0, None)
            }
            CdbError::Truncated { .. } => {
                Sense::illegal_request(Asc::INVALID_COMMAND_OPERATION_CODE)
            }
            CdbError::InvalidField { byte, bit } => Sense::invalid_field_in_cdb(byte, bit),
        }
    }
}

/// CDB sizes of the commands that exist in several sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CdbSize {
    Six,
    Ten,
    Twelve,
    Sixteen,
}

/// Common fields of the data transfer commands (SBC-4 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rw {
    pub lba: u64,
    /// TRANSFER LENGTH / VERIFICATION LENGTH in logical blocks. READ(6) and
    /// WRITE(6) with 0 in the CDB mean 256 and are decoded as 256.
    pub blocks: u32,
    pub dpo: bool,
    pub fua: bool,
    pub group: u8,
}

/// A decoded CDB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    TestUnitReady,
    RequestSense {
        desc: bool,
        alloc_len: u8,
    },
    Inquiry {
        evpd: bool,
        page_code: u8,
        alloc_len: u16,
    },
    ReportLuns {
        select_report: u8,
        alloc_len: u32,
    },
    ReadCapacity10,
    ReadCapacity16 {
        alloc_len: u32,
    },
    GetLbaStatus {
        lba: u64,
        alloc_len: u32,
    },
    Read {
        size: CdbSize,
        rw: Rw,
    },
    Write {
        size: CdbSize,
        rw: Rw,
    },
    /// BYTCHK: 0 = medium verification only, 1 = compare with Data-Out,
    /// 3 = compare every block with one block of Data-Out.
    Verify {
        size: CdbSize,
        rw: Rw,
        bytchk: u8,
    },
    WriteAndVerify {
        size: CdbSize,
        rw: Rw,
        bytchk: u8,
    },
    WriteSame {
        size: CdbSize,
        lba: u64,
        blocks: u32,
        unmap: bool,
        ndob: bool,
        group: u8,
    },
    Unmap {
        param_len: u16,
        group: u8,
    },
    CompareAndWrite {
        rw: Rw,
    },
    OrWrite {
        rw: Rw,
    },
    WriteAtomic {
        rw: Rw,
        boundary: u16,
    },
    SynchronizeCache {
        size: CdbSize,
        lba: u64,
        blocks: u32,
        immed: bool,
    },
    PreFetch {
        size: CdbSize,
        lba: u64,
        blocks: u32,
        immed: bool,
    },
    ModeSense {
        size: CdbSize,
        dbd: bool,
        llbaa: bool,
        pc: u8,
        page: u8,
        subpage: u8,
        alloc_len: u16,
    },
    ModeSelect {
        size: CdbSize,
        pf: bool,
        sp: bool,
        param_len: u16,
    },
    StartStopUnit {
        immed: bool,
        power_condition_modifier: u8,
        power_condition: u8,
        no_flush: bool,
        loej: bool,
        start: bool,
    },
    PreventAllowMediumRemoval {
        prevent: u8,
    },
    Reserve6,
    Release6,
    Reserve10,
    Release10,
    PersistentReserveIn {
        service_action: u8,
        alloc_len: u16,
    },
    PersistentReserveOut {
        service_action: u8,
        scope: u8,
        pr_type: u8,
        param_len: u32,
    },
    ReportSupportedOpcodes {
        rctd: bool,
        options: u8,
        opcode: u8,
        service_action: u16,
        alloc_len: u32,
    },
    ReportSupportedTmfs {
        repd: bool,
        alloc_len: u32,
    },
    Sanitize {
        immed: bool,
        ause: bool,
        service_action: u8,
        param_len: u16,
    },
    ExtendedCopy {
        param_len: u32,
    },
    ReceiveCopyResults {
        service_action: u8,
        list_id: u8,
        alloc_len: u32,
    },
    ReadDefectData {
        size: CdbSize,
        req_plist: bool,
        req_glist: bool,
        format: u8,
        alloc_len: u32,
    },
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Checks `cdb` against a usage mask: any bit set outside the mask is an
/// invalid field, reported at the most significant offending bit.
pub fn check_reserved(cdb: &[u8], usage: &[u8]) -> Result<(), CdbError> {
    for (i, (&b, &m)) in cdb.iter().zip(usage.iter()).enumerate().skip(1) {
        let bad = b & !m;
        if bad != 0 {
            return Err(CdbError::InvalidField {
                byte: i as u16,
                bit: Some(7 - bad.leading_zeros() as u8),
            });
        }
    }
    Ok(())
}

mod build;
mod decode;
mod encode;
mod rw;
#[cfg(test)]
mod tests;

pub use build::*;
