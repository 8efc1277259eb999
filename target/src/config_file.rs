//! The target's JSON configuration file (`iscsi target serve --config FILE`):
//! schema, loading with path-accurate errors, mapping onto the runtime
//! structs of [`crate::config`], and atomic saving.
//!
//! # Format
//!
//! Plain JSON (RFC 8259), so any JSON tool can read and write it. JSON has
//! no comments; instead every object accepts a `"_comment"` key whose value
//! is a string or an array of strings. The loader ignores its content;
//! `save` writes back the comments of the top level, of targets, portal
//! groups, LUNs and ACL entries (comments elsewhere are accepted and
//! dropped on save). Every other unknown key is an error, and so is every
//! invalid value: the error names the JSON path of the offending field and
//! the reason, e.g. `targets[0].luns[2].sector_size: must be 512 or 4096,
//! got 1000`. See `examples/target.json` for a complete, commented example.
//!
//! # What the runtime structs cannot hold
//!
//! [`crate::config::TargetConfig`] is the runtime source of truth, ACL
//! included: per-initiator LUN masking and CHAP accounts (`acl[].luns`,
//! `acl[].chap`) map onto [`crate::config::InitiatorConfig`] and are
//! enforced by the login code and the device server. What the runtime
//! structs have no field for lives in [`Extensions`]: comments (written
//! back by `save`) and the LUN settings [`crate::admin`] applies when it
//! builds the logical units (vendor, product, WWN seed).
//!
//! # Saving
//!
//! [`save_atomic`]: serialize, write a temporary file in the same directory
//! (mode 0600: the file holds CHAP secrets), fsync it, rename it over the
//! target path, fsync the directory. A crash leaves either the old or the
//! new file, never a torn one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{
    parse_portal, parse_size, AuthConfig, BackendConfig, ChapCredentials, InitiatorConfig, IoMode,
    LunConfig, PortalGroup, ServerConfig, SessionLimits, TargetConfig,
};

/// Largest configuration file accepted (a sanity bound, not a format limit).
pub const MAX_FILE_SIZE: u64 = 16 << 20;

/// Highest LUN number (SAM-5 flat space addressing, 14 bits).
pub const MAX_LUN: u64 = 16383;

/// Errors loading or saving a configuration file.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {file}: {source}")]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file} is larger than {MAX_FILE_SIZE} bytes")]
    TooLarge { file: PathBuf },
    /// Bad JSON, an unknown key or a value of the wrong type.
    #[error("{path}: {reason}")]
    Syntax { path: String, reason: String },
    /// A well-formed value that is not acceptable.
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl FileError {
    fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        FileError::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The JSON path of the offending field, when the error has one.
    pub fn json_path(&self) -> Option<&str> {
        match self {
            FileError::Syntax { path, .. } | FileError::Invalid { path, .. } => Some(path),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------

/// A `"_comment"` value: one line or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Comment {
    Line(String),
    Lines(Vec<String>),
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
    /// Admin socket path; `--admin-socket` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_socket: Option<PathBuf>,
    /// Authentication of discovery sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryEntry>,
    /// Refuse initiator names outside RFC 3722 (e.g. with `_`) in ACLs;
    /// by default they are accepted with a warning.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict_names: bool,
    /// IEEE company id (OUI, 24 bits, e.g. "00:14:05" or "0x001405") in
    /// the NAA WWN of every LU; set it to your organisation's OUI. Default:
    /// the OUI Linux software targets use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_id: Option<String>,
    /// Admission caps and the authentication backoff (defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsEntry>,
    pub targets: Vec<TargetEntry>,
}

/// `limits`: caps checked at login before anything is committed, and the
/// per-source backoff after failed authentications (`crate::limits`).
/// Every field is optional; absent ones keep their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_logins_in_progress: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions_per_target: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_initiator: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_failures_before_backoff: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_backoff_max_secs: Option<u64>,
}

fn limits_to_runtime(e: Option<&LimitsEntry>) -> Result<crate::limits::ServerLimits, FileError> {
    let mut l = crate::limits::ServerLimits::default();
    let Some(e) = e else { return Ok(l) };
    let positive = |name: &str, v: usize| {
        if v == 0 {
            Err(FileError::invalid(
                format!("limits.{name}"),
                "must be at least 1",
            ))
        } else {
            Ok(v)
        }
    };
    if let Some(v) = e.max_logins_in_progress {
        l.max_logins_in_progress = positive("max_logins_in_progress", v)?;
    }
    if let Some(v) = e.max_sessions_per_target {
        l.max_sessions_per_target = positive("max_sessions_per_target", v)?;
    }
    if let Some(v) = e.max_connections_per_initiator {
        l.max_connections_per_initiator = positive("max_connections_per_initiator", v)?;
    }
    if let Some(v) = e.auth_failures_before_backoff {
        l.auth_failures_before_backoff =
            positive("auth_failures_before_backoff", v as usize)? as u32;
    }
    if let Some(v) = e.auth_backoff_max_secs {
        l.auth_backoff_max = std::time::Duration::from_secs(v);
    }
    Ok(l)
}

fn limits_entry(l: &crate::limits::ServerLimits) -> Option<LimitsEntry> {
    let d = crate::limits::ServerLimits::default();
    let pick = |a: usize, b: usize| (a != b).then_some(a);
    let e = LimitsEntry {
        max_logins_in_progress: pick(l.max_logins_in_progress, d.max_logins_in_progress),
        max_sessions_per_target: pick(l.max_sessions_per_target, d.max_sessions_per_target),
        max_connections_per_initiator: pick(
            l.max_connections_per_initiator,
            d.max_connections_per_initiator,
        ),
        auth_failures_before_backoff: (l.auth_failures_before_backoff
            != d.auth_failures_before_backoff)
            .then_some(l.auth_failures_before_backoff),
        auth_backoff_max_secs: (l.auth_backoff_max != d.auth_backoff_max)
            .then_some(l.auth_backoff_max.as_secs()),
    };
    (e != LimitsEntry::default()).then_some(e)
}

/// `discovery`: who may run SendTargets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryEntry {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap: Option<ChapEntry>,
}

/// CHAP accounts: `incoming` (initiators prove themselves with one of
/// these) and `outgoing` (the target's own, for mutual CHAP).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChapEntry {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
    #[serde(default)]
    pub incoming: Vec<AccountEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outgoing: Option<AccountEntry>,
}

/// One CHAP account. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountEntry {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
    pub user: String,
    pub secret: String,
}

impl std::fmt::Debug for AccountEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountEntry")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// One target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetEntry {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
    /// iSCSI name (`iqn.`, `eui.`, `naa.`).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    pub portal_groups: Vec<PortalGroupEntry>,
    #[serde(default)]
    pub luns: Vec<LunEntry>,
    /// Target-wide CHAP; absent: AuthMethod=None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap: Option<ChapEntry>,
    /// Initiators allowed to log in; empty or absent: any initiator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acl: Vec<AclEntry>,
    /// Session parameters; absent keys take the defaults of
    /// [`SessionLimits::default`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionEntry>,
}

/// A portal group (RFC 7143 §4.4.1): a TPGT and its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalGroupEntry {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
    pub tpgt: u16,
    /// `HOST:PORT`, `[V6]:PORT` or `HOST` (port 3260). Port 0 picks a free
    /// port at start-up.
    pub portals: Vec<String>,
}

/// A size: a number of bytes or a string with a K/M/G/T suffix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SizeEntry {
    Bytes(u64),
    Text(String),
}

/// One logical unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LunEntry {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
    pub lun: u64,
    /// `file`, `block`, `mem`, `null` or `rbd`.
    pub backend: String,
    /// File or block device (file/block backends only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `POOL/IMAGE` or `POOL/NAMESPACE/IMAGE` (rbd backend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How to reach the Ceph cluster (rbd backend only; all optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceph: Option<CephEntry>,
    /// Required for mem/null; for file: size of a created file (an
    /// existing file keeps its size unless given); not for block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeEntry>,
    /// 512 (default) or 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector_size: Option<u32>,
    /// `wb` (default), `wt` or `ro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Sparse file with UNMAP support (file backend only; mem is always
    /// thin, null and block never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thin: Option<bool>,
    /// Seed of the unit serial number (VPD 0x80); default: derived from the
    /// target name and the LUN's identity, stable across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Seed of the NAA WWN (VPD 0x83); same seed, same WWN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_seed: Option<String>,
    /// INQUIRY T10 VENDOR IDENTIFICATION (at most 8 ASCII characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// INQUIRY PRODUCT IDENTIFICATION (at most 16 ASCII characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Present the LUN as removable media (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removable: bool,
    /// Accept SANITIZE, which erases the whole LUN (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sanitize: bool,
    /// Control channel on (docs/control-channel.md; default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub control: bool,
}

/// Ceph client settings of an rbd LUN.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CephEntry {
    /// ceph.conf (default: `$CEPH_CONF`, then /etc/ceph/ceph.conf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<PathBuf>,
    /// Ceph user without `client.` (default `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Keyring (default: the one the conf names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring: Option<PathBuf>,
    /// RADOS namespace (or give `POOL/NAMESPACE/IMAGE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Seconds a cluster operation may take before the command fails with
    /// a retryable sense (1..=3600, default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// Open even when another client holds the image's exclusive lock.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

/// One initiator allowed to log in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclEntry {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
    pub initiator: String,
    /// LUNs this initiator may see; absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub luns: Option<Vec<u64>>,
    /// Credentials for this initiator, replacing the target-wide ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap: Option<ChapEntry>,
    /// The control right: may SET control-channel switches (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub control: bool,
}

/// Session parameters (RFC 7143 §13 keys and the target's own limits).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionEntry {
    #[serde(rename = "_comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recv_data_segment_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_burst_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_burst_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_outstanding_r2t: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate_data: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_r2t: Option<bool>,
    /// Accept HeaderDigest=CRC32C when the initiator offers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_digest: Option<bool>,
    /// Accept DataDigest=CRC32C when the initiator offers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_digest: Option<bool>,
    /// Idle seconds before a NOP-In ping; 0: never ping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nop_interval_secs: Option<u64>,
    /// Seconds a ping may stay unanswered before the connection drops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nop_timeout_secs: Option<u64>,
    /// Seconds the whole login phase may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_timeout_secs: Option<u64>,
}

// ---------------------------------------------------------------------------
// Extensions: what the runtime structs have no field for
// ---------------------------------------------------------------------------

/// Settings the runtime structs of [`crate::config`] cannot hold, keyed by
/// target name (lower case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub comment: Option<Comment>,
    /// The file's `strict_names` (kept for `save`).
    pub strict_names: bool,
    /// IEEE company id (OUI) of every LU's NAA designator (VPD 83h); the
    /// default is [`crate::scsi::lu::DEFAULT_COMPANY_ID`].
    pub company_id: Option<u32>,
    pub targets: BTreeMap<String, TargetExt>,
    /// Where logical units keep their persistent reservations across
    /// restarts (APTPL). Not a file key: `--pr-state-dir`, else
    /// [`crate::admin::launch`] puts it beside the configuration file.
    pub pr_state_dir: Option<PathBuf>,
}

/// Per-target extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetExt {
    pub comment: Option<Comment>,
    /// `_comment` of each portal group, by TPGT.
    pub portal_group_comments: BTreeMap<u16, Comment>,
    pub luns: BTreeMap<u64, LunExt>,
    /// `_comment` of each ACL entry, by initiator name (lower case). The
    /// entries themselves are in [`TargetConfig::allow`] and
    /// [`TargetConfig::initiators`].
    pub acl_comments: BTreeMap<String, Comment>,
}

/// Per-LUN extensions, applied when the logical unit is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LunExt {
    pub comment: Option<Comment>,
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub wwn_seed: Option<String>,
}

impl Extensions {
    /// The extensions of a target, created empty when missing.
    pub fn target_mut(&mut self, name: &str) -> &mut TargetExt {
        self.targets.entry(name.to_ascii_lowercase()).or_default()
    }

    /// The extensions of a target.
    pub fn target(&self, name: &str) -> Option<&TargetExt> {
        self.targets.get(&name.to_ascii_lowercase())
    }
}

/// A configuration file mapped onto the runtime structs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub server: ServerConfig,
    pub ext: Extensions,
    pub admin_socket: Option<PathBuf>,
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Read, parse and validate a configuration file.
pub fn load(file: &Path) -> Result<Loaded, FileError> {
    let meta = std::fs::metadata(file).map_err(|source| FileError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    if meta.len() > MAX_FILE_SIZE {
        return Err(FileError::TooLarge {
            file: file.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(file).map_err(|source| FileError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let mut loaded = parse_str(&text)?;
    // Relative LUN paths are relative to the configuration file's
    // directory (made absolute, so that a saved file loads back the same
    // from anywhere).
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    for t in &mut loaded.server.targets {
        for l in &mut t.luns {
            let paths: Vec<&mut PathBuf> = match &mut l.backend {
                BackendConfig::File { path, .. } | BackendConfig::Block { path } => vec![path],
                BackendConfig::Rbd(r) => r.conf.iter_mut().chain(r.keyring.iter_mut()).collect(),
                _ => Vec::new(),
            };
            for path in paths {
                if path.is_relative() {
                    *path = dir.join(&*path);
                }
            }
        }
    }
    Ok(loaded)
}

/// Parse and validate configuration text.
pub fn parse_str(text: &str) -> Result<Loaded, FileError> {
    let file = parse_schema(text)?;
    to_runtime(&file)
}

/// Parse the JSON into the schema only (unknown keys and wrong types are
/// errors with their path; values are not checked).
pub fn parse_schema(text: &str) -> Result<ConfigFile, FileError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let file: ConfigFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        FileError::Syntax {
            path: if path == "." {
                "(top level)".into()
            } else {
                path
            },
            reason: e.into_inner().to_string(),
        }
    })?;
    Ok(file)
}

pub(crate) fn check_name(path: &str, name: &str) -> Result<(), FileError> {
    proto::name::IscsiName::parse(name)
        .map(|_| ())
        .map_err(|e| FileError::invalid(path, format!("{name:?}: {e}")))
}

/// An IEEE company id (OUI): 24 bits written as 6 hex digits, optionally
/// with a `0x` prefix or `:`/`-` between the bytes ("00:14:05").
pub fn parse_company_id(v: &str) -> Result<u32, String> {
    let digits: String = v
        .trim()
        .trim_start_matches("0x")
        .trim_start_matches("0X")
        .chars()
        .filter(|c| !matches!(c, ':' | '-'))
        .collect();
    if digits.len() != 6 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{v:?} is not a company id: write the 24-bit OUI as 6 hex digits, e.g. \"00:14:05\""
        ));
    }
    u32::from_str_radix(&digits, 16).map_err(|e| e.to_string())
}

/// The form `save` writes: "00:14:05".
pub fn format_company_id(id: u32) -> String {
    let b = id.to_be_bytes();
    format!("{:02x}:{:02x}:{:02x}", b[1], b[2], b[3])
}

/// An initiator name in an ACL: RFC 3722 names, and (unless `strict`)
/// names with `_`, which the RFC's repertoire lacks but Windows and other
/// initiators derive from host names. Accepted ones are logged with a
/// warning so the operator knows the name is outside the RFC.
pub fn check_initiator_name(path: &str, name: &str, strict: bool) -> Result<(), FileError> {
    if strict {
        return check_name(path, name);
    }
    match proto::name::IscsiName::parse_lenient(name) {
        Ok((_, false)) => Ok(()),
        Ok((_, true)) => {
            tracing::warn!(
                initiator = name,
                field = path,
                "initiator name contains '_', which RFC 3722 does not allow; accepted \
                 (set strict_names to refuse such names)"
            );
            Ok(())
        }
        Err(e) => Err(FileError::invalid(path, format!("{name:?}: {e}"))),
    }
}

pub(crate) fn check_ascii_field(path: &str, v: &str, max: usize) -> Result<(), FileError> {
    if v.is_empty() || v.len() > max || !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(FileError::invalid(
            path,
            format!("must be 1 to {max} printable ASCII characters, got {v:?}"),
        ));
    }
    Ok(())
}

fn chap_to_runtime(path: &str, c: &ChapEntry) -> Result<AuthConfig, FileError> {
    let mut auth = AuthConfig::default();
    for (i, a) in c.incoming.iter().enumerate() {
        let p = format!("{path}.incoming[{i}]");
        auth.incoming.push(account(&p, a)?);
        if c.incoming[..i].iter().any(|o| o.user == a.user) {
            return Err(FileError::invalid(
                format!("{p}.user"),
                format!("duplicate CHAP user {:?}", a.user),
            ));
        }
    }
    if let Some(o) = &c.outgoing {
        if c.incoming.is_empty() {
            return Err(FileError::invalid(
                format!("{path}.outgoing"),
                "mutual CHAP needs at least one incoming account (mutual follows one-way CHAP)",
            ));
        }
        auth.outgoing = Some(account(&format!("{path}.outgoing"), o)?);
    }
    Ok(auth)
}

fn account(path: &str, a: &AccountEntry) -> Result<ChapCredentials, FileError> {
    if a.user.is_empty() || a.user.len() > 255 {
        return Err(FileError::invalid(
            format!("{path}.user"),
            "must be 1 to 255 bytes",
        ));
    }
    if a.secret.is_empty() || a.secret.len() > 255 {
        return Err(FileError::invalid(
            format!("{path}.secret"),
            "must be 1 to 255 bytes",
        ));
    }
    Ok(ChapCredentials {
        user: a.user.clone(),
        secret: a.secret.as_bytes().to_vec(),
    })
}

fn size_value(path: &str, s: &SizeEntry) -> Result<u64, FileError> {
    match s {
        SizeEntry::Bytes(n) => Ok(*n),
        SizeEntry::Text(t) => parse_size(t).map_err(|e| FileError::invalid(path, e.to_string())),
    }
}

fn range_u32(path: &str, v: Option<u32>, lo: u32, hi: u32, default: u32) -> Result<u32, FileError> {
    match v {
        None => Ok(default),
        Some(x) if (lo..=hi).contains(&x) => Ok(x),
        Some(x) => Err(FileError::invalid(
            path,
            format!("must be between {lo} and {hi}, got {x}"),
        )),
    }
}

fn range_secs(
    path: &str,
    v: Option<u64>,
    lo: u64,
    hi: u64,
    default: Duration,
) -> Result<Duration, FileError> {
    match v {
        None => Ok(default),
        Some(x) if (lo..=hi).contains(&x) => Ok(Duration::from_secs(x)),
        Some(x) => Err(FileError::invalid(
            path,
            format!("must be between {lo} and {hi} seconds, got {x}"),
        )),
    }
}

/// RFC 7143 §13.12-§13.14: data lengths are 512 to 2^24 - 1.
const MAX_DATA_LEN: u32 = (1 << 24) - 1;

fn session_to_runtime(path: &str, s: &SessionEntry) -> Result<SessionLimits, FileError> {
    let d = SessionLimits::default();
    let p = |k: &str| format!("{path}.{k}");
    let max_connections = range_u32(
        &p("max_connections"),
        s.max_connections,
        1,
        65535,
        d.max_connections.into(),
    )?;
    let max_outstanding_r2t = range_u32(
        &p("max_outstanding_r2t"),
        s.max_outstanding_r2t,
        1,
        65535,
        d.max_outstanding_r2t.into(),
    )?;
    let max_burst_length = range_u32(
        &p("max_burst_length"),
        s.max_burst_length,
        512,
        MAX_DATA_LEN,
        d.max_burst_length,
    )?;
    let first_burst_length = range_u32(
        &p("first_burst_length"),
        s.first_burst_length,
        512,
        MAX_DATA_LEN,
        d.first_burst_length.min(max_burst_length),
    )?;
    if first_burst_length > max_burst_length {
        // RFC 7143 §13.14: "FirstBurstLength MUST NOT exceed MaxBurstLength."
        return Err(FileError::invalid(
            p("first_burst_length"),
            format!("{first_burst_length} exceeds max_burst_length {max_burst_length} (RFC 7143 §13.14)"),
        ));
    }
    let nop_interval = match s.nop_interval_secs {
        None => d.nop_interval,
        Some(0) => None,
        Some(x) if x <= 3600 => Some(Duration::from_secs(x)),
        Some(x) => {
            return Err(FileError::invalid(
                p("nop_interval_secs"),
                format!("must be between 0 (never) and 3600 seconds, got {x}"),
            ))
        }
    };
    Ok(SessionLimits {
        max_connections: max_connections as u16,
        queue_depth: range_u32(&p("queue_depth"), s.queue_depth, 1, 65536, d.queue_depth)?,
        max_recv_data_segment_length: range_u32(
            &p("max_recv_data_segment_length"),
            s.max_recv_data_segment_length,
            512,
            MAX_DATA_LEN,
            d.max_recv_data_segment_length,
        )?,
        max_burst_length,
        first_burst_length,
        immediate_data: s.immediate_data.unwrap_or(d.immediate_data),
        initial_r2t: s.initial_r2t.unwrap_or(d.initial_r2t),
        max_outstanding_r2t: max_outstanding_r2t as u16,
        header_digest: s.header_digest.unwrap_or(d.header_digest),
        data_digest: s.data_digest.unwrap_or(d.data_digest),
        nop_interval,
        nop_timeout: range_secs(
            &p("nop_timeout_secs"),
            s.nop_timeout_secs,
            1,
            3600,
            d.nop_timeout,
        )?,
        login_timeout: range_secs(
            &p("login_timeout_secs"),
            s.login_timeout_secs,
            1,
            3600,
            d.login_timeout,
        )?,
    })
}

/// Map one LUN entry; `path` is its JSON path (e.g. `targets[0].luns[2]`).
pub fn lun_to_runtime(path: &str, l: &LunEntry) -> Result<(LunConfig, LunExt), FileError> {
    let p = |k: &str| format!("{path}.{k}");
    if l.lun > MAX_LUN {
        return Err(FileError::invalid(
            p("lun"),
            format!("must be between 0 and {MAX_LUN}, got {}", l.lun),
        ));
    }
    let block_size = match l.sector_size {
        None => 512,
        Some(s @ (512 | 4096)) => s,
        Some(s) => {
            return Err(FileError::invalid(
                p("sector_size"),
                format!("must be 512 or 4096, got {s}"),
            ))
        }
    };
    let mode = match &l.mode {
        None => IoMode::WriteBack,
        Some(m) => IoMode::parse(m).ok_or_else(|| {
            FileError::invalid(
                p("mode"),
                format!("must be \"wb\", \"wt\" or \"ro\", got {m:?}"),
            )
        })?,
    };
    let size = l
        .size
        .as_ref()
        .map(|s| size_value(&p("size"), s))
        .transpose()?;
    if let Some(size) = size {
        if size < u64::from(block_size) || !size.is_multiple_of(u64::from(block_size)) {
            return Err(FileError::invalid(
                p("size"),
                format!("must be a non-zero multiple of the sector size {block_size}, got {size}"),
            ));
        }
    }
    let need_path = |what: &str| -> Result<PathBuf, FileError> {
        match &l.path {
            Some(x) if !x.as_os_str().is_empty() => Ok(x.clone()),
            _ => Err(FileError::invalid(
                p("path"),
                format!("required for a {what} LUN"),
            )),
        }
    };
    let no = |key: &str, present: bool, why: &str| -> Result<(), FileError> {
        if present {
            Err(FileError::invalid(p(key), why.to_string()))
        } else {
            Ok(())
        }
    };
    if l.backend != "rbd" {
        no("image", l.image.is_some(), "only rbd LUNs have an image")?;
        no("ceph", l.ceph.is_some(), "only rbd LUNs have ceph settings")?;
    }
    let backend = match l.backend.as_str() {
        "rbd" => {
            no(
                "path",
                l.path.is_some(),
                "an rbd LUN names its image in \"image\"",
            )?;
            no(
                "size",
                l.size.is_some(),
                "an rbd LUN has the size of its image (rbd resize)",
            )?;
            no("thin", l.thin.is_some(), "an rbd LUN is always thin")?;
            let name = l.image.as_deref().unwrap_or("");
            let mut r = crate::config::RbdSpec::parse_name(name).ok_or_else(|| {
                FileError::invalid(
                    p("image"),
                    format!("expected \"POOL/IMAGE\" or \"POOL/NAMESPACE/IMAGE\", got {name:?}"),
                )
            })?;
            let c = l.ceph.clone().unwrap_or_default();
            if c.namespace.is_some() && r.namespace.is_some() {
                return Err(FileError::invalid(
                    p("ceph.namespace"),
                    "namespace given twice",
                ));
            }
            if let Some(t) = c.timeout_secs {
                if !(1..=3600).contains(&t) {
                    return Err(FileError::invalid(
                        p("ceph.timeout_secs"),
                        format!("must be between 1 and 3600, got {t}"),
                    ));
                }
            }
            r.namespace = r.namespace.or(c.namespace);
            r.conf = c.conf;
            r.user = c.user.map(|u| u.trim_start_matches("client.").to_string());
            r.keyring = c.keyring;
            r.timeout_secs = c.timeout_secs;
            r.shared = c.shared;
            BackendConfig::Rbd(r)
        }
        "mem" | "null" => {
            no("path", l.path.is_some(), "mem and null LUNs have no path")?;
            no(
                "thin",
                l.thin.is_some(),
                "only file LUNs take thin (mem is always thin, null never)",
            )?;
            let size = size.ok_or_else(|| {
                FileError::invalid(p("size"), format!("required for a {} LUN", l.backend))
            })?;
            if l.backend == "mem" {
                BackendConfig::Memory { size }
            } else {
                BackendConfig::Null { size }
            }
        }
        "file" => BackendConfig::File {
            path: need_path("file")?,
            size,
            thin: l.thin.unwrap_or(false),
        },
        "block" => {
            no(
                "size",
                l.size.is_some(),
                "a block LUN has the size of its device",
            )?;
            no("thin", l.thin.is_some(), "only file LUNs take thin")?;
            BackendConfig::Block {
                path: need_path("block")?,
            }
        }
        other => {
            return Err(FileError::invalid(
                p("backend"),
                format!("must be \"file\", \"block\", \"mem\", \"null\" or \"rbd\", got {other:?}"),
            ))
        }
    };
    if let Some(s) = &l.serial {
        check_ascii_field(&p("serial"), s, 64)?;
    }
    if let Some(s) = &l.wwn_seed {
        check_ascii_field(&p("wwn_seed"), s, 255)?;
    }
    if let Some(s) = &l.vendor {
        check_ascii_field(&p("vendor"), s, 8)?;
    }
    if let Some(s) = &l.product {
        check_ascii_field(&p("product"), s, 16)?;
    }
    Ok((
        LunConfig {
            lun: l.lun,
            backend,
            block_size,
            mode,
            serial: l.serial.clone(),
            removable: l.removable,
            sanitize: l.sanitize,
            control: l.control,
        },
        LunExt {
            comment: l.comment.clone(),
            vendor: l.vendor.clone(),
            product: l.product.clone(),
            wwn_seed: l.wwn_seed.clone(),
        },
    ))
}

/// Validate a parsed file and map it onto the runtime structs.
pub fn to_runtime(file: &ConfigFile) -> Result<Loaded, FileError> {
    let mut ext = Extensions {
        comment: file.comment.clone(),
        strict_names: file.strict_names,
        company_id: match &file.company_id {
            Some(v) => Some(parse_company_id(v).map_err(|e| FileError::invalid("company_id", e))?),
            None => None,
        },
        ..Extensions::default()
    };
    let discovery_auth = match file.discovery.as_ref().and_then(|d| d.chap.as_ref()) {
        Some(c) => chap_to_runtime("discovery.chap", c)?,
        None => AuthConfig::default(),
    };
    if file.targets.is_empty() {
        return Err(FileError::invalid(
            "targets",
            "at least one target is required",
        ));
    }
    let mut targets: Vec<TargetConfig> = Vec::new();
    for (i, t) in file.targets.iter().enumerate() {
        let tp = format!("targets[{i}]");
        check_name(&format!("{tp}.name"), &t.name)?;
        if targets.iter().any(|o| o.name.eq_ignore_ascii_case(&t.name)) {
            return Err(FileError::invalid(
                format!("{tp}.name"),
                format!("duplicate target name {:?}", t.name),
            ));
        }
        if let Some(a) = &t.alias {
            check_ascii_field(&format!("{tp}.alias"), a, 255)?;
        }
        let mut text = TargetExt {
            comment: t.comment.clone(),
            ..TargetExt::default()
        };
        // Portal groups.
        if t.portal_groups.is_empty() {
            return Err(FileError::invalid(
                format!("{tp}.portal_groups"),
                "at least one portal group is required",
            ));
        }
        let mut groups: Vec<PortalGroup> = Vec::new();
        let mut seen: Vec<SocketAddr> = Vec::new();
        for (j, g) in t.portal_groups.iter().enumerate() {
            let gp = format!("{tp}.portal_groups[{j}]");
            if groups.iter().any(|o| o.tpgt == g.tpgt) {
                return Err(FileError::invalid(
                    format!("{gp}.tpgt"),
                    format!("duplicate TPGT {}", g.tpgt),
                ));
            }
            if g.portals.is_empty() {
                return Err(FileError::invalid(
                    format!("{gp}.portals"),
                    "at least one portal is required",
                ));
            }
            let mut portals = Vec::new();
            for (k, s) in g.portals.iter().enumerate() {
                let pp = format!("{gp}.portals[{k}]");
                let a = parse_portal(s).map_err(|e| FileError::invalid(&pp, e.to_string()))?;
                if a.port() != 0 && seen.contains(&a) {
                    return Err(FileError::invalid(
                        pp,
                        format!("portal {a} appears twice in this target"),
                    ));
                }
                seen.push(a);
                portals.push(a);
            }
            if let Some(c) = &g.comment {
                text.portal_group_comments.insert(g.tpgt, c.clone());
            }
            groups.push(PortalGroup {
                tpgt: g.tpgt,
                portals,
            });
        }
        // LUNs.
        let mut luns: Vec<LunConfig> = Vec::new();
        for (j, l) in t.luns.iter().enumerate() {
            let lp = format!("{tp}.luns[{j}]");
            let (lc, le) = lun_to_runtime(&lp, l)?;
            if luns.iter().any(|o| o.lun == lc.lun) {
                return Err(FileError::invalid(
                    format!("{lp}.lun"),
                    format!("duplicate LUN {}", lc.lun),
                ));
            }
            if le != LunExt::default() {
                text.luns.insert(lc.lun, le);
            }
            luns.push(lc);
        }
        let auth = match &t.chap {
            Some(c) => chap_to_runtime(&format!("{tp}.chap"), c)?,
            None => AuthConfig::default(),
        };
        // ACL.
        let mut allow: Vec<String> = Vec::new();
        let mut initiators = BTreeMap::new();
        for (j, a) in t.acl.iter().enumerate() {
            let ap = format!("{tp}.acl[{j}]");
            check_initiator_name(&format!("{ap}.initiator"), &a.initiator, file.strict_names)?;
            if allow.iter().any(|o| o.eq_ignore_ascii_case(&a.initiator)) {
                return Err(FileError::invalid(
                    format!("{ap}.initiator"),
                    format!("duplicate initiator {:?}", a.initiator),
                ));
            }
            if let Some(ls) = &a.luns {
                for (k, n) in ls.iter().enumerate() {
                    if !luns.iter().any(|l| l.lun == *n) {
                        return Err(FileError::invalid(
                            format!("{ap}.luns[{k}]"),
                            format!("no LUN {n} in this target"),
                        ));
                    }
                    if ls[..k].contains(n) {
                        return Err(FileError::invalid(
                            format!("{ap}.luns[{k}]"),
                            format!("LUN {n} listed twice"),
                        ));
                    }
                }
            }
            let iauth = match &a.chap {
                Some(c) => {
                    let cp = format!("{ap}.chap");
                    if c.incoming.is_empty() {
                        return Err(FileError::invalid(
                            format!("{cp}.incoming"),
                            "per-initiator CHAP needs at least one incoming account",
                        ));
                    }
                    Some(chap_to_runtime(&cp, c)?)
                }
                None => None,
            };
            let key = a.initiator.to_ascii_lowercase();
            if let Some(c) = &a.comment {
                text.acl_comments.insert(key.clone(), c.clone());
            }
            let entry = InitiatorConfig {
                luns: a.luns.clone(),
                auth: iauth,
                control: a.control,
            };
            if entry != InitiatorConfig::default() {
                initiators.insert(key, entry);
            }
            allow.push(a.initiator.clone());
        }
        let limits = match &t.session {
            Some(s) => session_to_runtime(&format!("{tp}.session"), s)?,
            None => SessionLimits::default(),
        };
        if text != TargetExt::default() {
            ext.targets.insert(t.name.to_ascii_lowercase(), text);
        }
        targets.push(TargetConfig {
            name: t.name.clone(),
            alias: t.alias.clone(),
            portal_groups: groups,
            luns,
            auth,
            allow,
            initiators,
            limits,
        });
    }
    let server = ServerConfig {
        targets,
        discovery_auth,
        limits: limits_to_runtime(file.limits.as_ref())?,
    };
    // The runtime's own checks, as a second line of defence.
    server
        .validate()
        .map_err(|e| FileError::invalid("(configuration)", e.to_string()))?;
    Ok(Loaded {
        server,
        ext,
        admin_socket: file.admin_socket.clone(),
    })
}

// ---------------------------------------------------------------------------
// Back to the file schema
// ---------------------------------------------------------------------------

/// `1073741824` -> `"1G"`; sizes that are not whole K/M/G/T stay numbers.
pub fn size_entry(n: u64) -> SizeEntry {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if n != 0 && n.is_multiple_of(1u64 << shift) {
            return SizeEntry::Text(format!("{}{suffix}", n >> shift));
        }
    }
    SizeEntry::Bytes(n)
}

fn account_entry(c: &ChapCredentials) -> AccountEntry {
    AccountEntry {
        comment: None,
        user: c.user.clone(),
        // Secrets are stored as text; non-UTF-8 bytes cannot come from
        // this file or the admin API.
        secret: String::from_utf8_lossy(&c.secret).into_owned(),
    }
}

/// `None` when there is nothing to write.
pub fn chap_entry(a: &AuthConfig) -> Option<ChapEntry> {
    if a.incoming.is_empty() && a.outgoing.is_none() {
        return None;
    }
    Some(ChapEntry {
        comment: None,
        incoming: a.incoming.iter().map(account_entry).collect(),
        outgoing: a.outgoing.as_ref().map(account_entry),
    })
}

/// The file entry of one runtime LUN.
pub fn lun_entry(l: &LunConfig, e: Option<&LunExt>) -> LunEntry {
    let (backend, path, size, thin) = match &l.backend {
        BackendConfig::Memory { size } => ("mem", None, Some(size_entry(*size)), None),
        BackendConfig::Null { size } => ("null", None, Some(size_entry(*size)), None),
        BackendConfig::File { path, size, thin } => (
            "file",
            Some(path.clone()),
            size.map(size_entry),
            thin.then_some(true),
        ),
        BackendConfig::Block { path } => ("block", Some(path.clone()), None, None),
        BackendConfig::Rbd(_) => ("rbd", None, None, None),
    };
    let (image, ceph) = match &l.backend {
        BackendConfig::Rbd(r) => (
            Some(format!("{}/{}", r.pool, r.image)),
            Some(CephEntry {
                conf: r.conf.clone(),
                user: r.user.clone(),
                keyring: r.keyring.clone(),
                namespace: r.namespace.clone(),
                timeout_secs: r.timeout_secs,
                shared: r.shared,
            })
            .filter(|c| *c != CephEntry::default()),
        ),
        _ => (None, None),
    };
    LunEntry {
        comment: e.and_then(|e| e.comment.clone()),
        lun: l.lun,
        backend: backend.into(),
        path,
        image,
        ceph,
        size,
        sector_size: Some(l.block_size),
        mode: Some(l.mode.as_str().into()),
        thin,
        serial: l.serial.clone(),
        wwn_seed: e.and_then(|e| e.wwn_seed.clone()),
        vendor: e.and_then(|e| e.vendor.clone()),
        product: e.and_then(|e| e.product.clone()),
        removable: l.removable,
        sanitize: l.sanitize,
        control: l.control,
    }
}

/// The file entry of a session parameter set (every key written).
pub fn session_entry(l: &SessionLimits) -> SessionEntry {
    SessionEntry {
        comment: None,
        max_connections: Some(l.max_connections.into()),
        queue_depth: Some(l.queue_depth),
        max_recv_data_segment_length: Some(l.max_recv_data_segment_length),
        max_burst_length: Some(l.max_burst_length),
        first_burst_length: Some(l.first_burst_length),
        max_outstanding_r2t: Some(l.max_outstanding_r2t.into()),
        immediate_data: Some(l.immediate_data),
        initial_r2t: Some(l.initial_r2t),
        header_digest: Some(l.header_digest),
        data_digest: Some(l.data_digest),
        nop_interval_secs: Some(l.nop_interval.map(|d| d.as_secs()).unwrap_or(0)),
        nop_timeout_secs: Some(l.nop_timeout.as_secs()),
        login_timeout_secs: Some(l.login_timeout.as_secs()),
    }
}

/// The file entry of one runtime target.
pub fn target_entry(t: &TargetConfig, e: Option<&TargetExt>) -> TargetEntry {
    TargetEntry {
        comment: e.and_then(|e| e.comment.clone()),
        name: t.name.clone(),
        alias: t.alias.clone(),
        portal_groups: t
            .portal_groups
            .iter()
            .map(|g| PortalGroupEntry {
                comment: e.and_then(|e| e.portal_group_comments.get(&g.tpgt).cloned()),
                tpgt: g.tpgt,
                portals: g.portals.iter().map(|p| p.to_string()).collect(),
            })
            .collect(),
        luns: t
            .luns
            .iter()
            .map(|l| lun_entry(l, e.and_then(|e| e.luns.get(&l.lun))))
            .collect(),
        chap: chap_entry(&t.auth),
        acl: t
            .allow
            .iter()
            .map(|ini| {
                let key = ini.to_ascii_lowercase();
                let a = t.initiators.get(&key);
                AclEntry {
                    comment: e.and_then(|e| e.acl_comments.get(&key).cloned()),
                    initiator: ini.clone(),
                    luns: a.and_then(|a| a.luns.clone()),
                    chap: a.and_then(|a| a.auth.as_ref()).and_then(chap_entry),
                    control: a.is_some_and(|a| a.control),
                }
            })
            .collect(),
        session: Some(session_entry(&t.limits)),
    }
}

/// The file describing a runtime configuration (what `save` writes).
pub fn to_file(loaded: &Loaded) -> ConfigFile {
    ConfigFile {
        comment: loaded.ext.comment.clone(),
        admin_socket: loaded.admin_socket.clone(),
        strict_names: loaded.ext.strict_names,
        company_id: loaded.ext.company_id.map(format_company_id),
        limits: limits_entry(&loaded.server.limits),
        discovery: chap_entry(&loaded.server.discovery_auth).map(|c| DiscoveryEntry {
            comment: None,
            chap: Some(c),
        }),
        targets: loaded
            .server
            .targets
            .iter()
            .map(|t| target_entry(t, loaded.ext.target(&t.name)))
            .collect(),
    }
}

/// Serialize a file: pretty JSON with a final newline.
pub fn to_json(file: &ConfigFile) -> String {
    let mut s = serde_json::to_string_pretty(file).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

/// Write `file` to `dest` atomically (temporary file, fsync, rename, fsync
/// of the directory). The file gets mode 0600: it holds CHAP secrets.
pub fn save_atomic(dest: &Path, file: &ConfigFile) -> Result<(), FileError> {
    ctlsock::save_atomic(dest, to_json(file).as_bytes(), 0o600).map_err(|source| FileError::Write {
        file: dest.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
        "targets": [{
            "name": "iqn.2024-01.org.example:disk1",
            "portal_groups": [{"tpgt": 1, "portals": ["127.0.0.1:3260"]}],
            "luns": [{"lun": 0, "backend": "mem", "size": "64M"}]
        }]
    }"#;

    fn err_of(text: &str) -> FileError {
        parse_str(text).expect_err("should be rejected")
    }

    /// Replace `from` with `to` in MINIMAL, and check the error path.
    fn bad(from: &str, to: &str, path: &str, reason_part: &str) {
        let text = MINIMAL.replacen(from, to, 1);
        assert_ne!(text, MINIMAL, "{from} not in MINIMAL");
        let e = err_of(&text);
        assert_eq!(e.json_path(), Some(path), "{e}");
        assert!(e.to_string().contains(reason_part), "{e}");
    }

    #[test]
    fn minimal_loads_with_defaults() {
        let l = parse_str(MINIMAL).unwrap();
        let t = &l.server.targets[0];
        assert_eq!(t.luns[0].backend, BackendConfig::Memory { size: 64 << 20 });
        assert_eq!(t.luns[0].block_size, 512);
        assert_eq!(t.luns[0].mode, IoMode::WriteBack);
        assert_eq!(t.limits, SessionLimits::default());
        assert!(t.allow.is_empty());
        assert_eq!(l.ext, Extensions::default());
    }

    /// Issue 10 item 3: initiator names with '_' (outside RFC 3722, sent
    /// by real initiators) are accepted in ACLs unless `strict_names`;
    /// other bad names stay refused; `save` keeps the setting.
    #[test]
    fn underscore_initiator_names_unless_strict() {
        let acl = r#""luns": [{"lun": 0, "backend": "mem", "size": "64M"}],
            "acl": [{"initiator": "iqn.1991-05.com.microsoft:web_01"}]"#;
        let text = MINIMAL.replacen(
            r#""luns": [{"lun": 0, "backend": "mem", "size": "64M"}]"#,
            acl,
            1,
        );
        let l = parse_str(&text).unwrap();
        assert_eq!(
            l.server.targets[0].allow,
            ["iqn.1991-05.com.microsoft:web_01"]
        );
        assert!(!to_file(&l).strict_names);
        let strict = text.replacen("\"targets\"", "\"strict_names\": true, \"targets\"", 1);
        let e = err_of(&strict);
        assert_eq!(e.json_path(), Some("targets[0].acl[0].initiator"), "{e}");
        assert!(e.to_string().contains("'_'"), "{e}");
        let bad_name = text.replacen("web_01", "web 01", 1);
        assert!(err_of(&bad_name).to_string().contains("' '"));
        let strict_ok = MINIMAL.replacen("\"targets\"", "\"strict_names\": true, \"targets\"", 1);
        assert!(to_file(&parse_str(&strict_ok).unwrap()).strict_names);
    }

    #[test]
    fn company_id_forms_and_save() {
        for v in ["00:a0:98", "0x00A098", "00-a0-98", "00a098"] {
            assert_eq!(parse_company_id(v), Ok(0x00a098), "{v}");
        }
        for v in ["14:05", "0x1001405", "zz:zz:zz", ""] {
            assert!(parse_company_id(v).is_err(), "{v}");
        }
        let text = MINIMAL.replacen(
            "\"targets\"",
            "\"company_id\": \"0x00A098\", \"targets\"",
            1,
        );
        let l = parse_str(&text).unwrap();
        assert_eq!(l.ext.company_id, Some(0x00a098));
        assert_eq!(to_file(&l).company_id.as_deref(), Some("00:a0:98"));
        let bad = MINIMAL.replacen("\"targets\"", "\"company_id\": \"x\", \"targets\"", 1);
        assert_eq!(err_of(&bad).json_path(), Some("company_id"));
    }

    #[test]
    fn errors_carry_json_paths() {
        bad(
            "\"size\": \"64M\"",
            "\"size\": \"64M\", \"sector_size\": 1000",
            "targets[0].luns[0].sector_size",
            "must be 512 or 4096, got 1000",
        );
        bad(
            "\"size\": \"64M\"",
            "\"size\": \"64M\", \"colour\": 1",
            "targets[0].luns[0].colour",
            "unknown field `colour`",
        );
        bad(
            "\"backend\": \"mem\"",
            "\"backend\": \"tape\"",
            "targets[0].luns[0].backend",
            "tape",
        );
        bad(
            "\"64M\"",
            "\"64Q\"",
            "targets[0].luns[0].size",
            "invalid size",
        );
        bad(
            "\"64M\"",
            "1000",
            "targets[0].luns[0].size",
            "multiple of the sector size",
        );
        bad(
            "\"lun\": 0",
            "\"lun\": 20000",
            "targets[0].luns[0].lun",
            "16383",
        );
        bad(
            "\"lun\": 0",
            "\"lun\": -1",
            "targets[0].luns[0].lun",
            "invalid value",
        );
        bad(
            "\"size\": \"64M\"",
            "\"size\": \"64M\", \"mode\": \"rw\"",
            "targets[0].luns[0].mode",
            "\"rw\"",
        );
        bad(
            "\"size\": \"64M\"",
            "\"size\": \"64M\", \"path\": \"/x\"",
            "targets[0].luns[0].path",
            "no path",
        );
        bad(
            "\"backend\": \"mem\", \"size\": \"64M\"",
            "\"backend\": \"file\"",
            "targets[0].luns[0].path",
            "required",
        );
        bad(
            "127.0.0.1:3260",
            "nowhere:x",
            "targets[0].portal_groups[0].portals[0]",
            "invalid portal",
        );
        bad(
            "iqn.2024-01.org.example:disk1",
            "disk1",
            "targets[0].name",
            "iqn.",
        );
        bad(
            "\"tpgt\": 1",
            "\"tpgt\": 70000",
            "targets[0].portal_groups[0].tpgt",
            "invalid value",
        );
        bad(
            "\"luns\"",
            "\"session\": {\"first_burst_length\": 2000000, \"max_burst_length\": 1000000}, \"luns\"",
            "targets[0].session.first_burst_length",
            "§13.14",
        );
        bad(
            "\"luns\"",
            "\"session\": {\"queue_depth\": 0}, \"luns\"",
            "targets[0].session.queue_depth",
            "between 1",
        );
        bad(
            "\"luns\"",
            "\"acl\": [{\"initiator\": \"iqn.2024-01.org.example:h\", \"luns\": [3]}], \"luns\"",
            "targets[0].acl[0].luns[0]",
            "no LUN 3",
        );
        bad(
            "\"luns\"",
            "\"chap\": {\"outgoing\": {\"user\": \"t\", \"secret\": \"s\"}}, \"luns\"",
            "targets[0].chap.outgoing",
            "incoming",
        );
        bad(
            "\"luns\"",
            "\"chap\": {\"incoming\": [{\"user\": \"u\", \"secret\": \"\"}]}, \"luns\"",
            "targets[0].chap.incoming[0].secret",
            "1 to 255",
        );
        let e = err_of("{\"targets\": [");
        assert!(matches!(e, FileError::Syntax { .. }), "{e}");
        let e = err_of("{\"targets\": []}");
        assert_eq!(e.json_path(), Some("targets"));
    }

    #[test]
    fn duplicates_rejected() {
        let text = MINIMAL.replacen(
            "{\"lun\": 0, \"backend\": \"mem\", \"size\": \"64M\"}",
            "{\"lun\": 0, \"backend\": \"mem\", \"size\": \"64M\"}, {\"lun\": 0, \"backend\": \"null\", \"size\": \"1M\"}",
            1,
        );
        let e = err_of(&text);
        assert_eq!(e.json_path(), Some("targets[0].luns[1].lun"), "{e}");
    }

    #[test]
    fn comments_accepted_and_kept() {
        let text = MINIMAL
            .replacen(
                "{\n        \"targets\"",
                "{\"_comment\": [\"a\", \"b\"], \"targets\"",
                1,
            )
            .replacen("{\"lun\": 0,", "{\"_comment\": \"scratch\", \"lun\": 0,", 1)
            .replacen(
                "\"luns\"",
                "\"chap\": {\"_comment\": \"x\", \"incoming\": []}, \"luns\"",
                1,
            );
        let l = parse_str(&text).unwrap();
        assert_eq!(
            l.ext.comment,
            Some(Comment::Lines(vec!["a".into(), "b".into()]))
        );
        let f = to_file(&l);
        assert_eq!(
            f.targets[0].luns[0].comment,
            Some(Comment::Line("scratch".into()))
        );
        assert_eq!(parse_str(&to_json(&f)).unwrap(), l);
    }

    #[test]
    fn sizes_round_trip() {
        assert_eq!(size_entry(1 << 30), SizeEntry::Text("1G".into()));
        assert_eq!(size_entry(3 << 20), SizeEntry::Text("3M".into()));
        assert_eq!(size_entry(1536), SizeEntry::Bytes(1536));
        assert_eq!(size_entry(0), SizeEntry::Bytes(0));
    }

    #[test]
    fn acl_extensions_and_lookups() {
        let text = MINIMAL.replacen(
            "\"luns\"",
            r#""chap": {"incoming": [{"user": "tw", "secret": "target-wide-secret"}]},
               "acl": [{"initiator": "iqn.2024-01.org.example:h1", "luns": [0],
                        "chap": {"incoming": [{"user": "h1", "secret": "h1-secret-1234"}]}},
                       {"initiator": "iqn.2024-01.org.example:h2"}],
               "luns""#,
            1,
        );
        let l = parse_str(&text).unwrap();
        let t = &l.server.targets[0];
        assert_eq!(t.allow.len(), 2);
        assert!(t.allows("IQN.2024-01.org.example:h2"));
        // The ACL's per-initiator settings are in the runtime config.
        let h1 = t.auth_for("iqn.2024-01.org.example:H1");
        assert_eq!(h1.incoming[0].user, "h1");
        let h2 = t.auth_for("iqn.2024-01.org.example:h2");
        assert_eq!(h2.incoming[0].user, "tw");
        assert!(t.lun_visible("iqn.2024-01.org.example:h1", 0));
        assert!(!t.lun_visible("iqn.2024-01.org.example:h1", 1));
        assert!(t.lun_visible("iqn.2024-01.org.example:h2", 1));
        assert_eq!(t.initiators.len(), 1, "only h1 has settings");
        assert_eq!(l.ext, Extensions::default(), "nothing left over");
        let again = parse_str(&to_json(&to_file(&l))).unwrap();
        assert_eq!(again, l);
        // Secrets never in Debug output.
        assert!(!format!("{:?}", to_file(&l)).contains("h1-secret"));
    }

    #[test]
    fn rbd_luns_load_and_round_trip() {
        let text = MINIMAL.replacen(
            r#""backend": "mem", "size": "64M""#,
            r#""backend": "rbd", "image": "rbd/disk1",
               "ceph": {"conf": "/etc/ceph/ceph.conf", "user": "iscsi", "timeout_secs": 5}"#,
            1,
        );
        let l = parse_str(&text).unwrap();
        let BackendConfig::Rbd(r) = &l.server.targets[0].luns[0].backend else {
            panic!("{l:?}")
        };
        assert_eq!(r.display_name(), "rbd/disk1");
        assert_eq!(
            (r.user.as_deref(), r.timeout_secs),
            (Some("iscsi"), Some(5))
        );
        assert_eq!(parse_str(&to_json(&to_file(&l))).unwrap(), l);
        bad(
            r#""backend": "mem", "size": "64M""#,
            r#""backend": "rbd", "image": "nopool""#,
            "targets[0].luns[0].image",
            "POOL/IMAGE",
        );
        bad(
            r#""backend": "mem", "size": "64M""#,
            r#""backend": "rbd", "image": "p/i", "size": "1G""#,
            "targets[0].luns[0].size",
            "rbd resize",
        );
        bad(
            r#""size": "64M""#,
            r#""size": "64M", "image": "p/i""#,
            "targets[0].luns[0].image",
            "only rbd",
        );
    }

    #[test]
    fn save_is_atomic_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.json");
        std::fs::write(&p, "old").unwrap();
        let l = parse_str(MINIMAL).unwrap();
        save_atomic(&p, &to_file(&l)).unwrap();
        let back = load(&p).unwrap();
        assert_eq!(back, l);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        // A directory that does not exist is an error, not a panic.
        assert!(save_atomic(&dir.path().join("no/such/t.json"), &to_file(&l)).is_err());
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.json");
        let text = MINIMAL.replacen(
            "\"backend\": \"mem\", \"size\": \"64M\"",
            "\"backend\": \"file\", \"path\": \"disk.img\", \"size\": \"1M\", \"thin\": true",
            1,
        );
        std::fs::write(&p, text).unwrap();
        let l = load(&p).unwrap();
        assert_eq!(
            l.server.targets[0].luns[0].backend,
            BackendConfig::File {
                path: dir.path().join("disk.img"),
                size: Some(1 << 20),
                thin: true
            }
        );
    }
}
