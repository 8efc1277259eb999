//! What the target sends in the full-feature phase (RFC 7143 §11): SCSI
//! Response, Data-In (checked by [`ReadProgress`] and reassembled into the
//! caller's buffer), R2T (checked by [`check_r2t`] and answered with
//! Data-Out), NOP-In, Reject (§7.3, §7.8, [`crate::session::reject`]),
//! Task Management and Logout responses, Async Message (§11.9).
//!
//! Never a panic and never an allocation sized by the target: the
//! reassembly buffer is the caller's expected length. A sequence error
//! (§7.9) or a broken allegiance fails the connection
//! ([`InitiatorSession::handle_pdu`] returns it); an error of one command
//! fails only that command.

use std::time::Instant;

use bytes::Bytes;

use super::control::Control;
use super::{
    CommandContext, CommandError, ConnError, ConnId, Data, Event, InitiatorSession, ReadData,
    Response,
};
use crate::pdu::{DataIn, NopIn, NopOut, Pdu, R2t, Reject, ScsiResponse, RESERVED_TAG};
use crate::serial::StatSn;
use crate::session::data_out::check_r2t;
use crate::session::reject::{self, RejectAction};

impl<T: CommandContext> InitiatorSession<T> {
    /// One PDU received on connection `conn` at `now`. An error fails the
    /// connection (and so, at ERL 0, the session).
    pub fn handle_pdu(&mut self, conn: ConnId, pdu: Pdu, now: Instant) -> Result<(), ConnError> {
        let Some(c) = self.conns.get_mut(conn.0) else {
            return Ok(());
        };
        c.last_rx = now;
        c.exp_stat_sn.on_pdu(&pdu);
        let window = pdu.cmd_sn_window();
        match pdu {
            Pdu::ScsiResponse(r) => self.on_scsi_response(conn, r)?,
            Pdu::DataIn(d) => self.on_data_in(conn, d)?,
            Pdu::R2t(r) => self.on_r2t(conn, r)?,
            Pdu::NopIn(n) => self.on_nop_in(conn, n),
            Pdu::TaskMgmtResponse(r) => self.on_tmf_response(r),
            Pdu::LogoutResponse(r) => self.on_logout_response(r),
            Pdu::AsyncMessage(m) => self.events.push_back(Event::Async { conn, message: m }),
            Pdu::Reject(r) => self.on_reject(conn, r, now)?,
            Pdu::TextResponse(_) => {}
            other => return Err(ConnError::UnexpectedPdu(other.opcode())),
        }
        if let Some((exp, max)) = window {
            self.window.update(exp, max);
        }
        self.pump(now);
        Ok(())
    }

    fn on_scsi_response(&mut self, ci: ConnId, r: ScsiResponse) -> Result<(), ConnError> {
        let Some(t) = self.tasks.get_mut(&r.itt) else {
            return Ok(());
        };
        if t.conn != ci {
            return Err(wrong_conn("SCSI Response", r.itt, ci, t.conn));
        }
        let result = if r.response != 0 {
            Err(CommandError::TargetFailure(r.response))
        } else {
            // §7.9: an ExpDataSN that implies missing Data-In, or data
            // with holes, is a sequence error (session recovery).
            let reading = matches!(t.q.cmd.data, Data::Read { .. });
            if let Err(source) = t.read.finish(reading.then_some(r.exp_data_sn)) {
                let (pdu, itt) = ("SCSI Response", r.itt);
                return Err(ConnError::DataIn { pdu, itt, source });
            }
            Ok(Response {
                status: r.status,
                sense: r.sense().unwrap_or_default(),
                data: take_data(&mut t.q.cmd.data, t.first.take(), t.read.extent()),
                underflow: r.underflow.then_some(r.residual_count),
                overflow: r.overflow.then_some(r.residual_count),
            })
        };
        self.finish(r.itt, result);
        Ok(())
    }

    fn on_data_in(&mut self, ci: ConnId, d: DataIn) -> Result<(), ConnError> {
        let Some(t) = self.tasks.get_mut(&d.itt) else {
            // A late Data-In for an aborted or finished task: drop it.
            return Ok(());
        };
        if t.conn != ci {
            // Allegiance: without task reassignment a command's Data-In
            // comes on the connection it was issued on.
            return Err(wrong_conn("Data-In", d.itt, ci, t.conn));
        }
        let range = match t.read.on_data_in(&d) {
            Ok(r) => r,
            Err(source) if source.is_sequence_error() => {
                let (pdu, itt) = ("Data-In", d.itt);
                return Err(ConnError::DataIn { pdu, itt, source });
            }
            Err(source) => {
                // §11.7.4: data beyond the expected length is a target
                // error; only this command fails.
                let itt = d.itt;
                self.finish(itt, Err(CommandError::DataIn { itt, source }));
                return Ok(());
            }
        };
        if !d.data.is_empty() {
            // The buffer is sized by the caller's expected length (checked
            // by ReadProgress), never by the target.
            if let Data::Read { len, buf } = &mut t.q.cmd.data {
                let len = *len as usize;
                if range.start == 0 && buf.is_empty() && t.first.is_none() {
                    // Perhaps the only one: keep it, uncopied.
                    t.first = Some(d.data.clone());
                } else {
                    if let Some(f) = t.first.take() {
                        place(buf, len, 0..f.len(), &f);
                    }
                    place(buf, len, range, &d.data);
                }
            }
        }
        let Some(status) = d.status else {
            return Ok(());
        };
        // §11.7.3: status in the final Data-In; no sense data.
        let itt = d.itt;
        let result = match t.read.finish(None) {
            Err(source) => {
                let pdu = "Data-In";
                return Err(ConnError::DataIn { pdu, itt, source });
            }
            Ok(extent) => Ok(Response {
                status,
                sense: Bytes::new(),
                data: take_data(&mut t.q.cmd.data, t.first.take(), extent),
                underflow: d.underflow.then_some(d.residual_count),
                overflow: d.overflow.then_some(d.residual_count),
            }),
        };
        self.finish(itt, result);
        Ok(())
    }

    fn on_r2t(&mut self, ci: ConnId, r: R2t) -> Result<(), ConnError> {
        let max_burst = self.config.max_burst_length;
        let Some(t) = self.tasks.get_mut(&r.itt) else {
            // An R2T for a finished or aborted task: nothing to send.
            return Ok(());
        };
        if t.conn != ci {
            return Err(wrong_conn("R2T", r.itt, ci, t.conn));
        }
        let Data::Write(data) = &t.q.cmd.data else {
            let itt = r.itt;
            self.finish(itt, Err(CommandError::R2tWithoutDataOut { itt }));
            return Ok(());
        };
        let itt = r.itt;
        match check_r2t(&r, data.len() as u32, max_burst, &mut t.next_r2t_sn) {
            Err(source) if source.is_sequence_error() => Err(ConnError::R2t { itt, source }),
            Err(source) => {
                self.finish(itt, Err(CommandError::R2t { itt, source }));
                Ok(())
            }
            Ok(()) => {
                let end = r.buffer_offset + r.desired_data_transfer_length;
                self.send_solicited(ci, itt, r.ttt, r.buffer_offset, end);
                Ok(())
            }
        }
    }

    fn on_nop_in(&mut self, ci: ConnId, n: NopIn) {
        if n.itt != RESERVED_TAG {
            // The answer to our ping (its StatSN was accounted for).
            if let Some(Control::Ping { conn, .. }) = self.control.get(&n.itt) {
                let conn = *conn;
                self.control.remove(&n.itt);
                self.ping_answered(conn);
            }
            return;
        }
        // §11.19.2: "when the Initiator Task Tag is set to 0xffffffff, the
        // StatSN for the connection is not advanced". With a valid TTT it
        // asks for a NOP-Out "ping response" with ITT 0xffffffff and the
        // same TTT and LUN, sent as an immediate PDU (§11.18.3).
        if n.ttt == RESERVED_TAG {
            return;
        }
        let Some(c) = self.conns.get(ci.0) else {
            return;
        };
        let mut data = n.data;
        // Never more than the target accepts per PDU.
        data.truncate(c.max_send_dsl as usize);
        let cmd_sn = self.window.cmd_sn();
        self.queue_pdu(
            ci,
            NopOut {
                immediate: true,
                lun: n.lun,
                itt: RESERVED_TAG,
                ttt: n.ttt,
                cmd_sn,
                exp_stat_sn: StatSn::new(0),
                data,
            },
        );
    }

    /// §7.3, §7.8: what a Reject means is [`reject::on_reject`]'s rule; a
    /// command lost to a data digest error is sent again unchanged, a
    /// rejected command fails and its CmdSN gap is plugged with ABORT
    /// TASK, a Data-Out's task waits for its response.
    fn on_reject(&mut self, ci: ConnId, r: Reject, now: Instant) -> Result<(), ConnError> {
        match reject::on_reject(&r) {
            RejectAction::RetryCommand { itt } => return self.retry_command(ci, itt, now),
            RejectAction::FailCommand { itt } => {
                if let Some(t) = self.tasks.get(&itt) {
                    let (conn, lun, cmd_sn) = (t.conn, t.q.cmd.lun, t.cmd_sn);
                    self.finish(itt, Err(CommandError::Rejected(r.reason)));
                    self.plug_cmd_sn_gap(conn, lun, itt, cmd_sn, now);
                }
            }
            // The target ends the task with a response; the command
            // timeout bounds the wait.
            RejectAction::AwaitResponse { .. } => {}
            RejectAction::Other => {
                let itt = r.rejected_itt();
                if let Some(Control::Ping { conn, .. }) = itt.and_then(|i| self.control.get(&i)) {
                    let conn = *conn;
                    self.control.remove(&itt.unwrap_or(RESERVED_TAG));
                    self.ping_answered(conn);
                }
            }
        }
        Ok(())
    }

    /// Send a command the target discarded for a data digest error again,
    /// unchanged: same ITT and CmdSN, same connection (§7.2.1, §7.3 "the
    /// initiator MUST plug the CmdSN gap"). After `MAX_CRC_RETRIES` the
    /// connection fails: session recovery clears the gap.
    fn retry_command(&mut self, ci: ConnId, itt: u32, now: Instant) -> Result<(), ConnError> {
        let limits = self.unsolicited_limits(ci);
        let timeout = self.config.command_timeout;
        let Some(t) = self.tasks.get_mut(&itt) else {
            return Ok(());
        };
        if t.conn != ci {
            return Err(wrong_conn("Reject", itt, ci, t.conn));
        }
        if t.crc_retries >= reject::MAX_CRC_RETRIES {
            let times = t.crc_retries + 1;
            return Err(ConnError::DigestRetries { itt, times });
        }
        t.crc_retries += 1;
        t.deadline = now + timeout;
        super::issue::command_pdus(&mut self.transmit, ci, &t.q.cmd, itt, t.cmd_sn, limits);
        Ok(())
    }
}

/// Put `data` at `range` of the reassembly buffer (capacity `len`): in
/// order (DataPDUInOrder=Yes) it is appended without zero-filling.
fn place(buf: &mut Vec<u8>, len: usize, range: std::ops::Range<usize>, data: &[u8]) {
    if buf.capacity() < len {
        buf.reserve_exact(len - buf.len());
    }
    if range.start == buf.len() {
        buf.extend_from_slice(data);
    } else {
        if range.end > buf.len() {
            buf.resize(range.end, 0);
        }
        buf[range].copy_from_slice(data);
    }
}

/// The Data-In, cut at the highest byte received: the single PDU's
/// payload kept in `first`, else the reassembly buffer.
fn take_data(data: &mut Data, first: Option<Bytes>, extent: usize) -> ReadData {
    let Data::Read { len, buf } = data else {
        return ReadData::default();
    };
    let mut b = std::mem::take(buf);
    match first {
        Some(f) if b.is_empty() => ReadData::Received {
            data: f.slice(..extent.min(f.len())),
            spare: b,
        },
        Some(f) => {
            // Not reached (a second Data-In copies `first` in), but exact.
            place(&mut b, *len as usize, 0..f.len(), &f);
            b.truncate(extent);
            ReadData::Buffer(b)
        }
        None => {
            b.truncate(extent);
            ReadData::Buffer(b)
        }
    }
}

/// Connection allegiance broken (§3.2.4.2).
fn wrong_conn(pdu: &'static str, itt: u32, conn: ConnId, issued: ConnId) -> ConnError {
    ConnError::WrongConnection {
        pdu,
        itt,
        conn: conn.0,
        issued: issued.0,
    }
}
