//! Human output of the admin verbs: tables for `show`, one-line summaries,
//! `--json` pass-through.

use iscsi_target::admin::protocol::{
    AclInfo, LunInfo, Request, SessionInfo, ShowResult, TargetInfo,
};

use super::client::{call_ok, socket_of, Fail};
use super::AdminOpts;

pub(super) fn print_result(
    o: &AdminOpts,
    v: &serde_json::Value,
    human: impl FnOnce(&serde_json::Value),
) {
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

pub(super) fn s<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("?")
}

pub(super) fn show(o: &AdminOpts, target: Option<String>) -> Result<(), Fail> {
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
pub(crate) fn human_size(n: u64) -> String {
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

pub(super) fn print_target(t: &TargetInfo) {
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
    out.push_str(&render_acl(&t.acl));
    out.push_str(&render_luns(&t.luns));
    out.push_str(&render_sessions(&t.sessions));
    out
}

/// Who may log in, with each entry's LUN mask, CHAP users and control right.
fn render_acl(acl: &[AclInfo]) -> String {
    let mut out = String::new();
    if acl.is_empty() {
        out.push_str("  ACL: any initiator\n");
    } else {
        out.push_str("  ACL:\n");
        for a in acl {
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
            if a.control {
                extra.push("control right".into());
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
    out
}

/// The LUN table, then each LUN's backend and control-channel lines.
fn render_luns(luns: &[LunInfo]) -> String {
    let mut out = String::new();
    if luns.is_empty() {
        out.push_str("  LUNs: none\n");
    } else {
        let rows: Vec<Vec<String>> = luns
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
        for l in luns {
            if let Some(info) = &l.backend_info {
                out.push_str(&backend_info_line(l.lun, info));
            }
            if l.control.enabled {
                out.push_str(&control_lines(l.lun, &l.control));
            }
        }
    }
    out
}

/// The session table with the negotiated burst values.
fn render_sessions(sessions: &[SessionInfo]) -> String {
    let mut out = String::new();
    if sessions.is_empty() {
        out.push_str("  Sessions: none\n");
    } else {
        let rows: Vec<Vec<String>> = sessions
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

pub(super) fn render_show(show: &ShowResult) -> String {
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

/// One line of what a backend reports about itself (rbd: image, size,
/// features, lock, monitors).
/// The control channel of one LUN: tags that were used or have a policy,
/// and the last few tagged commands.
fn control_lines(lun: u64, c: &iscsi_target::scsi::control::ControlSnapshot) -> String {
    let tags: Vec<String> = c
        .tags
        .iter()
        .filter(|(_, t)| t.commands > 0 || t.policy != "log")
        .map(|(n, t)| {
            format!(
                "tag {n} {}: {} cmds, {}{}",
                t.policy,
                t.commands,
                human_size(t.bytes),
                if t.rejected > 0 {
                    format!(", {} rejected", t.rejected)
                } else {
                    String::new()
                }
            )
        })
        .collect();
    let mut out = format!(
        "  LUN {lun} control channel on, trace {}; {}\n",
        if c.trace { "on" } else { "off" },
        if tags.is_empty() {
            "no tagged commands".to_string()
        } else {
            tags.join("; ")
        }
    );
    for e in c.recent.iter().rev().take(5) {
        let ms = e.time_ms % 86_400_000;
        out.push_str(&format!(
            "    {:02}:{:02}:{:02}.{:03} UTC tag {} {} LBA {} x{} from {}\n",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000,
            e.tag,
            if e.write { "WRITE" } else { "READ" },
            e.lba,
            e.blocks,
            e.initiator
        ));
    }
    out
}

fn backend_info_line(lun: u64, info: &serde_json::Value) -> String {
    let Some(m) = info.as_object() else {
        return String::new();
    };
    let fields: Vec<String> = m
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            serde_json::Value::Array(a) => format!(
                "{k}={}",
                a.iter()
                    .map(|x| x
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            other => format!("{k}={other}"),
        })
        .collect();
    format!("  LUN {lun}: {}\n", fields.join(" "))
}
