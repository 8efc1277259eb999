//! The running target: portals, the session table, targets and their
//! device servers; start-up and graceful shutdown.
//!
//! Shutdown follows the h2/mini-redis pattern: a cancellation token is
//! broadcast, every connection asks its initiator to log out (RFC 7143
//! §11.9.1 Async Message, AsyncEvent 1 "target requests Logout"), waits a
//! short while for the logout, then closes; the server waits for all
//! connection tasks before returning.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use proto::login::params::SessionParams;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{AuthConfig, ConfigError, ServerConfig, TargetConfig};
use crate::device::{self, Device, Nexus};
use crate::session::{ConnNotice, HasCore, SessionCore, SessionKind, SessionTable, TaskPhase};
use crate::sync::{read_lock, write_lock};

/// Errors starting the server.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("LUN {lun} of {target}: {reason}")]
    Lun {
        target: String,
        lun: u64,
        reason: String,
    },
}

/// One target at run time: its configuration and its SCSI device server.
pub struct TargetRuntime {
    pub name: String,
    pub config: RwLock<TargetConfig>,
    pub device: Device,
}

impl std::fmt::Debug for TargetRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetRuntime")
            .field("name", &self.name)
            .finish()
    }
}

impl TargetRuntime {
    /// A snapshot of the configuration.
    pub fn config(&self) -> TargetConfig {
        read_lock(&self.config).clone()
    }
}

/// A logged-in session.
#[derive(Debug)]
pub struct Session {
    pub core: SessionCore,
    /// Negotiated session-wide parameters.
    pub params: SessionParams,
    /// The target of a normal session.
    pub target: Option<Arc<TargetRuntime>>,
    /// The I_T nexus of a normal session.
    pub nexus: Option<Nexus>,
    nexus_released: AtomicBool,
}

impl HasCore for Session {
    fn core(&self) -> &SessionCore {
        &self.core
    }
}

impl Session {
    pub fn new(
        core: SessionCore,
        params: SessionParams,
        target: Option<Arc<TargetRuntime>>,
        nexus: Option<Nexus>,
    ) -> Self {
        Session {
            core,
            params,
            target,
            nexus,
            nexus_released: AtomicBool::new(false),
        }
    }

    pub fn is_discovery(&self) -> bool {
        self.core.kind == SessionKind::Discovery
    }

    /// Tell the device server the I_T nexus is gone (once).
    pub async fn release_nexus(&self) {
        if self.nexus_released.swap(true, Ordering::AcqRel) {
            return;
        }
        if let (Some(t), Some(n)) = (&self.target, &self.nexus) {
            device::nexus_gone(&t.device, n).await;
        }
    }
}

/// State shared by every connection of a server.
pub struct ServerShared {
    pub targets: RwLock<Vec<Arc<TargetRuntime>>>,
    pub sessions: SessionTable<Session>,
    pub discovery_auth: RwLock<AuthConfig>,
    /// Admission caps and authentication backoff settings.
    pub limits: crate::limits::ServerLimits,
    /// Connections now in the login phase.
    pub(crate) logins_in_progress: AtomicUsize,
    /// Failed authentications per source address.
    pub(crate) auth_backoff: std::sync::Mutex<crate::limits::AuthBackoff>,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
    /// Addresses actually bound (port 0 resolved).
    pub local_addrs: Vec<SocketAddr>,
    next_conn_id: AtomicU64,
    live_conns: AtomicUsize,
    conns_gone: Notify,
}

impl std::fmt::Debug for ServerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerShared")
            .field("local_addrs", &self.local_addrs)
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl ServerShared {
    /// The target named `name` (case-insensitive).
    pub fn target(&self, name: &str) -> Option<Arc<TargetRuntime>> {
        read_lock(&self.targets)
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
            .cloned()
    }

    /// All targets.
    pub fn all_targets(&self) -> Vec<Arc<TargetRuntime>> {
        read_lock(&self.targets).clone()
    }

    pub(crate) fn conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sessions of a target (by name).
    pub fn sessions_of(&self, target: &str) -> Vec<Arc<Session>> {
        self.sessions
            .all()
            .into_iter()
            .filter(|s| s.core.target_name.eq_ignore_ascii_case(target) && !s.is_discovery())
            .collect()
    }

    /// End a session: remove it from the table, close its connections,
    /// abort its tasks and release the nexus. Idempotent.
    pub async fn end_session(&self, s: &Arc<Session>) {
        self.sessions.remove(s);
        s.core.close();
        for t in s.core.tasks_where(|_| true) {
            if t.abort() == TaskPhase::Collecting {
                s.core.finish_task(&t);
            }
        }
        s.release_nexus().await;
    }
}

/// A running server.
pub struct Server {
    shared: Arc<ServerShared>,
    accept_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Build the device servers, bind every portal and start accepting.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        let mut targets = Vec::new();
        for t in &config.targets {
            let device = device::build(t).map_err(|(lun, reason)| ServerError::Lun {
                target: t.name.clone(),
                lun,
                reason,
            })?;
            targets.push(Arc::new(TargetRuntime {
                name: t.name.clone(),
                config: RwLock::new(t.clone()),
                device,
            }));
        }
        let mut listeners = Vec::new();
        for addr in config.listen_addrs() {
            let l = crate::portal::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            let bound = l.local_addr().unwrap_or(addr);
            listeners.push((addr, bound, l));
        }
        let shared = Arc::new(ServerShared {
            targets: RwLock::new(targets),
            sessions: SessionTable::new(),
            discovery_auth: RwLock::new(config.discovery_auth.clone()),
            limits: config.limits.clone(),
            logins_in_progress: AtomicUsize::new(0),
            auth_backoff: std::sync::Mutex::new(crate::limits::AuthBackoff::default()),
            shutdown: CancellationToken::new(),
            local_addrs: listeners.iter().map(|(_, b, _)| *b).collect(),
            next_conn_id: AtomicU64::new(1),
            live_conns: AtomicUsize::new(0),
            conns_gone: Notify::new(),
        });
        // Port 0 portals: record the real port in the target's portal groups
        // so SendTargets reports an address that works.
        for (asked, bound, _) in &listeners {
            if asked.port() == 0 {
                for t in shared.all_targets() {
                    let mut cfg = write_lock(&t.config);
                    for g in &mut cfg.portal_groups {
                        for p in &mut g.portals {
                            if p == asked {
                                *p = *bound;
                            }
                        }
                    }
                }
            }
        }
        let mut accept_tasks = Vec::new();
        for (_, bound, l) in listeners {
            accept_tasks.push(tokio::spawn(accept_loop(shared.clone(), l, bound)));
        }
        tracing::info!(portals = ?shared.local_addrs, "target started");
        Ok(Server {
            shared,
            accept_tasks,
        })
    }

    /// The addresses the portals are bound to.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.shared.local_addrs.clone()
    }

    /// Shared state (sessions, targets) for administration.
    pub fn shared(&self) -> &Arc<ServerShared> {
        &self.shared
    }

    /// Ask every initiator to log out, wait up to a few seconds, close the
    /// rest and stop listening.
    pub async fn shutdown(self) {
        self.shutdown_with_grace(Duration::from_secs(3)).await
    }

    /// [`Server::shutdown`] with an explicit grace period for logouts.
    pub async fn shutdown_with_grace(self, grace: Duration) {
        for t in &self.accept_tasks {
            t.abort();
        }
        let secs = grace.as_secs().clamp(1, u64::from(u16::MAX)) as u16;
        for s in self.shared.sessions.all() {
            for c in s.core.connections() {
                let _ = c.notify.send(ConnNotice::RequestLogout { seconds: secs });
            }
        }
        let shared = self.shared.clone();
        let waited = tokio::time::timeout(grace, wait_no_conns(&shared)).await;
        if waited.is_err() {
            tracing::info!("grace period over, closing remaining connections");
        }
        self.shared.shutdown.cancel();
        for s in self.shared.sessions.all() {
            self.shared.end_session(&s).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), wait_no_conns(&shared)).await;
    }
}

/// Serve a listener bound at run time (admin `add-portal`): connections are
/// counted for graceful shutdown like those of the start-up portals.
pub fn spawn_portal(
    shared: &Arc<ServerShared>,
    listener: TcpListener,
    portal: SocketAddr,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(accept_loop(shared.clone(), listener, portal))
}

async fn wait_no_conns(shared: &ServerShared) {
    loop {
        let notified = shared.conns_gone.notified();
        if shared.live_conns.load(Ordering::Acquire) == 0 {
            return;
        }
        notified.await;
    }
}

async fn accept_loop(shared: Arc<ServerShared>, listener: TcpListener, portal: SocketAddr) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(%portal, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shared.shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(portal);
        let sh = shared.clone();
        sh.live_conns.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            crate::conn::serve(sh.clone(), stream, local, peer, portal).await;
            if sh.live_conns.fetch_sub(1, Ordering::AcqRel) == 1 {
                sh.conns_gone.notify_waiters();
            }
        });
    }
}
