//! Runtime administration of a running target: the `ietadm`/`tgtadm` of
//! this stack (DESIGN.md "target": "an admin API on a unix socket speaking
//! JSON, used by the CLI").
//!
//! - [`launch`] starts a [`Server`] from a [`Loaded`] configuration and
//!   returns the [`Admin`] that manages it. Every logical unit is built
//!   here (not by the server) so that settings the runtime structs have no
//!   field for (vendor, product, WWN seed) are applied and every LUN gets
//!   I/O counters ([`stats`]).
//! - [`Admin::handle`] executes one [`protocol::Request`] against the
//!   running state: [`crate::server::ServerShared`] and its
//!   [`crate::server::TargetRuntime`]s stay the source of truth; changes
//!   take effect at once (the device server raises REPORTED LUNS DATA HAS
//!   CHANGED, CAPACITY DATA HAS CHANGED, MODE PARAMETERS CHANGED).
//!   The dispatch is in `handlers.rs`; the handlers live by what they act
//!   on: `show.rs`, `targets.rs`, `portals.rs`, `luns.rs`, `access.rs`
//!   (ACL and CHAP), `control.rs`, `save.rs`.
//! - [`server`] serves the API on a unix socket (mode 0600, owner or root
//!   only), newline-delimited JSON, bounded requests, read timeouts.
//!
//! Nothing is ever saved implicitly: only the `save` request writes the
//! configuration file, atomically ([`crate::config_file::save_atomic`]).

mod access;
mod control;
mod handlers;
mod luns;
mod portals;
pub mod protocol;
mod save;
pub mod server;
mod show;
pub mod stats;
mod targets;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use crate::config::{BackendConfig, IoMode, LunConfig};
use crate::config_file::{Extensions, Loaded, LunExt};
use crate::scsi::LuConfig;
use crate::server::{Server, ServerError, ServerShared};
use crate::sync::write_lock;

use stats::{CountingBackend, IoCounters};

/// Errors starting a target through [`launch`].
#[derive(Debug, Error)]
pub enum LaunchError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("LUN {lun} of {target}: {reason}")]
    Lun {
        target: String,
        lun: u64,
        reason: String,
    },
}

/// What the admin layer keeps about one LUN it built.
#[derive(Debug, Clone)]
pub(crate) struct LunHandle {
    pub counters: Arc<IoCounters>,
    /// The backend was opened read-only (file/block LUN configured `ro`):
    /// it cannot be switched to a writable mode without reopening.
    pub opened_read_only: bool,
}

/// Mutable admin-side state, behind one async mutex: requests that change
/// something run one at a time.
#[derive(Debug)]
pub(crate) struct AdminState {
    pub ext: Extensions,
    /// Where `save` writes by default.
    pub config_file: Option<PathBuf>,
    /// The file's `admin_socket` setting, written back by `save`.
    pub admin_socket_setting: Option<PathBuf>,
    /// Portals configured with port 0: (bound address, configured address),
    /// so that `save` writes back what was configured.
    pub port0: Vec<(SocketAddr, SocketAddr)>,
    /// By (lower-case target name, LUN number).
    pub luns: HashMap<(String, u64), LunHandle>,
    /// Listeners bound at run time by add-portal / add-target.
    pub extra_listeners: Vec<(SocketAddr, tokio::task::JoinHandle<()>)>,
}

/// The admin API of one running server.
#[derive(Debug)]
pub struct Admin {
    pub(crate) shared: Arc<ServerShared>,
    pub(crate) state: tokio::sync::Mutex<AdminState>,
}

impl Admin {
    /// Warnings about the running configuration, to log at start-up (CHAP
    /// secrets shorter than RFC 7143 §9.2.1 recommends).
    pub fn warnings(&self) -> Vec<String> {
        self.config_warnings()
    }

    /// The configuration file `save` writes by default.
    pub async fn config_file(&self) -> Option<PathBuf> {
        self.state.lock().await.config_file.clone()
    }

    /// Stop the accept loops of portals added at run time.
    pub async fn stop_extra_listeners(&self) {
        for (_, t) in self.state.lock().await.extra_listeners.drain(..) {
            t.abort();
        }
    }

    /// Take every LUN out of its device server after the server shut down,
    /// so that backends close now rather than at process exit: an RBD
    /// image's exclusive lock and watch are released at once, instead of
    /// being left to expire on the cluster (which would keep another
    /// gateway from taking the image over for about 30 s).
    pub async fn close_luns(&self) {
        let targets = self.shared.all_targets();
        let _ = tokio::task::spawn_blocking(move || {
            for t in targets {
                for n in t.device.luns() {
                    if let Ok(n) = u16::try_from(n) {
                        let _ = t.device.remove_lun(n);
                    }
                }
            }
        })
        .await;
    }
}

/// Build the logical unit of `l`: backend (wrapped with I/O counters) and
/// SCSI settings, with the extensions applied. Opens or creates files, so
/// it blocks.
pub(crate) fn build_lu(
    target: &str,
    l: &LunConfig,
    ext: Option<&LunExt>,
    company_id: Option<u32>,
) -> Result<(LuConfig, LunHandle), String> {
    let mut c = crate::device::lu_config(target, l)?;
    if let Some(id) = company_id {
        c.company_id = id;
    }
    if let Some(e) = ext {
        if let Some(v) = &e.vendor {
            c.vendor = v.clone();
        }
        if let Some(p) = &e.product {
            c.product = p.clone();
        }
        if let Some(w) = &e.wwn_seed {
            c.wwn_seed = w.clone();
        }
    }
    let (backend, counters) = CountingBackend::wrap(c.backend.clone());
    c.backend = backend;
    let opened_read_only = l.mode == IoMode::ReadOnly
        && matches!(
            l.backend,
            BackendConfig::File { .. } | BackendConfig::Block { .. }
        );
    Ok((
        c,
        LunHandle {
            counters,
            opened_read_only,
        },
    ))
}

/// Where persistent reservations are kept (APTPL) when the target runs
/// from `config_file` and no state directory was given: beside it, in
/// `<file name>.pr-state/` (`target.json` → `target.json.pr-state/`).
pub fn default_pr_state_dir(config_file: &std::path::Path) -> PathBuf {
    let name = config_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "target".into());
    config_file.with_file_name(format!("{name}.pr-state"))
}

/// Start a server for `loaded` and the admin state that manages it.
///
/// Every backend is opened before any portal is bound, so a bad LUN stops
/// start-up with nothing listening. `config_file` is where `save` writes.
/// Persistent reservations persist (APTPL) in `loaded.ext.pr_state_dir`,
/// else in [`default_pr_state_dir`] of `config_file`; with neither, APTPL
/// is not offered (PTPL_C = 0).
pub async fn launch(
    mut loaded: Loaded,
    config_file: Option<PathBuf>,
) -> Result<(Server, Arc<Admin>), LaunchError> {
    loaded.server.validate().map_err(ServerError::from)?;
    if loaded.ext.pr_state_dir.is_none() {
        loaded.ext.pr_state_dir = config_file.as_deref().map(default_pr_state_dir);
    }
    let mut built = Vec::new();
    for t in &loaded.server.targets {
        let text = loaded.ext.target(&t.name);
        for l in &t.luns {
            let le = text.and_then(|e| e.luns.get(&l.lun));
            let (lu, handle) =
                build_lu(&t.name, l, le, loaded.ext.company_id).map_err(|reason| {
                    LaunchError::Lun {
                        target: t.name.clone(),
                        lun: l.lun,
                        reason,
                    }
                })?;
            built.push((t.name.clone(), l.clone(), lu, handle));
        }
    }
    let mut stripped = loaded.server.clone();
    for t in &mut stripped.targets {
        t.luns.clear();
    }
    let server = Server::start(stripped.clone()).await?;
    let shared = server.shared().clone();
    // Server::start binds config.listen_addrs() in order.
    let port0: Vec<(SocketAddr, SocketAddr)> = stripped
        .listen_addrs()
        .into_iter()
        .zip(server.local_addrs())
        .filter(|(asked, _)| asked.port() == 0)
        .map(|(asked, bound)| (bound, asked))
        .collect();
    for rt in shared.all_targets() {
        rt.device.set_pr_state_dir(loaded.ext.pr_state_dir.clone());
    }
    let mut luns = HashMap::new();
    for (name, lc, lu, handle) in built {
        let added = match shared.target(&name) {
            // Restores the LU's saved reservations (a small file read).
            Some(rt) => rt.device.add_lun(lu).map(|_| rt).map_err(|e| e.to_string()),
            None => Err("target vanished during start-up".to_string()),
        };
        match added {
            Ok(rt) => {
                let mut cfg = write_lock(&rt.config);
                cfg.luns.push(lc.clone());
            }
            Err(reason) => {
                server
                    .shutdown_with_grace(std::time::Duration::from_millis(10))
                    .await;
                return Err(LaunchError::Lun {
                    target: name,
                    lun: lc.lun,
                    reason,
                });
            }
        }
        luns.insert((name.to_ascii_lowercase(), lc.lun), handle);
    }
    let admin = Arc::new(Admin {
        shared,
        state: tokio::sync::Mutex::new(AdminState {
            ext: loaded.ext,
            config_file,
            admin_socket_setting: loaded.admin_socket,
            port0,
            luns,
            extra_listeners: Vec::new(),
        }),
    });
    Ok((server, admin))
}
