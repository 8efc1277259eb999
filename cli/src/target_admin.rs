//! `iscsi target show|add-target|remove-target|add-lun|remove-lun|set-lun|
//! add-portal|allow|deny|set-chap|logout-session|save`: the admin verbs,
//! talking to a running `iscsi target serve` over its admin socket
//! (newline-delimited JSON, see `iscsi_target::admin::protocol`).
//!
//! Also the serve-side glue: loading `--config FILE`, starting the server
//! through `iscsi_target::admin::launch` and the admin socket.
//!
//! Exit codes: 0 ok, 1 refused (the daemon says why), 2 usage error,
//! 3 cannot reach the daemon.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use iscsi_target::admin::protocol::{Account, Request, Response, ShowResult, TargetInfo};
use iscsi_target::admin::server::{default_socket_path, AdminLimits, AdminSocket};
use iscsi_target::admin::{self, Admin};
use iscsi_target::config::ServerConfig;
use iscsi_target::config_file::{self, Loaded};
use iscsi_target::server::Server;

/// Options every admin verb takes.
#[derive(Args, Debug, Clone)]
pub struct AdminOpts {
    /// Admin socket of the running target
    /// (default: $XDG_RUNTIME_DIR/iscsi-rs/target.sock, /run/iscsi-rs/target.sock for root).
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options naming a target; optional when the daemon serves exactly one.
#[derive(Args, Debug, Clone)]
pub struct TargetOpt {
    /// Target name (default: the only target, if there is just one).
    #[arg(long, value_name = "IQN")]
    pub target: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Show targets, portals, LUNs (with I/O counters), ACLs and sessions.
    Show {
        /// Only this target.
        #[arg(long, value_name = "IQN")]
        target: Option<String>,
        #[command(flatten)]
        o: AdminOpts,
    },
    /// Create a target at run time.
    AddTarget {
        /// Target name (iqn./eui./naa.).
        name: String,
        #[arg(long)]
        alias: Option<String>,
        /// Portal HOST:PORT (repeatable; default: every portal the server listens on).
        #[arg(long = "portal", value_name = "HOST:PORT")]
        portals: Vec<String>,
        /// Portal group tag (default 1).
        #[arg(long)]
        tpgt: Option<u16>,
        /// LUN SPEC (repeatable, numbered 0, 1, ...), as for `serve --lun`.
        #[arg(long = "lun", value_name = "SPEC")]
        luns: Vec<String>,
        #[command(flatten)]
        o: AdminOpts,
    },
    /// Remove a target (refused while it has sessions, unless --force).
    RemoveTarget {
        name: String,
        /// End its sessions.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        o: AdminOpts,
    },
    /// Add a LUN: mem:SIZE | null:SIZE | file:PATH[,size=SIZE][,sector=512|4096][,mode=wb|wt|ro][,thin] | block:DEV[,mode=..].
    AddLun {
        /// The LUN SPEC.
        spec: String,
        #[command(flatten)]
        t: TargetOpt,
        /// LUN number (default: the lowest free one).
        #[arg(long)]
        lun: Option<u64>,
        /// INQUIRY vendor (up to 8 characters).
        #[arg(long)]
        vendor: Option<String>,
        /// INQUIRY product (up to 16 characters).
        #[arg(long)]
        product: Option<String>,
        /// Serial number seed (VPD 0x80).
        #[arg(long)]
        serial: Option<String>,
        /// WWN seed (VPD 0x83).
        #[arg(long)]
        wwn_seed: Option<String>,
        #[command(flatten)]
        o: AdminOpts,
    },
    /// Remove a LUN (refused while an initiator uses it, unless --force).
    RemoveLun {
        #[command(flatten)]
        t: TargetOpt,
        #[arg(long)]
        lun: u64,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        o: AdminOpts,
    },
    /// Change a LUN's IO mode (wb, wt, ro) and/or size (shrinking needs --force).
    SetLun {
        #[command(flatten)]
        t: TargetOpt,
        #[arg(long)]
        lun: u64,
        /// wb, wt or ro.
        #[arg(long, value_parser = ["wb", "wt", "ro"])]
        mode: Option<String>,
        /// New size, with K/M/G/T suffixes.
        #[arg(long)]
        size: Option<String>,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        o: AdminOpts,
    },
    /// Export a target through one more portal (binds it if needed).
    AddPortal {
        /// HOST:PORT.
        portal: String,
        #[command(flatten)]
        t: TargetOpt,
        /// Portal group tag (default: the target's first group).
        #[arg(long)]
        tpgt: Option<u16>,
        #[command(flatten)]
        o: AdminOpts,
    },
    /// Allow an initiator (adds it to the target's ACL, or updates its entry).
    Allow {
        /// Initiator name.
        initiator: String,
        #[command(flatten)]
        t: TargetOpt,
        /// LUN masking: the LUNs it may see, e.g. 0,2 (other LUNs look
        /// non-existent to it; takes effect at once for logged-in sessions).
        #[arg(long, value_delimiter = ',', value_name = "N,N,..")]
        luns: Option<Vec<u64>>,
        /// Drop its LUN masking: it sees every LUN.
        #[arg(long, conflicts_with = "luns")]
        all_luns: bool,
        /// Per-initiator CHAP account USER:SECRET (replaces the target-wide ones for it).
        #[arg(long, value_name = "USER:SECRET")]
        chap: Option<String>,
        /// Target credentials for mutual CHAP with this initiator.
        #[arg(long, value_name = "USER:SECRET", requires = "chap")]
        mutual_chap: Option<String>,
        #[command(flatten)]
        o: AdminOpts,
    },
    /// Remove an initiator from the target's ACL.
    Deny {
        initiator: String,
        #[command(flatten)]
        t: TargetOpt,
        /// Allow removing the last entry (the target is then open to every initiator).
        #[arg(long)]
        allow_any: bool,
        #[command(flatten)]
        o: AdminOpts,
    },
    /// Change CHAP accounts of a target, of one initiator of it, or of discovery.
    SetChap {
        #[command(flatten)]
        t: TargetOpt,
        /// Change discovery authentication instead of a target's.
        #[arg(long, conflicts_with_all = ["target", "initiator"])]
        discovery: bool,
        /// Change this initiator's own accounts (it must be in the ACL).
        #[arg(long, value_name = "IQN")]
        initiator: Option<String>,
        /// Add or replace an incoming account USER:SECRET.
        #[arg(long, value_name = "USER:SECRET")]
        add: Option<String>,
        /// Remove the incoming account of USER.
        #[arg(long, value_name = "USER")]
        remove: Option<String>,
        /// Set the target's own account for mutual CHAP.
        #[arg(long, value_name = "USER:SECRET")]
        mutual: Option<String>,
        /// Drop the mutual CHAP account.
        #[arg(long)]
        no_mutual: bool,
        /// Drop every account first (no authentication).
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        o: AdminOpts,
    },
    /// Force one session out (TSIH from `iscsi target show`).
    LogoutSession {
        tsih: u16,
        #[arg(long, value_name = "IQN")]
        target: Option<String>,
        #[command(flatten)]
        o: AdminOpts,
    },
    /// Write the running configuration to its file (atomically).
    Save {
        /// Write here instead of the file given to `serve --config`.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        o: AdminOpts,
    },
}

/// Why a verb failed, with its exit code.
#[derive(Debug)]
enum Fail {
    /// 1: the daemon refused.
    Refused(String),
    /// 2: bad command line.
    Usage(String),
    /// 3: no daemon.
    Unreachable(String),
}

impl Fail {
    fn code(&self) -> u8 {
        match self {
            Fail::Refused(_) => 1,
            Fail::Usage(_) => 2,
            Fail::Unreachable(_) => 3,
        }
    }
}

/// Largest response accepted from the daemon.
const MAX_RESPONSE: u64 = 64 << 20;

/// Send one request and read its response.
fn call(socket: &Path, req: &Request) -> Result<Response, Fail> {
    let unreachable = |e: std::io::Error| {
        Fail::Unreachable(format!(
            "cannot reach the target's admin socket {}: {e}; is `iscsi target serve` running? \
             (socket {}, see --admin-socket)",
            socket.display(),
            socket.display()
        ))
    };
    let mut s = UnixStream::connect(socket).map_err(unreachable)?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let mut line = serde_json::to_vec(req).map_err(|e| Fail::Usage(e.to_string()))?;
    line.push(b'\n');
    s.write_all(&line).map_err(unreachable)?;
    let mut r = BufReader::new(std::io::Read::take(s, MAX_RESPONSE));
    let mut answer = String::new();
    r.read_line(&mut answer).map_err(unreachable)?;
    if answer.is_empty() {
        return Err(Fail::Unreachable(format!(
            "the daemon on {} closed the connection without answering",
            socket.display()
        )));
    }
    serde_json::from_str(&answer)
        .map_err(|e| Fail::Refused(format!("unreadable answer from the daemon: {e}")))
}

/// Call and turn an error response into [`Fail::Refused`].
fn call_ok(socket: &Path, req: &Request) -> Result<serde_json::Value, Fail> {
    let r = call(socket, req)?;
    if r.ok {
        Ok(r.result.unwrap_or(serde_json::Value::Null))
    } else {
        let msg = r
            .error
            .map(|e| e.message)
            .unwrap_or_else(|| "refused".into());
        Err(Fail::Refused(msg))
    }
}

fn socket_of(o: &AdminOpts) -> PathBuf {
    o.admin_socket.clone().unwrap_or_else(default_socket_path)
}

/// The target named on the command line, or the daemon's only target.
fn resolve_target(socket: &Path, t: &TargetOpt) -> Result<String, Fail> {
    if let Some(n) = &t.target {
        return Ok(n.clone());
    }
    let v = call_ok(socket, &Request::Show { target: None })?;
    let show: ShowResult =
        serde_json::from_value(v).map_err(|e| Fail::Refused(format!("unreadable answer: {e}")))?;
    match show.targets.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => Err(Fail::Usage("the daemon serves no target".into())),
        many => Err(Fail::Usage(format!(
            "the daemon serves {} targets; say which with --target ({})",
            many.len(),
            many.iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// File paths in a LUN SPEC are resolved by the daemon, whose working
/// directory is not ours: make them absolute here.
pub fn absolute_spec(spec: &str) -> String {
    for kind in ["file:", "block:"] {
        if let Some(rest) = spec.strip_prefix(kind) {
            let (path, opts) = match rest.split_once(',') {
                Some((p, o)) => (p, Some(o)),
                None => (rest, None),
            };
            if path.is_empty() || Path::new(path).is_absolute() {
                return spec.to_string();
            }
            let abs = std::path::absolute(path)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| path.to_string());
            return match opts {
                Some(o) => format!("{kind}{abs},{o}"),
                None => format!("{kind}{abs}"),
            };
        }
    }
    spec.to_string()
}

fn account(s: &str, flag: &str) -> Result<Account, Fail> {
    Account::parse(s).ok_or_else(|| Fail::Usage(format!("{flag} must be USER:SECRET")))
}

pub fn run(cmd: AdminCmd) -> ExitCode {
    let (verb, r) = exec(cmd);
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let msg = match &f {
                Fail::Refused(m) | Fail::Usage(m) | Fail::Unreachable(m) => m,
            };
            eprintln!("iscsi target {verb}: {msg}");
            ExitCode::from(f.code())
        }
    }
}

fn print_result(o: &AdminOpts, v: &serde_json::Value, human: impl FnOnce(&serde_json::Value)) {
    if o.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        human(v);
        if let Some(ws) = v.get("warnings").and_then(|w| w.as_array()) {
            for w in ws.iter().filter_map(|w| w.as_str()) {
                eprintln!("warning: {w}");
            }
        }
    }
}

fn exec(cmd: AdminCmd) -> (&'static str, Result<(), Fail>) {
    match cmd {
        AdminCmd::Show { target, o } => ("show", show(&o, target)),
        AdminCmd::AddTarget {
            name,
            alias,
            portals,
            tpgt,
            luns,
            o,
        } => ("add-target", {
            let req = Request::AddTarget {
                name,
                alias,
                portals,
                tpgt,
                luns: luns.iter().map(|l| absolute_spec(l)).collect(),
            };
            call_ok(&socket_of(&o), &req).map(|v| {
                print_result(&o, &v, |v| {
                    let info: Option<TargetInfo> = serde_json::from_value(v.clone()).ok();
                    if let Some(t) = info {
                        println!("added target {}", t.name);
                        print_target(&t);
                    }
                })
            })
        }),
        AdminCmd::RemoveTarget { name, force, o } => ("remove-target", {
            call_ok(&socket_of(&o), &Request::RemoveTarget { name, force }).map(|v| {
                print_result(&o, &v, |v| {
                    println!(
                        "removed target {} ({} session(s) ended)",
                        s(v, "target"),
                        v["sessions_ended"]
                    )
                })
            })
        }),
        AdminCmd::AddLun {
            spec,
            t,
            lun,
            vendor,
            product,
            serial,
            wwn_seed,
            o,
        } => ("add-lun", {
            let sock = socket_of(&o);
            resolve_target(&sock, &t).and_then(|target| {
                let req = Request::AddLun {
                    target,
                    lun,
                    spec: absolute_spec(&spec),
                    vendor,
                    product,
                    serial,
                    wwn_seed,
                };
                call_ok(&sock, &req).map(|v| {
                    print_result(&o, &v, |v| {
                        println!(
                            "added LUN {} to {} ({})",
                            v["lun"],
                            s(v, "target"),
                            s(v, "spec")
                        )
                    })
                })
            })
        }),
        AdminCmd::RemoveLun { t, lun, force, o } => ("remove-lun", {
            let sock = socket_of(&o);
            resolve_target(&sock, &t).and_then(|target| {
                call_ok(&sock, &Request::RemoveLun { target, lun, force }).map(|v| {
                    print_result(&o, &v, |v| {
                        println!("removed LUN {} from {}", v["lun"], s(v, "target"))
                    })
                })
            })
        }),
        AdminCmd::SetLun {
            t,
            lun,
            mode,
            size,
            force,
            o,
        } => ("set-lun", {
            if mode.is_none() && size.is_none() {
                Err(Fail::Usage("give --mode and/or --size".into()))
            } else {
                let sock = socket_of(&o);
                resolve_target(&sock, &t).and_then(|target| {
                    let req = Request::SetLun {
                        target,
                        lun,
                        mode,
                        size,
                        force,
                    };
                    call_ok(&sock, &req).map(|v| {
                        print_result(&o, &v, |v| {
                            println!(
                                "LUN {} of {}: mode {}, {}",
                                v["lun"],
                                s(v, "target"),
                                s(v, "mode"),
                                human_size(v["size_bytes"].as_u64().unwrap_or(0))
                            )
                        })
                    })
                })
            }
        }),
        AdminCmd::AddPortal { portal, t, tpgt, o } => ("add-portal", {
            let sock = socket_of(&o);
            resolve_target(&sock, &t).and_then(|target| {
                call_ok(
                    &sock,
                    &Request::AddPortal {
                        target,
                        portal,
                        tpgt,
                    },
                )
                .map(|v| {
                    print_result(&o, &v, |v| {
                        println!(
                            "{} now reachable on {},{}",
                            s(v, "target"),
                            s(v, "portal"),
                            v["tpgt"]
                        )
                    })
                })
            })
        }),
        AdminCmd::Allow {
            initiator,
            t,
            luns,
            all_luns,
            chap,
            mutual_chap,
            o,
        } => ("allow", {
            let sock = socket_of(&o);
            let accounts = chap
                .as_deref()
                .map(|c| account(c, "--chap"))
                .transpose()
                .and_then(|c| {
                    Ok((
                        c,
                        mutual_chap
                            .as_deref()
                            .map(|m| account(m, "--mutual-chap"))
                            .transpose()?,
                    ))
                });
            accounts.and_then(|(chap, mutual_chap)| {
                resolve_target(&sock, &t).and_then(|target| {
                    let req = Request::Allow {
                        target,
                        initiator,
                        luns,
                        all_luns,
                        chap,
                        mutual_chap,
                    };
                    call_ok(&sock, &req).map(|v| {
                        print_result(&o, &v, |v| {
                            let luns = match v["luns"].as_array() {
                                Some(a) => format!(
                                    "LUNs {}",
                                    a.iter()
                                        .map(|n| n.to_string())
                                        .collect::<Vec<_>>()
                                        .join(",")
                                ),
                                None => "all LUNs".to_string(),
                            };
                            println!(
                                "allowed {} on {} ({luns})",
                                s(v, "initiator"),
                                s(v, "target")
                            )
                        })
                    })
                })
            })
        }),
        AdminCmd::Deny {
            initiator,
            t,
            allow_any,
            o,
        } => ("deny", {
            let sock = socket_of(&o);
            resolve_target(&sock, &t).and_then(|target| {
                let req = Request::Deny {
                    target,
                    initiator,
                    allow_any,
                };
                call_ok(&sock, &req).map(|v| {
                    print_result(&o, &v, |v| {
                        println!("removed {} from the ACL of {}", s(v, "initiator"), s(v, "target"));
                        if v["open_to_all"].as_bool() == Some(true) {
                            println!("the ACL is empty: every initiator may log in");
                        }
                        if let Some(t) = v["sessions_still_logged_in"].as_array().filter(|a| !a.is_empty()) {
                            let ids: Vec<String> = t.iter().map(|x| x.to_string()).collect();
                            println!(
                                "sessions still logged in (TSIH {}); end them with `iscsi target logout-session`",
                                ids.join(", ")
                            );
                        }
                    })
                })
            })
        }),
        AdminCmd::SetChap {
            t,
            discovery,
            initiator,
            add,
            remove,
            mutual,
            no_mutual,
            clear,
            o,
        } => ("set-chap", {
            let sock = socket_of(&o);
            (|| {
                if add.is_none() && remove.is_none() && mutual.is_none() && !no_mutual && !clear {
                    return Err(Fail::Usage(
                        "give --add, --remove, --mutual, --no-mutual or --clear".into(),
                    ));
                }
                let add = add.as_deref().map(|a| account(a, "--add")).transpose()?;
                let mutual = mutual
                    .as_deref()
                    .map(|a| account(a, "--mutual"))
                    .transpose()?;
                let target = if discovery {
                    None
                } else {
                    Some(resolve_target(&sock, &t)?)
                };
                let req = Request::SetChap {
                    target,
                    initiator,
                    add,
                    remove,
                    mutual,
                    no_mutual,
                    clear,
                };
                call_ok(&sock, &req).map(|v| {
                    print_result(&o, &v, |v| {
                        let users: Vec<String> = v["chap_users"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|x| x.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default();
                        println!(
                            "CHAP of {}: {}{}",
                            s(v, "scope"),
                            if users.is_empty() {
                                "none".to_string()
                            } else {
                                format!("users {}", users.join(", "))
                            },
                            v["mutual_user"]
                                .as_str()
                                .map(|m| format!("; mutual as {m}"))
                                .unwrap_or_default()
                        )
                    })
                })
            })()
        }),
        AdminCmd::LogoutSession { tsih, target, o } => ("logout-session", {
            call_ok(&socket_of(&o), &Request::LogoutSession { tsih, target }).map(|v| {
                print_result(&o, &v, |v| {
                    println!(
                        "session {} of {} on {} ended",
                        v["tsih"],
                        s(v, "initiator"),
                        s(v, "target")
                    )
                })
            })
        }),
        AdminCmd::Save { file, o } => ("save", {
            let file = file.map(|f| std::path::absolute(&f).unwrap_or(f));
            call_ok(&socket_of(&o), &Request::Save { file })
                .map(|v| print_result(&o, &v, |v| println!("saved to {}", s(v, "file"))))
        }),
    }
}

fn s<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("?")
}

fn show(o: &AdminOpts, target: Option<String>) -> Result<(), Fail> {
    let v = call_ok(&socket_of(o), &Request::Show { target })?;
    if o.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let show: ShowResult =
        serde_json::from_value(v).map_err(|e| Fail::Refused(format!("unreadable answer: {e}")))?;
    print!("{}", render_show(&show));
    Ok(())
}

/// `1073741824` -> `1 GiB`.
pub fn human_size(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1u64 << shift {
            let whole = n >> shift;
            let frac = ((n & ((1u64 << shift) - 1)) * 10) >> shift;
            return if frac == 0 {
                format!("{whole} {unit}")
            } else {
                format!("{whole}.{frac} {unit}")
            };
        }
    }
    format!("{n} B")
}

/// Left-aligned columns.
fn table(header: &[&str], rows: &[Vec<String>], indent: &str) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from(indent);
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(|c| c.as_str()).collect()));
    }
    out
}

fn print_target(t: &TargetInfo) {
    print!("{}", render_target(t));
}

fn render_target(t: &TargetInfo) -> String {
    let mut out = format!(
        "Target {}{}\n",
        t.name,
        t.alias
            .as_deref()
            .map(|a| format!(" ({a})"))
            .unwrap_or_default()
    );
    for g in &t.portal_groups {
        out.push_str(&format!(
            "  Portal group {}: {}\n",
            g.tpgt,
            g.portals.join(", ")
        ));
    }
    out.push_str(&format!(
        "  CHAP: {}{}\n",
        if t.chap_users.is_empty() {
            "none".to_string()
        } else {
            format!("users {}", t.chap_users.join(", "))
        },
        t.mutual_user
            .as_deref()
            .map(|m| format!("; mutual as {m}"))
            .unwrap_or_default()
    ));
    if t.acl.is_empty() {
        out.push_str("  ACL: any initiator\n");
    } else {
        out.push_str("  ACL:\n");
        for a in &t.acl {
            let mut extra = Vec::new();
            if let Some(l) = &a.luns {
                extra.push(format!(
                    "LUNs {}",
                    l.iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ));
            }
            if !a.chap_users.is_empty() {
                extra.push(format!("CHAP user {}", a.chap_users.join(",")));
            }
            out.push_str(&format!(
                "    {}{}\n",
                a.initiator,
                if extra.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", extra.join("; "))
                }
            ));
        }
    }
    if t.luns.is_empty() {
        out.push_str("  LUNs: none\n");
    } else {
        let rows: Vec<Vec<String>> = t
            .luns
            .iter()
            .map(|l| {
                let io = l.io.unwrap_or_default();
                vec![
                    l.lun.to_string(),
                    l.backend.clone(),
                    human_size(l.size_bytes),
                    l.sector_size.to_string(),
                    l.mode.clone(),
                    if l.thin { "yes" } else { "no" }.into(),
                    if l.in_use { "yes" } else { "no" }.into(),
                    format!("{}/{}", io.read_ops, human_size(io.read_bytes)),
                    format!("{}/{}", io.write_ops, human_size(io.write_bytes)),
                    l.serial.clone(),
                    l.path.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "LUN", "BACKEND", "SIZE", "SECTOR", "MODE", "THIN", "IN USE", "READS", "WRITES",
                "SERIAL", "PATH",
            ],
            &rows,
            "  ",
        ));
    }
    if t.sessions.is_empty() {
        out.push_str("  Sessions: none\n");
    } else {
        let rows: Vec<Vec<String>> = t
            .sessions
            .iter()
            .map(|s| {
                let n = &s.negotiated;
                vec![
                    s.tsih.to_string(),
                    s.initiator.clone(),
                    s.isid.clone(),
                    s.tpgt.to_string(),
                    s.connections
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    format!(
                        "MaxBurst={} FirstBurst={} ImmediateData={} InitialR2T={}",
                        n["MaxBurstLength"],
                        n["FirstBurstLength"],
                        n["ImmediateData"],
                        n["InitialR2T"]
                    ),
                ]
            })
            .collect();
        out.push_str(&table(
            &["TSIH", "INITIATOR", "ISID", "TPGT", "CIDS", "NEGOTIATED"],
            &rows,
            "  ",
        ));
    }
    out
}

fn render_show(show: &ShowResult) -> String {
    let mut out = String::new();
    for t in &show.targets {
        out.push_str(&render_target(t));
        out.push('\n');
    }
    out.push_str(&format!(
        "Discovery: CHAP {}; {} session(s)\n",
        if show.discovery_chap_users.is_empty() {
            "none".to_string()
        } else {
            format!("users {}", show.discovery_chap_users.join(", "))
        },
        show.discovery_sessions
    ));
    out.push_str(&format!("Listening on {}\n", show.listening.join(", ")));
    if let Some(f) = &show.config_file {
        out.push_str(&format!("Configuration file: {}\n", f.display()));
    }
    for w in &show.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

// ---------------------------------------------------------------------------
// serve: --config and --admin-socket
// ---------------------------------------------------------------------------

/// Load `--config FILE` (errors name the JSON path of the bad field).
pub fn load_config(file: &Path) -> Result<Loaded, String> {
    config_file::load(file).map_err(|e| match &e {
        config_file::FileError::Syntax { .. } | config_file::FileError::Invalid { .. } => {
            format!("{}: {e}", file.display())
        }
        _ => e.to_string(),
    })
}

/// Quick-start flags as a [`Loaded`] configuration (no extensions).
pub fn from_flags(cfg: ServerConfig) -> Loaded {
    Loaded {
        server: cfg,
        ext: Default::default(),
        admin_socket: None,
    }
}

/// A running target with its admin API.
pub struct Running {
    pub server: Server,
    pub admin: Arc<Admin>,
    pub socket: Option<AdminSocket>,
}

impl Running {
    /// End every session (logout requests first), stop the admin socket.
    /// Never saves the configuration.
    pub async fn shutdown(self) {
        if let Some(s) = self.socket {
            s.shutdown().await;
        }
        self.admin.stop_extra_listeners().await;
        self.server.shutdown().await;
    }
}

/// Start the server and its admin socket. The socket is `socket` (from
/// `--admin-socket`), else the file's `admin_socket`, else the default; a
/// socket given explicitly must work, the default one may be skipped (with
/// a warning) when another daemon already owns it.
pub async fn start(
    loaded: Loaded,
    config_file: Option<PathBuf>,
    socket: Option<PathBuf>,
) -> Result<Running, String> {
    let explicit = socket.clone().or_else(|| loaded.admin_socket.clone());
    let (server, admin) = admin::launch(loaded, config_file)
        .await
        .map_err(|e| e.to_string())?;
    // Short CHAP secrets and the like, whether from flags or a file.
    for w in admin.warnings() {
        eprintln!("iscsi target serve: warning: {w}");
    }
    let path = explicit.clone().unwrap_or_else(default_socket_path);
    let socket = match admin::server::listen(admin.clone(), &path, AdminLimits::default()).await {
        Ok(s) => Some(s),
        Err(e) if explicit.is_none() => {
            eprintln!("iscsi target serve: warning: admin API disabled: {e}");
            None
        }
        Err(e) => {
            server.shutdown_with_grace(Duration::from_millis(10)).await;
            return Err(e.to_string());
        }
    };
    Ok(Running {
        server,
        admin,
        socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use iscsi_target::admin::protocol::{AclInfo, IoStats, LunInfo, PortalGroupInfo, SessionInfo};

    #[test]
    fn spec_paths_made_absolute() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(absolute_spec("mem:1G"), "mem:1G");
        assert_eq!(
            absolute_spec("file:/a/b.img,size=1G"),
            "file:/a/b.img,size=1G"
        );
        assert_eq!(
            absolute_spec("file:b.img,size=1G"),
            format!("file:{}/b.img,size=1G", cwd.display())
        );
        assert_eq!(
            absolute_spec("block:dev"),
            format!("block:{}/dev", cwd.display())
        );
    }

    #[test]
    fn sizes_for_humans() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(64 << 20), "64 MiB");
        assert_eq!(human_size(1536 << 20), "1.5 GiB");
    }

    #[test]
    fn show_renders_everything() {
        let t = TargetInfo {
            name: "iqn.2024-01.org.example:t".into(),
            alias: Some("disk".into()),
            portal_groups: vec![PortalGroupInfo {
                tpgt: 1,
                portals: vec!["127.0.0.1:3260".into()],
            }],
            luns: vec![LunInfo {
                lun: 0,
                backend: "mem".into(),
                path: None,
                size_bytes: 64 << 20,
                sector_size: 512,
                blocks: 131072,
                mode: "ro".into(),
                thin: true,
                serial: "ABCDEF".into(),
                wwn: "naa.6001".into(),
                vendor: "V".into(),
                product: "P".into(),
                in_use: true,
                io: Some(IoStats {
                    read_ops: 7,
                    read_bytes: 4096,
                    ..IoStats::default()
                }),
            }],
            acl: vec![AclInfo {
                initiator: "iqn.2024-01.org.example:h".into(),
                luns: Some(vec![0]),
                chap_users: vec!["h".into()],
                mutual_user: None,
            }],
            chap_users: vec![],
            mutual_user: None,
            session_params: serde_json::Value::Null,
            sessions: vec![SessionInfo {
                tsih: 5,
                initiator: "iqn.2024-01.org.example:h".into(),
                isid: "400001370000".into(),
                tpgt: 1,
                connections: vec![0, 1],
                negotiated: serde_json::json!({"MaxBurstLength": 262144}),
            }],
        };
        let out = render_show(&ShowResult {
            targets: vec![t],
            listening: vec!["127.0.0.1:3260".into()],
            warnings: vec!["w1".into()],
            ..ShowResult::default()
        });
        for needle in [
            "Target iqn.2024-01.org.example:t (disk)",
            "Portal group 1: 127.0.0.1:3260",
            "iqn.2024-01.org.example:h (LUNs 0; CHAP user h)",
            "64 MiB",
            "7/4 KiB",
            "ABCDEF",
            "0,1",
            "MaxBurst=262144",
            "warning: w1",
        ] {
            assert!(out.contains(needle), "{needle} missing in:\n{out}");
        }
    }
}
