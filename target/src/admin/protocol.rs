//! The admin API's wire format: newline-delimited JSON over a unix socket.
//!
//! A client writes one [`Request`] per line (a JSON object whose `"op"`
//! member names the verb, at most [`MAX_REQUEST`] bytes) and reads one
//! [`Response`] per line. Unknown ops and unknown members are errors.
//! Responses carry `"ok": true` and a `"result"`, or `"ok": false` and an
//! `"error"` with a [`ErrorKind`] and a message for humans.
//!
//! ```text
//! > {"op":"add-lun","target":"iqn.2024-01.org.example:disk1","spec":"mem:64M"}
//! < {"ok":true,"result":{"target":"iqn.2024-01.org.example:disk1","lun":1}}
//! ```
//!
//! CHAP secrets travel in requests (the socket is private to its owner,
//! mode 0600) but never in responses and never in logs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Largest request line accepted (bytes, newline included).
pub const MAX_REQUEST: usize = ctlsock::server::MAX_REQUEST;

/// A CHAP account in a request. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub user: String,
    pub secret: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Account {
    /// Parse `USER:SECRET` (the secret may contain colons).
    pub fn parse(s: &str) -> Option<Account> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() && !p.is_empty() => Some(Account {
                user: u.to_string(),
                secret: p.to_string(),
            }),
            _ => None,
        }
    }
}

/// One admin request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Targets, portals, LUNs, ACLs, sessions.
    Show {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    /// A new target. Portals default to every portal the server listens on.
    AddTarget {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alias: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        portals: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tpgt: Option<u16>,
        /// LUN SPECs (`mem:64M`, `file:PATH,...`), numbered 0, 1, ...
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        luns: Vec<String>,
    },
    /// Remove a target; refused while it has sessions unless `force`.
    RemoveTarget {
        name: String,
        #[serde(default)]
        force: bool,
    },
    /// Add a LUN (quick-start SPEC syntax); `lun` defaults to the lowest
    /// free number.
    AddLun {
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lun: Option<u64>,
        spec: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vendor: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        product: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        serial: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wwn_seed: Option<String>,
    },
    /// Remove a LUN; refused while an initiator uses it unless `force`.
    RemoveLun {
        target: String,
        lun: u64,
        #[serde(default)]
        force: bool,
    },
    /// Change the IO mode and/or the size of a LUN. Shrinking needs `force`.
    SetLun {
        target: String,
        lun: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
        /// Bytes, with an optional K/M/G/T suffix.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<String>,
        #[serde(default)]
        force: bool,
        /// Turn the LUN's control channel on or off (docs/control-channel.md).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        control: Option<bool>,
    },
    /// Export a target through one more portal (binding it if needed).
    AddPortal {
        target: String,
        portal: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tpgt: Option<u16>,
    },
    /// Add an initiator to a target's ACL (or update its entry).
    Allow {
        target: String,
        initiator: String,
        /// LUN masking: the LUNs this initiator may see (absent: leave its
        /// masking as it is; a new entry sees all LUNs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        luns: Option<Vec<u64>>,
        /// Drop the LUN masking of this initiator: it sees every LUN.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        all_luns: bool,
        /// Per-initiator CHAP account, replacing the target-wide ones.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chap: Option<Account>,
        /// Target credentials for mutual CHAP with this initiator.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mutual_chap: Option<Account>,
        /// Grant (true) or take away (false) the control right: SET of
        /// control-channel switches (absent: leave it as it is).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        control: Option<bool>,
    },
    /// Remove an initiator from a target's ACL. Removing the last entry
    /// opens the target to every initiator, so it needs `allow_any`.
    Deny {
        target: String,
        initiator: String,
        #[serde(default)]
        allow_any: bool,
    },
    /// Change CHAP accounts of a target (or of one initiator of it, or of
    /// discovery when `target` is absent).
    SetChap {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        initiator: Option<String>,
        /// Add (or replace, same user) an incoming account.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        add: Option<Account>,
        /// Remove the incoming account of this user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remove: Option<String>,
        /// Set the target's own account for mutual CHAP.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mutual: Option<Account>,
        /// Drop the mutual CHAP account.
        #[serde(default)]
        no_mutual: bool,
        /// Drop every account (AuthMethod=None, or back to target-wide
        /// accounts for an initiator).
        #[serde(default)]
        clear: bool,
    },
    /// Force one session out (by TSIH).
    LogoutSession {
        tsih: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    /// Write the running configuration to the configuration file (or to
    /// `file`), atomically.
    Save {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<PathBuf>,
    },
}

impl Request {
    /// The op name, for logs.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Show { .. } => "show",
            Request::AddTarget { .. } => "add-target",
            Request::RemoveTarget { .. } => "remove-target",
            Request::AddLun { .. } => "add-lun",
            Request::RemoveLun { .. } => "remove-lun",
            Request::SetLun { .. } => "set-lun",
            Request::AddPortal { .. } => "add-portal",
            Request::Allow { .. } => "allow",
            Request::Deny { .. } => "deny",
            Request::SetChap { .. } => "set-chap",
            Request::LogoutSession { .. } => "logout-session",
            Request::Save { .. } => "save",
        }
    }
}

/// Why a request failed, the error member and the response line: the
/// control-socket crate's, shared with the initiator daemon (the target
/// never answers `unreachable`).
pub use ctlsock::json::{ErrorBody, ErrorKind, Response};

/// `show`: the whole running state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShowResult {
    pub targets: Vec<TargetInfo>,
    /// Whether discovery sessions must authenticate, and the users.
    pub discovery_chap_users: Vec<String>,
    pub discovery_mutual_user: Option<String>,
    /// Discovery sessions currently logged in.
    pub discovery_sessions: usize,
    /// Addresses the server listens on.
    pub listening: Vec<String>,
    /// The configuration file `save` writes, if any.
    pub config_file: Option<PathBuf>,
    /// Warnings about the running configuration (e.g. CHAP secrets shorter
    /// than RFC 7143 §9.2.1 recommends).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalGroupInfo {
    pub tpgt: u16,
    pub portals: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetInfo {
    pub name: String,
    pub alias: Option<String>,
    pub portal_groups: Vec<PortalGroupInfo>,
    pub luns: Vec<LunInfo>,
    /// Empty: any initiator may log in.
    pub acl: Vec<AclInfo>,
    pub chap_users: Vec<String>,
    pub mutual_user: Option<String>,
    pub session_params: serde_json::Value,
    pub sessions: Vec<SessionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LunInfo {
    pub lun: u64,
    /// `file`, `block`, `mem`, `null`, `rbd`.
    pub backend: String,
    /// File or device path; `POOL/IMAGE` for rbd.
    pub path: Option<String>,
    pub size_bytes: u64,
    pub sector_size: u32,
    pub blocks: u64,
    /// `wb`, `wt`, `ro` (as in effect now).
    pub mode: String,
    pub thin: bool,
    pub serial: String,
    /// NAA identifier (VPD 0x83), `naa.` and 32 hex digits.
    pub wwn: String,
    pub vendor: String,
    pub product: String,
    /// Whether a logged-in initiator has used the LUN.
    pub in_use: bool,
    pub io: Option<IoStats>,
    /// What the backend reports about itself (rbd: image, size, features,
    /// monitors, lock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_info: Option<serde_json::Value>,
    /// The control channel: state, per-tag counters, recent tagged commands.
    #[serde(default)]
    pub control: crate::scsi::control::ControlSnapshot,
}

/// Per-LUN I/O counters since the LUN was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IoStats {
    pub read_ops: u64,
    pub read_bytes: u64,
    pub write_ops: u64,
    pub write_bytes: u64,
    pub flush_ops: u64,
    pub unmap_ops: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclInfo {
    pub initiator: String,
    /// LUN masking; absent: all LUNs.
    pub luns: Option<Vec<u64>>,
    pub chap_users: Vec<String>,
    pub mutual_user: Option<String>,
    /// The control right (may SET control-channel switches).
    #[serde(default)]
    pub control: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub tsih: u16,
    pub initiator: String,
    /// ISID in hex.
    pub isid: String,
    pub tpgt: u16,
    /// CIDs of the session's connections.
    pub connections: Vec<u16>,
    /// Negotiated session-wide parameters (RFC 7143 §13 key names).
    pub negotiated: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_reject_unknowns() {
        let r: Request =
            serde_json::from_str(r#"{"op":"add-lun","target":"iqn.2024-01.a:b","spec":"mem:1M"}"#)
                .unwrap();
        assert_eq!(r.op(), "add-lun");
        assert!(serde_json::from_str::<Request>(r#"{"op":"format-disk"}"#).is_err());
        assert!(serde_json::from_str::<Request>(
            r#"{"op":"remove-lun","target":"t","lun":1,"bogus":1}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"remove-lun","target":"t"}"#).is_err());
        let s: Request = serde_json::from_str(r#"{"op":"show"}"#).unwrap();
        assert_eq!(s, Request::Show { target: None });
        // Round trip of every shape the CLI sends.
        let all = vec![
            Request::Save { file: None },
            Request::SetChap {
                target: None,
                initiator: None,
                add: Account::parse("u:s:t"),
                remove: None,
                mutual: None,
                no_mutual: false,
                clear: false,
            },
            Request::LogoutSession {
                tsih: 3,
                target: None,
            },
        ];
        for r in all {
            let j = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r);
        }
    }

    #[test]
    fn secrets_not_in_debug() {
        let a = Account::parse("alice:top:secret").unwrap();
        assert_eq!(a.secret, "top:secret");
        assert!(!format!("{a:?}").contains("top"));
        assert!(Account::parse("alice").is_none());
        assert!(Account::parse("alice:").is_none());
    }
}
