//! `iscsi ctl list | get NAME | set NAME=VALUE`: the control channel's
//! switches on one LUN of a target, through the vendor control command
//! (docs/control-channel.md; `initiator::control`). Like `iscsi scsi`, each
//! run opens a session, sends the command and logs out; no daemon needed.
//!
//! Exit codes: 0 ok, 1 refused (no control right, channel off, unknown
//! switch, bad value), 2 usage, 3 unreachable.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use initiator::session::Session;
use initiator::{control, Error};
use proto::scsi::control::{ControlVpd, Switch};
use serde_json::json;

use crate::initiator_cmd::{exit_code, login_config, one_line, LoginOpts};

const CTL_EXAMPLES: &str = "\
The switches are the target's, per LUN; at least:
  io_mode      wb | wt | ro   the LUN's write mode (ro: writes fail WRITE PROTECTED)
  trace        on | off       log every command of the LUN on the target
  tagN.policy  (N = 1..7)     what the target does with I/O tagged N: log, fua, reject, limit:N
  can_set      yes | no       (read-only) whether this initiator may SET
`iscsi ctl list` shows them all with their values and help. LIST and GET are
open to any initiator that may use the LUN; SET needs the control right
(`iscsi target serve --control` grants it to every initiator).

Examples:
  iscsi ctl info --portal 127.0.0.1:3260 --target iqn.2024-01.com.example:disk1
  iscsi ctl list --portal 127.0.0.1:3260 --target iqn.2024-01.com.example:disk1 --lun 0
  iscsi ctl get io_mode --portal 127.0.0.1:3260 --target IQN --json
  iscsi ctl set tag6.policy=fua --portal 127.0.0.1:3260 --target IQN
  iscsi ctl set io_mode=ro --portal 127.0.0.1:3260 --target IQN --chap alice:secret12chars

Tagging I/O is a login option (`iscsi login --tag-writes 6`), an NBD export
name (`lun0@tag6`) or `iscsi scsi ... raw CDB --tag N`; docs/control-channel.md.

Exit codes: 0 ok, 1 refused (no control right, channel off, unknown switch or
value), 2 usage, 3 unreachable.";

/// `iscsi ctl` verbs.
#[derive(Subcommand, Debug)]
#[command(after_help = CTL_EXAMPLES)]
pub enum CtlCmd {
    /// The channel's state on the LUN from its vendor VPD page (INQUIRY
    /// page C7h): on or off, whether this initiator may SET, where the tag
    /// bits are, the switch names. With the channel off: "off" (exit 0).
    #[command(after_help = CTL_EXAMPLES)]
    Info(CtlTarget),
    /// List every switch of the LUN: name, value, writable, help.
    #[command(after_help = CTL_EXAMPLES)]
    List(CtlTarget),
    /// Print one switch's value.
    #[command(after_help = CTL_EXAMPLES)]
    Get {
        /// Switch name, e.g. io_mode.
        name: String,
        #[command(flatten)]
        at: CtlTarget,
    },
    /// Change a switch (needs the control right on the target), then print
    /// the value in force.
    #[command(after_help = CTL_EXAMPLES)]
    Set {
        /// NAME=VALUE, e.g. io_mode=ro or tag6.policy=fua.
        #[arg(value_name = "NAME=VALUE")]
        assignment: String,
        #[command(flatten)]
        at: CtlTarget,
    },
}

/// Which LUN of which target, and how to log in.
#[derive(Args, Debug)]
pub struct CtlTarget {
    #[command(flatten)]
    pub login: LoginOpts,
    /// Target IQN.
    #[arg(long)]
    pub target: String,
    /// LUN number.
    #[arg(long, default_value_t = 0)]
    pub lun: u16,
}

enum Op {
    Info,
    List,
    Get(String),
    Set(String, String),
}

pub fn run(cmd: CtlCmd) -> ExitCode {
    let (verb, at, op) = match cmd {
        CtlCmd::Info(at) => ("info", at, Ok(Op::Info)),
        CtlCmd::List(at) => ("list", at, Ok(Op::List)),
        CtlCmd::Get { name, at } => ("get", at, Ok(Op::Get(name))),
        CtlCmd::Set { assignment, at } => ("set", at, parse_assignment(&assignment)),
    };
    let rt = match crate::initiator_cmd::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let switch = match &op {
        Ok(Op::Get(n) | Op::Set(n, _)) => Some(n.clone()),
        _ => None,
    };
    let res = op.and_then(|op| rt.block_on(exec(&at, op)));
    rt.shutdown_timeout(Duration::from_millis(100));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let me = initiator::initiator_name::resolve(at.login.auth.initiator_name.as_deref());
            let what = control::Refused::Command {
                switch: switch.as_deref(),
            };
            let why = control::sense_of(&e).and_then(|s| control::advice(s, what, &me, &at.target));
            match why {
                Some(why) => eprintln!("iscsi ctl {verb}: {why} (the target said: {e})"),
                None => eprintln!("iscsi ctl {verb}: {}", one_line(&e.to_string())),
            }
            exit_code(&e)
        }
    }
}

/// `NAME=VALUE` (the value may contain `=`; neither part empty).
fn parse_assignment(s: &str) -> Result<Op, Error> {
    match s.split_once('=') {
        Some((n, v)) if !n.trim().is_empty() && !v.is_empty() => {
            Ok(Op::Set(n.trim().to_string(), v.to_string()))
        }
        _ => Err(Error::Usage(format!(
            "{s:?} is not NAME=VALUE (e.g. io_mode=ro); `iscsi ctl list` shows the switches"
        ))),
    }
}

async fn exec(at: &CtlTarget, op: Op) -> Result<(), Error> {
    let o = &at.login;
    let mut cfg = login_config(&o.portal, &at.target, &o.auth, 1, false, o.timeout)?;
    cfg.recovery_timeout = cfg.login_timeout;
    let overall = cfg.login_timeout * 4 + cfg.recovery_timeout;
    let lun = proto::scsi::lun::Lun::from_number(at.lun).to_u64();
    let work = async {
        let s = Session::connect(cfg).await?;
        let out = run_op(&s, lun, op, o.json).await;
        let _ = tokio::time::timeout(Duration::from_secs(3), s.logout()).await;
        out
    };
    tokio::time::timeout(overall, work).await.map_err(|_| {
        Error::Timeout(initiator::TimedOut::Deadline {
            what: "the command",
            limit: overall,
        })
    })?
}

async fn run_op(s: &Session, lun: u64, op: Op, json: bool) -> Result<(), Error> {
    match op {
        Op::Info => match control::capabilities(s, lun).await? {
            Some(v) => print_info(&v, json),
            None if json => println!("{:#}", json!({"enabled": false, "listed": false})),
            None => println!(
                "control channel: off (the LUN does not list VPD page C7h); turn it on with \
                 `iscsi target set-lun --target {} --lun N control=on` or start the target \
                 with `iscsi target serve --control`",
                s.config().target_name
            ),
        },
        Op::List => {
            let list = control::list(s, lun).await?;
            if json {
                let v: Vec<_> = list.iter().map(switch_json).collect();
                println!("{:#}", json!(v));
            } else {
                print_table(&list);
            }
        }
        Op::Get(name) => print_one(&control::get(s, lun, &name).await?, json),
        Op::Set(name, value) => print_one(&control::set(s, lun, &name, &value).await?, json),
    }
    Ok(())
}

fn print_info(v: &ControlVpd, json: bool) {
    let fields: Vec<_> = v
        .tag_bits
        .iter()
        .map(|f| json!({"cdb_len": f.cdb_len, "byte": f.byte, "bits": format!("{}-{}", f.shift + 2, f.shift)}))
        .collect();
    if json {
        println!(
            "{:#}",
            json!({
                "enabled": v.enabled, "listed": true, "control_right": v.control_right,
                "opcode": format!("{:#04x}", v.opcode), "max_tag": v.max_tag,
                "tag_fields": fields, "switches": v.switches,
            })
        );
        return;
    }
    let onoff = |b: bool| if b { "on" } else { "off" };
    println!("control channel: {}", onoff(v.enabled));
    println!(
        "control right:   {} (this initiator {} SET switches)",
        if v.control_right { "yes" } else { "no" },
        if v.control_right { "may" } else { "may not" }
    );
    println!("vendor opcode:   {:#04x}", v.opcode);
    println!("tags:            1..={}", v.max_tag);
    for f in &v.tag_bits {
        println!(
            "  {}-byte READ/WRITE: byte {}, bits {}-{}",
            f.cdb_len,
            f.byte,
            f.shift + 2,
            f.shift
        );
    }
    println!("switches:        {}", v.switches.join(" "));
}

fn switch_json(sw: &Switch) -> serde_json::Value {
    json!({"name": sw.name, "value": sw.value, "writable": sw.writable, "help": sw.help})
}

fn print_one(sw: &Switch, json: bool) {
    if json {
        println!("{:#}", switch_json(sw));
    } else {
        println!("{}={}", sw.name, sw.value);
    }
}

/// `NAME  VALUE  rw|ro  HELP`, columns aligned.
fn print_table(list: &[Switch]) {
    let w_name = list.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
    let w_value = list.iter().map(|s| s.value.len()).max().unwrap_or(5).max(5);
    println!("{:<w_name$}  {:<w_value$}  MODE  HELP", "NAME", "VALUE");
    for s in list {
        let mode = if s.writable { "rw" } else { "ro" };
        println!(
            "{:<w_name$}  {:<w_value$}  {mode:<4}  {}",
            s.name, s.value, s.help
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments() {
        match parse_assignment("io_mode=ro").unwrap() {
            Op::Set(n, v) => assert_eq!((n.as_str(), v.as_str()), ("io_mode", "ro")),
            _ => panic!("not a set"),
        }
        match parse_assignment("a=b=c").unwrap() {
            Op::Set(n, v) => assert_eq!((n.as_str(), v.as_str()), ("a", "b=c")),
            _ => panic!("not a set"),
        }
        for bad in ["io_mode", "=ro", "io_mode="] {
            let e = parse_assignment(bad).err().expect(bad).to_string();
            assert!(e.contains("NAME=VALUE"), "{e}");
        }
    }
}
