//! JSON over the control socket: one request object per line, one
//! [`Response`] per line (`{"ok":true,"result":...}` or
//! `{"ok":false,"error":{"kind":...,"message":...}}`). A [`JsonService`]
//! names its request type and error kinds; [`Json`] turns it into a
//! [`Handler`]: empty lines, invalid JSON, unknown ops and refusals get an
//! error response, and the connection stays usable. Before its response a
//! request may send progress lines `{"progress":"TEXT"}` ([`progress`]);
//! [`is_response`] tells a client which line is the response.

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::server::{Handler, Progress, Refusal};

/// The error member of a failed response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody<K> {
    pub kind: K,
    pub message: String,
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "K: Deserialize<'de>"))]
pub struct Response<K> {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody<K>>,
}

impl<K> Response<K> {
    pub fn ok(result: impl Serialize) -> Self {
        Response {
            ok: true,
            result: Some(serde_json::to_value(result).unwrap_or(serde_json::Value::Null)),
            error: None,
        }
    }

    pub fn err(kind: K, message: impl Into<String>) -> Self {
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
    type Kind: Serialize + Send;
    /// The kind for unparseable, unknown or oversized requests.
    const BAD_REQUEST: Self::Kind;
    /// The kind for clients turned away (too many, not allowed).
    const REFUSED: Self::Kind;
    fn call(
        &self,
        req: Self::Request,
        progress: Progress,
    ) -> impl Future<Output = Response<Self::Kind>> + Send;
}

/// Adapts a [`JsonService`] to the line server.
pub struct Json<S>(pub Arc<S>);

fn to_line<K: Serialize>(r: &Response<K>) -> Vec<u8> {
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
pub async fn handle_line<S: JsonService>(
    s: &S,
    line: &[u8],
    progress: Progress,
) -> Response<S::Kind> {
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return Response::err(S::BAD_REQUEST, "empty request");
    }
    match serde_json::from_slice::<S::Request>(line) {
        Ok(req) => s.call(req, progress).await,
        Err(e) => Response::err(S::BAD_REQUEST, format!("bad request: {e}")),
    }
}

impl<S: JsonService> Handler for Json<S> {
    async fn handle(&self, line: Vec<u8>, progress: Progress) -> Vec<u8> {
        to_line(&handle_line(&*self.0, &line, progress).await)
    }

    fn refusal(&self, why: &Refusal) -> Vec<u8> {
        let kind = match why {
            Refusal::TooLarge(_) => S::BAD_REQUEST,
            _ => S::REFUSED,
        };
        to_line(&Response::err(kind, why.to_string()))
    }
}
