//! The session's state behind one mutex (never held across an `.await`):
//! the phase, and `proto::session::initiator::InitiatorSession`, the
//! sans-IO core that owns the protocol (CmdSN window and issuing queue,
//! ITTs, Data-In, R2T, pings, TMF and Logout exchanges, allegiance). The
//! shell around it: each connection's writer channel, the waiters of TMF
//! and Logout answers, the driver tasks. After every call into the core,
//! [`Inner::flush`] moves what it produced: PDUs to their connection's
//! writer, results to the waiting callers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use proto::pdu::{AsyncMessage, LogoutResponse, Pdu, TaskMgmtResponse};
use proto::scsi::sense::{Asc, Sense};
use proto::serial::CmdSn;
use proto::session::initiator::{
    CommandContext, CommandError, ConnError, ConnId, ConnParams, ControlError, Event,
    InitiatorConfig, InitiatorSession, ReadData, Response,
};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::io::{pooled, reader_task, writer_task, BufPool};
use super::readd::ReAdd;
use super::{Counters, RawResult, SessionConfig, SessionEvent};
use crate::connection::{conn_span, Established, Negotiated};
use crate::error::{Error, ProtocolError, Rejection, Result, TimedOut};
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

/// What the shell keeps with a command in the core: where its result goes.
pub(super) struct Pending {
    pub(super) reply: oneshot::Sender<Result<RawResult>>,
    /// The command's span (debug level: disabled, it costs nothing), with
    /// the LUN, and the ITT and CmdSN once issued (again after recovery).
    pub(super) span: tracing::Span,
}

impl CommandContext for Pending {
    fn issued(&mut self, itt: u32, cmd_sn: CmdSn, conn: ConnId) {
        self.span.record("itt", itt);
        self.span.record("cmdsn", cmd_sn.get());
        self.span
            .in_scope(|| tracing::trace!(conn = conn.0, "issued"));
    }
}

/// Who waits for the answer to a TMF or Logout request.
pub(super) enum Waiter {
    Tmf(oneshot::Sender<std::result::Result<TaskMgmtResponse, ControlError>>),
    Logout(oneshot::Sender<std::result::Result<LogoutResponse, ControlError>>),
}

/// What must be done once the state lock is released.
#[derive(Default)]
pub(super) struct After {
    asyncs: Vec<AsyncMessage>,
    failed: Option<String>,
}

pub(super) struct State {
    pub(super) phase: Phase,
    pub(super) epoch: u64,
    pub(super) isid: [u8; 6],
    pub(super) tsih: u16,
    pub(super) neg: Negotiated,
    /// The protocol core; its `ConnId(i)` is `links[i]`.
    pub(super) core: InitiatorSession<Pending>,
    /// Each connection's writer channel.
    pub(super) links: Vec<mpsc::UnboundedSender<Pdu>>,
    pub(super) waiters: HashMap<u32, Waiter>,
    pub(super) drivers: Vec<AbortHandle>,
    pub(super) recovery: Option<AbortHandle>,
    /// Adding back connections the session is short of (MC/S).
    pub(super) readd: ReAdd,
}

impl State {
    /// A session about to log in with `initial_cmd_sn`.
    pub(super) fn new(
        cfg: &SessionConfig,
        isid: [u8; 6],
        neg: Negotiated,
        initial_cmd_sn: CmdSn,
    ) -> State {
        State {
            phase: Phase::Recovering,
            epoch: 0,
            isid,
            tsih: 0,
            core: InitiatorSession::new(core_config(cfg, &neg), initial_cmd_sn),
            neg,
            links: Vec::new(),
            waiters: HashMap::new(),
            drivers: Vec::new(),
            recovery: None,
            readd: ReAdd::default(),
        }
    }
}

/// The core's configuration: the negotiated keys and our timers.
pub(super) fn core_config(cfg: &SessionConfig, neg: &Negotiated) -> InitiatorConfig {
    InitiatorConfig {
        immediate_data: neg.immediate_data,
        initial_r2t: neg.initial_r2t,
        first_burst_length: neg.first_burst_length,
        max_burst_length: neg.max_burst_length,
        nop_interval: cfg.nop_interval,
        nop_timeout: cfg.nop_timeout,
        command_timeout: cfg.command_timeout,
        response_timeout: cfg.login_timeout,
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
        let after = {
            let mut st = lock(&self.st);
            st.epoch += 1;
            let epoch = st.epoch;
            for h in st.drivers.drain(..) {
                h.abort();
            }
            st.links.clear();
            let config = core_config(&self.cfg, &neg);
            st.core.set_config(config);
            st.neg = neg;
            let cmd_sn = st.core.window().cmd_sn();
            let mut last = (cmd_sn, cmd_sn);
            for e in established {
                st.tsih = e.tsih;
                last = (e.exp_cmd_sn, e.max_cmd_sn);
                self.attach(&mut st, epoch, e);
            }
            st.readd = ReAdd::default();
            st.phase = Phase::Up;
            tracing::info!(
                tsih = st.tsih,
                conns = st.links.len(),
                "session in full-feature phase"
            );
            // The session's next CmdSN is what the target expects.
            let now = Instant::now();
            st.core.reset_window(last.0, last.1, now);
            st.core.resume(now);
            (epoch, self.flush(&mut st))
        };
        self.after(after.0, after.1);
    }

    /// Start the reader and writer of a logged-in connection of epoch
    /// `epoch` and add it to the session's connections.
    pub(super) fn attach(self: &Arc<Self>, st: &mut State, epoch: u64, e: Established) {
        let idx = st.links.len();
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = self.counters.get(idx).cloned().unwrap_or_default();
        let (reader, writer) = (e.reader, e.writer);
        // Like the target's connection span: what names this connection
        // in every event its reader and writer log.
        let span = conn_span(st.isid, e.tsih, e.cid, &e.portal);
        let w = tokio::spawn(
            writer_task(Arc::downgrade(self), epoch, writer, rx, counters.clone())
                .instrument(span.clone()),
        );
        let r = tokio::spawn(
            reader_task(Arc::downgrade(self), epoch, idx, reader, counters).instrument(span),
        );
        st.drivers.push(w.abort_handle());
        st.drivers.push(r.abort_handle());
        st.links.push(tx);
        let params = ConnParams {
            cid: e.cid,
            exp_stat_sn: e.exp_stat_sn,
            max_send_data_segment_length: e.max_send_dsl,
        };
        st.core.add_connection(params, Instant::now());
    }

    /// Move what the core produced: PDUs to their connection's writer,
    /// results to their callers. Async Messages and failures are returned
    /// for [`Inner::after`], once the lock is released.
    pub(super) fn flush(&self, st: &mut State) -> After {
        while let Some(t) = st.core.poll_transmit() {
            if matches!(t.pdu, Pdu::ScsiCommand(_)) {
                if let Some(c) = self.counters.get(t.conn.0) {
                    c.commands.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(tx) = st.links.get(t.conn.0) {
                let _ = tx.send(t.pdu);
            }
        }
        let mut after = After::default();
        let mut completed = false;
        while let Some(e) = st.core.poll_event() {
            match e {
                Event::Completed { ctx, result, .. } => {
                    completed = true;
                    self.complete(ctx, result);
                }
                Event::Tmf { itt, result } => {
                    if let Some(Waiter::Tmf(tx)) = st.waiters.remove(&itt) {
                        let _ = tx.send(result);
                    }
                }
                Event::Logout { itt, result } => {
                    if let Some(Waiter::Logout(tx)) = st.waiters.remove(&itt) {
                        let _ = tx.send(result);
                    }
                }
                Event::Async { message, .. } => after.asyncs.push(message),
                Event::Failed { error, .. } => {
                    after.failed.get_or_insert_with(|| conn_error(error));
                }
            }
        }
        // Waiters (logout, drain before a target-requested logout) check
        // their own condition; queued commands do not keep them asleep.
        if completed && st.core.issued_count() == 0 {
            self.idle.notify_waiters();
        }
        after
    }

    /// Act on what [`Inner::flush`] left for after the lock.
    pub(super) fn after(self: &Arc<Self>, epoch: u64, after: After) {
        for m in after.asyncs {
            self.on_async(epoch, m);
        }
        if let Some(why) = after.failed {
            self.conn_failed(epoch, why);
        }
    }

    /// Hand a command's outcome to its caller.
    fn complete(&self, p: Pending, result: std::result::Result<Response, CommandError>) {
        let res = match result {
            Ok(r) => Ok(self.raw_result(r)),
            Err(e) => {
                if matches!(
                    e,
                    CommandError::TimedOut { .. } | CommandError::WindowClosed { .. }
                ) {
                    p.span
                        .in_scope(|| tracing::warn!(error = %e, "command timed out"));
                }
                Err(command_error(e))
            }
        };
        if let Err(e) = &res {
            p.span
                .in_scope(|| tracing::debug!(error = %e, "command failed"));
        }
        let _ = p.reply.send(res);
    }

    fn raw_result(&self, r: Response) -> RawResult {
        let sense = if r.sense.is_empty() {
            None
        } else {
            Sense::parse(&r.sense).ok()
        };
        RawResult {
            status: r.status,
            sense,
            raw_sense: r.sense,
            data: match r.data {
                ReadData::Buffer(b) => pooled(b, &self.pool),
                ReadData::Received { data, spare } => {
                    self.pool.give(spare);
                    data
                }
            },
            underflow: r.underflow,
            overflow: r.overflow,
        }
    }
}

/// The caller's error for a command the core failed (same texts as the
/// errors the shell built itself before the core).
fn command_error(e: CommandError) -> Error {
    match e {
        e @ (CommandError::DataIn { .. }
        | CommandError::R2t { .. }
        | CommandError::R2tWithoutDataOut { .. }) => ProtocolError::Command(e).into(),
        e @ (CommandError::TargetFailure(_) | CommandError::Rejected(_)) => {
            Error::Rejected(Rejection::Command(e))
        }
        e @ (CommandError::TimedOut { .. } | CommandError::WindowClosed { .. }) => {
            Error::Timeout(TimedOut::Command(e))
        }
        e @ (CommandError::Aborted | CommandError::LunReset) => {
            Error::TaskManagement(e.to_string())
        }
    }
}

/// Why a connection failed, as the session's recovery reports it.
pub(super) fn conn_error(e: ConnError) -> String {
    match e {
        ConnError::PingTimeout { .. } | ConnError::AbortUnanswered => e.to_string(),
        e => Error::from(ProtocolError::Connection(e)).to_string(),
    }
}
