//! The daemon's JSON API, shared by the daemon ([`super::server`]) and its
//! client ([`super::client`]): newline-delimited JSON over a unix socket
//! (mode 0600, requests up to [`MAX_REQUEST`] bytes).
//!
//! ```text
//! > {"op":"login","target":"iqn.2024-01.org.example:disk1","portal":"127.0.0.1:3260"}
//! < {"ok":true,"result":{"target":"iqn...","state":"logged-in",...}}
//! > {"op":"sessions"}
//! < {"ok":true,"result":[{...}]}
//! ```
//!
//! Errors: `{"ok":false,"error":{"kind":"not-found","message":"..."}}`;
//! [`ErrorKind`] says which exit code the CLI uses. Node records are not
//! part of the API: they are files ([`super::nodes`]) that the daemon reads
//! at login, as iscsiadm's node database.

use serde::{Deserialize, Serialize};

pub use ctlsock::server::MAX_REQUEST;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Variants without members are written `Name {}` so that
// `deny_unknown_fields` applies to them too.
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Is the daemon there? Answers its version, pid and state directory.
    Ping {},
    /// Log in to a node (its record is created with default settings when
    /// `portal` is given and none exists) and export its LUNs over NBD.
    Login {
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        portal: Option<String>,
        /// Overrides the node's NBD address for this session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nbd: Option<String>,
        /// Overrides the node's connection count for this session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connections: Option<u16>,
        /// Allow a non-loopback NBD address (NBD has no authentication).
        #[serde(default)]
        allow_remote_nbd: bool,
        /// Overrides the node's write tag for this session (0: untagged).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag_writes: Option<u8>,
        /// Overrides the node's read tag for this session (0: untagged).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag_reads: Option<u8>,
    },
    /// Log out of the sessions of `target` (all of them without `portal`).
    Logout {
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        portal: Option<String>,
    },
    /// Log out of every session.
    LogoutAll {},
    /// Every session, with state, LUNs, exports and counters.
    Sessions {},
}

/// Error classes (each with its CLI exit code), the error member and the
/// response line: the control-socket crate's, shared with the target's
/// admin API.
pub use ctlsock::json::{ErrorBody, ErrorKind, Response};

/// Classify an initiator error.
pub fn error_kind(e: &crate::Error) -> ErrorKind {
    match e.kind() {
        crate::ErrorKind::Usage => ErrorKind::Invalid,
        crate::ErrorKind::Failed => ErrorKind::Failed,
        crate::ErrorKind::Unreachable => ErrorKind::Unreachable,
    }
}

/// `ping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingInfo {
    pub version: String,
    pub pid: u32,
    pub state_dir: String,
    pub initiator_name: String,
}

/// Session state as `iscsi session` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionState {
    /// Full-feature phase.
    LoggedIn,
    /// Connection lost; reconnecting within the replacement timeout. NBD
    /// requests wait.
    Recovering,
    /// Recovery gave up: NBD requests fail with EIO. Log in again.
    Failed,
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionState::LoggedIn => "logged-in",
            SessionState::Recovering => "recovering",
            SessionState::Failed => "failed",
        })
    }
}

/// A state change, as logged and shown by `iscsi session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// `login`, `connection-lost`, `recovering`, `recovered`, `failed`,
    /// `luns-changed`, `unit-attention`, `logout-requested`.
    pub event: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// An NBD export and its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportInfo {
    pub name: String,
    /// `nbd://HOST:PORT/NAME` or `nbd+unix:///NAME?socket=PATH`.
    pub uri: String,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub clients: u64,
    #[serde(default)]
    pub reads: u64,
    #[serde(default)]
    pub writes: u64,
    #[serde(default)]
    pub bytes_read: u64,
    #[serde(default)]
    pub bytes_written: u64,
    #[serde(default)]
    pub errors: u64,
}

/// One logical unit of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LunInfo {
    /// The LUN number; `None` for a LUN that is not single-level.
    pub lun: Option<u16>,
    /// The 8-byte LUN field, hex.
    pub lun_raw: String,
    pub vendor: String,
    pub product: String,
    pub size: u64,
    pub block_size: u32,
    /// `None` for LUNs that are not disks (e.g. tgtd's controller LUN 0)
    /// or could not be opened (`note` says why).
    pub export: Option<ExportInfo>,
    /// Tagged views of the export (`lun0@tag6`) that clients have opened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tagged_exports: Vec<ExportInfo>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// One session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub target: String,
    pub portal: String,
    pub initiator_name: String,
    /// Hex.
    pub isid: String,
    pub tsih: u16,
    pub state: SessionState,
    /// When `state` was entered (seconds since the Unix epoch).
    pub since: u64,
    pub replacement_timeout: u64,
    /// Control-channel tags of the session's block reads and writes.
    #[serde(default)]
    pub io_tags: crate::IoTags,
    /// Where the NBD exports listen (`HOST:PORT` or `unix:PATH`).
    pub nbd: Option<String>,
    pub connections: Vec<crate::session::ConnectionStats>,
    pub luns: Vec<LunInfo>,
    /// State changes, oldest first (the last 32).
    pub events: Vec<EventRecord>,
}

/// `logout` / `logout-all`: what was logged out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedOut {
    pub target: String,
    pub portal: String,
    /// Empty when the logout was clean; else what went wrong (the session
    /// is gone either way).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub warning: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_members_are_refused() {
        let r: Request = serde_json::from_str(
            r#"{"op":"login","target":"iqn.2024-01.org.example:d","connections":2}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Login {
                target: "iqn.2024-01.org.example:d".into(),
                portal: None,
                nbd: None,
                connections: Some(2),
                allow_remote_nbd: false,
                tag_writes: None,
                tag_reads: None,
            }
        );
        let back: Request = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(serde_json::from_str::<Request>(r#"{"op":"sessions","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"format-disk"}"#).is_err());
        assert_eq!(ErrorKind::Unreachable.exit_code(), 3);
    }
}
