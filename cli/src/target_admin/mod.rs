//! `iscsi target show|add-target|remove-target|add-lun|remove-lun|set-lun|
//! add-portal|allow|deny|set-chap|logout-session|save`: the admin verbs,
//! talking to a running `iscsi target serve` over its admin socket
//! (newline-delimited JSON, see `iscsi_target::admin::protocol`).
//!
//! - [`client`]: the socket call and its failures (exit codes).
//! - [`verbs`]: one function per verb.
//! - [`render`]: tables and summaries for humans, `--json` for scripts.
//! - [`serve`]: the serve-side glue (`--config`, admin socket start-up).
//!
//! Exit codes: 0 ok, 1 refused (the daemon says why), 2 usage error,
//! 3 cannot reach the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

mod client;
mod render;
mod serve;
mod verbs;

pub(crate) use render::human_size;
pub use serve::{from_flags, load_config, start};

use client::Fail;
use verbs::{ChapChange, Grant, LunChange, LunIdentity};

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
        #[command(flatten)]
        id: LunIdentity,
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
    /// Change a LUN's IO mode (wb, wt, ro), size (shrinking needs --force)
    /// and/or control channel (`control=on|off`, docs/control-channel.md).
    SetLun {
        #[command(flatten)]
        t: TargetOpt,
        #[arg(long)]
        lun: u64,
        #[command(flatten)]
        change: LunChange,
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
        /// Initiator name (RFC 3722; a name with '_' is accepted with a
        /// warning unless the target runs with strict names).
        initiator: String,
        #[command(flatten)]
        t: TargetOpt,
        #[command(flatten)]
        grant: Grant,
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
        #[command(flatten)]
        change: ChapChange,
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

/// Dispatch: the verb's name (for messages) and its outcome.
fn exec(cmd: AdminCmd) -> (&'static str, Result<(), Fail>) {
    match cmd {
        AdminCmd::Show { target, o } => ("show", render::show(&o, target)),
        AdminCmd::AddTarget {
            name,
            alias,
            portals,
            tpgt,
            luns,
            o,
        } => (
            "add-target",
            verbs::add_target(name, alias, portals, tpgt, luns, &o),
        ),
        AdminCmd::RemoveTarget { name, force, o } => {
            ("remove-target", verbs::remove_target(name, force, &o))
        }
        AdminCmd::AddLun {
            spec,
            t,
            lun,
            id,
            o,
        } => ("add-lun", verbs::add_lun(spec, &t, lun, id, &o)),
        AdminCmd::RemoveLun { t, lun, force, o } => {
            ("remove-lun", verbs::remove_lun(&t, lun, force, &o))
        }
        AdminCmd::SetLun { t, lun, change, o } => ("set-lun", verbs::set_lun(&t, lun, change, &o)),
        AdminCmd::AddPortal { portal, t, tpgt, o } => {
            ("add-portal", verbs::add_portal(portal, &t, tpgt, &o))
        }
        AdminCmd::Allow {
            initiator,
            t,
            grant,
            o,
        } => ("allow", verbs::allow(initiator, &t, grant, &o)),
        AdminCmd::Deny {
            initiator,
            t,
            allow_any,
            o,
        } => ("deny", verbs::deny(initiator, &t, allow_any, &o)),
        AdminCmd::SetChap { t, change, o } => ("set-chap", verbs::set_chap(&t, change, &o)),
        AdminCmd::LogoutSession { tsih, target, o } => {
            ("logout-session", verbs::logout_session(tsih, target, &o))
        }
        AdminCmd::Save { file, o } => ("save", verbs::save(file, &o)),
    }
}

#[cfg(test)]
mod tests {
    use super::client::absolute_spec;
    use super::render::{human_size, render_show};
    use iscsi_target::admin::protocol::{
        AclInfo, IoStats, LunInfo, PortalGroupInfo, SessionInfo, ShowResult, TargetInfo,
    };

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

    fn control_sample() -> iscsi_target::scsi::control::ControlSnapshot {
        use iscsi_target::scsi::control::{ControlSnapshot, TagEvent, TagStats};
        let mut tags = std::collections::BTreeMap::new();
        tags.insert(
            "1".to_string(),
            TagStats {
                policy: "log".into(),
                ..TagStats::default()
            },
        );
        tags.insert(
            "6".to_string(),
            TagStats {
                policy: "fua".into(),
                commands: 3,
                bytes: 12288,
                ..TagStats::default()
            },
        );
        ControlSnapshot {
            enabled: true,
            trace: false,
            tags,
            recent: vec![TagEvent {
                time_ms: 43_200_123,
                initiator: "iqn.2024-01.org.example:h".into(),
                lun: 0,
                write: true,
                lba: 8,
                blocks: 1,
                tag: 6,
                policy: "fua".into(),
            }],
        }
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
                backend_info: None,
                control: control_sample(),
            }],
            acl: vec![AclInfo {
                initiator: "iqn.2024-01.org.example:h".into(),
                luns: Some(vec![0]),
                chap_users: vec!["h".into()],
                mutual_user: None,
                control: false,
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
            "LUN 0 control channel on, trace off; tag 6 fua: 3 cmds, 12 KiB",
            "12:00:00.123 UTC tag 6 WRITE LBA 8 x1 from iqn.2024-01.org.example:h",
            "warning: w1",
        ] {
            assert!(out.contains(needle), "{needle} missing in:\n{out}");
        }
    }
}
