//! The daemon's socket: [`api`](super::api) requests in, responses out,
//! over [`ctlsock`] (mode 0600, owner and root only, requests bounded to
//! 1 MiB, read timeout, client cap; garbage gets an error response and the
//! connection stays usable).

use std::path::Path;
use std::sync::Arc;

use super::api::{Request, Response};
use super::nodes::NodeUpdate;
use super::Daemon;

pub use ctlsock::server::{ControlSocket, Limits, SocketError};

impl ctlsock::json::JsonService for Daemon {
    type Request = Request;

    async fn call(&self, req: Request, progress: ctlsock::Progress) -> Response {
        execute(self, req, progress).await
    }
}

/// Serve `daemon` on the socket at `path`.
pub async fn listen(
    daemon: Arc<Daemon>,
    path: &Path,
    limits: Limits,
) -> Result<ControlSocket, SocketError> {
    let s = ctlsock::listen(Arc::new(ctlsock::json::Json(daemon)), path, limits).await?;
    tracing::info!(socket = %path.display(), "daemon API listening");
    Ok(s)
}

/// Execute one request; a login reports its steps as progress lines.
async fn execute(d: &Daemon, req: Request, progress: ctlsock::Progress) -> Response {
    let r = match req {
        Request::Ping {} => return Response::ok(d.ping()),
        Request::Login {
            target,
            portal,
            nbd,
            connections,
            allow_remote_nbd,
            tag_writes,
            tag_reads,
        } => d
            .login(
                &target,
                portal.as_deref(),
                nbd.as_deref(),
                &NodeUpdate {
                    connections,
                    // 0 untags for this session.
                    tag_writes: tag_writes.map(|t| Some(t).filter(|&t| t != 0)),
                    tag_reads: tag_reads.map(|t| Some(t).filter(|&t| t != 0)),
                    ..NodeUpdate::default()
                },
                allow_remote_nbd,
                &|m| ctlsock::json::progress(&progress, m),
            )
            .await
            .map(Response::ok),
        Request::Logout { target, portal } => {
            d.logout(&target, portal.as_deref()).await.map(Response::ok)
        }
        Request::LogoutAll {} => Ok(Response::ok(d.logout_all().await)),
        Request::Sessions {} => Ok(Response::ok(d.sessions().await)),
    };
    r.unwrap_or_else(|(kind, msg)| Response::err(kind, msg))
}
