//! SCSI tasks on one target connection: admission of a SCSI Command
//! (RFC 7143 §4.2.2.1, §11.3), write data collection — immediate data,
//! unsolicited Data-Out, R2T sequences (§4.2.5.2, §11.7, §11.8, the rules in
//! [`crate::session::collector`]) — and the answer: Data-In and SCSI
//! Response with residuals ([`crate::session::data_in`], §11.4, §11.7).

use bytes::Bytes;

use super::{Event, NewTask, Outcome, Refusal, TargetConn, TargetSession, TaskError, TaskId};
use crate::pdu::{DataOut, Pdu, RejectReason, ScsiCommand};
use crate::scsi::{Asc, Sense, SenseKey, Status};
use crate::serial::CmdSn;
use crate::session::data_in::{self, Completion, Residual};
use crate::session::{R2tRequest, WriteCollector};

/// A command ready for the device server.
#[derive(Debug, Clone)]
pub struct Command {
    pub itt: u32,
    /// The session task table's id for it.
    pub task: TaskId,
    pub lun: u64,
    pub cmd_sn: CmdSn,
    pub cdb: Bytes,
    /// Task attribute (SAM-5; §11.3.1 ATTR).
    pub attr: u8,
    pub read: bool,
    pub write: bool,
    /// ExpectedDataTransferLength.
    pub edtl: u32,
    /// All the write data (EDTL bytes for a write; empty otherwise).
    pub data_out: Bytes,
}

/// A task of this connection.
#[derive(Debug)]
pub(super) struct Task {
    id: TaskId,
    lun: u64,
    read: bool,
    write: bool,
    edtl: u32,
    /// Collecting write data; `None` once handed to the shell.
    collecting: Option<Collecting>,
}

#[derive(Debug)]
struct Collecting {
    collector: WriteCollector,
    cmd: Command,
}

/// ILLEGAL REQUEST, INVALID FIELD IN CDB (SPC-5), for a command the
/// transport refuses before the device server sees it.
fn sense_invalid_field_in_cdb() -> Sense {
    Sense::new(SenseKey::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB)
}

/// ABORTED COMMAND, DATA PHASE ERROR (4Bh/00h), for a write whose Data-Out
/// sequence broke the rules (DataSN, offsets, bursts).
fn sense_data_phase_error() -> Sense {
    Sense::new(SenseKey::ABORTED_COMMAND, Asc::DATA_PHASE_ERROR)
}

/// ABORTED COMMAND, PROTOCOL SERVICE CRC ERROR (47h/05h), for a write one
/// of whose Data-Out failed its data digest (§7.8, §11.4.7.2). Nothing was
/// written; the initiator may retry the command.
fn sense_protocol_crc_error() -> Sense {
    Sense::new(SenseKey::ABORTED_COMMAND, Asc::PROTOCOL_SERVICE_CRC_ERROR)
}

impl<S: TargetSession> TargetConn<S> {
    pub(super) fn scsi_command(&mut self, c: ScsiCommand) {
        let Some(counted) = self.admit(c.cmd_sn, c.immediate) else {
            return;
        };
        self.prune_aborted();
        let new = NewTask {
            itt: c.itt,
            lun: c.lun,
            cmd_sn: c.cmd_sn,
            counted,
        };
        let id = match self.session.register_task(&new) {
            Ok(id) => id,
            Err(e) => return self.refuse(counted, e, c),
        };
        // A stale entry (an aborted task whose ITT is reused) is dropped only
        // now: while the ITT was registered the command was refused above,
        // and a write in flight keeps its collector.
        self.tasks.remove(&c.itt);
        let write_len = if c.write {
            c.expected_data_transfer_length
        } else {
            0
        };
        let cmd = Command {
            itt: c.itt,
            task: id,
            lun: c.lun,
            cmd_sn: c.cmd_sn,
            cdb: c.cdb.clone(),
            attr: c.attr.0,
            read: c.read,
            write: c.write,
            edtl: c.expected_data_transfer_length,
            data_out: Bytes::new(),
        };
        if write_len == 0 && !c.data.is_empty() {
            // Data without the W bit: §11.3.1 protocol error.
            self.session.retire_task(c.itt, id);
            return self.reject_pdu(RejectReason::PROTOCOL_ERROR, &Pdu::ScsiCommand(c));
        }
        self.tasks.insert(
            c.itt,
            Task {
                id,
                lun: c.lun,
                read: c.read,
                write: c.write,
                edtl: c.expected_data_transfer_length,
                collecting: None,
            },
        );
        if write_len == 0 {
            return self.events.push_back(Event::Execute(cmd));
        }
        if write_len > self.config.max_write_buffer {
            return self.fail(c.itt, TaskError::TooLarge(write_len));
        }
        match WriteCollector::new(write_len, c.data, c.final_, self.config.write) {
            Ok(collector) => self.collect(cmd, collector),
            // ERL 0 without dropping the connection: the task ends with
            // CHECK CONDITION; later Data-Out for it is discarded.
            Err(e) => self.fail(c.itt, TaskError::DataOut(e)),
        }
    }

    fn refuse(&mut self, counted: bool, e: Refusal, c: ScsiCommand) {
        if counted {
            self.session.release_slot();
        }
        let reason = match e {
            Refusal::TaskInProgress => RejectReason::TASK_IN_PROGRESS,
            Refusal::TooManyImmediate => RejectReason::IMMEDIATE_COMMAND_REJECT,
            Refusal::Closed => return,
        };
        self.reject_pdu(reason, &Pdu::ScsiCommand(c));
    }

    /// Writes aborted by a TMF (which may run on another connection) still
    /// hold their partly filled buffers; drop them so abort-and-retry
    /// cannot pin memory without bound (§4.2.3.3: an aborted task's data is
    /// discarded).
    fn prune_aborted(&mut self) {
        let session = &self.session;
        let any = self.tasks.values().any(|t| t.collecting.is_some());
        if any {
            self.tasks
                .retain(|itt, t| t.collecting.is_none() || !session.is_aborted(*itt, t.id));
        }
    }

    /// Keep collecting, or hand the command over when its data is complete.
    fn collect(&mut self, mut cmd: Command, mut collector: WriteCollector) {
        if collector.is_complete() {
            cmd.data_out = collector.take_data();
            return self.events.push_back(Event::Execute(cmd));
        }
        let ttts = &mut self.ttts;
        let r2ts = collector.next_r2ts(|| ttts.allocate());
        self.send_r2ts(&cmd, r2ts);
        if let Some(t) = self.tasks.get_mut(&cmd.itt) {
            t.collecting = Some(Collecting { collector, cmd });
        }
    }

    fn send_r2ts(&mut self, cmd: &Command, r2ts: Vec<R2tRequest>) {
        for r in r2ts {
            self.queue(r.to_pdu(cmd.lun, cmd.itt));
        }
    }

    pub(super) fn data_out(&mut self, d: DataOut) {
        // §11.7: data for a task we no longer know (aborted, already failed
        // or executing) is discarded.
        let Some(task) = self.tasks.get_mut(&d.itt) else {
            return;
        };
        let id = task.id;
        let Some(mut c) = task.collecting.take() else {
            return;
        };
        if self.session.is_aborted(d.itt, id) {
            self.tasks.remove(&d.itt);
            return;
        }
        let final_ = d.final_;
        if let Err(e) = c
            .collector
            .data_out(d.ttt, d.data_sn, d.buffer_offset, d.final_, d.data)
        {
            // §7.1.4 (ERL 0): a data sequence error terminates the task; we
            // answer it with CHECK CONDITION and keep the connection.
            return self.fail(d.itt, TaskError::DataOut(e));
        }
        if c.collector.is_drained() {
            return self.fail(d.itt, TaskError::DataDigest);
        }
        if c.collector.is_complete() {
            let mut cmd = c.cmd;
            cmd.data_out = c.collector.take_data();
            return self.events.push_back(Event::Execute(cmd));
        }
        if final_ {
            let ttts = &mut self.ttts;
            let r2ts = c.collector.next_r2ts(|| ttts.allocate());
            self.send_r2ts(&c.cmd, r2ts);
        }
        if let Some(t) = self.tasks.get_mut(&d.itt) {
            t.collecting = Some(c);
        }
    }

    /// A Data-Out of a write being collected failed its data digest:
    /// discard the write's data and end the task with PROTOCOL SERVICE CRC
    /// ERROR once its open sequences have ended (§7.8, ERL 0).
    pub(super) fn data_out_digest_error(&mut self, d: DataOut) {
        let Some(task) = self.tasks.get_mut(&d.itt) else {
            return;
        };
        let id = task.id;
        let Some(c) = task.collecting.as_mut() else {
            return;
        };
        c.collector.discard_after_digest_error(d.ttt, d.final_);
        let drained = c.collector.is_drained();
        if self.session.is_aborted(d.itt, id) {
            self.tasks.remove(&d.itt);
        } else if drained {
            self.fail(d.itt, TaskError::DataDigest);
        }
    }

    /// End a task the transport fails itself with CHECK CONDITION. The
    /// sense data takes the format the LU's D_SENSE asks for.
    pub(super) fn fail(&mut self, itt: u32, error: TaskError) {
        let Some(task) = self.tasks.remove(&itt) else {
            return;
        };
        let sense = match &error {
            TaskError::TooLarge(_) => sense_invalid_field_in_cdb(),
            TaskError::DataOut(_) => sense_data_phase_error(),
            TaskError::DataDigest => sense_protocol_crc_error(),
        };
        self.events.push_back(Event::TaskFailed { itt, error });
        if !self.session.retire_task(itt, task.id) {
            return;
        }
        let sense = Bytes::from(sense.encode(self.session.descriptor_sense(task.lun)));
        let resp = data_in::status_only(
            itt,
            Status::CHECK_CONDITION,
            Some(sense),
            Residual::compute(task.edtl, 0),
        );
        self.queue(resp);
    }

    /// The device server finished command `itt`: queue its Data-In and
    /// status (§11.7.4: status in the last Data-In when GOOD without sense).
    /// The task is retired first, so the answer advertises the freed slot.
    pub fn complete(&mut self, itt: u32, outcome: Outcome) {
        let Some(task) = self.tasks.remove(&itt) else {
            return;
        };
        if !self.session.retire_task(itt, task.id) {
            // Aborted: §4.2.3.3 no response for an aborted task.
            return;
        }
        let edtl_in = if task.read { task.edtl } else { 0 };
        let edtl_out = if task.write { task.edtl } else { 0 };
        // SPDTL of the read direction is what the device server produced:
        // less than EDTL is an underflow, more an overflow cut at EDTL
        // (§11.4.5.1). For a write, the CDB's data-out length.
        let spdtl_in = outcome.data_in.len() as u32;
        let mut data = outcome.data_in;
        data.truncate(edtl_in as usize);
        let residual = if task.read {
            Residual::compute(edtl_in, spdtl_in)
        } else if edtl_out != outcome.data_out_spdtl {
            Residual::compute(edtl_out, outcome.data_out_spdtl)
        } else if task.write {
            Residual::default()
        } else {
            // No data direction: any data the command wanted is overflow.
            Residual::compute(0, spdtl_in)
        };
        let c = Completion {
            itt,
            lun: task.lun,
            status: outcome.status,
            sense: outcome.sense,
            data_in: data,
            residual,
        };
        let pdus = data_in::build(&c, self.config.data_in);
        if self.transmit.is_empty() {
            // No move of each PDU: the deque takes the vector's buffer.
            self.transmit = pdus.into();
        } else {
            self.transmit.extend(pdus);
        }
    }

    /// The shell will not run command `itt` (it was aborted before it
    /// started): forget it without an answer.
    pub fn abandon(&mut self, itt: u32) {
        if let Some(task) = self.tasks.remove(&itt) {
            self.session.retire_task(itt, task.id);
        }
    }
}
