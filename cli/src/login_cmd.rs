//! `iscsi login`: log in to a target and expose each disk LUN as an NBD
//! export (`lun<N>`).
//!
//! `--foreground` runs the session and its NBD server in this process,
//! without the daemon (for containers and scripts), until SIGINT or
//! SIGTERM; then it ends the NBD clients (after their in-flight requests),
//! flushes every LUN (SYNCHRONIZE CACHE) and logs out. Without
//! `--foreground` the login is handed to the initiator daemon
//! ([`run_via_daemon`]).
//!
//! Exit codes: 0 ok (clean logout), 1 refused/failed, 2 usage, 3 unreachable.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use initiator::daemon::api::SessionInfo;
use initiator::daemon::ExportedSession;
use initiator::session::SessionConfig;
use initiator::{Error, IoTags, NbdListen, NbdServer};
use serde_json::json;

use crate::initiator_cmd::{exit_code, login_config, one_line, AuthOpts};

const LOGIN_EXAMPLES: &str = "\
Examples:
  iscsi login --foreground --portal 192.0.2.10 --target iqn.2024-01.com.example:disk1
  iscsi login --foreground --portal 192.0.2.10 --target IQN --nbd unix:/run/iscsi-nbd.sock
  iscsi login --foreground --portal 192.0.2.10 --target IQN --chap alice:secret12chars --connections 2

Then attach an export, e.g. with the kernel's NBD module:
  nbd-client 127.0.0.1 10809 /dev/nbd0 -N lun0
or, without it, through FUSE and a loop device:
  mkdir -p /tmp/nbd && nbdfuse /tmp/nbd/lun0 nbd://127.0.0.1:10809/lun0 &
  losetup -f --show /tmp/nbd/lun0

NBD has no authentication: the server listens on loopback unless
--allow-remote-nbd is given.

Exit codes: 0 logged out cleanly, 1 refused or failed, 2 usage, 3 unreachable.";

/// `iscsi login` arguments.
#[derive(Args, Debug)]
#[command(after_help = LOGIN_EXAMPLES)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["target", "all"])))]
pub struct LoginArgs {
    /// Target IQN. Through the daemon its node record (from `iscsi
    /// discover`) gives the settings.
    #[arg(long)]
    pub target: Option<String>,
    /// Through the daemon: log in to every node whose startup setting is
    /// automatic.
    #[arg(long, conflicts_with = "foreground")]
    pub all: bool,
    /// Portal, HOST[:PORT] (default port 3260). Required with --foreground;
    /// through the daemon, picks one of the target's node records (or
    /// records one with default settings).
    #[arg(long)]
    pub portal: Option<String>,
    /// Run the session and its NBD exports in this process, without the
    /// daemon, until SIGINT/SIGTERM; then flush, end NBD clients, log out.
    #[arg(long)]
    pub foreground: bool,
    /// Where the NBD server listens: HOST:PORT, [V6]:PORT or unix:PATH
    /// [default: the node's setting, else 127.0.0.1:10809 (the daemon takes
    /// the next free port when it is in use)].
    #[arg(long, value_name = "ADDR")]
    pub nbd: Option<NbdListen>,
    /// Allow a non-loopback NBD address (NBD has no authentication: anyone
    /// who reaches it can read and write the disks).
    #[arg(long)]
    pub allow_remote_nbd: bool,
    /// Connections in the session (MC/S), if the target allows
    /// [default: the node's setting, else 1].
    #[arg(long)]
    pub connections: Option<u16>,
    /// Seconds to keep recovering a lost session before failing I/O with
    /// EIO (open-iscsi's replacement_timeout) [default: 120]. With the
    /// daemon: `iscsi node update --replacement-timeout`.
    #[arg(long, value_name = "SECS")]
    pub recovery_timeout: Option<u64>,
    /// Request CRC32C header and data digests.
    #[arg(long)]
    pub digests: bool,
    /// Control channel: put tag N (1-7) in the reserved bits of every WRITE
    /// of the exports (READ/WRITE(10) byte 6 bits 7-5: 6 gives 0xC0); the
    /// target's LUN needs the channel on. 0: untagged [default: the node's
    /// setting, else untagged]. `lunN@tagT` exports tag one mount only.
    #[arg(long, value_name = "N")]
    pub tag_writes: Option<u8>,
    /// Control channel: tag N (1-7) on every READ, as --tag-writes.
    #[arg(long, value_name = "N")]
    pub tag_reads: Option<u8>,
    /// With --foreground: also expose each LUN as a ublk block device
    /// (/dev/ublkbN) where the kernel has ublk (/dev/ublk-control) and this
    /// build has the `ublk` feature; otherwise say why and serve NBD only.
    #[arg(long, requires = "foreground")]
    pub ublk: bool,
    #[command(flatten)]
    pub auth: AuthOpts,
    /// Bound, in seconds, on connecting, each login step and each command.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Log filter for stderr (error, warn, info, debug, trace or a
    /// tracing directive).
    #[arg(long, default_value = "info")]
    pub log: String,
    /// Print the exports as one JSON line on stdout once they are ready.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: crate::daemon_cmd::StateOpts,
}

pub fn run(args: LoginArgs) -> ExitCode {
    if !args.foreground {
        return run_via_daemon(args);
    }
    crate::target_cmd::init_logging(&args.log);
    let rt = match crate::initiator_cmd::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let res = rt.block_on(foreground(args));
    rt.shutdown_timeout(Duration::from_millis(200));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iscsi login: {}", one_line(&e.to_string()));
            exit_code(&e)
        }
    }
}

/// `iscsi login` without `--foreground`: the daemon owns the session and
/// the node record holds the settings; flags that belong to the record are
/// refused with the command that sets them.
fn run_via_daemon(a: LoginArgs) -> ExitCode {
    let node_only = [
        (
            a.auth.chap.is_some() || a.auth.mutual_chap.is_some(),
            "--chap U:S",
        ),
        (
            !a.auth.chap_alg.is_empty(),
            "(CHAP algorithms: only with --foreground)",
        ),
        (
            a.auth.initiator_name.is_some(),
            "(initiator name: only with --foreground)",
        ),
        (a.digests, "--digests on"),
        (a.recovery_timeout.is_some(), "--replacement-timeout SECS"),
    ];
    if let Some((_, how)) = node_only.iter().find(|(given, _)| *given) {
        eprintln!(
            "iscsi login: through the daemon, login settings live in the node record: \
             iscsi node update --target IQN {how}; or run this session with --foreground"
        );
        return ExitCode::from(2);
    }
    crate::session_cmd::login(crate::session_cmd::DaemonLogin {
        target: if a.all { None } else { a.target },
        portal: a.portal,
        nbd: a.nbd.map(|l| l.to_string()),
        connections: a.connections,
        allow_remote_nbd: a.allow_remote_nbd,
        tag_writes: a.tag_writes,
        tag_reads: a.tag_reads,
        state: a.state,
        json: a.json,
    })
}

fn session_config(a: &LoginArgs, portal: &str, target: &str) -> Result<SessionConfig, Error> {
    let mut cfg = login_config(
        portal,
        target,
        &a.auth,
        a.connections.unwrap_or(1),
        a.digests,
        a.timeout,
    )?;
    cfg.recovery_timeout = Duration::from_secs(a.recovery_timeout.unwrap_or(120));
    cfg.io_tags = IoTags::new(a.tag_reads, a.tag_writes)?;
    // A command may wait out a whole recovery before it completes.
    cfg.command_timeout = Duration::from_secs(60).max(cfg.login_timeout);
    Ok(cfg)
}

async fn foreground(a: LoginArgs) -> Result<(), Error> {
    let (Some(portal), Some(target)) = (a.portal.clone(), a.target.clone()) else {
        return Err(Error::Usage(
            "--foreground needs --portal HOST[:PORT] and --target IQN (the daemon's node \
             records are not used)"
                .into(),
        ));
    };
    let cfg = session_config(&a, &portal, &target)?;
    // Bind first: a bad or busy NBD address is reported before logging in.
    let listen = a.nbd.clone().unwrap_or_default();
    let server = NbdServer::bind(&listen, a.allow_remote_nbd).await?;
    if !server.listen().is_loopback() {
        eprintln!(
            "iscsi login: WARNING: NBD listens on {} without authentication; anyone who \
             reaches it can read and write these disks",
            server.listen()
        );
    }
    let s = ExportedSession::start(cfg, server, &|m| eprintln!("iscsi login: {m}")).await?;
    let ublk = if a.ublk {
        ublk::start(&s.devices()).await
    } else {
        Vec::new()
    };
    print_exports(&a, &s.info());
    crate::target_cmd::wait_for_signal().await;
    eprintln!("iscsi login: stopping: ending NBD clients, flushing, logging out");
    ublk::stop(ublk).await;
    let out = s.logout().await;
    if out.warning.is_empty() {
        Ok(())
    } else {
        Err(Error::Timeout(initiator::TimedOut::Logout(out.warning)))
    }
}

fn print_exports(a: &LoginArgs, info: &SessionInfo) {
    let listen: Option<NbdListen> = info.nbd.as_deref().and_then(|l| l.parse().ok());
    let exported: Vec<_> = info
        .luns
        .iter()
        .filter_map(|l| l.export.as_ref().map(|e| (l, e)))
        .collect();
    if a.json {
        let exports: Vec<_> = exported
            .iter()
            .map(|(l, e)| {
                json!({
                    "name": e.name, "uri": e.uri, "lun": l.lun,
                    "size": l.size, "block_size": l.block_size, "read_only": e.read_only,
                    "vendor": l.vendor, "product": l.product,
                })
            })
            .collect();
        let v = json!({"target": info.target, "portal": info.portal,
            "nbd": info.nbd, "io_tags": info.io_tags, "exports": exports});
        println!("{v}");
    } else {
        println!("logged in to {} at {}", info.target, info.portal);
        if !info.io_tags.is_none() {
            println!("control-channel tags: {}", info.io_tags);
        }
        for (l, e) in &exported {
            let mode = if e.read_only {
                "read-only"
            } else {
                "read-write"
            };
            println!(
                "{}: {} bytes, {}-byte blocks, {mode}: {}",
                e.name, l.size, l.block_size, e.uri
            );
            if let Some(listen) = &listen {
                for c in attach_commands(listen, &e.name, &e.uri) {
                    println!("  {c}");
                }
            }
        }
        if let Some((_, e)) = exported.first() {
            println!(
                "tagged views: {n}@tag1 .. {n}@tag7 export the same LUN with every read and \
                 write tagged (control channel); {n}@tag0 untagged",
                n = e.name
            );
        }
    }
    println!(
        "ready: {} NBD export(s) on {}; Ctrl-C or SIGTERM flushes, ends NBD clients and logs out",
        exported.len(),
        info.nbd.as_deref().unwrap_or("-")
    );
}

/// How to attach an export: the kernel NBD client, FUSE, qemu.
pub(crate) fn attach_commands(listen: &NbdListen, name: &str, uri: &str) -> Vec<String> {
    let kernel = match listen {
        NbdListen::Tcp(a) => format!("nbd-client {} {} /dev/nbd0 -N {name}", a.ip(), a.port()),
        NbdListen::Unix(p) => format!("nbd-client -unix {} /dev/nbd0 -N {name}", p.display()),
    };
    vec![
        kernel,
        format!("nbdfuse /tmp/nbd/{name} '{uri}'   (mkdir -p /tmp/nbd; then losetup -f --show /tmp/nbd/{name})"),
        format!("qemu-img info '{uri}'"),
    ]
}

/// `--ublk`: one ublk device per exported LUN, each served by its own thread.
#[cfg(all(feature = "ublk", target_os = "linux"))]
mod ublk {
    use std::time::Duration;

    use initiator::{ublk, ScsiDevice};

    /// Start the devices; their ids, to stop them. Waits without blocking
    /// the runtime: starting a device makes the kernel read it (partition
    /// scan), and those reads are served on this runtime.
    pub(super) async fn start(devices: &[(String, ScsiDevice)]) -> Vec<i32> {
        if !ublk::available() {
            eprintln!(
                "iscsi login: no {} (load the ublk_drv kernel module); serving NBD only",
                ublk::CONTROL
            );
            return Vec::new();
        }
        let mut ids = Vec::new();
        for (name, dev) in devices {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let (dev, rt) = (dev.clone(), tokio::runtime::Handle::current());
            std::thread::spawn(move || {
                let tx2 = tx.clone();
                if let Err(e) = ublk::serve(dev, false, rt, move |id| {
                    let _ = tx2.send(Ok(id));
                }) {
                    let _ = tx.send(Err(e));
                }
            });
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(Ok(id))) => {
                    println!("{name}: /dev/ublkb{id}");
                    ids.push(id);
                }
                Ok(Some(Err(e))) => eprintln!("iscsi login: ublk for {name}: {e}; NBD only"),
                Ok(None) | Err(_) => {
                    eprintln!("iscsi login: ublk for {name} did not start; NBD only")
                }
            }
        }
        ids
    }

    /// Stop the devices, off the runtime: the kernel completes their
    /// outstanding I/O, served on this runtime, before it lets them go.
    pub(super) async fn stop(ids: Vec<i32>) {
        for id in ids {
            match tokio::task::spawn_blocking(move || ublk::stop(id)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(id, error = %e, "ublk device did not stop"),
                Err(e) => tracing::warn!(id, error = %e, "ublk device did not stop"),
            }
        }
    }
}

/// `--ublk` in a build without the feature: say so, serve NBD only.
#[cfg(not(all(feature = "ublk", target_os = "linux")))]
mod ublk {
    use initiator::ScsiDevice;

    pub(super) async fn start(_devices: &[(String, ScsiDevice)]) -> Vec<i32> {
        eprintln!(
            "iscsi login: this build has no ublk support (build with `--features ublk` on \
             Linux); serving NBD only"
        );
        Vec::new()
    }

    pub(super) async fn stop(_ids: Vec<i32>) {}
}
