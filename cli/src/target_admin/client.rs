//! The admin socket client: one request, one newline-delimited JSON answer
//! (see `iscsi_target::admin::protocol`), errors mapped to exit codes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use iscsi_target::admin::protocol::{Account, Request, Response, ShowResult};
use iscsi_target::admin::server::default_socket_path;

use super::{AdminOpts, TargetOpt};

/// Why a verb failed, with its exit code.
#[derive(Debug)]
pub(super) enum Fail {
    /// 1: the daemon refused.
    Refused(String),
    /// 2: bad command line.
    Usage(String),
    /// 3: no daemon.
    Unreachable(String),
}

impl Fail {
    pub(super) fn code(&self) -> u8 {
        match self {
            Fail::Refused(_) => 1,
            Fail::Usage(_) => 2,
            Fail::Unreachable(_) => 3,
        }
    }
}

/// Send one request and read its response.
fn call(socket: &Path, req: &Request) -> Result<Response, Fail> {
    let line = serde_json::to_vec(req).map_err(|e| Fail::Usage(e.to_string()))?;
    let answer = ctlsock::call(socket, &line, Duration::from_secs(120)).map_err(|e| {
        Fail::Unreachable(format!(
            "cannot reach the target's admin socket: {e}; is `iscsi target serve` running? \
             (socket {}, see --admin-socket)",
            socket.display()
        ))
    })?;
    serde_json::from_slice(&answer)
        .map_err(|e| Fail::Refused(format!("unreadable answer from the daemon: {e}")))
}

/// Call and turn an error response into [`Fail::Refused`].
pub(super) fn call_ok(socket: &Path, req: &Request) -> Result<serde_json::Value, Fail> {
    let r = call(socket, req)?;
    if r.ok {
        Ok(r.result.unwrap_or(serde_json::Value::Null))
    } else {
        let msg = r
            .error
            .map(|e| e.message)
            .unwrap_or_else(|| "refused".into());
        Err(Fail::Refused(msg))
    }
}

pub(super) fn socket_of(o: &AdminOpts) -> PathBuf {
    o.admin_socket.clone().unwrap_or_else(default_socket_path)
}

/// The target named on the command line, or the daemon's only target.
pub(super) fn resolve_target(socket: &Path, t: &TargetOpt) -> Result<String, Fail> {
    if let Some(n) = &t.target {
        return Ok(n.clone());
    }
    let v = call_ok(socket, &Request::Show { target: None })?;
    let show: ShowResult =
        serde_json::from_value(v).map_err(|e| Fail::Refused(format!("unreadable answer: {e}")))?;
    match show.targets.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => Err(Fail::Usage("the daemon serves no target".into())),
        many => Err(Fail::Usage(format!(
            "the daemon serves {} targets; say which with --target ({})",
            many.len(),
            many.iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// File paths in a LUN SPEC are resolved by the daemon, whose working
/// directory is not ours: make them absolute here.
pub(super) fn absolute_spec(spec: &str) -> String {
    for kind in ["file:", "block:"] {
        if let Some(rest) = spec.strip_prefix(kind) {
            let (path, opts) = match rest.split_once(',') {
                Some((p, o)) => (p, Some(o)),
                None => (rest, None),
            };
            if path.is_empty() || Path::new(path).is_absolute() {
                return spec.to_string();
            }
            let abs = std::path::absolute(path)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| path.to_string());
            return match opts {
                Some(o) => format!("{kind}{abs},{o}"),
                None => format!("{kind}{abs}"),
            };
        }
    }
    spec.to_string()
}

pub(super) fn account(s: &str, flag: &str) -> Result<Account, Fail> {
    Account::parse(s).ok_or_else(|| Fail::Usage(format!("{flag} must be USER:SECRET")))
}
