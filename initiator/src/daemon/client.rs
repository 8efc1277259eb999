//! The blocking client of the daemon's API (what the CLI uses): one
//! request, one response, over [`ctlsock::call`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::api::{ErrorKind, Request, Response};

/// A call that did not succeed: its exit code class and a message that
/// says what to do next.
#[derive(Debug, Clone)]
pub struct ClientError {
    /// `None`: the daemon could not be reached (exit 3).
    pub kind: Option<ErrorKind>,
    pub message: String,
}

impl ClientError {
    /// The `iscsi` exit code.
    pub fn exit_code(&self) -> u8 {
        self.kind.map_or(3, ErrorKind::exit_code)
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A client for the daemon at `socket`.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// `timeout` bounds each read and write (a login can take a while:
    /// connections, LUN scan).
    pub fn new(socket: &Path, timeout: Duration) -> Client {
        Client {
            socket: socket.to_path_buf(),
            timeout,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Send `req`; `Ok(result)` when the daemon says ok.
    pub fn call<T: DeserializeOwned>(&self, req: &Request) -> Result<T, ClientError> {
        self.call_with_progress(req, |_| {})
    }

    /// [`Client::call`], passing each progress message the daemon sends
    /// before its answer (e.g. the steps of a login) to `on_progress`.
    pub fn call_with_progress<T: DeserializeOwned>(
        &self,
        req: &Request,
        mut on_progress: impl FnMut(&str),
    ) -> Result<T, ClientError> {
        let line = serde_json::to_vec(req).map_err(|e| ClientError {
            kind: Some(ErrorKind::BadRequest),
            message: e.to_string(),
        })?;
        let progress = |l: &[u8]| {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap_or_default();
            if let Some(m) = v.get("progress").and_then(|m| m.as_str()) {
                on_progress(m);
            }
        };
        let answer = ctlsock::call_with_progress(
            &self.socket,
            &line,
            self.timeout,
            ctlsock::json::is_response,
            progress,
        )
        .map_err(|e| match e {
            ctlsock::CallError::Connect { .. } => ClientError {
                kind: None,
                message: format!(
                    "cannot reach the initiator daemon ({e}); start it with `iscsi daemon` \
                     (same --state-dir/--socket as this command)"
                ),
            },
            ctlsock::CallError::Exchange { .. } => ClientError {
                kind: None,
                message: format!("the initiator daemon did not answer: {e}"),
            },
        })?;
        let r: Response = serde_json::from_slice(&answer).map_err(|e| ClientError {
            kind: Some(ErrorKind::Failed),
            message: format!("unreadable answer from the daemon: {e}"),
        })?;
        if !r.ok {
            let (kind, message) = r
                .error
                .map(|e| (e.kind, e.message))
                .unwrap_or((ErrorKind::Failed, "refused".into()));
            return Err(ClientError {
                kind: Some(kind),
                message,
            });
        }
        serde_json::from_value(r.result.unwrap_or(serde_json::Value::Null)).map_err(|e| {
            ClientError {
                kind: Some(ErrorKind::Failed),
                message: format!("unexpected answer from the daemon: {e}"),
            }
        })
    }
}
