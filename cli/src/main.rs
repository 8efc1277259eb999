//! `iscsi`: one binary for both ends of the stack.
//!
//! Exit codes scripts can trust: 0 success, 1 operation refused or failed
//! (the message says why), 2 usage error, 3 cannot reach the peer or daemon.
//! Each side's verbs live in their own module; this file only dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ctl_cmd;
mod daemon_cmd;
mod demo_cmd;
mod initiator_cmd;
mod login_cmd;
mod node_cmd;
mod scsi_print;
mod session_cmd;
mod target_admin;
mod target_cmd;

/// iSCSI target and userspace initiator.
#[derive(Parser, Debug)]
#[command(name = "iscsi", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Try the whole stack on this machine, no root, no arguments: a target
    /// with a memory disk, our initiator logged in with CHAP and two
    /// connections, the disk exported over NBD and checked, then served
    /// until Ctrl-C.
    Demo(demo_cmd::DemoArgs),
    /// Run and administer the iSCSI target.
    #[command(subcommand)]
    Target(target_cmd::TargetCmd),
    #[command(flatten)]
    Initiator(initiator_cmd::InitiatorCmd),
    /// Log in to a target and export each disk LUN over NBD (`--foreground`:
    /// in this process, until SIGINT/SIGTERM).
    Login(login_cmd::LoginArgs),
    #[command(flatten)]
    Daemon(daemon_cmd::DaemonVerbs),
    /// The control channel: a LUN's channel state (info) and switches
    /// (list, get, set: io_mode, trace, tag policies) through the vendor
    /// SCSI command.
    #[command(subcommand)]
    Ctl(ctl_cmd::CtlCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo_cmd::run(args),
        Command::Target(cmd) => target_cmd::run(cmd),
        Command::Initiator(cmd) => initiator_cmd::run(cmd),
        Command::Login(args) => login_cmd::run(args),
        Command::Daemon(cmd) => daemon_cmd::run_verb(cmd),
        Command::Ctl(cmd) => ctl_cmd::run(cmd),
    }
}
