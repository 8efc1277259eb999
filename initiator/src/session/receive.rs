//! What the target sends in full-feature phase (RFC 7143 §11): each PDU
//! goes to the core (`proto::session::initiator`), which checks and
//! reassembles it; a sequence error (§7.9) fails the connection, and so at
//! ERL 0 the session, which is recovered. Async Messages (§11.9) are the
//! shell's to act on: unit attentions, logout and renegotiation requests,
//! connection and session drops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::pdu::{AsyncEvent, AsyncMessage, Pdu};
use proto::scsi::sense::Sense;
use proto::session::initiator::ConnId;

use super::state::{conn_error, Inner};
use super::SessionEvent;
use crate::sync::lock;

impl Inner {
    /// One PDU from connection `ci` of incarnation `epoch`. An error fails
    /// the connection (and so, at ERL 0, the session: it is recovered).
    pub(super) fn handle_pdu(
        self: &Arc<Self>,
        epoch: u64,
        ci: usize,
        pdu: Pdu,
    ) -> Result<(), String> {
        let after = {
            let mut st = lock(&self.st);
            if st.epoch != epoch {
                return Ok(());
            }
            if let Pdu::Reject(r) = &pdu {
                tracing::warn!(reason = ?r.reason, itt = ?r.rejected_itt(), "target rejected a PDU");
            }
            let r = st.core.handle_pdu(ConnId(ci), pdu, Instant::now());
            let after = self.flush(&mut st);
            r.map_err(conn_error)?;
            after
        };
        self.after(epoch, after);
        Ok(())
    }

    pub(super) fn on_async(self: &Arc<Self>, epoch: u64, m: AsyncMessage) {
        match m.async_event {
            AsyncEvent::SCSI_ASYNC_EVENT => {
                // RFC 7143 §11.9.4: the data segment holds SenseLength + sense.
                let sense = if m.data.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([m.data[0], m.data[1]]));
                    m.data.get(2..2 + len).and_then(|s| Sense::parse(s).ok())
                } else {
                    None
                };
                match sense {
                    Some(s) => self.note_unit_attention(m.lun, s),
                    None => tracing::warn!("SCSI async event without parseable sense"),
                }
            }
            AsyncEvent::LOGOUT_REQUEST => {
                tracing::info!(within_s = m.parameter3, "target requests logout");
                // Stop issuing at once: commands submitted from now on wait
                // for the new session.
                self.start_draining(epoch);
                self.emit(SessionEvent::LogoutRequested);
                let me = self.clone();
                tokio::spawn(async move {
                    me.graceful_reconnect(epoch, Duration::from_secs(m.parameter3.into()))
                        .await
                });
            }
            AsyncEvent::CONNECTION_DROP | AsyncEvent::SESSION_DROP => {
                let wait = Duration::from_secs(m.parameter2.into());
                self.fail_session(
                    epoch,
                    format!("target dropping connection ({:?})", m.async_event),
                    wait,
                );
            }
            AsyncEvent::NEGOTIATION_REQUEST => {
                // RFC 7143 §11.9.1, event 4: the initiator "MUST honor this
                // request by issuing a Text Request ... or by issuing a
                // Logout Request". We take the second way: log out once
                // in-flight commands are done, then reinstate the session.
                tracing::info!(within_s = m.parameter3, "target requests renegotiation");
                self.start_draining(epoch);
                let me = self.clone();
                let within = Duration::from_secs(m.parameter3.max(5).into());
                tokio::spawn(async move { me.graceful_reconnect(epoch, within).await });
            }
            other => tracing::info!(event = ?other, "async message ignored"),
        }
    }
}
