//! Initiator verbs: `iscsi discover`, `iscsi scsi ...`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum InitiatorCmd {
    /// Discover targets on a portal (SendTargets).
    Discover(DiscoverArgs),
}

#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// Portal to ask, HOST[:PORT] (default port 3260).
    #[arg(long)]
    pub portal: String,
}

pub fn run(cmd: InitiatorCmd) -> ExitCode {
    match cmd {
        InitiatorCmd::Discover(_) => {
            eprintln!("iscsi discover: not implemented yet");
            ExitCode::from(1)
        }
    }
}
