//! Task Management Functions (RFC 7143 §11.5, §11.6; SAM-5 §7).
//!
//! ABORT TASK is never refused (VMware ESXi drops the connection
//! otherwise): it answers FUNCTION COMPLETE or TASK DOES NOT EXIST.
//! The TMF response is sent only after the affected tasks are terminated
//! (RFC 7143 §4.2.3.3: "the target MUST ... not send the Task Management
//! Function Response ... until ... all [affected] tasks ... have been
//! terminated"); aborted tasks get no response of their own.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto::pdu::{TaskMgmtRequest, TaskMgmtResponse, TmfFunction, TmfResponse};
use proto::serial::{CmdSn, StatSn};
use tracing::info;

use crate::device;
use crate::server::{ServerShared, Session};
use crate::session::{TaskPhase, TaskShared};

/// How long a TMF waits for an executing task to finish.
const TASK_WAIT: Duration = Duration::from_secs(30);

/// Something to do after the TMF response is queued.
#[derive(Debug)]
pub enum After {
    /// TARGET COLD RESET: RFC 7143 §11.5.1 "the target then closes all
    /// of its TCP connections to all initiators (terminates all sessions)".
    DropAllSessions { target: String },
}

impl After {
    pub async fn run(self, shared: &ServerShared) {
        match self {
            After::DropAllSessions { target } => {
                // Give the writer a moment to put the response on the wire.
                tokio::time::sleep(Duration::from_millis(100)).await;
                for s in shared.sessions_of(&target) {
                    shared.end_session(&s).await;
                }
            }
        }
    }
}

fn response(req: &TaskMgmtRequest, r: TmfResponse) -> TaskMgmtResponse {
    TaskMgmtResponse {
        response: r,
        itt: req.itt,
        stat_sn: StatSn::new(0),
        exp_cmd_sn: CmdSn::new(0),
        max_cmd_sn: CmdSn::new(0),
        data: Bytes::new(),
    }
}

/// Abort tasks and wait for those that were executing. Returns how many
/// were aborted.
async fn abort_all(session: &Session, tasks: Vec<Arc<TaskShared>>) -> usize {
    let mut waits = Vec::new();
    let mut n = 0;
    for t in tasks {
        match t.abort() {
            TaskPhase::Collecting => {
                session.core.finish_task(&t);
                n += 1;
            }
            TaskPhase::Executing => {
                waits.push(t);
                n += 1;
            }
            TaskPhase::Responding => waits.push(t),
            TaskPhase::Aborted => {}
        }
    }
    for t in waits {
        let _ = tokio::time::timeout(TASK_WAIT, t.wait_done()).await;
    }
    n
}

/// Handle one TMF request; returns the response and an optional follow-up.
pub async fn handle(
    shared: &ServerShared,
    session: &Arc<Session>,
    req: &TaskMgmtRequest,
) -> (TaskMgmtResponse, Option<After>) {
    let f = req.function;
    info!(function = ?f, lun = req.lun, rtt = req.referenced_task_tag, "task management");
    let Some(target) = session.target.clone() else {
        return (
            response(req, TmfResponse::FUNCTION_AUTHORIZATION_FAILED),
            None,
        );
    };
    // LUN masking: a LUN the I_T nexus may not access does not exist for it.
    let lun_ok = session
        .nexus
        .as_ref()
        .is_some_and(|n| device::has_lun(&target.device, n, req.lun));
    let r = match f {
        TmfFunction::ABORT_TASK => abort_task(session, req).await,
        TmfFunction::ABORT_TASK_SET | TmfFunction::CLEAR_TASK_SET => {
            if !lun_ok {
                TmfResponse::LUN_DOES_NOT_EXIST
            } else {
                let lun = req.lun;
                // ABORT TASK SET: this I_T nexus only. CLEAR TASK SET: every
                // initiator's tasks on the LU (SAM-5 §7.4, TST=000b).
                let sessions = if f == TmfFunction::CLEAR_TASK_SET {
                    shared.sessions_of(&target.name)
                } else {
                    vec![session.clone()]
                };
                for s in sessions {
                    let tasks = s.core.tasks_where(|t| t.lun == lun && t.itt != req.itt);
                    abort_all(&s, tasks).await;
                }
                TmfResponse::FUNCTION_COMPLETE
            }
        }
        TmfFunction::LOGICAL_UNIT_RESET => {
            if !lun_ok {
                TmfResponse::LUN_DOES_NOT_EXIST
            } else {
                let lun = req.lun;
                for s in shared.sessions_of(&target.name) {
                    let tasks = s.core.tasks_where(|t| t.lun == lun);
                    abort_all(&s, tasks).await;
                }
                if let Some(n) = &session.nexus {
                    device::lun_reset(&target.device, lun, n).await;
                }
                TmfResponse::FUNCTION_COMPLETE
            }
        }
        TmfFunction::TARGET_WARM_RESET | TmfFunction::TARGET_COLD_RESET => {
            for s in shared.sessions_of(&target.name) {
                let tasks = s.core.tasks_where(|_| true);
                abort_all(&s, tasks).await;
            }
            if let Some(n) = &session.nexus {
                device::target_reset(&target.device, n, f == TmfFunction::TARGET_COLD_RESET).await;
            }
            if f == TmfFunction::TARGET_COLD_RESET {
                return (
                    response(req, TmfResponse::FUNCTION_COMPLETE),
                    Some(After::DropAllSessions {
                        target: target.name.clone(),
                    }),
                );
            }
            TmfResponse::FUNCTION_COMPLETE
        }
        // Task reassignment needs ErrorRecoveryLevel 2 (RFC 7143 §11.5.1:
        // "Task allegiance reassignment not supported").
        TmfFunction::TASK_REASSIGN => TmfResponse::TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED,
        // No ACA support (NACA=0 in every CDB we accept).
        TmfFunction::CLEAR_ACA => TmfResponse::TMF_NOT_SUPPORTED,
        _ => TmfResponse::FUNCTION_REJECTED,
    };
    (response(req, r), None)
}

async fn abort_task(session: &Session, req: &TaskMgmtRequest) -> TmfResponse {
    let rtt = req.referenced_task_tag;
    match session.core.task(rtt) {
        Some(t) => match t.abort() {
            TaskPhase::Collecting => {
                session.core.finish_task(&t);
                TmfResponse::FUNCTION_COMPLETE
            }
            TaskPhase::Executing | TaskPhase::Aborted => {
                let _ = tokio::time::timeout(TASK_WAIT, t.wait_done()).await;
                TmfResponse::FUNCTION_COMPLETE
            }
            TaskPhase::Responding => {
                // Completed before the abort: its response stands.
                let _ = tokio::time::timeout(TASK_WAIT, t.wait_done()).await;
                TmfResponse::TASK_DOES_NOT_EXIST
            }
        },
        None => {
            // RFC 7143 §11.5.1 b): a task not received yet whose RefCmdSN is
            // inside the window and below the TMF's CmdSN is considered
            // received, and the abort completes.
            let not_yet = crate::sync::lock(&session.core.window)
                .consider_received(req.ref_cmd_sn, req.cmd_sn);
            if not_yet {
                TmfResponse::FUNCTION_COMPLETE
            } else {
                TmfResponse::TASK_DOES_NOT_EXIST
            }
        }
    }
}
