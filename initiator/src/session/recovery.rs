//! Session recovery at ErrorRecoveryLevel 0 (RFC 7143 §7.1, §6.3.5): a
//! connection failure fails the session; the core puts every unanswered
//! command back in its queue in the original order
//! (`InitiatorSession::requeue_all`), and the session is reinstated (same
//! ISID, TSIH 0) with exponential backoff, within the recovery timeout.
//! Also the final shutdown.

use std::sync::Arc;
use std::time::Duration;

use super::establish;
use super::state::{Inner, Phase, State};
use super::SessionEvent;
use crate::error::{Error, Lost};
use crate::sync::lock;

impl Inner {
    /// A connection of epoch `epoch` failed.
    pub(super) fn conn_failed(self: &Arc<Self>, epoch: u64, reason: String) {
        self.fail_session(epoch, reason, Duration::ZERO);
    }

    /// ErrorRecoveryLevel 0: a connection failure is a session failure. Tear
    /// every connection down, put every unanswered command back in the
    /// queue (original order) and start recovery.
    pub(super) fn fail_session(self: &Arc<Self>, epoch: u64, reason: String, min_wait: Duration) {
        let mut st = lock(&self.st);
        if st.epoch != epoch
            || matches!(
                st.phase,
                Phase::Closed | Phase::Closing | Phase::Failed(_) | Phase::Recovering
            )
        {
            return;
        }
        tracing::warn!(%reason, tsih = st.tsih, "session failed, recovering");
        st.epoch += 1;
        st.phase = Phase::Recovering;
        for h in st.drivers.drain(..) {
            h.abort();
        }
        st.links.clear();
        st.core.requeue_all();
        // Pending TMF and Logout requests end (lost); nothing else comes out.
        let _ = self.flush(&mut st);
        st.waiters.clear();
        if self.cfg.recovery_timeout.is_zero() {
            let why = format!("connection failed: {reason}");
            st.phase = Phase::Failed(why.clone());
            self.fail_queued(&mut st, || {
                Error::ConnectionLost(Lost::Failed(reason.clone()))
            });
            self.emit(SessionEvent::Failed(why));
            return;
        }
        self.emit(SessionEvent::Recovering(reason.clone()));
        let me = self.clone();
        let h = tokio::spawn(async move { me.recover(reason, min_wait).await });
        st.recovery = Some(h.abort_handle());
    }

    /// Fail every command the session holds (none is issued once the
    /// connections are gone).
    fn fail_queued(&self, st: &mut State, err: impl Fn() -> Error) {
        let (issued, queued) = st.core.take_all();
        for p in issued.into_iter().chain(queued) {
            let _ = p.reply.send(Err(err()));
        }
        self.idle.notify_waiters();
    }

    pub(super) async fn recover(self: Arc<Self>, reason: String, min_wait: Duration) {
        let start = tokio::time::Instant::now();
        let deadline = start + self.cfg.recovery_timeout;
        let mut backoff = Duration::from_millis(100);
        let mut last_err = reason;
        tokio::time::sleep(min_wait).await;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (isid, cmd_sn) = {
                let st = lock(&self.st);
                if st.phase != Phase::Recovering {
                    return;
                }
                (st.isid, st.core.window().cmd_sn())
            };
            // Bound each attempt by the time left.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, establish(&self.cfg, isid, cmd_sn)).await {
                Ok(Ok((conns, neg))) => {
                    let tsih = conns.first().map(|c| c.tsih).unwrap_or(0);
                    if lock(&self.st).phase != Phase::Recovering {
                        return;
                    }
                    self.install(conns, neg);
                    tracing::info!(attempt, tsih, "session reinstated");
                    self.emit(SessionEvent::Recovered { tsih });
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(attempt, error = %e, "reconnect failed");
                    last_err = e.to_string();
                }
                Err(_) => last_err = "reconnect timed out".into(),
            }
            let now = tokio::time::Instant::now();
            if now + backoff >= deadline {
                tokio::time::sleep_until(deadline).await;
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        let why = format!(
            "could not recover within {:?}: {last_err}",
            self.cfg.recovery_timeout
        );
        let mut st = lock(&self.st);
        if st.phase != Phase::Recovering {
            return;
        }
        st.phase = Phase::Failed(why.clone());
        self.fail_queued(&mut st, || Error::SessionFailed(why.clone()));
        self.emit(SessionEvent::Failed(why));
    }

    pub(super) fn shutdown(&self, err: Error) {
        let mut st = lock(&self.st);
        st.phase = Phase::Closed;
        st.epoch += 1;
        for h in st.drivers.drain(..) {
            h.abort();
        }
        if let Some(h) = st.recovery.take() {
            h.abort();
        }
        st.links.clear();
        let msg = err.to_string();
        let (issued, queued) = st.core.take_all();
        let _ = self.flush(&mut st);
        st.waiters.clear();
        for p in issued {
            let _ = p
                .reply
                .send(Err(Error::ConnectionLost(Lost::Failed(msg.clone()))));
        }
        for p in queued {
            let _ = p.reply.send(Err(Error::Closed));
        }
        self.idle.notify_waiters();
        if let Some(h) = lock(&self.ticker).take() {
            h.abort();
        }
    }
}
