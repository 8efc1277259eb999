//! The exchanges the initiator starts besides SCSI commands, and the
//! timers: NOP-Out pings on idle connections and their timeout (RFC 7143
//! §11.18), command timeouts answered with ABORT TASK (§11.5.1), the bound
//! on commands waiting for a closed CmdSN window (§4.2.2.1), Task
//! Management (§11.5, §11.6), the ABORT TASK that plugs a rejected
//! command's CmdSN gap (§7.3), and Logout (§11.14, §11.15).
//!
//! Every request here is immediate (I bit): it carries the current CmdSN
//! without advancing it and is not gated by the window (§4.2.2.1, §3.2.2.1).

use std::time::Instant;

use bytes::Bytes;

use super::{
    CommandContext, CommandError, ConnError, ConnId, ControlError, Event, InitiatorSession,
};
use crate::pdu::{
    LogoutReason, LogoutRequest, LogoutResponse, NopOut, TaskMgmtRequest, TaskMgmtResponse,
    TmfFunction, TmfResponse, RESERVED_TAG,
};
use crate::serial::{CmdSn, DataSn, StatSn};

/// A pending exchange, by its ITT.
#[derive(Debug, Clone, Copy)]
pub(super) enum Control {
    /// Our NOP-Out ping on `conn`, sent at `sent`.
    Ping {
        conn: ConnId,
        sent: Instant,
    },
    Tmf {
        conn: ConnId,
        why: TmfPurpose,
        function: TmfFunction,
        lun: u64,
        /// The CmdSN the request carried.
        cmd_sn: CmdSn,
        deadline: Instant,
    },
    Logout {
        deadline: Instant,
    },
}

/// Who asked for a Task Management request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TmfPurpose {
    /// The shell ([`InitiatorSession::task_management`]): answered with
    /// [`Event::Tmf`].
    User { ref_itt: Option<u32> },
    /// Plugging a rejected command's CmdSN gap: the answer is only consumed.
    Plug,
    /// Aborting command `itt` (CmdSN `cmd_sn`) after the command timeout.
    TimeoutAbort { itt: u32, cmd_sn: CmdSn },
}

impl<T: CommandContext> InitiatorSession<T> {
    /// Timers due at `now`: ping timeouts, unanswered TMF/Logout, pings on
    /// idle connections, command timeouts, a window closed too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.expire_pings(now) {
            // The session is being failed; the rest waits for recovery.
            return;
        }
        self.expire_control(now);
        self.send_pings(now);
        self.abort_timed_out(now);
        self.expire_window(now);
    }

    /// When [`InitiatorSession::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let cfg = &self.config;
        let pings = self
            .conns
            .iter()
            .filter(|c| !c.failed && c.ping.is_none())
            .map(|c| c.last_rx + cfg.nop_interval);
        let control = self.control.values().map(|c| match c {
            Control::Ping { sent, .. } => *sent + cfg.nop_timeout,
            Control::Tmf { deadline, .. } | Control::Logout { deadline } => *deadline,
        });
        let tasks = self
            .tasks
            .values()
            .filter(|t| !t.aborting)
            .map(|t| t.deadline);
        let window = self.window_closed_since.map(|s| s + cfg.command_timeout);
        pings.chain(control).chain(tasks).chain(window).min()
    }

    /// Ask for a Task Management function (§11.5): immediate, on the
    /// connection of the referenced task (allegiance), else the first.
    /// Returns the request's ITT and CmdSN (None without a connection); the
    /// answer comes as [`Event::Tmf`]. A successful ABORT TASK or LOGICAL
    /// UNIT RESET first ends the commands it aborted ([`CommandError`]).
    pub fn task_management(
        &mut self,
        function: TmfFunction,
        lun: Option<u64>,
        ref_itt: Option<u32>,
        now: Instant,
    ) -> Option<(u32, CmdSn)> {
        let (conn, lun, ref_cmd_sn) = match ref_itt.and_then(|i| self.tasks.get(&i)) {
            Some(t) => (t.conn, t.q.cmd.lun, t.cmd_sn),
            None => (self.first_conn()?, lun.unwrap_or(0), self.window.cmd_sn()),
        };
        let why = TmfPurpose::User { ref_itt };
        let itt = self.send_tmf(conn, why, function, lun, ref_itt, ref_cmd_sn, now);
        Some((itt, self.window.cmd_sn()))
    }

    /// Log out (§11.14) on the first connection with `reason` (its CID for
    /// the connection reasons). Returns the ITT; the answer comes as
    /// [`Event::Logout`]. None without a connection.
    pub fn logout(&mut self, reason: LogoutReason, now: Instant) -> Option<u32> {
        let conn = self.first_conn()?;
        let cid = self.conns[conn.0].cid;
        let itt = self.alloc_itt();
        let deadline = now + self.config.response_timeout;
        self.control.insert(itt, Control::Logout { deadline });
        let cmd_sn = self.window.cmd_sn();
        self.queue_pdu(
            conn,
            LogoutRequest {
                immediate: true,
                reason_code: reason,
                itt,
                cid,
                cmd_sn,
                exp_stat_sn: StatSn::new(0),
                data: Bytes::new(),
            },
        );
        Some(itt)
    }

    fn first_conn(&self) -> Option<ConnId> {
        self.conns.iter().position(|c| !c.failed).map(ConnId)
    }

    #[allow(clippy::too_many_arguments)]
    fn send_tmf(
        &mut self,
        conn: ConnId,
        why: TmfPurpose,
        function: TmfFunction,
        lun: u64,
        ref_itt: Option<u32>,
        ref_cmd_sn: CmdSn,
        now: Instant,
    ) -> u32 {
        let itt = self.alloc_itt();
        let cmd_sn = self.window.cmd_sn();
        self.control.insert(
            itt,
            Control::Tmf {
                conn,
                why,
                function,
                lun,
                cmd_sn,
                deadline: now + self.config.response_timeout,
            },
        );
        self.queue_pdu(
            conn,
            TaskMgmtRequest {
                immediate: true,
                function,
                lun,
                itt,
                referenced_task_tag: ref_itt.unwrap_or(RESERVED_TAG),
                cmd_sn,
                exp_stat_sn: StatSn::new(0),
                ref_cmd_sn,
                exp_data_sn: DataSn::new(0),
                data: Bytes::new(),
            },
        );
        itt
    }

    /// Plug the CmdSN gap a rejected command left (§7.3: "the initiator
    /// MUST plug the CmdSN gap ... by aborting the task"): an immediate
    /// ABORT TASK whose RefCmdSN is the command's, which the target "must
    /// consider ... as received" (§11.5.1).
    pub(super) fn plug_cmd_sn_gap(
        &mut self,
        conn: ConnId,
        lun: u64,
        itt: u32,
        cmd_sn: CmdSn,
        now: Instant,
    ) {
        let f = TmfFunction::ABORT_TASK;
        self.send_tmf(conn, TmfPurpose::Plug, f, lun, Some(itt), cmd_sn, now);
    }

    pub(super) fn on_tmf_response(&mut self, r: TaskMgmtResponse) {
        if let Some(c @ Control::Tmf { .. }) = self.control.get(&r.itt).copied() {
            self.control.remove(&r.itt);
            self.control_ended(r.itt, c, Ok(Answer::Tmf(r)));
        }
    }

    pub(super) fn on_logout_response(&mut self, r: LogoutResponse) {
        if let Some(c @ Control::Logout { .. }) = self.control.get(&r.itt).copied() {
            self.control.remove(&r.itt);
            self.control_ended(r.itt, c, Ok(Answer::Logout(r)));
        }
    }

    pub(super) fn ping_answered(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(conn.0) {
            c.ping = None;
        }
    }

    /// An exchange ended: answered, timed out or lost.
    pub(super) fn control_ended(
        &mut self,
        itt: u32,
        c: Control,
        answer: Result<Answer, ControlError>,
    ) {
        match (c, answer) {
            (Control::Ping { conn, .. }, _) => self.ping_answered(conn),
            (Control::Logout { .. }, Ok(Answer::Logout(r))) => {
                self.events.push_back(Event::Logout { itt, result: Ok(r) })
            }
            (Control::Logout { .. }, Err(e)) => self.events.push_back(Event::Logout {
                itt,
                result: Err(e),
            }),
            (Control::Tmf { .. }, Ok(Answer::Tmf(r))) => self.tmf_answered(c, r),
            (Control::Tmf { conn, why, .. }, Err(e)) => self.tmf_failed(itt, conn, why, e),
            _ => {}
        }
    }

    fn tmf_answered(&mut self, c: Control, r: TaskMgmtResponse) {
        let Control::Tmf {
            why,
            function,
            lun,
            cmd_sn,
            ..
        } = c
        else {
            return;
        };
        let done = r.response == TmfResponse::FUNCTION_COMPLETE;
        match why {
            TmfPurpose::Plug => {}
            TmfPurpose::TimeoutAbort { itt, cmd_sn } => {
                if self.is_aborting(itt, cmd_sn) {
                    let after = self.config.command_timeout;
                    let abort = Ok(r.response);
                    self.finish(itt, Err(CommandError::TimedOut { after, abort }));
                }
            }
            TmfPurpose::User { ref_itt } => {
                if done && function == TmfFunction::ABORT_TASK {
                    // The target ended the task: no response follows.
                    if let Some(itt) = ref_itt {
                        self.finish(itt, Err(CommandError::Aborted));
                    }
                } else if done && function == TmfFunction::LOGICAL_UNIT_RESET {
                    // SAM-5: the LU's tasks issued before the reset are
                    // aborted and get no status.
                    let victims: Vec<u32> = self
                        .tasks
                        .iter()
                        .filter(|(_, t)| t.q.cmd.lun == lun && t.cmd_sn.lt(cmd_sn))
                        .map(|(&itt, _)| itt)
                        .collect();
                    for itt in victims {
                        self.finish(itt, Err(CommandError::LunReset));
                    }
                }
                self.events.push_back(Event::Tmf {
                    itt: r.itt,
                    result: Ok(r),
                });
            }
        }
    }

    fn tmf_failed(&mut self, itt: u32, conn: ConnId, why: TmfPurpose, e: ControlError) {
        match why {
            TmfPurpose::Plug => {}
            TmfPurpose::User { .. } => self.events.push_back(Event::Tmf {
                itt,
                result: Err(e),
            }),
            // Lost: the command was put back in the queue with the rest.
            TmfPurpose::TimeoutAbort { .. } if e == ControlError::Lost => {}
            TmfPurpose::TimeoutAbort { itt, cmd_sn } => {
                if self.is_aborting(itt, cmd_sn) {
                    let after = self.config.command_timeout;
                    let abort = Err(e);
                    self.finish(itt, Err(CommandError::TimedOut { after, abort }));
                }
                // Task management did not answer either: at ERL 0 the only
                // recovery left is session recovery (§7.1.5).
                self.fail_conn(conn, ConnError::AbortUnanswered);
            }
        }
    }

    /// The same task (not a later one that reused the ITT), being aborted.
    fn is_aborting(&self, itt: u32, cmd_sn: CmdSn) -> bool {
        self.tasks
            .get(&itt)
            .is_some_and(|t| t.cmd_sn == cmd_sn && t.aborting)
    }

    pub(super) fn fail_conn(&mut self, conn: ConnId, error: ConnError) {
        if let Some(c) = self.conns.get_mut(conn.0) {
            if !c.failed {
                c.failed = true;
                self.events.push_back(Event::Failed { conn, error });
            }
        }
    }

    /// A ping unanswered for the NOP timeout fails its connection. Returns
    /// whether one did.
    fn expire_pings(&mut self, now: Instant) -> bool {
        let timeout = self.config.nop_timeout;
        let mut late: Vec<(u32, ConnId)> = self
            .control
            .iter()
            .filter_map(|(&itt, c)| match c {
                Control::Ping { conn, sent } if now >= *sent + timeout => Some((itt, *conn)),
                _ => None,
            })
            .collect();
        late.sort();
        for &(itt, conn) in &late {
            self.control.remove(&itt);
            self.fail_conn(conn, ConnError::PingTimeout { conn: conn.0, itt });
        }
        !late.is_empty()
    }

    fn expire_control(&mut self, now: Instant) {
        let mut late: Vec<u32> = self
            .control
            .iter()
            .filter(|(_, c)| match c {
                Control::Tmf { deadline, .. } | Control::Logout { deadline } => now >= *deadline,
                Control::Ping { .. } => false,
            })
            .map(|(&itt, _)| itt)
            .collect();
        late.sort_unstable();
        for itt in late {
            if let Some(c) = self.control.remove(&itt) {
                self.control_ended(itt, c, Err(ControlError::Timeout));
            }
        }
    }

    /// §11.18: a ping is an immediate NOP-Out with a valid ITT and TTT
    /// 0xffffffff, asking for a NOP-In; CmdSN is not advanced.
    fn send_pings(&mut self, now: Instant) {
        let interval = self.config.nop_interval;
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.failed || c.ping.is_some() || now < c.last_rx + interval {
                continue;
            }
            let itt = self.alloc_itt();
            let conn = ConnId(i);
            self.control.insert(itt, Control::Ping { conn, sent: now });
            self.conns[i].ping = Some(itt);
            let cmd_sn = self.window.cmd_sn();
            self.queue_pdu(
                conn,
                NopOut {
                    immediate: true,
                    lun: 0,
                    itt,
                    ttt: RESERVED_TAG,
                    cmd_sn,
                    exp_stat_sn: StatSn::new(0),
                    data: Bytes::new(),
                },
            );
        }
    }

    /// Commands past the command timeout: ABORT TASK on their connection;
    /// the answer (or its absence) ends them.
    fn abort_timed_out(&mut self, now: Instant) {
        let mut due: Vec<(u32, CmdSn, ConnId, u64)> = Vec::new();
        for (&itt, t) in self.tasks.iter_mut() {
            if !t.aborting && now >= t.deadline {
                t.aborting = true;
                due.push((itt, t.cmd_sn, t.conn, t.q.cmd.lun));
            }
        }
        due.sort_by_key(|d| d.0);
        for (itt, cmd_sn, conn, lun) in due {
            let why = TmfPurpose::TimeoutAbort { itt, cmd_sn };
            let f = TmfFunction::ABORT_TASK;
            self.send_tmf(conn, why, f, lun, Some(itt), cmd_sn, now);
        }
    }

    /// Commands that never got into the CmdSN window are bounded by the
    /// command timeout too.
    fn expire_window(&mut self, now: Instant) {
        let waited = self.config.command_timeout;
        let Some(since) = self.window_closed_since else {
            return;
        };
        if now < since + waited {
            return;
        }
        self.window_closed_since = None;
        let (cmd_sn, max_cmd_sn) = (self.window.cmd_sn(), self.window.max_cmd_sn());
        for q in std::mem::take(&mut self.queue) {
            let result = Err(CommandError::WindowClosed {
                cmd_sn,
                max_cmd_sn,
                waited,
            });
            self.events.push_back(Event::Completed {
                ctx: q.cmd.ctx,
                itt: RESERVED_TAG,
                result,
            });
        }
    }
}

/// The answer to an exchange.
#[derive(Debug)]
pub(super) enum Answer {
    Tmf(TaskMgmtResponse),
    Logout(LogoutResponse),
}
