//! CDB decoding, the target side: [`Command::parse`] checks a CDB against
//! its usage mask (SPC-5 §6.35.3) and then reads its fields (SPC-5 §4.2,
//! SBC-4 §5), one decoder per command family.

use super::rw::RwKind;
use super::{
    be16, be32, be64, check_reserved, lookup, sa, CdbError, CdbSize, Command, Opcode, Rw, COMMANDS,
};

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
        Ok(decode(op, c))
    }
}

/// Reads the fields of a CDB whose reserved bits were checked.
fn decode(op: Opcode, c: &[u8]) -> Command {
    decode_rw(op, c)
        .or_else(|| decode_block(op, c))
        .or_else(|| decode_info(op, c))
        .unwrap_or_else(|| decode_mgmt(op, c))
}

/// READ, WRITE, VERIFY and WRITE AND VERIFY in all their sizes (SBC-4 §5),
/// from the family table in `rw.rs`.
fn decode_rw(op: Opcode, c: &[u8]) -> Option<Command> {
    let (kind, size) = RwKind::of(op)?;
    let rw = match size {
        CdbSize::Six => rw6(c),
        CdbSize::Ten => rw10(c),
        CdbSize::Twelve => rw12(c),
        CdbSize::Sixteen => rw16(c),
    };
    Some(kind.command(size, rw, (c[1] >> 1) & 0x03))
}

/// The other block commands: WRITE SAME, UNMAP, COMPARE AND WRITE, ORWRITE,
/// WRITE ATOMIC, SYNCHRONIZE CACHE, PRE-FETCH (SBC-4 §5).
fn decode_block(op: Opcode, c: &[u8]) -> Option<Command> {
    let dpo = c[1] & 0x10 != 0;
    let fua = c[1] & 0x08 != 0;
    use CdbSize::*;
    Some(match op {
        Opcode::WRITE_SAME_10 => {
            let r = rw10(c);
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
            let r = rw16(c);
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
        Opcode::ORWRITE_16 => Command::OrWrite { rw: rw16(c) },
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
            let r = rw10(c);
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
            let r = rw16(c);
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
        _ => return None,
    })
}

/// Device information and state: TEST UNIT READY, REQUEST SENSE, INQUIRY,
/// REPORT LUNS, READ CAPACITY(10), MODE SENSE/SELECT, START STOP UNIT,
/// PREVENT ALLOW MEDIUM REMOVAL (SPC-5, SBC-4).
fn decode_info(op: Opcode, c: &[u8]) -> Option<Command> {
    use CdbSize::*;
    Some(match op {
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
        _ => return None,
    })
}

/// Reservations, service-action commands, sanitize, copy and defect data
/// (SPC-5, SBC-4).
fn decode_mgmt(op: Opcode, c: &[u8]) -> Command {
    use CdbSize::*;
    match op {
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
        // `lookup` only returns specs listed here and in the other decoders.
        _ => Command::TestUnitReady,
    }
}

fn rw10(c: &[u8]) -> Rw {
    Rw {
        lba: be32(&c[2..]) as u64,
        blocks: be16(&c[7..]) as u32,
        dpo: c[1] & 0x10 != 0,
        fua: c[1] & 0x08 != 0,
        group: c[6] & 0x3F,
    }
}

fn rw12(c: &[u8]) -> Rw {
    Rw {
        lba: be32(&c[2..]) as u64,
        blocks: be32(&c[6..]),
        dpo: c[1] & 0x10 != 0,
        fua: c[1] & 0x08 != 0,
        group: c[10] & 0x3F,
    }
}

fn rw16(c: &[u8]) -> Rw {
    Rw {
        lba: be64(&c[2..]),
        blocks: be32(&c[10..]),
        dpo: c[1] & 0x10 != 0,
        fua: c[1] & 0x08 != 0,
        group: c[14] & 0x3F,
    }
}

/// READ(6)/WRITE(6): a transfer length of 0 means 256 blocks (SBC-4).
fn rw6(c: &[u8]) -> Rw {
    let blocks = if c[4] == 0 { 256 } else { c[4] as u32 };
    Rw {
        lba: (((c[1] & 0x1F) as u64) << 16) | be16(&c[2..]) as u64,
        blocks,
        ..Rw::default()
    }
}
