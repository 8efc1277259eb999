//! Where the daemon keeps its state and socket.
//!
//! State directory (node records, the socket): `$ISCSI_STATE_DIR` when
//! set, else `/var/lib/iscsi-rs` as root, else `$XDG_STATE_HOME/iscsi-rs`,
//! else `~/.local/state/iscsi-rs`.
//! The socket is always `<state-dir>/iscsid.sock`, so one `--state-dir`
//! moves everything and a client pointed at the same state directory as
//! its daemon always finds it (the directory is 0700: the socket is
//! private twice over).

use std::path::{Path, PathBuf};

/// Environment variable that overrides the default state directory.
pub const STATE_DIR_ENV: &str = "ISCSI_STATE_DIR";

/// Socket file name inside the state directory.
pub const SOCKET_NAME: &str = "iscsid.sock";

/// The default state directory for this user.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if ctlsock::is_root() {
        return PathBuf::from("/var/lib/iscsi-rs");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("iscsi-rs");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".local/state/iscsi-rs");
    }
    PathBuf::from(format!("/tmp/iscsi-rs-{}", ctlsock::euid()))
}

/// The state directory: `explicit`, else the default.
pub fn state_dir(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(default_state_dir)
}

/// The socket: `explicit`, else `<state_dir>/iscsid.sock`.
pub fn socket(explicit: Option<&Path>, state_dir: &Path) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| state_dir.join(SOCKET_NAME))
}

/// Create the state directory (0700) if missing; refuse one owned by
/// another user.
pub fn prepare_state_dir(dir: &Path) -> Result<(), ctlsock::SocketError> {
    ctlsock::server::prepare_dir(dir)
}
