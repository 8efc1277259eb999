//! `iscsi daemon`: run the initiator daemon (the iscsid of this stack) in
//! the foreground until SIGINT/SIGTERM. The logic lives in
//! `initiator::daemon`; this file parses flags, prints the ready line and
//! waits for a signal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use initiator::daemon::{paths, server, Daemon};
use initiator::initiator_name;

const DAEMON_HELP: &str = "\
Prints `listening on SOCKET` once the API is up, then logs in to every node
whose startup setting is automatic (`iscsi node update --startup automatic`).
On SIGINT/SIGTERM it flushes and logs out of every session, then exits.

State directory: node records (nodes/*.json, mode 0600) and the socket
(iscsid.sock, mode 0600). Default: $ISCSI_STATE_DIR if set, else /var/lib/iscsi-rs as root, else
$XDG_STATE_HOME/iscsi-rs, else ~/.local/state/iscsi-rs.

Examples:
  iscsi daemon &
  iscsi daemon --state-dir /tmp/iscsi-state --log debug";

/// Where the daemon's state and socket are; every verb that talks to the
/// daemon or edits node records takes these.
#[derive(Args, Debug, Clone, Default)]
pub struct StateOpts {
    /// The daemon's socket (default: STATE-DIR/iscsid.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// State directory: node records and the socket (default: /var/lib/iscsi-rs
    /// as root, else $XDG_STATE_HOME/iscsi-rs or ~/.local/state/iscsi-rs).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl StateOpts {
    pub fn state_dir(&self) -> PathBuf {
        paths::state_dir(self.state_dir.as_deref())
    }

    pub fn socket(&self) -> PathBuf {
        paths::socket(self.socket.as_deref(), &self.state_dir())
    }
}

#[derive(Args, Debug)]
#[command(after_help = DAEMON_HELP)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub state: StateOpts,
    /// Log filter (tracing EnvFilter syntax), logs go to stderr.
    #[arg(long, default_value = "info")]
    pub log: String,
    /// Do not log in to automatic nodes at start.
    #[arg(long)]
    pub no_auto_login: bool,
}

pub fn run(a: DaemonArgs) -> ExitCode {
    crate::target_cmd::init_logging(&a.log);
    let rt = match crate::initiator_cmd::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let code = rt.block_on(serve(a));
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn serve(a: DaemonArgs) -> ExitCode {
    let dir = a.state.state_dir();
    let socket = a.state.socket();
    if let Err(e) = paths::prepare_state_dir(&dir) {
        eprintln!("iscsi daemon: state directory: {e}");
        return ExitCode::from(1);
    }
    let daemon = Daemon::new(&dir, initiator_name::resolve(None));
    let sock = match server::listen(daemon.clone(), &socket, server::Limits::default()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iscsi daemon: {e}");
            return ExitCode::from(1);
        }
    };
    print_ready(&socket, &dir);
    let auto = (!a.no_auto_login).then(|| {
        let d = daemon.clone();
        tokio::spawn(async move { d.login_automatic().await })
    });
    crate::target_cmd::wait_for_signal().await;
    tracing::info!("shutting down: logging out of every session");
    if let Some(t) = auto {
        t.abort();
    }
    sock.shutdown().await;
    for o in daemon.logout_all().await {
        if !o.warning.is_empty() {
            tracing::warn!(target_name = %o.target, warning = %o.warning, "unclean logout");
        }
    }
    ExitCode::SUCCESS
}

fn print_ready(socket: &Path, dir: &Path) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {}", socket.display());
    let _ = writeln!(out, "state directory {}", dir.display());
    let _ = out.flush();
}

/// The verbs of the daemon side: the daemon itself, node records,
/// sessions.
#[derive(clap::Subcommand, Debug)]
pub enum DaemonVerbs {
    /// Run the initiator daemon (iscsid): owns sessions and their NBD exports.
    Daemon(DaemonArgs),
    /// Node records: list, show, update, delete (like `iscsiadm -m node`).
    #[command(subcommand, after_help = crate::node_cmd::NODE_HELP)]
    Node(crate::node_cmd::NodeCmd),
    /// Sessions of the daemon: state, connections, LUNs, exports, counters.
    Session(crate::session_cmd::SessionArgs),
    /// Flush, end NBD clients, and log out (one target or all).
    Logout(crate::session_cmd::LogoutArgs),
}

pub fn run_verb(v: DaemonVerbs) -> ExitCode {
    match v {
        DaemonVerbs::Daemon(a) => run(a),
        DaemonVerbs::Node(c) => crate::node_cmd::run(c),
        DaemonVerbs::Session(a) => crate::session_cmd::session(a),
        DaemonVerbs::Logout(a) => crate::session_cmd::logout(a),
    }
}
