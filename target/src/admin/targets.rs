//! `add-target` and `remove-target`: a target appears only once its
//! portals listen and its logical units are open, and goes only with its
//! sessions ended (`--force`) or when it has none.

use std::sync::Arc;

use serde_json::json;

use super::handlers::{failed, initiators, invalid, refused, Outcome};
use super::{build_lu, Admin, AdminState};
use crate::config::{parse_portal, AuthConfig, LunConfig, PortalGroup, TargetConfig};
use crate::config_file;
use crate::server::TargetRuntime;
use crate::sync::write_lock;

impl Admin {
    pub(super) async fn add_target(
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
            write_lock(&rt.config).luns.push(l);
        }
        let info = self.target_info(st, &rt);
        write_lock(&self.shared.targets).push(rt);
        serde_json::to_value(info).map_err(|e| failed(e.to_string()))
    }

    pub(super) async fn remove_target(
        &self,
        st: &mut AdminState,
        name: &str,
        force: bool,
    ) -> Outcome {
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
        write_lock(&self.shared.targets).retain(|t| !Arc::ptr_eq(t, &rt));
        for s in &sessions {
            self.shared.end_session(s).await;
        }
        let key = rt.name.to_ascii_lowercase();
        st.ext.targets.remove(&key);
        st.luns.retain(|(t, _), _| *t != key);
        Ok(json!({"target": rt.name, "sessions_ended": sessions.len()}))
    }
}
