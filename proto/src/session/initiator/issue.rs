//! Issuing commands: the queue, CmdSN gating (RFC 7143 §4.2.2.1: "the
//! initiator MUST NOT send a non-immediate command with CmdSN > MaxCmdSN"),
//! the choice of connection (least loaded, ties round-robin), the SCSI
//! Command PDU with its immediate data and the unsolicited Data-Out
//! (§11.3, §13.10-13.14, [`crate::session::data_out`]), and the Data-Out
//! answering an R2T (§11.7, §11.8): each PDU at most the target's
//! MaxRecvDataSegmentLength, DataSN from 0 per sequence.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::{Command, CommandContext, ConnId, Data, InitiatorSession, Queued, Task, Transmit};
use crate::pdu::{ScsiCommand, TaskAttr, RESERVED_TAG};
use crate::serial::{CmdSn, R2tSn, StatSn};
use crate::session::data_out::{data_out_pdus, DataOutTarget};
use crate::session::{ReadProgress, UnsolicitedLimits, UnsolicitedPlan};

impl<T: CommandContext> InitiatorSession<T> {
    /// Queue a command; it is issued as soon as the window and a
    /// connection allow (possibly at once: see
    /// [`InitiatorSession::poll_transmit`]).
    pub fn submit(&mut self, cmd: Command<T>, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back(Queued { seq, cmd });
        self.pump(now);
    }

    /// Issue queued commands while the window and a connection allow.
    pub(super) fn pump(&mut self, now: Instant) {
        while !self.paused && !self.queue.is_empty() && self.window.is_open() {
            let Some(ci) = self.pick_conn() else { break };
            let Some(cmd_sn) = self.window.take() else {
                break;
            };
            let Some(mut q) = self.queue.pop_front() else {
                break;
            };
            let itt = self.alloc_itt();
            self.send_command(ci, &q.cmd, itt, cmd_sn);
            self.conns[ci.0].in_flight += 1;
            q.cmd.ctx.issued(itt, cmd_sn, ci);
            let expected = match &mut q.cmd.data {
                Data::Read { len, buf } => {
                    buf.clear();
                    *len as usize
                }
                _ => 0,
            };
            self.tasks.insert(
                itt,
                Task {
                    q,
                    cmd_sn,
                    conn: ci,
                    read: ReadProgress::new(expected),
                    next_r2t_sn: R2tSn::new(0),
                    deadline: now + self.config.command_timeout,
                    aborting: false,
                    crc_retries: 0,
                    first: None,
                },
            );
        }
        if !self.paused
            && !self.queue.is_empty()
            && !self.window.is_open()
            && !self.conns.is_empty()
        {
            self.window_closed_since.get_or_insert(now);
        } else {
            self.window_closed_since = None;
        }
    }

    /// Least-loaded usable connection, ties broken round-robin.
    fn pick_conn(&mut self) -> Option<ConnId> {
        let n = self.conns.len();
        let start = self.rr % n.max(1);
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let c = &self.conns[i];
            if c.failed {
                continue;
            }
            if best.is_none_or(|b| c.in_flight < self.conns[b].in_flight) {
                best = Some(i);
            }
        }
        let b = best?;
        self.rr = b + 1;
        Some(ConnId(b))
    }

    pub(super) fn unsolicited_limits(&self, ci: ConnId) -> UnsolicitedLimits {
        UnsolicitedLimits {
            immediate_data: self.config.immediate_data,
            initial_r2t: self.config.initial_r2t,
            first_burst_length: self.config.first_burst_length,
            max_send_data_segment_length: self.conns.get(ci.0).map_or(512, |c| c.max_send_dsl),
        }
    }

    /// Queue a command's PDUs on connection `ci` ([`command_pdus`]).
    pub(super) fn send_command(&mut self, ci: ConnId, cmd: &Command<T>, itt: u32, cmd_sn: CmdSn) {
        let limits = self.unsolicited_limits(ci);
        command_pdus(&mut self.transmit, ci, cmd, itt, cmd_sn, limits);
    }

    /// Data-Out for an accepted R2T of task `itt` (§11.7.4: each PDU at
    /// most the target's MaxRecvDataSegmentLength; DataSN restarts at 0).
    pub(super) fn send_solicited(&mut self, ci: ConnId, itt: u32, ttt: u32, from: u32, to: u32) {
        let Some(max) = self.conns.get(ci.0).map(|c| c.max_send_dsl) else {
            return;
        };
        let Some(t) = self.tasks.get(&itt) else {
            return;
        };
        let Data::Write(data) = &t.q.cmd.data else {
            return;
        };
        let target = DataOutTarget {
            lun: t.q.cmd.lun,
            itt,
            ttt,
        };
        let transmit = &mut self.transmit;
        for pdu in data_out_pdus(data, target, from, to, max) {
            transmit.push_back(Transmit {
                conn: ci,
                pdu: pdu.into(),
            });
        }
    }
}

/// Queue a command's PDUs on connection `ci`: the SCSI Command with its
/// immediate data, then any unsolicited Data-Out (§13.10-13.14). Also used
/// to send a command again, unchanged, to plug the CmdSN gap a data digest
/// Reject left (§7.2.1, §7.3).
pub(super) fn command_pdus<T>(
    transmit: &mut VecDeque<Transmit>,
    ci: ConnId,
    cmd: &Command<T>,
    itt: u32,
    cmd_sn: CmdSn,
    limits: UnsolicitedLimits,
) {
    let (read, write) = match &cmd.data {
        Data::None => (false, false),
        Data::Read { .. } => (true, false),
        Data::Write(_) => (false, true),
    };
    let plan = match &cmd.data {
        Data::Write(d) => UnsolicitedPlan::new(d.len() as u32, limits),
        _ => UnsolicitedPlan::new(0, limits),
    };
    let immediate = match &cmd.data {
        Data::Write(d) => d.slice(..plan.immediate as usize),
        _ => Bytes::new(),
    };
    let pdu = ScsiCommand {
        immediate: false,
        // §11.3.1: F=1 when no unsolicited Data-Out follows.
        final_: !plan.data_out_follows(),
        read,
        write,
        attr: TaskAttr::SIMPLE,
        lun: cmd.lun,
        itt,
        expected_data_transfer_length: cmd.data.len(),
        cmd_sn,
        exp_stat_sn: StatSn::new(0), // stamped by poll_transmit
        cdb: cmd.cdb.clone(),
        bidi_read_length: None,
        data: immediate,
    };
    transmit.push_back(Transmit {
        conn: ci,
        pdu: pdu.into(),
    });
    if let (true, Data::Write(d)) = (plan.data_out_follows(), &cmd.data) {
        let to = DataOutTarget {
            lun: cmd.lun,
            itt,
            ttt: RESERVED_TAG,
        };
        let max = limits.max_send_data_segment_length;
        for pdu in data_out_pdus(d, to, plan.immediate, plan.end, max) {
            transmit.push_back(Transmit {
                conn: ci,
                pdu: pdu.into(),
            });
        }
    }
}
