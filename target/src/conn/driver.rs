//! The driver of one connection in the full-feature phase: it feeds the
//! frames it reads, the commands' outcomes and the timer into the sans-IO
//! core (`proto::session::target::TargetConn`), acts on the core's events
//! (run a command, a TMF, a Text or Logout decision) and hands what the
//! core has to send to the writer task, in the core's (wire) order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use proto::codec::CodecError;
use proto::pdu::{LogoutReason, LogoutResponseCode, Pdu, TaskMgmtRequest, TaskMgmtResponse};
use proto::session::target::{CloseReason, Command, Event, LogoutRequested, TargetConn};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::exec::{self, Done, SessionHooks};
use super::writer::Outbound;
use super::{ConnError, ConnLimits, Frames};
use crate::server::{ServerShared, Session};
use crate::session::{ConnNotice, TaskPhase};

/// Inputs taken in one go before the output is handed to the writer.
const BATCH: usize = 64;

/// A TMF's answer, back from the task that ran it.
type TmfDone = (TaskMgmtResponse, Option<crate::tmf::After>);

/// What [`Conn::new`] needs.
pub(crate) struct Setup {
    pub shared: Arc<ServerShared>,
    pub session: Arc<Session>,
    pub conn_id: u64,
    pub local: std::net::SocketAddr,
    pub tx: mpsc::Sender<Outbound>,
    pub cancel: CancellationToken,
    pub notices: mpsc::UnboundedReceiver<ConnNotice>,
    pub limits: ConnLimits,
    pub core: TargetConn<SessionHooks>,
}

/// One connection's driver state.
pub(crate) struct Conn {
    pub(super) shared: Arc<ServerShared>,
    pub(super) session: Arc<Session>,
    conn_id: u64,
    pub(super) local: std::net::SocketAddr,
    tx: mpsc::Sender<Outbound>,
    cancel: CancellationToken,
    notices: mpsc::UnboundedReceiver<ConnNotice>,
    pub(super) limits: ConnLimits,
    pub(super) core: TargetConn<SessionHooks>,
    pub(super) negotiator: Option<proto::text::negotiate::Negotiator>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    tmf_tx: mpsc::UnboundedSender<TmfDone>,
    tmf_rx: mpsc::UnboundedReceiver<TmfDone>,
    /// Set when the core asked to close: the result to end with once what
    /// is queued has gone to the writer.
    closing: Option<Result<(), ConnError>>,
}

impl Conn {
    pub(crate) fn new(s: Setup) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (tmf_tx, tmf_rx) = mpsc::unbounded_channel();
        Conn {
            shared: s.shared,
            session: s.session,
            conn_id: s.conn_id,
            local: s.local,
            tx: s.tx,
            cancel: s.cancel,
            notices: s.notices,
            limits: s.limits,
            core: s.core,
            negotiator: None,
            done_tx,
            done_rx,
            tmf_tx,
            tmf_rx,
            closing: None,
        }
    }

    /// Drive the connection until it closes.
    pub(crate) async fn run(&mut self, mut frames: Frames<OwnedReadHalf>) -> Result<(), ConnError> {
        loop {
            self.flush().await?;
            if let Some(r) = self.closing.take() {
                return r;
            }
            let deadline = self.core.poll_timeout();
            tokio::select! {
                f = frames.next() => self.frame(f)?,
                Some(d) = self.done_rx.recv() => self.done(d),
                Some(t) = self.tmf_rx.recv() => self.tmf_done(t),
                _ = self.cancel.cancelled() => return Ok(()),
                Some(n) = self.notices.recv() => self.notice(n),
                _ = sleep_until_opt(deadline) => self.core.handle_timeout(Instant::now()),
            }
            self.events();
            self.drain_ready(&mut frames)?;
        }
    }

    /// Take what is already there (frames in the read buffer or on the
    /// socket, finished commands) without going back to the `select!`, so
    /// that a burst is handled, and its answers sent, as one batch.
    fn drain_ready(&mut self, frames: &mut Frames<OwnedReadHalf>) -> Result<(), ConnError> {
        for _ in 0..BATCH {
            if self.closing.is_some() {
                break;
            }
            if let Ok(d) = self.done_rx.try_recv() {
                self.done(d);
            } else if let Some(f) = frames.next().now_or_never() {
                self.frame(f)?;
            } else {
                break;
            }
            self.events();
        }
        Ok(())
    }

    fn frame(
        &mut self,
        f: Option<Result<Result<Pdu, proto::pdu::DecodeError>, CodecError>>,
    ) -> Result<(), ConnError> {
        let now = Instant::now();
        match f {
            Some(Ok(Ok(pdu))) => self.core.handle_pdu(pdu, now),
            Some(Ok(Err(e))) => {
                // RFC 7143 §7.8: a data digest error is answered with a
                // Reject and the PDU discarded; so is an unknown opcode
                // (§11.17.1 "Command not supported").
                warn!(error = %e, "rejecting PDU");
                self.core.handle_decode_error(&e, now);
            }
            Some(Err(CodecError::Decode(e))) => return Err(e.into()),
            Some(Err(CodecError::Io(e))) => return Err(e.into()),
            None => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
        }
        Ok(())
    }

    fn events(&mut self) {
        while let Some(e) = self.core.poll_event() {
            match e {
                Event::Execute(cmd) => self.execute(cmd),
                Event::TaskManagement(t) => self.tmf(t),
                Event::Text { itt, keys, .. } => self.text(itt, &keys),
                Event::Logout(l) => self.logout(l),
                Event::TaskFailed { itt, error } => warn!(itt, "{error}"),
                Event::Closed(CloseReason::LoggedOut) => self.closing = Some(Ok(())),
                Event::Closed(CloseReason::PingTimeout(d)) => {
                    self.closing = Some(Err(ConnError::PingTimeout(d)))
                }
            }
        }
    }

    fn execute(&mut self, cmd: Command) {
        let Some(task) = self.core.session().task(cmd.itt, cmd.task) else {
            return self.core.abandon(cmd.itt);
        };
        let span = tracing::debug_span!(
            "cmd",
            itt = cmd.itt,
            cmdsn = cmd.cmd_sn.get(),
            lun = cmd.lun
        );
        let session = self.session.clone();
        let done = self.done_tx.clone();
        tokio::spawn(exec::execute(session, task, cmd, done).instrument(span));
    }

    fn done(&mut self, d: Done) {
        match d.outcome {
            Some(o) => self.core.complete(d.task.itt, o),
            None => self.core.abandon(d.task.itt),
        }
    }

    fn tmf(&mut self, t: TaskMgmtRequest) {
        let shared = self.shared.clone();
        let session = self.session.clone();
        let back = self.tmf_tx.clone();
        let run = async move {
            let answer = crate::tmf::handle(&shared, &session, &t).await;
            let _ = back.send(answer);
        };
        tokio::spawn(run.in_current_span());
    }

    fn tmf_done(&mut self, (resp, after): TmfDone) {
        self.core.tmf_response(resp);
        if let Some(after) = after {
            let shared = self.shared.clone();
            tokio::spawn(async move { after.run(&shared).await }.in_current_span());
        }
    }

    fn logout(&mut self, l: LogoutRequested) {
        let mut d = l.decide_own();
        if l.reason == LogoutReason::CLOSE_CONNECTION && !l.own {
            d.response = match self.session.core.connection(l.cid) {
                Some(other) => {
                    other.cancel.cancel();
                    LogoutResponseCode::CLOSED_SUCCESSFULLY
                }
                None => LogoutResponseCode::CID_NOT_FOUND,
            };
        }
        info!(reason = ?l.reason, cid = l.cid, response = ?d.response, "logout");
        self.core.logout_response(l.itt, d);
        if d.close && l.reason == LogoutReason::CLOSE_SESSION {
            // Other connections of the session close as well; our writer
            // flushes the response first.
            self.session.core.close();
        }
    }

    fn notice(&mut self, n: ConnNotice) {
        match n {
            ConnNotice::RequestLogout { seconds } => self.core.request_logout(seconds),
        }
    }

    /// Hand what the core has to send to the writer, as one batch.
    async fn flush(&mut self) -> Result<(), ConnError> {
        if self.core.pending_transmits() == 0 {
            return Ok(());
        }
        let pdus = self.core.poll_transmit_all();
        self.queue(Outbound::Pdus(pdus)).await
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

    /// The connection is ending: its tasks are terminated (RFC 7143 §6.1.2
    /// at ERL 0, connection allegiance: no other connection can answer
    /// them), outcomes still on their way are dropped, and the writer is
    /// asked to flush and close.
    pub(crate) fn finish(mut self) {
        let conn_id = self.conn_id;
        for t in self.session.core.tasks_where(|t| t.conn == conn_id) {
            if t.abort() == TaskPhase::Collecting {
                self.session.core.finish_task(&t);
            }
        }
        self.done_rx.close();
        while let Ok(d) = self.done_rx.try_recv() {
            self.session.core.finish_task(&d.task);
        }
        self.tmf_rx.close();
        while let Ok((resp, _)) = self.tmf_rx.try_recv() {
            // Frees the window slot the TMF held.
            self.core.tmf_response(resp);
        }
        let _ = self.tx.try_send(Outbound::Close);
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
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
