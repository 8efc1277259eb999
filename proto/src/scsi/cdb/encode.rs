//! CDB encoding, the initiator side: [`Command::encode`] builds the bytes
//! that [`Command::parse`] reads back (SPC-5 §4.2, SBC-4 §5), one encoder per
//! command family, and [`Command::data_out_length`].

use super::rw::RwKind;
use super::{sa, Cdb, CdbSize, Command, Opcode, Rw};

impl Command {
    /// Builds the CDB (initiator side). The result parses back to `self`
    /// for every value `parse` can produce.
    pub fn encode(&self) -> Cdb {
        let mut c = Cdb::new();
        let done = self.encode_rw(&mut c)
            || self.encode_block(&mut c)
            || self.encode_info(&mut c)
            || self.encode_mode(&mut c);
        if !done {
            self.encode_mgmt(&mut c);
        }
        c
    }

    /// READ, WRITE, VERIFY, WRITE AND VERIFY (the family table in `rw.rs`).
    fn encode_rw(&self, c: &mut Cdb) -> bool {
        let verify_b1 = |rw: &Rw, bytchk: u8| (if rw.dpo { 0x10 } else { 0 }) | ((bytchk & 3) << 1);
        let (kind, size, rw, b1) = match self {
            Command::Read { size, rw } => (RwKind::Read, *size, rw, flags(rw)),
            Command::Write { size, rw } => (RwKind::Write, *size, rw, flags(rw)),
            Command::Verify { size, rw, bytchk } => {
                (RwKind::Verify, *size, rw, verify_b1(rw, *bytchk))
            }
            Command::WriteAndVerify { size, rw, bytchk } => {
                (RwKind::WriteAndVerify, *size, rw, verify_b1(rw, *bytchk))
            }
            _ => return false,
        };
        rw_cdb(c, kind.opcode(size), kind.size(size), rw, b1);
        true
    }

    /// WRITE SAME, UNMAP, COMPARE AND WRITE, ORWRITE, WRITE ATOMIC,
    /// SYNCHRONIZE CACHE, PRE-FETCH.
    fn encode_block(&self, c: &mut Cdb) -> bool {
        match self {
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
                    rw_cdb(c, Opcode::WRITE_SAME_16, CdbSize::Sixteen, &rw, b1);
                } else {
                    rw_cdb(c, Opcode::WRITE_SAME_10, CdbSize::Ten, &rw, b1 & 0x08);
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
                rw_cdb(c, Opcode::ORWRITE_16, CdbSize::Sixteen, rw, flags(rw))
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
                    rw_cdb(c, op16, CdbSize::Sixteen, &rw, b1);
                } else {
                    rw_cdb(c, op10, CdbSize::Ten, &rw, b1);
                }
            }
            _ => return false,
        }
        true
    }

    /// TEST UNIT READY, REQUEST SENSE, INQUIRY, REPORT LUNS, READ CAPACITY,
    /// GET LBA STATUS.
    fn encode_info(&self, c: &mut Cdb) -> bool {
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
            _ => return false,
        }
        true
    }

    /// MODE SENSE/SELECT, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL.
    fn encode_mode(&self, c: &mut Cdb) -> bool {
        match self {
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
            _ => return false,
        }
        true
    }

    /// Reservations, REPORT SUPPORTED OPERATION CODES/TMFs, SANITIZE, copy,
    /// defect data.
    fn encode_mgmt(&self, c: &mut Cdb) -> bool {
        match self {
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
            _ => return false,
        }
        true
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

/// DPO and FUA of byte 1 (SBC-4 §5.x READ/WRITE).
fn flags(rw: &Rw) -> u8 {
    (if rw.dpo { 0x10 } else { 0 }) | (if rw.fua { 0x08 } else { 0 })
}

/// The LBA, transfer length and GROUP NUMBER of a READ/WRITE-shaped CDB of
/// `size`, with `b1` as byte 1 (SBC-4 §5: the 6-byte form has no byte-1
/// flags and a 21-bit LBA).
fn rw_cdb(c: &mut Cdb, op: Opcode, size: CdbSize, rw: &Rw, b1: u8) {
    match size {
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
    }
}
