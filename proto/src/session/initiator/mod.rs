//! The initiator's full-feature phase of one session, sans-IO (RFC 7143
//! §4.2, §11), in the style of quinn-proto's `Connection` and of
//! [`crate::session::target::TargetConn`].
//!
//! Commands go in with [`InitiatorSession::submit`] (write data as
//! `Bytes`, read buffers as the caller's `Vec<u8>`); decoded PDUs and
//! `now` go in with [`InitiatorSession::handle_pdu`] and
//! [`InitiatorSession::handle_timeout`]. PDUs to send (each with the
//! connection it goes on), the next timer and events (a command completed,
//! a TMF or Logout answered, an Async Message, a connection failed) come
//! out of [`InitiatorSession::poll_transmit`],
//! [`InitiatorSession::poll_timeout`] and [`InitiatorSession::poll_event`].
//! No clock, no I/O, no randomness: time is whatever `now` the caller
//! passes, and the first CmdSN is the caller's.
//!
//! One value covers the whole session, all its connections (MC/S, §4.2.1):
//! the CmdSN window is session-wide (§4.2.2.1), ITTs are unique in the
//! session (§11.2.1.8), and each task keeps to the connection it was issued
//! on (connection allegiance, §4.2.4.1 / §3.2.4.2: without task
//! reassignment its Data-In, R2Ts and response come on that connection).
//! ExpStatSN is per connection (§4.2.2.2).
//!
//! | file | what | RFC 7143 |
//! |---|---|---|
//! | this file | types, connections, the poll side | §4.2 |
//! | [`issue`] | the issuing queue, CmdSN gating, immediate and unsolicited data, Data-Out for R2Ts | §4.2.2.1, §4.2.5.2, §11.3, §11.7, §11.8, §13.10-14 |
//! | [`receive`] | what the target sends: SCSI Response, Data-In reassembly, R2T, NOP-In, Reject, Async Message | §7.3, §7.8, §11.4, §11.7, §11.9, §11.17, §11.19 |
//! | [`control`] | NOP-Out pings and their timeout, command timeouts (ABORT TASK), Task Management, Logout | §11.5, §11.14, §11.18 |
//!
//! ErrorRecoveryLevel 0 only (§7.1.5): a sequence error (§7.9), a broken
//! allegiance or an unanswered ping fails the connection and so the
//! session; the shell then recovers the session, and
//! [`InitiatorSession::requeue_all`] puts every unanswered command back in
//! the queue in submission order. Deliberately not done: SNACK, task
//! reassignment, bidirectional commands, CDBs over 16 bytes.

mod control;
mod issue;
mod receive;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;

use crate::pdu::{AsyncMessage, LogoutResponse, Pdu, RejectReason, TaskMgmtResponse, TmfResponse};
use crate::serial::{CmdSn, R2tSn, StatSn};
use crate::session::tags::TagMap;
use crate::session::{
    set_exp_stat_sn, DataInError, ExpStatSn, IssueWindow, R2tError, ReadProgress, TagAllocator,
};

/// A connection of the session: an index in the order connections were
/// added since the last [`InitiatorSession::requeue_all`] (or creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

/// Negotiated values and timers of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitiatorConfig {
    /// ImmediateData (§13.11).
    pub immediate_data: bool,
    /// InitialR2T (§13.10).
    pub initial_r2t: bool,
    /// FirstBurstLength (§13.14).
    pub first_burst_length: u32,
    /// MaxBurstLength (§13.13): the largest R2T the target may send.
    pub max_burst_length: u32,
    /// Idle time on a connection before a NOP-Out ping (§11.18).
    pub nop_interval: Duration,
    /// A ping unanswered for this long fails its connection.
    pub nop_timeout: Duration,
    /// A command without response for this long is aborted (ABORT TASK).
    pub command_timeout: Duration,
    /// How long a Task Management or Logout request waits for its answer.
    pub response_timeout: Duration,
}

impl Default for InitiatorConfig {
    /// RFC 7143 §13 defaults for the keys; timers as `SessionConfig`'s.
    fn default() -> Self {
        InitiatorConfig {
            immediate_data: true,
            initial_r2t: true,
            first_burst_length: 65536,
            max_burst_length: 262_144,
            nop_interval: Duration::from_secs(5),
            nop_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(10),
        }
    }
}

/// A logged-in connection joining the full-feature phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnParams {
    pub cid: u16,
    /// One past the StatSN of the final Login Response.
    pub exp_stat_sn: StatSn,
    /// The target's MaxRecvDataSegmentLength: our PDU size limit (§13.12).
    pub max_send_data_segment_length: u32,
}

/// The data of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    None,
    /// Expect up to `len` bytes of Data-In, reassembled into `buf` (the
    /// caller's, e.g. from a pool; cleared, grown to `len` if needed).
    Read {
        len: u32,
        buf: Vec<u8>,
    },
    /// Send these bytes (immediate, unsolicited and solicited Data-Out).
    Write(Bytes),
}

impl Data {
    /// ExpectedDataTransferLength (§11.3.5).
    pub fn len(&self) -> u32 {
        match self {
            Data::None => 0,
            Data::Read { len, .. } => *len,
            Data::Write(d) => d.len() as u32,
        }
    }

    /// Whether no data moves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A SCSI command to issue; `ctx` is the caller's and comes back in
/// [`Event::Completed`].
#[derive(Debug)]
pub struct Command<T> {
    pub lun: u64,
    /// At most 16 bytes (no AHS).
    pub cdb: Bytes,
    pub data: Data,
    pub ctx: T,
}

/// Told when a command is issued (it gets its ITT and CmdSN, again after
/// [`InitiatorSession::requeue_all`]); e.g. to record them in a span.
pub trait CommandContext {
    fn issued(&mut self, _itt: u32, _cmd_sn: CmdSn, _conn: ConnId) {}
}

impl CommandContext for () {}
impl CommandContext for u64 {}
impl CommandContext for usize {}

/// How a command ended at the target (any SCSI status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// SCSI status byte.
    pub status: u8,
    /// Sense data without the SenseLength prefix; empty when none.
    pub sense: Bytes,
    /// Data-In, cut at the highest byte received.
    pub data: ReadData,
    /// Residual count with the U bit.
    pub underflow: Option<u32>,
    /// Residual count with the O bit.
    pub overflow: Option<u32>,
}

/// The Data-In of a completed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadData {
    /// Reassembled by BufferOffset into the caller's buffer (`Data::Read`).
    Buffer(Vec<u8>),
    /// All of it came in one Data-In PDU at offset 0: that PDU's payload as
    /// received, not copied; the caller's buffer comes back unused.
    Received { data: Bytes, spare: Vec<u8> },
}

impl Default for ReadData {
    fn default() -> Self {
        ReadData::Buffer(Vec::new())
    }
}

impl std::ops::Deref for ReadData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadData::Buffer(b) => b,
            ReadData::Received { data, .. } => data,
        }
    }
}

impl ReadData {
    /// The bytes as a `Vec` (copied only when they were received whole).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            ReadData::Buffer(b) => b,
            ReadData::Received { data, .. } => data.to_vec(),
        }
    }
}

/// Why a Task Management or Logout request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ControlError {
    #[error("no answer in time")]
    Timeout,
    /// The connections were reset ([`InitiatorSession::requeue_all`]).
    #[error("connection closed before the answer")]
    Lost,
}

/// Why a command failed without a SCSI status.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    /// SCSI Response with a response code other than "completed at
    /// target" (§11.4.3).
    #[error("target failure (iSCSI response {0:#04x})")]
    TargetFailure(u8),
    /// The command was rejected for a reason a retry would not cure (§7.3).
    #[error("{0:?}")]
    Rejected(RejectReason),
    /// Data-In beyond the expected length (§11.7.4): only this command
    /// fails.
    #[error("Data-In for ITT {itt:#x}: {source}")]
    DataIn {
        itt: u32,
        #[source]
        source: DataInError,
    },
    /// A wrong R2T (§11.8) that fails only this command.
    #[error("R2T for ITT {itt:#x}: {source}")]
    R2t {
        itt: u32,
        #[source]
        source: R2tError,
    },
    /// An R2T for a command without Data-Out.
    #[error("R2T for ITT {itt:#x}, a command that has no Data-Out")]
    R2tWithoutDataOut { itt: u32 },
    /// No response within the command timeout; ABORT TASK was sent.
    #[error("command timed out after {after:?}; {}", abort_text(.abort))]
    TimedOut {
        after: Duration,
        abort: Result<TmfResponse, ControlError>,
    },
    /// The target kept the CmdSN window closed for the command timeout.
    #[error("the target kept the command window closed (CmdSN {cmd_sn}, MaxCmdSN {max_cmd_sn}) for {waited:?}")]
    WindowClosed {
        cmd_sn: CmdSn,
        max_cmd_sn: CmdSn,
        waited: Duration,
    },
    /// An ABORT TASK of ours for this command completed (§11.5.1): the
    /// target sends no response for it.
    #[error("command aborted by ABORT TASK")]
    Aborted,
    /// A LOGICAL UNIT RESET of ours ended the command (SAM-5; §11.5.1).
    #[error("command aborted by LOGICAL UNIT RESET")]
    LunReset,
}

fn abort_text(r: &Result<TmfResponse, ControlError>) -> String {
    match r {
        Ok(resp) => format!("aborted ({resp:?})"),
        Err(e) => format!("abort failed: {e}"),
    }
}

/// Why a connection failed (at ERL 0: recover the session).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnError {
    /// A PDU that has no place in the full-feature phase.
    #[error("unexpected PDU from target: {0:?}")]
    UnexpectedPdu(crate::pdu::Opcode),
    /// Connection allegiance broken (§3.2.4.2).
    #[error("{pdu} for ITT {itt:#x} on connection {conn}, command was issued on {issued}")]
    WrongConnection {
        pdu: &'static str,
        itt: u32,
        conn: usize,
        issued: usize,
    },
    /// A Data-In sequence error, or a response implying missing data (§7.9).
    #[error("{pdu} for ITT {itt:#x}: {source}")]
    DataIn {
        pdu: &'static str,
        itt: u32,
        #[source]
        source: DataInError,
    },
    /// An R2T sequence error (§7.9).
    #[error("R2T for ITT {itt:#x}: {source}")]
    R2t {
        itt: u32,
        #[source]
        source: R2tError,
    },
    /// A command lost to data digest errors too often (§7.8).
    #[error(
        "command ITT {itt:#x} lost to data digest errors {times} times; \
         recovering the session (check the network path for corruption)"
    )]
    DigestRetries { itt: u32, times: u32 },
    /// Our NOP-Out ping was not answered in time (§11.18).
    #[error("no NOP-In answer on connection {conn} (ping {itt:#x})")]
    PingTimeout { conn: usize, itt: u32 },
    /// ABORT TASK for a timed-out command was not answered: at ERL 0 only
    /// session recovery is left (§7.1.5).
    #[error("ABORT TASK was not answered")]
    AbortUnanswered,
}

/// What the shell must act on.
#[derive(Debug)]
pub enum Event<T> {
    /// A command ended: with a SCSI status, or failed.
    Completed {
        ctx: T,
        itt: u32,
        result: Result<Response, CommandError>,
    },
    /// The answer to [`InitiatorSession::task_management`] `itt`.
    Tmf {
        itt: u32,
        result: Result<TaskMgmtResponse, ControlError>,
    },
    /// The answer to [`InitiatorSession::logout`] `itt`.
    Logout {
        itt: u32,
        result: Result<LogoutResponse, ControlError>,
    },
    /// An Async Message (§11.9); its window was taken into account.
    Async { conn: ConnId, message: AsyncMessage },
    /// A connection failed from a timer (ping, unanswered abort).
    /// ([`InitiatorSession::handle_pdu`] returns its failures.)
    Failed { conn: ConnId, error: ConnError },
}

/// A PDU to send on a connection, ExpStatSN stamped.
#[derive(Debug)]
pub struct Transmit {
    pub conn: ConnId,
    pub pdu: Pdu,
}

/// A command in the queue, or issued.
#[derive(Debug)]
struct Queued<T> {
    /// Submission order (re-issue order after recovery).
    seq: u64,
    cmd: Command<T>,
}

/// An issued command.
#[derive(Debug)]
struct Task<T> {
    q: Queued<T>,
    cmd_sn: CmdSn,
    conn: ConnId,
    /// DataSN order and extent of the Data-In (§11.7.5).
    read: ReadProgress,
    /// The R2TSN the next R2T must carry (§11.8.4).
    next_r2t_sn: R2tSn,
    deadline: Instant,
    /// ABORT TASK sent after the command timeout.
    aborting: bool,
    /// Times the command PDU was sent again after a data digest Reject.
    crc_retries: u32,
    /// The first Data-In's payload while it is the only one (offset 0):
    /// kept as received, copied into the buffer only if more arrives.
    first: Option<Bytes>,
}

/// A connection in the full-feature phase.
#[derive(Debug)]
struct Conn {
    cid: u16,
    exp_stat_sn: ExpStatSn,
    max_send_dsl: u32,
    in_flight: usize,
    last_rx: Instant,
    /// ITT of our outstanding ping.
    ping: Option<u32>,
    /// Reported failed: nothing more is issued on it.
    failed: bool,
}

/// The initiator's full-feature phase of one session.
#[derive(Debug)]
pub struct InitiatorSession<T> {
    config: InitiatorConfig,
    window: IssueWindow,
    itts: TagAllocator,
    next_seq: u64,
    queue: VecDeque<Queued<T>>,
    tasks: TagMap<Task<T>>,
    control: TagMap<control::Control>,
    conns: Vec<Conn>,
    rr: usize,
    paused: bool,
    /// Since when queued commands wait for the target to open the window.
    window_closed_since: Option<Instant>,
    transmit: VecDeque<Transmit>,
    events: VecDeque<Event<T>>,
}

impl<T: CommandContext> InitiatorSession<T> {
    /// A session whose leading login used `first_cmd_sn`; connections are
    /// added with [`InitiatorSession::add_connection`] and the window set
    /// with [`InitiatorSession::reset_window`] after login.
    pub fn new(config: InitiatorConfig, first_cmd_sn: CmdSn) -> Self {
        InitiatorSession {
            config,
            window: IssueWindow::new(first_cmd_sn),
            itts: TagAllocator::new(1),
            next_seq: 0,
            queue: VecDeque::new(),
            tasks: TagMap::default(),
            control: TagMap::default(),
            conns: Vec::new(),
            rr: 0,
            paused: false,
            window_closed_since: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &InitiatorConfig {
        &self.config
    }

    /// New negotiated values (a session reinstated with other keys).
    pub fn set_config(&mut self, config: InitiatorConfig) {
        self.config = config;
    }

    /// A connection that finished its login at `now`. Commands go on it
    /// once the window is set or updated.
    pub fn add_connection(&mut self, p: ConnParams, now: Instant) -> ConnId {
        self.conns.push(Conn {
            cid: p.cid,
            exp_stat_sn: ExpStatSn::new(p.exp_stat_sn),
            max_send_dsl: p.max_send_data_segment_length.max(512),
            in_flight: 0,
            last_rx: now,
            ping: None,
            failed: false,
        });
        // Nothing is issued here: after a (re)login the window is set
        // next ([`InitiatorSession::reset_window`], which issues).
        ConnId(self.conns.len() - 1)
    }

    /// After a (re)login: the target's ExpCmdSN is the next CmdSN to use
    /// (§4.2.2.1).
    pub fn reset_window(&mut self, exp_cmd_sn: CmdSn, max_cmd_sn: CmdSn, now: Instant) {
        self.window.reset(exp_cmd_sn, max_cmd_sn);
        self.pump(now);
    }

    /// ExpCmdSN/MaxCmdSN from a PDU outside the full-feature phase (the
    /// Login Response of a connection joining the session).
    pub fn update_window(&mut self, exp_cmd_sn: CmdSn, max_cmd_sn: CmdSn, now: Instant) {
        self.window.update(exp_cmd_sn, max_cmd_sn);
        self.pump(now);
    }

    /// Stop issuing queued commands (draining before a logout); they stay
    /// queued.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// Issue again after [`InitiatorSession::pause`].
    pub fn resume(&mut self, now: Instant) {
        self.paused = false;
        self.pump(now);
    }

    /// Session recovery (§7.1.5, ERL 0): forget every connection and
    /// exchange, and put every unanswered command back in the queue in
    /// submission order, to be issued anew (new ITT and CmdSN) once
    /// connections are added again. Pending TMF and Logout requests end
    /// with [`ControlError::Lost`]; nothing queued to send is kept.
    pub fn requeue_all(&mut self) {
        self.conns.clear();
        self.transmit.clear();
        self.rr = 0;
        self.window_closed_since = None;
        self.lose_control();
        let mut back: Vec<Queued<T>> = self.tasks.drain().map(|(_, t)| t.q).collect();
        back.extend(self.queue.drain(..));
        back.sort_by_key(|q| q.seq);
        for q in back.iter_mut() {
            if let Data::Read { buf, .. } = &mut q.cmd.data {
                buf.clear();
            }
        }
        self.queue = back.into();
    }

    /// Give up on every command (shutdown, failed recovery): the contexts
    /// of the issued ones, then of the queued ones, each in submission
    /// order. Connections and exchanges are forgotten.
    pub fn take_all(&mut self) -> (Vec<T>, Vec<T>) {
        self.conns.clear();
        self.transmit.clear();
        self.window_closed_since = None;
        self.lose_control();
        let mut issued: Vec<Queued<T>> = self.tasks.drain().map(|(_, t)| t.q).collect();
        issued.sort_by_key(|q| q.seq);
        let issued = issued.into_iter().map(|q| q.cmd.ctx).collect();
        let queued = self.queue.drain(..).map(|q| q.cmd.ctx).collect();
        (issued, queued)
    }

    /// Number of connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The CID of a connection.
    pub fn cid(&self, conn: ConnId) -> Option<u16> {
        self.conns.get(conn.0).map(|c| c.cid)
    }

    /// Commands issued on a connection and not answered yet.
    pub fn in_flight(&self, conn: ConnId) -> usize {
        self.conns.get(conn.0).map_or(0, |c| c.in_flight)
    }

    /// Commands issued and not answered, on all connections.
    pub fn issued_count(&self) -> usize {
        self.tasks.len()
    }

    /// Commands waiting to be issued.
    pub fn queued_count(&self) -> usize {
        self.queue.len()
    }

    /// The CmdSN window as the target last advertised it.
    pub fn window(&self) -> &IssueWindow {
        &self.window
    }

    /// ExpStatSN of a connection.
    pub fn exp_stat_sn(&self, conn: ConnId) -> Option<StatSn> {
        self.conns.get(conn.0).map(|c| c.exp_stat_sn.get())
    }

    /// The next PDU to send, ExpStatSN stamped; call until `None` and send
    /// each on its connection in that order.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let mut t = self.transmit.pop_front()?;
        if let Some(c) = self.conns.get(t.conn.0) {
            set_exp_stat_sn(&mut t.pdu, c.exp_stat_sn.get());
        }
        Some(t)
    }

    /// Number of PDUs waiting in [`InitiatorSession::poll_transmit`].
    pub fn pending_transmits(&self) -> usize {
        self.transmit.len()
    }

    /// The next event for the shell.
    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    fn queue_pdu(&mut self, conn: ConnId, pdu: impl Into<Pdu>) {
        self.transmit.push_back(Transmit {
            conn,
            pdu: pdu.into(),
        });
    }

    /// A fresh ITT (§11.2.1.8: unique in the session, never reserved).
    fn alloc_itt(&mut self) -> u32 {
        let (tasks, control) = (&self.tasks, &self.control);
        self.itts
            .allocate_free(|t| tasks.contains_key(&t) || control.contains_key(&t))
    }

    /// End command `itt` and hand its context back.
    fn finish(&mut self, itt: u32, result: Result<Response, CommandError>) {
        if let Some(t) = self.tasks.remove(&itt) {
            if let Some(c) = self.conns.get_mut(t.conn.0) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
            self.events.push_back(Event::Completed {
                ctx: t.q.cmd.ctx,
                itt,
                result,
            });
        }
    }

    /// End every pending TMF and Logout with [`ControlError::Lost`].
    fn lose_control(&mut self) {
        let mut lost: Vec<(u32, control::Control)> = self.control.drain().collect();
        lost.sort_by_key(|(itt, _)| *itt);
        for (itt, c) in lost {
            self.control_ended(itt, c, Err(ControlError::Lost));
        }
    }
}

#[cfg(test)]
mod tests;
