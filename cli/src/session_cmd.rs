//! Verbs that talk to the initiator daemon: `iscsi login` (without
//! `--foreground`), `iscsi session`, `iscsi logout`. They parse flags, call
//! `initiator::daemon::client`, and print (text or `--json`). Exit codes:
//! 0 ok, 1 refused/failed, 2 usage, 3 daemon or target unreachable.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use initiator::daemon::api::{LoggedOut, LunInfo, Request, SessionInfo, SessionState};
use initiator::daemon::client::{Client, ClientError};
use initiator::daemon::nodes::{NodeDb, Startup};

use initiator::NbdListen;

use crate::daemon_cmd::StateOpts;
use crate::target_admin::human_size;

/// Bound on one login (connections, LUN scan, exports) as seen by the CLI.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on logout (flush, NBD drain, Logout exchange).
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(60);
const QUICK_TIMEOUT: Duration = Duration::from_secs(15);

pub const SESSION_HELP: &str = "\
Shows per session: target, portal, state (logged-in, recovering, failed) and
since when, connections with counters, LUNs with their NBD export, URI and
I/O counters, and the recent state changes (login, connection-lost,
recovering, recovered, failed).

Examples:
  iscsi session
  iscsi session --json | jq '.[].luns[].export.uri'";

#[derive(Args, Debug)]
#[command(after_help = SESSION_HELP)]
pub struct SessionArgs {
    #[command(flatten)]
    pub state: StateOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["target", "all"])))]
pub struct LogoutArgs {
    /// Target IQN.
    #[arg(long)]
    pub target: Option<String>,
    /// Only the session through this portal.
    #[arg(long, requires = "target")]
    pub portal: Option<String>,
    /// Every session.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub state: StateOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `iscsi login` asks the daemon for.
#[derive(Debug, Clone)]
pub struct DaemonLogin {
    /// `None`: every automatic node (`--all`).
    pub target: Option<String>,
    pub portal: Option<String>,
    pub nbd: Option<String>,
    pub connections: Option<u16>,
    pub allow_remote_nbd: bool,
    /// Overrides of the node's control-channel tags (0: untagged).
    pub tag_writes: Option<u8>,
    pub tag_reads: Option<u8>,
    pub state: StateOpts,
    pub json: bool,
}

fn fail(verb: &str, e: &ClientError) -> ExitCode {
    eprintln!("iscsi {verb}: {e}");
    ExitCode::from(e.exit_code())
}

fn client(s: &StateOpts, timeout: Duration) -> Client {
    Client::new(&s.socket(), timeout)
}

/// `iscsi login` through the daemon.
pub fn login(a: DaemonLogin) -> ExitCode {
    let c = client(&a.state, LOGIN_TIMEOUT);
    let Some(target) = a.target.clone() else {
        return login_all(&a, &c);
    };
    match login_one(&c, &target, a.portal.as_deref(), &a) {
        Ok(info) => {
            if a.json {
                println!("{:#}", serde_json::json!(info));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail("login", &e),
    }
}

fn login_one(
    c: &Client,
    target: &str,
    portal: Option<&str>,
    a: &DaemonLogin,
) -> Result<SessionInfo, ClientError> {
    let where_ = portal.map(|p| format!(", portal: {p}")).unwrap_or_default();
    if !a.json {
        let conns = a
            .connections
            .map(|n| format!(" with {n} connection(s)"))
            .unwrap_or_default();
        eprintln!("Logging in to [target: {target}{where_}]{conns} ...");
    }
    let req = Request::Login {
        target: target.to_string(),
        portal: portal.map(str::to_string),
        nbd: a.nbd.clone(),
        connections: a.connections,
        allow_remote_nbd: a.allow_remote_nbd,
        tag_writes: a.tag_writes,
        tag_reads: a.tag_reads,
    };
    let info: SessionInfo = c.call_with_progress(&req, |m| eprintln!("  {m}"))?;
    if !a.json {
        println!(
            "Login to [target: {}, portal: {}] successful ({} connection(s)).",
            info.target,
            info.portal,
            info.connections.iter().filter(|c| c.connected).count()
        );
        print_attach(&info);
    }
    Ok(info)
}

/// `--all`: every automatic node without a session, one after the other.
fn login_all(a: &DaemonLogin, c: &Client) -> ExitCode {
    let db = NodeDb::new(&a.state.state_dir());
    let nodes = match db.list() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("iscsi login: {e}");
            return crate::initiator_cmd::exit_code(&e);
        }
    };
    let auto: Vec<_> = nodes
        .into_iter()
        .filter(|n| n.startup == Startup::Automatic)
        .collect();
    if auto.is_empty() {
        eprintln!(
            "iscsi login: no node with startup automatic in {}; \
             `iscsi node update --target IQN --startup automatic` sets one",
            db.dir().display()
        );
        return ExitCode::from(1);
    }
    let existing: Vec<SessionInfo> = match c.call(&Request::Sessions {}) {
        Ok(s) => s,
        Err(e) => return fail("login", &e),
    };
    let mut code = 0u8;
    let mut infos = Vec::new();
    for n in &auto {
        let up = existing
            .iter()
            .any(|s| n.is(&s.target, Some(&s.portal)) && s.state != SessionState::Failed);
        if up {
            if !a.json {
                println!(
                    "Already logged in to [target: {}, portal: {}].",
                    n.target, n.portal
                );
            }
            continue;
        }
        match login_one(c, &n.target, Some(&n.portal), a) {
            Ok(i) => infos.push(i),
            Err(e) => {
                eprintln!("iscsi login: {} at {}: {e}", n.target, n.portal);
                if code == 0 {
                    code = e.exit_code();
                }
            }
        }
    }
    if a.json {
        println!("{:#}", serde_json::json!(infos));
    }
    ExitCode::from(code)
}

/// Does this kernel have the NBD driver (so `nbd-client` can attach)?
fn kernel_has_nbd() -> bool {
    Path::new("/sys/module/nbd").exists() || Path::new("/dev/nbd0").exists()
}

/// Per LUN: its URI and how to attach it.
fn print_attach(info: &SessionInfo) {
    let listen: Option<NbdListen> = info.nbd.as_deref().and_then(|l| l.parse().ok());
    for l in &info.luns {
        let Some(e) = &l.export else {
            println!("  {}: not exported ({})", lun_name(l), l.note);
            continue;
        };
        println!(
            "  {}: {} {} {}, {}-byte blocks{}",
            lun_name(l),
            l.vendor,
            l.product,
            human_size(l.size),
            l.block_size,
            if e.read_only { ", read-only" } else { "" }
        );
        println!("    NBD URI: {}", e.uri);
        if let Some(listen) = &listen {
            for c in crate::login_cmd::attach_commands(listen, &e.name, &e.uri) {
                println!("    {c}");
            }
        }
    }
    if !info.io_tags.is_none() {
        println!("  Control-channel tags: {}", info.io_tags);
    }
    if let Some(e) = info.luns.iter().find_map(|l| l.export.as_ref()) {
        println!(
            "  Tagged views: {n}@tag1 .. {n}@tag7 (every read and write tagged), {n}@tag0 (untagged)",
            n = e.name
        );
    }
    if !kernel_has_nbd() {
        println!(
            "  (no NBD kernel module here: `modprobe nbd` for nbd-client, or use the nbdfuse line)"
        );
    }
}

fn lun_name(l: &LunInfo) -> String {
    l.lun
        .map(|n| format!("LUN {n}"))
        .unwrap_or_else(|| format!("LUN {}", l.lun_raw))
}

pub fn session(a: SessionArgs) -> ExitCode {
    let c = client(&a.state, QUICK_TIMEOUT);
    let list: Vec<SessionInfo> = match c.call(&Request::Sessions {}) {
        Ok(l) => l,
        Err(e) => return fail("session", &e),
    };
    if a.json {
        println!("{:#}", serde_json::json!(list));
        return ExitCode::SUCCESS;
    }
    if list.is_empty() {
        println!("No active sessions.");
    }
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_session(s);
    }
    ExitCode::SUCCESS
}

/// `HH:MM:SS UTC (N s ago)` for a Unix time.
fn when(t: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(t);
    let d = t % 86400;
    format!(
        "{:02}:{:02}:{:02} UTC ({} ago)",
        d / 3600,
        d / 60 % 60,
        d % 60,
        ago(now.saturating_sub(t))
    )
}

fn ago(s: u64) -> String {
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

fn print_session(s: &SessionInfo) {
    println!("Target: {}", s.target);
    println!("  Portal: {}  ISID: {}  TSIH: {}", s.portal, s.isid, s.tsih);
    println!("  Initiator: {}", s.initiator_name);
    println!(
        "  State: {} since {}  (replacement timeout {} s)",
        s.state,
        when(s.since),
        s.replacement_timeout
    );
    if s.state == SessionState::Failed {
        println!(
            "  NBD requests fail with EIO; log in again: iscsi login --target {}",
            s.target
        );
    }
    println!("  Connections:");
    for c in &s.connections {
        println!(
            "    CID {}: {}, {} commands, {} in flight, {} out, {} in",
            c.cid,
            if c.connected { "connected" } else { "down" },
            c.commands,
            c.in_flight,
            human_size(c.bytes_out),
            human_size(c.bytes_in)
        );
    }
    println!("  NBD: {}", s.nbd.as_deref().unwrap_or("-"));
    if !s.io_tags.is_none() {
        println!("  Control-channel tags: {}", s.io_tags);
    }
    println!("  LUNs:");
    let counters = |e: &initiator::daemon::api::ExportInfo| {
        format!(
            "clients {}, reads {} ({}), writes {} ({}), errors {}",
            e.clients,
            e.reads,
            human_size(e.bytes_read),
            e.writes,
            human_size(e.bytes_written),
            e.errors
        )
    };
    for l in &s.luns {
        match &l.export {
            Some(e) => {
                println!(
                    "    {}: {} ({} B blocks) {}  {}",
                    lun_name(l),
                    human_size(l.size),
                    l.block_size,
                    e.uri,
                    counters(e)
                );
                for t in &l.tagged_exports {
                    println!("      tagged view {}  {}", t.uri, counters(t));
                }
            }
            None => println!(
                "    {}: {} {} not exported: {}",
                lun_name(l),
                l.vendor,
                l.product,
                l.note
            ),
        }
    }
    println!("  Events:");
    for e in &s.events {
        let d = e.at % 86400;
        println!(
            "    {:02}:{:02}:{:02} {}{}",
            d / 3600,
            d / 60 % 60,
            d % 60,
            e.event,
            if e.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", e.detail)
            }
        );
    }
}

pub fn logout(a: LogoutArgs) -> ExitCode {
    let c = client(&a.state, LOGOUT_TIMEOUT);
    let req = match &a.target {
        Some(t) if !a.all => Request::Logout {
            target: t.clone(),
            portal: a.portal.clone(),
        },
        _ => Request::LogoutAll {},
    };
    let gone: Vec<LoggedOut> = match c.call(&req) {
        Ok(g) => g,
        Err(e) => return fail("logout", &e),
    };
    if a.json {
        println!("{:#}", serde_json::json!(gone));
        return ExitCode::SUCCESS;
    }
    if gone.is_empty() {
        println!("No active sessions.");
    }
    for g in &gone {
        if g.warning.is_empty() {
            println!(
                "Logout of [target: {}, portal: {}] successful.",
                g.target, g.portal
            );
        } else {
            println!(
                "Logged out of [target: {}, portal: {}] with warnings: {}",
                g.target, g.portal, g.warning
            );
        }
    }
    ExitCode::SUCCESS
}
