//! Back to the file: the schema of a runtime configuration (what `save`
//! writes, comments included), its JSON text, and the atomic write
//! (temporary file, fsync, rename, fsync of the directory; mode 0600).

use std::path::Path;

use super::{
    format_company_id, AccountEntry, AclEntry, CephEntry, ChapEntry, ConfigFile, DiscoveryEntry,
    FileError, LimitsEntry, Loaded, LunEntry, LunExt, PortalGroupEntry, SessionEntry, SizeEntry,
    TargetEntry, TargetExt,
};
use crate::config::{
    AuthConfig, BackendConfig, ChapCredentials, LunConfig, SessionLimits, TargetConfig,
};

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
