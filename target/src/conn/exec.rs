//! The session as a connection core sees it, and running one command on
//! the device server.
//!
//! [`SessionHooks`] implements `proto::session::target::TargetSession` over
//! the session table of `crate::session`: the session-wide CmdSN window
//! (RFC 7143 §4.2.2.1) and the task registry that Task Management, Logout
//! and the session's end act on (§4.2.3.3, §11.5).

use std::sync::Arc;

use proto::scsi::Status;
use proto::serial::CmdSn;
use proto::session::target::{Command, NewTask, Outcome, Refusal, TargetSession, TaskId};
use proto::session::Admit;

use crate::device;
use crate::server::Session;
use crate::session::{RegisterError, TaskShared};
use crate::sync::lock;

/// The session of one connection, for its core.
#[derive(Debug, Clone)]
pub(crate) struct SessionHooks {
    session: Arc<Session>,
    /// The connection's unique id (tasks record their allegiance).
    conn_id: u64,
}

impl SessionHooks {
    pub(crate) fn new(session: Arc<Session>, conn_id: u64) -> Self {
        SessionHooks { session, conn_id }
    }

    /// The registered task `itt` if it is still task `id`.
    pub(crate) fn task(&self, itt: u32, id: TaskId) -> Option<Arc<TaskShared>> {
        self.session.core.task(itt).filter(|t| t.id == id)
    }
}

impl TargetSession for SessionHooks {
    fn admit(&self, cmd_sn: CmdSn, immediate: bool) -> Admit {
        let a = lock(&self.session.core.window).admit(cmd_sn, immediate);
        if a != (Admit::Accept { counted: true }) && !immediate {
            tracing::debug!(
                cmd_sn = cmd_sn.get(),
                ?a,
                "command outside the CmdSN window"
            );
        }
        a
    }

    fn window(&self) -> (CmdSn, CmdSn) {
        self.session.core.window_snapshot()
    }

    fn release_slot(&self) {
        self.session.core.complete_command();
    }

    fn register_task(&self, t: &NewTask) -> Result<TaskId, Refusal> {
        let core = &self.session.core;
        if !t.counted {
            // Immediate commands bypass the CmdSN window; bound them too
            // (RFC 7143 §11.17.1 Reject reason 0x06).
            let depth = lock(&core.window).queue_depth();
            if core.tasks_where(|t| !t.counted).len() >= depth as usize {
                return Err(Refusal::TooManyImmediate);
            }
        }
        match core.register_task(t.itt, t.lun, self.conn_id, t.cmd_sn, t.counted) {
            Ok(task) => Ok(task.id),
            Err(RegisterError::TaskInProgress) => Err(Refusal::TaskInProgress),
            Err(RegisterError::Closed) => Err(Refusal::Closed),
        }
    }

    fn is_aborted(&self, itt: u32, id: TaskId) -> bool {
        self.task(itt, id).is_none_or(|t| t.is_aborted())
    }

    fn retire_task(&self, itt: u32, id: TaskId) -> bool {
        let Some(t) = self.session.core.remove_task(itt, id) else {
            return false;
        };
        let answer = t.start_responding();
        // Anyone waiting for it (a TMF) may go on: its answer, if any, is
        // queued on this connection right after this call.
        t.set_done();
        answer
    }

    fn descriptor_sense(&self, lun: u64) -> bool {
        match (&self.session.target, &self.session.nexus) {
            (Some(t), Some(n)) => device::descriptor_sense(&t.device, n, lun),
            _ => false,
        }
    }
}

/// A command's end, back to its connection's driver.
#[derive(Debug)]
pub(crate) struct Done {
    pub task: Arc<TaskShared>,
    /// `None`: aborted before it ran; no answer.
    pub outcome: Option<Outcome>,
}

/// Run one command on the device server; its outcome for the connection's
/// driver.
pub(crate) async fn execute(session: Arc<Session>, task: Arc<TaskShared>, cmd: Command) -> Done {
    let outcome = run(&session, &task, cmd).await;
    Done { task, outcome }
}

async fn run(session: &Session, task: &TaskShared, cmd: Command) -> Option<Outcome> {
    let (Some(target), Some(nexus)) = (&session.target, &session.nexus) else {
        return None;
    };
    if !task.start_executing() {
        return None;
    }
    let dev = &target.device;
    // SPDTL of the write direction, from the CDB. RFC 7143 §11.4.5.1: the
    // residual compares EDTL with it; what the device server does with the
    // bytes it got is decided in one place, `scsi::transfer::plan`.
    let data_out_spdtl = device::data_out_length(dev, nexus, cmd.lun, &cmd.cdb);
    let req = device::Request {
        lun: cmd.lun,
        cdb: cmd.cdb,
        data_out: cmd.data_out,
        expected_data_in_length: if cmd.read { cmd.edtl } else { 0 },
        task_attr: cmd.attr,
    };
    let out = device::execute(dev, nexus, req).await;
    Some(Outcome {
        status: Status(out.status),
        sense: out.sense,
        data_in: out.data_in,
        data_out_spdtl,
    })
}
