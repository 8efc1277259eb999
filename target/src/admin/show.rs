//! The `show` request: the running state as the admin sees it (listening
//! portals, targets with their portal groups of RFC 7143 §4.4.1, LUNs with
//! their identity (SPC-5 VPD 80h/83h) and I/O counters, ACL, CHAP users,
//! sessions with the negotiated RFC 7143 §13 parameters).

use std::sync::Arc;

use serde_json::{json, Value};

use super::access::users;
use super::handlers::{failed, hex, lu_of, users_of, Outcome};
use super::protocol::{AclInfo, LunInfo, PortalGroupInfo, SessionInfo, ShowResult, TargetInfo};
use super::{Admin, AdminState};
use crate::config::{BackendConfig, LunConfig};
use crate::config_file::{self, LunExt};
use crate::server::{Session, TargetRuntime};
use crate::sync::read_lock;

fn negotiated(s: &Session) -> Value {
    let p = &s.params;
    json!({
        "MaxConnections": p.max_connections,
        "InitialR2T": p.initial_r2t,
        "ImmediateData": p.immediate_data,
        "MaxBurstLength": p.max_burst_length,
        "FirstBurstLength": p.first_burst_length,
        "MaxOutstandingR2T": p.max_outstanding_r2t,
        "DataPDUInOrder": p.data_pdu_in_order,
        "DataSequenceInOrder": p.data_sequence_in_order,
        "ErrorRecoveryLevel": p.error_recovery_level,
        "DefaultTime2Wait": p.default_time2wait,
        "DefaultTime2Retain": p.default_time2retain,
    })
}

fn session_info(s: &Session) -> SessionInfo {
    SessionInfo {
        tsih: s.core.tsih,
        initiator: s.core.initiator_name.clone(),
        isid: hex(&s.core.key.isid),
        tpgt: s.core.tpgt,
        connections: s.core.cids(),
        negotiated: negotiated(s),
    }
}

impl Admin {
    pub(super) fn show(&self, st: &AdminState, only: Option<&str>) -> Outcome {
        if let Some(name) = only {
            self.target(name)?;
        }
        let mut out = ShowResult {
            listening: self.listening(st).iter().map(|a| a.to_string()).collect(),
            config_file: st.config_file.clone(),
            warnings: self.config_warnings(),
            ..ShowResult::default()
        };
        let d = read_lock(&self.shared.discovery_auth).clone();
        (out.discovery_chap_users, out.discovery_mutual_user) = users(&d);
        out.discovery_sessions = self
            .shared
            .sessions
            .all()
            .iter()
            .filter(|s| s.is_discovery())
            .count();
        for rt in self.shared.all_targets() {
            if only.is_some_and(|n| !rt.name.eq_ignore_ascii_case(n)) {
                continue;
            }
            out.targets.push(self.target_info(st, &rt));
        }
        serde_json::to_value(out).map_err(|e| failed(e.to_string()))
    }

    pub(super) fn target_info(&self, st: &AdminState, rt: &TargetRuntime) -> TargetInfo {
        let cfg = rt.config();
        let sessions = self.shared.sessions_of(&rt.name);
        let ext = st.ext.target(&rt.name);
        let key = rt.name.to_ascii_lowercase();
        let luns = cfg
            .luns
            .iter()
            .map(|l| {
                lun_info(
                    st,
                    rt,
                    &key,
                    &sessions,
                    l,
                    ext.and_then(|e| e.luns.get(&l.lun)),
                )
            })
            .collect();
        let acl = cfg
            .allow
            .iter()
            .map(|ini| {
                let a = cfg.initiator(ini);
                let (chap_users, mutual_user) = a
                    .and_then(|a| a.auth.as_ref())
                    .map(users)
                    .unwrap_or_default();
                AclInfo {
                    initiator: ini.clone(),
                    luns: a.and_then(|a| a.luns.clone()),
                    chap_users,
                    mutual_user,
                    control: a.is_some_and(|a| a.control),
                }
            })
            .collect();
        let (chap_users, mutual_user) = users(&cfg.auth);
        TargetInfo {
            name: cfg.name.clone(),
            alias: cfg.alias.clone(),
            portal_groups: cfg
                .portal_groups
                .iter()
                .map(|g| PortalGroupInfo {
                    tpgt: g.tpgt,
                    portals: g.portals.iter().map(|p| p.to_string()).collect(),
                })
                .collect(),
            luns,
            acl,
            chap_users,
            mutual_user,
            session_params: serde_json::to_value(config_file::session_entry(&cfg.limits))
                .unwrap_or(Value::Null),
            sessions: sessions.iter().map(|s| session_info(s)).collect(),
        }
    }
}

/// One LUN as `show` lists it: what the device server has (identity,
/// size, mode, whether a session uses it, I/O counters), or what the
/// configuration says when the LU is missing.
fn lun_info(
    st: &AdminState,
    rt: &TargetRuntime,
    key: &str,
    sessions: &[Arc<Session>],
    l: &LunConfig,
    le: Option<&LunExt>,
) -> LunInfo {
    let lu = lu_of(rt, l.lun);
    let path = match &l.backend {
        BackendConfig::File { path, .. } | BackendConfig::Block { path } => {
            Some(path.display().to_string())
        }
        BackendConfig::Rbd(r) => Some(r.display_name()),
        _ => None,
    };
    let backend = match &l.backend {
        BackendConfig::Memory { .. } => "mem",
        BackendConfig::Null { .. } => "null",
        BackendConfig::File { .. } => "file",
        BackendConfig::Block { .. } => "block",
        BackendConfig::Rbd(_) => "rbd",
    };
    let io = st
        .luns
        .get(&(key.to_string(), l.lun))
        .map(|h| h.counters.snapshot());
    match lu {
        Some(lu) => {
            // One lock at a time: the LU state mutex is not
            // reentrant.
            let mode = lu.state().mode.as_str();
            let in_use = !users_of(sessions, &lu).is_empty();
            LunInfo {
                lun: l.lun,
                backend: backend.into(),
                path,
                size_bytes: lu.cfg.backend.size(),
                sector_size: lu.block_size(),
                blocks: lu.num_blocks(),
                mode: mode.into(),
                thin: lu.thin(),
                serial: lu.serial.clone(),
                wwn: format!("naa.{}", hex(&lu.naa)),
                vendor: lu.cfg.vendor.clone(),
                product: lu.cfg.product.clone(),
                in_use,
                io,
                backend_info: lu.cfg.backend.info(),
                control: lu.control.snapshot(),
            }
        }
        // Configured but not in the device server: cannot
        // happen through this API; show what is known.
        None => LunInfo {
            lun: l.lun,
            backend: backend.into(),
            path,
            size_bytes: 0,
            sector_size: l.block_size,
            blocks: 0,
            mode: l.mode.as_str().into(),
            thin: false,
            serial: String::new(),
            wwn: String::new(),
            vendor: le.and_then(|e| e.vendor.clone()).unwrap_or_default(),
            product: le.and_then(|e| e.product.clone()).unwrap_or_default(),
            in_use: false,
            io,
            backend_info: None,
            control: Default::default(),
        },
    }
}
