//! [`NbdServer`]: the listener (TCP or unix socket), the export registry,
//! per-export counters, and graceful shutdown (stop accepting, let
//! in-flight requests finish, close; NBD spec § Terminating the
//! transmission phase: "the server SHOULD wait for inflight requests to be
//! serviced prior to initiating a hard disconnect").

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::exec::Geometry;
use super::{handshake, transmission, NbdExport, NbdListen};
use crate::control::IoTags;
use crate::error::{Error, Result};
use crate::sync::lock;

/// Concurrent client connections per server.
const MAX_CONNECTIONS: usize = 256;
/// A client must pick an export within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on [`NbdServer::shutdown`] waiting for connections to drain.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(180);

/// I/O counters of one export (all its connections).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub clients: AtomicU64,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub errors: AtomicU64,
}

/// A registered export.
pub(crate) struct ExportEntry {
    pub export: NbdExport,
    pub geometry: Geometry,
    pub counters: Counters,
    /// Cancelled when the export is removed or the server shuts down.
    pub cancel: CancellationToken,
}

/// A snapshot of one export's state, for `iscsi session` and `--json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NbdExportStats {
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Logical block size (the NBD minimum block size).
    pub block_size: u32,
    pub read_only: bool,
    /// Connected clients (in transmission phase).
    pub clients: u64,
    pub reads: u64,
    pub writes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Requests answered with an error.
    pub errors: u64,
}

/// The suffix of a tagged export's name: `lun0@tag6`.
pub const TAG_SUFFIX: &str = "@tag";

/// `BASE@tagN` → (`BASE`, reads and writes tagged N); N is 0..=7, 0
/// meaning untagged (the export without the session's own tags). `None`
/// for any other name, and for a base that is itself tagged.
pub fn tagged_name(name: &str) -> Option<(&str, IoTags)> {
    let (base, n) = name.rsplit_once(TAG_SUFFIX)?;
    if base.is_empty() || base.contains(TAG_SUFFIX) || n.len() != 1 {
        return None;
    }
    IoTags::all(n.parse().ok()?).ok().map(|t| (base, t))
}

/// The exports, in the order they were added.
#[derive(Default)]
pub(crate) struct Registry {
    exports: Mutex<Vec<Arc<ExportEntry>>>,
}

impl Registry {
    /// By name; the empty name is the default export (the first one).
    /// `BASE@tagN` is the export `BASE` with every read and write tagged N
    /// (see [`tagged_name`]), registered on first use so that it has its
    /// own counters; it ends with `BASE`.
    pub(crate) fn lookup(&self, name: &str) -> Option<Arc<ExportEntry>> {
        let mut v = lock(&self.exports);
        if name.is_empty() {
            return v.first().cloned();
        }
        if let Some(e) = v.iter().find(|e| e.export.name == name) {
            return Some(e.clone());
        }
        let (base, tags) = tagged_name(name)?;
        let b = v.iter().find(|e| e.export.name == base)?.clone();
        let e = Arc::new(ExportEntry {
            export: NbdExport {
                name: name.to_string(),
                description: format!("{} ({tags})", b.export.description),
                device: b.export.device.with_tags(tags),
                read_only: b.export.read_only,
            },
            geometry: b.geometry,
            counters: Counters::default(),
            cancel: b.cancel.child_token(),
        });
        tracing::info!(export = %name, %tags, "tagged NBD export added");
        v.push(e.clone());
        Some(e)
    }

    pub(crate) fn list(&self) -> Vec<Arc<ExportEntry>> {
        lock(&self.exports).clone()
    }

    pub(crate) fn names(&self) -> Vec<String> {
        lock(&self.exports)
            .iter()
            .map(|e| e.export.name.clone())
            .collect()
    }
}

struct Inner {
    listen: NbdListen,
    registry: Registry,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// An NBD server for the LUNs of one session. Cheap to clone.
#[derive(Clone)]
pub struct NbdServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NbdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdServer")
            .field("listen", &self.inner.listen)
            .field("exports", &self.inner.registry.names())
            .finish()
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl NbdServer {
    /// Listen on `listen`. Refuses a non-loopback TCP address unless
    /// `allow_remote` (NBD has no authentication), and warns when allowed.
    /// Call [`NbdServer::shutdown`] to stop it.
    pub async fn bind(listen: &NbdListen, allow_remote: bool) -> Result<NbdServer> {
        if !listen.is_loopback() {
            if !allow_remote {
                return Err(Error::Usage(format!(
                    "refusing to serve NBD on {listen}: NBD has no authentication, so anyone \
                     who reaches that address can read and write the disks; use a loopback \
                     address (127.0.0.1:10809) or unix:PATH, or allow remote NBD clients \
                     explicitly (--allow-remote-nbd)"
                )));
            }
            tracing::warn!(%listen, "NBD listens on a non-loopback address: NBD has no \
                authentication, anyone who reaches it can read and write the disks");
        }
        let (listener, actual) = match listen {
            NbdListen::Tcp(a) => {
                let l = TcpListener::bind(a)
                    .await
                    .map_err(|e| Error::Usage(format!("cannot listen for NBD on {a}: {e}")))?;
                let actual = l.local_addr().map_err(|e| {
                    Error::Usage(format!("cannot read the NBD listening address: {e}"))
                })?;
                (Listener::Tcp(l), NbdListen::Tcp(actual))
            }
            NbdListen::Unix(p) => (Listener::Unix(bind_unix(p)?), listen.clone()),
        };
        let inner = Arc::new(Inner {
            listen: actual,
            registry: Registry::default(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        tokio::spawn(accept_loop(inner.clone(), listener));
        tracing::info!(listen = %inner.listen, "NBD server listening");
        Ok(NbdServer { inner })
    }

    /// The address actually listened on (port 0 resolved).
    pub fn listen(&self) -> NbdListen {
        self.inner.listen.clone()
    }

    /// The NBD URI of an export: `nbd://H:P/NAME` or
    /// `nbd+unix:///NAME?socket=PATH`.
    pub fn uri(&self, export: &str) -> String {
        match &self.inner.listen {
            NbdListen::Tcp(a) => format!("nbd://{a}/{export}"),
            NbdListen::Unix(p) => format!("nbd+unix:///{export}?socket={}", p.display()),
        }
    }

    /// Offer a LUN. Errors when the name exists, is empty or too long,
    /// contains `@tag` (that suffix names tagged views, [`tagged_name`]), or
    /// the LUN's block size cannot be an NBD block size.
    pub fn add_export(&self, e: NbdExport) -> Result<()> {
        if e.name.is_empty() || e.name.len() > 256 || e.name.contains('\0') {
            return Err(Error::Usage(format!(
                "NBD export name {:?} must be 1..256 bytes without NUL",
                e.name
            )));
        }
        if e.name.contains(TAG_SUFFIX) {
            return Err(Error::Usage(format!(
                "NBD export name {:?} must not contain {TAG_SUFFIX:?}: NAME@tagN is the export \
                 NAME with its reads and writes tagged N",
                e.name
            )));
        }
        let geometry = Geometry::of(&e.device, e.read_only).ok_or_else(|| {
            Error::Unsupported(format!(
                "LUN block size {} cannot be exported over NBD (needs a power of two up to 64 KiB)",
                e.device.block_size()
            ))
        })?;
        let mut v = lock(&self.inner.registry.exports);
        if v.iter().any(|x| x.export.name == e.name) {
            return Err(Error::Usage(format!(
                "an NBD export named {} exists",
                e.name
            )));
        }
        tracing::info!(export = %e.name, size = geometry.size, read_only = geometry.read_only,
            "NBD export added");
        v.push(Arc::new(ExportEntry {
            export: e,
            geometry,
            counters: Counters::default(),
            cancel: self.inner.cancel.child_token(),
        }));
        Ok(())
    }

    /// Withdraw an export; its clients finish their in-flight requests and
    /// are disconnected. `false` when there was no such export.
    pub fn remove_export(&self, name: &str) -> bool {
        let mut v = lock(&self.inner.registry.exports);
        let Some(i) = v.iter().position(|e| e.export.name == name) else {
            return false;
        };
        let e = v.remove(i);
        e.cancel.cancel();
        // Its tagged views (their tokens are children of the one cancelled).
        v.retain(|t| tagged_name(&t.export.name).is_none_or(|(b, _)| b != name));
        true
    }

    /// Counters of every export.
    pub fn exports(&self) -> Vec<NbdExportStats> {
        self.inner
            .registry
            .list()
            .iter()
            .map(|e| {
                let c = &e.counters;
                NbdExportStats {
                    name: e.export.name.clone(),
                    size: e.geometry.size,
                    block_size: e.geometry.min_block,
                    read_only: e.geometry.read_only,
                    clients: c.clients.load(Relaxed),
                    reads: c.reads.load(Relaxed),
                    writes: c.writes.load(Relaxed),
                    bytes_read: c.bytes_read.load(Relaxed),
                    bytes_written: c.bytes_written.load(Relaxed),
                    errors: c.errors.load(Relaxed),
                }
            })
            .collect()
    }

    /// Stop accepting, let in-flight requests finish (bounded), close every
    /// client connection, and remove the unix socket file.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("NBD connections still open after {SHUTDOWN_TIMEOUT:?}; leaving them");
        }
        if let NbdListen::Unix(p) = &self.inner.listen {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Bind a unix socket, replacing a stale socket file nobody listens on;
/// the socket is made private to its owner (0600).
fn bind_unix(p: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(m) = std::fs::symlink_metadata(p) {
        if !m.file_type().is_socket() {
            return Err(Error::Usage(format!(
                "{} exists and is not a socket; choose another NBD socket path",
                p.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(p).is_ok() {
            return Err(Error::Usage(format!(
                "another server listens on {}; choose another NBD socket path",
                p.display()
            )));
        }
        let _ = std::fs::remove_file(p);
    }
    let l = UnixListener::bind(p)
        .map_err(|e| Error::Usage(format!("cannot listen for NBD on {}: {e}", p.display())))?;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
    Ok(l)
}

async fn accept_loop(inner: Arc<Inner>, listener: Listener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = inner.cancel.cancelled() => break,
            a = accept(&listener) => a,
        };
        let (rd, wr) = match accepted {
            Ok(halves) => halves,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "NBD accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("NBD connection refused: {MAX_CONNECTIONS} clients already");
            continue;
        };
        let inner2 = inner.clone();
        inner.tracker.spawn(async move {
            serve_connection(rd, wr, &inner2).await;
            drop(slot);
        });
    }
}

type Halves = (
    Box<dyn AsyncRead + Unpin + Send>,
    Box<dyn AsyncWrite + Unpin + Send>,
);

async fn accept(l: &Listener) -> std::io::Result<Halves> {
    Ok(match l {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            tracing::debug!(%peer, "NBD client connected");
            let (r, w) = s.into_split();
            (Box::new(r), Box::new(w))
        }
        Listener::Unix(l) => {
            let (s, _) = l.accept().await?;
            let (r, w) = s.into_split();
            (Box::new(r), Box::new(w))
        }
    })
}

async fn serve_connection(
    rd: Box<dyn AsyncRead + Unpin + Send>,
    mut wr: Box<dyn AsyncWrite + Unpin + Send>,
    inner: &Inner,
) {
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let hs = tokio::select! {
        _ = inner.cancel.cancelled() => return,
        r = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            handshake::negotiate(&mut rd, &mut wr, &inner.registry),
        ) => r,
    };
    let (export, mode) = match hs {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "NBD handshake ended");
            return;
        }
        Err(_) => {
            tracing::debug!("NBD handshake timed out");
            return;
        }
    };
    tracing::debug!(export = %export.export.name, structured = mode.structured,
        "NBD client in transmission phase");
    export.counters.clients.fetch_add(1, Relaxed);
    let early = rd.buffer().to_vec();
    transmission::serve(rd.into_inner(), &early, wr, export.clone(), mode).await;
    export.counters.clients.fetch_sub(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_names() {
        let (b, t) = tagged_name("lun0@tag6").unwrap();
        assert_eq!((b, t), ("lun0", IoTags::all(6).unwrap()));
        assert_eq!(tagged_name("lun12@tag0").unwrap().1, IoTags::NONE);
        assert_eq!(
            tagged_name("lun-00000000000000ff@tag1").unwrap().0,
            "lun-00000000000000ff"
        );
        for bad in [
            "lun0",
            "lun0@tag8",
            "lun0@tag",
            "lun0@tag66",
            "@tag1",
            "lun0@tag1@tag2",
            "lun0@tagx",
        ] {
            assert!(tagged_name(bad).is_none(), "{bad}");
        }
    }
}
