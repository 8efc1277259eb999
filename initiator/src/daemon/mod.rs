//! The initiator daemon (`iscsi daemon`, the iscsid of this stack): it owns
//! sessions and their NBD exports and serves a JSON API ([`api`]) on a
//! private unix socket ([`server`], through [`ctlsock`]); the CLI talks to
//! it with [`client`]. Node records ([`nodes`]) are files that discovery
//! and `iscsi node` edit directly and that the daemon reads at login.
//!
//! - [`paths`]: default state directory and socket.
//! - [`nodes`]: the node database.
//! - [`api`]: requests and responses, shared by daemon and client.
//! - [`ExportedSession`]: a session and its NBD exports: login, LUN export,
//!   state tracking, logout (also used by `iscsi login --foreground`).
//! - [`server`]: the socket server and request dispatch.
//! - [`client`]: the blocking client.
//!
//! At start the daemon logs in to every `startup: automatic` node
//! ([`Daemon::login_automatic`]); on SIGTERM it logs out of everything.

pub mod api;
pub mod client;
pub mod nodes;
pub mod paths;
pub mod server;
mod sessions;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use api::{ErrorKind, LoggedOut, PingInfo, SessionInfo, SessionState};
use nodes::{Node, NodeDb, NodeUpdate, Startup};

use crate::sync::lock;
pub use sessions::ExportedSession;

pub use sessions::NBD_PORT;

/// Attempts of an automatic login whose target is unreachable (open-iscsi's
/// `node.session.initial_login_retry_max` default is 8 too).
pub const AUTO_LOGIN_ATTEMPTS: u32 = 8;

/// A failed request: its class (exit code) and a message for humans.
pub type Fail = (ErrorKind, String);

fn fail(e: crate::Error) -> Fail {
    (api::error_kind(&e), e.to_string())
}

/// The daemon's state.
pub struct Daemon {
    state_dir: PathBuf,
    nodes: NodeDb,
    initiator_name: String,
    sessions: tokio::sync::Mutex<Vec<ExportedSession>>,
    /// Nodes being logged in (lower-case target, portal).
    busy: Mutex<HashSet<(String, String)>>,
}

impl Daemon {
    pub fn new(state_dir: &Path, initiator_name: String) -> Arc<Daemon> {
        Arc::new(Daemon {
            state_dir: state_dir.to_path_buf(),
            nodes: NodeDb::new(state_dir),
            initiator_name,
            sessions: tokio::sync::Mutex::new(Vec::new()),
            busy: Mutex::new(HashSet::new()),
        })
    }

    pub fn nodes(&self) -> &NodeDb {
        &self.nodes
    }

    pub fn ping(&self) -> PingInfo {
        PingInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            state_dir: self.state_dir.display().to_string(),
            initiator_name: self.initiator_name.clone(),
        }
    }

    /// The node to log in to: its record, or (with a portal and no record)
    /// a new record with default settings.
    fn resolve_node(&self, target: &str, portal: Option<&str>) -> Result<Node, Fail> {
        match self.nodes.get(target, portal) {
            Ok(n) => Ok(n),
            Err(e) => match portal {
                Some(p) if self.nodes.find(target, Some(p)).map_err(fail)?.is_empty() => {
                    let p = crate::Portal::parse(p).map_err(fail)?;
                    let n = Node::new(target, &p);
                    self.nodes.save(&n).map_err(fail)?;
                    tracing::info!(target_name = %target, portal = %p, "node recorded");
                    Ok(n)
                }
                _ => Err(fail(e)),
            },
        }
    }

    /// Log in to a node and export its LUNs; returns once the session is up.
    /// `overrides` change the node's settings for this session only (the
    /// record is not saved).
    pub async fn login(
        &self,
        target: &str,
        portal: Option<&str>,
        nbd: Option<&str>,
        overrides: &NodeUpdate,
        allow_remote_nbd: bool,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<SessionInfo, Fail> {
        let mut node = self.resolve_node(target, portal)?;
        if !overrides.is_empty() {
            overrides.apply(&mut node);
            node.validate().map_err(fail)?;
        }
        let key = (node.target.to_ascii_lowercase(), node.portal.clone());
        let stale = {
            let mut list = self.sessions.lock().await;
            if let Some(i) = list
                .iter()
                .position(|s| s.is(&node.target, Some(&node.portal)))
            {
                let st = list[i].state();
                if st != SessionState::Failed {
                    return Err((
                        ErrorKind::Refused,
                        format!(
                            "already logged in to {} at {} ({st}); `iscsi logout --target {}` first",
                            node.target, node.portal, node.target
                        ),
                    ));
                }
                Some(list.remove(i))
            } else {
                None
            }
        };
        if let Some(s) = stale {
            tracing::info!(target_name = %node.target, "replacing the failed session");
            progress("replacing the failed session".into());
            s.logout().await;
        }
        if !lock(&self.busy).insert(key.clone()) {
            return Err((
                ErrorKind::Refused,
                format!(
                    "a login to {} at {} is already in progress",
                    node.target, node.portal
                ),
            ));
        }
        let r = sessions::login(&node, &self.initiator_name, nbd, allow_remote_nbd, progress).await;
        lock(&self.busy).remove(&key);
        let m = r.map_err(fail)?;
        let info = m.info();
        self.sessions.lock().await.push(m);
        Ok(info)
    }

    /// Log out of the sessions of `target` (at `portal`, or all portals).
    pub async fn logout(&self, target: &str, portal: Option<&str>) -> Result<Vec<LoggedOut>, Fail> {
        let gone: Vec<ExportedSession> = {
            let mut list = self.sessions.lock().await;
            let (gone, keep) = std::mem::take(&mut *list)
                .into_iter()
                .partition(|s| s.is(target, portal));
            *list = keep;
            gone
        };
        if gone.is_empty() {
            return Err((
                ErrorKind::NotFound,
                format!(
                    "no session with {target}{}; `iscsi session` lists them",
                    portal.map(|p| format!(" at {p}")).unwrap_or_default()
                ),
            ));
        }
        Ok(futures::future::join_all(gone.into_iter().map(ExportedSession::logout)).await)
    }

    /// Log out of every session.
    pub async fn logout_all(&self) -> Vec<LoggedOut> {
        let gone = std::mem::take(&mut *self.sessions.lock().await);
        futures::future::join_all(gone.into_iter().map(ExportedSession::logout)).await
    }

    /// Every session.
    pub async fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions
            .lock()
            .await
            .iter()
            .map(ExportedSession::info)
            .collect()
    }

    /// Log in to every `startup: automatic` node that has no session yet,
    /// all at once; a node whose target cannot be reached is retried with
    /// backoff, up to [`AUTO_LOGIN_ATTEMPTS`] attempts (like open-iscsi's
    /// `node.session.initial_login_retry_max`). Returns each node's outcome.
    pub async fn login_automatic(&self) -> Vec<(Node, Result<SessionInfo, Fail>)> {
        let nodes = match self.nodes.list() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the node database");
                return Vec::new();
            }
        };
        let auto = nodes
            .into_iter()
            .filter(|n| n.startup == Startup::Automatic);
        futures::future::join_all(auto.map(|n| async move {
            let r = self.login_with_retries(&n).await;
            if let Err(e) = &r {
                tracing::warn!(target_name = %n.target, portal = %n.portal,
                    error = %e.1, "automatic login failed");
            }
            (n, r)
        }))
        .await
    }

    async fn login_with_retries(&self, n: &Node) -> Result<SessionInfo, Fail> {
        let mut delay = std::time::Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            let r = self
                .login(
                    &n.target,
                    Some(&n.portal),
                    None,
                    &NodeUpdate::default(),
                    false,
                    &|_| {},
                )
                .await;
            match r {
                Err((ErrorKind::Unreachable, why)) if attempt < AUTO_LOGIN_ATTEMPTS => {
                    tracing::info!(target_name = %n.target, portal = %n.portal, attempt,
                        error = %why, "target unreachable; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                    attempt += 1;
                }
                r => return r,
            }
        }
    }
}
