//! JSON over the control socket: one request object per line, one
//! [`Response`] per line (`{"ok":true,"result":...}` or
//! `{"ok":false,"error":{"kind":...,"message":...}}`, the kind one of
//! [`ErrorKind`], shared by both sockets). A [`JsonService`] names its
//! request type; [`Json`] turns it into a
//! [`Handler`]: empty lines, invalid JSON, unknown ops and refusals get an
//! error response, and the connection stays usable. Before its response a
//! request may send progress lines `{"progress":"TEXT"}` ([`progress`]);
//! [`is_response`] tells a client which line is the response.

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::server::{Handler, Progress, Refusal};

/// Why a request failed (`"kind"` on the wire, kebab-case), each with the
/// `iscsi` exit code a CLI verb ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Not valid JSON, not a known op, a missing or unknown member, or
    /// larger than the socket's request limit (exit 2).
    BadRequest,
    /// A value that is not acceptable: a bad SPEC or name, a missing node
    /// record (exit 2).
    Invalid,
    /// The target, LUN, portal, initiator or session does not exist (exit 1).
    NotFound,
    /// Understood but refused in the current state: a LUN in use, already
    /// logged in, too many clients (exit 1).
    Refused,
    /// The operation failed: an I/O error, a refused login, a SCSI error,
    /// cannot bind (exit 1).
    Failed,
    /// The peer (the initiator daemon's target) cannot be reached (exit 3).
    Unreachable,
}

impl ErrorKind {
    /// The `iscsi` exit code for this error.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::BadRequest | ErrorKind::Invalid => 2,
            ErrorKind::NotFound | ErrorKind::Refused | ErrorKind::Failed => 1,
            ErrorKind::Unreachable => 3,
        }
    }
}

/// The error member of a failed response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    pub fn ok(result: impl Serialize) -> Self {
        Response {
            ok: true,
            result: Some(serde_json::to_value(result).unwrap_or(serde_json::Value::Null)),
            error: None,
        }
    }

    pub fn err(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(ErrorBody {
                kind,
                message: message.into(),
            }),
        }
    }
}

/// A JSON API served on a control socket.
pub trait JsonService: Send + Sync + 'static {
    type Request: DeserializeOwned + Send;
    fn call(&self, req: Self::Request, progress: Progress)
        -> impl Future<Output = Response> + Send;
}

/// Adapts a [`JsonService`] to the line server.
pub struct Json<S>(pub Arc<S>);

fn to_line(r: &Response) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_else(|_| br#"{"ok":false}"#.to_vec())
}

/// A progress line: `{"progress":"TEXT"}`.
pub fn progress(p: &Progress, text: impl Into<String>) {
    let text: String = text.into();
    p.send(serde_json::to_vec(&serde_json::json!({ "progress": text })).unwrap_or_default());
}

/// Is this line a response (rather than a progress line)?
pub fn is_response(line: &[u8]) -> bool {
    !line.starts_with(br#"{"progress":"#)
}

/// Parse one request line and answer it.
pub async fn handle_line<S: JsonService>(s: &S, line: &[u8], progress: Progress) -> Response {
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return Response::err(ErrorKind::BadRequest, "empty request");
    }
    match serde_json::from_slice::<S::Request>(line) {
        Ok(req) => s.call(req, progress).await,
        Err(e) => Response::err(ErrorKind::BadRequest, format!("bad request: {e}")),
    }
}

impl<S: JsonService> Handler for Json<S> {
    async fn handle(&self, line: Vec<u8>, progress: Progress) -> Vec<u8> {
        to_line(&handle_line(&*self.0, &line, progress).await)
    }

    fn refusal(&self, why: &Refusal) -> Vec<u8> {
        let kind = match why {
            Refusal::TooLarge(_) => ErrorKind::BadRequest,
            _ => ErrorKind::Refused,
        };
        to_line(&Response::err(kind, why.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_on_the_wire_and_their_exit_codes() {
        let kinds = [
            (ErrorKind::BadRequest, "bad-request", 2),
            (ErrorKind::Invalid, "invalid", 2),
            (ErrorKind::NotFound, "not-found", 1),
            (ErrorKind::Refused, "refused", 1),
            (ErrorKind::Failed, "failed", 1),
            (ErrorKind::Unreachable, "unreachable", 3),
        ];
        for (k, name, code) in kinds {
            let line = to_line(&Response::err(k, "why"));
            let want = format!(r#"{{"ok":false,"error":{{"kind":"{name}","message":"why"}}}}"#);
            assert_eq!(String::from_utf8(line).unwrap(), want);
            let back: Response = serde_json::from_str(&want).unwrap();
            assert_eq!(back.error.map(|e| e.kind), Some(k));
            assert_eq!(k.exit_code(), code);
        }
        assert_eq!(
            String::from_utf8(to_line(&Response::ok(7))).unwrap(),
            r#"{"ok":true,"result":7}"#
        );
    }
}
