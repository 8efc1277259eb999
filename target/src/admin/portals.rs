//! Portals and sessions: `add-portal` (a listener per new address, a new
//! portal group being a new relative target port, RFC 7143 §4.4.1) and
//! `logout-session` (AsyncEvent 1 "logout requested", RFC 7143 §11.9.1,
//! then the session ends).

use std::net::SocketAddr;

use serde_json::json;

use super::handlers::{failed, invalid, not_found, refused, Failure, Outcome};
use super::{Admin, AdminState};
use crate::config::{parse_portal, PortalGroup};
use crate::session::ConnNotice;
use crate::sync::write_lock;

impl Admin {
    /// Make sure something listens on `addr`; returns the address to put in
    /// portal groups (the bound one when port 0 was asked).
    pub(super) async fn ensure_listener(
        &self,
        st: &mut AdminState,
        addr: SocketAddr,
    ) -> Result<SocketAddr, Failure> {
        if addr.port() != 0 && self.listening(st).contains(&addr) {
            return Ok(addr);
        }
        let covered = self.listening(st).into_iter().find(|l| {
            l.port() == addr.port() && l.ip().is_unspecified() && l.is_ipv4() == addr.is_ipv4()
        });
        if let (Some(w), false) = (covered, addr.ip().is_unspecified()) {
            return Err(refused(format!(
                "the server already listens on {w}, which covers {addr}; use {w} as the portal"
            )));
        }
        let listener = crate::portal::bind(addr)
            .await
            .map_err(|e| failed(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr().unwrap_or(addr);
        let task = crate::server::spawn_portal(&self.shared, listener, bound);
        st.extra_listeners.push((bound, task));
        tracing::info!(portal = %bound, "listening on an added portal");
        Ok(bound)
    }

    pub(super) async fn add_portal(
        &self,
        st: &mut AdminState,
        target: &str,
        portal: &str,
        tpgt: Option<u16>,
    ) -> Outcome {
        let rt = self.target(target)?;
        let addr = parse_portal(portal).map_err(|e| invalid(e.to_string()))?;
        let cfg = rt.config();
        if addr.port() != 0 && cfg.portal_groups.iter().any(|g| g.portals.contains(&addr)) {
            return Err(refused(format!(
                "{} is already a portal of {}",
                addr, rt.name
            )));
        }
        let tpgt = tpgt
            .or_else(|| cfg.portal_groups.first().map(|g| g.tpgt))
            .unwrap_or(1);
        let bound = self.ensure_listener(st, addr).await?;
        {
            let mut c = write_lock(&rt.config);
            match c.portal_groups.iter_mut().find(|g| g.tpgt == tpgt) {
                Some(g) => {
                    if !g.portals.contains(&bound) {
                        g.portals.push(bound)
                    }
                }
                None => c.portal_groups.push(PortalGroup {
                    tpgt,
                    portals: vec![bound],
                }),
            }
            // A new portal group is a new relative target port.
            rt.device
                .set_target(&c.name, c.portal_groups.iter().map(|g| g.tpgt));
        }
        Ok(json!({"target": rt.name, "portal": bound.to_string(), "tpgt": tpgt}))
    }

    pub(super) async fn logout_session(&self, tsih: u16, target: Option<&str>) -> Outcome {
        let s = self
            .shared
            .sessions
            .get(tsih)
            .ok_or_else(|| not_found(format!("no session with TSIH {tsih}")))?;
        if let Some(t) = target {
            if !s.core.target_name.eq_ignore_ascii_case(t) {
                return Err(not_found(format!("session {tsih} is not a session of {t}")));
            }
        }
        // Tell the initiator first (RFC 7143 §11.9.1 AsyncEvent 1), then
        // end the session without waiting for its Logout.
        for c in s.core.connections() {
            let _ = c.notify.send(ConnNotice::RequestLogout { seconds: 0 });
        }
        self.shared.end_session(&s).await;
        Ok(json!({
            "tsih": tsih,
            "initiator": s.core.initiator_name,
            "target": s.core.target_name,
        }))
    }
}
