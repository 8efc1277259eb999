//! The admin API on a unix socket: newline-delimited JSON (see
//! [`super::protocol`]), served through [`ctlsock`], which the initiator
//! daemon uses too.
//!
//! Defences ([`ctlsock::server`]): socket mode 0600 in a directory we own,
//! owner and root only (SO_PEERCRED), requests bounded to
//! [`AdminLimits::max_request`], read timeouts, a client cap; malformed
//! JSON and unknown ops get an error response and the connection stays
//! usable. A stale socket left by a killed daemon is replaced; a live one
//! is not.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::protocol::{Request, Response};
use super::Admin;

pub use ctlsock::server::{ControlSocket as AdminSocket, Limits as AdminLimits, SocketError};

/// The default socket path: `$XDG_RUNTIME_DIR/iscsi-rs/target.sock`, else
/// `/run/iscsi-rs/target.sock` for root, else `/tmp/iscsi-rs-UID/target.sock`.
pub fn default_socket_path() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("iscsi-rs").join("target.sock");
    }
    let uid = ctlsock::euid();
    if uid == 0 {
        PathBuf::from("/run/iscsi-rs/target.sock")
    } else {
        PathBuf::from(format!("/tmp/iscsi-rs-{uid}/target.sock"))
    }
}

impl ctlsock::json::JsonService for Admin {
    type Request = Request;

    async fn call(&self, req: Request, _progress: ctlsock::Progress) -> Response {
        self.handle(req).await
    }
}

/// Bind the admin socket at `path` and serve `admin` on it.
pub async fn listen(
    admin: Arc<Admin>,
    path: &Path,
    limits: AdminLimits,
) -> Result<AdminSocket, SocketError> {
    let s = ctlsock::listen(Arc::new(ctlsock::json::Json(admin)), path, limits).await?;
    tracing::info!(socket = %path.display(), "admin API listening");
    Ok(s)
}

/// Parse one request line and execute it.
pub async fn handle_line(admin: &Admin, line: &[u8]) -> Response {
    ctlsock::json::handle_line(admin, line, ctlsock::Progress::none()).await
}
