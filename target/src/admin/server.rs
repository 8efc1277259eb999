//! The admin API on a unix socket: newline-delimited JSON (see
//! [`super::protocol`]).
//!
//! Defences, so that no client can hurt the daemon:
//! - the socket is created mode 0600 (bound under a temporary name, chmod,
//!   then renamed into place, so it is never reachable with wider
//!   permissions) and peers other than the owner and root are refused
//!   (SO_PEERCRED);
//! - a request line longer than [`AdminLimits::max_request`] gets an error
//!   and the connection is closed, before more is buffered;
//! - every read waits at most [`AdminLimits::read_timeout`]; a client that
//!   stalls or disconnects mid-request is simply dropped;
//! - at most [`AdminLimits::max_clients`] clients at once;
//! - malformed JSON and unknown ops get an error response and the
//!   connection stays usable.
//!
//! A stale socket left by a killed daemon is replaced; a live one (some
//! daemon answers on it) is not.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::protocol::{ErrorKind, Request, Response, MAX_REQUEST};
use super::Admin;

/// Bounds on what one client may do.
#[derive(Debug, Clone)]
pub struct AdminLimits {
    /// Largest request line, newline included.
    pub max_request: usize,
    /// Longest wait for the next bytes of a request (also the idle timeout).
    pub read_timeout: Duration,
    /// Longest wait to write a response.
    pub write_timeout: Duration,
    /// Clients served at once.
    pub max_clients: usize,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_request: MAX_REQUEST,
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_clients: 16,
        }
    }
}

/// Errors setting up the socket.
#[derive(Debug, Error)]
pub enum SocketError {
    #[error("another daemon is already serving the admin socket {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; not replacing it")]
    NotASocket(PathBuf),
    #[error("directory {0} is not owned by this user; not using it")]
    UnsafeDir(PathBuf),
    #[error("admin socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The default socket path: `$XDG_RUNTIME_DIR/iscsi-rs/target.sock`, else
/// `/run/iscsi-rs/target.sock` for root, else `/tmp/iscsi-rs-UID/target.sock`.
pub fn default_socket_path() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("iscsi-rs").join("target.sock");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        PathBuf::from("/run/iscsi-rs/target.sock")
    } else {
        PathBuf::from(format!("/tmp/iscsi-rs-{uid}/target.sock"))
    }
}

/// A listening admin socket.
#[derive(Debug)]
pub struct AdminSocket {
    path: PathBuf,
    /// (device, inode) of our socket file, so that shutdown never removes
    /// a socket another daemon has put at the same path since.
    id: Option<(u64, u64)>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AdminSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop accepting, and remove the socket file.
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

/// Create the socket's directory (0700) if missing; refuse a directory
/// owned by someone else (e.g. a planted `/tmp/iscsi-rs-UID`).
fn prepare_dir(dir: &Path) -> Result<(), SocketError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    let meta = std::fs::metadata(dir).map_err(io_err(dir))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(SocketError::UnsafeDir(dir.to_path_buf()));
    }
    Ok(())
}

/// Bind the admin socket at `path` and serve `admin` on it.
pub async fn listen(
    admin: Arc<Admin>,
    path: &Path,
    limits: AdminLimits,
) -> Result<AdminSocket, SocketError> {
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
        ".adm{}.{}",
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
    let task = tokio::spawn(accept_loop(admin, listener, limits, cancel.clone()));
    tracing::info!(socket = %path.display(), "admin API listening");
    Ok(AdminSocket {
        path: path.to_path_buf(),
        id,
        cancel,
        task,
    })
}

async fn accept_loop(
    admin: Arc<Admin>,
    listener: UnixListener,
    limits: AdminLimits,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_clients.max(1)));
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => return,
        };
        let admin = admin.clone();
        let limits = limits.clone();
        let cancel = cancel.clone();
        let permit = slots.clone().try_acquire_owned();
        tokio::spawn(async move {
            let mut stream = stream;
            let Ok(_permit) = permit else {
                let r = Response::err(ErrorKind::Refused, "too many admin clients; try again");
                let _ = write_response(&mut stream, &r, &limits).await;
                return;
            };
            if !peer_allowed(&stream) {
                let r = Response::err(ErrorKind::Refused, "permission denied");
                let _ = write_response(&mut stream, &r, &limits).await;
                return;
            }
            tokio::select! {
                _ = serve_client(&admin, &mut stream, &limits) => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// Only the daemon's own user and root may administer it.
fn peer_allowed(s: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    match s.peer_cred() {
        Ok(c) => c.uid() == me || c.uid() == 0,
        Err(_) => false,
    }
}

async fn write_response(s: &mut UnixStream, r: &Response, limits: &AdminLimits) -> io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
    line.push(b'\n');
    tokio::time::timeout(limits.write_timeout, s.write_all(&line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))?
}

/// Parse one request line and execute it.
pub async fn handle_line(admin: &Admin, line: &[u8]) -> Response {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return Response::err(ErrorKind::BadRequest, "empty request");
    }
    match serde_json::from_slice::<Request>(line) {
        Ok(req) => admin.handle(req).await,
        Err(e) => Response::err(ErrorKind::BadRequest, format!("bad request: {e}")),
    }
}

async fn serve_client(admin: &Admin, s: &mut UnixStream, limits: &AdminLimits) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let r = handle_line(admin, &line[..pos]).await;
            if write_response(s, &r, limits).await.is_err() {
                return;
            }
            continue;
        }
        if buf.len() >= limits.max_request {
            let r = Response::err(
                ErrorKind::BadRequest,
                format!("request larger than {} bytes", limits.max_request),
            );
            let _ = write_response(s, &r, limits).await;
            tracing::warn!("admin client sent an oversize request; closed");
            return;
        }
        // Never buffer past the limit.
        let want = (limits.max_request - buf.len()).min(chunk.len());
        let n = match tokio::time::timeout(limits.read_timeout, s.read(&mut chunk[..want])).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return,
            Err(_) => {
                if !buf.is_empty() {
                    tracing::info!("admin client stalled mid-request; closed");
                }
                return;
            }
        };
        if n == 0 {
            if !buf.is_empty() {
                tracing::info!("admin client disconnected mid-request");
            }
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
