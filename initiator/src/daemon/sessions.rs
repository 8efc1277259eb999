//! A session and its NBD exports ([`ExportedSession`]): login (session, LUN
//! scan, one NBD server per session with one export per disk LUN, named
//! `lun<N>`), state tracking from [`SessionEvent`]s (logged with `tracing`
//! and kept for `iscsi session`), and logout (end NBD clients gracefully,
//! flush, log out). The daemon keeps one per node; `iscsi login
//! --foreground` runs one in its own process.
//!
//! Recovery is the [`Session`]'s own (RFC 7143 §6.3.5 session
//! reinstatement at ErrorRecoveryLevel 0): while it reconnects, commands
//! (and so NBD requests) wait; after the node's `replacement_timeout` they
//! fail, which the NBD server answers with EIO. A write is acknowledged to
//! an NBD client only after the target's GOOD status, so no acknowledged
//! write is lost. A failed session keeps its exports (answering EIO) until
//! it is logged out or logged in again.
//!
//! NBD address per session: the login's `--nbd`, else the node's `nbd`
//! setting, else 127.0.0.1:10809 (the NBD port) if free, else the next free
//! port above it.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast::error::RecvError;

use super::api::{EventRecord, ExportInfo, LoggedOut, LunInfo, SessionInfo, SessionState};
use super::nodes::Node;
use crate::error::{Error, Result};
use crate::nbd::server::tagged_name;
use crate::nbd::{NbdExport, NbdListen, NbdServer};
use crate::session::{Session, SessionConfig, SessionEvent};
use crate::sync::lock;
use crate::{device, ScsiDevice};

/// The NBD port (NBD spec, "Protocol phases": IANA port 10809).
pub const NBD_PORT: u16 = 10809;
/// Ports tried above [`NBD_PORT`] when it is taken.
const NBD_PORT_TRIES: u16 = 64;
/// Events kept per session.
const MAX_EVENTS: usize = 32;
/// Bound on logging out one session (flush, NBD drain, Logout exchange).
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(15);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Status {
    state: SessionState,
    since: u64,
    events: VecDeque<EventRecord>,
}

impl Status {
    fn record(&mut self, event: &str, detail: String) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(EventRecord {
            at: now(),
            event: event.to_string(),
            detail,
        });
    }

    fn enter(&mut self, state: SessionState) {
        if self.state != state {
            self.state = state;
            self.since = now();
        }
    }
}

struct Lun {
    number: Option<u16>,
    raw: u64,
    vendor: String,
    product: String,
    size: u64,
    block_size: u32,
    export: Option<String>,
    note: String,
    device: Option<ScsiDevice>,
}

/// One logged-in session with its LUNs exported over NBD.
pub struct ExportedSession {
    target: String,
    portal: String,
    session: Session,
    nbd: NbdServer,
    luns: Vec<Lun>,
    status: Arc<Mutex<Status>>,
    watcher: tokio::task::AbortHandle,
}

impl ExportedSession {
    /// Same target (case-insensitive) and, if given, same portal.
    pub fn is(&self, target: &str, portal: Option<&str>) -> bool {
        self.target.eq_ignore_ascii_case(target)
            && portal.is_none_or(|p| super::nodes::same_portal(&self.portal, p))
    }

    pub fn state(&self) -> SessionState {
        lock(&self.status).state
    }

    pub fn nbd(&self) -> &NbdServer {
        &self.nbd
    }

    /// The exported LUNs' block devices, by export name (for other
    /// exports of the same LUNs, e.g. ublk).
    pub fn devices(&self) -> Vec<(String, ScsiDevice)> {
        self.luns
            .iter()
            .filter(|l| l.export.is_some())
            .filter_map(|l| Some((l.name(), l.device.clone()?)))
            .collect()
    }

    /// Everything `iscsi session` shows.
    pub fn info(&self) -> SessionInfo {
        let st = lock(&self.status);
        let stats = self.nbd.exports();
        let export_info = |name: &String| {
            let s = stats.iter().find(|s| &s.name == name);
            ExportInfo {
                name: name.clone(),
                uri: self.nbd.uri(name),
                read_only: s.is_some_and(|s| s.read_only),
                clients: s.map_or(0, |s| s.clients),
                reads: s.map_or(0, |s| s.reads),
                writes: s.map_or(0, |s| s.writes),
                bytes_read: s.map_or(0, |s| s.bytes_read),
                bytes_written: s.map_or(0, |s| s.bytes_written),
                errors: s.map_or(0, |s| s.errors),
            }
        };
        let luns = self
            .luns
            .iter()
            .map(|l| {
                let export = l.export.as_ref().map(export_info);
                let tagged_exports = stats
                    .iter()
                    .filter(|s| {
                        tagged_name(&s.name).is_some_and(|(b, _)| Some(b) == l.export.as_deref())
                    })
                    .map(|s| export_info(&s.name))
                    .collect();
                LunInfo {
                    lun: l.number,
                    lun_raw: format!("{:016x}", l.raw),
                    vendor: l.vendor.clone(),
                    product: l.product.clone(),
                    size: l.size,
                    block_size: l.block_size,
                    export,
                    tagged_exports,
                    note: l.note.clone(),
                }
            })
            .collect();
        SessionInfo {
            target: self.target.clone(),
            portal: self.portal.clone(),
            initiator_name: self.session.config().initiator_name.clone(),
            isid: self
                .session
                .isid()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            tsih: self.session.tsih(),
            state: st.state,
            since: st.since,
            replacement_timeout: self.session.config().recovery_timeout.as_secs(),
            io_tags: self.session.config().io_tags,
            nbd: Some(self.nbd.listen().to_string()),
            connections: self.session.stats(),
            luns,
            events: st.events.iter().cloned().collect(),
        }
    }

    /// End NBD clients gracefully (in-flight requests finish), flush every
    /// LUN (SYNCHRONIZE CACHE), log out. The session is gone either way;
    /// the returned warning says what did not go cleanly.
    pub async fn logout(self) -> LoggedOut {
        let mut warnings = Vec::new();
        self.nbd.shutdown().await;
        let failed = self.state() == SessionState::Failed;
        if !failed {
            for l in &self.luns {
                if let Some(d) = &l.device {
                    match tokio::time::timeout(LOGOUT_TIMEOUT, d.flush()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(Error::Unsupported(_))) => {}
                        Ok(Err(e)) => warnings.push(format!("flush of {}: {e}", l.name())),
                        Err(_) => warnings.push(format!("flush of {} timed out", l.name())),
                    }
                }
            }
        }
        self.watcher.abort();
        let target = self.target.clone();
        let portal = self.portal.clone();
        // Drop the devices' session clones so that logout ends the session.
        drop(self.luns);
        if !failed {
            match tokio::time::timeout(LOGOUT_TIMEOUT, self.session.logout()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warnings.push(format!("logout: {e}")),
                Err(_) => warnings.push("logout timed out".into()),
            }
        }
        tracing::info!(target_name = %target, portal = %portal, "logged out");
        LoggedOut {
            target,
            portal,
            warning: warnings.join("; "),
        }
    }
}

/// Bind the session's NBD server: the explicit address, or the NBD port on
/// loopback if free, else the next free one.
async fn bind_nbd(explicit: Option<&str>, allow_remote: bool) -> Result<NbdServer> {
    if let Some(a) = explicit {
        let listen: NbdListen = a
            .parse()
            .map_err(|e: String| Error::Usage(format!("NBD address {a:?}: {e}")))?;
        return NbdServer::bind(&listen, allow_remote).await.map_err(|e| {
            Error::Usage(format!(
                "cannot serve NBD on {listen}: {e}; pick another address with --nbd \
                 or `iscsi node update --nbd`"
            ))
        });
    }
    let mut last = None;
    for port in NBD_PORT..NBD_PORT + NBD_PORT_TRIES {
        let listen = NbdListen::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        match NbdServer::bind(&listen, false).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Usage(format!(
        "no free NBD port in 127.0.0.1:{NBD_PORT}..{}: {}; choose one with --nbd",
        NBD_PORT + NBD_PORT_TRIES - 1,
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

impl Lun {
    /// Export name: `lun<N>`, or `lun-<16 hex digits>` for a LUN that is
    /// not single-level.
    fn name(&self) -> String {
        match self.number {
            Some(n) => format!("lun{n}"),
            None => format!("lun-{:016x}", self.raw),
        }
    }
}

/// Scan the session's LUNs and export every disk; an error if none is.
async fn export_luns(
    session: &Session,
    nbd: &NbdServer,
    target: &str,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<Vec<Lun>> {
    let mut out = Vec::new();
    for l in device::scan_luns(session).await? {
        let mut lun = Lun {
            number: l.number,
            raw: l.lun,
            vendor: l.vendor.clone(),
            product: l.product.clone(),
            size: l.capacity.map_or(0, |c| c.bytes()),
            block_size: l.capacity.map_or(0, |c| c.block_size),
            export: None,
            note: String::new(),
            device: None,
        };
        // Direct-access block devices only (tgtd's LUN 0 is a controller).
        if l.device_type != 0 || l.capacity.is_none() {
            lun.note = format!("not a disk (peripheral device type {:#04x})", l.device_type);
            out.push(lun);
            continue;
        }
        let name = lun.name();
        let dev = ScsiDevice::open_raw(session, l.lun).await?;
        let number = l
            .number
            .map_or_else(|| format!("{:#x}", l.lun), |n| n.to_string());
        nbd.add_export(NbdExport {
            name: name.clone(),
            description: format!("{target} LUN {number} ({} {})", l.vendor, l.product),
            device: dev.clone(),
            read_only: false,
        })?;
        progress(format!(
            "LUN {number}: {} bytes, exported as {name}",
            lun.size
        ));
        lun.export = Some(name);
        lun.device = Some(dev);
        out.push(lun);
    }
    if out.iter().all(|l| l.export.is_none()) {
        return Err(Error::Unsupported(format!(
            "{target} has no disk LUN to export (see `iscsi scsi ... report-luns`)"
        )));
    }
    Ok(out)
}

/// Follow the session's events: log them, record them, track the state.
async fn watch(
    mut rx: tokio::sync::broadcast::Receiver<SessionEvent>,
    status: Arc<Mutex<Status>>,
    target: String,
) {
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(target_name = %target, missed = n, "session events missed");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let mut st = lock(&status);
        match ev {
            SessionEvent::Recovering(why) => {
                tracing::warn!(target_name = %target, reason = %why, "connection lost; recovering");
                st.record("connection-lost", why);
                st.record("recovering", String::new());
                st.enter(SessionState::Recovering);
            }
            SessionEvent::Recovered { tsih } => {
                tracing::info!(target_name = %target, tsih, "session recovered");
                st.record("recovered", format!("tsih {tsih}"));
                st.enter(SessionState::LoggedIn);
            }
            SessionEvent::Failed(why) => {
                tracing::error!(target_name = %target, reason = %why,
                    "session failed: NBD requests now fail with EIO; log in again");
                st.record("failed", why);
                st.enter(SessionState::Failed);
            }
            SessionEvent::LunsChanged => {
                tracing::info!(target_name = %target, "reported LUNs changed");
                st.record("luns-changed", String::new());
            }
            SessionEvent::UnitAttention { lun, sense } => {
                // Routine after every login (power on / reset); logged only.
                tracing::debug!(target_name = %target, lun, ?sense, "unit attention");
            }
            SessionEvent::LogoutRequested => {
                tracing::info!(target_name = %target, "target requested logout");
                st.record("logout-requested", String::new());
            }
        }
    }
}

/// Log in to `node` and export its LUNs (the daemon's login). `nbd`
/// overrides the node's address.
pub(crate) async fn login(
    node: &Node,
    initiator_name: &str,
    nbd: Option<&str>,
    allow_remote: bool,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<ExportedSession> {
    let cfg = node.session_config(initiator_name)?;
    // Bind first: a taken NBD address should not cost a login.
    let server = bind_nbd(nbd.or(node.nbd.as_deref()), allow_remote).await?;
    progress(format!("NBD server on {}", server.listen()));
    ExportedSession::start(cfg, server, progress).await
}

impl ExportedSession {
    /// Log in with `cfg` and export every disk LUN on `server` (already
    /// bound; shut down here if the login fails). Each step is reported
    /// through `progress` as it completes.
    pub async fn start(
        cfg: SessionConfig,
        server: NbdServer,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<ExportedSession> {
        let target = cfg.target_name.clone();
        let portal = cfg.portal.to_string();
        tracing::info!(target_name = %target, %portal, connections = cfg.connections, "logging in");
        progress(format!(
            "logging in to {target} at {portal} ({} connection(s) requested)",
            cfg.connections
        ));
        let session = match Session::connect(cfg).await {
            Ok(s) => s,
            Err(e) => {
                server.shutdown().await;
                return Err(e);
            }
        };
        let status = Arc::new(Mutex::new(Status {
            state: SessionState::LoggedIn,
            since: now(),
            events: VecDeque::new(),
        }));
        lock(&status).record(
            "login",
            format!(
                "{} connection(s), tsih {}",
                session.connection_count(),
                session.tsih()
            ),
        );
        progress(format!(
            "session up: TSIH {}, {} connection(s) logged in; scanning LUNs",
            session.tsih(),
            session.connection_count()
        ));
        let watcher = tokio::spawn(watch(session.events(), status.clone(), target.clone()));
        let luns = match export_luns(&session, &server, &target, progress).await {
            Ok(l) => l,
            Err(e) => {
                watcher.abort();
                server.shutdown().await;
                let _ = tokio::time::timeout(LOGOUT_TIMEOUT, session.logout()).await;
                return Err(e);
            }
        };
        tracing::info!(target_name = %target, %portal, tsih = session.tsih(),
            nbd = %server.listen(), exports = luns.iter().filter(|l| l.export.is_some()).count(),
            "logged in");
        Ok(ExportedSession {
            target,
            portal,
            session,
            nbd: server,
            luns,
            status,
            watcher: watcher.abort_handle(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default NBD address is the NBD port on loopback, or the next
    /// free one: two servers bound at once get two ports in that range.
    #[tokio::test]
    async fn default_nbd_address_takes_the_next_free_port() {
        let a = bind_nbd(None, false).await.unwrap();
        let b = bind_nbd(None, false).await.unwrap();
        let port = |s: &NbdServer| match s.listen() {
            NbdListen::Tcp(a) => {
                assert!(a.ip().is_loopback());
                a.port()
            }
            other => panic!("{other}"),
        };
        let range = NBD_PORT..NBD_PORT + NBD_PORT_TRIES;
        assert!(range.contains(&port(&a)) && range.contains(&port(&b)));
        assert_ne!(port(&a), port(&b));
        // An explicit address is used as given, or refused with advice.
        let taken = a.listen().to_string();
        let e = bind_nbd(Some(&taken), false).await.unwrap_err().to_string();
        assert!(e.contains("--nbd"), "{e}");
        let e = bind_nbd(Some("192.0.2.1:10809"), false).await.unwrap_err();
        assert!(e.to_string().contains("192.0.2.1"), "{e}");
        a.shutdown().await;
        b.shutdown().await;
    }
}
