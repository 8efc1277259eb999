//! One iSCSI connection: login phase, then the full-feature phase with a
//! reader (this module) and a writer task ([`writer`]) (RFC 7143 §4, §11).
//!
//! The reader decodes PDUs (zero-copy data segments), enforces the
//! session-wide CmdSN window, collects write data ([`dataout`]), hands
//! complete commands to the device server on their own tokio tasks and
//! answers NOP-Out, Text, Logout and Task Management. Responses go through
//! the writer, which stamps StatSN/ExpCmdSN/MaxCmdSN in wire order.
//!
//! Error recovery: ErrorRecoveryLevel 0 only (RFC 7143 §7.1.5). Any data
//! transfer or sequencing error that cannot be answered with a Reject ends
//! the connection; the session ends with its last connection. SNACK is not
//! supported (ERL 1), nor is connection recovery via Logout reason 2 or
//! TASK REASSIGN (ERL 2): those are refused with the codes the RFC defines.
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

pub mod response;
pub mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use proto::codec::{CodecError, RecoverablePduCodec};
use proto::login::params::ConnectionParams;
use proto::pdu::{
    AsyncEvent, AsyncMessage, DataOut, DecodeError, DecodeLimits, DigestConfig, LogoutReason,
    LogoutRequest, LogoutResponse, LogoutResponseCode, NopIn, NopOut, Pdu, Reject, RejectReason,
    ScsiCommand, TextRequest, TextResponse, RESERVED_TAG,
};
use thiserror::Error;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::{Framed, FramedParts};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::device;
use crate::server::{ServerShared, Session};
use crate::session::{ConnNotice, RegisterError, TaskPhase, TaskShared};
use proto::scsi::Status;
use proto::serial::CmdSn;
use proto::session::data_in::{self, Completion, DataInLimits, Residual};
use proto::session::{Admit, DataOutError, R2tRequest, TagAllocator, WriteCollector, WriteLimits};
use writer::Outbound;

/// Largest write buffer one command may need (EDTL); above this the
/// command fails with ILLEGAL REQUEST instead of allocating.
pub const MAX_WRITE_BUFFER: u32 = 64 << 20;

/// A connection's frames: PDUs in, with non-fatal decode errors as items
/// (answered with a Reject, RFC 7143 §7.8); the limits are the negotiated
/// ones from the end of login.
pub(crate) type Frames<T> = Framed<T, RecoverablePduCodec>;

/// Outgoing PDUs queued per connection before senders wait.
const OUT_QUEUE: usize = 512;

/// Why a connection ends.
#[derive(Debug, Error)]
pub enum ConnError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("undecodable PDU: {0}")]
    Decode(#[from] DecodeError),
    #[error("data transfer error: {0}")]
    DataOut(#[from] DataOutError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the writer is gone")]
    WriterGone,
    #[error("NOP-In ping not answered within {0:?}")]
    PingTimeout(Duration),
    #[error("the initiator has not read our responses for {0:?}")]
    PeerNotReading(Duration),
    #[error("closed (logout elsewhere, reinstatement or shutdown)")]
    Cancelled,
}

/// Negotiated values a connection works with.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub conn: ConnectionParams,
    pub write: WriteLimits,
    pub data_in: DataInLimits,
    pub nop_interval: Option<Duration>,
    pub nop_timeout: Duration,
}

/// What the login phase hands to the full-feature phase.
pub struct Established {
    pub session: Arc<Session>,
    pub cid: u16,
    pub limits: ConnLimits,
    /// StatSN for the first full-feature response.
    pub next_stat_sn: u32,
    /// Asked to close (logout of this CID from elsewhere, reinstatement,
    /// session end).
    pub cancel: CancellationToken,
    pub notices: mpsc::UnboundedReceiver<ConnNotice>,
}

/// Serve one accepted TCP connection to the end.
pub(crate) async fn serve(
    shared: Arc<ServerShared>,
    stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    portal: SocketAddr,
) {
    let conn_id = shared.conn_id();
    let span = tracing::info_span!(
        "conn",
        %peer,
        id = conn_id,
        isid = tracing::field::Empty,
        tsih = tracing::field::Empty,
        cid = tracing::field::Empty
    );
    async move {
        // RFC 7143 §13.12: during login the data segment limit is 8192,
        // and there are no digests (the codec's default limits).
        let mut frames = Framed::new(stream, RecoverablePduCodec::default());
        let est = match crate::login::run(&shared, &mut frames, local, portal, conn_id).await {
            Ok(e) => e,
            Err(e) => {
                info!(error = %e, "login failed");
                return;
            }
        };
        let span = tracing::Span::current();
        span.record(
            "isid",
            tracing::field::display(hex6(&est.session.core.key.isid)),
        );
        span.record("tsih", est.session.core.tsih);
        span.record("cid", est.cid);
        info!(
            initiator = %est.session.core.initiator_name,
            target = %est.session.core.target_name,
            kind = ?est.session.core.kind,
            "logged in"
        );
        full_feature(shared, frames, est, local, conn_id).await;
    }
    .instrument(span)
    .await
}

fn hex6(b: &[u8; 6]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn full_feature(
    shared: Arc<ServerShared>,
    frames: Frames<TcpStream>,
    est: Established,
    local: SocketAddr,
    conn_id: u64,
) {
    let digests = DigestConfig {
        header: est.limits.conn.header_digest,
        data: est.limits.conn.data_digest,
    };
    // RFC 7143 §13.1, §13.12: digests and our MaxRecvDataSegmentLength
    // apply from the first PDU after the final Login Response; the bytes
    // already read stay in the read buffer.
    let parts = frames.into_parts();
    let (rd, wr) = parts.io.into_split();
    let mut codec = parts.codec;
    codec.set_limits(DecodeLimits {
        max_data_segment_length: est.limits.conn.max_recv_data_segment_length,
        digests,
    });
    let mut read_parts = FramedParts::new::<Pdu>(rd, codec);
    read_parts.read_buf = parts.read_buf;
    let frames = Framed::from_parts(read_parts);
    let (tx, rx) = mpsc::channel(OUT_QUEUE);
    let writer_cancel = CancellationToken::new();
    let writer = tokio::spawn(
        writer::run(
            wr,
            rx,
            est.session.clone(),
            digests,
            proto::serial::StatSn::new(est.next_stat_sn),
            writer_cancel.clone(),
        )
        .in_current_span(),
    );
    let session = est.session.clone();
    let mut conn = Conn {
        shared: shared.clone(),
        session: est.session,
        cid: est.cid,
        conn_id,
        local,
        tx,
        cancel: est.cancel,
        notices: est.notices,
        limits: est.limits,
        pending: HashMap::new(),
        ttts: TagAllocator::new(1),
        text: TextState::default(),
        ping: None,
        last_rx: Instant::now(),
        logged_out: false,
    };
    let result = conn.read_loop(frames).await;
    match &result {
        Ok(()) => debug!("connection closed"),
        Err(ConnError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            debug!("initiator closed the connection")
        }
        Err(e) => warn!(error = %e, "connection dropped"),
    }
    conn.cleanup_tasks();
    // Let the writer flush what is queued (e.g. a Logout Response).
    let _ = conn.tx.try_send(Outbound::Close);
    drop(conn.tx);
    if tokio::time::timeout(Duration::from_secs(2), writer)
        .await
        .is_err()
    {
        writer_cancel.cancel();
    }
    let left = session.core.remove_connection(conn_id);
    if left == 0 || session.core.is_closed() {
        shared.end_session(&session).await;
        info!("session ended");
    }
}

/// A write command waiting for its data.
struct PendingWrite {
    task: Arc<TaskShared>,
    cmd: CmdInfo,
    collector: WriteCollector,
}

/// What the executor needs to know about a command.
#[derive(Debug, Clone)]
pub(crate) struct CmdInfo {
    pub itt: u32,
    pub lun: u64,
    pub cdb: Bytes,
    pub read: bool,
    pub write: bool,
    pub edtl: u32,
    pub attr: u8,
}

/// Full-feature Text state: a multi-PDU request being received, or a long
/// response being sent in pieces (RFC 7143 §11.10.2, C bit).
#[derive(Default)]
struct TextState {
    negotiator: Option<proto::text::negotiate::Negotiator>,
    request: Option<proto::text::TextAccumulator>,
    /// (TTT, remaining segments) of a response being continued.
    sending: Option<(u32, proto::text::TextSender)>,
}

struct Conn {
    shared: Arc<ServerShared>,
    session: Arc<Session>,
    cid: u16,
    conn_id: u64,
    local: SocketAddr,
    tx: mpsc::Sender<Outbound>,
    cancel: CancellationToken,
    notices: mpsc::UnboundedReceiver<ConnNotice>,
    limits: ConnLimits,
    pending: HashMap<u32, PendingWrite>,
    ttts: TagAllocator,
    text: TextState,
    /// Outstanding NOP-In ping: (TTT, when sent).
    ping: Option<(u32, Instant)>,
    last_rx: Instant,
    logged_out: bool,
}

impl Conn {
    fn alloc_ttt(&mut self) -> u32 {
        self.ttts.allocate()
    }

    async fn send(&self, pdu: impl Into<Pdu>) -> Result<(), ConnError> {
        self.queue(Outbound::Pdu(pdu.into())).await
    }

    /// Hand a message to the writer. When the queue is full the initiator
    /// is not draining its socket; waiting for room must not make the
    /// connection deaf: a close request (logout from another connection,
    /// reinstatement, shutdown) still ends it, and with NOP-In pings
    /// enabled a queue that stays full for the ping timeout is treated like
    /// an unanswered ping (RFC 7143 §11.19: the target uses NOP-In to
    /// check the initiator is alive; one that reads nothing cannot answer).
    async fn queue(&self, m: Outbound) -> Result<(), ConnError> {
        let m = match self.tx.try_send(m) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(ConnError::WriterGone),
            Err(mpsc::error::TrySendError::Full(m)) => m,
        };
        let stall = self.limits.nop_interval.map(|_| self.limits.nop_timeout);
        tokio::select! {
            r = self.tx.send(m) => r.map_err(|_| ConnError::WriterGone),
            _ = self.cancel.cancelled() => Err(ConnError::Cancelled),
            _ = sleep_opt(stall) => Err(ConnError::PeerNotReading(stall.unwrap_or_default())),
        }
    }

    async fn read_loop(&mut self, mut frames: Frames<OwnedReadHalf>) -> Result<(), ConnError> {
        loop {
            let ping_at = self.next_ping_deadline();
            tokio::select! {
                f = frames.next() => match f {
                    Some(Ok(Ok(pdu))) => {
                        self.last_rx = Instant::now();
                        self.handle(pdu).await?;
                        if self.logged_out {
                            return Ok(());
                        }
                    }
                    Some(Ok(Err(e))) => {
                        self.last_rx = Instant::now();
                        self.undecodable(e).await?;
                    }
                    Some(Err(CodecError::Decode(e))) => return Err(e.into()),
                    Some(Err(CodecError::Io(e))) => return Err(e.into()),
                    None => {
                        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
                    }
                },
                _ = self.cancel.cancelled() => return Ok(()),
                Some(n) = self.notices.recv() => self.notice(n).await?,
                _ = sleep_until_opt(ping_at) => self.ping_tick().await?,
            }
        }
    }

    async fn notice(&mut self, n: ConnNotice) -> Result<(), ConnError> {
        match n {
            ConnNotice::RequestLogout { seconds } => {
                // RFC 7143 §11.9.1 AsyncEvent 1: "the initiator MUST honor
                // this request by issuing a Logout as early as possible but
                // no later than Parameter3 seconds".
                self.send(AsyncMessage {
                    lun: 0,
                    stat_sn: 0,
                    exp_cmd_sn: 0,
                    max_cmd_sn: 0,
                    async_event: AsyncEvent::LOGOUT_REQUEST,
                    async_vcode: 0,
                    parameter1: 0,
                    parameter2: 0,
                    parameter3: seconds,
                    data: Bytes::new(),
                })
                .await
            }
        }
    }

    fn next_ping_deadline(&self) -> Option<Instant> {
        if let Some((_, sent)) = self.ping {
            return Some(sent + self.limits.nop_timeout);
        }
        self.limits.nop_interval.map(|i| self.last_rx + i)
    }

    async fn ping_tick(&mut self) -> Result<(), ConnError> {
        let now = Instant::now();
        if let Some((_, sent)) = self.ping {
            if now >= sent + self.limits.nop_timeout {
                return Err(ConnError::PingTimeout(self.limits.nop_timeout));
            }
            return Ok(());
        }
        let Some(interval) = self.limits.nop_interval else {
            return Ok(());
        };
        if now < self.last_rx + interval {
            return Ok(());
        }
        // RFC 7143 §11.19: a NOP-In with a valid TTT asks for a NOP-Out
        // echoing the TTT (and the LUN); ITT is reserved.
        let ttt = self.alloc_ttt();
        self.ping = Some((ttt, now));
        self.send(NopIn {
            lun: 0,
            itt: RESERVED_TAG,
            ttt,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            data: Bytes::new(),
        })
        .await
    }

    /// A PDU that could not be used but left the stream in sync. RFC 7143
    /// §7.8: a data digest error is answered with a Reject and the PDU
    /// discarded; so is an unknown opcode (§11.17.1 "Command not
    /// supported"). A discarded Data-Out also ends its task (module docs).
    async fn undecodable(&mut self, e: DecodeError) -> Result<(), ConnError> {
        warn!(error = %e, "rejecting PDU");
        let reason = e.reject_reason().unwrap_or(RejectReason::PROTOCOL_ERROR);
        let header = e.rejected_header().cloned().unwrap_or_default();
        self.reject(reason, header).await?;
        match e.discarded_pdu_header() {
            Some(Pdu::DataOut(d)) if !self.session.is_discovery() => {
                self.data_out_digest_error(d).await
            }
            _ => Ok(()),
        }
    }

    /// A Data-Out of a pending write failed its data digest: discard the
    /// write's data and end the task with PROTOCOL SERVICE CRC ERROR once
    /// its open sequences have ended (RFC 7143 §7.8, ERL 0).
    async fn data_out_digest_error(&mut self, d: DataOut) -> Result<(), ConnError> {
        let Some(p) = self.pending.get_mut(&d.itt) else {
            return Ok(());
        };
        p.collector.discard_after_digest_error(d.ttt, d.final_);
        if p.task.is_aborted() {
            self.pending.remove(&d.itt);
            return Ok(());
        }
        self.end_if_drained(d.itt).await
    }

    /// Answer a write whose data was discarded, once nothing more of it is
    /// expected.
    async fn end_if_drained(&mut self, itt: u32) -> Result<(), ConnError> {
        if !self
            .pending
            .get(&itt)
            .is_some_and(|p| p.collector.is_drained())
        {
            return Ok(());
        }
        let Some(p) = self.pending.remove(&itt) else {
            return Ok(());
        };
        warn!(
            itt,
            "write ended with PROTOCOL SERVICE CRC ERROR, nothing written"
        );
        self.fail_command(p.task, &p.cmd, response::sense_protocol_crc_error())
            .await
    }

    async fn reject(&self, reason: RejectReason, header: Bytes) -> Result<(), ConnError> {
        // RFC 7143 §11.17: the data segment holds the rejected PDU's header.
        self.send(Reject {
            reason,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            data_sn_or_r2t_sn: 0,
            data: header,
        })
        .await
    }

    async fn reject_pdu(&self, reason: RejectReason, pdu: &Pdu) -> Result<(), ConnError> {
        let header = pdu.encode(DigestConfig::NONE).header;
        self.reject(reason, header).await
    }

    /// Apply the CmdSN window to a command-carrying PDU. `None`: ignore it.
    fn admit(&self, cmd_sn: u32, immediate: bool) -> Option<bool> {
        let a =
            crate::session::lock(&self.session.core.window).admit(CmdSn::new(cmd_sn), immediate);
        match a {
            Admit::Accept { counted } => Some(counted),
            other => {
                debug!(cmd_sn, ?other, "command outside the CmdSN window ignored");
                None
            }
        }
    }

    async fn handle(&mut self, pdu: Pdu) -> Result<(), ConnError> {
        let discovery = self.session.is_discovery();
        match pdu {
            Pdu::ScsiCommand(c) if !discovery => self.scsi_command(c).await,
            Pdu::DataOut(d) if !discovery => self.data_out(d).await,
            Pdu::NopOut(n) => self.nop_out(n).await,
            Pdu::TextRequest(t) => self.text(t).await,
            Pdu::LogoutRequest(l) => self.logout(l).await,
            Pdu::TaskMgmtRequest(t) if !discovery => {
                let Some(counted) = self.admit(t.cmd_sn, t.immediate) else {
                    return Ok(());
                };
                let shared = self.shared.clone();
                let session = self.session.clone();
                let tx = self.tx.clone();
                tokio::spawn(
                    async move {
                        let (resp, after) = crate::tmf::handle(&shared, &session, &t).await;
                        if counted {
                            session.core.complete_command();
                        }
                        let _ = tx.send(Outbound::Pdu(resp.into())).await;
                        if let Some(after) = after {
                            after.run(&shared).await;
                        }
                    }
                    .in_current_span(),
                );
                Ok(())
            }
            Pdu::SnackRequest(_) => {
                // ErrorRecoveryLevel 0: SNACK support is not negotiated.
                self.reject_pdu(RejectReason::COMMAND_NOT_SUPPORTED, &pdu)
                    .await
            }
            other => {
                // Login in full-feature phase, target opcodes, or SCSI
                // traffic in a discovery session (RFC 7143 §4.3: only Text
                // and Logout are allowed there).
                debug!(opcode = ?other.opcode(), "PDU not allowed here");
                self.reject_pdu(RejectReason::PROTOCOL_ERROR, &other).await
            }
        }
    }

    fn write_limits(&self) -> WriteLimits {
        self.limits.write
    }

    async fn scsi_command(&mut self, c: ScsiCommand) -> Result<(), ConnError> {
        let span = tracing::debug_span!("cmd", itt = c.itt, cmdsn = c.cmd_sn, lun = c.lun);
        let _g = span.enter();
        let Some(counted) = self.admit(c.cmd_sn, c.immediate) else {
            return Ok(());
        };
        // Writes aborted by a TMF (which runs on its own task and cannot
        // reach this map) still hold their partly filled buffers; drop them
        // now so that abort-and-retry cannot pin memory without bound
        // (RFC 7143 §4.2.3.3: an aborted task's data is discarded).
        if !self.pending.is_empty() {
            self.pending.retain(|_, p| !p.task.is_aborted());
        }
        if !counted {
            // Immediate commands bypass the CmdSN window; bound them too
            // (RFC 7143 §11.17.1 Reject reason 0x06 "Immediate command
            // reject - too many immediate commands").
            let depth = crate::session::lock(&self.session.core.window).queue_depth();
            if self.session.core.tasks_where(|t| !t.counted).len() >= depth as usize {
                drop(_g);
                return self
                    .reject_pdu(RejectReason::IMMEDIATE_COMMAND_REJECT, &Pdu::ScsiCommand(c))
                    .await;
            }
        }
        let task =
            match self
                .session
                .core
                .register_task(c.itt, c.lun, self.conn_id, c.cmd_sn, counted)
            {
                Ok(t) => {
                    // A stale entry (aborted task whose ITT is reused) is
                    // dropped. Only now: while the ITT is still registered
                    // the new command is refused below (RFC 7143 §11.17.1
                    // "Task in progress") and the write in flight must keep
                    // its collector, or its data would be discarded and its
                    // CmdSN slot never released.
                    self.pending.remove(&c.itt);
                    t
                }
                Err(e) => {
                    if counted {
                        self.session.core.complete_command();
                    }
                    if e == RegisterError::TaskInProgress {
                        drop(_g);
                        return self
                            .reject_pdu(RejectReason::TASK_IN_PROGRESS, &Pdu::ScsiCommand(c))
                            .await;
                    }
                    return Ok(());
                }
            };
        let cmd = CmdInfo {
            itt: c.itt,
            lun: c.lun,
            cdb: c.cdb.clone(),
            read: c.read,
            write: c.write,
            edtl: c.expected_data_transfer_length,
            attr: c.attr.0,
        };
        let write_len = if c.write {
            c.expected_data_transfer_length
        } else {
            0
        };
        if write_len == 0 {
            if !c.data.is_empty() {
                // Data without the W bit: RFC 7143 §11.3.1 protocol error.
                self.session.core.finish_task(&task);
                drop(_g);
                return self
                    .reject_pdu(RejectReason::PROTOCOL_ERROR, &Pdu::ScsiCommand(c))
                    .await;
            }
            drop(_g);
            self.execute(task, cmd, Bytes::new());
            return Ok(());
        }
        if write_len > MAX_WRITE_BUFFER {
            warn!(
                edtl = write_len,
                "write larger than the per-command buffer limit"
            );
            drop(_g);
            return self
                .fail_command(task, &cmd, response::sense_invalid_field_in_cdb())
                .await;
        }
        let mut collector =
            match WriteCollector::new(write_len, c.data, c.final_, self.write_limits()) {
                Ok(col) => col,
                Err(e) => {
                    // ERL 0 without dropping the connection: the task ends with
                    // CHECK CONDITION; later Data-Out for it is discarded.
                    warn!(error = %e, itt = cmd.itt, "write data protocol error");
                    drop(_g);
                    return self
                        .fail_command(task, &cmd, response::sense_data_phase_error())
                        .await;
                }
            };
        if collector.is_complete() {
            let data = collector.take_data();
            drop(_g);
            self.execute(task, cmd, data);
            return Ok(());
        }
        let r2ts = collector.next_r2ts(|| self.ttts.allocate());
        drop(_g);
        self.pending.insert(
            cmd.itt,
            PendingWrite {
                task,
                cmd: cmd.clone(),
                collector,
            },
        );
        self.send_r2ts(&cmd, r2ts).await
    }

    async fn send_r2ts(&self, cmd: &CmdInfo, r2ts: Vec<R2tRequest>) -> Result<(), ConnError> {
        if r2ts.is_empty() {
            return Ok(());
        }
        let pdus = r2ts
            .into_iter()
            .map(|r| Pdu::R2t(r.to_pdu(cmd.lun, cmd.itt)))
            .collect();
        self.queue(Outbound::Pdus(pdus)).await
    }

    async fn data_out(&mut self, d: DataOut) -> Result<(), ConnError> {
        let Some(p) = self.pending.get_mut(&d.itt) else {
            // RFC 7143 §11.7: data for a task we no longer know (aborted,
            // or already failed) is discarded.
            debug!(itt = d.itt, "Data-Out for an unknown task discarded");
            return Ok(());
        };
        if p.task.is_aborted() {
            self.pending.remove(&d.itt);
            return Ok(());
        }
        if let Err(e) = p
            .collector
            .data_out(d.ttt, d.data_sn, d.buffer_offset, d.final_, d.data)
        {
            // RFC 7143 §7.1.4 (ERL 0): a data sequence error terminates the
            // task; we answer it with CHECK CONDITION (ABORTED COMMAND, DATA
            // PHASE ERROR) and keep the connection, so other tasks go on.
            warn!(error = %e, itt = d.itt, "Data-Out sequence error");
            if let Some(p) = self.pending.remove(&d.itt) {
                self.fail_command(p.task, &p.cmd, response::sense_data_phase_error())
                    .await?;
            }
            return Ok(());
        }
        if p.collector.is_discarding() {
            return self.end_if_drained(d.itt).await;
        }
        if p.collector.is_complete() {
            let Some(mut p) = self.pending.remove(&d.itt) else {
                return Ok(());
            };
            let data = p.collector.take_data();
            self.execute(p.task, p.cmd, data);
            return Ok(());
        }
        if d.final_ {
            let ttts = &mut self.ttts;
            let r2ts = p.collector.next_r2ts(|| ttts.allocate());
            let cmd = p.cmd.clone();
            return self.send_r2ts(&cmd, r2ts).await;
        }
        Ok(())
    }

    /// Answer a command the transport fails before execution. The sense
    /// data takes the format the LU's D_SENSE asks for (SPC-5 §7.5.8
    /// Control mode page), like the device server's own.
    async fn fail_command(
        &self,
        task: Arc<TaskShared>,
        cmd: &CmdInfo,
        sense: proto::scsi::Sense,
    ) -> Result<(), ConnError> {
        let descriptor = match (&self.session.target, &self.session.nexus) {
            (Some(t), Some(n)) => device::descriptor_sense(&t.device, n, cmd.lun),
            _ => false,
        };
        let sense = Bytes::from(sense.encode(descriptor));
        if !task.start_responding() {
            self.session.core.finish_task(&task);
            return Ok(());
        }
        let edtl = cmd.edtl;
        let resp = data_in::status_only(
            cmd.itt,
            Status::CHECK_CONDITION,
            Some(sense),
            Residual::compute(edtl, 0),
        );
        self.session.core.retire_task(&task);
        let r = self.queue(Outbound::Pdu(resp.into())).await;
        task.set_done();
        r
    }

    fn execute(&self, task: Arc<TaskShared>, cmd: CmdInfo, data_out: Bytes) {
        let session = self.session.clone();
        let tx = self.tx.clone();
        let limits = self.limits.data_in;
        tokio::spawn(
            async move {
                execute(session, task, cmd, data_out, tx, limits).await;
            }
            .in_current_span(),
        );
    }

    async fn nop_out(&mut self, n: NopOut) -> Result<(), ConnError> {
        if n.ttt != RESERVED_TAG {
            // The answer to our ping (RFC 7143 §11.18: echoes TTT and LUN).
            if self.ping.map(|(t, _)| t) == Some(n.ttt) {
                self.ping = None;
            }
            // RFC 7143 §11.18.3: a NOP-Out answering a NOP-In carries a
            // reserved ITT and needs no answer of its own.
            if n.itt == RESERVED_TAG {
                return Ok(());
            }
        }
        let counted = if n.itt == RESERVED_TAG {
            false
        } else {
            match self.admit(n.cmd_sn, n.immediate) {
                Some(c) => c,
                None => return Ok(()),
            }
        };
        if n.itt == RESERVED_TAG {
            return Ok(());
        }
        // RFC 7143 §11.19: the NOP-In answering a NOP-Out returns the ITT,
        // a reserved TTT, the LUN, and the ping data.
        let max = self.limits.conn.max_send_data_segment_length as usize;
        let mut data = n.data;
        data.truncate(max);
        if counted {
            self.session.core.complete_command();
        }
        self.send(NopIn {
            lun: n.lun,
            itt: n.itt,
            ttt: RESERVED_TAG,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            data,
        })
        .await
    }

    async fn text(&mut self, t: TextRequest) -> Result<(), ConnError> {
        let counted = match self.admit(t.cmd_sn, t.immediate) {
            Some(c) => c,
            None => return Ok(()),
        };
        let r = self.text_inner(t).await;
        if counted {
            self.session.core.complete_command();
        }
        r
    }

    async fn text_inner(&mut self, t: TextRequest) -> Result<(), ConnError> {
        // Continuation of a long response: an empty request with our TTT.
        if t.ttt != RESERVED_TAG {
            if let Some((ttt, sender)) = self.text.sending.take() {
                if ttt == t.ttt {
                    return self.send_text_segment(t.itt, t.lun, ttt, sender).await;
                }
            }
            // RFC 7143 §11.10.4: an unknown TTT is answered with a Reject.
            return self
                .reject_pdu(RejectReason::INVALID_PDU_FIELD, &Pdu::TextRequest(t))
                .await;
        }
        // A new request replaces any response still being continued.
        self.text.sending = None;
        let acc = self
            .text
            .request
            .get_or_insert_with(|| proto::text::TextAccumulator::new(64 * 1024));
        let keys = match acc.push(&t.data, t.continue_) {
            Ok(Some(k)) => {
                self.text.request = None;
                k
            }
            Ok(None) => {
                // RFC 7143 §11.10.2: answer each C=1 PDU with an empty
                // response so the initiator sends the rest.
                let ttt = self.alloc_ttt();
                return self
                    .send(TextResponse {
                        final_: false,
                        continue_: false,
                        lun: t.lun,
                        itt: t.itt,
                        ttt,
                        stat_sn: 0,
                        exp_cmd_sn: 0,
                        max_cmd_sn: 0,
                        data: Bytes::new(),
                    })
                    .await;
            }
            Err(e) => {
                self.text.request = None;
                debug!(error = %e, "bad text request");
                return self
                    .reject_pdu(RejectReason::PROTOCOL_ERROR, &Pdu::TextRequest(t))
                    .await;
            }
        };
        let local = match &self.session.target {
            Some(t) => crate::login::operational_config(&t.config().limits),
            None => proto::login::params::OperationalConfig::default(),
        };
        let neg = self.text.negotiator.get_or_insert_with(|| {
            proto::text::negotiate::Negotiator::full_feature(
                proto::text::negotiate::Role::Target,
                local,
                self.session.params.session_type,
                self.limits.conn,
            )
        });
        let processed = match proto::text::discovery::process_text_request(neg, &keys) {
            Ok(p) => p,
            Err(e) => {
                debug!(error = %e, "text negotiation failed");
                return self
                    .reject_pdu(RejectReason::PROTOCOL_ERROR, &Pdu::TextRequest(t))
                    .await;
            }
        };
        // A re-declared MaxRecvDataSegmentLength (RFC 7143 §13.12) applies
        // to what we send from now on.
        let peer = neg.connection_params().max_send_data_segment_length;
        if peer >= 512 {
            self.limits.conn.max_send_data_segment_length = peer;
            self.limits.data_in.max_send_data_segment_length = peer;
        }
        let mut answers = processed.answers;
        if let Some(q) = processed.send_targets {
            answers.extend(self.send_targets(&q));
        }
        let text = proto::text::encode_kv(&answers);
        let sender = proto::text::TextSender::new(
            text,
            self.limits.conn.max_send_data_segment_length as usize,
        );
        let ttt = if sender.has_more() {
            self.alloc_ttt()
        } else {
            RESERVED_TAG
        };
        self.send_text_segment(t.itt, t.lun, ttt, sender).await
    }

    async fn send_text_segment(
        &mut self,
        itt: u32,
        lun: u64,
        ttt: u32,
        mut sender: proto::text::TextSender,
    ) -> Result<(), ConnError> {
        let (data, more) = sender.next_segment().unwrap_or((Bytes::new(), false));
        let resp = TextResponse {
            final_: !more,
            continue_: more,
            lun,
            itt,
            ttt: if more { ttt } else { RESERVED_TAG },
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            data,
        };
        if more {
            self.text.sending = Some((ttt, sender));
        }
        self.send(resp).await
    }

    /// SendTargets answer (RFC 7143 Appendix C).
    fn send_targets(&self, query: &str) -> Vec<proto::text::KeyValue> {
        let q = crate::discovery::SendTargetsQuery::parse(query);
        let targets = self.shared.all_targets();
        let configs: Vec<_> = targets.iter().map(|t| t.config()).collect();
        let refs: Vec<_> = configs.iter().collect();
        let current =
            (!self.session.is_discovery()).then_some(self.session.core.target_name.as_str());
        let found = crate::discovery::send_targets(
            &q,
            &refs,
            &self.session.core.initiator_name,
            current,
            self.local,
        );
        proto::text::discovery::encode_send_targets(&found)
    }

    async fn logout(&mut self, l: LogoutRequest) -> Result<(), ConnError> {
        let counted = match self.admit(l.cmd_sn, l.immediate) {
            Some(c) => c,
            None => return Ok(()),
        };
        let reason = l.reason_code;
        let own = reason == LogoutReason::CLOSE_SESSION
            || (reason == LogoutReason::CLOSE_CONNECTION && l.cid == self.cid);
        let response = if reason == LogoutReason::CLOSE_SESSION {
            LogoutResponseCode::CLOSED_SUCCESSFULLY
        } else if reason == LogoutReason::CLOSE_CONNECTION {
            if l.cid == self.cid {
                LogoutResponseCode::CLOSED_SUCCESSFULLY
            } else if let Some(other) = self.session.core.connection(l.cid) {
                other.cancel.cancel();
                LogoutResponseCode::CLOSED_SUCCESSFULLY
            } else {
                LogoutResponseCode::CID_NOT_FOUND
            }
        } else {
            // Reason 2 (remove the connection for recovery) needs
            // ErrorRecoveryLevel 2.
            LogoutResponseCode::CONNECTION_RECOVERY_NOT_SUPPORTED
        };
        info!(reason = ?reason, cid = l.cid, response = ?response, "logout");
        if counted {
            self.session.core.complete_command();
        }
        // RFC 7143 §11.15: Time2Wait/Time2Retain are 0 at ERL 0 (no
        // connection recovery is possible).
        self.send(LogoutResponse {
            response,
            itt: l.itt,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            time2wait: 0,
            time2retain: 0,
            data: Bytes::new(),
        })
        .await?;
        if own {
            self.logged_out = true;
            if reason == LogoutReason::CLOSE_SESSION {
                // Other connections of the session close as well; our own
                // writer flushes the response first (see full_feature).
                self.session.core.close();
            }
        }
        Ok(())
    }

    /// The connection is ending: its tasks are terminated (RFC 7143 §6.1.2
    /// at ERL 0, connection allegiance: no other connection can answer them).
    fn cleanup_tasks(&mut self) {
        for (_, p) in self.pending.drain() {
            p.task.abort();
            self.session.core.finish_task(&p.task);
        }
        let conn_id = self.conn_id;
        for t in self.session.core.tasks_where(|t| t.conn == conn_id) {
            if t.abort() == TaskPhase::Collecting {
                self.session.core.finish_task(&t);
            }
        }
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Run one command on the device server and queue its response.
pub(crate) async fn execute(
    session: Arc<Session>,
    task: Arc<TaskShared>,
    cmd: CmdInfo,
    data_out: Bytes,
    tx: mpsc::Sender<Outbound>,
    limits: DataInLimits,
) {
    let (Some(target), Some(nexus)) = (session.target.clone(), session.nexus.clone()) else {
        session.core.finish_task(&task);
        return;
    };
    if !task.start_executing() {
        session.core.finish_task(&task);
        return;
    }
    let dev = &target.device;
    let edtl_in = if cmd.read { cmd.edtl } else { 0 };
    let edtl_out = if cmd.write { cmd.edtl } else { 0 };
    // SPDTL of the write direction, from the CDB.
    let spdtl_out = device::data_out_length(dev, &nexus, cmd.lun, &cmd.cdb);
    // RFC 7143 §11.4.5.1: the residual compares EDTL with the CDB's
    // transfer length; what the device server does with the bytes it got
    // (run, run on the whole blocks received, or refuse with nothing
    // written) is decided in one place, `scsi::transfer::plan`.
    let write_residual = (edtl_out != spdtl_out).then(|| Residual::compute(edtl_out, spdtl_out));
    let req = device::Request {
        lun: cmd.lun,
        cdb: cmd.cdb.clone(),
        data_out,
        expected_data_in_length: edtl_in,
        task_attr: cmd.attr,
    };
    let out = device::execute(dev, &nexus, req).await;
    // SPDTL of the read direction is what the device server actually
    // produced (at most the CDB's allocation/transfer length): less data
    // than EDTL is an underflow (libiscsi ModeSense6.Residuals), more is an
    // overflow and is cut at EDTL (RFC 7143 §11.4.5.1).
    let spdtl_in = out.data_in.len() as u32;
    let mut data_in = out.data_in;
    if data_in.len() > edtl_in as usize {
        data_in.truncate(edtl_in as usize);
    }
    let residual = if cmd.read {
        Residual::compute(edtl_in, spdtl_in)
    } else if let Some(r) = write_residual {
        r
    } else if cmd.write {
        Residual::default()
    } else {
        // No data direction: any data the command wanted is overflow.
        Residual::compute(0, spdtl_in)
    };
    let c = Completion {
        itt: cmd.itt,
        lun: cmd.lun,
        status: Status(out.status),
        sense: out.sense,
        data_in,
        residual,
    };
    respond(&session, &task, &c, limits, &tx).await;
}

async fn respond(
    session: &Session,
    task: &TaskShared,
    c: &Completion,
    limits: DataInLimits,
    tx: &mpsc::Sender<Outbound>,
) {
    if !task.start_responding() {
        // Aborted: RFC 7143 §4.2.3.3 no response for an aborted task.
        session.core.finish_task(task);
        return;
    }
    let pdus = data_in::build(c, limits);
    session.core.retire_task(task);
    let _ = tx.send(Outbound::Pdus(pdus)).await;
    task.set_done();
}
