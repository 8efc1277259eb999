//! The `save` request: the running configuration mapped back onto the
//! file schema (ports asked as 0 written as 0), checked to load back, and
//! written atomically ([`crate::config_file::save_atomic`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::json;

use super::handlers::{failed, refused, Outcome};
use super::{Admin, AdminState};
use crate::config_file::{self, Loaded};
use crate::sync::read_lock;

impl Admin {
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
                discovery_auth: read_lock(&self.shared.discovery_auth).clone(),
                limits: self.shared.limits.clone(),
            },
            ext,
            admin_socket: st.admin_socket_setting.clone(),
        }
    }

    pub(super) async fn save(&self, st: &AdminState, file: Option<PathBuf>) -> Outcome {
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
