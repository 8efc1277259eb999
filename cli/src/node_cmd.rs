//! `iscsi node list|show|update|delete`: the node records (one JSON file
//! per target and portal, `initiator::daemon::nodes`). Like iscsiadm's
//! `-m node`, these edit the database directly: no daemon needed; the
//! daemon reads a record when it logs in.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use initiator::control::parse_tag;
use initiator::daemon::nodes::{Credentials, Node, NodeDb, NodeUpdate, Startup};
use initiator::Error;
use serde_json::json;

use crate::daemon_cmd::StateOpts;

pub const NODE_HELP: &str = "\
Settings (iscsiadm name in brackets):
  --startup manual|automatic     [node.startup] automatic: the daemon logs in at start,
                                 and `iscsi login --all` includes it
  --chap USER:SECRET | --no-chap [node.session.auth.username/password]
  --mutual-chap USER:SECRET      [node.session.auth.username_in/password_in]
  --connections N                [node.session.nr_sessions is per node there; here MC/S]
  --nbd HOST:PORT | unix:PATH    where the session's NBD exports listen (--nbd default:
                                 127.0.0.1:10809 if free, else the next free port)
  --replacement-timeout SECS     [node.session.timeo.replacement_timeout] default 120
  --digests on|off               [node.conn[0].iscsi.HeaderDigest/DataDigest]
  --tag-writes N|none            control channel: tag 1-7 in the reserved bits of every
  --tag-reads N|none             WRITE / READ of the session's exports (docs/control-channel.md)

Examples:
  iscsi node list
  iscsi node show --target iqn.2024-01.com.example:disk1
  iscsi node update --target iqn.2024-01.com.example:disk1 --chap alice:secret12chars --startup automatic
  iscsi node delete --target iqn.2024-01.com.example:disk1 --portal 192.0.2.10:3260

Secrets are stored in files readable by their owner only (0600) and never printed.";

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// List node records: `PORTAL,TPGT TARGET  startup`.
    List(NodeListArgs),
    /// Show the settings of a node (secrets hidden).
    Show(NodeSelect),
    /// Change settings of a node (all its portals unless --portal).
    Update(NodeUpdateArgs),
    /// Delete node records (all portals of the target unless --portal).
    Delete(NodeSelect),
}

#[derive(Args, Debug)]
pub struct NodeListArgs {
    #[command(flatten)]
    pub state: StateOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct NodeSelect {
    /// Target IQN.
    #[arg(long)]
    pub target: String,
    /// Portal HOST[:PORT] (needed when the target has several records).
    #[arg(long)]
    pub portal: Option<String>,
    #[command(flatten)]
    pub state: StateOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct NodeUpdateArgs {
    #[command(flatten)]
    pub node: NodeSelect,
    /// manual or automatic.
    #[arg(long)]
    pub startup: Option<Startup>,
    /// CHAP credentials USER:SECRET (the target authenticates us).
    #[arg(long, value_name = "USER:SECRET", conflicts_with = "no_chap")]
    pub chap: Option<String>,
    /// Mutual CHAP: USER:SECRET the target must prove.
    #[arg(long, value_name = "USER:SECRET")]
    pub mutual_chap: Option<String>,
    /// Turn CHAP (and mutual CHAP) off.
    #[arg(long)]
    pub no_chap: bool,
    /// Connections per session (MC/S), 1..16.
    #[arg(long)]
    pub connections: Option<u16>,
    /// NBD address: HOST:PORT or unix:PATH; `default` clears it.
    #[arg(long)]
    pub nbd: Option<String>,
    /// Seconds a lost session may recover before NBD requests fail (EIO).
    #[arg(long, value_name = "SECS")]
    pub replacement_timeout: Option<u64>,
    /// CRC32C header and data digests: on or off.
    #[arg(long, value_name = "on|off")]
    pub digests: Option<String>,
    /// Control-channel tag 1-7 of every WRITE of the session's exports;
    /// `none` (or 0) untags.
    #[arg(long, value_name = "N|none")]
    pub tag_writes: Option<String>,
    /// Control-channel tag 1-7 of every READ; `none` (or 0) untags.
    #[arg(long, value_name = "N|none")]
    pub tag_reads: Option<String>,
}

pub fn run(cmd: NodeCmd) -> ExitCode {
    let verb = match &cmd {
        NodeCmd::List(_) => "list",
        NodeCmd::Show(_) => "show",
        NodeCmd::Update(_) => "update",
        NodeCmd::Delete(_) => "delete",
    };
    let r = match cmd {
        NodeCmd::List(a) => list(a),
        NodeCmd::Show(a) => show(a),
        NodeCmd::Update(a) => update(a),
        NodeCmd::Delete(a) => delete(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iscsi node {verb}: {e}");
            crate::initiator_cmd::exit_code(&e)
        }
    }
}

/// A node as JSON, secrets replaced by `"<set>"`.
pub fn node_json(n: &Node, db: &NodeDb) -> serde_json::Value {
    let cred = |c: &Option<Credentials>| {
        c.as_ref()
            .map(|c| json!({"user": c.user, "secret": "<set>"}))
    };
    json!({
        "target": n.target,
        "portal": n.portal,
        "tpgt": n.tpgt,
        "startup": n.startup,
        "connections": n.connections,
        "nbd": n.nbd,
        "replacement_timeout": n.replacement_timeout,
        "chap": cred(&n.chap),
        "mutual_chap": cred(&n.mutual_chap),
        "digests": n.digests,
        "tag_writes": n.tag_writes,
        "tag_reads": n.tag_reads,
        "file": db.path_of(&n.target, &n.portal),
    })
}

fn list(a: NodeListArgs) -> Result<(), Error> {
    let db = NodeDb::new(&a.state.state_dir());
    let nodes = db.list()?;
    if a.json {
        let v: Vec<_> = nodes.iter().map(|n| node_json(n, &db)).collect();
        println!("{:#}", json!(v));
    } else if nodes.is_empty() {
        eprintln!(
            "no node records in {}; `iscsi discover --portal HOST` records them",
            db.dir().display()
        );
    } else {
        for n in &nodes {
            println!(
                "{},{} {}  {}",
                n.portal,
                n.tpgt.unwrap_or(1),
                n.target,
                n.startup
            );
        }
    }
    Ok(())
}

fn print_node(n: &Node, db: &NodeDb) {
    let cred = |c: &Option<Credentials>| {
        c.as_ref()
            .map(|c| format!("{} (secret set)", c.user))
            .unwrap_or_else(|| "none".into())
    };
    println!("target:              {}", n.target);
    println!("portal:              {}", n.portal);
    if let Some(t) = n.tpgt {
        println!("tpgt:                {t}");
    }
    println!("startup:             {}", n.startup);
    println!("connections:         {}", n.connections);
    println!(
        "nbd:                 {}",
        n.nbd
            .as_deref()
            .unwrap_or("default (127.0.0.1:10809 or the next free port)")
    );
    println!("replacement_timeout: {} s", n.replacement_timeout);
    println!("chap:                {}", cred(&n.chap));
    println!("mutual_chap:         {}", cred(&n.mutual_chap));
    println!(
        "digests:             {}",
        if n.digests { "on" } else { "off" }
    );
    let tag = |t: Option<u8>| t.map_or("none".to_string(), |t| t.to_string());
    println!("tag_writes:          {}", tag(n.tag_writes));
    println!("tag_reads:           {}", tag(n.tag_reads));
    println!(
        "file:                {}",
        db.path_of(&n.target, &n.portal).display()
    );
}

fn show(a: NodeSelect) -> Result<(), Error> {
    let db = NodeDb::new(&a.state.state_dir());
    let nodes = db.find(&a.target, a.portal.as_deref())?;
    if nodes.is_empty() {
        db.get(&a.target, a.portal.as_deref())?;
    }
    if a.json {
        let v: Vec<_> = nodes.iter().map(|n| node_json(n, &db)).collect();
        println!("{:#}", json!(v));
    } else {
        for (i, n) in nodes.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print_node(n, &db);
        }
    }
    Ok(())
}

fn changes(a: &NodeUpdateArgs) -> Result<NodeUpdate, Error> {
    let digests = match a.digests.as_deref() {
        None => None,
        Some("on" | "yes" | "true" | "crc32c") => Some(true),
        Some("off" | "no" | "false" | "none") => Some(false),
        Some(o) => {
            return Err(Error::Usage(format!(
                "--digests takes on or off, not {o:?}"
            )))
        }
    };
    let nbd = match a.nbd.as_deref() {
        None => None,
        Some("default" | "") => Some(None),
        Some(s) => {
            s.parse::<initiator::NbdListen>()
                .map_err(|e| Error::Usage(format!("--nbd {s:?}: {e}")))?;
            Some(Some(s.to_string()))
        }
    };
    let u = NodeUpdate {
        startup: a.startup,
        connections: a.connections,
        nbd,
        replacement_timeout: a.replacement_timeout,
        chap: if a.no_chap {
            Some(None)
        } else {
            a.chap
                .as_deref()
                .map(|c| Credentials::parse(c, "--chap").map(Some))
                .transpose()?
        },
        mutual_chap: a
            .mutual_chap
            .as_deref()
            .map(|c| Credentials::parse(c, "--mutual-chap").map(Some))
            .transpose()?,
        digests,
        tag_writes: a.tag_writes.as_deref().map(parse_tag).transpose()?,
        tag_reads: a.tag_reads.as_deref().map(parse_tag).transpose()?,
    };
    if u.is_empty() {
        return Err(Error::Usage(
            "nothing to change; see `iscsi node update --help` for the settings".into(),
        ));
    }
    Ok(u)
}

fn update(a: NodeUpdateArgs) -> Result<(), Error> {
    let u = changes(&a)?;
    let db = NodeDb::new(&a.node.state.state_dir());
    let nodes = db.update(&a.node.target, a.node.portal.as_deref(), &u)?;
    if a.node.json {
        let v: Vec<_> = nodes.iter().map(|n| node_json(n, &db)).collect();
        println!("{:#}", json!(v));
    } else {
        for n in &nodes {
            println!("updated {} at {}", n.target, n.portal);
        }
        println!("(a logged-in session keeps its settings until the next login)");
    }
    Ok(())
}

fn delete(a: NodeSelect) -> Result<(), Error> {
    let db = NodeDb::new(&a.state.state_dir());
    let nodes = db.delete(&a.target, a.portal.as_deref())?;
    if a.json {
        let v: Vec<_> = nodes
            .iter()
            .map(|n| json!({"target": n.target, "portal": n.portal}))
            .collect();
        println!("{:#}", json!(v));
    } else {
        for n in &nodes {
            println!("deleted {} at {}", n.target, n.portal);
        }
    }
    Ok(())
}
