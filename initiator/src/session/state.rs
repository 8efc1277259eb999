//! The session's protocol state behind one mutex (never held across an
//! `.await`): phase, the CmdSN window, tasks in flight, connections; and
//! issuing queued commands ([`Inner::pump`]) as `proto::session`'s window
//! and unsolicited-data rules allow (RFC 7143 §4.2.2.1, §13.10-13.14).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use proto::pdu::{LogoutResponse, Pdu, ScsiCommand, TaskAttr, TaskMgmtResponse, RESERVED_TAG};
use proto::scsi::sense::{Asc, Sense};
use proto::serial::{CmdSn, R2tSn, StatSn};
use proto::session::data_out::{data_out_pdus, DataOutTarget};
use proto::session::{
    ExpStatSn, IssueWindow, ReadProgress, TagAllocator, UnsolicitedLimits, UnsolicitedPlan,
};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::io::{reader_task, writer_task, BufPool};
use super::readd::ReAdd;
use super::{Counters, DataDirection, RawResult, SessionConfig, SessionEvent};
use crate::connection::{conn_span, Established, Negotiated};
use crate::error::Result;
use crate::sync::lock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
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

pub(super) struct Pending {
    pub(super) lun: u64,
    pub(super) cdb: Bytes,
    pub(super) dir: DataDirection,
    pub(super) reply: oneshot::Sender<Result<RawResult>>,
    /// Submission order, to re-issue in the original order after recovery.
    pub(super) seq: u64,
    /// The command's span (debug level: disabled, it costs nothing), with
    /// the LUN, and the ITT and CmdSN once issued (again after recovery).
    pub(super) span: tracing::Span,
}

pub(super) struct Issued {
    pub(super) p: Pending,
    pub(super) cmd_sn: CmdSn,
    pub(super) conn: usize,
    /// The reassembly buffer, sized by the caller's expected length.
    pub(super) data_in: Option<Vec<u8>>,
    /// DataSN order and extent of the Data-In (RFC 7143 §11.7.5).
    pub(super) read: ReadProgress,
    /// The R2TSN the next R2T must carry (RFC 7143 §11.8.4).
    pub(super) next_r2t_sn: R2tSn,
    pub(super) deadline: Instant,
    pub(super) aborting: bool,
    /// Times the command PDU was sent again after a data digest Reject
    /// (`proto::session::reject`, bounded by `MAX_CRC_RETRIES`).
    pub(super) crc_retries: u32,
}

pub(super) enum Control {
    Ping { conn: usize, sent: Instant },
    Tmf(oneshot::Sender<TaskMgmtResponse>),
    Logout(oneshot::Sender<LogoutResponse>),
}

pub(super) struct Conn {
    pub(super) cid: u16,
    pub(super) tx: mpsc::UnboundedSender<Pdu>,
    /// ExpStatSN (RFC 7143 §4.2.2.2); mirrored into `exp_stat_sn_out` for
    /// the writer task, which stamps it at send time.
    pub(super) exp_stat_sn: ExpStatSn,
    pub(super) exp_stat_sn_out: Arc<AtomicU32>,
    /// The target's MaxRecvDataSegmentLength: our Data-Out PDU size limit.
    pub(super) max_send_dsl: u32,
    pub(super) in_flight: usize,
    pub(super) last_rx: Instant,
    pub(super) ping_outstanding: bool,
}

pub(super) struct State {
    pub(super) phase: Phase,
    pub(super) epoch: u64,
    pub(super) isid: [u8; 6],
    pub(super) tsih: u16,
    pub(super) neg: Negotiated,
    /// CmdSN to use and the window the target advertised (§4.2.2.1).
    pub(super) window: IssueWindow,
    pub(super) itts: TagAllocator,
    pub(super) next_seq: u64,
    pub(super) queue: VecDeque<Pending>,
    pub(super) tasks: HashMap<u32, Issued>,
    pub(super) control: HashMap<u32, Control>,
    pub(super) conns: Vec<Conn>,
    pub(super) rr: usize,
    /// Since when queued commands wait for the target to open the CmdSN
    /// window (MaxCmdSN); bounded by the command timeout.
    pub(super) window_closed_since: Option<Instant>,
    pub(super) drivers: Vec<AbortHandle>,
    pub(super) recovery: Option<AbortHandle>,
    /// Adding back connections the session is short of (MC/S).
    pub(super) readd: ReAdd,
}

impl State {
    /// A session about to log in with `initial_cmd_sn`.
    pub(super) fn new(isid: [u8; 6], neg: Negotiated, initial_cmd_sn: CmdSn) -> State {
        State {
            phase: Phase::Recovering,
            epoch: 0,
            isid,
            tsih: 0,
            neg,
            window: IssueWindow::new(initial_cmd_sn),
            itts: TagAllocator::new(1),
            next_seq: 0,
            queue: VecDeque::new(),
            tasks: HashMap::new(),
            control: HashMap::new(),
            conns: Vec::new(),
            rr: 0,
            window_closed_since: None,
            drivers: Vec::new(),
            recovery: None,
            readd: ReAdd::default(),
        }
    }

    /// A fresh ITT (RFC 7143 §11.2.1.8: unique in the session, never the
    /// reserved value).
    pub(super) fn alloc_itt(&mut self) -> u32 {
        let (tasks, control) = (&self.tasks, &self.control);
        self.itts
            .allocate_free(|t| tasks.contains_key(&t) || control.contains_key(&t))
    }
}

pub(super) struct Inner {
    pub(super) cfg: SessionConfig,
    pub(super) st: Mutex<State>,
    pub(super) idle: Notify,
    pub(super) events: broadcast::Sender<SessionEvent>,
    pub(super) counters: Vec<Arc<Counters>>,
    pub(super) ticker: Mutex<Option<AbortHandle>>,
    pub(super) pool: Arc<BufPool>,
}

impl Inner {
    pub(super) fn emit(&self, e: SessionEvent) {
        let _ = self.events.send(e);
    }

    pub(super) fn note_unit_attention(&self, lun: u64, sense: Sense) {
        if sense.asc == Asc::REPORTED_LUNS_DATA_HAS_CHANGED {
            self.emit(SessionEvent::LunsChanged);
        } else {
            self.emit(SessionEvent::UnitAttention { lun, sense });
        }
    }

    /// Take freshly logged-in connections into use (initial login or
    /// recovery) and start their drivers.
    pub(super) fn install(self: &Arc<Self>, established: Vec<Established>, neg: Negotiated) {
        let mut st = lock(&self.st);
        st.epoch += 1;
        let epoch = st.epoch;
        for h in st.drivers.drain(..) {
            h.abort();
        }
        st.conns.clear();
        st.neg = neg;
        let mut last = (st.window.cmd_sn(), st.window.cmd_sn());
        for e in established {
            st.tsih = e.tsih;
            last = (e.exp_cmd_sn, e.max_cmd_sn);
            self.attach(&mut st, epoch, e);
        }
        // The session's next CmdSN is what the target expects.
        st.window.reset(last.0, last.1);
        st.readd = ReAdd::default();
        st.phase = Phase::Up;
        tracing::info!(
            tsih = st.tsih,
            conns = st.conns.len(),
            "session in full-feature phase"
        );
        self.pump(&mut st);
    }

    /// Start the reader and writer of a logged-in connection of epoch
    /// `epoch` and append it to the session's connections.
    pub(super) fn attach(self: &Arc<Self>, st: &mut State, epoch: u64, e: Established) {
        let idx = st.conns.len();
        let (tx, rx) = mpsc::unbounded_channel();
        let exp_stat_sn_out = Arc::new(AtomicU32::new(e.exp_stat_sn.get()));
        let counters = self.counters.get(idx).cloned().unwrap_or_default();
        let max_send_dsl = e.max_send_dsl.max(512);
        let (reader, writer) = (e.reader, e.writer);
        // Like the target's connection span: what names this connection
        // in every event its reader and writer log.
        let span = conn_span(st.isid, e.tsih, e.cid, &e.portal);
        let w = tokio::spawn(
            writer_task(
                Arc::downgrade(self),
                epoch,
                writer,
                rx,
                exp_stat_sn_out.clone(),
                counters.clone(),
            )
            .instrument(span.clone()),
        );
        let r = tokio::spawn(
            reader_task(Arc::downgrade(self), epoch, idx, reader, counters).instrument(span),
        );
        st.drivers.push(w.abort_handle());
        st.drivers.push(r.abort_handle());
        st.conns.push(Conn {
            cid: e.cid,
            tx,
            exp_stat_sn: ExpStatSn::new(e.exp_stat_sn),
            exp_stat_sn_out,
            max_send_dsl,
            in_flight: 0,
            last_rx: Instant::now(),
            ping_outstanding: false,
        });
    }

    /// Issue queued commands while the window and a connection allow.
    pub(super) fn pump(&self, st: &mut State) {
        // RFC 7143 §4.2.2.1: "the initiator MUST NOT send a non-immediate
        // command with CmdSN > MaxCmdSN" (serial arithmetic, RFC 1982).
        while st.phase == Phase::Up && !st.queue.is_empty() && st.window.is_open() {
            let Some(ci) = pick_conn(st) else { break };
            let Some(cmd_sn) = st.window.take() else {
                break;
            };
            let Some(p) = st.queue.pop_front() else { break };
            let itt = st.alloc_itt();
            let limits = unsolicited_limits(st, ci);
            let conn = &mut st.conns[ci];
            issue(conn, &p, itt, cmd_sn, limits);
            conn.in_flight += 1;
            let _ = self
                .counters
                .get(ci)
                .map(|c| c.commands.fetch_add(1, Ordering::Relaxed));
            p.span.record("itt", itt);
            p.span.record("cmdsn", cmd_sn.get());
            p.span.in_scope(|| tracing::trace!(conn = ci, "issued"));
            let expected = match &p.dir {
                DataDirection::Read(n) => *n as usize,
                _ => 0,
            };
            st.tasks.insert(
                itt,
                Issued {
                    p,
                    cmd_sn,
                    conn: ci,
                    data_in: None,
                    read: ReadProgress::new(expected),
                    next_r2t_sn: R2tSn::new(0),
                    deadline: Instant::now() + self.cfg.command_timeout,
                    aborting: false,
                    crc_retries: 0,
                },
            );
        }
        if st.phase == Phase::Up && !st.queue.is_empty() && !st.window.is_open() {
            st.window_closed_since.get_or_insert_with(Instant::now);
        } else {
            st.window_closed_since = None;
        }
    }

    /// ExpCmdSN/MaxCmdSN from a target PDU (stale and invalid windows are
    /// ignored by [`IssueWindow::update`]), then issue what now fits.
    pub(super) fn update_window(&self, st: &mut State, exp: CmdSn, max: CmdSn) {
        st.window.update(exp, max);
        self.pump(st);
    }

    /// ExpStatSN of connection `ci` after receiving `pdu` (RFC 7143 §4.2.2.2).
    pub(super) fn note_stat_sn(st: &mut State, ci: usize, pdu: &Pdu) {
        if let Some(c) = st.conns.get_mut(ci) {
            if c.exp_stat_sn.on_pdu(pdu) {
                c.exp_stat_sn_out
                    .store(c.exp_stat_sn.get().get(), Ordering::Relaxed);
            }
        }
    }

    pub(super) fn finish(&self, st: &mut State, itt: u32, res: Result<RawResult>) {
        if let Some(t) = st.tasks.remove(&itt) {
            if let Some(c) = st.conns.get_mut(t.conn) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
            if let Err(e) = &res {
                t.p.span
                    .in_scope(|| tracing::debug!(error = %e, "command failed"));
            }
            let _ = t.p.reply.send(res);
        }
        // Waiters (logout, drain before a target-requested logout) check
        // their own condition; queued commands do not keep them asleep.
        if st.tasks.is_empty() {
            self.idle.notify_waiters();
        }
    }
}

/// The unsolicited-data limits of connection `ci` (RFC 7143 §13.10-13.14).
pub(super) fn unsolicited_limits(st: &State, ci: usize) -> UnsolicitedLimits {
    UnsolicitedLimits {
        immediate_data: st.neg.immediate_data,
        initial_r2t: st.neg.initial_r2t,
        first_burst_length: st.neg.first_burst_length,
        max_send_data_segment_length: st.conns.get(ci).map_or(512, |c| c.max_send_dsl),
    }
}

/// Queue a command's PDUs on its connection: the SCSI Command with its
/// immediate data, then any unsolicited Data-Out (RFC 7143 §13.10-13.14).
/// Also used to send a command again, unchanged, to plug the CmdSN gap a
/// data digest Reject left (RFC 7143 §7.2.1, §7.3).
pub(super) fn issue(conn: &Conn, p: &Pending, itt: u32, cmd_sn: CmdSn, limits: UnsolicitedLimits) {
    let (read, write, edtl) = match &p.dir {
        DataDirection::None => (false, false, 0u32),
        DataDirection::Read(n) => (true, false, *n),
        DataDirection::Write(d) => (false, true, d.len() as u32),
    };
    let data = match &p.dir {
        DataDirection::Write(d) => d.clone(),
        _ => Bytes::new(),
    };
    let plan = UnsolicitedPlan::new(data.len() as u32, limits);
    let _ = conn.tx.send(Pdu::ScsiCommand(ScsiCommand {
        immediate: false,
        // RFC 7143 §11.3.1: F=1 when no unsolicited Data-Out follows.
        final_: !plan.data_out_follows(),
        read,
        write,
        attr: TaskAttr::SIMPLE,
        lun: p.lun,
        itt,
        expected_data_transfer_length: edtl,
        cmd_sn,
        exp_stat_sn: StatSn::new(0), // stamped by the writer
        cdb: p.cdb.clone(),
        bidi_read_length: None,
        data: data.slice(..plan.immediate as usize),
    }));
    if plan.data_out_follows() {
        let to = DataOutTarget {
            lun: p.lun,
            itt,
            ttt: RESERVED_TAG,
        };
        for d in data_out_pdus(
            &data,
            to,
            plan.immediate,
            plan.end,
            limits.max_send_data_segment_length,
        ) {
            let _ = conn.tx.send(Pdu::DataOut(d));
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

pub(super) fn pdu_name(p: &Pdu) -> String {
    let s = format!("{p:?}");
    s.split(['(', ' ', '{']).next().unwrap_or("?").to_string()
}
