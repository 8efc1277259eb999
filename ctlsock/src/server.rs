//! Serve newline-delimited requests on a private unix socket.
//!
//! Defences, so that no client can hurt the daemon behind the socket:
//! - the socket is created mode 0600 (bound under a temporary name, chmod,
//!   then renamed into place, so it is never reachable with wider
//!   permissions), in a directory we own (created 0700 if missing), and
//!   peers other than the owner and root are refused (SO_PEERCRED);
//! - a request line longer than [`Limits::max_request`] gets a refusal and
//!   the connection is closed, before more is buffered;
//! - every read waits at most [`Limits::read_timeout`]; a client that
//!   stalls or disconnects mid-request is simply dropped;
//! - at most [`Limits::max_clients`] clients at once;
//! - every line, garbage included, is answered by the [`Handler`] and the
//!   connection stays usable;
//! - a long request may send [`Progress`] lines before its answer.
//!
//! A stale socket left by a killed daemon is replaced; a live one (some
//! daemon answers on it) is not.

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// Largest request line accepted by default (bytes, newline included).
pub const MAX_REQUEST: usize = 1 << 20;

/// Bounds on what one client may do.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request line, newline included.
    pub max_request: usize,
    /// Longest wait for the next bytes of a request (also the idle timeout).
    pub read_timeout: Duration,
    /// Longest wait to write a response.
    pub write_timeout: Duration,
    /// Clients served at once.
    pub max_clients: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request: MAX_REQUEST,
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_clients: 16,
        }
    }
}

/// Why a client is sent away; the [`Handler`] words the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// More than [`Limits::max_clients`] at once.
    TooManyClients,
    /// The peer is neither our user nor root.
    PermissionDenied,
    /// A request line over this many bytes.
    TooLarge(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooManyClients => write!(f, "too many clients; try again"),
            Refusal::PermissionDenied => write!(f, "permission denied"),
            Refusal::TooLarge(n) => write!(f, "request larger than {n} bytes"),
        }
    }
}

/// Lines a request sends before its answer (e.g. each step of a login),
/// written to the client as they come.
#[derive(Debug, Clone)]
pub struct Progress(Option<mpsc::UnboundedSender<Vec<u8>>>);

impl Progress {
    /// Progress that goes nowhere (requests made without a client).
    pub fn none() -> Progress {
        Progress(None)
    }

    /// Send one line (newlines inside are dropped).
    pub fn send(&self, line: Vec<u8>) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(line);
        }
    }
}

/// What answers the requests.
pub trait Handler: Send + Sync + 'static {
    /// Answer one request line (newline and a trailing `\r` removed; may be
    /// anything, including invalid UTF-8). The answer must be one line:
    /// no newline inside; the server appends one. Lines sent through
    /// `progress` before the answer reach the client first.
    fn handle(&self, line: Vec<u8>, progress: Progress) -> impl Future<Output = Vec<u8>> + Send;
    /// The line sent to a client before it is disconnected.
    fn refusal(&self, why: &Refusal) -> Vec<u8>;
}

/// Errors setting up the socket.
#[derive(Debug, Error)]
pub enum SocketError {
    #[error("another daemon is already serving the socket {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; not replacing it")]
    NotASocket(PathBuf),
    #[error("directory {0} is not owned by this user; not using it")]
    UnsafeDir(PathBuf),
    #[error("socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A listening control socket.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    /// (device, inode) of our socket file, so that shutdown never removes
    /// a socket another daemon has put at the same path since.
    id: Option<(u64, u64)>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ControlSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop accepting, end client connections, and remove the socket file.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
        let still_ours = std::fs::symlink_metadata(&self.path)
            .map(|m| Some((m.dev(), m.ino())) == self.id)
            .unwrap_or(false);
        if still_ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> SocketError + '_ {
    move |source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Create `dir` (0700) if missing; refuse a directory owned by someone
/// else than us or root (e.g. a planted `/tmp/iscsi-rs-UID`).
pub fn prepare_dir(dir: &Path) -> Result<(), SocketError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    let meta = std::fs::metadata(dir).map_err(io_err(dir))?;
    if meta.uid() != crate::euid() && meta.uid() != 0 {
        return Err(SocketError::UnsafeDir(dir.to_path_buf()));
    }
    Ok(())
}

/// Bind the socket at `path` and serve `handler` on it.
pub async fn listen<H: Handler>(
    handler: Arc<H>,
    path: &Path,
    limits: Limits,
) -> Result<ControlSocket, SocketError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    prepare_dir(&dir)?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(SocketError::InUse(path.to_path_buf()));
            }
            // Stale: left by a daemon that did not exit cleanly.
            std::fs::remove_file(path).map_err(io_err(path))?;
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    let tmp = dir.join(format!(
        ".sock{}.{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let listener = UnixListener::bind(&tmp).map_err(io_err(&tmp))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    let id = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(accept_loop(handler, listener, limits, cancel.clone()));
    Ok(ControlSocket {
        path: path.to_path_buf(),
        id,
        cancel,
        task,
    })
}

async fn accept_loop<H: Handler>(
    handler: Arc<H>,
    listener: UnixListener,
    limits: Limits,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_clients.max(1)));
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => return,
        };
        let handler = handler.clone();
        let limits = limits.clone();
        let cancel = cancel.clone();
        let permit = slots.clone().try_acquire_owned();
        tokio::spawn(async move {
            let mut stream = stream;
            let Ok(_permit) = permit else {
                let r = handler.refusal(&Refusal::TooManyClients);
                let _ = write_line(&mut stream, r, &limits).await;
                return;
            };
            if !peer_allowed(&stream) {
                let r = handler.refusal(&Refusal::PermissionDenied);
                let _ = write_line(&mut stream, r, &limits).await;
                return;
            }
            tokio::select! {
                _ = serve_client(&*handler, &mut stream, &limits) => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// Only the daemon's own user and root may talk to it.
fn peer_allowed(s: &UnixStream) -> bool {
    let me = crate::euid();
    match s.peer_cred() {
        Ok(c) => c.uid() == me || c.uid() == 0,
        Err(_) => false,
    }
}

async fn write_line(s: &mut UnixStream, mut line: Vec<u8>, limits: &Limits) -> io::Result<()> {
    line.retain(|b| *b != b'\n');
    line.push(b'\n');
    tokio::time::timeout(limits.write_timeout, s.write_all(&line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))?
}

/// Run one request, writing its progress lines as they come, then its
/// answer.
async fn answer<H: Handler>(
    handler: &H,
    line: Vec<u8>,
    s: &mut UnixStream,
    limits: &Limits,
) -> io::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let work = handler.handle(line, Progress(Some(tx)));
    tokio::pin!(work);
    let r = loop {
        tokio::select! {
            r = &mut work => break r,
            Some(p) = rx.recv() => write_line(s, p, limits).await?,
        }
    };
    while let Ok(p) = rx.try_recv() {
        write_line(s, p, limits).await?;
    }
    write_line(s, r, limits).await
}

async fn serve_client<H: Handler>(handler: &H, s: &mut UnixStream, limits: &Limits) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if answer(handler, line, s, limits).await.is_err() {
                return;
            }
            continue;
        }
        if buf.len() >= limits.max_request {
            let r = handler.refusal(&Refusal::TooLarge(limits.max_request));
            let _ = write_line(s, r, limits).await;
            tracing::warn!("control client sent an oversize request; closed");
            return;
        }
        // Never buffer past the limit.
        let want = (limits.max_request - buf.len()).min(chunk.len());
        let n = match tokio::time::timeout(limits.read_timeout, s.read(&mut chunk[..want])).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return,
            Err(_) => {
                if !buf.is_empty() {
                    tracing::info!("control client stalled mid-request; closed");
                }
                return;
            }
        };
        if n == 0 {
            if !buf.is_empty() {
                tracing::info!("control client disconnected mid-request");
            }
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Echo;
    impl Handler for Echo {
        async fn handle(&self, line: Vec<u8>, progress: Progress) -> Vec<u8> {
            progress.send(b"working".to_vec());
            let mut r = b"echo:".to_vec();
            r.extend_from_slice(&line);
            r
        }
        fn refusal(&self, why: &Refusal) -> Vec<u8> {
            format!("refused:{why}").into_bytes()
        }
    }

    #[tokio::test]
    async fn private_socket_answers_lines_and_refuses_oversize() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("sub/s.sock");
        let limits = Limits {
            max_request: 64,
            ..Limits::default()
        };
        let sock = listen(Arc::new(Echo), &path, limits).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let p = path.clone();
        let out = tokio::task::spawn_blocking(move || {
            let mut seen = Vec::new();
            let a = crate::client::call_with_progress(
                &p,
                b"\xff garbage",
                Duration::from_secs(5),
                |l| l.starts_with(b"echo:") || l.starts_with(b"refused:"),
                |l| seen.push(l.to_vec()),
            )
            .unwrap();
            assert_eq!(seen, vec![b"working".to_vec()]);
            let b = crate::call(&p, &[b'x'; 100], Duration::from_secs(5)).unwrap();
            (a, b)
        })
        .await
        .unwrap();
        assert_eq!(out.0, b"echo:\xff garbage");
        assert_eq!(out.1, b"refused:request larger than 64 bytes");
        // A second daemon on the same path is refused; a stale one replaced.
        let again = listen(Arc::new(Echo), &path, Limits::default()).await;
        assert!(matches!(again, Err(SocketError::InUse(_))));
        sock.shutdown().await;
        assert!(!path.exists());
        let e = crate::call(&path, b"x", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, CallErrorKind::Connect { .. }), "{e}");
    }
    use crate::CallError as CallErrorKind;
}
