//! Execution of admin requests against the running server.
//!
//! Each handler checks everything first and changes state last, so a
//! refused request changes nothing. The device server's runtime methods
//! raise the unit attentions (SPC-5 §6.33 REPORTED LUNS DATA HAS CHANGED,
//! SBC-4 §4.10 CAPACITY DATA HAS CHANGED, SPC-5 MODE PARAMETERS CHANGED).
//! ACL edits (`allow`, `deny`, LUN masks, `remove-lun`) hand the target's
//! new access policy to the device server ([`crate::device::apply_acl`]),
//! which raises REPORTED LUNS DATA HAS CHANGED on the I_T nexuses whose
//! LUN inventory changed; CHAP edits apply from the next login.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use proto::scsi::Lun;
use serde_json::{json, Value};

use super::access::{users, ChapChange};
use super::protocol::{
    AclInfo, ErrorKind, LunInfo, PortalGroupInfo, Request, Response, SessionInfo, ShowResult,
    TargetInfo,
};
use super::{build_lu, Admin, AdminState};
use crate::config::{
    parse_portal, parse_size, AuthConfig, BackendConfig, IoMode, LunConfig, PortalGroup,
    TargetConfig,
};
use crate::config_file::{self, Loaded, LunExt, MAX_LUN};
use crate::server::{Session, TargetRuntime};
use crate::session::ConnNotice;

/// A failed request: the error kind and a message for the admin.
#[derive(Debug)]
pub(crate) struct Failure(ErrorKind, String);

pub(super) type Outcome = Result<Value, Failure>;

pub(super) fn refused(msg: impl Into<String>) -> Failure {
    Failure(ErrorKind::Refused, msg.into())
}
pub(super) fn invalid(msg: impl Into<String>) -> Failure {
    Failure(ErrorKind::Invalid, msg.into())
}
pub(super) fn not_found(msg: impl Into<String>) -> Failure {
    Failure(ErrorKind::NotFound, msg.into())
}
pub(super) fn failed(msg: impl Into<String>) -> Failure {
    Failure(ErrorKind::Failed, msg.into())
}

fn raw_lun(n: u64) -> u64 {
    Lun::from_number(n as u16).0
}

fn lu_of(rt: &TargetRuntime, n: u64) -> Option<Arc<crate::scsi::LogicalUnit>> {
    if n > MAX_LUN {
        return None;
    }
    rt.device.lu(raw_lun(n))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sorted_insert(luns: &mut Vec<LunConfig>, l: LunConfig) {
    let pos = luns
        .iter()
        .position(|o| o.lun > l.lun)
        .unwrap_or(luns.len());
    luns.insert(pos, l);
}

/// The sessions of a target whose I_T nexus has used `lu`.
fn users_of(sessions: &[Arc<Session>], lu: &crate::scsi::LogicalUnit) -> Vec<Arc<Session>> {
    let st = lu.state();
    sessions
        .iter()
        .filter(|s| s.nexus.as_ref().is_some_and(|n| st.seen.contains(n)))
        .cloned()
        .collect()
}

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
    /// Execute one request.
    pub async fn handle(&self, req: Request) -> Response {
        let op = req.op();
        let r = self.dispatch(req).await;
        match r {
            Ok(v) => {
                tracing::info!(op, "admin request done");
                Response::ok(v)
            }
            Err(Failure(kind, msg)) => {
                tracing::info!(op, ?kind, reason = %msg, "admin request refused");
                Response::err(kind, msg)
            }
        }
    }

    async fn dispatch(&self, req: Request) -> Outcome {
        let mut st = self.state.lock().await;
        match req {
            Request::Show { target } => self.show(&st, target.as_deref()),
            Request::AddTarget {
                name,
                alias,
                portals,
                tpgt,
                luns,
            } => {
                self.add_target(&mut st, name, alias, portals, tpgt, luns)
                    .await
            }
            Request::RemoveTarget { name, force } => {
                self.remove_target(&mut st, &name, force).await
            }
            Request::AddLun {
                target,
                lun,
                spec,
                vendor,
                product,
                serial,
                wwn_seed,
            } => {
                let ext = LunExt {
                    comment: None,
                    vendor,
                    product,
                    wwn_seed,
                };
                self.add_lun(&mut st, &target, lun, &spec, serial, ext)
                    .await
            }
            Request::RemoveLun { target, lun, force } => {
                self.remove_lun(&mut st, &target, lun, force)
            }
            Request::SetLun {
                target,
                lun,
                mode,
                size,
                force,
                control,
            } => match control {
                Some(on) if mode.is_none() && size.is_none() => {
                    self.set_lun_control(&target, lun, on)
                }
                Some(on) => {
                    let mut v = self
                        .set_lun(&mut st, &target, lun, mode, size, force)
                        .await?;
                    self.set_lun_control(&target, lun, on)?;
                    v["control"] = Value::Bool(on);
                    Ok(v)
                }
                None => self.set_lun(&mut st, &target, lun, mode, size, force).await,
            },
            Request::AddPortal {
                target,
                portal,
                tpgt,
            } => self.add_portal(&mut st, &target, &portal, tpgt).await,
            Request::Allow {
                target,
                initiator,
                luns,
                all_luns,
                chap,
                mutual_chap,
                control,
            } => self.allow(
                st.ext.strict_names,
                &target,
                &initiator,
                (luns, all_luns),
                chap,
                mutual_chap,
                control,
            ),
            Request::Deny {
                target,
                initiator,
                allow_any,
            } => self.deny(&mut st, &target, &initiator, allow_any),
            Request::SetChap {
                target,
                initiator,
                add,
                remove,
                mutual,
                no_mutual,
                clear,
            } => self.set_chap(
                target.as_deref(),
                initiator.as_deref(),
                ChapChange {
                    add,
                    remove,
                    mutual,
                    no_mutual,
                    clear,
                },
            ),
            Request::LogoutSession { tsih, target } => {
                self.logout_session(tsih, target.as_deref()).await
            }
            Request::Save { file } => self.save(&st, file).await,
        }
    }

    pub(super) fn target(&self, name: &str) -> Result<Arc<TargetRuntime>, Failure> {
        self.shared
            .target(name)
            .ok_or_else(|| not_found(format!("no target {name:?}")))
    }

    fn listening(&self, st: &AdminState) -> Vec<SocketAddr> {
        let mut v = self.shared.local_addrs.clone();
        v.extend(st.extra_listeners.iter().map(|(a, _)| *a));
        v
    }

    // ----- show ---------------------------------------------------------

    fn show(&self, st: &AdminState, only: Option<&str>) -> Outcome {
        if let Some(name) = only {
            self.target(name)?;
        }
        let mut out = ShowResult {
            listening: self.listening(st).iter().map(|a| a.to_string()).collect(),
            config_file: st.config_file.clone(),
            warnings: self.config_warnings(),
            ..ShowResult::default()
        };
        let d = self
            .shared
            .discovery_auth
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
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

    fn target_info(&self, st: &AdminState, rt: &TargetRuntime) -> TargetInfo {
        let cfg = rt.config();
        let sessions = self.shared.sessions_of(&rt.name);
        let ext = st.ext.target(&rt.name);
        let key = rt.name.to_ascii_lowercase();
        let luns = cfg
            .luns
            .iter()
            .map(|l| {
                let le = ext.and_then(|e| e.luns.get(&l.lun));
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
                    .get(&(key.clone(), l.lun))
                    .map(|h| h.counters.snapshot());
                match lu {
                    Some(lu) => {
                        // One lock at a time: the LU state mutex is not
                        // reentrant.
                        let mode = lu.state().mode.as_str();
                        let in_use = !users_of(&sessions, &lu).is_empty();
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

    // ----- targets and portals -------------------------------------------

    /// Make sure something listens on `addr`; returns the address to put in
    /// portal groups (the bound one when port 0 was asked).
    async fn ensure_listener(
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

    async fn add_target(
        &self,
        st: &mut AdminState,
        name: String,
        alias: Option<String>,
        portals: Vec<String>,
        tpgt: Option<u16>,
        specs: Vec<String>,
    ) -> Outcome {
        config_file::check_name("name", &name).map_err(|e| invalid(e.to_string()))?;
        if let Some(a) = &alias {
            config_file::check_ascii_field("alias", a, 255).map_err(|e| invalid(e.to_string()))?;
        }
        if self.shared.target(&name).is_some() {
            return Err(refused(format!("target {name:?} already exists")));
        }
        let mut addrs = Vec::new();
        for p in &portals {
            addrs.push(parse_portal(p).map_err(|e| invalid(e.to_string()))?);
        }
        let mut luns = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            luns.push(LunConfig::parse_spec(i as u64, s).map_err(|e| invalid(e.to_string()))?);
        }
        // Open the backends before anything becomes visible.
        let company_id = st.ext.company_id;
        let built = {
            let name = name.clone();
            let luns = luns.clone();
            tokio::task::spawn_blocking(move || {
                luns.iter()
                    .map(|l| {
                        build_lu(&name, l, None, company_id)
                            .map_err(|e| format!("LUN {}: {e}", l.lun))
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(failed)?
        };
        let portals = if addrs.is_empty() {
            self.listening(st)
        } else {
            let mut v = Vec::new();
            for a in addrs {
                v.push(self.ensure_listener(st, a).await?);
            }
            v
        };
        let limits = self
            .shared
            .all_targets()
            .first()
            .map(|t| t.config().limits)
            .unwrap_or_default();
        let cfg = TargetConfig {
            name: name.clone(),
            alias,
            portal_groups: vec![PortalGroup {
                tpgt: tpgt.unwrap_or(1),
                portals,
            }],
            luns: Vec::new(),
            auth: AuthConfig::default(),
            allow: Vec::new(),
            initiators: Default::default(),
            limits,
        };
        let device = crate::device::build(&cfg).map_err(|(_, e)| failed(e))?;
        device.set_pr_state_dir(st.ext.pr_state_dir.clone());
        let rt = Arc::new(TargetRuntime {
            name: name.clone(),
            config: std::sync::RwLock::new(cfg),
            device,
        });
        for (l, (lu, handle)) in luns.into_iter().zip(built) {
            rt.device.add_lun(lu).map_err(|e| failed(e.to_string()))?;
            st.luns.insert((name.to_ascii_lowercase(), l.lun), handle);
            rt.config
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .luns
                .push(l);
        }
        let info = self.target_info(st, &rt);
        self.shared
            .targets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(rt);
        serde_json::to_value(info).map_err(|e| failed(e.to_string()))
    }

    async fn remove_target(&self, st: &mut AdminState, name: &str, force: bool) -> Outcome {
        let rt = self.target(name)?;
        if self.shared.all_targets().len() == 1 {
            return Err(refused(
                "cannot remove the last target (a configuration needs at least one)",
            ));
        }
        let sessions = self.shared.sessions_of(&rt.name);
        if !sessions.is_empty() && !force {
            return Err(refused(format!(
                "target {} has {} session(s) ({}); pass --force to end them and remove it",
                rt.name,
                sessions.len(),
                initiators(&sessions)
            )));
        }
        self.shared
            .targets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|t| !Arc::ptr_eq(t, &rt));
        for s in &sessions {
            self.shared.end_session(s).await;
        }
        let key = rt.name.to_ascii_lowercase();
        st.ext.targets.remove(&key);
        st.luns.retain(|(t, _), _| *t != key);
        Ok(json!({"target": rt.name, "sessions_ended": sessions.len()}))
    }

    async fn add_portal(
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
            let mut c = rt.config.write().unwrap_or_else(|p| p.into_inner());
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

    // ----- LUNs ------------------------------------------------------------

    async fn add_lun(
        &self,
        st: &mut AdminState,
        target: &str,
        lun: Option<u64>,
        spec: &str,
        serial: Option<String>,
        ext: LunExt,
    ) -> Outcome {
        let rt = self.target(target)?;
        let cfg = rt.config();
        let taken = |n: u64| cfg.luns.iter().any(|l| l.lun == n) || lu_of(&rt, n).is_some();
        let n = match lun {
            Some(n) if n > MAX_LUN => {
                return Err(invalid(format!(
                    "LUN number {n} out of range (0..={MAX_LUN})"
                )))
            }
            Some(n) if taken(n) => {
                return Err(refused(format!("LUN {n} of {} already exists", rt.name)))
            }
            Some(n) => n,
            None => (0..=MAX_LUN)
                .find(|n| !taken(*n))
                .ok_or_else(|| refused("no free LUN number"))?,
        };
        let mut l = LunConfig::parse_spec(n, spec).map_err(|e| invalid(e.to_string()))?;
        if let Some(s) = serial {
            config_file::check_ascii_field("serial", &s, 64).map_err(|e| invalid(e.to_string()))?;
            l.serial = Some(s);
        }
        for (what, v, max) in [
            ("vendor", &ext.vendor, 8),
            ("product", &ext.product, 16),
            ("wwn_seed", &ext.wwn_seed, 255),
        ] {
            if let Some(v) = v {
                config_file::check_ascii_field(what, v, max).map_err(|e| invalid(e.to_string()))?;
            }
        }
        let (lu, handle) = {
            let (name, l, ext) = (rt.name.clone(), l.clone(), ext.clone());
            let company_id = st.ext.company_id;
            tokio::task::spawn_blocking(move || build_lu(&name, &l, Some(&ext), company_id))
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(failed)?
        };
        rt.device.add_lun(lu).map_err(|e| refused(e.to_string()))?;
        sorted_insert(
            &mut rt.config.write().unwrap_or_else(|p| p.into_inner()).luns,
            l.clone(),
        );
        st.luns.insert((rt.name.to_ascii_lowercase(), n), handle);
        if ext != LunExt::default() {
            st.ext.target_mut(&rt.name).luns.insert(n, ext);
        }
        Ok(json!({"target": rt.name, "lun": n, "spec": spec}))
    }

    fn remove_lun(&self, st: &mut AdminState, target: &str, n: u64, force: bool) -> Outcome {
        let rt = self.target(target)?;
        let lu = lu_of(&rt, n).ok_or_else(|| not_found(format!("no LUN {n} in {}", rt.name)))?;
        let using = users_of(&self.shared.sessions_of(&rt.name), &lu);
        if !using.is_empty() && !force {
            return Err(refused(format!(
                "LUN {n} of {} is in use by {} session(s) ({}); pass --force to remove it anyway",
                rt.name,
                using.len(),
                initiators(&using)
            )));
        }
        rt.device
            .remove_lun(n as u16)
            .map_err(|e| not_found(e.to_string()))?;
        {
            let mut c = rt.config.write().unwrap_or_else(|p| p.into_inner());
            c.luns.retain(|l| l.lun != n);
            // A masked initiator loses the LUN for good: re-adding a LUN
            // with this number does not re-grant access.
            for a in c.initiators.values_mut() {
                if let Some(ls) = &mut a.luns {
                    ls.retain(|x| *x != n);
                }
            }
        }
        crate::device::apply_acl(&rt.device, &rt.config());
        let key = rt.name.to_ascii_lowercase();
        st.luns.remove(&(key.clone(), n));
        if let Some(e) = st.ext.targets.get_mut(&key) {
            e.luns.remove(&n);
        }
        Ok(json!({"target": rt.name, "lun": n, "was_in_use": !using.is_empty()}))
    }

    async fn set_lun(
        &self,
        st: &mut AdminState,
        target: &str,
        n: u64,
        mode: Option<String>,
        size: Option<String>,
        force: bool,
    ) -> Outcome {
        let rt = self.target(target)?;
        let lu = lu_of(&rt, n).ok_or_else(|| not_found(format!("no LUN {n} in {}", rt.name)))?;
        let cfg = rt.config();
        let lc = cfg
            .luns
            .iter()
            .find(|l| l.lun == n)
            .cloned()
            .ok_or_else(|| not_found(format!("no LUN {n} in {}", rt.name)))?;
        if mode.is_none() && size.is_none() {
            return Err(invalid("nothing to change: give a mode and/or a size"));
        }
        let handle = st.luns.get(&(rt.name.to_ascii_lowercase(), n)).cloned();
        let new_mode = match &mode {
            Some(m) => {
                let m = IoMode::parse(m)
                    .ok_or_else(|| invalid(format!("mode must be wb, wt or ro, got {m:?}")))?;
                if m != IoMode::ReadOnly && handle.as_ref().is_some_and(|h| h.opened_read_only) {
                    return Err(refused(format!(
                        "LUN {n} was opened read-only; remove it and add it again to make it writable"
                    )));
                }
                Some(m)
            }
            None => None,
        };
        let new_size = match &size {
            Some(s) => {
                let bytes = parse_size(s).map_err(|e| invalid(e.to_string()))?;
                let bs = u64::from(lu.block_size());
                if bytes < bs || !bytes.is_multiple_of(bs) {
                    return Err(invalid(format!(
                        "size must be a non-zero multiple of the sector size {bs}, got {bytes}"
                    )));
                }
                match lc.backend {
                    BackendConfig::Block { .. } => {
                        return Err(refused("a block LUN has the size of its device"))
                    }
                    BackendConfig::Null { .. } => {
                        return Err(refused("null LUNs cannot be resized (remove and add it)"))
                    }
                    BackendConfig::Rbd(ref r) => {
                        return Err(refused(format!(
                        "an rbd LUN has the size of its image: run `rbd resize --size SIZE {}`; \
                             the target notices and reports CAPACITY DATA HAS CHANGED",
                        r.display_name()
                    )))
                    }
                    _ => {}
                }
                if bytes < lu.cfg.backend.size() && !force {
                    return Err(refused(format!(
                        "shrinking LUN {n} from {} to {bytes} bytes discards data; pass --force",
                        lu.cfg.backend.size()
                    )));
                }
                Some(bytes)
            }
            None => None,
        };
        if let Some(bytes) = new_size {
            let dev = rt.device.clone();
            tokio::task::spawn_blocking(move || dev.resize(n as u16, bytes))
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(format!("resize failed: {e}")))?;
        }
        if let Some(m) = new_mode {
            rt.device
                .set_mode(n as u16, m)
                .map_err(|e| failed(e.to_string()))?;
        }
        {
            let mut c = rt.config.write().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = c.luns.iter_mut().find(|l| l.lun == n) {
                if let Some(m) = new_mode {
                    l.mode = m;
                }
                if let Some(b) = new_size {
                    match &mut l.backend {
                        BackendConfig::Memory { size } | BackendConfig::Null { size } => *size = b,
                        BackendConfig::File { size, .. } => *size = Some(b),
                        BackendConfig::Block { .. } | BackendConfig::Rbd(_) => {}
                    }
                }
            }
        }
        let mode_now = lu.state().mode.as_str();
        Ok(json!({
            "target": rt.name,
            "lun": n,
            "mode": mode_now,
            "size_bytes": lu.cfg.backend.size(),
        }))
    }

    // ----- sessions --------------------------------------------------------

    async fn logout_session(&self, tsih: u16, target: Option<&str>) -> Outcome {
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

    // ----- save ------------------------------------------------------------

    /// The running configuration as a file would describe it.
    pub(crate) fn running_config(&self, st: &AdminState) -> Loaded {
        let unmap = |p: SocketAddr| {
            st.port0
                .iter()
                .find(|(bound, _)| *bound == p)
                .map(|(_, asked)| *asked)
                .unwrap_or(p)
        };
        let mut targets = Vec::new();
        for rt in self.shared.all_targets() {
            let mut c = rt.config();
            for g in &mut c.portal_groups {
                let mut v: Vec<SocketAddr> = Vec::new();
                for p in g.portals.iter().map(|p| unmap(*p)) {
                    if p.port() == 0 || !v.contains(&p) {
                        v.push(p);
                    }
                }
                g.portals = v;
            }
            targets.push(c);
        }
        let mut ext = st.ext.clone();
        ext.targets
            .retain(|k, _| targets.iter().any(|t| t.name.to_ascii_lowercase() == *k));
        Loaded {
            server: crate::config::ServerConfig {
                targets,
                discovery_auth: self
                    .shared
                    .discovery_auth
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
                limits: self.shared.limits.clone(),
            },
            ext,
            admin_socket: st.admin_socket_setting.clone(),
        }
    }

    async fn save(&self, st: &AdminState, file: Option<PathBuf>) -> Outcome {
        let dest = file.or_else(|| st.config_file.clone()).ok_or_else(|| {
            refused(
                "no configuration file: the target was started without --config; pass --file PATH",
            )
        })?;
        let running = self.running_config(st);
        let doc = config_file::to_file(&running);
        // What is saved must load back.
        config_file::to_runtime(&doc).map_err(|e| {
            failed(format!(
                "the running configuration would not load back ({e}); not saved"
            ))
        })?;
        let d = dest.clone();
        tokio::task::spawn_blocking(move || config_file::save_atomic(&d, &doc))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
        tracing::info!(file = %dest.display(), "configuration saved");
        Ok(json!({"file": dest, "targets": running.server.targets.len()}))
    }
}

pub(super) fn initiators(sessions: &[Arc<Session>]) -> String {
    let mut v: Vec<String> = sessions
        .iter()
        .map(|s| s.core.initiator_name.clone())
        .collect();
    v.sort();
    v.dedup();
    v.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::access::short_secret_warnings;
    use crate::admin::protocol::Account;
    use crate::config::ChapCredentials;

    fn acc(u: &str, s: &str) -> Option<Account> {
        Some(Account {
            user: u.into(),
            secret: s.into(),
        })
    }

    fn change() -> ChapChange {
        ChapChange {
            add: None,
            remove: None,
            mutual: None,
            no_mutual: false,
            clear: false,
        }
    }

    #[test]
    fn chap_changes() {
        let a = ChapChange {
            add: acc("u1", "secret-one-123"),
            ..change()
        }
        .apply(AuthConfig::default())
        .unwrap();
        assert_eq!(a.incoming.len(), 1);
        // Same user replaces.
        let a = ChapChange {
            add: acc("u1", "secret-two-123"),
            mutual: acc("tgt", "target-secret-1"),
            ..change()
        }
        .apply(a)
        .unwrap();
        assert_eq!(a.incoming.len(), 1);
        assert_eq!(a.incoming[0].secret, b"secret-two-123");
        assert!(a.outgoing.is_some());
        // Removing the last incoming account while mutual is set: refused.
        let e = ChapChange {
            remove: Some("u1".into()),
            ..change()
        }
        .apply(a.clone())
        .unwrap_err();
        assert_eq!(e.0, ErrorKind::Refused);
        let e = ChapChange {
            remove: Some("nobody".into()),
            ..change()
        }
        .apply(a.clone())
        .unwrap_err();
        assert_eq!(e.0, ErrorKind::NotFound);
        let cleared = ChapChange {
            clear: true,
            ..change()
        }
        .apply(a)
        .unwrap();
        assert_eq!(cleared, AuthConfig::default());
        assert_eq!(
            short_secret_warnings(&AuthConfig {
                incoming: vec![ChapCredentials::parse("u:short").unwrap()],
                outgoing: None
            })
            .len(),
            1
        );
    }
}
