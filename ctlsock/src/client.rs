//! The blocking client side: one request line out, one response line back,
//! with timeouts and a cap on the response size (a broken daemon cannot make
//! the CLI allocate without bound).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use thiserror::Error;

/// Largest response line accepted.
pub const MAX_RESPONSE: u64 = 64 << 20;

/// Why a call got no response.
#[derive(Debug, Error)]
pub enum CallError {
    /// Nothing listens on the socket (missing, refused, permission).
    #[error("cannot connect to {path}: {source}")]
    Connect { path: String, source: io::Error },
    /// Connected, but the exchange failed (timeout, reset, closed early).
    #[error("{path}: {why}")]
    Exchange { path: String, why: String },
}

/// Send `request` (one line; a newline is appended) and return the response
/// line without its newline. `timeout` bounds each read and write.
pub fn call(socket: &Path, request: &[u8], timeout: Duration) -> Result<Vec<u8>, CallError> {
    call_with_progress(socket, request, timeout, |_| true, |_| {})
}

/// [`call`] for requests that send progress lines before their answer:
/// each line for which `is_answer` is false goes to `on_progress`; the
/// first for which it is true is returned. `timeout` bounds each read, so
/// a request may take longer overall as long as progress keeps coming.
pub fn call_with_progress(
    socket: &Path,
    request: &[u8],
    timeout: Duration,
    mut is_answer: impl FnMut(&[u8]) -> bool,
    mut on_progress: impl FnMut(&[u8]),
) -> Result<Vec<u8>, CallError> {
    let path = socket.display().to_string();
    let mut s = UnixStream::connect(socket).map_err(|source| CallError::Connect {
        path: path.clone(),
        source,
    })?;
    let ex = |why: String| CallError::Exchange {
        path: path.clone(),
        why,
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let mut line = request.to_vec();
    line.push(b'\n');
    s.write_all(&line)
        .map_err(|e| ex(format!("sending: {e}")))?;
    let mut r = BufReader::new(Read::take(s, MAX_RESPONSE));
    loop {
        let mut answer = Vec::new();
        r.read_until(b'\n', &mut answer).map_err(|e| {
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                ex(format!("no answer within {timeout:?}"))
            } else {
                ex(format!("reading: {e}"))
            }
        })?;
        if answer.last() != Some(&b'\n') {
            return Err(ex(if answer.is_empty() {
                "closed the connection without answering".into()
            } else {
                "answer cut short".into()
            }));
        }
        answer.pop();
        if is_answer(&answer) {
            return Ok(answer);
        }
        on_progress(&answer);
    }
}
