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
use initiator::device::{self, LunInfo};
use initiator::session::{Session, SessionConfig, SessionEvent};
use initiator::{Error, NbdExport, NbdListen, NbdServer, ScsiDevice};
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
pub struct LoginArgs {
    /// Target IQN.
    #[arg(long)]
    pub target: String,
    /// Portal, HOST[:PORT] (default port 3260). Required with --foreground.
    #[arg(long)]
    pub portal: Option<String>,
    /// Run the session and its NBD exports in this process, without the
    /// daemon, until SIGINT/SIGTERM; then flush, end NBD clients, log out.
    #[arg(long)]
    pub foreground: bool,
    /// Where the NBD server listens: HOST:PORT, [V6]:PORT or unix:PATH
    /// [default: 127.0.0.1:10809].
    #[arg(long, value_name = "ADDR")]
    pub nbd: Option<NbdListen>,
    /// Allow a non-loopback NBD address (NBD has no authentication: anyone
    /// who reaches it can read and write the disks).
    #[arg(long)]
    pub allow_remote_nbd: bool,
    /// Connections in the session (MC/S), if the target allows.
    #[arg(long, default_value_t = 1)]
    pub connections: u16,
    /// Seconds to keep recovering a lost session before failing I/O with
    /// EIO (open-iscsi's replacement_timeout).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub recovery_timeout: u64,
    /// Request CRC32C header and data digests.
    #[arg(long)]
    pub digests: bool,
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

/// `iscsi login` without `--foreground`: the daemon owns the session.
// DAEMON: the `daemon` helper replaces this body with the call to the
// initiator daemon (it keeps `LoginArgs` and the `--foreground` path here).
fn run_via_daemon(_args: LoginArgs) -> ExitCode {
    eprintln!(
        "iscsi login: this build has no initiator daemon yet; run the session in this \
         process with `iscsi login --foreground --portal HOST --target IQN`"
    );
    ExitCode::from(2)
}

fn session_config(a: &LoginArgs, portal: &str) -> Result<SessionConfig, Error> {
    let mut cfg = login_config(
        portal,
        &a.target,
        &a.auth,
        a.connections,
        a.digests,
        a.timeout,
    )?;
    cfg.recovery_timeout = Duration::from_secs(a.recovery_timeout);
    // A command may wait out a whole recovery before it completes.
    cfg.command_timeout = Duration::from_secs(60).max(cfg.login_timeout);
    Ok(cfg)
}

async fn foreground(a: LoginArgs) -> Result<(), Error> {
    let Some(portal) = a.portal.clone() else {
        return Err(Error::Usage(
            "--foreground needs --portal HOST[:PORT] (the daemon's node records are not used)"
                .into(),
        ));
    };
    let cfg = session_config(&a, &portal)?;
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
    let session = Session::connect(cfg).await?;
    tracing::info!(target = %a.target, %portal, tsih = session.tsih(), "logged in");
    let luns = match export_luns(&session, &server, &a.target).await {
        Ok(l) => l,
        Err(e) => {
            server.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), session.logout()).await;
            return Err(e);
        }
    };
    print_exports(&a, &portal, &server, &luns);
    let events = tokio::spawn(log_events(session.clone()));
    wait_for_signal().await;
    eprintln!("iscsi login: stopping: ending NBD clients, flushing, logging out");
    server.shutdown().await;
    for (_, dev) in &luns {
        if let Err(e) = tokio::time::timeout(Duration::from_secs(30), dev.flush()).await {
            tracing::warn!(error = %e, "SYNCHRONIZE CACHE did not finish");
        }
    }
    events.abort();
    match tokio::time::timeout(Duration::from_secs(10), session.logout()).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout("logout did not finish within 10 s".into())),
    }
}

/// Open every disk LUN and add it as export `lun<N>`.
async fn export_luns(
    s: &Session,
    server: &NbdServer,
    target: &str,
) -> Result<Vec<(LunInfo, ScsiDevice)>, Error> {
    let mut out = Vec::new();
    for l in device::scan_luns(s).await? {
        // Direct-access block devices only (tgtd's LUN 0 is a controller).
        if l.device_type != 0 || l.capacity.is_none() {
            continue;
        }
        let dev = ScsiDevice::open_raw(s, l.lun).await?;
        let name = match l.number {
            Some(n) => format!("lun{n}"),
            None => format!("lun-{:016x}", l.lun),
        };
        let description = format!(
            "{target} LUN {} ({} {})",
            l.number
                .map(|n| n.to_string())
                .unwrap_or_else(|| format!("{:#x}", l.lun)),
            l.vendor,
            l.product
        );
        server.add_export(NbdExport {
            name,
            description,
            device: dev.clone(),
            read_only: false,
        })?;
        out.push((l, dev));
    }
    if out.is_empty() {
        return Err(Error::Unsupported(format!(
            "{target} has no disk LUN to export (see `iscsi scsi ... report-luns`)"
        )));
    }
    Ok(out)
}

fn print_exports(a: &LoginArgs, portal: &str, server: &NbdServer, luns: &[(LunInfo, ScsiDevice)]) {
    let stats = server.exports();
    if a.json {
        let exports: Vec<_> = stats
            .iter()
            .zip(luns)
            .map(|(s, (l, _))| {
                json!({
                    "name": s.name, "uri": server.uri(&s.name), "lun": l.number,
                    "size": s.size, "block_size": s.block_size, "read_only": s.read_only,
                    "vendor": l.vendor, "product": l.product,
                })
            })
            .collect();
        let v = json!({"target": a.target, "portal": portal,
            "nbd": server.listen().to_string(), "exports": exports});
        println!("{v}");
    } else {
        println!("logged in to {} at {portal}", a.target);
        for s in &stats {
            let uri = server.uri(&s.name);
            let mode = if s.read_only {
                "read-only"
            } else {
                "read-write"
            };
            println!(
                "{}: {} bytes, {}-byte blocks, {mode}: {uri}",
                s.name, s.size, s.block_size
            );
            for c in attach_commands(&server.listen(), &s.name, &uri) {
                println!("  {c}");
            }
        }
    }
    println!(
        "ready: {} NBD export(s) on {}; Ctrl-C or SIGTERM flushes, ends NBD clients and logs out",
        stats.len(),
        server.listen()
    );
}

/// How to attach an export: the kernel NBD client, FUSE, qemu.
fn attach_commands(listen: &NbdListen, name: &str, uri: &str) -> Vec<String> {
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

async fn log_events(s: Session) {
    let mut rx = s.events();
    loop {
        match rx.recv().await {
            Ok(SessionEvent::Recovering(why)) => {
                tracing::warn!(reason = %why, "connection lost; recovering (NBD requests wait)")
            }
            Ok(SessionEvent::Recovered { tsih }) => tracing::info!(tsih, "session recovered"),
            Ok(SessionEvent::Failed(why)) => {
                tracing::error!(reason = %why, "session recovery failed; NBD requests fail with EIO")
            }
            Ok(e) => tracing::info!(event = ?e, "session event"),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // No signal handlers: Ctrl-C through tokio's fallback.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
