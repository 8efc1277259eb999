//! Where the initiator's state lives (`--state-dir`, `--socket`), and the
//! verbs of the daemon side (node records for now).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use initiator::daemon::paths;

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
}

/// The verbs of the daemon side.
#[derive(clap::Subcommand, Debug)]
pub enum DaemonVerbs {
    /// Node records: list, show, update, delete (like `iscsiadm -m node`).
    #[command(subcommand, after_help = crate::node_cmd::NODE_HELP)]
    Node(crate::node_cmd::NodeCmd),
}

pub fn run_verb(v: DaemonVerbs) -> ExitCode {
    match v {
        DaemonVerbs::Node(c) => crate::node_cmd::run(c),
    }
}
