//! The serve-side glue: loading `--config FILE`, starting the server through
//! `iscsi_target::admin::launch` and its admin socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use iscsi_target::admin::server::{default_socket_path, AdminLimits, AdminSocket};
use iscsi_target::admin::{self, Admin};
use iscsi_target::config::ServerConfig;
use iscsi_target::config_file::{self, Loaded};
use iscsi_target::server::Server;

/// Load `--config FILE` (errors name the JSON path of the bad field).
pub fn load_config(file: &Path) -> Result<Loaded, String> {
    config_file::load(file).map_err(|e| match &e {
        config_file::FileError::Syntax { .. } | config_file::FileError::Invalid { .. } => {
            format!("{}: {e}", file.display())
        }
        _ => e.to_string(),
    })
}

/// Quick-start flags as a [`Loaded`] configuration (no extensions).
pub fn from_flags(cfg: ServerConfig) -> Loaded {
    Loaded {
        server: cfg,
        ext: Default::default(),
        admin_socket: None,
    }
}

/// A running target with its admin API.
pub struct Running {
    pub server: Server,
    pub admin: Arc<Admin>,
    pub socket: Option<AdminSocket>,
}

impl Running {
    /// End every session (logout requests first), stop the admin socket.
    /// Never saves the configuration.
    pub async fn shutdown(self) {
        if let Some(s) = self.socket {
            s.shutdown().await;
        }
        self.admin.stop_extra_listeners().await;
        self.server.shutdown().await;
        self.admin.close_luns().await;
    }
}

/// Start the server and its admin socket. The socket is `socket` (from
/// `--admin-socket`), else the file's `admin_socket`, else the default; a
/// socket given explicitly must work, the default one may be skipped (with
/// a warning) when another daemon already owns it.
pub async fn start(
    loaded: Loaded,
    config_file: Option<PathBuf>,
    socket: Option<PathBuf>,
) -> Result<Running, String> {
    let explicit = socket.clone().or_else(|| loaded.admin_socket.clone());
    let (server, admin) = admin::launch(loaded, config_file)
        .await
        .map_err(|e| e.to_string())?;
    // Short CHAP secrets and the like, whether from flags or a file.
    for w in admin.warnings() {
        eprintln!("iscsi target serve: warning: {w}");
    }
    let path = explicit.clone().unwrap_or_else(default_socket_path);
    let socket = match admin::server::listen(admin.clone(), &path, AdminLimits::default()).await {
        Ok(s) => Some(s),
        Err(e) if explicit.is_none() => {
            eprintln!("iscsi target serve: warning: admin API disabled: {e}");
            None
        }
        Err(e) => {
            server.shutdown_with_grace(Duration::from_millis(10)).await;
            return Err(e.to_string());
        }
    };
    Ok(Running {
        server,
        admin,
        socket,
    })
}
