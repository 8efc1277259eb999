//! Normal sessions in full-feature phase (RFC 7143 §4, §11): the SCSI
//! client, with several connections per session (MC/S), a session-wide
//! CmdSN window, R2T/Data-Out, Data-In reassembly, NOP keepalive, async
//! messages, task management, logout, and session recovery.
//!
//! Shape: the protocol lives in `proto::session::initiator`'s
//! `InitiatorSession`, a sans-IO core that owns the session-wide CmdSN
//! window and issuing queue, ExpStatSN per connection, ITTs, unsolicited
//! data and Data-Out for R2Ts, Data-In checks and reassembly, NOP pings and
//! timeouts, TMF and Logout exchanges and connection allegiance. This
//! module is its tokio shell: one mutex around the core (never held across
//! an `.await`); per connection one reader task that decodes PDUs and feeds
//! them to the core, one writer task that writes what the core gives for
//! its connection, vectored; one ticker task per session that drives the
//! core's timers; callers wait on a oneshot that the core's completion
//! events fill.
//!
//! Rooms: this file (public types and the [`Session`] API), `state`
//! (the shell's state around the core, moving the core's output),
//! `receive` (PDUs into the core, Async Messages), `control` (logout,
//! task management waits), `recovery` (session failure and
//! reinstatement), `timers` (the ticker), `io` (reader/writer tasks,
//! buffer pool), `readd` (adding MC/S connections back).
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

mod control;
mod io;
mod readd;
mod receive;
mod recovery;
mod state;
mod timers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::pdu::{LogoutReason, TmfFunction, TmfResponse};
use proto::scsi::sense::{Sense, SenseKey};
use proto::scsi::Status;
use proto::serial::CmdSn;
use proto::session::initiator::{Command, ConnId, Data};
use proto::session::reject::{is_protocol_crc_error, MAX_CRC_RETRIES};
use tokio::sync::{broadcast, oneshot, Notify};

use crate::connection::{self, Established, LoginSpec, Negotiated};
use crate::error::{Error, Result, ScsiError};
use crate::portal::Portal;
use crate::sync::lock;
use state::{Inner, Pending, Phase, State};

/// The reserved tag value (RFC 7143 §11.2.1.8 / §11.18.1), re-exported.
pub use proto::pdu::RESERVED_TAG;

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
    /// Control-channel tags of the block reads and writes of the session's
    /// devices ([`crate::ScsiDevice`]); untagged by default.
    pub io_tags: crate::control::IoTags,
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
            io_tags: crate::control::IoTags::NONE,
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

impl Session {
    /// Connect, log in (leading connection, then the others for MC/S) and
    /// start the drivers.
    pub async fn connect(cfg: SessionConfig) -> Result<Session> {
        if cfg.connections == 0 {
            return Err(Error::Usage("at least one connection is needed".into()));
        }
        let isid = cfg.isid.unwrap_or_else(random_isid);
        let initial_cmd_sn = CmdSn::new(rand::random::<u32>() & 0x7fff_ffff);
        let (established, neg) = establish(&cfg, isid, initial_cmd_sn).await?;
        let counters = (0..cfg.connections.max(1))
            .map(|_| Arc::new(Counters::default()))
            .collect();
        let (events, _) = broadcast::channel(64);
        let st = State::new(&cfg, isid, neg.clone(), initial_cmd_sn);
        let inner = Arc::new(Inner {
            cfg,
            st: Mutex::new(st),
            idle: Notify::new(),
            events,
            counters,
            ticker: Mutex::new(None),
            pool: Arc::default(),
        });
        inner.install(established, neg);
        let t = tokio::spawn(timers::ticker(Arc::downgrade(&inner)));
        *lock(&inner.ticker) = Some(t.abort_handle());
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
                let present = i < st.core.connection_count();
                ConnectionStats {
                    cid: i as u16,
                    connected: present && st.phase == Phase::Up,
                    commands: c.commands.load(Ordering::Relaxed),
                    in_flight: st.core.in_flight(ConnId(i)),
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
        lock(&self.inner().st).core.connection_count()
    }

    /// Issue one SCSI command and wait for its outcome, whatever the status.
    /// Transport failures are recovered transparently (within the recovery
    /// timeout); the error cases are iSCSI-level failures. A command whose
    /// data the target lost to a digest error (CHECK CONDITION, PROTOCOL
    /// SERVICE CRC ERROR, nothing written: RFC 7143 §7.8) is issued again,
    /// up to `proto::session::reject::MAX_CRC_RETRIES` times.
    pub async fn execute_raw(&self, lun: u64, cdb: &[u8], dir: DataDirection) -> Result<RawResult> {
        if cdb.is_empty() || cdb.len() > 16 {
            return Err(Error::Usage(format!(
                "CDB length {} not supported (1..=16 bytes)",
                cdb.len()
            )));
        }
        let mut retries = 0;
        loop {
            let r = self.submit(lun, cdb, dir.clone()).await?;
            if retries < MAX_CRC_RETRIES && is_protocol_crc_error(r.status, r.sense.as_ref()) {
                retries += 1;
                tracing::warn!(
                    lun,
                    opcode = cdb[0],
                    attempt = retries,
                    "command's data lost to a digest error (nothing written); issuing it again"
                );
                continue;
            }
            return Ok(r);
        }
    }

    /// Queue one command and wait for its outcome.
    async fn submit(&self, lun: u64, cdb: &[u8], dir: DataDirection) -> Result<RawResult> {
        let (tx, rx) = oneshot::channel();
        let inner = self.inner();
        let data = match dir {
            DataDirection::None => Data::None,
            DataDirection::Read(len) => Data::Read {
                len,
                buf: inner.pool.take(len as usize),
            },
            DataDirection::Write(d) => Data::Write(d),
        };
        let reply = Pending {
            reply: tx,
            span: tracing::debug_span!(
                "cmd",
                lun,
                itt = tracing::field::Empty,
                cmdsn = tracing::field::Empty
            ),
        };
        let cmd = Command {
            lun,
            cdb: Bytes::copy_from_slice(cdb),
            data,
            ctx: reply,
        };
        let (epoch, after) = {
            let mut st = lock(&inner.st);
            match &st.phase {
                Phase::Closed => return Err(Error::Closed),
                Phase::Failed(why) => return Err(Error::SessionFailed(why.clone())),
                _ => {}
            }
            st.core.submit(cmd, Instant::now());
            (st.epoch, inner.flush(&mut st))
        };
        inner.after(epoch, after);
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
    /// When the target answers FUNCTION COMPLETE the command has ended: its
    /// caller gets [`Error::TaskManagement`] (the target sends no status for
    /// an aborted task, RFC 7143 §11.5.1).
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
    /// UNIT RESET, RFC 7143 §11.5.1); the core ends them before the answer
    /// comes back here.
    pub async fn lun_reset(&self, lun: u64) -> Result<()> {
        let (r, _) = self
            .inner()
            .clone()
            .task_management(TmfFunction::LOGICAL_UNIT_RESET, Some(lun), None)
            .await?;
        if r.response == TmfResponse::FUNCTION_COMPLETE {
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
                if st.core.issued_count() == 0 && st.core.queued_count() == 0 {
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
                st.core.pause();
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

/// What logging in connection `cid` of the session (ISID `isid`, TSIH
/// `tsih`, 0 for a new session) needs.
pub(super) fn login_spec(
    cfg: &SessionConfig,
    isid: [u8; 6],
    tsih: u16,
    cid: u16,
    cmd_sn: CmdSn,
) -> LoginSpec {
    LoginSpec {
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
    }
}

/// Log in the leading connection and then as many more as requested and
/// allowed (MC/S), all in one session. Only the leading connection must
/// succeed: one whose path is down is left out (logged) and added back
/// later by the session's timer (`readd.rs`).
pub(super) async fn establish(
    cfg: &SessionConfig,
    isid: [u8; 6],
    cmd_sn: CmdSn,
) -> Result<(Vec<Established>, Negotiated)> {
    let lead = connection::login(&login_spec(cfg, isid, 0, 0, cmd_sn)).await?;
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
        match connection::login(&login_spec(cfg, isid, tsih, cid, cmd_sn)).await {
            Ok(c) => all.push(c),
            Err(e) => tracing::warn!(
                cid,
                error = %e,
                "connection could not join the session; going on with {} and retrying later",
                all.len()
            ),
        }
    }
    Ok((all, neg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_isid_is_type_random() {
        let i = random_isid();
        assert_eq!(i[0] & 0xc0, 0x80);
        assert_ne!(random_isid(), i);
    }
}
