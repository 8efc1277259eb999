//! A scripted fake iSCSI target for protocol-level initiator tests.
//!
//! Real targets (tgtd, ours) rarely show the behaviour an initiator must
//! cope with: a NOP-In that asks for a ping response, an Async Message
//! asking for logout, a command that is never answered, malformed or
//! out-of-sequence PDUs. [`FakeTarget`] listens on a real TCP socket
//! (127.0.0.1, port 0), runs the real login state machine of `proto`
//! (`TargetLogin`, RFC 7143 §6, no authentication), and then hands every
//! logged-in connection to the test as a [`FakeConn`], which the test
//! drives PDU by PDU with `proto`'s codec.
//!
//! [`FakeConn`] keeps the target's sequence numbers (StatSN per connection,
//! ExpCmdSN/MaxCmdSN, RFC 7143 §4.2.2) and checks the initiator's side of
//! the rules it sees: CmdSN within the window, data segments within our
//! MaxRecvDataSegmentLength (the decoder refuses longer ones), immediate and
//! unsolicited data within FirstBurstLength (§13.14), solicited data exactly
//! as requested by each R2T. A violation is returned as an
//! `io::ErrorKind::InvalidData` error or counted in [`FakeConn::violations`].
//!
//! Reads and writes are served by our target's connection core
//! (`proto::session::target`, one per command, [`FakeConn::core`]): the
//! same Data-In, R2T and write-data code our target runs. The CmdSN window
//! and StatSN stay the scripted connection's, deliberately the test's to
//! set ([`FakeConn::window`], [`FakeConn::max_cmd_sn`]), not the target's
//! completion-driven one, so that tests can close it; everything else a
//! test sends is built by hand, so that it can be wrong on purpose.
//!
//! This is a test peer, not a mock: everything goes over real sockets.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use proto::codec::{CodecError, PduCodec, WriteQueue};
use proto::login::{
    Admission, LoginIdentity, LoginOutcome, LoginStatus, OperationalConfig, SessionJoin,
    SessionParams, TargetLogin, TargetLoginConfig, TargetLoginPolicy, TargetStep,
};
use proto::pdu::{
    AsyncEvent, AsyncMessage, DecodeLimits, DigestConfig, LogoutResponse, LogoutResponseCode,
    NopIn, Pdu, ScsiCommand, ScsiResponse, TaskMgmtResponse, TmfResponse,
};
use proto::scsi::Status;
use proto::serial::{CmdSn, DataSn, StatSn};
use proto::session::data_in::DataInLimits;
use proto::session::target::{
    ConnConfig, Event, NewTask, Outcome, Refusal, TargetConn, TargetSession, TaskError, TaskId,
    DEFAULT_MAX_WRITE_BUFFER,
};
use proto::session::{stamp_target, Admit, WriteLimits};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

/// The reserved tag (RFC 7143 §11.2.1.8), re-exported for tests.
pub use proto::pdu::RESERVED_TAG;

/// How the fake target logs initiators in.
#[derive(Debug, Clone)]
pub struct FakeTargetConfig {
    /// What the target accepts (MaxRecvDataSegmentLength, bursts, ...).
    pub operational: OperationalConfig,
    /// Initial command window (MaxCmdSN = ExpCmdSN + window - 1).
    pub cmd_window: u32,
    /// StatSN of the first Login Response.
    pub initial_stat_sn: StatSn,
    /// Bound on every receive of [`FakeConn::recv`].
    pub recv_timeout: Duration,
}

impl Default for FakeTargetConfig {
    fn default() -> Self {
        let operational = OperationalConfig {
            max_connections: 1,
            ..OperationalConfig::default()
        };
        FakeTargetConfig {
            operational,
            cmd_window: 32,
            initial_stat_sn: StatSn::new(1000),
            recv_timeout: Duration::from_secs(5),
        }
    }
}

/// A listening fake target. Dropping it stops accepting.
pub struct FakeTarget {
    addr: SocketAddr,
    conns: mpsc::UnboundedReceiver<FakeConn>,
    accept: JoinHandle<()>,
    cfg: FakeTargetConfig,
}

impl Drop for FakeTarget {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

struct Policy {
    next_tsih: Arc<AtomicU16>,
}

impl TargetLoginPolicy for Policy {
    fn admit(&mut self, _id: &LoginIdentity) -> Result<Admission, LoginStatus> {
        Ok(Admission::default())
    }

    fn join_session(&mut self, _id: &LoginIdentity) -> Result<SessionJoin, LoginStatus> {
        // One connection per session: MC/S is tested against our target.
        Err(LoginStatus::TOO_MANY_CONNECTIONS)
    }

    fn new_session(&mut self, _id: &LoginIdentity, _s: &SessionParams) -> Result<u16, LoginStatus> {
        Ok(self.next_tsih.fetch_add(1, Ordering::Relaxed).max(1))
    }
}

impl FakeTarget {
    /// Listen on 127.0.0.1:0 and log in every connection that arrives.
    pub async fn start(cfg: FakeTargetConfig) -> io::Result<FakeTarget> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, conns) = mpsc::unbounded_channel();
        let next_tsih = Arc::new(AtomicU16::new(1));
        let c = cfg.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                let c = c.clone();
                let next_tsih = next_tsih.clone();
                tokio::spawn(async move {
                    if let Ok(conn) = login(stream, &c, next_tsih).await {
                        let _ = tx.send(conn);
                    }
                });
            }
        });
        Ok(FakeTarget {
            addr,
            conns,
            accept,
            cfg,
        })
    }

    /// The portal, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next connection that completed its login.
    pub async fn accept(&mut self) -> io::Result<FakeConn> {
        match tokio::time::timeout(self.cfg.recv_timeout, self.conns.recv()).await {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(io::Error::other("fake target stopped")),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no login within the receive timeout",
            )),
        }
    }
}

async fn login(
    stream: TcpStream,
    cfg: &FakeTargetConfig,
    next_tsih: Arc<AtomicU16>,
) -> io::Result<FakeConn> {
    stream.set_nodelay(true)?;
    let (rd, wr) = stream.into_split();
    let mut conn = FakeConn {
        frames: FramedRead::with_capacity(rd, PduCodec::default(), 64 * 1024),
        wr,
        digests: DigestConfig::NONE,
        outcome: None,
        stat_sn: StatSn::new(0),
        exp_cmd_sn: CmdSn::new(0),
        max_cmd_sn: CmdSn::new(0),
        window: Some(cfg.cmd_window.max(1)),
        auto_ping: true,
        violations: Vec::new(),
        last_exp_stat_sn: StatSn::new(0),
        recv_timeout: cfg.recv_timeout,
    };
    let mut login = TargetLogin::new(TargetLoginConfig {
        operational: cfg.operational.clone(),
        initial_stat_sn: cfg.initial_stat_sn,
        cmd_window: cfg.cmd_window.max(1),
        ..TargetLoginConfig::default()
    });
    let mut policy = Policy { next_tsih };
    loop {
        let req = match conn.recv_raw().await? {
            Pdu::LoginRequest(r) => r,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("expected a Login Request, got {:?}", other.opcode()),
                ))
            }
        };
        match login.handle_request(req, &mut policy) {
            TargetStep::Send(r) => conn.send(Pdu::LoginResponse(r)).await?,
            TargetStep::Fail(r, e) => {
                conn.send(Pdu::LoginResponse(r)).await?;
                return Err(io::Error::other(format!("login failed: {e}")));
            }
            TargetStep::Complete(r, outcome) => {
                conn.send(Pdu::LoginResponse(r)).await?;
                conn.digests = DigestConfig {
                    header: outcome.connection.header_digest,
                    data: outcome.connection.data_digest,
                };
                conn.frames.decoder_mut().set_limits(DecodeLimits {
                    max_data_segment_length: cfg.operational.max_recv_data_segment_length,
                    digests: conn.digests,
                });
                conn.stat_sn = outcome.stat_sn.successor();
                conn.exp_cmd_sn = outcome.exp_cmd_sn;
                conn.max_cmd_sn = outcome.max_cmd_sn;
                conn.outcome = Some(outcome);
                return Ok(conn);
            }
        }
    }
}

/// One logged-in connection, driven by the test.
pub struct FakeConn {
    frames: FramedRead<OwnedReadHalf, PduCodec>,
    wr: OwnedWriteHalf,
    digests: DigestConfig,
    outcome: Option<LoginOutcome>,
    /// The StatSN the next status-bearing PDU carries.
    pub stat_sn: StatSn,
    /// The CmdSN we expect next (RFC 7143 §4.2.2.1).
    pub exp_cmd_sn: CmdSn,
    /// The highest CmdSN the initiator may use.
    pub max_cmd_sn: CmdSn,
    /// `Some(n)`: MaxCmdSN follows ExpCmdSN + n - 1. `None`: MaxCmdSN is
    /// whatever the test sets.
    pub window: Option<u32>,
    /// Answer NOP-Out pings (valid ITT) inside [`FakeConn::recv`].
    pub auto_ping: bool,
    /// Rule violations seen from the initiator.
    pub violations: Vec<String>,
    /// ExpStatSN of the last PDU received.
    pub last_exp_stat_sn: StatSn,
    /// Bound on each receive.
    pub recv_timeout: Duration,
}

impl FakeConn {
    /// The negotiated login outcome (ISID, TSIH, parameters).
    pub fn outcome(&self) -> &LoginOutcome {
        // Set before the connection is handed out.
        self.outcome
            .as_ref()
            .unwrap_or_else(|| unreachable!("FakeConn handed out before login completed"))
    }

    /// The session parameters of the login.
    pub fn session(&self) -> &SessionParams {
        &self.outcome().session
    }

    /// The initiator's MaxRecvDataSegmentLength (our Data-In size limit).
    pub fn initiator_max_recv(&self) -> u32 {
        self.outcome().connection.max_send_data_segment_length
    }

    /// The next PDU off the wire, as is (no bookkeeping). Decode errors are
    /// `InvalidData`, EOF is `UnexpectedEof`.
    pub async fn recv_raw(&mut self) -> io::Result<Pdu> {
        let fut = async {
            match self.frames.next().await {
                Some(Ok(p)) => Ok(p),
                Some(Err(CodecError::Decode(e))) => {
                    Err(io::Error::new(io::ErrorKind::InvalidData, e))
                }
                Some(Err(CodecError::Io(e))) => Err(e),
                None => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "initiator closed the connection",
                )),
            }
        };
        match tokio::time::timeout(self.recv_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "nothing received within the receive timeout",
            )),
        }
    }

    /// The next PDU, with CmdSN/ExpStatSN bookkeeping; NOP-Out pings are
    /// answered here when [`FakeConn::auto_ping`] is on.
    pub async fn recv(&mut self) -> io::Result<Pdu> {
        loop {
            let p = self.recv_raw().await?;
            self.account(&p);
            if let Pdu::NopOut(n) = &p {
                if self.auto_ping && n.itt != RESERVED_TAG {
                    let reply = self.nop_in(n.itt, RESERVED_TAG, n.lun, n.data.clone(), true);
                    self.send(reply).await?;
                    continue;
                }
            }
            return Ok(p);
        }
    }

    /// The next PDU, which must be a SCSI Command.
    pub async fn recv_command(&mut self) -> io::Result<ScsiCommand> {
        match self.recv().await? {
            Pdu::ScsiCommand(c) => Ok(c),
            other => Err(invalid(format!(
                "expected a SCSI Command, got {:?}",
                other.opcode()
            ))),
        }
    }

    fn account(&mut self, p: &Pdu) {
        if let Some(e) = p.exp_stat_sn() {
            self.last_exp_stat_sn = e;
        }
        let Some(cmd_sn) = p.cmd_sn() else { return };
        if matches!(p, Pdu::DataOut(_)) || p.immediate() {
            return;
        }
        // RFC 7143 §4.2.2.1: non-immediate commands within the window.
        if cmd_sn.gt(self.max_cmd_sn) {
            self.violations.push(format!(
                "{:?} with CmdSN {cmd_sn} beyond MaxCmdSN {}",
                p.opcode(),
                self.max_cmd_sn
            ));
        }
        if cmd_sn == self.exp_cmd_sn {
            self.exp_cmd_sn = self.exp_cmd_sn.successor();
            if let Some(w) = self.window {
                self.max_cmd_sn = self.exp_cmd_sn.wrapping_add(w).wrapping_sub(1);
            }
        } else {
            self.violations.push(format!(
                "{:?} with CmdSN {cmd_sn}, expected {}",
                p.opcode(),
                self.exp_cmd_sn
            ));
        }
    }

    /// Send one PDU (fields as given; use the builders for sequence numbers).
    pub async fn send(&mut self, pdu: impl Into<Pdu>) -> io::Result<()> {
        let mut q = WriteQueue::new();
        q.push(&pdu.into(), self.digests);
        q.write_all(&mut self.wr).await.map(|_| ())
    }

    /// Send arbitrary bytes (malformed PDUs).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wr.write_all(bytes).await
    }

    /// Close our side.
    pub async fn close(mut self) {
        let _ = self.wr.shutdown().await;
    }

    /// Take the next StatSN.
    pub fn take_stat_sn(&mut self) -> StatSn {
        let s = self.stat_sn;
        self.stat_sn = self.stat_sn.successor();
        s
    }

    /// A NOP-In. `advance` consumes a StatSN (a ping answer does; an
    /// unsolicited NOP-In, ITT 0xffffffff, carries the next StatSN without
    /// advancing it, RFC 7143 §11.19.2).
    pub fn nop_in(&mut self, itt: u32, ttt: u32, lun: u64, data: Bytes, advance: bool) -> NopIn {
        let stat_sn = if advance {
            self.take_stat_sn()
        } else {
            self.stat_sn
        };
        NopIn {
            lun,
            itt,
            ttt,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
            data,
        }
    }

    /// An Async Message (RFC 7143 §11.9).
    pub fn async_message(
        &mut self,
        event: AsyncEvent,
        lun: u64,
        params: [u16; 3],
        data: Bytes,
    ) -> AsyncMessage {
        AsyncMessage {
            lun,
            stat_sn: self.take_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
            async_event: event,
            async_vcode: 0,
            parameter1: params[0],
            parameter2: params[1],
            parameter3: params[2],
            data,
        }
    }

    /// A SCSI Response with optional sense data and residual.
    pub fn response(
        &mut self,
        itt: u32,
        status: u8,
        sense: &[u8],
        residual: Option<(bool, u32)>,
    ) -> ScsiResponse {
        let data = if sense.is_empty() {
            Bytes::new()
        } else {
            ScsiResponse::sense_segment(sense)
        };
        ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: false,
            overflow: matches!(residual, Some((true, _))),
            underflow: matches!(residual, Some((false, _))),
            response: 0,
            status,
            itt,
            snack_tag: 0,
            stat_sn: self.take_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
            exp_data_sn: DataSn::new(0),
            bidi_read_residual_count: 0,
            residual_count: residual.map(|r| r.1).unwrap_or(0),
            data,
        }
    }

    /// A Task Management Function Response.
    pub fn tmf_response(&mut self, itt: u32, response: TmfResponse) -> TaskMgmtResponse {
        TaskMgmtResponse {
            response,
            itt,
            stat_sn: self.take_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
            data: Bytes::new(),
        }
    }

    /// A successful Logout Response.
    pub fn logout_response(&mut self, itt: u32) -> LogoutResponse {
        LogoutResponse {
            response: LogoutResponseCode::CLOSED_SUCCESSFULLY,
            itt,
            stat_sn: self.take_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
            time2wait: 0,
            time2retain: 0,
            data: Bytes::new(),
        }
    }

    /// Stamp StatSN (advancing it when the PDU consumes one) and our
    /// ExpCmdSN/MaxCmdSN into a target PDU, as our target's writer does.
    pub fn stamp(&mut self, pdu: &mut Pdu) {
        stamp_target(pdu, &mut self.stat_sn, (self.exp_cmd_sn, self.max_cmd_sn));
    }

    /// The PDUs answering a read with `data` and GOOD status, built by our
    /// target's core ([`FakeConn::core`]): Data-In split at the
    /// initiator's MaxRecvDataSegmentLength and MaxBurstLength, DataSN from
    /// 0, status and residual in the last one (phase collapse, RFC 7143
    /// §11.7.3); with no data, a SCSI Response.
    pub fn data_in(&mut self, cmd: &ScsiCommand, data: &[u8]) -> Vec<Pdu> {
        let mut core = self.core(1);
        core.handle_pdu(Pdu::ScsiCommand(cmd.clone()), Instant::now());
        let outcome = Outcome {
            status: Status::GOOD,
            sense: None,
            data_in: Bytes::copy_from_slice(data),
            data_out_spdtl: 0,
        };
        core.complete(cmd.itt, outcome);
        self.drain(&mut core)
    }

    /// A target core (`proto::session::target`, the code our target runs)
    /// for one command of this scripted connection: it takes the
    /// connection's StatSN and the test's window (admitting whatever the
    /// test lets through), with the negotiated limits and at most
    /// `max_r2t` R2Ts outstanding. Hand the StatSN back with
    /// [`FakeConn::drain`].
    fn core(&self, max_r2t: u32) -> TargetConn<ScriptedWindow> {
        let s = self.session();
        let config = ConnConfig {
            write: WriteLimits {
                immediate_data: s.immediate_data,
                initial_r2t: s.initial_r2t,
                first_burst_length: s.first_burst_length,
                max_burst_length: s.max_burst_length,
                max_outstanding_r2t: max_r2t,
                max_recv_data_segment_length: self
                    .frames
                    .decoder()
                    .limits()
                    .max_data_segment_length,
            },
            data_in: DataInLimits {
                max_send_data_segment_length: self.initiator_max_recv(),
                max_burst_length: s.max_burst_length,
            },
            discovery: false,
            cid: self.outcome().cid,
            first_stat_sn: self.stat_sn,
            nop_interval: None,
            nop_timeout: Duration::from_secs(30),
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
        };
        let window = ScriptedWindow((self.exp_cmd_sn, self.max_cmd_sn));
        TargetConn::new(window, config, Instant::now())
    }

    /// What the core has to send (stamped), taking its StatSN back.
    fn drain(&mut self, core: &mut TargetConn<ScriptedWindow>) -> Vec<Pdu> {
        let out = std::iter::from_fn(|| core.poll_transmit()).collect();
        self.stat_sn = core.next_stat_sn();
        out
    }

    /// Answer a read with `data` and GOOD status.
    pub async fn complete_read(&mut self, cmd: &ScsiCommand, data: &[u8]) -> io::Result<()> {
        for d in self.data_in(cmd, data) {
            self.send(d).await?;
        }
        Ok(())
    }

    /// Answer with GOOD status and no data.
    pub async fn complete_good(&mut self, itt: u32) -> io::Result<()> {
        let r = self.response(itt, Status::GOOD.0, &[], None);
        self.send(r).await
    }

    /// Receive the whole Data-Out payload of a write with our target's
    /// core (`proto::session::target`, [`FakeConn::core`]): immediate data,
    /// unsolicited Data-Out within FirstBurstLength, then one R2T at a time
    /// (MaxOutstandingR2T 1) of at most MaxBurstLength for the rest, DataSN
    /// and offsets exact (RFC 7143 §11.7, §11.8, §13.13, §13.14). Returns
    /// the payload and the number of R2Ts sent.
    pub async fn receive_write(&mut self, cmd: &ScsiCommand) -> io::Result<(Vec<u8>, u32)> {
        let mut core = self.core(1);
        let mut pdu = Pdu::ScsiCommand(cmd.clone());
        let mut r2ts = 0;
        loop {
            core.handle_pdu(pdu, Instant::now());
            match core.poll_event() {
                Some(Event::Execute(c)) => return Ok((c.data_out.to_vec(), r2ts)),
                Some(Event::TaskFailed {
                    error: TaskError::DataOut(e),
                    ..
                }) => return Err(invalid(format!("write data: {e}"))),
                Some(other) => return Err(invalid(format!("write command: {other:?}"))),
                None => {}
            }
            for r2t in self.drain(&mut core) {
                self.send(r2t).await?;
                r2ts += 1;
            }
            pdu = match self.recv().await? {
                Pdu::DataOut(d) if d.itt == cmd.itt => Pdu::DataOut(d),
                other => {
                    return Err(invalid(format!(
                        "expected a Data-Out for ITT {:#x}, got {:?} (ITT {:#x})",
                        cmd.itt,
                        other.opcode(),
                        other.itt()
                    )))
                }
            };
        }
    }

    /// Serve READ (16), WRITE (16) and TEST UNIT READY on a RAM disk of
    /// 512-byte blocks; anything else gets CHECK CONDITION, ILLEGAL REQUEST.
    pub async fn serve_io(&mut self, cmd: &ScsiCommand, disk: &mut [u8]) -> io::Result<()> {
        let c = &cmd.cdb;
        let lba_range = |disk: &[u8]| -> Option<(usize, usize)> {
            if c.len() < 16 {
                return None;
            }
            let lba = u64::from_be_bytes(c[2..10].try_into().ok()?) as usize;
            let n = u32::from_be_bytes(c[10..14].try_into().ok()?) as usize;
            let (s, e) = (lba.checked_mul(512)?, lba.checked_add(n)?.checked_mul(512)?);
            (e <= disk.len()).then_some((s, e))
        };
        match c.first() {
            Some(0x88) => match lba_range(disk) {
                Some((s, e)) => {
                    let data = disk[s..e].to_vec();
                    self.complete_read(cmd, &data).await
                }
                None => self.illegal_request(cmd.itt).await,
            },
            Some(0x8a) => {
                let (data, _) = self.receive_write(cmd).await?;
                match lba_range(disk) {
                    Some((s, e)) if e - s == data.len() => {
                        disk[s..e].copy_from_slice(&data);
                        self.complete_good(cmd.itt).await
                    }
                    _ => self.illegal_request(cmd.itt).await,
                }
            }
            Some(0x00) => self.complete_good(cmd.itt).await,
            _ => self.illegal_request(cmd.itt).await,
        }
    }

    async fn illegal_request(&mut self, itt: u32) -> io::Result<()> {
        use proto::scsi::sense::{Asc, Sense};
        let sense = Sense::illegal_request(Asc::INVALID_COMMAND_OPERATION_CODE).encode(false);
        let r = self.response(itt, Status::CHECK_CONDITION.0, &sense, None);
        self.send(r).await
    }
}

/// The session as a scripted connection's target core sees it: the test's
/// window, unchanged while the core serves one command; every command is
/// admitted (the test's own accounting, [`FakeConn::violations`], checks
/// the initiator's CmdSNs) and no task is ever aborted.
#[derive(Debug, Clone, Copy)]
struct ScriptedWindow((CmdSn, CmdSn));

impl TargetSession for ScriptedWindow {
    fn admit(&self, _cmd_sn: CmdSn, _immediate: bool) -> Admit {
        Admit::Accept { counted: false }
    }
    fn window(&self) -> (CmdSn, CmdSn) {
        self.0
    }
    fn release_slot(&self) {}
    fn register_task(&self, _task: &NewTask) -> Result<TaskId, Refusal> {
        Ok(1)
    }
    fn is_aborted(&self, _itt: u32, _id: TaskId) -> bool {
        false
    }
    fn retire_task(&self, _itt: u32, _id: TaskId) -> bool {
        true
    }
    fn descriptor_sense(&self, _lun: u64) -> bool {
        false
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accept_times_out_without_initiator() {
        let mut t = FakeTarget::start(FakeTargetConfig {
            recv_timeout: Duration::from_millis(50),
            ..FakeTargetConfig::default()
        })
        .await
        .unwrap();
        assert!(t.addr().ip().is_loopback());
        let e = t.accept().await.err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn non_login_first_pdu_is_refused() {
        let mut t = FakeTarget::start(FakeTargetConfig {
            recv_timeout: Duration::from_millis(300),
            ..FakeTargetConfig::default()
        })
        .await
        .unwrap();
        let mut s = TcpStream::connect(t.addr()).await.unwrap();
        let nop = Pdu::NopOut(proto::pdu::NopOut {
            immediate: true,
            lun: 0,
            itt: 1,
            ttt: RESERVED_TAG,
            cmd_sn: CmdSn::new(0),
            exp_stat_sn: StatSn::new(0),
            data: Bytes::new(),
        });
        s.write_all(&nop.encode(DigestConfig::NONE).to_bytes())
            .await
            .unwrap();
        // The login task gives up; no connection is handed out.
        assert!(t.accept().await.is_err());
    }
}
