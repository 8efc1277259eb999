//! Target configuration as plain structs (DESIGN.md "Library config": only
//! binaries parse flags and files).
//!
//! [`ServerConfig`] is what [`crate::server::Server::start`] runs: a list of
//! [`TargetConfig`]s, each with its portal groups, LUNs, CHAP accounts,
//! initiator ACL and session limits. The quick-start flags of
//! `iscsi target serve` and the JSON configuration file both map onto these
//! structs. Defaults are the RFC 7143 §13 defaults unless noted.
//!
//! This module also parses the quick-start LUN SPEC syntax
//! (`mem:SIZE`, `null:SIZE`, `file:PATH[,size=SIZE][,sector=512|4096]
//! [,mode=wb|wt|ro][,thin]`, `block:DEVICE[,mode=...]`,
//! `rbd:POOL/IMAGE[,conf=PATH][,user=NAME][,keyring=PATH][,namespace=NS]
//! [,timeout=SECS][,shared]`) into [`LunConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// Errors in a configuration value (flag or file).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A LUN SPEC that does not parse.
    #[error("invalid LUN spec {spec:?}: {reason}")]
    LunSpec { spec: String, reason: String },
    /// A size with a bad number or suffix.
    #[error("invalid size {0:?} (expected a number with an optional K/M/G/T suffix)")]
    Size(String),
    /// `USER:SECRET` without the colon, or empty parts.
    #[error("invalid credentials {0:?} (expected USER:SECRET)")]
    Credentials(String),
    /// A portal address that does not parse.
    #[error("invalid portal {0:?} (expected HOST:PORT, e.g. 0.0.0.0:3260 or [::1]:3260)")]
    Portal(String),
    /// Anything else, with the field and the reason.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

/// How writes reach the backend (DESIGN.md "Backends"): the device
/// server's own type, so configuration and runtime never need a mapping.
pub use crate::scsi::IoMode;

impl IoMode {
    /// Parse `wb`, `wt` or `ro`.
    pub fn parse(s: &str) -> Option<IoMode> {
        match s {
            "wb" => Some(IoMode::WriteBack),
            "wt" => Some(IoMode::WriteThrough),
            "ro" => Some(IoMode::ReadOnly),
            _ => None,
        }
    }

    /// The short name used in flags and files.
    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::WriteBack => "wb",
            IoMode::WriteThrough => "wt",
            IoMode::ReadOnly => "ro",
        }
    }
}

/// Where a LUN's blocks live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// RAM, lost at exit.
    Memory { size: u64 },
    /// Reads return zeroes, writes are discarded.
    Null { size: u64 },
    /// A regular file; created at `size` when missing (size required then),
    /// an existing file keeps its data (and its size unless `size` is given).
    File {
        path: PathBuf,
        size: Option<u64>,
        thin: bool,
    },
    /// A block device.
    Block { path: PathBuf },
    /// A Ceph RBD image (cargo feature `rbd`).
    Rbd(RbdSpec),
}

/// Where a Ceph RBD image is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RbdSpec {
    pub pool: String,
    pub image: String,
    /// RADOS namespace inside the pool.
    pub namespace: Option<String>,
    /// ceph.conf; default: librados' search (`$CEPH_CONF`, /etc/ceph/ceph.conf).
    pub conf: Option<PathBuf>,
    /// Ceph user without `client.` (default `admin`).
    pub user: Option<String>,
    /// Keyring; default: the one the conf names.
    pub keyring: Option<PathBuf>,
    /// Seconds a cluster operation may take before the command fails with
    /// a retryable sense (default 20).
    pub timeout_secs: Option<u32>,
    /// Open even when another client holds the image's exclusive lock, and
    /// do not hold it ourselves (librbd then passes the lock back and forth
    /// between writers; see docs/rbd.md).
    pub shared: bool,
}

impl RbdSpec {
    /// `POOL/IMAGE` or `POOL/NAMESPACE/IMAGE`, as `rbd` spells it.
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.pool, self.image),
            None => format!("{}/{}", self.pool, self.image),
        }
    }

    /// Parse `POOL/IMAGE` (or `POOL/NAMESPACE/IMAGE`).
    pub fn parse_name(s: &str) -> Option<RbdSpec> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        let (pool, namespace, image) = match parts[..] {
            [p, i] => (p, None, i),
            [p, n, i] => (p, Some(n.to_string()), i),
            _ => return None,
        };
        Some(RbdSpec {
            pool: pool.into(),
            image: image.into(),
            namespace,
            ..Default::default()
        })
    }
}

/// One logical unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunConfig {
    /// LUN number as seen by initiators (REPORT LUNS).
    pub lun: u64,
    pub backend: BackendConfig,
    /// Logical block size: 512 (default) or 4096.
    pub block_size: u32,
    pub mode: IoMode,
    /// Unit serial number (VPD 0x80); derived from the target name and LUN
    /// when `None`, so it is stable across restarts.
    pub serial: Option<String>,
    /// Present the LU as removable media (INQUIRY RMB=1: PREVENT ALLOW
    /// MEDIUM REMOVAL, START STOP UNIT with LOEJ). Off for disks.
    pub removable: bool,
    /// Accept SANITIZE (SBC-4 §5.30). Off by default: one command from any
    /// logged-in initiator irrevocably erases the whole LU.
    pub sanitize: bool,
    /// Start with the control channel on (tags in reserved CDB bits, the
    /// vendor switch command; docs/control-channel.md). Off by default.
    pub control: bool,
}

/// The `,KEY[=VALUE]` options of a LUN SPEC ([`LunConfig::parse_spec`]).
struct SpecOptions {
    size: Option<u64>,
    block_size: u32,
    mode: IoMode,
    thin: bool,
    serial: Option<String>,
    removable: bool,
    sanitize: bool,
    control: bool,
    rbd: RbdSpec,
}

impl SpecOptions {
    fn parse<'a>(
        kind: &str,
        parts: impl Iterator<Item = &'a str>,
        bad: &dyn Fn(&str) -> ConfigError,
    ) -> Result<SpecOptions, ConfigError> {
        let mut o = SpecOptions {
            size: None,
            block_size: 512,
            mode: IoMode::WriteBack,
            thin: false,
            serial: None,
            removable: false,
            sanitize: false,
            control: false,
            rbd: RbdSpec::default(),
        };
        for opt in parts {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            match (key, value) {
                ("size", Some(v)) => o.size = Some(parse_size(v)?),
                ("sector", Some(v)) => {
                    o.block_size = match v {
                        "512" => 512,
                        "4096" => 4096,
                        _ => return Err(bad("sector must be 512 or 4096")),
                    }
                }
                ("mode", Some(v)) => {
                    o.mode = IoMode::parse(v).ok_or_else(|| bad("mode must be wb, wt or ro"))?
                }
                ("thin", None) => o.thin = true,
                ("removable", None) => o.removable = true,
                ("sanitize", None) => o.sanitize = true,
                ("control", None) => o.control = true,
                ("serial", Some(v)) if !v.is_empty() => o.serial = Some(v.to_string()),
                ("conf", Some(v)) if kind == "rbd" && !v.is_empty() => {
                    o.rbd.conf = Some(PathBuf::from(v))
                }
                ("user", Some(v)) if kind == "rbd" && !v.is_empty() => {
                    o.rbd.user = Some(v.trim_start_matches("client.").to_string())
                }
                ("keyring", Some(v)) if kind == "rbd" && !v.is_empty() => {
                    o.rbd.keyring = Some(PathBuf::from(v))
                }
                ("namespace", Some(v)) if kind == "rbd" && !v.is_empty() => {
                    o.rbd.namespace = Some(v.to_string())
                }
                ("timeout", Some(v)) if kind == "rbd" => {
                    o.rbd.timeout_secs = Some(
                        v.parse()
                            .ok()
                            .filter(|t| (1..=3600).contains(t))
                            .ok_or_else(|| bad("timeout must be 1..=3600 seconds"))?,
                    )
                }
                ("shared", None) if kind == "rbd" => o.rbd.shared = true,
                _ => return Err(bad(&format!("unknown option {opt:?}"))),
            }
        }
        Ok(o)
    }
}

/// The backend of a LUN SPEC: `KIND:FIRST` and the options that go with it.
fn spec_backend(
    kind: &str,
    first: &str,
    o: &SpecOptions,
    bad: &dyn Fn(&str) -> ConfigError,
) -> Result<BackendConfig, ConfigError> {
    let backend = match kind {
        "mem" | "null" => {
            if o.size.is_some() || o.thin {
                return Err(bad("mem/null take the size first (mem:SIZE) and no thin"));
            }
            let size = parse_size(first)?;
            if kind == "mem" {
                BackendConfig::Memory { size }
            } else {
                BackendConfig::Null { size }
            }
        }
        "file" => BackendConfig::File {
            path: PathBuf::from(first),
            size: o.size,
            thin: o.thin,
        },
        "block" => {
            if o.size.is_some() || o.thin {
                return Err(bad("block devices take no size or thin option"));
            }
            BackendConfig::Block {
                path: PathBuf::from(first),
            }
        }
        "rbd" => {
            if o.size.is_some() || o.thin || o.removable || o.sanitize {
                return Err(bad(
                    "an rbd LUN has the size of its image (rbd resize) and is always thin",
                ));
            }
            let name = RbdSpec::parse_name(first)
                .ok_or_else(|| bad("expected rbd:POOL/IMAGE or rbd:POOL/NAMESPACE/IMAGE"))?;
            if name.namespace.is_some() && o.rbd.namespace.is_some() {
                return Err(bad("namespace given twice"));
            }
            BackendConfig::Rbd(RbdSpec {
                pool: name.pool,
                image: name.image,
                namespace: name.namespace.or(o.rbd.namespace.clone()),
                ..o.rbd.clone()
            })
        }
        _ => return Err(bad("KIND must be mem, null, file, block or rbd")),
    };
    Ok(backend)
}

impl LunConfig {
    /// Parse a quick-start LUN SPEC; `lun` is the number it will get.
    ///
    /// `mem:SIZE`, `null:SIZE`, `file:PATH[,size=SIZE][,sector=512|4096]
    /// [,mode=wb|wt|ro][,thin]`, `block:DEVICE[,mode=...]`,
    /// `rbd:POOL/IMAGE[,conf=PATH][,user=NAME][,keyring=PATH]
    /// [,namespace=NS][,timeout=SECS][,shared]`. `mem` and `null`
    /// also take `sector=` and `mode=`; every kind takes `serial=S`,
    /// `removable`, `sanitize` and `control`.
    pub fn parse_spec(lun: u64, spec: &str) -> Result<LunConfig, ConfigError> {
        let bad = |reason: &str| ConfigError::LunSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (kind, rest) = spec
            .split_once(':')
            .ok_or_else(|| bad("expected KIND:..., KIND one of mem, null, file, block, rbd"))?;
        let mut parts = rest.split(',');
        let first = parts.next().unwrap_or("");
        if first.is_empty() {
            return Err(bad("missing size or path after the colon"));
        }
        let o = SpecOptions::parse(kind, parts, &bad)?;
        let backend = spec_backend(kind, first, &o, &bad)?;
        let lc = LunConfig {
            lun,
            backend,
            block_size: o.block_size,
            mode: o.mode,
            serial: o.serial,
            removable: o.removable,
            sanitize: o.sanitize,
            control: o.control,
        };
        lc.validate()?;
        Ok(lc)
    }

    /// Check sizes against the block size.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let size = match &self.backend {
            BackendConfig::Memory { size } | BackendConfig::Null { size } => Some(*size),
            BackendConfig::File { size, .. } => *size,
            BackendConfig::Block { .. } | BackendConfig::Rbd(_) => None,
        };
        if self.block_size != 512 && self.block_size != 4096 {
            return Err(ConfigError::Invalid {
                field: format!("lun {}.block_size", self.lun),
                reason: "must be 512 or 4096".into(),
            });
        }
        if let Some(size) = size {
            if size < u64::from(self.block_size) {
                return Err(ConfigError::Invalid {
                    field: format!("lun {}.size", self.lun),
                    reason: format!(
                        "{size} bytes is less than one {}-byte block",
                        self.block_size
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Parse a size with an optional binary suffix: `512`, `64K`, `1G`, `2T`
/// (also `KiB`/`KB` spellings). Case-insensitive.
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let err = || ConfigError::Size(s.to_string());
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    let stripped = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (num, mult) = match stripped.chars().last() {
        Some('K') => (&stripped[..stripped.len() - 1], 1u64 << 10),
        Some('M') => (&stripped[..stripped.len() - 1], 1 << 20),
        Some('G') => (&stripped[..stripped.len() - 1], 1 << 30),
        Some('T') => (&stripped[..stripped.len() - 1], 1 << 40),
        Some(_) => (stripped, 1),
        None => return Err(err()),
    };
    let n: u64 = num.parse().map_err(|_| err())?;
    n.checked_mul(mult).ok_or_else(err)
}

/// A CHAP user name and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ChapCredentials {
    pub user: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for ChapCredentials {
    // Never log CHAP secrets (STYLE.md).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapCredentials")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl ChapCredentials {
    /// Parse `USER:SECRET` (the secret may itself contain colons).
    pub fn parse(s: &str) -> Result<ChapCredentials, ConfigError> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok(ChapCredentials {
                user: u.to_string(),
                secret: p.as_bytes().to_vec(),
            }),
            _ => Err(ConfigError::Credentials(
                s.split(':').next().unwrap_or("").to_string() + ":<secret>",
            )),
        }
    }
}

/// Authentication required of initiators logging in to one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Accounts initiators may authenticate as (CHAP). Empty: AuthMethod=None.
    pub incoming: Vec<ChapCredentials>,
    /// The target's own credentials, offered when the initiator asks for
    /// mutual CHAP.
    pub outgoing: Option<ChapCredentials>,
}

/// A portal group: a TPGT and the addresses that belong to it (RFC 7143 §4.4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalGroup {
    pub tpgt: u16,
    pub portals: Vec<SocketAddr>,
}

/// Operational limits and offers for sessions (RFC 7143 §13 keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLimits {
    /// MaxConnections we accept (RFC default 1; we offer 8).
    pub max_connections: u16,
    /// Commands in flight per session: the CmdSN window width.
    pub queue_depth: u32,
    /// Our MaxRecvDataSegmentLength (declared to the initiator).
    pub max_recv_data_segment_length: u32,
    /// Upper bound for MaxBurstLength negotiation (RFC default 262144).
    pub max_burst_length: u32,
    /// Upper bound for FirstBurstLength negotiation (RFC default 65536).
    pub first_burst_length: u32,
    /// Whether we accept ImmediateData=Yes (RFC default Yes).
    pub immediate_data: bool,
    /// Our InitialR2T preference (RFC default Yes; `false` allows unsolicited data).
    pub initial_r2t: bool,
    /// Upper bound for MaxOutstandingR2T (RFC default 1).
    pub max_outstanding_r2t: u16,
    /// Accept CRC32C header digests when the initiator offers them.
    pub header_digest: bool,
    /// Accept CRC32C data digests when the initiator offers them.
    pub data_digest: bool,
    /// Idle time after which we send a NOP-In ping (None: never).
    pub nop_interval: Option<Duration>,
    /// How long a ping may stay unanswered before the connection is dropped.
    pub nop_timeout: Duration,
    /// Time allowed for the whole login phase.
    pub login_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_connections: 8,
            queue_depth: 128,
            max_recv_data_segment_length: 262_144,
            max_burst_length: 1_048_576,
            first_burst_length: 262_144,
            immediate_data: true,
            initial_r2t: false,
            max_outstanding_r2t: 8,
            header_digest: true,
            data_digest: true,
            nop_interval: Some(Duration::from_secs(30)),
            nop_timeout: Duration::from_secs(30),
            login_timeout: Duration::from_secs(15),
        }
    }
}

/// Per-initiator settings of one ACL entry of a target.
///
/// Both are access-control properties of the I_T nexus: `luns` is this
/// initiator's LUN mapping, the logical unit inventory "accessible to the
/// I_T nexus" that REPORT LUNS returns (SPC-5); a LUN outside the list
/// behaves for it exactly like a LUN with no logical unit (enforced by the
/// device server, see [`crate::device::apply_acl`]). `auth` replaces the
/// target-wide CHAP accounts for it (enforced at login).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitiatorConfig {
    /// LUN masking: the LUN numbers this initiator may see; `None`: all.
    pub luns: Option<Vec<u64>>,
    /// This initiator's own CHAP accounts. `incoming` replaces the
    /// target-wide incoming accounts for it (the target-wide ones are then
    /// refused); `outgoing`, when set, replaces the target's mutual CHAP
    /// credentials towards it (when not set, the target-wide `outgoing`
    /// applies: it is the target's own identity).
    pub auth: Option<AuthConfig>,
    /// The control right: this initiator may SET control-channel switches
    /// (vendor command C7h). Off by default.
    pub control: bool,
}

/// One iSCSI target (a name, its LUNs and who may use them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// The target's iSCSI name (`iqn.`/`eui.`/`naa.`).
    pub name: String,
    /// Optional TargetAlias.
    pub alias: Option<String>,
    /// Portal groups this target is reachable through. A portal whose IP is
    /// unspecified (0.0.0.0 / ::) matches any local address on its port.
    pub portal_groups: Vec<PortalGroup>,
    pub luns: Vec<LunConfig>,
    pub auth: AuthConfig,
    /// Initiator names allowed to log in; empty means any initiator.
    pub allow: Vec<String>,
    /// Per-initiator settings (LUN masking, own CHAP accounts), keyed by
    /// the lower-case initiator name. Every key is also in `allow`.
    pub initiators: BTreeMap<String, InitiatorConfig>,
    pub limits: SessionLimits,
}

impl TargetConfig {
    /// Whether `initiator` passes the ACL.
    pub fn allows(&self, initiator: &str) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|a| a.eq_ignore_ascii_case(initiator))
    }

    /// The per-initiator settings of `initiator`, if its ACL entry has any.
    pub fn initiator(&self, initiator: &str) -> Option<&InitiatorConfig> {
        self.initiators.get(&initiator.to_ascii_lowercase())
    }

    /// The CHAP accounts `initiator` must log in with: its own incoming
    /// accounts when its ACL entry has some (the target-wide ones are then
    /// not accepted for it), with its own outgoing credentials or else the
    /// target-wide ones; otherwise the target-wide accounts.
    pub fn auth_for(&self, initiator: &str) -> AuthConfig {
        match self.initiator(initiator).and_then(|i| i.auth.as_ref()) {
            Some(own) if !own.incoming.is_empty() => AuthConfig {
                incoming: own.incoming.clone(),
                outgoing: own.outgoing.clone().or_else(|| self.auth.outgoing.clone()),
            },
            _ => self.auth.clone(),
        }
    }

    /// The LUN numbers `initiator` may see, `None` when it is not masked.
    pub fn lun_mask(&self, initiator: &str) -> Option<&[u64]> {
        self.initiator(initiator).and_then(|i| i.luns.as_deref())
    }

    /// Whether `initiator` may see LUN number `lun` (LUN masking).
    pub fn lun_visible(&self, initiator: &str, lun: u64) -> bool {
        self.lun_mask(initiator).is_none_or(|m| m.contains(&lun))
    }
}

/// Everything one `iscsi target serve` process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub targets: Vec<TargetConfig>,
    /// Authentication for discovery sessions (None: AuthMethod=None).
    pub discovery_auth: AuthConfig,
    /// Admission caps and the authentication backoff.
    pub limits: crate::limits::ServerLimits,
}

impl ServerConfig {
    /// Every distinct portal address the server must listen on.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = Vec::new();
        for t in &self.targets {
            for g in &t.portal_groups {
                for p in &g.portals {
                    if !v.contains(p) {
                        v.push(*p);
                    }
                }
            }
        }
        v
    }

    /// Check names, LUN numbers and portals.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.targets.is_empty() {
            return Err(ConfigError::Invalid {
                field: "targets".into(),
                reason: "at least one target is required".into(),
            });
        }
        for (i, t) in self.targets.iter().enumerate() {
            let lower = t.name.to_ascii_lowercase();
            if !(lower.starts_with("iqn.")
                || lower.starts_with("eui.")
                || lower.starts_with("naa."))
            {
                return Err(ConfigError::Invalid {
                    field: format!("targets[{i}].name"),
                    reason: format!("{:?} is not an iqn./eui./naa. name", t.name),
                });
            }
            if self.targets[..i]
                .iter()
                .any(|o| o.name.eq_ignore_ascii_case(&t.name))
            {
                return Err(ConfigError::Invalid {
                    field: format!("targets[{i}].name"),
                    reason: "duplicate target name".into(),
                });
            }
            if t.portal_groups.iter().all(|g| g.portals.is_empty()) {
                return Err(ConfigError::Invalid {
                    field: format!("targets[{i}].portal_groups"),
                    reason: "no portal".into(),
                });
            }
            for (j, l) in t.luns.iter().enumerate() {
                l.validate()?;
                if t.luns[..j].iter().any(|o| o.lun == l.lun) {
                    return Err(ConfigError::Invalid {
                        field: format!("targets[{i}].luns[{j}]"),
                        reason: format!("duplicate LUN {}", l.lun),
                    });
                }
            }
            for (name, ic) in &t.initiators {
                let field = format!("targets[{i}].initiators[{name:?}]");
                if *name != name.to_ascii_lowercase()
                    || !t.allow.iter().any(|a| a.eq_ignore_ascii_case(name))
                {
                    return Err(ConfigError::Invalid {
                        field,
                        reason: "per-initiator settings need a lower-case key that is in the ACL (allow)".into(),
                    });
                }
                if ic.auth.as_ref().is_some_and(|a| a.incoming.is_empty()) {
                    return Err(ConfigError::Invalid {
                        field: field + ".auth",
                        reason: "per-initiator CHAP needs at least one incoming account".into(),
                    });
                }
            }
            if t.limits.queue_depth == 0 || t.limits.max_connections == 0 {
                return Err(ConfigError::Invalid {
                    field: format!("targets[{i}].limits"),
                    reason: "queue_depth and max_connections must be at least 1".into(),
                });
            }
        }
        Ok(())
    }
}

/// Parse a portal `HOST:PORT`, `[V6]:PORT`, or `HOST` (port 3260).
pub fn parse_portal(s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip = s.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = ip.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 3260));
    }
    if s == "localhost" {
        return Ok(SocketAddr::from(([127, 0, 0, 1], 3260)));
    }
    if let Some(host) = s.strip_prefix("localhost:") {
        if let Ok(port) = host.parse::<u16>() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    Err(ConfigError::Portal(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("2TiB").unwrap(), 2 << 40);
        assert_eq!(parse_size("3MB").unwrap(), 3 << 20);
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("99999999999999T").is_err());
    }

    #[test]
    fn lun_specs() {
        let l = LunConfig::parse_spec(0, "mem:1G").unwrap();
        assert_eq!(l.backend, BackendConfig::Memory { size: 1 << 30 });
        assert_eq!(l.block_size, 512);
        let l = LunConfig::parse_spec(1, "null:10M,sector=4096").unwrap();
        assert_eq!(l.backend, BackendConfig::Null { size: 10 << 20 });
        assert_eq!(l.block_size, 4096);
        let l =
            LunConfig::parse_spec(2, "file:/tmp/a.img,size=1G,sector=4096,mode=wt,thin").unwrap();
        assert_eq!(
            l.backend,
            BackendConfig::File {
                path: "/tmp/a.img".into(),
                size: Some(1 << 30),
                thin: true
            }
        );
        assert_eq!(l.mode, IoMode::WriteThrough);
        assert_eq!(l.lun, 2);
        let l = LunConfig::parse_spec(0, "block:/dev/sdz,mode=ro").unwrap();
        assert_eq!(l.mode, IoMode::ReadOnly);
        for bad in [
            "mem",
            "mem:",
            "disk:1G",
            "mem:1G,thin",
            "file:/x,sector=1024",
            "file:/x,mode=rw",
            "file:/x,bogus",
            "block:/dev/x,size=1G",
            "mem:100",
        ] {
            assert!(LunConfig::parse_spec(0, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rbd_specs() {
        let l = LunConfig::parse_spec(
            0,
            "rbd:rbd/disk1,conf=/etc/ceph/c.conf,user=client.iscsi,keyring=/k,timeout=5,shared,mode=wt,sector=4096",
        )
        .unwrap();
        let BackendConfig::Rbd(r) = &l.backend else {
            panic!("{l:?}")
        };
        assert_eq!((r.pool.as_str(), r.image.as_str()), ("rbd", "disk1"));
        assert_eq!(r.user.as_deref(), Some("iscsi"));
        assert_eq!(r.conf, Some(PathBuf::from("/etc/ceph/c.conf")));
        assert_eq!((r.timeout_secs, r.shared), (Some(5), true));
        assert_eq!((l.mode, l.block_size), (IoMode::WriteThrough, 4096));
        let l = LunConfig::parse_spec(1, "rbd:p/ns/img").unwrap();
        let BackendConfig::Rbd(r) = &l.backend else {
            panic!()
        };
        assert_eq!(r.display_name(), "p/ns/img");
        for bad in [
            "rbd:img",
            "rbd:p/",
            "rbd:/i",
            "rbd:a/b/c/d",
            "rbd:p/i,size=1G",
            "rbd:p/i,thin",
            "rbd:p/i,timeout=0",
            "rbd:p/ns/i,namespace=x",
            "file:/x,conf=/y",
        ] {
            assert!(LunConfig::parse_spec(0, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn removable_and_sanitize_are_opt_in() {
        let plain = LunConfig::parse_spec(0, "mem:1G").unwrap();
        assert!(!plain.removable && !plain.sanitize);
        let both = LunConfig::parse_spec(0, "mem:1G,removable,sanitize").unwrap();
        assert!(both.removable && both.sanitize);
        let f = LunConfig::parse_spec(1, "file:/tmp/x.img,size=1G,removable").unwrap();
        assert!(f.removable && !f.sanitize);
        assert!(LunConfig::parse_spec(0, "mem:1G,removable=yes").is_err());
        assert!(!plain.control, "the control channel is off by default");
        assert!(LunConfig::parse_spec(0, "mem:1G,control").unwrap().control);
        assert!(LunConfig::parse_spec(0, "mem:1G,control=on").is_err());
    }

    #[test]
    fn credentials_and_redaction() {
        let c = ChapCredentials::parse("alice:s3cr:et").unwrap();
        assert_eq!(c.user, "alice");
        assert_eq!(c.secret, b"s3cr:et");
        assert!(!format!("{c:?}").contains("s3cr"));
        assert!(ChapCredentials::parse("alice").is_err());
        assert!(ChapCredentials::parse(":x").is_err());
        let e = ChapCredentials::parse("bob:").unwrap_err().to_string();
        assert!(e.contains("bob"));
    }

    #[test]
    fn portals() {
        assert_eq!(
            parse_portal("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(parse_portal("[::1]:3261").unwrap().port(), 3261);
        assert_eq!(parse_portal("[::1]").unwrap().port(), 3260);
        assert_eq!(parse_portal("10.0.0.1").unwrap().port(), 3260);
        assert!(parse_portal("nope:x").is_err());
    }

    #[test]
    fn validate_catches_duplicates() {
        let t = TargetConfig {
            name: "iqn.2024-01.org.example:t".into(),
            alias: None,
            portal_groups: vec![PortalGroup {
                tpgt: 1,
                portals: vec![parse_portal("127.0.0.1:0").unwrap()],
            }],
            luns: vec![
                LunConfig::parse_spec(0, "mem:1M").unwrap(),
                LunConfig::parse_spec(0, "mem:1M").unwrap(),
            ],
            auth: AuthConfig::default(),
            allow: vec![],
            initiators: BTreeMap::new(),
            limits: SessionLimits::default(),
        };
        let mut c = ServerConfig {
            targets: vec![t],
            discovery_auth: AuthConfig::default(),
            limits: Default::default(),
        };
        assert!(c.validate().is_err());
        c.targets[0].luns.pop();
        c.validate().unwrap();
        assert!(c.targets[0].allows("iqn.any"));
        c.targets[0].allow.push("iqn.a".into());
        assert!(!c.targets[0].allows("iqn.b"));
        assert!(c.targets[0].allows("IQN.A"));
        c.targets[0].initiators.insert(
            "iqn.b".into(),
            InitiatorConfig {
                luns: Some(vec![0]),
                auth: None,
                control: false,
            },
        );
        assert!(
            c.validate().is_err(),
            "per-initiator settings outside the ACL"
        );
        c.targets[0].allow.push("IQN.B".into());
        c.validate().unwrap();
        c.targets[0].initiators.insert(
            "iqn.a".into(),
            InitiatorConfig {
                luns: None,
                auth: Some(AuthConfig::default()),
                control: false,
            },
        );
        assert!(c.validate().is_err(), "own CHAP without an account");
        c.targets[0].initiators.remove("iqn.a");
        c.targets[0].name = "foo".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn per_initiator_auth_and_masking() {
        let cred = |s: &str| ChapCredentials::parse(s).unwrap();
        let mut t = TargetConfig {
            name: "iqn.2024-01.org.example:t".into(),
            alias: None,
            portal_groups: vec![],
            luns: vec![],
            auth: AuthConfig {
                incoming: vec![cred("tw:target-wide-secret")],
                outgoing: Some(cred("tgt:target-own-secret")),
            },
            allow: vec!["iqn.a".into(), "iqn.b".into(), "iqn.c".into()],
            initiators: BTreeMap::new(),
            limits: SessionLimits::default(),
        };
        t.initiators.insert(
            "iqn.a".into(),
            InitiatorConfig {
                luns: Some(vec![0, 2]),
                auth: Some(AuthConfig {
                    incoming: vec![cred("a:a-own-secret-1")],
                    outgoing: None,
                }),
                control: false,
            },
        );
        t.initiators.insert(
            "iqn.b".into(),
            InitiatorConfig {
                luns: None,
                auth: Some(AuthConfig {
                    incoming: vec![cred("b:b-own-secret-1")],
                    outgoing: Some(cred("tgt-b:b-mutual-secret")),
                }),
                control: false,
            },
        );
        // Own incoming accounts replace the target-wide ones (any case of
        // the name); the target's own identity applies unless overridden.
        let a = t.auth_for("IQN.A");
        assert_eq!(a.incoming, vec![cred("a:a-own-secret-1")]);
        assert_eq!(a.outgoing, Some(cred("tgt:target-own-secret")));
        let b = t.auth_for("iqn.b");
        assert_eq!(b.incoming[0].user, "b");
        assert_eq!(b.outgoing.unwrap().user, "tgt-b");
        assert_eq!(t.auth_for("iqn.c"), t.auth);
        // Masking.
        assert_eq!(t.lun_mask("iqn.a"), Some(&[0, 2][..]));
        assert!(t.lun_visible("iqn.a", 2));
        assert!(!t.lun_visible("iqn.a", 1));
        assert!(t.lun_visible("iqn.b", 1));
        assert!(t.lun_visible("iqn.unknown", 7));
    }
}
