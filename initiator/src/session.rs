//! Normal sessions in full-feature phase (RFC 7143 §4, §11): the SCSI
//! client, with several connections per session (MC/S), a session-wide
//! CmdSN window, R2T/Data-Out, Data-In reassembly, NOP keepalive, async
//! messages, task management, logout, and session recovery.
//!
//! Shape: all protocol state lives in one [`State`] behind a mutex that is
//! never held across an `.await`. Per connection, one reader task decodes
//! PDUs and feeds them to `State`, one writer task drains a channel of PDUs
//! and writes them vectored. One ticker task per session handles NOP-Out
//! pings, NOP timeouts and command timeouts. Commands wait in a queue until
//! the CmdSN window (RFC 7143 §4.2.2.1) and a connection allow issuing them.
//!
//! Recovery (RFC 7143 §7.1, §6.3.5, ErrorRecoveryLevel=0): any connection
//! failure fails the whole session. A recovery task reconnects with
//! exponential backoff and logs in with the same ISID and TSIH 0, which the
//! target treats as session reinstatement (§6.3.5); every command that had
//! no response is re-issued on the new session, in its original order.
//! Callers see a delay, not an error, unless recovery takes longer than
//! [`SessionConfig::recovery_timeout`]. A write is only acknowledged after
//! its SCSI Response with GOOD status, so no acknowledged write is lost.
//!
//! Checks on what the target sends (never a panic, never an allocation sized
//! by the target): Data-In within the caller's expected length, DataSN and
//! R2TSN in sequence, S bit only with F, Data-In/R2T/response on the
//! command's connection, no holes in the reassembled data, R2T within
//! MaxBurstLength. A sequence error (RFC 7143 §7.9) or an undecodable PDU
//! fails the connection and so, at ERL 0, triggers session recovery (the
//! command is re-issued); a Data-In beyond the buffer or a bad R2T fails
//! only that command. Async event 4 (renegotiation) is honoured with the
//! Logout alternative the RFC allows, like event 1.
//!
//! Deliberately not done: ErrorRecoveryLevel 1/2 (SNACK, task reassignment),
//! bidirectional commands, CDBs longer than 16 bytes (AHS), answering event 4
//! with a Text Request (we log out and reinstate instead).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::pdu::{
    AsyncEvent, AsyncMessage, DataIn, DataOut, LogoutReason, LogoutRequest, LogoutResponse,
    LogoutResponseCode, NopIn, NopOut, Pdu, R2t, Reject, ScsiCommand, ScsiResponse, TaskAttr,
    TaskMgmtRequest, TaskMgmtResponse, TmfFunction, TmfResponse,
};
use proto::scsi::sense::{Asc, Sense, SenseKey};
use proto::scsi::Status;
use proto::serial::SerialNumber;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::task::AbortHandle;

use crate::connection::{self, Established, LoginSpec, Negotiated};
use crate::error::{Error, Result, ScsiError};
use crate::portal::Portal;

/// The reserved tag value (RFC 7143 §11.2.1.8 / §11.18.1).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// CHAP credentials for a login.
#[derive(Clone, Default)]
pub struct ChapConfig {
    /// Our name and the secret the target checks (CHAP_N / CHAP_R).
    pub user: String,
    pub secret: Vec<u8>,
    /// Mutual CHAP: the target's name and secret that we check.
    pub mutual: Option<(String, Vec<u8>)>,
    /// Algorithm preference (CHAP_A values), strongest first; empty = the
    /// `chap` crate's interoperable default.
    pub algorithms: Vec<u8>,
}

impl std::fmt::Debug for ChapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("ChapConfig")
            .field("user", &self.user)
            .field("mutual", &self.mutual.as_ref().map(|m| &m.0))
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

/// Operational parameters we offer (RFC 7143 §13); the negotiated result is
/// what the target agrees to.
#[derive(Debug, Clone)]
pub struct Offer {
    /// HeaderDigest=CRC32C (else None).
    pub header_digest: bool,
    /// DataDigest=CRC32C (else None).
    pub data_digest: bool,
    /// ImmediateData (RFC default Yes).
    pub immediate_data: bool,
    /// InitialR2T (RFC default Yes; we offer No).
    pub initial_r2t: bool,
    /// FirstBurstLength.
    pub first_burst_length: u32,
    /// MaxBurstLength.
    pub max_burst_length: u32,
    /// MaxRecvDataSegmentLength we declare (what we accept per PDU).
    pub max_recv_data_segment_length: u32,
}

impl Default for Offer {
    fn default() -> Self {
        Offer {
            header_digest: false,
            data_digest: false,
            immediate_data: true,
            initial_r2t: false,
            first_burst_length: 256 * 1024,
            max_burst_length: 1024 * 1024,
            max_recv_data_segment_length: 256 * 1024,
        }
    }
}

/// Everything needed to open (and re-open) a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub portal: Portal,
    pub target_name: String,
    pub initiator_name: String,
    pub chap: Option<ChapConfig>,
    /// Connections to open (MC/S); capped by the negotiated MaxConnections.
    pub connections: u16,
    pub offer: Offer,
    /// ISID; `None` picks a random one (RFC 7143 §11.12.5, type 0x80).
    pub isid: Option<[u8; 6]>,
    /// Bound on TCP connect.
    pub connect_timeout: Duration,
    /// Bound on each Login Response.
    pub login_timeout: Duration,
    /// Idle time before a NOP-Out ping.
    pub nop_interval: Duration,
    /// A ping unanswered for this long fails the connection.
    pub nop_timeout: Duration,
    /// A command without response for this long is aborted (ABORT TASK).
    pub command_timeout: Duration,
    /// How long to keep trying to recover a failed session before failing
    /// the commands that wait; zero disables recovery.
    pub recovery_timeout: Duration,
}

impl SessionConfig {
    pub fn new(
        portal: Portal,
        target_name: impl Into<String>,
        initiator_name: impl Into<String>,
    ) -> Self {
        SessionConfig {
            portal,
            target_name: target_name.into(),
            initiator_name: initiator_name.into(),
            chap: None,
            connections: 1,
            offer: Offer::default(),
            isid: None,
            connect_timeout: Duration::from_secs(5),
            login_timeout: Duration::from_secs(10),
            nop_interval: Duration::from_secs(5),
            nop_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            recovery_timeout: Duration::from_secs(60),
        }
    }
}

/// Direction and size of a command's data transfer.
#[derive(Debug, Clone)]
pub enum DataDirection {
    None,
    /// Expect up to this many bytes of Data-In.
    Read(u32),
    /// Send these bytes as Data-Out.
    Write(Bytes),
}

/// A command's outcome as the target reported it (any status).
#[derive(Debug, Clone)]
pub struct RawResult {
    /// SCSI status byte.
    pub status: u8,
    /// Parsed sense data, when present and parseable.
    pub sense: Option<Sense>,
    /// Raw sense bytes (without SenseLength), empty when none.
    pub raw_sense: Bytes,
    /// Data-In received, reassembled by buffer offset.
    pub data: Bytes,
    /// Residual count with the U bit (underflow: fewer bytes than expected).
    pub underflow: Option<u32>,
    /// Residual count with the O bit (the target had more to send/receive).
    pub overflow: Option<u32>,
}

impl RawResult {
    /// `Ok(self)` when GOOD (or CONDITION MET), else the typed SCSI error.
    pub fn into_result(self) -> Result<RawResult> {
        if self.status == Status::GOOD.0 || self.status == Status::CONDITION_MET.0 {
            Ok(self)
        } else {
            Err(Error::Scsi(ScsiError {
                status: self.status,
                sense: self.sense,
                raw_sense: self.raw_sense,
            }))
        }
    }
}

/// Things the session tells its users about.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// The session failed and recovery started.
    Recovering(String),
    /// Recovery succeeded (new TSIH).
    Recovered { tsih: u16 },
    /// Recovery gave up; waiting commands failed.
    Failed(String),
    /// REPORTED LUNS DATA HAS CHANGED (async event or unit attention).
    LunsChanged,
    /// Another SCSI asynchronous event or unit attention.
    UnitAttention { lun: u64, sense: Sense },
    /// The target asked us to log out (Async Message event 1).
    LogoutRequested,
}

/// Per-connection counters (cumulative over reconnections of that CID).
#[derive(Debug, Default)]
struct Counters {
    commands: AtomicU64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    pdus_out: AtomicU64,
    pdus_in: AtomicU64,
}

/// Snapshot of one connection's counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionStats {
    pub cid: u16,
    pub connected: bool,
    /// SCSI commands issued on this connection.
    pub commands: u64,
    pub in_flight: usize,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub pdus_out: u64,
    pub pdus_in: u64,
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Full-feature phase, commands flow.
    Up,
    /// Reconnecting; commands queue.
    Recovering,
    /// Waiting for in-flight commands before a target-requested logout.
    Draining,
    /// Recovery gave up.
    Failed(String),
    /// Logging out: connection failures are expected, not recovered.
    Closing,
    /// Logged out / shut down.
    Closed,
}

struct Pending {
    lun: u64,
    cdb: Bytes,
    dir: DataDirection,
    reply: oneshot::Sender<Result<RawResult>>,
    /// Submission order, to re-issue in the original order after recovery.
    seq: u64,
}

struct Issued {
    p: Pending,
    cmd_sn: u32,
    conn: usize,
    data_in: Option<Vec<u8>>,
    extent: usize,
    /// Data-In bytes received so far (to detect holes at status time).
    received: usize,
    /// The DataSN the next Data-In must carry (RFC 7143 §11.7.5).
    next_data_sn: u32,
    /// The R2TSN the next R2T must carry (RFC 7143 §11.8.4).
    next_r2t_sn: u32,
    deadline: Instant,
    aborting: bool,
}

enum Control {
    Ping { conn: usize, sent: Instant },
    Tmf(oneshot::Sender<TaskMgmtResponse>),
    Logout(oneshot::Sender<LogoutResponse>),
}

struct Conn {
    cid: u16,
    tx: mpsc::UnboundedSender<Pdu>,
    exp_stat_sn: Arc<AtomicU32>,
    /// The target's MaxRecvDataSegmentLength: our Data-Out PDU size limit.
    max_send_dsl: u32,
    in_flight: usize,
    last_rx: Instant,
    ping_outstanding: bool,
}

struct State {
    phase: Phase,
    epoch: u64,
    isid: [u8; 6],
    tsih: u16,
    neg: Negotiated,
    cmd_sn: u32,
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    next_itt: u32,
    next_seq: u64,
    queue: VecDeque<Pending>,
    tasks: HashMap<u32, Issued>,
    control: HashMap<u32, Control>,
    conns: Vec<Conn>,
    rr: usize,
    /// Since when queued commands wait for the target to open the CmdSN
    /// window (MaxCmdSN); bounded by the command timeout.
    window_closed_since: Option<Instant>,
    drivers: Vec<AbortHandle>,
    recovery: Option<AbortHandle>,
}

struct Inner {
    cfg: SessionConfig,
    st: Mutex<State>,
    idle: Notify,
    events: broadcast::Sender<SessionEvent>,
    counters: Vec<Arc<Counters>>,
    ticker: Mutex<Option<AbortHandle>>,
    pool: Arc<BufPool>,
}

/// A logged-in normal session. Cheap to clone; dropping the last clone
/// tears the connections down (use [`Session::logout`] for a clean end).
#[derive(Clone)]
pub struct Session {
    handle: Arc<Handle>,
}

struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.shutdown(Error::Closed);
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock is a bug; keep going with the data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn sn(v: u32) -> SerialNumber {
    SerialNumber(v)
}

impl Session {
    /// Connect, log in (leading connection, then the others for MC/S) and
    /// start the drivers.
    pub async fn connect(cfg: SessionConfig) -> Result<Session> {
        if cfg.connections == 0 {
            return Err(Error::Usage("at least one connection is needed".into()));
        }
        let isid = cfg.isid.unwrap_or_else(random_isid);
        let initial_cmd_sn: u32 = rand::random::<u32>() & 0x7fff_ffff;
        let (established, neg) = establish(&cfg, isid, initial_cmd_sn).await?;
        let counters = (0..cfg.connections.max(1))
            .map(|_| Arc::new(Counters::default()))
            .collect();
        let (events, _) = broadcast::channel(64);
        let inner = Arc::new(Inner {
            cfg,
            st: Mutex::new(State {
                phase: Phase::Recovering,
                epoch: 0,
                isid,
                tsih: 0,
                neg: neg.clone(),
                cmd_sn: initial_cmd_sn,
                exp_cmd_sn: initial_cmd_sn,
                max_cmd_sn: initial_cmd_sn,
                next_itt: 1,
                next_seq: 0,
                queue: VecDeque::new(),
                tasks: HashMap::new(),
                control: HashMap::new(),
                conns: Vec::new(),
                rr: 0,
                window_closed_since: None,
                drivers: Vec::new(),
                recovery: None,
            }),
            idle: Notify::new(),
            events,
            counters,
            ticker: Mutex::new(None),
            pool: Arc::default(),
        });
        inner.install(established, neg);
        let t = tokio::spawn(ticker(Arc::downgrade(&inner)));
        *inner.ticker.lock().unwrap_or_else(|e| e.into_inner()) = Some(t.abort_handle());
        Ok(Session {
            handle: Arc::new(Handle { inner }),
        })
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// Subscribe to session events (recovery, LUN changes, ...).
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner().events.subscribe()
    }

    /// The configuration the session was opened with.
    pub fn config(&self) -> &SessionConfig {
        &self.inner().cfg
    }

    /// Current TSIH.
    pub fn tsih(&self) -> u16 {
        lock(&self.inner().st).tsih
    }

    /// The ISID (kept across recovery).
    pub fn isid(&self) -> [u8; 6] {
        lock(&self.inner().st).isid
    }

    /// Negotiated parameters of the current incarnation.
    pub fn negotiated(&self) -> Negotiated {
        lock(&self.inner().st).neg.clone()
    }

    /// Per-connection counters.
    pub fn stats(&self) -> Vec<ConnectionStats> {
        let st = lock(&self.inner().st);
        self.inner()
            .counters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let conn = st.conns.get(i);
                ConnectionStats {
                    cid: i as u16,
                    connected: conn.is_some() && st.phase == Phase::Up,
                    commands: c.commands.load(Ordering::Relaxed),
                    in_flight: conn.map(|c| c.in_flight).unwrap_or(0),
                    bytes_out: c.bytes_out.load(Ordering::Relaxed),
                    bytes_in: c.bytes_in.load(Ordering::Relaxed),
                    pdus_out: c.pdus_out.load(Ordering::Relaxed),
                    pdus_in: c.pdus_in.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Number of connections currently logged in.
    pub fn connection_count(&self) -> usize {
        lock(&self.inner().st).conns.len()
    }

    /// Issue one SCSI command and wait for its outcome, whatever the status.
    /// Transport failures are recovered transparently (within the recovery
    /// timeout); the error cases are iSCSI-level failures.
    pub async fn execute_raw(&self, lun: u64, cdb: &[u8], dir: DataDirection) -> Result<RawResult> {
        if cdb.is_empty() || cdb.len() > 16 {
            return Err(Error::Usage(format!(
                "CDB length {} not supported (1..=16 bytes)",
                cdb.len()
            )));
        }
        let (tx, rx) = oneshot::channel();
        {
            let inner = self.inner();
            let mut st = lock(&inner.st);
            match &st.phase {
                Phase::Closed => return Err(Error::Closed),
                Phase::Failed(why) => return Err(Error::SessionFailed(why.clone())),
                _ => {}
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            st.queue.push_back(Pending {
                lun,
                cdb: Bytes::copy_from_slice(cdb),
                dir,
                reply: tx,
                seq,
            });
            inner.pump(&mut st);
        }
        rx.await.unwrap_or(Err(Error::Closed))
    }

    /// [`Session::execute_raw`], retrying UNIT ATTENTION (reported once per
    /// I_T nexus after e.g. session reinstatement) and turning any other
    /// non-GOOD status into [`Error::Scsi`].
    pub async fn execute(&self, lun: u64, cdb: &[u8], dir: DataDirection) -> Result<RawResult> {
        let mut attempts = 0;
        loop {
            let r = self.execute_raw(lun, cdb, dir.clone()).await?;
            let ua = r.status == Status::CHECK_CONDITION.0
                && r.sense
                    .as_ref()
                    .map(|s| s.key == SenseKey::UNIT_ATTENTION)
                    .unwrap_or(false);
            if ua && attempts < 5 {
                attempts += 1;
                if let Some(s) = &r.sense {
                    self.inner().note_unit_attention(lun, s.clone());
                }
                continue;
            }
            return r.into_result();
        }
    }

    /// ABORT TASK for a command (by ITT), on the connection it was issued on.
    pub async fn abort_task(&self, itt: u32) -> Result<TmfResponse> {
        let r = self
            .inner()
            .clone()
            .task_management(TmfFunction::ABORT_TASK, None, Some(itt))
            .await?;
        Ok(r.0.response)
    }

    /// LOGICAL UNIT RESET. On success, the commands to that LUN issued
    /// before the reset are terminated with [`Error::TaskManagement`]: the
    /// target aborted them and sends no status for them (SAM-5 LOGICAL
    /// UNIT RESET, RFC 7143 §11.5.1).
    pub async fn lun_reset(&self, lun: u64) -> Result<()> {
        let inner = self.inner();
        let (r, sent_cmd_sn) = inner
            .clone()
            .task_management(TmfFunction::LOGICAL_UNIT_RESET, Some(lun), None)
            .await?;
        if r.response == TmfResponse::FUNCTION_COMPLETE {
            let mut st = lock(&inner.st);
            let victims: Vec<u32> = st
                .tasks
                .iter()
                .filter(|(_, t)| t.p.lun == lun && sn(t.cmd_sn).lt(sn(sent_cmd_sn)))
                .map(|(&itt, _)| itt)
                .collect();
            for itt in victims {
                inner.finish(
                    &mut st,
                    itt,
                    Err(Error::TaskManagement(
                        "command aborted by LOGICAL UNIT RESET".into(),
                    )),
                );
            }
            Ok(())
        } else {
            Err(Error::TaskManagement(format!(
                "LOGICAL UNIT RESET: {:?}",
                r.response
            )))
        }
    }

    /// Wait for in-flight commands (bounded by the command timeout), then
    /// log out with reason "close the session" (RFC 7143 §11.14) and close.
    pub async fn logout(self) -> Result<()> {
        let inner = self.inner().clone();
        let deadline = tokio::time::Instant::now() + inner.cfg.command_timeout;
        loop {
            let notified = inner.idle.notified();
            {
                let st = lock(&inner.st);
                if st.tasks.is_empty() && st.queue.is_empty() {
                    break;
                }
                if st.phase != Phase::Up
                    && st.phase != Phase::Recovering
                    && st.phase != Phase::Draining
                {
                    break;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let up = {
            let mut st = lock(&inner.st);
            let up = matches!(st.phase, Phase::Up | Phase::Draining);
            if up {
                // With MC/S the target closes every connection of the
                // session; those EOFs must not start a recovery.
                st.phase = Phase::Closing;
            }
            up
        };
        let res = if up {
            inner
                .send_logout(LogoutReason::CLOSE_SESSION)
                .await
                .map(|_| ())
        } else {
            Ok(())
        };
        inner.shutdown(Error::Closed);
        res
    }
}

fn random_isid() -> [u8; 6] {
    // RFC 7143 §11.12.5: type 0x80 ("Random"): T=10b, 22 bits of A/B random,
    // then a 16-bit qualifier. We randomize all of them.
    let r: [u8; 6] = rand::random();
    [0x80 | (r[0] & 0x3f), r[1], r[2], r[3], r[4], r[5]]
}

/// Log in the leading connection and then as many more as requested and
/// allowed (MC/S), all in one session.
async fn establish(
    cfg: &SessionConfig,
    isid: [u8; 6],
    cmd_sn: u32,
) -> Result<(Vec<Established>, Negotiated)> {
    let spec = |cid: u16, tsih: u16, cmd_sn: u32| LoginSpec {
        portal: cfg.portal.clone(),
        initiator_name: cfg.initiator_name.clone(),
        target_name: Some(cfg.target_name.clone()),
        isid,
        tsih,
        cid,
        cmd_sn,
        chap: cfg.chap.clone(),
        offer: cfg.offer.clone(),
        max_connections: cfg.connections,
        connect_timeout: cfg.connect_timeout,
        login_timeout: cfg.login_timeout,
    };
    let lead = connection::login(&spec(0, 0, cmd_sn)).await?;
    let neg = lead.negotiated.clone();
    let tsih = lead.tsih;
    let want = cfg.connections.min(neg.max_connections.max(1));
    if want < cfg.connections {
        tracing::warn!(
            requested = cfg.connections,
            allowed = neg.max_connections,
            "target limits MaxConnections"
        );
    }
    let mut all = vec![lead];
    for cid in 1..want {
        // Login Requests carry the current CmdSN without advancing it.
        let c = connection::login(&spec(cid, tsih, cmd_sn)).await?;
        all.push(c);
    }
    Ok((all, neg))
}

impl Inner {
    fn emit(&self, e: SessionEvent) {
        let _ = self.events.send(e);
    }

    fn note_unit_attention(&self, lun: u64, sense: Sense) {
        if sense.asc == Asc::REPORTED_LUNS_DATA_HAS_CHANGED {
            self.emit(SessionEvent::LunsChanged);
        } else {
            self.emit(SessionEvent::UnitAttention { lun, sense });
        }
    }

    /// Take freshly logged-in connections into use (initial login or
    /// recovery) and start their drivers.
    fn install(self: &Arc<Self>, established: Vec<Established>, neg: Negotiated) {
        let mut st = lock(&self.st);
        st.epoch += 1;
        let epoch = st.epoch;
        for h in st.drivers.drain(..) {
            h.abort();
        }
        st.conns.clear();
        st.neg = neg;
        let mut last_exp = st.cmd_sn;
        let mut last_max = st.cmd_sn;
        for (idx, e) in established.into_iter().enumerate() {
            st.tsih = e.tsih;
            last_exp = e.exp_cmd_sn;
            last_max = e.max_cmd_sn;
            let (tx, rx) = mpsc::unbounded_channel();
            let exp_stat_sn = Arc::new(AtomicU32::new(e.exp_stat_sn));
            let counters = self.counters.get(idx).cloned().unwrap_or_default();
            let max_send_dsl = e.max_send_dsl.max(512);
            let (reader, writer) = (e.reader, e.writer);
            let w = tokio::spawn(writer_task(
                Arc::downgrade(self),
                epoch,
                writer,
                rx,
                exp_stat_sn.clone(),
                counters.clone(),
            ));
            let r = tokio::spawn(reader_task(
                Arc::downgrade(self),
                epoch,
                idx,
                reader,
                counters,
            ));
            st.drivers.push(w.abort_handle());
            st.drivers.push(r.abort_handle());
            st.conns.push(Conn {
                cid: e.cid,
                tx,
                exp_stat_sn,
                max_send_dsl,
                in_flight: 0,
                last_rx: Instant::now(),
                ping_outstanding: false,
            });
        }
        st.exp_cmd_sn = last_exp;
        st.max_cmd_sn = last_max;
        // The session's next CmdSN is what the target expects.
        st.cmd_sn = last_exp;
        st.phase = Phase::Up;
        tracing::info!(
            tsih = st.tsih,
            conns = st.conns.len(),
            "session in full-feature phase"
        );
        self.pump(&mut st);
    }

    /// Issue queued commands while the window and a connection allow.
    fn pump(&self, st: &mut State) {
        // RFC 7143 §4.2.2.1: "the initiator MUST NOT send a non-immediate
        // command with CmdSN > MaxCmdSN" (serial arithmetic, RFC 1982).
        let window_open = |st: &State| sn(st.cmd_sn).le(sn(st.max_cmd_sn));
        while st.phase == Phase::Up && !st.queue.is_empty() && window_open(st) {
            let Some(ci) = pick_conn(st) else { break };
            let Some(p) = st.queue.pop_front() else { break };
            let itt = alloc_itt(st);
            let cmd_sn = st.cmd_sn;
            st.cmd_sn = st.cmd_sn.wrapping_add(1);
            let neg = st.neg.clone();
            let conn = &mut st.conns[ci];
            let mut pdus = Vec::new();
            let (read, write, edtl, immediate, unsolicited_end) = match &p.dir {
                DataDirection::None => (false, false, 0u32, Bytes::new(), 0usize),
                DataDirection::Read(n) => (true, false, *n, Bytes::new(), 0),
                DataDirection::Write(d) => {
                    let len = d.len();
                    let first_burst = neg.first_burst_length as usize;
                    // RFC 7143 §13.11/§13.12: immediate data up to
                    // FirstBurstLength and the target's MaxRecvDataSegmentLength.
                    let imm = if neg.immediate_data {
                        len.min(first_burst).min(conn.max_send_dsl as usize)
                    } else {
                        0
                    };
                    // RFC 7143 §13.10: InitialR2T=No allows unsolicited
                    // Data-Out up to FirstBurstLength (immediate data included).
                    let unsol = if neg.initial_r2t {
                        imm
                    } else {
                        len.min(first_burst).max(imm)
                    };
                    (false, true, len as u32, d.slice(..imm), unsol)
                }
            };
            let imm_len = immediate.len();
            let follows = unsolicited_end > imm_len;
            pdus.push(Pdu::ScsiCommand(ScsiCommand {
                immediate: false,
                // RFC 7143 §11.3.1: F=1 when no unsolicited Data-Out follows.
                final_: !follows,
                read,
                write,
                attr: TaskAttr::SIMPLE,
                lun: p.lun,
                itt,
                expected_data_transfer_length: edtl,
                cmd_sn,
                exp_stat_sn: 0, // stamped by the writer
                cdb: p.cdb.clone(),
                bidi_read_length: None,
                data: immediate,
            }));
            if follows {
                if let DataDirection::Write(d) = &p.dir {
                    data_out_pdus(
                        &mut pdus,
                        d,
                        p.lun,
                        itt,
                        RESERVED_TAG,
                        imm_len,
                        unsolicited_end,
                        conn.max_send_dsl,
                    );
                }
            }
            conn.in_flight += 1;
            let _ = self
                .counters
                .get(ci)
                .map(|c| c.commands.fetch_add(1, Ordering::Relaxed));
            for pdu in pdus {
                let _ = conn.tx.send(pdu);
            }
            tracing::trace!(itt, cmd_sn, conn = ci, "issued");
            st.tasks.insert(
                itt,
                Issued {
                    p,
                    cmd_sn,
                    conn: ci,
                    data_in: None,
                    extent: 0,
                    received: 0,
                    next_data_sn: 0,
                    next_r2t_sn: 0,
                    deadline: Instant::now() + self.cfg.command_timeout,
                    aborting: false,
                },
            );
        }
        if st.phase == Phase::Up && !st.queue.is_empty() && !window_open(st) {
            st.window_closed_since.get_or_insert_with(Instant::now);
        } else {
            st.window_closed_since = None;
        }
    }

    /// RFC 7143 §4.2.2.1: update ExpCmdSN/MaxCmdSN from a response, ignoring
    /// values that would shrink them, and a MaxCmdSN < ExpCmdSN - 1.
    fn update_window(&self, st: &mut State, exp: u32, max: u32) {
        if sn(max).lt(sn(exp.wrapping_sub(1))) {
            return;
        }
        if sn(exp).gt(sn(st.exp_cmd_sn)) {
            st.exp_cmd_sn = exp;
        }
        if sn(max).gt(sn(st.max_cmd_sn)) {
            st.max_cmd_sn = max;
        }
        self.pump(st);
    }

    fn update_stat_sn(st: &State, ci: usize, stat_sn: u32) {
        if let Some(c) = st.conns.get(ci) {
            let next = stat_sn.wrapping_add(1);
            let cur = c.exp_stat_sn.load(Ordering::Relaxed);
            if sn(next).gt(sn(cur)) {
                c.exp_stat_sn.store(next, Ordering::Relaxed);
            }
        }
    }

    fn finish(&self, st: &mut State, itt: u32, res: Result<RawResult>) {
        if let Some(t) = st.tasks.remove(&itt) {
            if let Some(c) = st.conns.get_mut(t.conn) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
            let _ = t.p.reply.send(res);
        }
        // Waiters (logout, drain before a target-requested logout) check
        // their own condition; queued commands do not keep them asleep.
        if st.tasks.is_empty() {
            self.idle.notify_waiters();
        }
    }

    fn handle_pdu(self: &Arc<Self>, epoch: u64, ci: usize, pdu: Pdu) -> Result<()> {
        let mut st = lock(&self.st);
        if st.epoch != epoch {
            return Ok(());
        }
        if let Some(c) = st.conns.get_mut(ci) {
            c.last_rx = Instant::now();
        }
        match pdu {
            Pdu::ScsiResponse(r) => self.on_scsi_response(&mut st, ci, r),
            Pdu::DataIn(d) => self.on_data_in(&mut st, ci, d),
            Pdu::R2t(r) => self.on_r2t(&mut st, ci, r),
            Pdu::NopIn(n) => self.on_nop_in(&mut st, ci, n),
            Pdu::TaskMgmtResponse(r) => {
                Self::update_stat_sn(&st, ci, r.stat_sn);
                self.update_window(&mut st, r.exp_cmd_sn, r.max_cmd_sn);
                if let Some(Control::Tmf(tx)) = st.control.remove(&r.itt) {
                    let _ = tx.send(r);
                }
                Ok(())
            }
            Pdu::LogoutResponse(r) => {
                Self::update_stat_sn(&st, ci, r.stat_sn);
                self.update_window(&mut st, r.exp_cmd_sn, r.max_cmd_sn);
                if let Some(Control::Logout(tx)) = st.control.remove(&r.itt) {
                    let _ = tx.send(r);
                }
                Ok(())
            }
            Pdu::AsyncMessage(m) => {
                drop(st);
                self.on_async(epoch, ci, m);
                Ok(())
            }
            Pdu::Reject(r) => self.on_reject(&mut st, ci, r),
            Pdu::TextResponse(t) => {
                Self::update_stat_sn(&st, ci, t.stat_sn);
                self.update_window(&mut st, t.exp_cmd_sn, t.max_cmd_sn);
                Ok(())
            }
            other => Err(Error::Protocol(format!(
                "unexpected PDU from target: {}",
                pdu_name(&other)
            ))),
        }
    }

    fn on_scsi_response(&self, st: &mut State, ci: usize, r: ScsiResponse) -> Result<()> {
        Self::update_stat_sn(st, ci, r.stat_sn);
        if let Some(t) = st.tasks.get(&r.itt) {
            if t.conn != ci {
                return Err(Error::Protocol(format!(
                    "SCSI Response for ITT {:#x} on connection {ci}, command was issued on {}",
                    r.itt, t.conn
                )));
            }
            // RFC 7143 §7.9: "a SCSI Response PDU with an ExpDataSN that
            // implies missing Data-In PDUs" is a sequence error (session
            // recovery at ErrorRecoveryLevel 0). ExpDataSN 0 means none sent.
            if r.response == 0
                && r.exp_data_sn != 0
                && sn(r.exp_data_sn).gt(sn(t.next_data_sn))
                && matches!(t.p.dir, DataDirection::Read(_))
            {
                return Err(Error::Protocol(format!(
                    "SCSI Response for ITT {:#x} says {} Data-In PDUs were sent, {} arrived",
                    r.itt, r.exp_data_sn, t.next_data_sn
                )));
            }
        }
        let res = match st.tasks.get_mut(&r.itt) {
            None => None,
            Some(t) => {
                if r.response != 0 {
                    Some(Err(Error::Rejected(format!(
                        "target failure (iSCSI response {:#04x})",
                        r.response
                    ))))
                } else {
                    let raw_sense = r.sense().unwrap_or_default();
                    let sense = if raw_sense.is_empty() {
                        None
                    } else {
                        Sense::parse(&raw_sense).ok()
                    };
                    if t.received != t.extent {
                        return Err(Error::Protocol(format!(
                            "Data-In for ITT {:#x} covered {} bytes of a {}-byte extent",
                            r.itt, t.received, t.extent
                        )));
                    }
                    let data = take_data(t, &self.pool);
                    Some(Ok(RawResult {
                        status: r.status,
                        sense,
                        raw_sense,
                        data,
                        underflow: r.underflow.then_some(r.residual_count),
                        overflow: r.overflow.then_some(r.residual_count),
                    }))
                }
            }
        };
        if let Some(res) = res {
            self.finish(st, r.itt, res);
        }
        self.update_window(st, r.exp_cmd_sn, r.max_cmd_sn);
        Ok(())
    }

    fn on_data_in(&self, st: &mut State, ci: usize, d: DataIn) -> Result<()> {
        if d.status.is_some() && !d.final_ {
            // RFC 7143 §11.7.2: "If the S bit is set to 1, the F bit MUST
            // also be set to 1."
            return Err(Error::Protocol(format!(
                "Data-In for ITT {:#x} has the S bit without the F bit",
                d.itt
            )));
        }
        if d.status.is_some() {
            // Only a Data-In with status consumes a StatSN (§11.7.3).
            Self::update_stat_sn(st, ci, d.stat_sn);
        }
        let Some(t) = st.tasks.get_mut(&d.itt) else {
            // A late Data-In for an aborted/finished task: drop it.
            self.update_window(st, d.exp_cmd_sn, d.max_cmd_sn);
            return Ok(());
        };
        if t.conn != ci {
            // Connection allegiance (RFC 7143 §3.2.4.2 ff.): without task
            // reassignment a command's Data-In comes on the connection it
            // was issued on.
            return Err(Error::Protocol(format!(
                "Data-In for ITT {:#x} on connection {ci}, command was issued on {}",
                d.itt, t.conn
            )));
        }
        if d.data_sn != t.next_data_sn {
            // RFC 7143 §7.9: a DataSN gap is a sequence error; without SNACK
            // (ErrorRecoveryLevel 0) the recovery is session recovery, which
            // re-issues the command.
            return Err(Error::Protocol(format!(
                "Data-In for ITT {:#x} has DataSN {}, expected {}",
                d.itt, d.data_sn, t.next_data_sn
            )));
        }
        t.next_data_sn = t.next_data_sn.wrapping_add(1);
        let expected = match &t.p.dir {
            DataDirection::Read(n) => *n as usize,
            _ => 0,
        };
        let off = d.buffer_offset as usize;
        let end = off.saturating_add(d.data.len());
        if end > expected {
            // RFC 7143 §11.7.4: data beyond the expected length is a target
            // error. The buffer is sized by the caller, never by the target.
            let itt = d.itt;
            self.finish(
                st,
                itt,
                Err(Error::Protocol(format!(
                    "Data-In offset {off}+{} beyond expected {expected}",
                    d.data.len()
                ))),
            );
            self.update_window(st, d.exp_cmd_sn, d.max_cmd_sn);
            return Ok(());
        }
        if !d.data.is_empty() {
            // The buffer is sized by the caller's expected length (checked
            // above), never by the target.
            let buf = t.data_in.get_or_insert_with(|| self.pool.take(expected));
            if off == buf.len() {
                // In order (DataPDUInOrder=Yes): append, no zero-fill.
                buf.extend_from_slice(&d.data);
            } else {
                if end > buf.len() {
                    buf.resize(end, 0);
                }
                buf[off..end].copy_from_slice(&d.data);
            }
            t.extent = t.extent.max(end);
            t.received += d.data.len();
        }
        if let Some(status_byte) = d.status {
            // RFC 7143 §11.7.3: status in the final Data-In; no sense data.
            let itt = d.itt;
            let res = if t.received != t.extent {
                // With DataPDUInOrder/DataSequenceInOrder the target sends
                // contiguous data; a hole or an overlap means lost data.
                Err(Error::Protocol(format!(
                    "Data-In for ITT {itt:#x} covered {} bytes of a {}-byte extent",
                    t.received, t.extent
                )))
            } else {
                Ok(RawResult {
                    status: status_byte,
                    sense: None,
                    raw_sense: Bytes::new(),
                    data: take_data(t, &self.pool),
                    underflow: d.underflow.then_some(d.residual_count),
                    overflow: d.overflow.then_some(d.residual_count),
                })
            };
            self.finish(st, itt, res);
        }
        self.update_window(st, d.exp_cmd_sn, d.max_cmd_sn);
        Ok(())
    }

    fn on_r2t(&self, st: &mut State, ci: usize, r: R2t) -> Result<()> {
        // RFC 7143 §11.8: R2T carries StatSN (not advanced) and the window.
        let max_burst = st.neg.max_burst_length as usize;
        let Some(t) = st.tasks.get_mut(&r.itt) else {
            // An R2T for a finished/aborted task: nothing to send.
            self.update_window(st, r.exp_cmd_sn, r.max_cmd_sn);
            return Ok(());
        };
        if t.conn != ci {
            return Err(Error::Protocol(format!(
                "R2T for ITT {:#x} on connection {ci}, command was issued on {}",
                r.itt, t.conn
            )));
        }
        if r.r2t_sn != t.next_r2t_sn {
            // RFC 7143 §7.9: an out-of-order R2TSN is a sequence error.
            return Err(Error::Protocol(format!(
                "R2T for ITT {:#x} has R2TSN {}, expected {}",
                r.itt, r.r2t_sn, t.next_r2t_sn
            )));
        }
        t.next_r2t_sn = t.next_r2t_sn.wrapping_add(1);
        let off = r.buffer_offset as usize;
        let len = r.desired_data_transfer_length as usize;
        let end = off.saturating_add(len);
        let bad = match &t.p.dir {
            DataDirection::Write(d) if end > d.len() || len == 0 => Some(format!(
                "R2T for {off}..{end} beyond the {} bytes of the command",
                d.len()
            )),
            // RFC 7143 §11.8.3: "The target MUST NOT request more than
            // MaxBurstLength bytes of data in one R2T."
            DataDirection::Write(_) if len > max_burst => Some(format!(
                "R2T asks for {len} bytes, more than MaxBurstLength {max_burst}"
            )),
            // RFC 7143 §11.8.2: the TTT of an R2T is never the reserved value.
            DataDirection::Write(_) if r.ttt == RESERVED_TAG => {
                Some("R2T with the reserved Target Transfer Tag".into())
            }
            DataDirection::Write(d) => {
                if let Some(conn) = st.conns.get(ci) {
                    // RFC 7143 §11.7.4: Data-Out PDUs of one R2T each carry
                    // at most the target's MaxRecvDataSegmentLength; DataSN
                    // restarts at 0 per R2T.
                    let mut pdus = Vec::new();
                    data_out_pdus(
                        &mut pdus,
                        d,
                        t.p.lun,
                        r.itt,
                        r.ttt,
                        off,
                        end,
                        conn.max_send_dsl,
                    );
                    for p in pdus {
                        let _ = conn.tx.send(p);
                    }
                }
                None
            }
            _ => Some("R2T for a command that has no Data-Out".into()),
        };
        if let Some(why) = bad {
            self.finish(st, r.itt, Err(Error::Protocol(why)));
        }
        self.update_window(st, r.exp_cmd_sn, r.max_cmd_sn);
        Ok(())
    }

    fn on_nop_in(&self, st: &mut State, ci: usize, n: NopIn) -> Result<()> {
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
                        cmd_sn: st.cmd_sn,
                        exp_stat_sn: 0,
                        data,
                    }));
                }
            }
        } else {
            // Answer to our ping. RFC 7143 §11.19.2: StatSN is advanced.
            Self::update_stat_sn(st, ci, n.stat_sn);
            if let Some(Control::Ping { conn, .. }) = st.control.remove(&n.itt) {
                if let Some(c) = st.conns.get_mut(conn) {
                    c.ping_outstanding = false;
                }
            }
        }
        self.update_window(st, n.exp_cmd_sn, n.max_cmd_sn);
        Ok(())
    }

    fn on_reject(&self, st: &mut State, ci: usize, r: Reject) -> Result<()> {
        Self::update_stat_sn(st, ci, r.stat_sn);
        tracing::warn!(reason = ?r.reason, itt = ?r.rejected_itt(), "target rejected a PDU");
        if let Some(itt) = r.rejected_itt() {
            if st.tasks.contains_key(&itt) {
                self.finish(st, itt, Err(Error::Rejected(format!("{:?}", r.reason))));
            } else if let Some(Control::Ping { conn, .. }) = st.control.remove(&itt) {
                if let Some(c) = st.conns.get_mut(conn) {
                    c.ping_outstanding = false;
                }
            }
        }
        self.update_window(st, r.exp_cmd_sn, r.max_cmd_sn);
        Ok(())
    }

    fn on_async(self: &Arc<Self>, epoch: u64, ci: usize, m: AsyncMessage) {
        {
            let mut st = lock(&self.st);
            Self::update_stat_sn(&st, ci, m.stat_sn);
            self.update_window(&mut st, m.exp_cmd_sn, m.max_cmd_sn);
        }
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

    /// The target asked for a logout: stop issuing, let in-flight commands
    /// finish (bounded by the time the target gave us), log out, then
    /// reconnect as in recovery.
    fn start_draining(&self, epoch: u64) {
        let mut st = lock(&self.st);
        if st.epoch == epoch && st.phase == Phase::Up {
            st.phase = Phase::Draining;
        }
    }

    async fn graceful_reconnect(self: Arc<Self>, epoch: u64, within: Duration) {
        {
            let st = lock(&self.st);
            if st.epoch != epoch || st.phase != Phase::Draining {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + within.max(Duration::from_secs(1));
        loop {
            let notified = self.idle.notified();
            if lock(&self.st).tasks.is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let _ = self.send_logout(LogoutReason::CLOSE_SESSION).await;
        self.fail_session(epoch, "target requested logout".into(), Duration::ZERO);
    }

    async fn send_logout(self: &Arc<Self>, reason: LogoutReason) -> Result<LogoutResponse> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.st);
            let Some(conn) = st.conns.first() else {
                return Err(Error::Closed);
            };
            let cid = conn.cid;
            let itt = alloc_itt(&mut st);
            st.control.insert(itt, Control::Logout(tx));
            let pdu = Pdu::LogoutRequest(LogoutRequest {
                immediate: true,
                reason_code: reason,
                itt,
                cid,
                cmd_sn: st.cmd_sn,
                exp_stat_sn: 0,
                data: Bytes::new(),
            });
            let _ = st.conns[0].tx.send(pdu);
        }
        match tokio::time::timeout(self.cfg.login_timeout, rx).await {
            Ok(Ok(r)) if r.response == LogoutResponseCode::CLOSED_SUCCESSFULLY => Ok(r),
            Ok(Ok(r)) => Err(Error::Protocol(format!("logout refused: {:?}", r.response))),
            Ok(Err(_)) => Err(Error::ConnectionLost(
                "connection closed during logout".into(),
            )),
            Err(_) => Err(Error::Timeout("no Logout Response".into())),
        }
    }

    async fn task_management(
        self: Arc<Self>,
        function: TmfFunction,
        lun: Option<u64>,
        itt_ref: Option<u32>,
    ) -> Result<(TaskMgmtResponse, u32)> {
        let (tx, rx) = oneshot::channel();
        let sent_cmd_sn;
        {
            let mut st = lock(&self.st);
            if st.phase != Phase::Up {
                return Err(Error::ConnectionLost("session is not up".into()));
            }
            let (conn, lun, ref_cmd_sn) = match itt_ref.and_then(|i| st.tasks.get(&i)) {
                Some(t) => (t.conn, t.p.lun, t.cmd_sn),
                None => (0, lun.unwrap_or(0), st.cmd_sn),
            };
            let itt = alloc_itt(&mut st);
            st.control.insert(itt, Control::Tmf(tx));
            let pdu = Pdu::TaskMgmtRequest(TaskMgmtRequest {
                immediate: true,
                function,
                lun,
                itt,
                referenced_task_tag: itt_ref.unwrap_or(RESERVED_TAG),
                cmd_sn: st.cmd_sn,
                exp_stat_sn: 0,
                ref_cmd_sn,
                exp_data_sn: 0,
                data: Bytes::new(),
            });
            sent_cmd_sn = st.cmd_sn;
            let _ = st.conns.get(conn).map(|c| c.tx.send(pdu));
        }
        match tokio::time::timeout(self.cfg.login_timeout, rx).await {
            Ok(Ok(r)) => Ok((r, sent_cmd_sn)),
            Ok(Err(_)) => Err(Error::ConnectionLost(
                "connection closed during task management".into(),
            )),
            Err(_) => Err(Error::Timeout(format!("no response to {function:?}"))),
        }
    }

    /// A connection of epoch `epoch` failed.
    fn conn_failed(self: &Arc<Self>, epoch: u64, reason: String) {
        self.fail_session(epoch, reason, Duration::ZERO);
    }

    /// ErrorRecoveryLevel 0: a connection failure is a session failure. Tear
    /// every connection down, put every unanswered command back in the
    /// queue (original order) and start recovery.
    fn fail_session(self: &Arc<Self>, epoch: u64, reason: String, min_wait: Duration) {
        let mut st = lock(&self.st);
        if st.epoch != epoch
            || matches!(
                st.phase,
                Phase::Closed | Phase::Closing | Phase::Failed(_) | Phase::Recovering
            )
        {
            return;
        }
        tracing::warn!(%reason, tsih = st.tsih, "session failed, recovering");
        st.epoch += 1;
        st.phase = Phase::Recovering;
        for h in st.drivers.drain(..) {
            h.abort();
        }
        st.conns.clear();
        st.control.clear();
        let mut back: Vec<Pending> = st.tasks.drain().map(|(_, t)| t.p).collect();
        back.extend(st.queue.drain(..));
        back.sort_by_key(|p| p.seq);
        st.queue = back.into();
        if self.cfg.recovery_timeout.is_zero() {
            let why = format!("connection failed: {reason}");
            st.phase = Phase::Failed(why.clone());
            for p in st.queue.drain(..) {
                let _ = p.reply.send(Err(Error::ConnectionLost(reason.clone())));
            }
            self.idle.notify_waiters();
            self.emit(SessionEvent::Failed(why));
            return;
        }
        self.emit(SessionEvent::Recovering(reason.clone()));
        let me = self.clone();
        let h = tokio::spawn(async move { me.recover(reason, min_wait).await });
        st.recovery = Some(h.abort_handle());
    }

    async fn recover(self: Arc<Self>, reason: String, min_wait: Duration) {
        let start = tokio::time::Instant::now();
        let deadline = start + self.cfg.recovery_timeout;
        let mut backoff = Duration::from_millis(100);
        let mut last_err = reason;
        tokio::time::sleep(min_wait).await;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (isid, cmd_sn) = {
                let st = lock(&self.st);
                if st.phase != Phase::Recovering {
                    return;
                }
                (st.isid, st.cmd_sn)
            };
            // Bound each attempt by the time left.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, establish(&self.cfg, isid, cmd_sn)).await {
                Ok(Ok((conns, neg))) => {
                    let tsih = conns.first().map(|c| c.tsih).unwrap_or(0);
                    if lock(&self.st).phase != Phase::Recovering {
                        return;
                    }
                    self.install(conns, neg);
                    tracing::info!(attempt, tsih, "session reinstated");
                    self.emit(SessionEvent::Recovered { tsih });
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(attempt, error = %e, "reconnect failed");
                    last_err = e.to_string();
                }
                Err(_) => last_err = "reconnect timed out".into(),
            }
            let now = tokio::time::Instant::now();
            if now + backoff >= deadline {
                tokio::time::sleep_until(deadline).await;
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        let why = format!(
            "could not recover within {:?}: {last_err}",
            self.cfg.recovery_timeout
        );
        let mut st = lock(&self.st);
        if st.phase != Phase::Recovering {
            return;
        }
        st.phase = Phase::Failed(why.clone());
        for p in st.queue.drain(..) {
            let _ = p.reply.send(Err(Error::SessionFailed(why.clone())));
        }
        self.idle.notify_waiters();
        self.emit(SessionEvent::Failed(why));
    }

    fn shutdown(&self, err: Error) {
        let mut st = lock(&self.st);
        st.phase = Phase::Closed;
        st.epoch += 1;
        for h in st.drivers.drain(..) {
            h.abort();
        }
        if let Some(h) = st.recovery.take() {
            h.abort();
        }
        st.conns.clear();
        st.control.clear();
        let msg = err.to_string();
        for (_, t) in st.tasks.drain() {
            let _ = t.p.reply.send(Err(Error::ConnectionLost(msg.clone())));
        }
        for p in st.queue.drain(..) {
            let _ = p.reply.send(Err(Error::Closed));
        }
        self.idle.notify_waiters();
        if let Some(h) = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
    }

    /// Periodic work: pings, ping timeouts, command timeouts.
    fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        let mut failed = None;
        let mut to_abort = Vec::new();
        {
            let mut st = lock(&self.st);
            if st.phase != Phase::Up && st.phase != Phase::Draining {
                return;
            }
            let epoch = st.epoch;
            // NOP timeout: an outstanding ping older than nop_timeout.
            for (&itt, c) in st.control.iter() {
                if let Control::Ping { conn, sent } = c {
                    if now.duration_since(*sent) > self.cfg.nop_timeout {
                        failed = Some((
                            epoch,
                            format!("no NOP-In answer on connection {conn} (ping {itt:#x})"),
                        ));
                    }
                }
            }
            if failed.is_none() {
                let mut pings = Vec::new();
                for (i, c) in st.conns.iter().enumerate() {
                    if !c.ping_outstanding && now.duration_since(c.last_rx) >= self.cfg.nop_interval
                    {
                        pings.push(i);
                    }
                }
                for i in pings {
                    let itt = alloc_itt(&mut st);
                    st.control.insert(itt, Control::Ping { conn: i, sent: now });
                    let cmd_sn = st.cmd_sn;
                    let c = &mut st.conns[i];
                    c.ping_outstanding = true;
                    // RFC 7143 §11.18: a ping is an immediate NOP-Out with a
                    // valid ITT and TTT 0xffffffff; CmdSN is not advanced.
                    let _ = c.tx.send(Pdu::NopOut(NopOut {
                        immediate: true,
                        lun: 0,
                        itt,
                        ttt: RESERVED_TAG,
                        cmd_sn,
                        exp_stat_sn: 0,
                        data: Bytes::new(),
                    }));
                }
                for (&itt, t) in st.tasks.iter_mut() {
                    if !t.aborting && now > t.deadline {
                        t.aborting = true;
                        to_abort.push((itt, t.cmd_sn));
                    }
                }
                // Commands that never got into the CmdSN window are bounded
                // by the command timeout too.
                if let Some(since) = st.window_closed_since {
                    if now.duration_since(since) > self.cfg.command_timeout {
                        st.window_closed_since = None;
                        let why = format!(
                            "the target kept the command window closed (CmdSN {}, MaxCmdSN {}) for {:?}",
                            st.cmd_sn, st.max_cmd_sn, self.cfg.command_timeout
                        );
                        tracing::warn!(%why, queued = st.queue.len(), "failing queued commands");
                        for p in st.queue.drain(..) {
                            let _ = p.reply.send(Err(Error::Timeout(why.clone())));
                        }
                        if st.tasks.is_empty() {
                            self.idle.notify_waiters();
                        }
                    }
                }
            }
        }
        if let Some((epoch, why)) = failed {
            self.conn_failed(epoch, why);
            return;
        }
        for (itt, cmd_sn) in to_abort {
            let me = self.clone();
            tokio::spawn(async move {
                tracing::warn!(itt, cmd_sn, "command timed out, sending ABORT TASK");
                let epoch = lock(&me.st).epoch;
                let r = me
                    .clone()
                    .task_management(TmfFunction::ABORT_TASK, None, Some(itt))
                    .await;
                let escalate = matches!(r, Err(Error::Timeout(_)));
                let why = match r {
                    Ok((r, _)) => format!(
                        "command timed out after {:?}; aborted ({:?})",
                        me.cfg.command_timeout, r.response
                    ),
                    Err(e) => format!(
                        "command timed out after {:?}; abort failed: {e}",
                        me.cfg.command_timeout
                    ),
                };
                {
                    let mut st = lock(&me.st);
                    // The same task (not a later one that reused the ITT).
                    let same = st
                        .tasks
                        .get(&itt)
                        .is_some_and(|t| t.cmd_sn == cmd_sn && t.aborting);
                    if same {
                        me.finish(&mut st, itt, Err(Error::Timeout(why)));
                    }
                }
                if escalate {
                    // Task management did not answer either: at
                    // ErrorRecoveryLevel 0 the only recovery left is session
                    // recovery (RFC 7143 §7.1.5).
                    me.conn_failed(epoch, "ABORT TASK was not answered".into());
                }
            });
        }
    }
}

async fn ticker(inner: std::sync::Weak<Inner>) {
    let period = {
        let Some(i) = inner.upgrade() else { return };
        (i.cfg
            .nop_interval
            .min(i.cfg.nop_timeout)
            .min(i.cfg.command_timeout)
            / 4)
        .clamp(Duration::from_millis(50), Duration::from_millis(500))
    };
    let mut iv = tokio::time::interval(period);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        iv.tick().await;
        let Some(i) = inner.upgrade() else { return };
        i.tick();
    }
}

async fn reader_task(
    inner: std::sync::Weak<Inner>,
    epoch: u64,
    ci: usize,
    mut reader: connection::PduReader,
    counters: Arc<Counters>,
) {
    loop {
        let res = reader.read().await;
        let Some(i) = inner.upgrade() else { return };
        match res {
            Ok((pdu, wire_len)) => {
                counters.pdus_in.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes_in
                    .fetch_add(wire_len as u64, Ordering::Relaxed);
                if let Err(e) = i.handle_pdu(epoch, ci, pdu) {
                    i.conn_failed(epoch, e.to_string());
                    return;
                }
            }
            Err(e) => {
                i.conn_failed(epoch, e.to_string());
                return;
            }
        }
    }
}

async fn writer_task(
    inner: std::sync::Weak<Inner>,
    epoch: u64,
    mut writer: connection::PduWriter,
    mut rx: mpsc::UnboundedReceiver<Pdu>,
    exp_stat_sn: Arc<AtomicU32>,
    counters: Arc<Counters>,
) {
    let mut batch = Vec::with_capacity(64);
    loop {
        let Some(first) = rx.recv().await else { return };
        batch.push(first);
        while batch.len() < 64 {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let e = exp_stat_sn.load(Ordering::Relaxed);
        for p in batch.iter_mut() {
            connection::set_exp_stat_sn(p, e);
        }
        match writer.write_batch(&batch).await {
            Ok(n) => {
                counters
                    .pdus_out
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                if let Some(i) = inner.upgrade() {
                    i.conn_failed(epoch, e.to_string());
                }
                return;
            }
        }
        batch.clear();
    }
}

fn take_data(t: &mut Issued, pool: &Arc<BufPool>) -> Bytes {
    match t.data_in.take() {
        Some(mut b) => {
            b.truncate(t.extent);
            if b.capacity() >= POOL_MIN_BUFFER {
                Bytes::from_owner(Pooled {
                    buf: b,
                    pool: Arc::downgrade(pool),
                })
            } else {
                Bytes::from(b)
            }
        }
        None => Bytes::new(),
    }
}

/// Smallest Data-In buffer worth recycling.
const POOL_MIN_BUFFER: usize = 64 * 1024;
/// Bound on the memory the pool keeps.
const POOL_MAX_BYTES: usize = 64 << 20;

/// Recycled Data-In reassembly buffers. A fresh multi-megabyte allocation
/// per read costs page faults (the allocator maps and unmaps large blocks),
/// which dominated deep-queue sequential reads in profiles; a buffer comes
/// back here when the last `Bytes` of a result is dropped.
#[derive(Default)]
struct BufPool {
    free: Mutex<(Vec<Vec<u8>>, usize)>,
}

impl BufPool {
    /// An empty buffer with room for `len` bytes.
    fn take(&self, len: usize) -> Vec<u8> {
        if len >= POOL_MIN_BUFFER {
            let mut f = self.free.lock().unwrap_or_else(|e| e.into_inner());
            let fits = |v: &Vec<u8>| v.capacity() >= len && v.capacity() / 2 <= len;
            if let Some(i) = f.0.iter().position(fits) {
                let mut v = f.0.swap_remove(i);
                f.1 -= v.capacity();
                v.clear();
                return v;
            }
        }
        Vec::with_capacity(len)
    }

    fn give(&self, v: Vec<u8>) {
        let mut f = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if f.1 + v.capacity() <= POOL_MAX_BYTES {
            f.1 += v.capacity();
            f.0.push(v);
        }
    }
}

/// A pooled buffer owned by a `Bytes`; returns to the pool on drop.
struct Pooled {
    buf: Vec<u8>,
    pool: std::sync::Weak<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(p) = self.pool.upgrade() {
            p.give(std::mem::take(&mut self.buf));
        }
    }
}

/// Split `data[from..to]` into Data-Out PDUs of at most `max_dsl` bytes,
/// DataSN from 0, F on the last (RFC 7143 §11.7).
#[allow(clippy::too_many_arguments)]
fn data_out_pdus(
    out: &mut Vec<Pdu>,
    data: &Bytes,
    lun: u64,
    itt: u32,
    ttt: u32,
    from: usize,
    to: usize,
    max_dsl: u32,
) {
    let step = (max_dsl as usize).max(1);
    let mut off = from;
    let mut data_sn = 0u32;
    while off < to {
        let end = (off + step).min(to);
        out.push(Pdu::DataOut(DataOut {
            final_: end == to,
            lun,
            itt,
            ttt,
            exp_stat_sn: 0,
            data_sn,
            buffer_offset: off as u32,
            data: data.slice(off..end),
        }));
        data_sn = data_sn.wrapping_add(1);
        off = end;
    }
}

fn alloc_itt(st: &mut State) -> u32 {
    loop {
        let itt = st.next_itt;
        st.next_itt = st.next_itt.wrapping_add(1);
        if itt != RESERVED_TAG && !st.tasks.contains_key(&itt) && !st.control.contains_key(&itt) {
            return itt;
        }
    }
}

/// Least-loaded connection, ties broken round-robin.
fn pick_conn(st: &mut State) -> Option<usize> {
    let n = st.conns.len();
    if n == 0 {
        return None;
    }
    let start = st.rr % n;
    let mut best = start;
    for k in 0..n {
        let i = (start + k) % n;
        if st.conns[i].in_flight < st.conns[best].in_flight {
            best = i;
        }
    }
    st.rr = best + 1;
    Some(best)
}

fn pdu_name(p: &Pdu) -> String {
    let s = format!("{p:?}");
    s.split(['(', ' ', '{']).next().unwrap_or("?").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_out_split_respects_max_dsl_and_sets_final() {
        let data = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let mut v = Vec::new();
        data_out_pdus(&mut v, &data, 5, 7, 9, 1000, 9000, 3000);
        let pdus: Vec<&DataOut> = v
            .iter()
            .map(|p| match p {
                Pdu::DataOut(d) => d,
                _ => panic!("not a Data-Out"),
            })
            .collect();
        assert_eq!(pdus.len(), 3);
        assert_eq!(pdus.iter().map(|d| d.data.len()).sum::<usize>(), 8000);
        assert!(pdus
            .iter()
            .all(|d| d.data.len() <= 3000 && d.ttt == 9 && d.itt == 7 && d.lun == 5));
        assert_eq!(
            pdus.iter().map(|d| d.data_sn).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(
            pdus.iter().map(|d| d.final_).collect::<Vec<_>>(),
            vec![false, false, true]
        );
        assert_eq!(pdus[1].buffer_offset, 4000);
        assert_eq!(&pdus[1].data[..], &data[4000..7000]);
    }

    #[test]
    fn data_in_buffers_are_recycled_when_the_result_is_dropped() {
        let pool = Arc::new(BufPool::default());
        let mut v = pool.take(1 << 20);
        assert!(v.capacity() >= 1 << 20 && v.is_empty());
        v.extend_from_slice(&[7u8; 1000]);
        let ptr = v.as_ptr();
        let mut t = Issued {
            p: Pending {
                lun: 0,
                cdb: Bytes::new(),
                dir: DataDirection::Read(1 << 20),
                reply: oneshot::channel().0,
                seq: 0,
            },
            cmd_sn: 0,
            conn: 0,
            data_in: Some(v),
            extent: 1000,
            received: 1000,
            next_data_sn: 0,
            next_r2t_sn: 0,
            deadline: Instant::now(),
            aborting: false,
        };
        let data = take_data(&mut t, &pool);
        assert_eq!(&data[..], &[7u8; 1000][..]);
        let slice = data.slice(10..20);
        drop(data);
        // Still referenced by the slice: not back in the pool yet.
        let fresh = pool.take(1 << 20);
        assert_ne!(fresh.as_ptr(), ptr);
        drop(fresh);
        drop(slice);
        let again = pool.take(1 << 20);
        assert_eq!(again.as_ptr(), ptr, "the same allocation is reused");
        assert!(again.is_empty());
        // A much smaller request does not take a huge buffer.
        pool.give(again);
        let small = pool.take(100 * 1024);
        assert_ne!(small.as_ptr(), ptr);
    }

    #[test]
    fn random_isid_is_type_random() {
        let i = random_isid();
        assert_eq!(i[0] & 0xc0, 0x80);
        assert_ne!(random_isid(), i);
    }
}
