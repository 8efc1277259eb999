//! What the target sends in full-feature phase (RFC 7143 §11): responses,
//! Data-In, R2T, NOP-In, Reject, Async Message. The sequence checks are
//! `proto::session`'s ([`ReadProgress`], [`check_r2t`]); a sequence error
//! (RFC 7143 §7.9) fails the connection, and so at ERL 0 the session,
//! which is recovered; an error of one command fails only that command.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::pdu::{
    AsyncEvent, AsyncMessage, DataIn, NopIn, NopOut, Pdu, R2t, Reject, ScsiResponse, RESERVED_TAG,
};
use proto::scsi::sense::Sense;
use proto::serial::StatSn;
use proto::session::data_out::{check_r2t, data_out_pdus, DataOutTarget};
use proto::session::reject::{self, RejectAction};
use proto::session::{DataInError, R2tError};

use super::io::take_data;
use super::state::{issue, pdu_name, unsolicited_limits, Control, Inner, State};
use super::{DataDirection, RawResult, SessionEvent};
use crate::error::{Error, ProtocolError, Result};
use crate::sync::lock;

impl Inner {
    /// One PDU from connection `ci` of incarnation `epoch`. An error fails
    /// the connection (and so, at ERL 0, the session: it is recovered).
    pub(super) fn handle_pdu(self: &Arc<Self>, epoch: u64, ci: usize, pdu: Pdu) -> Result<()> {
        let mut st = lock(&self.st);
        if st.epoch != epoch {
            return Ok(());
        }
        if let Some(c) = st.conns.get_mut(ci) {
            c.last_rx = Instant::now();
        }
        Self::note_stat_sn(&mut st, ci, &pdu);
        let window = pdu.cmd_sn_window();
        match pdu {
            Pdu::ScsiResponse(r) => self.on_scsi_response(&mut st, ci, r)?,
            Pdu::DataIn(d) => self.on_data_in(&mut st, ci, d)?,
            Pdu::R2t(r) => self.on_r2t(&mut st, ci, r)?,
            Pdu::NopIn(n) => self.on_nop_in(&mut st, ci, n),
            Pdu::TaskMgmtResponse(r) => {
                if let Some(Control::Tmf(tx)) = st.control.remove(&r.itt) {
                    let _ = tx.send(r);
                }
            }
            Pdu::LogoutResponse(r) => {
                if let Some(Control::Logout(tx)) = st.control.remove(&r.itt) {
                    let _ = tx.send(r);
                }
            }
            Pdu::AsyncMessage(m) => {
                self.update_window(&mut st, m.exp_cmd_sn, m.max_cmd_sn);
                drop(st);
                self.on_async(epoch, m);
                return Ok(());
            }
            Pdu::Reject(r) => self.on_reject(&mut st, ci, r)?,
            Pdu::TextResponse(_) => {}
            other => return Err(ProtocolError::UnexpectedPdu(pdu_name(&other)).into()),
        }
        if let Some((exp, max)) = window {
            self.update_window(&mut st, exp, max);
        }
        Ok(())
    }

    fn on_scsi_response(&self, st: &mut State, ci: usize, r: ScsiResponse) -> Result<()> {
        let Some(t) = st.tasks.get_mut(&r.itt) else {
            return Ok(());
        };
        if t.conn != ci {
            return Err(wrong_conn("SCSI Response", r.itt, ci, t.conn));
        }
        let res = if r.response != 0 {
            Err(Error::Rejected(format!(
                "target failure (iSCSI response {:#04x})",
                r.response
            )))
        } else {
            // RFC 7143 §7.9: an ExpDataSN that implies missing Data-In, or
            // data with holes, is a sequence error (session recovery).
            let exp_data_sn = matches!(t.p.dir, DataDirection::Read(_)).then_some(r.exp_data_sn);
            if let Err(e) = t.read.finish(exp_data_sn) {
                return Err(data_in_error("SCSI Response", r.itt, e));
            }
            let raw_sense = r.sense().unwrap_or_default();
            let sense = if raw_sense.is_empty() {
                None
            } else {
                Sense::parse(&raw_sense).ok()
            };
            Ok(RawResult {
                status: r.status,
                sense,
                raw_sense,
                data: take_data(t, &self.pool),
                underflow: r.underflow.then_some(r.residual_count),
                overflow: r.overflow.then_some(r.residual_count),
            })
        };
        self.finish(st, r.itt, res);
        Ok(())
    }

    fn on_data_in(&self, st: &mut State, ci: usize, d: DataIn) -> Result<()> {
        let Some(t) = st.tasks.get_mut(&d.itt) else {
            // A late Data-In for an aborted/finished task: drop it.
            return Ok(());
        };
        if t.conn != ci {
            // Connection allegiance (RFC 7143 §3.2.4.2 ff.): without task
            // reassignment a command's Data-In comes on the connection it
            // was issued on.
            return Err(wrong_conn("Data-In", d.itt, ci, t.conn));
        }
        let range = match t.read.on_data_in(&d) {
            Ok(r) => r,
            Err(e) if e.is_sequence_error() => return Err(data_in_error("Data-In", d.itt, e)),
            Err(e) => {
                // RFC 7143 §11.7.4: data beyond the expected length is a
                // target error; only this command fails.
                let itt = d.itt;
                self.finish(st, itt, Err(data_in_error("Data-In", itt, e)));
                return Ok(());
            }
        };
        if !d.data.is_empty() {
            // The buffer is sized by the caller's expected length (checked
            // by ReadProgress), never by the target.
            let expected = match &t.p.dir {
                DataDirection::Read(n) => *n as usize,
                _ => 0,
            };
            let buf = t.data_in.get_or_insert_with(|| self.pool.take(expected));
            if range.start == buf.len() {
                // In order (DataPDUInOrder=Yes): append, no zero-fill.
                buf.extend_from_slice(&d.data);
            } else {
                if range.end > buf.len() {
                    buf.resize(range.end, 0);
                }
                buf[range].copy_from_slice(&d.data);
            }
        }
        if let Some(status_byte) = d.status {
            // RFC 7143 §11.7.3: status in the final Data-In; no sense data.
            let itt = d.itt;
            let res = match t.read.finish(None) {
                Err(e) => Err(data_in_error("Data-In", itt, e)),
                Ok(_) => Ok(RawResult {
                    status: status_byte,
                    sense: None,
                    raw_sense: Bytes::new(),
                    data: take_data(t, &self.pool),
                    underflow: d.underflow.then_some(d.residual_count),
                    overflow: d.overflow.then_some(d.residual_count),
                }),
            };
            self.finish(st, itt, res);
        }
        Ok(())
    }

    fn on_r2t(&self, st: &mut State, ci: usize, r: R2t) -> Result<()> {
        // RFC 7143 §11.8: R2T carries StatSN (not advanced) and the window.
        let max_burst = st.neg.max_burst_length;
        let Some(t) = st.tasks.get_mut(&r.itt) else {
            // An R2T for a finished/aborted task: nothing to send.
            return Ok(());
        };
        if t.conn != ci {
            return Err(wrong_conn("R2T", r.itt, ci, t.conn));
        }
        let DataDirection::Write(data) = &t.p.dir else {
            let itt = r.itt;
            let why = ProtocolError::R2tWithoutDataOut { itt };
            self.finish(st, itt, Err(why.into()));
            return Ok(());
        };
        match check_r2t(&r, data.len() as u32, max_burst, &mut t.next_r2t_sn) {
            Err(e) if e.is_sequence_error() => Err(r2t_error(r.itt, e)),
            Err(e) => {
                self.finish(st, r.itt, Err(r2t_error(r.itt, e)));
                Ok(())
            }
            Ok(()) => {
                if let Some(conn) = st.conns.get(ci) {
                    // RFC 7143 §11.7.4: Data-Out PDUs of one R2T each carry
                    // at most the target's MaxRecvDataSegmentLength; DataSN
                    // restarts at 0 per R2T.
                    let to = DataOutTarget {
                        lun: t.p.lun,
                        itt: r.itt,
                        ttt: r.ttt,
                    };
                    let end = r.buffer_offset + r.desired_data_transfer_length;
                    for d in data_out_pdus(data, to, r.buffer_offset, end, conn.max_send_dsl) {
                        let _ = conn.tx.send(Pdu::DataOut(d));
                    }
                }
                Ok(())
            }
        }
    }

    fn on_nop_in(&self, st: &mut State, ci: usize, n: NopIn) {
        if n.itt == RESERVED_TAG {
            // RFC 7143 §11.19.2: "when the Initiator Task Tag is set to
            // 0xffffffff, the StatSN for the connection is not advanced":
            // an unsolicited NOP-In acknowledges nothing, ExpStatSN stays.
            if n.ttt != RESERVED_TAG {
                // RFC 7143 §11.18.3/§11.19.1: a NOP-In with a valid TTT
                // asks for a NOP-Out "ping response" with ITT 0xffffffff
                // and the same TTT and LUN, sent as an immediate PDU.
                if let Some(c) = st.conns.get(ci) {
                    let mut data = n.data.clone();
                    // Never send more than the target accepts per PDU.
                    data.truncate(c.max_send_dsl as usize);
                    let _ = c.tx.send(Pdu::NopOut(NopOut {
                        immediate: true,
                        lun: n.lun,
                        itt: RESERVED_TAG,
                        ttt: n.ttt,
                        cmd_sn: st.window.cmd_sn(),
                        exp_stat_sn: StatSn::new(0),
                        data,
                    }));
                }
            }
        } else if let Some(Control::Ping { conn, .. }) = st.control.remove(&n.itt) {
            // Answer to our ping (its StatSN was accounted for above).
            if let Some(c) = st.conns.get_mut(conn) {
                c.ping_outstanding = false;
            }
        }
    }

    /// RFC 7143 §7.3, §7.8: what a Reject means is `proto`'s rule
    /// ([`reject::on_reject`]); a command lost to a data digest error is
    /// sent again, a Data-Out's task waits for its response.
    fn on_reject(&self, st: &mut State, ci: usize, r: Reject) -> Result<()> {
        let action = reject::on_reject(&r);
        tracing::warn!(reason = ?r.reason, itt = ?r.rejected_itt(), ?action, "target rejected a PDU");
        match action {
            RejectAction::RetryCommand { itt } => return self.retry_command(st, ci, itt),
            RejectAction::FailCommand { itt } => {
                if let Some(t) = st.tasks.get(&itt) {
                    let (conn, lun, cmd_sn) = (t.conn, t.p.lun, t.cmd_sn);
                    self.finish(st, itt, Err(Error::Rejected(format!("{:?}", r.reason))));
                    self.plug_cmd_sn_gap(st, conn, lun, itt, cmd_sn);
                }
            }
            // The target ends the task with a response (a CRC error one is
            // issued again by `Session::execute_raw`); the command timeout
            // bounds the wait.
            RejectAction::AwaitResponse { .. } => {}
            RejectAction::Other => {
                if let Some(itt) = r.rejected_itt() {
                    if let Some(Control::Ping { conn, .. }) = st.control.remove(&itt) {
                        if let Some(c) = st.conns.get_mut(conn) {
                            c.ping_outstanding = false;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Send a command the target discarded for a data digest error again,
    /// unchanged: same ITT and CmdSN, on the connection it was issued on
    /// (RFC 7143 §7.2.1, §7.3 "the initiator MUST plug the CmdSN gap").
    /// After `MAX_CRC_RETRIES` the connection fails: session recovery
    /// clears the gap and issues the command anew.
    fn retry_command(&self, st: &mut State, ci: usize, itt: u32) -> Result<()> {
        let limits = unsolicited_limits(st, ci);
        let timeout = self.cfg.command_timeout;
        let Some(t) = st.tasks.get_mut(&itt) else {
            return Ok(());
        };
        if t.conn != ci {
            return Err(wrong_conn("Reject", itt, ci, t.conn));
        }
        if t.crc_retries >= reject::MAX_CRC_RETRIES {
            let times = t.crc_retries + 1;
            return Err(ProtocolError::DigestRetries { itt, times }.into());
        }
        t.crc_retries += 1;
        t.deadline = Instant::now() + timeout;
        tracing::warn!(
            itt,
            cmd_sn = t.cmd_sn.get(),
            attempt = t.crc_retries,
            "command discarded by the target for a data digest error; sending it again"
        );
        if let Some(conn) = st.conns.get(ci) {
            issue(conn, &t.p, itt, t.cmd_sn, limits);
        }
        Ok(())
    }

    fn on_async(self: &Arc<Self>, epoch: u64, m: AsyncMessage) {
        match m.async_event {
            AsyncEvent::SCSI_ASYNC_EVENT => {
                // RFC 7143 §11.9.4: the data segment holds SenseLength + sense.
                let sense = if m.data.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([m.data[0], m.data[1]]));
                    m.data.get(2..2 + len).and_then(|s| Sense::parse(s).ok())
                } else {
                    None
                };
                match sense {
                    Some(s) => self.note_unit_attention(m.lun, s),
                    None => tracing::warn!("SCSI async event without parseable sense"),
                }
            }
            AsyncEvent::LOGOUT_REQUEST => {
                tracing::info!(within_s = m.parameter3, "target requests logout");
                // Stop issuing at once: commands submitted from now on wait
                // for the new session.
                self.start_draining(epoch);
                self.emit(SessionEvent::LogoutRequested);
                let me = self.clone();
                tokio::spawn(async move {
                    me.graceful_reconnect(epoch, Duration::from_secs(m.parameter3.into()))
                        .await
                });
            }
            AsyncEvent::CONNECTION_DROP | AsyncEvent::SESSION_DROP => {
                let wait = Duration::from_secs(m.parameter2.into());
                self.fail_session(
                    epoch,
                    format!("target dropping connection ({:?})", m.async_event),
                    wait,
                );
            }
            AsyncEvent::NEGOTIATION_REQUEST => {
                // RFC 7143 §11.9.1, event 4: the initiator "MUST honor this
                // request by issuing a Text Request ... or by issuing a
                // Logout Request". We take the second way: log out once
                // in-flight commands are done, then reinstate the session.
                tracing::info!(within_s = m.parameter3, "target requests renegotiation");
                self.start_draining(epoch);
                let me = self.clone();
                let within = Duration::from_secs(m.parameter3.max(5).into());
                tokio::spawn(async move { me.graceful_reconnect(epoch, within).await });
            }
            other => tracing::info!(event = ?other, "async message ignored"),
        }
    }
}

/// Connection allegiance broken (RFC 7143 §3.2.4.2).
fn wrong_conn(pdu: &'static str, itt: u32, conn: usize, issued: usize) -> Error {
    ProtocolError::WrongConnection {
        pdu,
        itt,
        conn,
        issued,
    }
    .into()
}

fn data_in_error(pdu: &'static str, itt: u32, source: DataInError) -> Error {
    ProtocolError::DataIn { pdu, itt, source }.into()
}

fn r2t_error(itt: u32, source: R2tError) -> Error {
    ProtocolError::R2t { itt, source }.into()
}
