//! `iscsi target ...` verbs.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum TargetCmd {
    /// Serve targets in the foreground until SIGINT/SIGTERM.
    Serve,
}

pub fn run(cmd: TargetCmd) -> ExitCode {
    match cmd {
        TargetCmd::Serve => {
            eprintln!("iscsi target serve: not implemented yet");
            ExitCode::from(1)
        }
    }
}
