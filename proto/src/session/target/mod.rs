//! The target's full-feature phase of one connection, sans-IO (RFC 7143
//! §4.2, §11), in the style of quinn-proto's `Connection`.
//!
//! Decoded PDUs and `now` go in ([`TargetConn::handle_pdu`],
//! [`TargetConn::handle_timeout`]); PDUs to send, the next timer and events
//! for the shell come out ([`TargetConn::poll_transmit`],
//! [`TargetConn::poll_timeout`], [`TargetConn::poll_event`]). The shell runs
//! commands on its device server and hands the results back with
//! [`TargetConn::complete`]. No clock, no I/O, no randomness: time is
//! whatever `now` the caller passes.
//!
//! | file | what | RFC 7143 |
//! |---|---|---|
//! | [`scsi`] (this directory) | SCSI Command admission, write data (immediate, unsolicited, R2T), completion, Data-In | §4.2.5, §11.3-11.8 |
//! | [`control`] | NOP-Out/NOP-In and pings, Text, Logout, Task Management, Reject | §11.5, §11.10, §11.14, §11.17-19 |
//!
//! What the connection shares with the other connections of its session
//! (MC/S, §4.2.2.1: one CmdSN window per session; ITTs unique per session,
//! §11.2.1.8) is reached through [`TargetSession`], which the shell
//! implements over its session table ([`LocalSession`] is a one-connection
//! version for tests and test peers). The rest is this connection's own:
//! StatSN (§4.2.2.2), TTTs, the tasks that arrived here (connection
//! allegiance, §4.2.4.1), write collection and the ping timer.
//!
//! ErrorRecoveryLevel 0 only (§7.1.5): a Data-Out sequence error fails its
//! task with CHECK CONDITION (ABORTED COMMAND, DATA PHASE ERROR) and the
//! connection goes on; SNACK is answered with a Reject.
//!
//! Data digest errors (RFC 7143 §7.8, §7.3, §11.17.1), decided from the
//! RFC text:
//! * Every PDU whose data digest fails is answered with a Reject, reason
//!   Data (payload) Digest Error (0x02), and discarded (§7.8: the target
//!   "MUST answer with a Reject PDU with a reason code of
//!   Data-Digest-Error and discard the PDU"). Its data never reaches a
//!   backend.
//! * A SCSI Command carrying immediate data is such a PDU: the command is
//!   discarded whole and its CmdSN is NOT consumed. §7.3: "The CmdSN of
//!   the rejected command PDU (if it is a non-immediate command) MUST NOT
//!   be considered received by the target (i.e., a command sequence gap
//!   must be assumed for the CmdSN) ... Upon receiving the Reject, the
//!   initiator MUST plug the CmdSN gap", by resending the command PDU with
//!   the same CmdSN and ITT (§7.2.1, "the immediate data is implicitly
//!   recovered when the task is retried", §7.8) or by ABORT TASK with
//!   RefCmdSN (§11.5.1, `CmdWindow::consider_received`). Answering it with
//!   CHECK CONDITION instead would break both MUSTs, so we do not.
//! * A Data-Out is part of a task that is already active: §7.3 forbids
//!   ending it implicitly by the Reject, and at ERL 0 (no recovery R2T)
//!   §7.8 leaves "terminate the task with ... CHECK CONDITION status and
//!   an iSCSI Condition of 'protocol service CRC error'" (ABORTED COMMAND,
//!   47h/05h, §11.4.7.2), sent only once every outstanding sequence has
//!   ended with F. `WriteCollector::discard_after_digest_error` drops the
//!   collected data, so nothing of the task is written.

mod control;
mod scsi;
mod session;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::pdu::{DecodeError, DigestConfig, Pdu, Reject, RejectReason};
use crate::scsi::Status;
use crate::serial::{CmdSn, SerialNumber, StatSn};
use crate::session::tags::TagMap;
use crate::session::{stamp_target, DataInLimits, DataOutError, TagAllocator, WriteLimits};

pub use control::{LogoutDecision, LogoutRequested};
pub use scsi::Command;
pub use session::{LocalSession, NewTask, Refusal, TargetSession, TaskId};

/// Largest write buffer one command may need (EDTL) by default; above this
/// the command fails with ILLEGAL REQUEST instead of allocating.
pub const DEFAULT_MAX_WRITE_BUFFER: u32 = 64 << 20;

/// Negotiated and configured values of one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnConfig {
    /// Shapes write data collection (§13.10-13.14).
    pub write: WriteLimits,
    /// Shapes Data-In (the initiator's MaxRecvDataSegmentLength,
    /// MaxBurstLength); the segment limit also bounds NOP-In and Text data.
    pub data_in: DataInLimits,
    /// A discovery session accepts only Text, Logout and NOP (§4.3).
    pub discovery: bool,
    /// This connection's CID.
    pub cid: u16,
    /// StatSN of the first full-feature response.
    pub first_stat_sn: StatSn,
    /// Silence after which we ping with a NOP-In (None: never).
    pub nop_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is dropped.
    pub nop_timeout: Duration,
    /// Largest EDTL of a write (the buffer is allocated up front).
    pub max_write_buffer: u32,
}

/// Why the connection must close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// A Logout Response closing this connection was queued; send what is
    /// queued, then close.
    LoggedOut,
    /// Our NOP-In ping was not answered in time (§11.19).
    PingTimeout(Duration),
}

/// Why the core failed a task itself (the shell may log it).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The write data broke the transfer rules (§7.1.4 at ERL 0).
    #[error("write data transfer error ({0}): ended with DATA PHASE ERROR")]
    DataOut(DataOutError),
    /// EDTL above the configured write buffer limit.
    #[error("write of {0} bytes is beyond the per-command buffer limit: ended with INVALID FIELD IN CDB")]
    TooLarge(u32),
    /// A Data-Out failed its data digest: the data was discarded (nothing
    /// written) and the task ended once its sequences did (§7.8).
    #[error("a Data-Out failed its data digest: write ended with PROTOCOL SERVICE CRC ERROR, nothing written")]
    DataDigest,
}

/// What the shell must act on.
#[derive(Debug)]
pub enum Event {
    /// A command with all its write data: run it, then call
    /// [`TargetConn::complete`] (or [`TargetConn::abandon`] if aborted).
    Execute(Command),
    /// A Task Management request admitted by the window: answer with
    /// [`TargetConn::tmf_response`].
    TaskManagement(crate::pdu::TaskMgmtRequest),
    /// A complete Text request (all C-bit PDUs joined): answer with
    /// [`TargetConn::text_response`] or [`TargetConn::text_reject`].
    Text {
        itt: u32,
        lun: u64,
        keys: Vec<crate::text::KeyValue>,
    },
    /// A Logout request: decide with [`TargetConn::logout_response`].
    Logout(LogoutRequested),
    /// The core failed a task itself (CHECK CONDITION already queued).
    TaskFailed { itt: u32, error: TaskError },
    /// The connection must close (after sending what is queued).
    Closed(CloseReason),
}

/// How a command ended on the device server.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    /// Sense data (without the SenseLength prefix).
    pub sense: Option<Bytes>,
    /// Data for the initiator, at most what the device server produced;
    /// cut at EDTL here.
    pub data_in: Bytes,
    /// The data-out length the CDB asked for (SPDTL of the write
    /// direction), for the residual (§11.4.5.1).
    pub data_out_spdtl: u32,
}

/// A ping we sent: its TTT and when.
#[derive(Debug, Clone, Copy)]
struct Ping {
    ttt: u32,
    sent: Instant,
}

/// The target's full-feature phase of one connection.
#[derive(Debug)]
pub struct TargetConn<S> {
    session: S,
    config: ConnConfig,
    next_stat_sn: StatSn,
    ttts: TagAllocator,
    /// Tasks that arrived on this connection (allegiance), by ITT.
    tasks: TagMap<scsi::Task>,
    text: control::TextState,
    /// Window slots held by answered-later exchanges (TMF, Logout), by ITT.
    held: TagMap<bool>,
    ping: Option<Ping>,
    last_rx: Instant,
    transmit: VecDeque<Pdu>,
    events: VecDeque<Event>,
    closed: bool,
}

impl<S: TargetSession> TargetConn<S> {
    /// A connection entering the full-feature phase at `now`.
    pub fn new(session: S, config: ConnConfig, now: Instant) -> Self {
        TargetConn {
            session,
            config,
            next_stat_sn: config.first_stat_sn,
            ttts: TagAllocator::new(1),
            tasks: TagMap::default(),
            text: control::TextState::default(),
            held: TagMap::default(),
            ping: None,
            last_rx: now,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            closed: false,
        }
    }

    /// The session handle.
    pub fn session(&self) -> &S {
        &self.session
    }

    /// The current configuration.
    pub fn config(&self) -> &ConnConfig {
        &self.config
    }

    /// The initiator re-declared its MaxRecvDataSegmentLength in a Text
    /// negotiation (§13.12): it bounds what we send from now on.
    pub fn set_max_send_data_segment_length(&mut self, n: u32) {
        if n >= 512 {
            self.config.data_in.max_send_data_segment_length = n;
        }
    }

    /// Number of tasks this connection still tracks (collecting or
    /// executing).
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Feed one PDU received at `now`.
    pub fn handle_pdu(&mut self, pdu: Pdu, now: Instant) {
        if self.closed {
            return;
        }
        self.last_rx = now;
        let discovery = self.config.discovery;
        match pdu {
            Pdu::ScsiCommand(c) if !discovery => self.scsi_command(c),
            Pdu::DataOut(d) if !discovery => self.data_out(d),
            Pdu::NopOut(n) => self.nop_out(n),
            Pdu::TextRequest(t) => self.text_request(t),
            Pdu::LogoutRequest(l) => self.logout_request(l),
            Pdu::TaskMgmtRequest(t) if !discovery => self.tmf_request(t),
            // ErrorRecoveryLevel 0: SNACK support is not negotiated.
            Pdu::SnackRequest(_) => self.reject_pdu(RejectReason::COMMAND_NOT_SUPPORTED, &pdu),
            // Login in the full-feature phase, target opcodes, or SCSI
            // traffic in a discovery session (§4.3: only Text and Logout
            // are allowed there).
            other => self.reject_pdu(RejectReason::PROTOCOL_ERROR, &other),
        }
    }

    /// A PDU that could not be decoded but was consumed (a data digest
    /// error, an unknown opcode, a malformed field): RFC 7143 §7.8, §11.17.1
    /// answer it with a Reject carrying its header. A discarded Data-Out
    /// also ends its task (module docs).
    pub fn handle_decode_error(&mut self, e: &DecodeError, now: Instant) {
        if self.closed {
            return;
        }
        self.last_rx = now;
        let reason = e.reject_reason().unwrap_or(RejectReason::PROTOCOL_ERROR);
        let header = e.rejected_header().cloned().unwrap_or_default();
        self.reject(reason, header);
        match e.discarded_pdu_header() {
            Some(Pdu::DataOut(d)) if !self.config.discovery => self.data_out_digest_error(d),
            _ => {}
        }
    }

    /// Timers: the NOP-In ping (§11.19).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if let Some(p) = self.ping {
            if now >= p.sent + self.config.nop_timeout {
                self.close(CloseReason::PingTimeout(self.config.nop_timeout));
            }
            return;
        }
        let Some(interval) = self.config.nop_interval else {
            return;
        };
        if now >= self.last_rx + interval {
            self.send_ping(now);
        }
    }

    /// When [`TargetConn::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        if let Some(p) = self.ping {
            return Some(p.sent + self.config.nop_timeout);
        }
        self.config.nop_interval.map(|i| self.last_rx + i)
    }

    /// The next PDU to send, stamped (StatSN, ExpCmdSN, MaxCmdSN) in wire
    /// order: call it until `None` and send in that order.
    pub fn poll_transmit(&mut self) -> Option<Pdu> {
        let mut pdu = self.transmit.pop_front()?;
        stamp_target(&mut pdu, &mut self.next_stat_sn, self.session.window());
        Some(pdu)
    }

    /// Everything there is to send, stamped, in wire order: what
    /// [`TargetConn::poll_transmit`] would give until `None`, in one go
    /// (without moving each PDU once more).
    pub fn poll_transmit_all(&mut self) -> Vec<Pdu> {
        let mut out: Vec<Pdu> = std::mem::take(&mut self.transmit).into();
        let window = self.session.window();
        for pdu in out.iter_mut() {
            stamp_target(pdu, &mut self.next_stat_sn, window);
        }
        out
    }

    /// Number of PDUs waiting in [`TargetConn::poll_transmit`].
    pub fn pending_transmits(&self) -> usize {
        self.transmit.len()
    }

    /// The next event for the shell.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The StatSN the next status-carrying PDU will take.
    pub fn next_stat_sn(&self) -> StatSn {
        self.next_stat_sn
    }

    fn queue(&mut self, pdu: impl Into<Pdu>) {
        self.transmit.push_back(pdu.into());
    }

    fn close(&mut self, reason: CloseReason) {
        if !self.closed {
            self.closed = true;
            self.events.push_back(Event::Closed(reason));
        }
    }

    fn reject(&mut self, reason: RejectReason, header: Bytes) {
        // RFC 7143 §11.17: the data segment holds the rejected PDU's header.
        self.queue(Reject {
            reason,
            stat_sn: StatSn::new(0),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            data_sn_or_r2t_sn: SerialNumber::new(0),
            data: header,
        });
    }

    fn reject_pdu(&mut self, reason: RejectReason, pdu: &Pdu) {
        let header = pdu.encode(DigestConfig::NONE).header;
        self.reject(reason, header);
    }

    /// Apply the CmdSN window; `None`: ignore the PDU (a duplicate or
    /// outside the window, §4.2.2.1), `Some(counted)` otherwise.
    fn admit(&mut self, cmd_sn: CmdSn, immediate: bool) -> Option<bool> {
        match self.session.admit(cmd_sn, immediate) {
            crate::session::Admit::Accept { counted } => Some(counted),
            _ => None,
        }
    }
}
