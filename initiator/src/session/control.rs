//! Exchanges the initiator starts besides SCSI commands: Logout (RFC 7143
//! §11.14, also on the target's request, §11.9.1 events 1 and 4) and Task
//! Management (§11.5), each waiting for its response with a bound; and the
//! ABORT TASK that plugs a rejected command's CmdSN gap (§7.3).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto::pdu::{
    LogoutReason, LogoutRequest, LogoutResponse, LogoutResponseCode, Pdu, TaskMgmtRequest,
    TaskMgmtResponse, TmfFunction, RESERVED_TAG,
};
use proto::serial::{CmdSn, DataSn, StatSn};
use tokio::sync::oneshot;

use super::state::{Control, Inner, Phase, State};
use crate::error::{Error, ProtocolError, Result};
use crate::sync::lock;

impl Inner {
    /// The target asked for a logout: stop issuing, let in-flight commands
    /// finish (bounded by the time the target gave us), log out, then
    /// reconnect as in recovery.
    pub(super) fn start_draining(&self, epoch: u64) {
        let mut st = lock(&self.st);
        if st.epoch == epoch && st.phase == Phase::Up {
            st.phase = Phase::Draining;
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

    pub(super) async fn send_logout(
        self: &Arc<Self>,
        reason: LogoutReason,
    ) -> Result<LogoutResponse> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.st);
            let Some(conn) = st.conns.first() else {
                return Err(Error::Closed);
            };
            let cid = conn.cid;
            let itt = st.alloc_itt();
            st.control.insert(itt, Control::Logout(tx));
            let pdu = Pdu::LogoutRequest(LogoutRequest {
                immediate: true,
                reason_code: reason,
                itt,
                cid,
                cmd_sn: st.window.cmd_sn(),
                exp_stat_sn: StatSn::new(0),
                data: Bytes::new(),
            });
            let _ = st.conns[0].tx.send(pdu);
        }
        match tokio::time::timeout(self.cfg.login_timeout, rx).await {
            Ok(Ok(r)) if r.response == LogoutResponseCode::CLOSED_SUCCESSFULLY => Ok(r),
            Ok(Ok(r)) => Err(ProtocolError::LogoutRefused(r.response).into()),
            Ok(Err(_)) => Err(Error::ConnectionLost(
                "connection closed during logout".into(),
            )),
            Err(_) => Err(Error::Timeout("no Logout Response".into())),
        }
    }

    /// Plug the CmdSN gap a rejected command left (RFC 7143 §7.3: "the
    /// initiator MUST plug the CmdSN gap ... by aborting the task"): an
    /// immediate ABORT TASK whose RefCmdSN is the command's, which the
    /// target "must consider ... as received" (§11.5.1). The answer only
    /// needs to be consumed.
    pub(super) fn plug_cmd_sn_gap(
        &self,
        st: &mut State,
        conn: usize,
        lun: u64,
        itt: u32,
        cmd_sn: CmdSn,
    ) {
        let (tx, _) = oneshot::channel();
        let tmf_itt = st.alloc_itt();
        st.control.insert(tmf_itt, Control::Tmf(tx));
        let pdu = Pdu::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function: TmfFunction::ABORT_TASK,
            lun,
            itt: tmf_itt,
            referenced_task_tag: itt,
            cmd_sn: st.window.cmd_sn(),
            exp_stat_sn: StatSn::new(0),
            ref_cmd_sn: cmd_sn,
            exp_data_sn: DataSn::new(0),
            data: Bytes::new(),
        });
        tracing::debug!(
            itt,
            cmd_sn = cmd_sn.get(),
            "ABORT TASK to plug the rejected command's CmdSN"
        );
        let _ = st.conns.get(conn).map(|c| c.tx.send(pdu));
    }

    pub(super) async fn task_management(
        self: Arc<Self>,
        function: TmfFunction,
        lun: Option<u64>,
        itt_ref: Option<u32>,
    ) -> Result<(TaskMgmtResponse, CmdSn)> {
        let (tx, rx) = oneshot::channel();
        let sent_cmd_sn;
        {
            let mut st = lock(&self.st);
            if st.phase != Phase::Up {
                return Err(Error::ConnectionLost("session is not up".into()));
            }
            let (conn, lun, ref_cmd_sn) = match itt_ref.and_then(|i| st.tasks.get(&i)) {
                Some(t) => (t.conn, t.p.lun, t.cmd_sn),
                None => (0, lun.unwrap_or(0), st.window.cmd_sn()),
            };
            let itt = st.alloc_itt();
            st.control.insert(itt, Control::Tmf(tx));
            let pdu = Pdu::TaskMgmtRequest(TaskMgmtRequest {
                immediate: true,
                function,
                lun,
                itt,
                referenced_task_tag: itt_ref.unwrap_or(RESERVED_TAG),
                cmd_sn: st.window.cmd_sn(),
                exp_stat_sn: StatSn::new(0),
                ref_cmd_sn,
                exp_data_sn: DataSn::new(0),
                data: Bytes::new(),
            });
            sent_cmd_sn = st.window.cmd_sn();
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
}
