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

use super::protocol::{ErrorKind, Request, Response};
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

/// Adapts [`Admin`] to the socket server: JSON in, JSON out.
struct JsonAdmin(Arc<Admin>);

fn to_line(r: &Response) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_else(|_| br#"{"ok":false}"#.to_vec())
}

impl ctlsock::Handler for JsonAdmin {
    async fn handle(&self, line: Vec<u8>) -> Vec<u8> {
        to_line(&handle_line(&self.0, &line).await)
    }

    fn refusal(&self, why: &ctlsock::Refusal) -> Vec<u8> {
        let kind = match why {
            ctlsock::Refusal::TooLarge(_) => ErrorKind::BadRequest,
            _ => ErrorKind::Refused,
        };
        to_line(&Response::err(kind, why.to_string()))
    }
}

/// Bind the admin socket at `path` and serve `admin` on it.
pub async fn listen(
    admin: Arc<Admin>,
    path: &Path,
    limits: AdminLimits,
) -> Result<AdminSocket, SocketError> {
    let s = ctlsock::listen(Arc::new(JsonAdmin(admin)), path, limits).await?;
    tracing::info!(socket = %path.display(), "admin API listening");
    Ok(s)
}

/// Parse one request line and execute it.
pub async fn handle_line(admin: &Admin, line: &[u8]) -> Response {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return Response::err(ErrorKind::BadRequest, "empty request");
    }
    match serde_json::from_slice::<Request>(line) {
        Ok(req) => admin.handle(req).await,
        Err(e) => Response::err(ErrorKind::BadRequest, format!("bad request: {e}")),
    }
}
