//! Loading: read the file (bounded by [`MAX_FILE_SIZE`]), parse it into
//! the schema with path-accurate errors, and validate and map it onto the
//! runtime structs of [`crate::config`] (targets, portal groups of
//! RFC 7143 §4.4.1, LUNs, CHAP, ACL).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::validate::{chap_to_runtime, limits_to_runtime, session_to_runtime};
use super::{
    check_ascii_field, check_initiator_name, check_name, lun_to_runtime, parse_company_id,
    ConfigFile, Extensions, FileError, Loaded, LunExt, TargetEntry, TargetExt, MAX_FILE_SIZE,
};
use crate::config::{
    parse_portal, AuthConfig, BackendConfig, InitiatorConfig, LunConfig, PortalGroup, ServerConfig,
    SessionLimits, TargetConfig,
};

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
        let (target, text) = target_to_runtime(&tp, t, file.strict_names)?;
        if text != TargetExt::default() {
            ext.targets.insert(t.name.to_ascii_lowercase(), text);
        }
        targets.push(target);
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

/// One target entry whose name is already checked; `tp` is its JSON path
/// (`targets[0]`).
fn target_to_runtime(
    tp: &str,
    t: &TargetEntry,
    strict_names: bool,
) -> Result<(TargetConfig, TargetExt), FileError> {
    if let Some(a) = &t.alias {
        check_ascii_field(&format!("{tp}.alias"), a, 255)?;
    }
    let mut text = TargetExt {
        comment: t.comment.clone(),
        ..TargetExt::default()
    };
    let portal_groups = portal_groups_to_runtime(tp, t, &mut text)?;
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
    let (allow, initiators) = acl_to_runtime(tp, t, &luns, strict_names, &mut text)?;
    let limits = match &t.session {
        Some(s) => session_to_runtime(&format!("{tp}.session"), s)?,
        None => SessionLimits::default(),
    };
    let target = TargetConfig {
        name: t.name.clone(),
        alias: t.alias.clone(),
        portal_groups,
        luns,
        auth,
        allow,
        initiators,
        limits,
    };
    Ok((target, text))
}

/// The portal groups of one target (RFC 7143 §4.4.1): each TPGT once, each
/// portal address once in the target (port 0 excepted).
fn portal_groups_to_runtime(
    tp: &str,
    t: &TargetEntry,
    text: &mut TargetExt,
) -> Result<Vec<PortalGroup>, FileError> {
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
    Ok(groups)
}

/// The ACL of one target: initiator names (RFC 3722, or lenient unless
/// `strict_names`), each once; LUN masks naming LUNs of this target;
/// per-initiator CHAP with at least one incoming account.
fn acl_to_runtime(
    tp: &str,
    t: &TargetEntry,
    luns: &[LunConfig],
    strict_names: bool,
    text: &mut TargetExt,
) -> Result<(Vec<String>, BTreeMap<String, InitiatorConfig>), FileError> {
    let mut allow: Vec<String> = Vec::new();
    let mut initiators = BTreeMap::new();
    for (j, a) in t.acl.iter().enumerate() {
        let ap = format!("{tp}.acl[{j}]");
        check_initiator_name(&format!("{ap}.initiator"), &a.initiator, strict_names)?;
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
    Ok((allow, initiators))
}
