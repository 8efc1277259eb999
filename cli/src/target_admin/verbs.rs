//! One function per admin verb: build the request, call the daemon, print
//! the answer (a summary line, or the JSON with `--json`).

use std::path::PathBuf;

use clap::Args;
use iscsi_target::admin::protocol::{Request, TargetInfo};

use super::client::{absolute_spec, account, call_ok, resolve_target, socket_of, Fail};
use super::render::human_size;
use super::render::{print_result, print_target, s};
use super::{AdminOpts, TargetOpt};

/// Send `req` and print the answer with `human` (or as JSON).
fn send(o: &AdminOpts, req: &Request, human: impl FnOnce(&serde_json::Value)) -> Result<(), Fail> {
    call_ok(&socket_of(o), req).map(|v| print_result(o, &v, human))
}

/// The daemon's only target unless `--target` names one.
fn target_of(o: &AdminOpts, t: &TargetOpt) -> Result<String, Fail> {
    resolve_target(&socket_of(o), t)
}

pub(super) fn add_target(
    name: String,
    alias: Option<String>,
    portals: Vec<String>,
    tpgt: Option<u16>,
    luns: Vec<String>,
    o: &AdminOpts,
) -> Result<(), Fail> {
    let req = Request::AddTarget {
        name,
        alias,
        portals,
        tpgt,
        luns: luns.iter().map(|l| absolute_spec(l)).collect(),
    };
    send(o, &req, |v| {
        if let Ok(t) = serde_json::from_value::<TargetInfo>(v.clone()) {
            println!("added target {}", t.name);
            print_target(&t);
        }
    })
}

pub(super) fn remove_target(name: String, force: bool, o: &AdminOpts) -> Result<(), Fail> {
    send(o, &Request::RemoveTarget { name, force }, |v| {
        println!(
            "removed target {} ({} session(s) ended)",
            s(v, "target"),
            v["sessions_ended"]
        )
    })
}

/// INQUIRY identity overrides of `add-lun`.
#[derive(Args, Debug)]
pub struct LunIdentity {
    /// INQUIRY vendor (up to 8 characters).
    #[arg(long)]
    pub vendor: Option<String>,
    /// INQUIRY product (up to 16 characters).
    #[arg(long)]
    pub product: Option<String>,
    /// Serial number seed (VPD 0x80).
    #[arg(long)]
    pub serial: Option<String>,
    /// WWN seed (VPD 0x83).
    #[arg(long)]
    pub wwn_seed: Option<String>,
}

pub(super) fn add_lun(
    spec: String,
    t: &TargetOpt,
    lun: Option<u64>,
    id: LunIdentity,
    o: &AdminOpts,
) -> Result<(), Fail> {
    let req = Request::AddLun {
        target: target_of(o, t)?,
        lun,
        spec: absolute_spec(&spec),
        vendor: id.vendor,
        product: id.product,
        serial: id.serial,
        wwn_seed: id.wwn_seed,
    };
    send(o, &req, |v| {
        println!(
            "added LUN {} to {} ({})",
            v["lun"],
            s(v, "target"),
            s(v, "spec")
        )
    })
}

pub(super) fn remove_lun(t: &TargetOpt, lun: u64, force: bool, o: &AdminOpts) -> Result<(), Fail> {
    let target = target_of(o, t)?;
    send(o, &Request::RemoveLun { target, lun, force }, |v| {
        println!("removed LUN {} from {}", v["lun"], s(v, "target"))
    })
}

/// What `set-lun` changes.
#[derive(Args, Debug)]
pub struct LunChange {
    /// Settings as KEY=VALUE: `control=on` or `control=off` turns the
    /// LUN's control channel (tagged I/O, vendor switch command C7h) on
    /// or off at once; `save` keeps it.
    #[arg(value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// wb, wt or ro.
    #[arg(long, value_parser = ["wb", "wt", "ro"])]
    pub mode: Option<String>,
    /// New size, with K/M/G/T suffixes.
    #[arg(long)]
    pub size: Option<String>,
    #[arg(long)]
    pub force: bool,
}

/// `control=on|off` from the KEY=VALUE settings of `set-lun`.
fn control_setting(settings: &[String]) -> Result<Option<bool>, Fail> {
    let mut control = None;
    for kv in settings {
        control = Some(match kv.split_once('=') {
            Some(("control", "on")) => true,
            Some(("control", "off")) => false,
            _ => {
                return Err(Fail::Usage(format!(
                    "unknown setting {kv:?}: use control=on or control=off (and --mode, --size)"
                )))
            }
        });
    }
    Ok(control)
}

pub(super) fn set_lun(t: &TargetOpt, lun: u64, c: LunChange, o: &AdminOpts) -> Result<(), Fail> {
    let control = control_setting(&c.settings)?;
    if c.mode.is_none() && c.size.is_none() && control.is_none() {
        return Err(Fail::Usage(
            "give --mode, --size and/or control=on|off".into(),
        ));
    }
    let req = Request::SetLun {
        target: target_of(o, t)?,
        lun,
        mode: c.mode,
        size: c.size,
        force: c.force,
        control,
    };
    send(o, &req, |v| {
        let control = match v["control"].as_bool() {
            Some(true) => ", control channel on",
            Some(false) => ", control channel off",
            None => "",
        };
        println!(
            "LUN {} of {}: mode {}, {}{control}",
            v["lun"],
            s(v, "target"),
            s(v, "mode"),
            human_size(v["size_bytes"].as_u64().unwrap_or(0))
        )
    })
}

pub(super) fn add_portal(
    portal: String,
    t: &TargetOpt,
    tpgt: Option<u16>,
    o: &AdminOpts,
) -> Result<(), Fail> {
    let req = Request::AddPortal {
        target: target_of(o, t)?,
        portal,
        tpgt,
    };
    send(o, &req, |v| {
        println!(
            "{} now reachable on {},{}",
            s(v, "target"),
            s(v, "portal"),
            v["tpgt"]
        )
    })
}

/// What `allow` grants an initiator.
#[derive(Args, Debug)]
pub struct Grant {
    /// LUN masking: the LUNs it may see, e.g. 0,2 (other LUNs look
    /// non-existent to it; takes effect at once for logged-in sessions).
    #[arg(long, value_delimiter = ',', value_name = "N,N,..")]
    pub luns: Option<Vec<u64>>,
    /// Drop its LUN masking: it sees every LUN.
    #[arg(long, conflicts_with = "luns")]
    pub all_luns: bool,
    /// Per-initiator CHAP account USER:SECRET (replaces the target-wide ones for it).
    #[arg(long, value_name = "USER:SECRET")]
    pub chap: Option<String>,
    /// Target credentials for mutual CHAP with this initiator.
    #[arg(long, value_name = "USER:SECRET", requires = "chap")]
    pub mutual_chap: Option<String>,
    /// Grant the control right: it may SET control-channel switches
    /// (vendor command C7h; docs/control-channel.md).
    #[arg(long, conflicts_with = "no_control")]
    pub control: bool,
    /// Take the control right away.
    #[arg(long)]
    pub no_control: bool,
}

impl Grant {
    /// Grant (Some(true)) or take away (Some(false)) the control right;
    /// `None` leaves it as it is.
    fn control(&self) -> Option<bool> {
        (self.control || self.no_control).then_some(self.control)
    }
}

pub(super) fn allow(initiator: String, t: &TargetOpt, g: Grant, o: &AdminOpts) -> Result<(), Fail> {
    let chap = g
        .chap
        .as_deref()
        .map(|c| account(c, "--chap"))
        .transpose()?;
    let mutual_chap = g
        .mutual_chap
        .as_deref()
        .map(|m| account(m, "--mutual-chap"))
        .transpose()?;
    let control = g.control();
    let req = Request::Allow {
        target: target_of(o, t)?,
        initiator,
        luns: g.luns,
        all_luns: g.all_luns,
        chap,
        mutual_chap,
        control,
    };
    send(o, &req, |v| {
        let luns = match v["luns"].as_array() {
            Some(a) => format!("LUNs {}", join(a.iter().map(|n| n.to_string()), ",")),
            None => "all LUNs".to_string(),
        };
        let control = if v["control"] == true {
            ", control right"
        } else {
            ""
        };
        println!(
            "allowed {} on {} ({luns}{control})",
            s(v, "initiator"),
            s(v, "target")
        )
    })
}

pub(super) fn deny(
    initiator: String,
    t: &TargetOpt,
    allow_any: bool,
    o: &AdminOpts,
) -> Result<(), Fail> {
    let req = Request::Deny {
        target: target_of(o, t)?,
        initiator,
        allow_any,
    };
    send(o, &req, |v| {
        println!(
            "removed {} from the ACL of {}",
            s(v, "initiator"),
            s(v, "target")
        );
        if v["open_to_all"].as_bool() == Some(true) {
            println!("the ACL is empty: every initiator may log in");
        }
        if let Some(t) = v["sessions_still_logged_in"]
            .as_array()
            .filter(|a| !a.is_empty())
        {
            println!(
                "sessions still logged in (TSIH {}); end them with `iscsi target logout-session`",
                join(t.iter().map(|x| x.to_string()), ", ")
            );
        }
    })
}

/// The account changes of `set-chap`.
#[derive(Args, Debug)]
pub struct ChapChange {
    /// Change discovery authentication instead of a target's.
    #[arg(long, conflicts_with_all = ["target", "initiator"])]
    pub discovery: bool,
    /// Change this initiator's own accounts (it must be in the ACL).
    #[arg(long, value_name = "IQN")]
    pub initiator: Option<String>,
    /// Add or replace an incoming account USER:SECRET.
    #[arg(long, value_name = "USER:SECRET")]
    pub add: Option<String>,
    /// Remove the incoming account of USER.
    #[arg(long, value_name = "USER")]
    pub remove: Option<String>,
    /// Set the target's own account for mutual CHAP.
    #[arg(long, value_name = "USER:SECRET")]
    pub mutual: Option<String>,
    /// Drop the mutual CHAP account.
    #[arg(long)]
    pub no_mutual: bool,
    /// Drop every account first (no authentication).
    #[arg(long)]
    pub clear: bool,
}

pub(super) fn set_chap(t: &TargetOpt, c: ChapChange, o: &AdminOpts) -> Result<(), Fail> {
    if c.add.is_none() && c.remove.is_none() && c.mutual.is_none() && !c.no_mutual && !c.clear {
        return Err(Fail::Usage(
            "give --add, --remove, --mutual, --no-mutual or --clear".into(),
        ));
    }
    let add = c.add.as_deref().map(|a| account(a, "--add")).transpose()?;
    let mutual = c
        .mutual
        .as_deref()
        .map(|a| account(a, "--mutual"))
        .transpose()?;
    let target = if c.discovery {
        None
    } else {
        Some(target_of(o, t)?)
    };
    let req = Request::SetChap {
        target,
        initiator: c.initiator,
        add,
        remove: c.remove,
        mutual,
        no_mutual: c.no_mutual,
        clear: c.clear,
    };
    send(o, &req, |v| {
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
}

pub(super) fn logout_session(tsih: u16, target: Option<String>, o: &AdminOpts) -> Result<(), Fail> {
    send(o, &Request::LogoutSession { tsih, target }, |v| {
        println!(
            "session {} of {} on {} ended",
            v["tsih"],
            s(v, "initiator"),
            s(v, "target")
        )
    })
}

pub(super) fn save(file: Option<PathBuf>, o: &AdminOpts) -> Result<(), Fail> {
    let file = file.map(|f| std::path::absolute(&f).unwrap_or(f));
    send(o, &Request::Save { file }, |v| {
        println!("saved to {}", s(v, "file"))
    })
}

fn join(items: impl Iterator<Item = String>, sep: &str) -> String {
    items.collect::<Vec<_>>().join(sep)
}
