//! Command execution: one function per command, each returning the
//! Data-In bytes or a failure that maps to a status and sense data.
//!
//! This file holds what every command shares: the unit-attention,
//! reservation, sanitize and medium gates run before a command (SAM-5 §5.14,
//! SPC-5 §5.13), the dispatch from the parsed `Command` to its executor, the
//! range/transfer/write-protect checks and the blocking-pool I/O helpers.
//! The executors live in one file per command family:
//!
//! | module           | commands                                                       |
//! |------------------|----------------------------------------------------------------|
//! | `rw`             | READ, WRITE, VERIFY, WRITE AND VERIFY, COMPARE AND WRITE, ORWRITE, WRITE ATOMIC |
//! | `thin`           | WRITE SAME, UNMAP, GET LBA STATUS                              |
//! | `reservations`   | PERSISTENT RESERVE IN/OUT (state machine in `scsi::pr`)         |
//! | `pages`          | REQUEST SENSE, INQUIRY/VPD, MODE SENSE/SELECT, REPORT SUPPORTED OPERATION CODES |
//! | `copy`           | EXTENDED COPY, RECEIVE COPY RESULTS (segment parsing in `scsi::xcopy`) |
//! | `maintenance`    | START STOP UNIT, SANITIZE                                      |

mod copy;
mod maintenance;
mod pages;
mod reservations;
mod rw;
mod thin;

use super::lu::{IoMode, LogicalUnit};
use super::pr::Access;
use super::transfer::{self, DataOutPlan};
use super::{DeviceServer, Nexus, ScsiRequest, ScsiResult};
use crate::backend::{BackendError, IoDir};
use bytes::{Bytes, BytesMut};
use proto::scsi::cdb::{self, CdbSize, Command, Opcode};
use proto::scsi::inquiry::{self as inq, StandardInquiry};
use proto::scsi::lun::{encode_report_luns, Lun};
use proto::scsi::{Asc, Sense, SenseKey, Status};
use std::sync::Arc;

/// Why a command did not complete with GOOD.
#[derive(Debug)]
pub(super) enum Fail {
    Check(Sense),
    Status(Status),
}

impl From<Sense> for Fail {
    fn from(s: Sense) -> Self {
        Fail::Check(s)
    }
}

type R = Result<Bytes, Fail>;

fn invalid_cdb(byte: u16, bit: Option<u8>) -> Fail {
    Fail::Check(Sense::invalid_field_in_cdb(byte, bit))
}

fn invalid_param(byte: u16, bit: Option<u8>) -> Fail {
    Fail::Check(Sense::invalid_field_in_parameter_list(byte, bit))
}

fn write_protected() -> Fail {
    Fail::Check(Sense::new(SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED))
}

fn param_list_length_error() -> Fail {
    Fail::Check(Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR))
}

/// Commands neither blocked nor cleared by a pending unit attention
/// (SAM-5 §5.14: INQUIRY, REPORT LUNS, REQUEST SENSE).
fn ua_exempt(op: u8) -> bool {
    matches!(
        Opcode(op),
        Opcode::INQUIRY | Opcode::REPORT_LUNS | Opcode::REQUEST_SENSE
    )
}

/// Commands this logical unit reports in REPORT SUPPORTED OPERATION CODES
/// (a subset of what proto parses). SANITIZE only when the LU enables it.
pub(super) fn supported(lu: &LogicalUnit, c: &cdb::CmdSpec) -> bool {
    match c.opcode {
        Opcode::EXTENDED_COPY | Opcode::RECEIVE_COPY_RESULTS => false,
        Opcode::SANITIZE => lu.cfg.sanitize,
        _ => true,
    }
}

/// Commands this logical unit executes: a command switched off in its
/// configuration is treated like an unknown operation code (SPC-5 §4.5.2:
/// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE).
pub(super) fn enabled(lu: &LogicalUnit, c: Command) -> Result<Command, cdb::CdbError> {
    match c {
        Command::Sanitize { .. } if !lu.cfg.sanitize => {
            Err(cdb::CdbError::Unsupported(Opcode::SANITIZE))
        }
        c => Ok(c),
    }
}

/// Persistent-reservation class of a command (SPC-5 table 63).
fn pr_access(c: &Command) -> Access {
    use Command::*;
    match c {
        Read { .. } | Verify { .. } | PreFetch { .. } | GetLbaStatus { .. } => Access::Read,
        Write { .. }
        | WriteAndVerify { .. }
        | WriteSame { .. }
        | Unmap { .. }
        | CompareAndWrite { .. }
        | OrWrite { .. }
        | WriteAtomic { .. }
        | SynchronizeCache { .. }
        | ModeSelect { .. }
        | Sanitize { .. }
        | ExtendedCopy { .. } => Access::Write,
        StartStopUnit { .. } => Access::Write,
        PreventAllowMediumRemoval { prevent } if *prevent != 0 => Access::Write,
        _ => Access::Always,
    }
}

/// Commands allowed while another nexus holds an SPC-2 reservation.
fn legacy_exempt(c: &Command) -> bool {
    use Command::*;
    matches!(
        c,
        Inquiry { .. }
            | ReportLuns { .. }
            | RequestSense { .. }
            | Release6
            | Release10
            | PersistentReserveIn { .. }
            | ReportSupportedOpcodes { .. }
            | ReportSupportedTmfs { .. }
    ) || matches!(c, PreventAllowMediumRemoval { prevent: 0 })
}

/// Commands that need the medium (removable LUs with the medium ejected
/// fail them with NOT READY, MEDIUM NOT PRESENT).
fn needs_medium(c: &Command) -> bool {
    use Command::*;
    !matches!(
        c,
        Inquiry { .. }
            | ReportLuns { .. }
            | RequestSense { .. }
            | ModeSense { .. }
            | ModeSelect { .. }
            | StartStopUnit { .. }
            | PreventAllowMediumRemoval { .. }
            | Reserve6
            | Release6
            | Reserve10
            | Release10
            | PersistentReserveIn { .. }
            | PersistentReserveOut { .. }
            | ReportSupportedOpcodes { .. }
            | ReportSupportedTmfs { .. }
    )
}

/// Bytes the CDB asks to transfer (for the shell's residual count).
fn transfer_length(c: &Command, bs: u32) -> Option<u32> {
    use Command::*;
    let v: u64 = match c {
        RequestSense { alloc_len, .. } => *alloc_len as u64,
        Inquiry { alloc_len, .. } => *alloc_len as u64,
        ReportLuns { alloc_len, .. } => *alloc_len as u64,
        ReadCapacity10 => 8,
        ReadCapacity16 { alloc_len } | GetLbaStatus { alloc_len, .. } => *alloc_len as u64,
        Read { rw, .. } => rw.blocks as u64 * bs as u64,
        ModeSense { alloc_len, .. } => *alloc_len as u64,
        PersistentReserveIn { alloc_len, .. } => *alloc_len as u64,
        ReportSupportedOpcodes { alloc_len, .. } | ReportSupportedTmfs { alloc_len, .. } => {
            *alloc_len as u64
        }
        ReceiveCopyResults { alloc_len, .. } => *alloc_len as u64,
        ReadDefectData { alloc_len, .. } => *alloc_len as u64,
        other => other.data_out_length(bs),
    };
    Some(u32::try_from(v).unwrap_or(u32::MAX))
}

fn truncate(mut v: Vec<u8>, alloc: usize) -> Bytes {
    v.truncate(alloc);
    Bytes::from(v)
}

pub(super) async fn execute(srv: &DeviceServer, nexus: &Nexus, mut req: ScsiRequest) -> ScsiResult {
    let op = req.cdb.first().copied().unwrap_or(0);
    // A LU the nexus may not access (LUN masking) is, for it, a LUN with
    // no logical unit.
    let Some(lu) = srv.lu_for(nexus, req.lun) else {
        return no_lu(srv, nexus, &req, Command::parse(&req.cdb));
    };
    // Control channel on: the tag comes off before the standard checks.
    let tagged = lu.control.untag(&req.cdb);
    let parsed = match &tagged {
        Some((_, plain)) => Command::parse(plain),
        None => Command::parse(&req.cdb),
    };
    let parsed = parsed.and_then(|c| enabled(&lu, c));
    let d_sense = match unit_attention(&lu, nexus, op) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if lu.control.trace() {
        tracing::info!(target: "iscsi_target::trace", lun = lu.cfg.lun, initiator = nexus.initiator_name(),
            cdb = format!("{:02x?}", &req.cdb[..]), data_out = req.data_out.len(), "command");
    }
    if op == proto::scsi::control::CTL_OPCODE && lu.control.enabled() {
        return match super::control::switches::execute(srv, &lu, nexus, &req) {
            Ok(data) => ScsiResult::good(data),
            Err(s) => ScsiResult::check(&s, d_sense),
        };
    }
    let cmd = match parsed {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(lun = req.lun, opcode = op, error = %e, "CDB rejected");
            return ScsiResult::check(&e.sense(), d_sense);
        }
    };
    let tl = transfer_length(&cmd, lu.block_size());
    let cmd = match plan_data_out(cmd, &lu, &mut req, tl, d_sense) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let cmd = match tagged {
        Some((tag, _)) => match super::control::tags::apply(&lu, nexus, tag, op, cmd).await {
            Ok(c) => c,
            Err(s) => {
                let mut r = ScsiResult::check(&s, d_sense);
                r.transfer_length = tl;
                return r;
            }
        },
        None => cmd,
    };
    let mut ctx = Ctx {
        srv,
        lu: &lu,
        nexus,
        req: &req,
    };
    let data_in_cmd = cmd.data_out_length(lu.block_size()) == 0;
    let mut r = match ctx.run(cmd).await {
        Ok(data) => {
            // Allocation-length commands move what they have, up to the
            // allocation length: the residual counts from the real length.
            let tl = if data_in_cmd {
                Some(data.len() as u32)
            } else {
                tl
            };
            let mut r = ScsiResult::good(data);
            r.transfer_length = tl;
            return r;
        }
        Err(Fail::Check(s)) => ScsiResult::check(&s, lu.state().modes.d_sense),
        Err(Fail::Status(s)) => ScsiResult::status(s),
    };
    r.transfer_length = tl;
    r
}

/// The unit attention step (SAM-5 §5.14): a new I_T nexus sees the
/// power-on condition, a capacity changed outside the device server is
/// reported (SBC-4 §4.10), and a pending unit attention ends any command
/// but the exempt ones. Gives the LU's D_SENSE setting, or the answer.
fn unit_attention(lu: &LogicalUnit, nexus: &Nexus, op: u8) -> Result<bool, ScsiResult> {
    let mut st = lu.state();
    if st.seen.insert(nexus.clone()) {
        // SAM-5 §5.14: the first command on a new I_T nexus sees the
        // power-on condition.
        st.push_ua(nexus, Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET);
    }
    let d = st.modes.d_sense;
    if lu.capacity_changed() {
        // SBC-4 §4.10: a capacity changed outside the device server (an
        // RBD image grown with `rbd resize`).
        st.push_ua_all(Asc::CAPACITY_DATA_HAS_CHANGED, None);
    }
    if !ua_exempt(op) {
        if let Some(asc) = st.ua.get_mut(nexus).and_then(|q| q.pop_front()) {
            return Err(ScsiResult::check(&Sense::unit_attention(asc), d));
        }
    }
    Ok(d)
}

/// Data-Out received vs. needed: one rule for every command (see
/// `scsi::transfer`): run on what arrived, shorten to whole blocks, or
/// refuse with nothing written. The transport reports the residual.
fn plan_data_out(
    cmd: Command,
    lu: &LogicalUnit,
    req: &mut ScsiRequest,
    tl: Option<u32>,
    d_sense: bool,
) -> Result<Command, ScsiResult> {
    let op = req.cdb.first().copied().unwrap_or(0);
    let received = req.data_out.len() as u64;
    Ok(match transfer::plan(&cmd, lu.block_size(), received) {
        DataOutPlan::Run { len } => {
            req.data_out
                .truncate(usize::try_from(len).unwrap_or(usize::MAX));
            cmd
        }
        DataOutPlan::Shorten { blocks } => {
            let len = u64::from(blocks) * u64::from(lu.block_size());
            req.data_out
                .truncate(usize::try_from(len).unwrap_or(usize::MAX));
            transfer::shorten(cmd, blocks)
        }
        DataOutPlan::InvalidCdb { byte } => {
            let mut r = ScsiResult::check(&Sense::invalid_field_in_cdb(byte, None), d_sense);
            r.transfer_length = tl;
            return Err(r);
        }
        DataOutPlan::Refuse => {
            tracing::debug!(
                lun = req.lun,
                opcode = op,
                received,
                "Data-Out shorter than the CDB needs"
            );
            let s = Sense::illegal_request(Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT);
            let mut r = ScsiResult::check(&s, d_sense);
            r.transfer_length = tl;
            return Err(r);
        }
    })
}

/// Commands addressed to a LUN with no logical unit (SPC-5 §4.6.4.2 /
/// SAM-5 §5.9.5).
fn no_lu(
    srv: &DeviceServer,
    nexus: &Nexus,
    _req: &ScsiRequest,
    parsed: Result<Command, cdb::CdbError>,
) -> ScsiResult {
    let not_supported = Sense::illegal_request(Asc::LOGICAL_UNIT_NOT_SUPPORTED);
    let cmd = match parsed {
        Ok(c) => c,
        Err(_) => return ScsiResult::check(&not_supported, false),
    };
    let tl = transfer_length(&cmd, 512);
    let mut r = match cmd {
        Command::Inquiry {
            evpd: false,
            page_code: 0,
            alloc_len,
        } => {
            let mut s = StandardInquiry::block_device("", "", "");
            s.peripheral_qualifier = inq::PQ_NOT_CAPABLE;
            s.device_type = 0x1F;
            s.version_descriptors.clear();
            ScsiResult::good(truncate(s.encode(), alloc_len as usize))
        }
        Command::ReportLuns {
            select_report,
            alloc_len,
        } => match report_luns(srv, nexus, select_report, alloc_len) {
            Ok(b) => ScsiResult::good(b),
            Err(Fail::Check(s)) => ScsiResult::check(&s, false),
            Err(Fail::Status(s)) => ScsiResult::status(s),
        },
        Command::RequestSense { desc, alloc_len } => {
            // SPC-5 §6.39: sense data reporting the unsupported LUN, GOOD status.
            ScsiResult::good(truncate(not_supported.encode(desc), alloc_len as usize))
        }
        _ => ScsiResult::check(&not_supported, false),
    };
    r.transfer_length = tl;
    r
}

/// SPC-5 §6.33: the logical unit inventory accessible to the I_T nexus.
fn report_luns(srv: &DeviceServer, nexus: &Nexus, select_report: u8, alloc_len: u32) -> R {
    if alloc_len < 16 {
        return Err(invalid_cdb(6, None));
    }
    let luns: Vec<Lun> = match select_report {
        0 | 2 => srv
            .luns_for(nexus)
            .into_iter()
            .map(|n| Lun::from_number(n as u16))
            .collect(),
        1 => Vec::new(),
        _ => return Err(invalid_cdb(2, None)),
    };
    Ok(truncate(encode_report_luns(&luns), alloc_len as usize))
}

struct Ctx<'a> {
    srv: &'a DeviceServer,
    lu: &'a Arc<LogicalUnit>,
    nexus: &'a Nexus,
    req: &'a ScsiRequest,
}

impl Ctx<'_> {
    fn bs(&self) -> u64 {
        self.lu.block_size() as u64
    }

    async fn run(&mut self, cmd: Command) -> R {
        use Command::*;
        self.gate(&cmd)?;
        match cmd {
            Read { .. }
            | Write { .. }
            | Verify { .. }
            | WriteAndVerify { .. }
            | WriteSame { .. }
            | Unmap { .. }
            | GetLbaStatus { .. }
            | CompareAndWrite { .. }
            | OrWrite { .. }
            | WriteAtomic { .. }
            | SynchronizeCache { .. }
            | PreFetch { .. }
            | Sanitize { .. }
            | ExtendedCopy { .. }
            | ReceiveCopyResults { .. } => self.run_block(cmd).await,
            StartStopUnit { .. }
            | PreventAllowMediumRemoval { .. }
            | Reserve6
            | Reserve10
            | Release6
            | Release10
            | PersistentReserveIn { .. }
            | PersistentReserveOut { .. } => self.run_state(cmd).await,
            _ => self.run_info(cmd),
        }
    }

    /// Reservations (SPC-5 §5.13.1, SPC-2 §5.5.1), a sanitize in progress
    /// and a missing medium, checked before any command runs.
    fn gate(&self, cmd: &Command) -> Result<(), Fail> {
        use Command::*;
        let st = self.lu.state();
        if !legacy_exempt(cmd) && st.res.legacy_conflicts(self.nexus) {
            return Err(Fail::Status(Status::RESERVATION_CONFLICT));
        }
        if st.res.conflicts(self.nexus, pr_access(cmd)) {
            return Err(Fail::Status(Status::RESERVATION_CONFLICT));
        }
        if st.sanitizing
            && !matches!(
                cmd,
                Inquiry { .. } | ReportLuns { .. } | RequestSense { .. }
            )
        {
            return Err(st.sanitize_in_progress().into());
        }
        if self.lu.cfg.removable && !st.medium_present && needs_medium(cmd) {
            return Err(Sense::new(SenseKey::NOT_READY, Asc::MEDIUM_NOT_PRESENT).into());
        }
        Ok(())
    }

    /// Reads, writes and the other block commands (SBC-4 §5), copy and sanitize.
    async fn run_block(&mut self, cmd: Command) -> R {
        use Command::*;
        match cmd {
            Read { size, rw } => self.read(size, rw).await,
            Write { size, rw } => self.write(size, rw).await,
            Verify { size, rw, bytchk } => self.verify(size, rw, bytchk).await,
            WriteAndVerify { size, rw, bytchk } => self.write_and_verify(size, rw, bytchk).await,
            WriteSame {
                size,
                lba,
                blocks,
                unmap,
                ndob,
                ..
            } => self.write_same(size, lba, blocks, unmap, ndob).await,
            Unmap { param_len, .. } => self.unmap(param_len).await,
            GetLbaStatus { lba, alloc_len } => self.get_lba_status(lba, alloc_len).await,
            CompareAndWrite { rw } => self.compare_and_write(rw).await,
            OrWrite { rw } => self.or_write(rw).await,
            WriteAtomic { rw, boundary } => self.write_atomic(rw, boundary).await,
            SynchronizeCache {
                size, lba, blocks, ..
            } => {
                self.check_range(size, lba, blocks, true)?;
                self.flush().await?;
                Ok(Bytes::new())
            }
            PreFetch {
                size, lba, blocks, ..
            } => {
                // No cache to load: GOOD (SBC-4 §5.9: CONDITION MET only when
                // the blocks fit a cache).
                self.check_range(size, lba, blocks, true)?;
                Ok(Bytes::new())
            }
            Sanitize {
                service_action,
                param_len,
                ause,
                immed,
            } => self.sanitize(service_action, param_len, ause, immed).await,
            ExtendedCopy { param_len } => self.extended_copy(param_len).await,
            ReceiveCopyResults {
                service_action,
                list_id,
                alloc_len,
            } => self.receive_copy_results(service_action, list_id, alloc_len),
            // `run` sends only this family here.
            _ => Err(invalid_cdb(0, None)),
        }
    }

    /// Start/stop, medium removal and reservations (SBC-4, SPC-5 §5.13).
    async fn run_state(&mut self, cmd: Command) -> R {
        use Command::*;
        match cmd {
            StartStopUnit {
                power_condition,
                loej,
                start,
                ..
            } => self.start_stop(power_condition, loej, start).await,
            PreventAllowMediumRemoval { prevent } => {
                let mut st = self.lu.state();
                match prevent {
                    0 => {
                        st.prevent.remove(self.nexus);
                    }
                    1 => {
                        st.prevent.insert(self.nexus.clone());
                    }
                    // 10b/11b are obsolete for direct-access devices.
                    _ => return Err(invalid_cdb(4, Some(1))),
                }
                Ok(Bytes::new())
            }
            Reserve6 | Reserve10 => {
                self.lu
                    .state()
                    .res
                    .reserve_legacy(self.nexus)
                    .map_err(|_| Fail::Status(Status::RESERVATION_CONFLICT))?;
                Ok(Bytes::new())
            }
            Release6 | Release10 => {
                self.lu
                    .state()
                    .res
                    .release_legacy(self.nexus)
                    .map_err(|_| Fail::Status(Status::RESERVATION_CONFLICT))?;
                Ok(Bytes::new())
            }
            PersistentReserveIn {
                service_action,
                alloc_len,
            } => self.prin(service_action, alloc_len),
            PersistentReserveOut {
                service_action,
                scope,
                pr_type,
                param_len,
            } => self.prout(service_action, scope, pr_type, param_len).await,
            // `run` sends only this family here.
            _ => Err(invalid_cdb(0, None)),
        }
    }

    /// Inquiry, sense, capacity, mode pages and the other informational commands.
    fn run_info(&mut self, cmd: Command) -> R {
        use Command::*;
        match cmd {
            TestUnitReady => Ok(Bytes::new()),
            RequestSense { desc, alloc_len } => self.request_sense(desc, alloc_len),
            Inquiry {
                evpd,
                page_code,
                alloc_len,
            } => self.inquiry(evpd, page_code, alloc_len),
            ReportLuns {
                select_report,
                alloc_len,
            } => {
                let r = report_luns(self.srv, self.nexus, select_report, alloc_len)?;
                // SPC-5 §6.33: REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED.
                if let Some(q) = self.lu.state().ua.get_mut(self.nexus) {
                    q.retain(|a| *a != Asc::REPORTED_LUNS_DATA_HAS_CHANGED);
                }
                Ok(r)
            }
            ReadCapacity10 => {
                let last = self.lu.num_blocks().saturating_sub(1);
                Ok(Bytes::copy_from_slice(&inq::encode_read_capacity10(
                    last,
                    self.lu.block_size(),
                )))
            }
            ReadCapacity16 { alloc_len } => {
                let thin = self.lu.thin();
                let rc = inq::ReadCapacity16 {
                    last_lba: self.lu.num_blocks().saturating_sub(1),
                    block_len: self.lu.block_size(),
                    lbpme: thin,
                    lbprz: thin && self.lu.cfg.backend.unmap_reads_zero(),
                    lbppbe: self.lu.lbppbe(),
                    ..Default::default()
                };
                Ok(truncate(rc.encode().to_vec(), alloc_len as usize))
            }
            ModeSense {
                size,
                dbd,
                llbaa,
                pc,
                page,
                subpage,
                alloc_len,
            } => self.mode_sense(
                size == CdbSize::Ten,
                dbd,
                llbaa,
                pc,
                page,
                subpage,
                alloc_len,
            ),
            ModeSelect {
                size,
                pf,
                sp,
                param_len,
            } => self.mode_select(size == CdbSize::Ten, pf, sp, param_len),
            ReportSupportedOpcodes {
                rctd,
                options,
                opcode,
                service_action,
                alloc_len,
            } => pages::report_supported_opcodes(
                self.lu,
                rctd,
                options,
                opcode,
                service_action,
                alloc_len,
            ),
            ReportSupportedTmfs { repd, alloc_len } => {
                // ABORT TASK, ABORT TASK SET, LOGICAL UNIT RESET, TARGET RESET.
                let mut v = vec![0x80 | 0x40 | 0x08 | 0x02, 0, 0, 0];
                if repd {
                    v[3] = 0x0C;
                    v.resize(16, 0);
                }
                Ok(truncate(v, alloc_len as usize))
            }
            ReadDefectData {
                size,
                format,
                alloc_len,
                ..
            } => {
                // No defects: an empty list in the requested format.
                let v = if size == CdbSize::Twelve {
                    vec![0, format & 7, 0, 0, 0, 0, 0, 0]
                } else {
                    vec![0, format & 7, 0, 0]
                };
                Ok(truncate(v, alloc_len as usize))
            }
            // `run` sends only this family here.
            _ => Err(invalid_cdb(0, None)),
        }
    }
    // ---- checks and blocking I/O helpers ----

    /// SBC-4 §4.5: LBA range check; `zero_means_to_end` for SYNCHRONIZE
    /// CACHE / PRE-FETCH where 0 blocks means "through the last LBA".
    fn check_range(
        &self,
        _size: CdbSize,
        lba: u64,
        blocks: u32,
        _zero_means_to_end: bool,
    ) -> Result<(), Fail> {
        let n = self.lu.num_blocks();
        if lba >= n || lba.checked_add(blocks as u64).is_none_or(|e| e > n) {
            return Err(Sense::illegal_request(Asc::LBA_OUT_OF_RANGE).into());
        }
        Ok(())
    }

    fn check_transfer(&self, size: CdbSize, blocks: u32) -> Result<(), Fail> {
        let max = self.srv.limits.max_transfer_bytes as u64 / self.bs();
        if blocks as u64 > max {
            let byte = match size {
                CdbSize::Six => 4,
                CdbSize::Ten => 7,
                CdbSize::Twelve => 6,
                CdbSize::Sixteen => 10,
            };
            return Err(invalid_cdb(byte, None));
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), Fail> {
        let st = self.lu.state();
        if st.mode == IoMode::ReadOnly || st.modes.swp {
            return Err(write_protected());
        }
        Ok(())
    }

    /// The first `needed` bytes of Data-Out. `transfer::plan` has already
    /// refused short Data-Out (INVALID FIELD IN COMMAND INFORMATION UNIT,
    /// SAM-5 §5.4.3); this keeps an executor from ever reading past it.
    fn data_out(&self, needed: u64) -> Result<Bytes, Fail> {
        let d = &self.req.data_out;
        if (d.len() as u64) < needed {
            return Err(
                Sense::illegal_request(Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT).into(),
            );
        }
        Ok(d.slice(..needed as usize))
    }

    /// Write durability per mode: write-through (or WCE = 0) and FUA writes
    /// are flushed before status.
    fn must_sync(&self, fua: bool) -> bool {
        let st = self.lu.state();
        fua || st.mode == IoMode::WriteThrough || !st.modes.wce
    }

    async fn blocking<T: Send + 'static>(
        &self,
        dir: IoDir,
        f: impl FnOnce(&dyn crate::backend::Backend) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, Fail> {
        let be = self.lu.cfg.backend.clone();
        match tokio::task::spawn_blocking(move || f(be.as_ref())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "backend I/O failed");
                Err(e.sense(dir).into())
            }
            Err(_) => {
                Err(Sense::new(SenseKey::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE).into())
            }
        }
    }

    /// Awaits an operation of the backend's asynchronous data path
    /// ([`crate::backend::AsyncIo`]), mapping its error to sense data.
    async fn awaited<T>(&self, dir: IoDir, f: crate::backend::IoFuture<T>) -> Result<T, Fail> {
        f.await.map_err(|e| {
            tracing::warn!(error = %e, "backend I/O failed");
            e.sense(dir).into()
        })
    }

    async fn read_blocks(&self, lba: u64, blocks: u32) -> R {
        let bs = self.bs();
        let len = blocks as usize * bs as usize;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let off = lba * bs;
        if let Some(a) = self.lu.cfg.backend.aio() {
            return self.awaited(IoDir::Read, a.read(off, len)).await;
        }
        let buf = self
            .blocking(IoDir::Read, move |b| {
                let mut buf = BytesMut::zeroed(len);
                b.read_at(&mut buf, off)?;
                Ok(buf)
            })
            .await?;
        Ok(buf.freeze())
    }

    async fn write_blocks(&self, lba: u64, data: Bytes, fua: bool) -> Result<(), Fail> {
        if data.is_empty() {
            return Ok(());
        }
        let off = lba * self.bs();
        let len = data.len() as u64;
        let sync = self.must_sync(fua);
        if let Some(a) = self.lu.cfg.backend.aio() {
            self.awaited(IoDir::Write, a.write(off, data)).await?;
            if sync {
                self.awaited(IoDir::Write, a.flush()).await?;
            }
            return Ok(());
        }
        self.blocking(IoDir::Write, move |b| {
            b.write_at(&data, off)?;
            if sync {
                b.flush_range(off, len)?;
            }
            Ok(())
        })
        .await
    }

    async fn flush(&self) -> Result<(), Fail> {
        if let Some(a) = self.lu.cfg.backend.aio() {
            return self.awaited(IoDir::Write, a.flush()).await;
        }
        self.blocking(IoDir::Write, |b| b.flush()).await
    }
}

#[cfg(test)]
mod tests;
