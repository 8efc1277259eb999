//! Checks of single fields and of the small sub-objects (names, company
//! id, CHAP accounts, session parameters of RFC 7143 §13, admission
//! limits), each mapping a file entry onto its runtime struct and naming
//! the JSON path of a bad value.

use std::time::Duration;

use super::{AccountEntry, ChapEntry, FileError, LimitsEntry, SessionEntry};
use crate::config::{AuthConfig, ChapCredentials, SessionLimits};

pub(super) fn limits_to_runtime(
    e: Option<&LimitsEntry>,
) -> Result<crate::limits::ServerLimits, FileError> {
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

pub(super) fn chap_to_runtime(path: &str, c: &ChapEntry) -> Result<AuthConfig, FileError> {
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

pub(super) fn session_to_runtime(path: &str, s: &SessionEntry) -> Result<SessionLimits, FileError> {
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
