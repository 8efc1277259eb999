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

impl Command {
    /// Parses a CDB (SPC-5 §4.2). Bytes after the command's CDB length are
    /// ignored (iSCSI pads CDBs to 16 bytes).
    pub fn parse(cdb: &[u8]) -> Result<Command, CdbError> {
        let op = Opcode(*cdb.first().ok_or(CdbError::Empty)?);
        let sa = if op.has_service_action() {
            cdb.get(1).map(|b| (b & 0x1F) as u16)
        } else {
            None
        };
        let spec = match lookup(op, sa) {
            Some(s) => s,
            None if COMMANDS.iter().any(|c| c.opcode == op) => {
                // SPC-5 §4.2.5.3: an unsupported service action of a
                // supported operation code is an INVALID FIELD IN CDB.
                return Err(CdbError::InvalidField {
                    byte: 1,
                    bit: Some(4),
                });
            }
            None => return Err(CdbError::Unsupported(op)),
        };
        let n = spec.usage.len();
        if cdb.len() < n {
            return Err(CdbError::Truncated {
                opcode: op,
                len: cdb.len(),
            });
        }
        let c = &cdb[..n];
        check_reserved(c, spec.usage)?;
        Ok(Self::decode(op, c))
    }

    fn decode(op: Opcode, c: &[u8]) -> Command {
        let dpo = c[1] & 0x10 != 0;
        let fua = c[1] & 0x08 != 0;
        let rw10 = || Rw {
            lba: be32(&c[2..]) as u64,
            blocks: be16(&c[7..]) as u32,
            dpo,
            fua,
            group: c[6] & 0x3F,
        };
        let rw12 = || Rw {
            lba: be32(&c[2..]) as u64,
            blocks: be32(&c[6..]),
            dpo,
            fua,
            group: c[10] & 0x3F,
        };
        let rw16 = || Rw {
            lba: be64(&c[2..]),
            blocks: be32(&c[10..]),
            dpo,
            fua,
            group: c[14] & 0x3F,
        };
        let rw6 = || {
            let blocks = if c[4] == 0 { 256 } else { c[4] as u32 };
            Rw {
                lba: (((c[1] & 0x1F) as u64) << 16) | be16(&c[2..]) as u64,
                blocks,
                ..Rw::default()
            }
        };
        let bytchk = (c[1] >> 1) & 0x03;
        use CdbSize::*;
        match op {
            Opcode::TEST_UNIT_READY => Command::TestUnitReady,
            Opcode::REQUEST_SENSE => Command::RequestSense {
                desc: c[1] & 1 != 0,
                alloc_len: c[4],
            },
            Opcode::INQUIRY => Command::Inquiry {
                evpd: c[1] & 1 != 0,
                page_code: c[2],
                alloc_len: be16(&c[3..]),
            },
            Opcode::REPORT_LUNS => Command::ReportLuns {
                select_report: c[2],
                alloc_len: be32(&c[6..]),
            },
            Opcode::READ_CAPACITY_10 => Command::ReadCapacity10,
            Opcode::READ_6 => Command::Read {
                size: Six,
                rw: rw6(),
            },
            Opcode::WRITE_6 => Command::Write {
                size: Six,
                rw: rw6(),
            },
            Opcode::READ_10 => Command::Read {
                size: Ten,
                rw: rw10(),
            },
            Opcode::WRITE_10 => Command::Write {
                size: Ten,
                rw: rw10(),
            },
            Opcode::READ_12 => Command::Read {
                size: Twelve,
                rw: rw12(),
            },
            Opcode::WRITE_12 => Command::Write {
                size: Twelve,
                rw: rw12(),
            },
            Opcode::READ_16 => Command::Read {
                size: Sixteen,
                rw: rw16(),
            },
            Opcode::WRITE_16 => Command::Write {
                size: Sixteen,
                rw: rw16(),
            },
            Opcode::VERIFY_10 => Command::Verify {
                size: Ten,
                rw: rw10(),
                bytchk,
            },
            Opcode::VERIFY_12 => Command::Verify {
                size: Twelve,
                rw: rw12(),
                bytchk,
            },
            Opcode::VERIFY_16 => Command::Verify {
                size: Sixteen,
                rw: rw16(),
                bytchk,
            },
            Opcode::WRITE_AND_VERIFY_10 => Command::WriteAndVerify {
                size: Ten,
                rw: rw10(),
                bytchk,
            },
            Opcode::WRITE_AND_VERIFY_12 => Command::WriteAndVerify {
                size: Twelve,
                rw: rw12(),
                bytchk,
            },
            Opcode::WRITE_AND_VERIFY_16 => Command::WriteAndVerify {
                size: Sixteen,
                rw: rw16(),
                bytchk,
            },
            Opcode::WRITE_SAME_10 => {
                let r = rw10();
                Command::WriteSame {
                    size: Ten,
                    lba: r.lba,
                    blocks: r.blocks,
                    unmap: c[1] & 0x08 != 0,
                    ndob: false,
                    group: r.group,
                }
            }
            Opcode::WRITE_SAME_16 => {
                let r = rw16();
                Command::WriteSame {
                    size: Sixteen,
                    lba: r.lba,
                    blocks: r.blocks,
                    unmap: c[1] & 0x08 != 0,
                    ndob: c[1] & 0x01 != 0,
                    group: r.group,
                }
            }
            Opcode::UNMAP => Command::Unmap {
                param_len: be16(&c[7..]),
                group: c[6] & 0x3F,
            },
            Opcode::COMPARE_AND_WRITE => Command::CompareAndWrite {
                rw: Rw {
                    lba: be64(&c[2..]),
                    blocks: c[13] as u32,
                    dpo,
                    fua,
                    group: c[14] & 0x3F,
                },
            },
            Opcode::ORWRITE_16 => Command::OrWrite { rw: rw16() },
            Opcode::WRITE_ATOMIC_16 => Command::WriteAtomic {
                rw: Rw {
                    lba: be64(&c[2..]),
                    blocks: be16(&c[12..]) as u32,
                    dpo,
                    fua,
                    group: c[14] & 0x3F,
                },
                boundary: be16(&c[10..]),
            },
            Opcode::SYNCHRONIZE_CACHE_10 | Opcode::PRE_FETCH_10 => {
                let r = rw10();
                let immed = c[1] & 0x02 != 0;
                if op == Opcode::PRE_FETCH_10 {
                    Command::PreFetch {
                        size: Ten,
                        lba: r.lba,
                        blocks: r.blocks,
                        immed,
                    }
                } else {
                    Command::SynchronizeCache {
                        size: Ten,
                        lba: r.lba,
                        blocks: r.blocks,
                        immed,
                    }
                }
            }
            Opcode::SYNCHRONIZE_CACHE_16 | Opcode::PRE_FETCH_16 => {
                let r = rw16();
                let immed = c[1] & 0x02 != 0;
                if op == Opcode::PRE_FETCH_16 {
                    Command::PreFetch {
                        size: Sixteen,
                        lba: r.lba,
                        blocks: r.blocks,
                        immed,
                    }
                } else {
                    Command::SynchronizeCache {
                        size: Sixteen,
                        lba: r.lba,
                        blocks: r.blocks,
                        immed,
                    }
                }
            }
            Opcode::MODE_SENSE_6 => Command::ModeSense {
                size: Six,
                dbd: c[1] & 0x08 != 0,
                llbaa: false,
                pc: c[2] >> 6,
                page: c[2] & 0x3F,
                subpage: c[3],
                alloc_len: c[4] as u16,
            },
            Opcode::MODE_SENSE_10 => Command::ModeSense {
                size: Ten,
                dbd: c[1] & 0x08 != 0,
                llbaa: c[1] & 0x10 != 0,
                pc: c[2] >> 6,
                page: c[2] & 0x3F,
                subpage: c[3],
                alloc_len: be16(&c[7..]),
            },
            Opcode::MODE_SELECT_6 => Command::ModeSelect {
                size: Six,
                pf: c[1] & 0x10 != 0,
                sp: c[1] & 0x01 != 0,
                param_len: c[4] as u16,
            },
            Opcode::MODE_SELECT_10 => Command::ModeSelect {
                size: Ten,
                pf: c[1] & 0x10 != 0,
                sp: c[1] & 0x01 != 0,
                param_len: be16(&c[7..]),
            },
            Opcode::START_STOP_UNIT => Command::StartStopUnit {
                immed: c[1] & 1 != 0,
                power_condition_modifier: c[3] & 0x0F,
                power_condition: c[4] >> 4,
                no_flush: c[4] & 0x04 != 0,
                loej: c[4] & 0x02 != 0,
                start: c[4] & 0x01 != 0,
            },
            Opcode::PREVENT_ALLOW_MEDIUM_REMOVAL => Command::PreventAllowMediumRemoval {
                prevent: c[4] & 0x03,
            },
            Opcode::RESERVE_6 => Command::Reserve6,
            Opcode::RELEASE_6 => Command::Release6,
            Opcode::RESERVE_10 => Command::Reserve10,
            Opcode::RELEASE_10 => Command::Release10,
            Opcode::PERSISTENT_RESERVE_IN => Command::PersistentReserveIn {
                service_action: c[1] & 0x1F,
                alloc_len: be16(&c[7..]),
            },
            Opcode::PERSISTENT_RESERVE_OUT => Command::PersistentReserveOut {
                service_action: c[1] & 0x1F,
                scope: c[2] >> 4,
                pr_type: c[2] & 0x0F,
                param_len: be32(&c[5..]),
            },
            Opcode::SERVICE_ACTION_IN_16 => {
                if (c[1] & 0x1F) as u16 == sa::READ_CAPACITY_16 {
                    Command::ReadCapacity16 {
                        alloc_len: be32(&c[10..]),
                    }
                } else {
                    Command::GetLbaStatus {
                        lba: be64(&c[2..]),
                        alloc_len: be32(&c[10..]),
                    }
                }
            }
            Opcode::MAINTENANCE_IN => {
                if (c[1] & 0x1F) as u16 == sa::REPORT_SUPPORTED_OPCODES {
                    Command::ReportSupportedOpcodes {
                        rctd: c[2] & 0x80 != 0,
                        options: c[2] & 0x07,
                        opcode: c[3],
                        service_action: be16(&c[4..]),
                        alloc_len: be32(&c[6..]),
                    }
                } else {
                    Command::ReportSupportedTmfs {
                        repd: c[2] & 0x80 != 0,
                        alloc_len: be32(&c[6..]),
                    }
                }
            }
            Opcode::SANITIZE => Command::Sanitize {
                immed: c[1] & 0x80 != 0,
                ause: c[1] & 0x20 != 0,
                service_action: c[1] & 0x1F,
                param_len: be16(&c[7..]),
            },
            Opcode::EXTENDED_COPY => Command::ExtendedCopy {
                param_len: be32(&c[10..]),
            },
            Opcode::RECEIVE_COPY_RESULTS => Command::ReceiveCopyResults {
                service_action: c[1] & 0x1F,
                list_id: c[2],
                alloc_len: be32(&c[10..]),
            },
            Opcode::READ_DEFECT_DATA_10 => Command::ReadDefectData {
                size: Ten,
                req_plist: c[2] & 0x10 != 0,
                req_glist: c[2] & 0x08 != 0,
                format: c[2] & 0x07,
                alloc_len: be16(&c[7..]) as u32,
            },
            Opcode::READ_DEFECT_DATA_12 => Command::ReadDefectData {
                size: Twelve,
                req_plist: c[1] & 0x10 != 0,
                req_glist: c[1] & 0x08 != 0,
                format: c[1] & 0x07,
                alloc_len: be32(&c[6..]),
            },
            // `lookup` only returns specs listed above.
            _ => Command::TestUnitReady,
        }
    }

    /// Builds the CDB (initiator side). The result parses back to `self`
    /// for every value `parse` can produce.
    pub fn encode(&self) -> Cdb {
        let mut c = Cdb::new();
        let flags = |rw: &Rw| (if rw.dpo { 0x10 } else { 0 }) | (if rw.fua { 0x08 } else { 0 });
        let rw_cdb = |c: &mut Cdb, op: Opcode, size: CdbSize, rw: &Rw, b1: u8| match size {
            CdbSize::Six => {
                c.start(op, 6);
                c.b[1] = ((rw.lba >> 16) & 0x1F) as u8;
                c.put16(2, rw.lba as u16);
                c.b[4] = if rw.blocks >= 256 { 0 } else { rw.blocks as u8 };
            }
            CdbSize::Ten => {
                c.start(op, 10);
                c.b[1] = b1;
                c.put32(2, rw.lba as u32);
                c.b[6] = rw.group & 0x3F;
                c.put16(7, rw.blocks as u16);
            }
            CdbSize::Twelve => {
                c.start(op, 12);
                c.b[1] = b1;
                c.put32(2, rw.lba as u32);
                c.put32(6, rw.blocks);
                c.b[10] = rw.group & 0x3F;
            }
            CdbSize::Sixteen => {
                c.start(op, 16);
                c.b[1] = b1;
                c.put64(2, rw.lba);
                c.put32(10, rw.blocks);
                c.b[14] = rw.group & 0x3F;
            }
        };
        fn pick(size: CdbSize, ops: [Opcode; 4]) -> Opcode {
            match size {
                CdbSize::Six => ops[0],
                CdbSize::Ten => ops[1],
                CdbSize::Twelve => ops[2],
                CdbSize::Sixteen => ops[3],
            }
        }
        match self {
            Command::TestUnitReady => c.start(Opcode::TEST_UNIT_READY, 6),
            Command::RequestSense { desc, alloc_len } => {
                c.start(Opcode::REQUEST_SENSE, 6);
                c.b[1] = *desc as u8;
                c.b[4] = *alloc_len;
            }
            Command::Inquiry {
                evpd,
                page_code,
                alloc_len,
            } => {
                c.start(Opcode::INQUIRY, 6);
                c.b[1] = *evpd as u8;
                c.b[2] = *page_code;
                c.put16(3, *alloc_len);
            }
            Command::ReportLuns {
                select_report,
                alloc_len,
            } => {
                c.start(Opcode::REPORT_LUNS, 12);
                c.b[2] = *select_report;
                c.put32(6, *alloc_len);
            }
            Command::ReadCapacity10 => c.start(Opcode::READ_CAPACITY_10, 10),
            Command::ReadCapacity16 { alloc_len } => {
                c.start(Opcode::SERVICE_ACTION_IN_16, 16);
                c.b[1] = sa::READ_CAPACITY_16 as u8;
                c.put32(10, *alloc_len);
            }
            Command::GetLbaStatus { lba, alloc_len } => {
                c.start(Opcode::SERVICE_ACTION_IN_16, 16);
                c.b[1] = sa::GET_LBA_STATUS as u8;
                c.put64(2, *lba);
                c.put32(10, *alloc_len);
            }
            Command::Read { size, rw } => {
                let op = pick(
                    *size,
                    [
                        Opcode::READ_6,
                        Opcode::READ_10,
                        Opcode::READ_12,
                        Opcode::READ_16,
                    ],
                );
                rw_cdb(&mut c, op, *size, rw, flags(rw));
            }
            Command::Write { size, rw } => {
                let op = pick(
                    *size,
                    [
                        Opcode::WRITE_6,
                        Opcode::WRITE_10,
                        Opcode::WRITE_12,
                        Opcode::WRITE_16,
                    ],
                );
                rw_cdb(&mut c, op, *size, rw, flags(rw));
            }
            Command::Verify { size, rw, bytchk } => {
                let op = pick(
                    *size,
                    [
                        Opcode::VERIFY_10,
                        Opcode::VERIFY_10,
                        Opcode::VERIFY_12,
                        Opcode::VERIFY_16,
                    ],
                );
                let size = if *size == CdbSize::Six {
                    CdbSize::Ten
                } else {
                    *size
                };
                rw_cdb(
                    &mut c,
                    op,
                    size,
                    rw,
                    (if rw.dpo { 0x10 } else { 0 }) | ((bytchk & 3) << 1),
                );
            }
            Command::WriteAndVerify { size, rw, bytchk } => {
                let op = pick(
                    *size,
                    [
                        Opcode::WRITE_AND_VERIFY_10,
                        Opcode::WRITE_AND_VERIFY_10,
                        Opcode::WRITE_AND_VERIFY_12,
                        Opcode::WRITE_AND_VERIFY_16,
                    ],
                );
                let size = if *size == CdbSize::Six {
                    CdbSize::Ten
                } else {
                    *size
                };
                rw_cdb(
                    &mut c,
                    op,
                    size,
                    rw,
                    (if rw.dpo { 0x10 } else { 0 }) | ((bytchk & 3) << 1),
                );
            }
            Command::WriteSame {
                size,
                lba,
                blocks,
                unmap,
                ndob,
                group,
            } => {
                let rw = Rw {
                    lba: *lba,
                    blocks: *blocks,
                    group: *group,
                    ..Rw::default()
                };
                let b1 = (if *unmap { 0x08 } else { 0 }) | (if *ndob { 0x01 } else { 0 });
                if *size == CdbSize::Sixteen {
                    rw_cdb(&mut c, Opcode::WRITE_SAME_16, CdbSize::Sixteen, &rw, b1);
                } else {
                    rw_cdb(&mut c, Opcode::WRITE_SAME_10, CdbSize::Ten, &rw, b1 & 0x08);
                }
            }
            Command::Unmap { param_len, group } => {
                c.start(Opcode::UNMAP, 10);
                c.b[6] = group & 0x3F;
                c.put16(7, *param_len);
            }
            Command::CompareAndWrite { rw } => {
                c.start(Opcode::COMPARE_AND_WRITE, 16);
                c.b[1] = flags(rw);
                c.put64(2, rw.lba);
                c.b[13] = rw.blocks as u8;
                c.b[14] = rw.group & 0x3F;
            }
            Command::OrWrite { rw } => {
                rw_cdb(&mut c, Opcode::ORWRITE_16, CdbSize::Sixteen, rw, flags(rw))
            }
            Command::WriteAtomic { rw, boundary } => {
                c.start(Opcode::WRITE_ATOMIC_16, 16);
                c.b[1] = flags(rw);
                c.put64(2, rw.lba);
                c.put16(10, *boundary);
                c.put16(12, rw.blocks as u16);
                c.b[14] = rw.group & 0x3F;
            }
            Command::SynchronizeCache {
                size,
                lba,
                blocks,
                immed,
            }
            | Command::PreFetch {
                size,
                lba,
                blocks,
                immed,
            } => {
                let sync = matches!(self, Command::SynchronizeCache { .. });
                let rw = Rw {
                    lba: *lba,
                    blocks: *blocks,
                    ..Rw::default()
                };
                let b1 = if *immed { 0x02 } else { 0 };
                let (op10, op16) = if sync {
                    (Opcode::SYNCHRONIZE_CACHE_10, Opcode::SYNCHRONIZE_CACHE_16)
                } else {
                    (Opcode::PRE_FETCH_10, Opcode::PRE_FETCH_16)
                };
                if *size == CdbSize::Sixteen {
                    rw_cdb(&mut c, op16, CdbSize::Sixteen, &rw, b1);
                } else {
                    rw_cdb(&mut c, op10, CdbSize::Ten, &rw, b1);
                }
            }
            Command::ModeSense {
                size,
                dbd,
                llbaa,
                pc,
                page,
                subpage,
                alloc_len,
            } => {
                if *size == CdbSize::Six {
                    c.start(Opcode::MODE_SENSE_6, 6);
                    c.b[4] = *alloc_len as u8;
                } else {
                    c.start(Opcode::MODE_SENSE_10, 10);
                    c.put16(7, *alloc_len);
                    if *llbaa {
                        c.b[1] |= 0x10;
                    }
                }
                if *dbd {
                    c.b[1] |= 0x08;
                }
                c.b[2] = (pc << 6) | (page & 0x3F);
                c.b[3] = *subpage;
            }
            Command::ModeSelect {
                size,
                pf,
                sp,
                param_len,
            } => {
                if *size == CdbSize::Six {
                    c.start(Opcode::MODE_SELECT_6, 6);
                    c.b[4] = *param_len as u8;
                } else {
                    c.start(Opcode::MODE_SELECT_10, 10);
                    c.put16(7, *param_len);
                }
                c.b[1] = (if *pf { 0x10 } else { 0 }) | (*sp as u8);
            }
            Command::StartStopUnit {
                immed,
                power_condition_modifier,
                power_condition,
                no_flush,
                loej,
                start,
            } => {
                c.start(Opcode::START_STOP_UNIT, 6);
                c.b[1] = *immed as u8;
                c.b[3] = power_condition_modifier & 0x0F;
                c.b[4] = (power_condition << 4)
                    | (if *no_flush { 0x04 } else { 0 })
                    | (if *loej { 0x02 } else { 0 })
                    | (*start as u8);
            }
            Command::PreventAllowMediumRemoval { prevent } => {
                c.start(Opcode::PREVENT_ALLOW_MEDIUM_REMOVAL, 6);
                c.b[4] = prevent & 0x03;
            }
            Command::Reserve6 => c.start(Opcode::RESERVE_6, 6),
            Command::Release6 => c.start(Opcode::RELEASE_6, 6),
            Command::Reserve10 => c.start(Opcode::RESERVE_10, 10),
            Command::Release10 => c.start(Opcode::RELEASE_10, 10),
            Command::PersistentReserveIn {
                service_action,
                alloc_len,
            } => {
                c.start(Opcode::PERSISTENT_RESERVE_IN, 10);
                c.b[1] = service_action & 0x1F;
                c.put16(7, *alloc_len);
            }
            Command::PersistentReserveOut {
                service_action,
                scope,
                pr_type,
                param_len,
            } => {
                c.start(Opcode::PERSISTENT_RESERVE_OUT, 10);
                c.b[1] = service_action & 0x1F;
                c.b[2] = (scope << 4) | (pr_type & 0x0F);
                c.put32(5, *param_len);
            }
            Command::ReportSupportedOpcodes {
                rctd,
                options,
                opcode,
                service_action,
                alloc_len,
            } => {
                c.start(Opcode::MAINTENANCE_IN, 12);
                c.b[1] = sa::REPORT_SUPPORTED_OPCODES as u8;
                c.b[2] = (if *rctd { 0x80 } else { 0 }) | (options & 0x07);
                c.b[3] = *opcode;
                c.put16(4, *service_action);
                c.put32(6, *alloc_len);
            }
            Command::ReportSupportedTmfs { repd, alloc_len } => {
                c.start(Opcode::MAINTENANCE_IN, 12);
                c.b[1] = sa::REPORT_SUPPORTED_TMFS as u8;
                c.b[2] = if *repd { 0x80 } else { 0 };
                c.put32(6, *alloc_len);
            }
            Command::Sanitize {
                immed,
                ause,
                service_action,
                param_len,
            } => {
                c.start(Opcode::SANITIZE, 10);
                c.b[1] = (if *immed { 0x80 } else { 0 })
                    | (if *ause { 0x20 } else { 0 })
                    | (service_action & 0x1F);
                c.put16(7, *param_len);
            }
            Command::ExtendedCopy { param_len } => {
                c.start(Opcode::EXTENDED_COPY, 16);
                c.put32(10, *param_len);
            }
            Command::ReceiveCopyResults {
                service_action,
                list_id,
                alloc_len,
            } => {
                c.start(Opcode::RECEIVE_COPY_RESULTS, 16);
                c.b[1] = service_action & 0x1F;
                c.b[2] = *list_id;
                c.put32(10, *alloc_len);
            }
            Command::ReadDefectData {
                size,
                req_plist,
                req_glist,
                format,
                alloc_len,
            } => {
                let f = (if *req_plist { 0x10 } else { 0 })
                    | (if *req_glist { 0x08 } else { 0 })
                    | (format & 7);
                if *size == CdbSize::Twelve {
                    c.start(Opcode::READ_DEFECT_DATA_12, 12);
                    c.b[1] = f;
                    c.put32(6, *alloc_len);
                } else {
                    c.start(Opcode::READ_DEFECT_DATA_10, 10);
                    c.b[2] = f;
                    c.put16(7, *alloc_len as u16);
                }
            }
        }
        c
    }

    /// Bytes of Data-Out this command carries, given the logical block
    /// size (0 for commands without Data-Out).
    pub fn data_out_length(&self, block_size: u32) -> u64 {
        let bs = block_size as u64;
        match self {
            Command::Write { rw, .. }
            | Command::OrWrite { rw }
            | Command::WriteAtomic { rw, .. } => rw.blocks as u64 * bs,
            Command::WriteAndVerify { rw, .. } => rw.blocks as u64 * bs,
            Command::Verify { rw, bytchk, .. } => match bytchk {
                1 => rw.blocks as u64 * bs,
                3 if rw.blocks > 0 => bs,
                _ => 0,
            },
            Command::WriteSame { ndob, .. } => {
                if *ndob {
                    0
                } else {
                    bs
                }
            }
            Command::CompareAndWrite { rw } => 2 * rw.blocks as u64 * bs,
            Command::Unmap { param_len, .. } => *param_len as u64,
            Command::ModeSelect { param_len, .. } => *param_len as u64,
            Command::PersistentReserveOut { param_len, .. } => *param_len as u64,
            Command::Sanitize { param_len, .. } => *param_len as u64,
            Command::ExtendedCopy { param_len } => *param_len as u64,
            _ => 0,
        }
    }
}

/// A built CDB: up to 16 bytes, no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cdb {
    b: [u8; 16],
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
    fn start(&mut self, op: Opcode, len: u8) {
        self.b = [0; 16];
        self.b[0] = op.0;
        self.len = len;
    }
    fn put16(&mut self, at: usize, v: u16) {
        self.b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    fn put32(&mut self, at: usize, v: u32) {
        self.b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    fn put64(&mut self, at: usize, v: u64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(c: Command) {
        let b = c.encode();
        assert_eq!(Command::parse(b.as_bytes()), Ok(c.clone()), "{b:?}");
        // Every built CDB must match its own usage mask.
        let spec = lookup(
            Opcode(b.as_bytes()[0]),
            Opcode(b.as_bytes()[0])
                .has_service_action()
                .then(|| (b.as_bytes()[1] & 0x1F) as u16),
        )
        .unwrap();
        assert_eq!(spec.usage.len(), b.as_bytes().len());
    }

    #[test]
    fn round_trips() {
        let rw = Rw {
            lba: 0x1234,
            blocks: 7,
            dpo: true,
            fua: true,
            group: 3,
        };
        for size in [CdbSize::Ten, CdbSize::Twelve, CdbSize::Sixteen] {
            rt(Command::Read { size, rw });
            rt(Command::Write { size, rw });
            rt(Command::Verify {
                size,
                rw: Rw { fua: false, ..rw },
                bytchk: 1,
            });
            rt(Command::WriteAndVerify {
                size,
                rw: Rw { fua: false, ..rw },
                bytchk: 0,
            });
        }
        rt(Command::Read {
            size: CdbSize::Six,
            rw: Rw {
                lba: 0x1F_FFFF,
                blocks: 256,
                ..Rw::default()
            },
        });
        rt(Command::Write {
            size: CdbSize::Six,
            rw: Rw {
                lba: 5,
                blocks: 1,
                ..Rw::default()
            },
        });
        rt(Command::WriteSame {
            size: CdbSize::Sixteen,
            lba: 9,
            blocks: 100,
            unmap: true,
            ndob: true,
            group: 0,
        });
        rt(Command::WriteSame {
            size: CdbSize::Ten,
            lba: 9,
            blocks: 100,
            unmap: true,
            ndob: false,
            group: 1,
        });
        rt(Command::CompareAndWrite {
            rw: Rw {
                lba: u64::MAX,
                blocks: 1,
                dpo: false,
                fua: true,
                group: 0,
            },
        });
        rt(Command::OrWrite { rw });
        rt(Command::WriteAtomic {
            rw: Rw { blocks: 8, ..rw },
            boundary: 0,
        });
        rt(Command::Inquiry {
            evpd: true,
            page_code: 0x83,
            alloc_len: 255,
        });
        rt(Command::ReadCapacity16 { alloc_len: 32 });
        rt(Command::GetLbaStatus {
            lba: 77,
            alloc_len: 24,
        });
        rt(Command::ReportLuns {
            select_report: 2,
            alloc_len: 4096,
        });
        rt(Command::ModeSense {
            size: CdbSize::Six,
            dbd: true,
            llbaa: false,
            pc: 1,
            page: 0x3F,
            subpage: 0,
            alloc_len: 255,
        });
        rt(Command::ModeSense {
            size: CdbSize::Ten,
            dbd: false,
            llbaa: true,
            pc: 0,
            page: 8,
            subpage: 0,
            alloc_len: 1000,
        });
        rt(Command::ModeSelect {
            size: CdbSize::Ten,
            pf: true,
            sp: false,
            param_len: 28,
        });
        rt(Command::StartStopUnit {
            immed: true,
            power_condition_modifier: 0,
            power_condition: 0,
            no_flush: false,
            loej: true,
            start: false,
        });
        rt(Command::PersistentReserveOut {
            service_action: 1,
            scope: 0,
            pr_type: 3,
            param_len: 24,
        });
        rt(Command::PersistentReserveIn {
            service_action: 3,
            alloc_len: 8192,
        });
        rt(Command::ReportSupportedOpcodes {
            rctd: true,
            options: 2,
            opcode: 0x9E,
            service_action: 0x10,
            alloc_len: 512,
        });
        rt(Command::SynchronizeCache {
            size: CdbSize::Sixteen,
            lba: 0,
            blocks: 0,
            immed: true,
        });
        rt(Command::PreFetch {
            size: CdbSize::Ten,
            lba: 1,
            blocks: 2,
            immed: false,
        });
        rt(Command::Sanitize {
            immed: false,
            ause: true,
            service_action: 1,
            param_len: 8,
        });
        rt(Command::Unmap {
            param_len: 24,
            group: 0,
        });
        rt(Command::TestUnitReady);
        rt(Command::RequestSense {
            desc: true,
            alloc_len: 252,
        });
        rt(Command::ReadDefectData {
            size: CdbSize::Ten,
            req_plist: true,
            req_glist: false,
            format: 5,
            alloc_len: 32,
        });
    }

    #[test]
    fn byte_exact_read16() {
        assert_eq!(
            read16(0x0102_0304_0506_0708, 0x10, true).as_bytes(),
            &[0x88, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0x10, 0, 0]
        );
        assert_eq!(
            write10(0xAABBCCDD, 2, false).as_bytes(),
            &[0x2A, 0, 0xAA, 0xBB, 0xCC, 0xDD, 0, 0, 2, 0]
        );
    }

    #[test]
    fn reserved_bits_rejected_with_pointer() {
        // RDPROTECT = 1 on READ(10): byte 1 bit 5.
        let mut c = read10(0, 1, false);
        c.set_byte(1, 0x20);
        assert_eq!(
            Command::parse(c.as_bytes()),
            Err(CdbError::InvalidField {
                byte: 1,
                bit: Some(5)
            })
        );
        // NACA in the control byte.
        let mut c = read16(0, 1, false);
        c.set_byte(15, 0x04);
        assert_eq!(
            Command::parse(c.as_bytes()),
            Err(CdbError::InvalidField {
                byte: 15,
                bit: Some(2)
            })
        );
        // FUA_NV is accepted (obsolete, ignored).
        let mut c = read10(0, 1, false);
        c.set_byte(1, 0x02);
        assert!(Command::parse(c.as_bytes()).is_ok());
    }

    #[test]
    fn unsupported_and_bad_service_action() {
        assert_eq!(
            Command::parse(&[0xC0, 0, 0, 0, 0, 0]),
            Err(CdbError::Unsupported(Opcode(0xC0)))
        );
        assert_eq!(Command::parse(&[]), Err(CdbError::Empty));
        let mut c = [0u8; 16];
        c[0] = 0x9E;
        c[1] = 0x11;
        assert_eq!(
            Command::parse(&c),
            Err(CdbError::InvalidField {
                byte: 1,
                bit: Some(4)
            })
        );
        assert_eq!(
            Command::parse(&[0x28, 0, 0]),
            Err(CdbError::Truncated {
                opcode: Opcode::READ_10,
                len: 3
            })
        );
        let mut c = [0u8; 10];
        c[0] = 0x5E;
        c[1] = 0x04;
        assert!(matches!(
            Command::parse(&c),
            Err(CdbError::InvalidField { byte: 1, .. })
        ));
    }

    #[test]
    fn parse_never_panics() {
        let mut seed = 99u32;
        for _ in 0..20000 {
            let len = (seed % 17) as usize;
            let cdb: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            if let Ok(cmd) = Command::parse(&cdb) {
                let _ = cmd.encode();
                let _ = cmd.data_out_length(512);
            }
            seed = seed.wrapping_add(1);
        }
        for op in 0..=255u8 {
            let mut c = [0u8; 16];
            c[0] = op;
            let _ = Command::parse(&c);
        }
    }

    #[test]
    fn unmap_params() {
        let p = encode_unmap_params(&[(1, 2), (100, 8)]);
        assert_eq!(p.len(), 40);
        assert_eq!(parse_unmap_params(&p), Ok(vec![(1, 2), (100, 8)]));
        assert_eq!(parse_unmap_params(&p[..24]), Ok(vec![(1, 2)]));
        assert_eq!(parse_unmap_params(&[]), Ok(vec![]));
        let mut bad = p.clone();
        bad[3] = 15;
        assert_eq!(parse_unmap_params(&bad), Err(ParamError { byte: 2 }));
    }

    #[test]
    fn data_out_lengths() {
        let c = Command::parse(write10(0, 4, false).as_bytes()).unwrap();
        assert_eq!(c.data_out_length(512), 2048);
        assert_eq!(
            Command::parse(write_same16(0, 100, false, false).as_bytes())
                .unwrap()
                .data_out_length(4096),
            4096
        );
        assert_eq!(
            Command::parse(write_same16(0, 100, false, true).as_bytes())
                .unwrap()
                .data_out_length(4096),
            0
        );
        assert_eq!(
            Command::CompareAndWrite {
                rw: Rw {
                    blocks: 2,
                    ..Rw::default()
                }
            }
            .data_out_length(512),
            2048
        );
    }
}

#[cfg(test)]
mod unmap_limit_tests {
    use super::*;

    #[test]
    fn unmap_params_never_exceed_the_16_bit_length() {
        let ranges: Vec<(u64, u32)> = (0..5000u64).map(|i| (i * 8, 8)).collect();
        let p = encode_unmap_params(&ranges);
        assert_eq!(p.len(), 8 + 16 * MAX_UNMAP_DESCRIPTORS);
        let data_len = u16::from_be_bytes([p[0], p[1]]) as usize;
        assert_eq!(data_len + 2, p.len());
        let parsed = parse_unmap_params(&p).expect("parses back");
        assert_eq!(parsed.len(), MAX_UNMAP_DESCRIPTORS);
        assert_eq!(parsed[..], ranges[..MAX_UNMAP_DESCRIPTORS]);
    }
}
