//! The JSON schema of the configuration file (RFC 8259 JSON, read with
//! serde; unknown keys are refused by `deny_unknown_fields`), and the
//! runtime side it maps onto: [`Loaded`] and the [`Extensions`] the
//! runtime structs of [`crate::config`] have no field for.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ServerConfig;

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
    /// [`crate::config::SessionLimits::default`].
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
    /// entries themselves are in [`crate::config::TargetConfig::allow`] and
    /// [`crate::config::TargetConfig::initiators`].
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
