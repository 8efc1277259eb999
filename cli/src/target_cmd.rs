//! `iscsi target ...` verbs.
//!
//! `iscsi target serve` maps its quick-start flags onto
//! [`iscsi_target::config::ServerConfig`], starts the server, prints one
//! `listening on ADDR` line per bound portal (the real port when 0 was asked)
//! and one `target IQN` line on stdout, then runs until SIGINT/SIGTERM and
//! ends every session cleanly (Async Message logout requests, then close).

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use iscsi_target::config::{
    parse_portal, AuthConfig, ChapCredentials, LunConfig, PortalGroup, ServerConfig, SessionLimits,
    TargetConfig,
};

#[derive(Subcommand, Debug)]
pub enum TargetCmd {
    /// Serve targets in the foreground until SIGINT/SIGTERM.
    Serve(ServeArgs),
    #[command(flatten)]
    Admin(crate::target_admin::AdminCmd),
}

/// Quick-start flags: one target, its portals, LUNs and access control.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Portal to listen on, HOST:PORT (repeatable). IPv6 as [::1]:3260.
    /// Port 0 picks a free port (printed at start-up).
    #[arg(long = "portal", value_name = "HOST:PORT", default_values_t = vec!["0.0.0.0:3260".to_string()])]
    pub portals: Vec<String>,
    /// Target name (iqn./eui./naa.); default: a name derived from the host name.
    #[arg(long = "target", value_name = "IQN")]
    pub target: Option<String>,
    /// Logical unit (repeatable, numbered 0, 1, 2 ... in order):
    /// mem:SIZE | null:SIZE | file:PATH[,size=SIZE][,sector=512|4096][,mode=wb|wt|ro][,thin]
    /// | block:DEVICE[,mode=...] | rbd:POOL/IMAGE[,conf=PATH][,user=NAME]
    /// [,keyring=PATH][,namespace=NS][,timeout=SECS][,shared][,mode=...][,sector=...]
    /// (Ceph RBD; builds with `--features rbd`). SIZE takes K/M/G/T suffixes. Every kind also
    /// takes `serial=S`, `removable` (virtual removable media), `sanitize`
    /// (accept SANITIZE, which erases the whole LUN; off by default) and
    /// `control` (control channel on, docs/control-channel.md).
    #[arg(long = "lun", value_name = "SPEC")]
    pub luns: Vec<String>,
    /// Require initiators to authenticate with CHAP as USER:SECRET (repeatable).
    #[arg(long = "chap", value_name = "USER:SECRET")]
    pub chap: Vec<String>,
    /// The target's own CHAP credentials, for initiators that ask for mutual CHAP.
    #[arg(long = "mutual-chap", value_name = "USER:SECRET")]
    pub mutual_chap: Option<String>,
    /// Require CHAP as USER:SECRET on discovery (SendTargets) sessions too
    /// (repeatable; default: discovery is open, but it only lists targets an
    /// initiator may log in to).
    #[arg(long = "discovery-chap", value_name = "USER:SECRET")]
    pub discovery_chap: Vec<String>,
    /// Allow only this initiator name (repeatable; default: any initiator).
    #[arg(long = "allow", value_name = "IQN")]
    pub allow: Vec<String>,
    /// Refuse initiator names outside RFC 3722 (such as names with '_') in
    /// --allow and in ACL entries added later with `iscsi target allow`;
    /// without it they are accepted with a warning. With --config, the
    /// file's "strict_names" key does the same (either one turns it on).
    #[arg(long = "strict-names")]
    pub strict_names: bool,
    /// IEEE company id (OUI) in every LU's NAA WWN (VPD page 83h), as 6
    /// hex digits ("00:14:05"); overrides the config file's company_id.
    /// Default: the OUI Linux software targets use.
    #[arg(long = "company-id", value_name = "OUI")]
    pub company_id: Option<String>,
    /// Directory where each LUN keeps its SCSI persistent reservations
    /// while an initiator asked for them to survive restarts (APTPL=1, as
    /// Windows failover clusters do). Default with --config: beside the
    /// file, in FILE.pr-state/; without --config and without this flag,
    /// APTPL is not offered (such requests are refused).
    #[arg(long = "pr-state-dir", value_name = "DIR")]
    pub pr_state_dir: Option<std::path::PathBuf>,
    /// Log level or tracing filter (error, warn, info, debug, trace, or e.g.
    /// "iscsi_target=debug").
    #[arg(long = "log", value_name = "LEVEL", default_value = "info")]
    pub log: String,
    /// JSON configuration file (see examples/target.json) instead of the
    /// quick-start flags; `iscsi target save` writes back to it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["portals", "target", "luns", "chap", "mutual_chap", "discovery_chap", "allow"])]
    pub config: Option<std::path::PathBuf>,
    /// Admin API socket (default: $XDG_RUNTIME_DIR/iscsi-rs/target.sock,
    /// /run/iscsi-rs/target.sock for root).
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<std::path::PathBuf>,
    /// Commands in flight per session (the CmdSN window).
    #[arg(long = "queue-depth", value_name = "N", default_value_t = 128)]
    pub queue_depth: u32,
    /// Connections per session (MC/S) the target accepts.
    #[arg(long = "max-connections", value_name = "N", default_value_t = 8)]
    pub max_connections: u16,
    /// Seconds a login may take before the connection is dropped.
    #[arg(long = "login-timeout", value_name = "SECS", default_value_t = 15)]
    pub login_timeout: u64,
    /// Seconds of idle time before a NOP-In ping (0: never ping).
    #[arg(long = "nop-interval", value_name = "SECS", default_value_t = 30)]
    pub nop_interval: u64,
    /// Turn the control channel on for every LUN and give EVERY initiator
    /// the control right (it may SET switches such as io_mode). A demo and
    /// test convenience: in production turn it on per LUN (`"control":
    /// true`, `set-lun ... control=on`) and grant the right per initiator
    /// (`allow IQN --control`). See docs/control-channel.md.
    #[arg(long)]
    pub control: bool,
}

/// A default target name that stays the same across restarts on one host,
/// so that derived serial numbers and WWNs are stable.
fn default_target_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("iqn.2024-01.rs.iscsi:target.{host}")
}

/// Build the server configuration from the flags.
pub fn serve_config(args: &ServeArgs) -> Result<ServerConfig, String> {
    let mut portals = Vec::new();
    for p in &args.portals {
        portals.push(parse_portal(p).map_err(|e| e.to_string())?);
    }
    for name in &args.allow {
        iscsi_target::config_file::check_initiator_name("--allow", name, args.strict_names)
            .map_err(|e| e.to_string())?;
    }
    let mut luns = Vec::new();
    for (i, spec) in args.luns.iter().enumerate() {
        luns.push(LunConfig::parse_spec(i as u64, spec).map_err(|e| e.to_string())?);
    }
    let mut incoming = Vec::new();
    for c in &args.chap {
        incoming.push(ChapCredentials::parse(c).map_err(|e| format!("--chap: {e}"))?);
    }
    let outgoing = match &args.mutual_chap {
        Some(c) => Some(ChapCredentials::parse(c).map_err(|e| format!("--mutual-chap: {e}"))?),
        None => None,
    };
    let mut discovery = Vec::new();
    for c in &args.discovery_chap {
        discovery.push(ChapCredentials::parse(c).map_err(|e| format!("--discovery-chap: {e}"))?);
    }
    // Short secrets are warned about at start-up, like a file's (admin warnings).
    if outgoing.is_some() && incoming.is_empty() {
        return Err("--mutual-chap needs --chap (mutual CHAP follows one-way CHAP)".into());
    }
    let limits = SessionLimits {
        queue_depth: args.queue_depth,
        max_connections: args.max_connections,
        login_timeout: std::time::Duration::from_secs(args.login_timeout.max(1)),
        nop_interval: (args.nop_interval > 0)
            .then(|| std::time::Duration::from_secs(args.nop_interval)),
        ..SessionLimits::default()
    };
    let target = TargetConfig {
        name: args.target.clone().unwrap_or_else(default_target_name),
        alias: None,
        portal_groups: vec![PortalGroup { tpgt: 1, portals }],
        luns,
        auth: AuthConfig { incoming, outgoing },
        allow: args.allow.clone(),
        initiators: Default::default(),
        limits,
    };
    let cfg = ServerConfig {
        targets: vec![target],
        discovery_auth: AuthConfig {
            incoming: discovery,
            outgoing: None,
        },
        limits: Default::default(),
    };
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// The environment variable that sets the target's worker threads
/// (default: one per CPU).
pub(crate) const TARGET_THREADS_ENV: &str = "ISCSI_TARGET_THREADS";

pub(crate) fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn serve(args: ServeArgs) -> ExitCode {
    // Before loading: loading warns (e.g. initiator names with '_').
    init_logging(&args.log);
    let loaded = match &args.config {
        Some(f) => crate::target_admin::load_config(f),
        None => serve_config(&args).map(crate::target_admin::from_flags),
    };
    let loaded = match (loaded, &args.company_id) {
        (Ok(mut l), Some(v)) => iscsi_target::config_file::parse_company_id(v)
            .map(|id| {
                l.ext.company_id = Some(id);
                l
            })
            .map_err(|e| format!("--company-id: {e}")),
        (l, _) => l,
    };
    // Strict names also govern ACL entries added through the admin API.
    let loaded = loaded.map(|mut l| {
        l.ext.strict_names |= args.strict_names;
        if let Some(d) = &args.pr_state_dir {
            l.ext.pr_state_dir = Some(std::path::absolute(d).unwrap_or(d.clone()));
        }
        l
    });
    let config_file = args
        .config
        .as_ref()
        .map(|f| std::path::absolute(f).unwrap_or(f.clone()));
    let mut cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("iscsi target serve: {e}");
            return ExitCode::from(2);
        }
    };
    if args.control {
        for l in cfg
            .server
            .targets
            .iter_mut()
            .flat_map(|t| t.luns.iter_mut())
        {
            l.control = true;
        }
    }
    // Always set the worker count: left unset, tokio reads
    // TOKIO_WORKER_THREADS itself and panics on a bad value.
    let threads = match crate::initiator_cmd::threads_from_env(TARGET_THREADS_ENV) {
        Ok(t) => t.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iscsi target serve: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let targets: Vec<String> = cfg.server.targets.iter().map(|t| t.name.clone()).collect();
        let running = match crate::target_admin::start(cfg, config_file, args.admin_socket).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("iscsi target serve: {e}");
                return ExitCode::from(1);
            }
        };
        if args.control {
            running.admin.grant_control_to_all();
            tracing::warn!(
                "--control: control channel on for every LUN, every initiator may SET switches"
            );
        }
        {
            let mut out = std::io::stdout().lock();
            for addr in running.server.local_addrs() {
                let _ = writeln!(out, "listening on {addr}");
            }
            for t in &targets {
                let _ = writeln!(out, "target {t}");
            }
            if let Some(s) = &running.socket {
                let _ = writeln!(out, "admin socket {}", s.path().display());
            }
            let _ = out.flush();
        }
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub fn run(cmd: TargetCmd) -> ExitCode {
    match cmd {
        TargetCmd::Serve(args) => serve(args),
        TargetCmd::Admin(cmd) => crate::target_admin::run(cmd),
    }
}
