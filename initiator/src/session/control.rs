//! Exchanges the initiator starts besides SCSI commands: Logout (RFC 7143
//! §11.14, also on the target's request, §11.9.1 events 1 and 4) and Task
//! Management (§11.5). The core sends them and bounds the wait for the
//! answer (`proto::session::initiator`); here the caller waits for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::pdu::{LogoutReason, LogoutResponse, LogoutResponseCode, TaskMgmtResponse, TmfFunction};
use proto::serial::CmdSn;
use proto::session::initiator::ControlError;
use tokio::sync::oneshot;

use super::state::{Inner, Phase, Waiter};
use crate::error::{Error, Lost, ProtocolError, Result, TimedOut};
use crate::sync::lock;

impl Inner {
    /// The target asked for a logout: stop issuing, let in-flight commands
    /// finish (bounded by the time the target gave us), log out, then
    /// reconnect as in recovery.
    pub(super) fn start_draining(&self, epoch: u64) {
        let mut st = lock(&self.st);
        if st.epoch == epoch && st.phase == Phase::Up {
            st.phase = Phase::Draining;
            st.core.pause();
        }
    }

    pub(super) async fn graceful_reconnect(self: Arc<Self>, epoch: u64, within: Duration) {
        {
            let st = lock(&self.st);
            if st.epoch != epoch || st.phase != Phase::Draining {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + within.max(Duration::from_secs(1));
        loop {
            let notified = self.idle.notified();
            if lock(&self.st).core.issued_count() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let _ = self.send_logout(LogoutReason::CLOSE_SESSION).await;
        self.fail_session(epoch, "target requested logout".into(), Duration::ZERO);
    }

    pub(super) async fn send_logout(
        self: &Arc<Self>,
        reason: LogoutReason,
    ) -> Result<LogoutResponse> {
        let (tx, rx) = oneshot::channel();
        let (epoch, after) = {
            let mut st = lock(&self.st);
            let Some(itt) = st.core.logout(reason, Instant::now()) else {
                return Err(Error::Closed);
            };
            st.waiters.insert(itt, Waiter::Logout(tx));
            (st.epoch, self.flush(&mut st))
        };
        self.after(epoch, after);
        match rx.await {
            Ok(Ok(r)) if r.response == LogoutResponseCode::CLOSED_SUCCESSFULLY => Ok(r),
            Ok(Ok(r)) => Err(ProtocolError::LogoutRefused(r.response).into()),
            Ok(Err(ControlError::Timeout)) => {
                Err(Error::Timeout(TimedOut::NoAnswer("Logout Response")))
            }
            Ok(Err(ControlError::Lost)) | Err(_) => {
                Err(Error::ConnectionLost(Lost::During("logout")))
            }
        }
    }

    /// A Task Management request (on the referenced task's connection, or
    /// the first), and its answer. A successful ABORT TASK or LOGICAL UNIT
    /// RESET has ended the commands it aborted by the time this returns.
    pub(super) async fn task_management(
        self: Arc<Self>,
        function: TmfFunction,
        lun: Option<u64>,
        itt_ref: Option<u32>,
    ) -> Result<(TaskMgmtResponse, CmdSn)> {
        let (tx, rx) = oneshot::channel();
        let (epoch, after, sent_cmd_sn) = {
            let mut st = lock(&self.st);
            if st.phase != Phase::Up {
                return Err(Error::ConnectionLost(Lost::NotUp));
            }
            let now = Instant::now();
            let Some((itt, cmd_sn)) = st.core.task_management(function, lun, itt_ref, now) else {
                return Err(Error::ConnectionLost(Lost::NotUp));
            };
            st.waiters.insert(itt, Waiter::Tmf(tx));
            (st.epoch, self.flush(&mut st), cmd_sn)
        };
        self.after(epoch, after);
        match rx.await {
            Ok(Ok(r)) => Ok((r, sent_cmd_sn)),
            Ok(Err(ControlError::Timeout)) => {
                Err(Error::Timeout(TimedOut::TaskManagement(function)))
            }
            Ok(Err(ControlError::Lost)) | Err(_) => {
                Err(Error::ConnectionLost(Lost::During("task management")))
            }
        }
    }
}
