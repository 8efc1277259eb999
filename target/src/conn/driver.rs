//! The driver of one connection in the full-feature phase: it feeds the
//! frames it reads, the commands' outcomes and the timer into the sans-IO
//! core (`proto::session::target::TargetConn`), acts on the core's events
//! (run a command, a TMF, a Text or Logout decision) and writes what the
//! core has to send, in the core's (wire) order ([`super::writer`]).
//!
//! Commands run on this task: each is a future in `running`, polled with
//! the socket and the timers. A command that does not wait (a memory LUN,
//! a page-cache hit) is answered in the same wake-up that read it, and
//! its answer is written with the others of that wake-up in one vectored
//! write: no task spawned, no channel, no other thread woken per command.
//! Backend calls that may block still run on the blocking pool (the
//! device server decides), and their futures wait here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use proto::codec::CodecError;
use proto::pdu::{LogoutReason, LogoutResponseCode, Pdu, TaskMgmtRequest, TaskMgmtResponse};
use proto::session::target::{CloseReason, Command, Event, LogoutRequested, TargetConn};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::exec::{self, Done, SessionHooks};
use super::writer::Output;
use super::{ConnError, ConnLimits, FrameReader};
use crate::server::{ServerShared, Session};
use crate::session::{ConnNotice, TaskPhase};

/// Inputs taken in one go before the output is handed to the writer.
const BATCH: usize = 64;

/// Bytes of answers queued in a burst above which they are written
/// before the burst ends.
const WRITE_EARLY: usize = 256 << 10;

/// A TMF's answer, back from the task that ran it.
type TmfDone = (TaskMgmtResponse, Option<crate::tmf::After>);

/// What [`Conn::new`] needs.
pub(crate) struct Setup {
    pub shared: Arc<ServerShared>,
    pub session: Arc<Session>,
    pub conn_id: u64,
    pub local: std::net::SocketAddr,
    pub out: Output<OwnedWriteHalf>,
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
    out: Output<OwnedWriteHalf>,
    cancel: CancellationToken,
    notices: mpsc::UnboundedReceiver<ConnNotice>,
    pub(super) limits: ConnLimits,
    pub(super) core: TargetConn<SessionHooks>,
    pub(super) negotiator: Option<proto::text::negotiate::Negotiator>,
    /// Commands handed to the device server, until they end.
    running: FuturesUnordered<BoxFuture<'static, Done>>,
    /// Since when the output has been above its high-water mark (the
    /// initiator is not reading), with NOP-In pings enabled.
    stalled: Option<Instant>,
    /// TMF answers; made with the first TMF (an idle connection holds no
    /// channel).
    tmf_tx: Option<mpsc::UnboundedSender<TmfDone>>,
    tmf_rx: Option<mpsc::UnboundedReceiver<TmfDone>>,
    /// Set when the core asked to close: the result to end with once what
    /// is queued has gone to the writer.
    closing: Option<Result<(), ConnError>>,
}

impl Conn {
    pub(crate) fn new(s: Setup) -> Self {
        Conn {
            shared: s.shared,
            session: s.session,
            conn_id: s.conn_id,
            local: s.local,
            out: s.out,
            cancel: s.cancel,
            notices: s.notices,
            limits: s.limits,
            core: s.core,
            negotiator: None,
            running: FuturesUnordered::new(),
            stalled: None,
            tmf_tx: None,
            tmf_rx: None,
            closing: None,
        }
    }

    /// Drive the connection until it closes.
    pub(crate) async fn run(
        &mut self,
        mut frames: FrameReader<OwnedReadHalf>,
    ) -> Result<(), ConnError> {
        loop {
            self.flush()?;
            if let Some(r) = self.closing.take() {
                return r;
            }
            let deadline = self.core.poll_timeout();
            // Back-pressure: while the initiator does not read what we
            // send, take no new PDUs from it.
            let take_frames = !self.out.is_full();
            let stall = self.stall_deadline();
            let out = &mut self.out;
            tokio::select! {
                f = frames.next(), if take_frames => self.frame(f)?,
                Some(d) = self.running.next(), if !self.running.is_empty() => self.done(d),
                r = out.write(), if out.pending() > 0 => r?,
                Some(t) = recv_opt(&mut self.tmf_rx) => self.tmf_done(t),
                _ = self.cancel.cancelled() => return Ok(()),
                Some(n) = self.notices.recv() => self.notice(n),
                _ = sleep_until_opt(deadline) => self.core.handle_timeout(Instant::now()),
                _ = sleep_until_opt(stall) => {
                    return Err(ConnError::PeerNotReading(self.limits.nop_timeout))
                }
            }
            self.events();
            self.drain_ready(&mut frames)?;
        }
    }

    /// Take what is already there (finished commands, frames in the read
    /// buffer or on the socket) without going back to the `select!`, so
    /// that a burst is handled, and its answers sent, as one batch.
    fn drain_ready(&mut self, frames: &mut FrameReader<OwnedReadHalf>) -> Result<(), ConnError> {
        for _ in 0..BATCH {
            if self.closing.is_some() {
                break;
            }
            if let Some(Some(d)) = self.poll_running() {
                self.done(d);
            } else if self.out.is_full() {
                break;
            } else if let Some(f) = frames.next().now_or_never() {
                self.frame(f)?;
            } else {
                break;
            }
            self.events();
            // Large answers go out as they are ready, so that the
            // initiator can reuse the queue slots while we go on.
            if self.core.pending_transmits() > 0 {
                self.out.push(self.core.poll_transmit_all());
                if self.out.pending() >= WRITE_EARLY {
                    self.out.write_now()?;
                }
            }
        }
        Ok(())
    }

    /// A finished command, if one is ready now.
    fn poll_running(&mut self) -> Option<Option<Done>> {
        if self.running.is_empty() {
            return None;
        }
        self.running.next().now_or_never()
    }

    /// When a stalled output ends the connection (NOP-In pings enabled:
    /// an initiator that reads nothing could not answer a ping either).
    fn stall_deadline(&mut self) -> Option<Instant> {
        if !self.out.is_full() || self.limits.nop_interval.is_none() {
            self.stalled = None;
            return None;
        }
        let since = *self.stalled.get_or_insert_with(Instant::now);
        Some(since + self.limits.nop_timeout)
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
        self.running
            .push(exec::execute(session, task, cmd).instrument(span).boxed());
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
        let back = match &self.tmf_tx {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.tmf_rx = Some(rx);
                self.tmf_tx.insert(tx).clone()
            }
        };
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

    /// Encode what the core has to send and write what the socket takes
    /// now; the rest waits in the `select!`.
    fn flush(&mut self) -> Result<(), ConnError> {
        if self.core.pending_transmits() > 0 {
            self.out.push(self.core.poll_transmit_all());
        }
        Ok(self.out.write_now()?)
    }

    /// The connection is ending: its tasks are terminated (RFC 7143 §6.1.2
    /// at ERL 0, connection allegiance: no other connection can answer
    /// them), commands still running finish on their own and are dropped,
    /// and what is queued (e.g. a Logout Response) is sent before the
    /// socket is shut down, for at most `linger`.
    pub(crate) async fn finish(mut self, linger: Duration) {
        let conn_id = self.conn_id;
        for t in self.session.core.tasks_where(|t| t.conn == conn_id) {
            if t.abort() == TaskPhase::Collecting {
                self.session.core.finish_task(&t);
            }
        }
        let running = std::mem::take(&mut self.running);
        if !running.is_empty() {
            let session = self.session.clone();
            let drain = running.for_each(move |d| {
                session.core.finish_task(&d.task);
                std::future::ready(())
            });
            tokio::spawn(drain.in_current_span());
        }
        let mut tmf_rx = self.tmf_rx.take();
        if let Some(rx) = tmf_rx.as_mut() {
            rx.close();
        }
        while let Some(Ok((resp, _))) = tmf_rx.as_mut().map(|rx| rx.try_recv()) {
            // Frees the window slot the TMF held.
            self.core.tmf_response(resp);
        }
        // TMFs still running answer into the closed channel: their slots
        // are freed here.
        self.core.release_held();
        let _ = tokio::time::timeout(linger, self.out.close()).await;
    }
}

/// The next message of a channel that may not exist yet.
async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
