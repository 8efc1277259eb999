//! Command execution: one function per command, each returning the
//! Data-In bytes or a failure that maps to a status and sense data.
//!
//! This file holds the way in, [`execute`]: the unit-attention step
//! (SAM-5 §5.14), the Data-Out plan (`scsi::transfer`), the control
//! channel's tag, and the answer for a LUN with no logical unit. Then:
//!
//! | module           | what                                                           |
//! |------------------|----------------------------------------------------------------|
//! | `dispatch`       | the reservation/sanitize/medium gate (SPC-5 §5.13) and the dispatch of a `Command` to its executor |
//! | `io`             | range, transfer-length and write-protect checks; Data-Out; backend I/O helpers |
//! | `rw`             | READ, WRITE, VERIFY, WRITE AND VERIFY, COMPARE AND WRITE, ORWRITE, WRITE ATOMIC |
//! | `thin`           | WRITE SAME, UNMAP, GET LBA STATUS                              |
//! | `reservations`   | PERSISTENT RESERVE IN/OUT (state machine in `scsi::pr`)         |
//! | `pages`          | REQUEST SENSE, INQUIRY/VPD, MODE SENSE/SELECT, REPORT SUPPORTED OPERATION CODES |
//! | `copy`           | EXTENDED COPY, RECEIVE COPY RESULTS (segment parsing in `scsi::xcopy`) |
//! | `maintenance`    | START STOP UNIT, SANITIZE                                      |

mod copy;
mod dispatch;
mod io;
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
    // `contains` first: no clone of the nexus names per command.
    if !st.seen.contains(nexus) && st.seen.insert(nexus.clone()) {
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
    // `is_empty` first: with no unit attention pending on the LU (the
    // usual case: emptied queues are removed below) no lookup per command.
    if !ua_exempt(op) && !st.ua.is_empty() {
        if let Some(q) = st.ua.get_mut(nexus) {
            let asc = q.pop_front();
            if q.is_empty() {
                st.ua.remove(nexus);
            }
            if let Some(asc) = asc {
                return Err(ScsiResult::check(&Sense::unit_attention(asc), d));
            }
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
}

#[cfg(test)]
mod tests;
