//! Initiator verbs: `iscsi discover`, `iscsi scsi ...` (the `sg_inq` /
//! `sg_raw` of this stack). They work without any daemon: each run opens a
//! session, does its work and logs out.
//!
//! Exit codes: 0 ok, 1 refused/failed (login refused, CHECK CONDITION),
//! 2 usage, 3 cannot reach the target (refused, timeout, stopped answering).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use initiator::device;
use initiator::session::{ChapConfig, DataDirection, Session, SessionConfig};
use initiator::{discovery, initiator_name, Error, ErrorKind, Portal};
use serde_json::json;

use crate::scsi_print::{
    print_capacity, print_inquiry, print_json, print_luns, print_raw, print_vpd,
};

const DISCOVER_EXAMPLES: &str = "\
Output: one line per target portal, as iscsiadm prints them:
  192.0.2.10:3260,1 iqn.2024-01.com.example:disk1
With --json: [{\"name\": IQN, \"alias\": ALIAS|null, \"portals\": [{\"address\": \"HOST:PORT\", \"tpgt\": N}]}]

Examples:
  iscsi discover --portal 192.0.2.10
  iscsi discover --portal 192.0.2.10:3260 --chap alice:secret12chars --json

Exit codes: 0 ok, 1 refused (login, CHAP), 2 usage, 3 unreachable or timed out.";

const SCSI_EXAMPLES: &str = "\
Examples:
  iscsi scsi --portal 192.0.2.10 --target iqn.2024-01.com.example:disk1 --lun 0 inquiry
  iscsi scsi --portal 192.0.2.10 --target IQN readcap --json
  iscsi scsi --portal 192.0.2.10 --target IQN vpd 0x83
  iscsi scsi --portal 192.0.2.10 --target IQN raw 12 00 00 00 24 00 --read 36
  iscsi scsi --portal 192.0.2.10 --target IQN raw 2a00 00000800 00 0008 00 --write-file 4k.bin
  iscsi scsi --portal 192.0.2.10 --target IQN raw 2a00 00000800 00 0008 00 --write-file 4k.bin --tag 6

LUN numbers are the target's: tgtd's first disk is LUN 1 (LUN 0 is its
controller); `report-luns` lists them. With --json every operation prints one
JSON object (report-luns: an array); errors go to stderr as one line.

Exit codes: 0 GOOD, 1 refused or non-GOOD SCSI status, 2 usage,
3 unreachable, timed out or connection lost beyond recovery.";

#[derive(Subcommand, Debug)]
pub enum InitiatorCmd {
    /// Discover targets on a portal (SendTargets=All); prints `HOST:PORT,TPGT IQN`.
    #[command(after_help = DISCOVER_EXAMPLES)]
    Discover(DiscoverArgs),
    /// Log in, send one SCSI command to a LUN, print the decoded answer, log out
    /// (the sg_inq / sg_readcap / sg_raw of this stack; no daemon needed).
    #[command(after_help = SCSI_EXAMPLES)]
    Scsi(ScsiArgs),
}

/// Options shared by every verb that logs in.
#[derive(Args, Debug, Clone)]
pub struct LoginOpts {
    /// Portal to connect to, HOST[:PORT] (default port 3260).
    #[arg(long)]
    pub portal: String,
    #[command(flatten)]
    pub auth: AuthOpts,
    /// Bound, in seconds, on connecting, each login step and each command.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Print one JSON document on stdout instead of text (errors stay on
    /// stderr, exit codes unchanged). Accepted anywhere on the line.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Who we are and how we authenticate (CHAP); shared by every verb that
/// logs in, including `iscsi login`.
#[derive(Args, Debug, Clone)]
pub struct AuthOpts {
    /// CHAP credentials USER:SECRET (the target authenticates us).
    #[arg(long, value_name = "USER:SECRET")]
    pub chap: Option<String>,
    /// Mutual CHAP: USER:SECRET the target must prove (needs --chap).
    #[arg(long, value_name = "USER:SECRET", requires = "chap")]
    pub mutual_chap: Option<String>,
    /// CHAP algorithms to offer, strongest first, as CHAP_A numbers or names
    /// (5/md5, 6/sha1, 7/sha256, 8/sha3-256). Default: 8,6,5,7 (works with tgtd).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub chap_alg: Vec<String>,
    /// Initiator name to use instead of the stored one.
    #[arg(long)]
    pub initiator_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct DiscoverArgs {
    #[command(flatten)]
    pub login: LoginOpts,
    /// Where discovered targets are recorded as nodes (`iscsi node list`).
    #[command(flatten)]
    pub state: crate::daemon_cmd::StateOpts,
    /// Do not record what is found in the node database.
    #[arg(long)]
    pub no_record: bool,
}

#[derive(Args, Debug)]
pub struct ScsiArgs {
    #[command(flatten)]
    pub login: LoginOpts,
    /// Target IQN.
    #[arg(long)]
    pub target: String,
    /// LUN number (see `report-luns`; tgtd's first disk is LUN 1).
    #[arg(long, default_value_t = 0)]
    pub lun: u16,
    /// Connections to open in the session (MC/S), if the target allows.
    #[arg(long, default_value_t = 1)]
    pub connections: u16,
    /// Request CRC32C header and data digests.
    #[arg(long)]
    pub digests: bool,
    #[command(subcommand)]
    pub op: ScsiOp,
}

#[derive(Subcommand, Debug)]
pub enum ScsiOp {
    /// Standard INQUIRY.
    Inquiry,
    /// READ CAPACITY (16, falling back to 10).
    Readcap,
    /// REPORT LUNS, with INQUIRY and capacity of each LUN.
    ReportLuns,
    /// TEST UNIT READY.
    Tur,
    /// A VPD page (e.g. 0x00, 0x80, 0x83, 0xb0, 0xb2), decoded when known.
    Vpd {
        /// Page code, decimal or 0x-hex.
        page: String,
    },
    /// A raw CDB given as hex bytes ("12 00 00 00 24 00" or "1200000024 00").
    Raw {
        /// CDB bytes in hex.
        #[arg(required = true, num_args = 1..)]
        cdb: Vec<String>,
        /// Expect up to LEN bytes of Data-In.
        #[arg(long, value_name = "LEN", conflicts_with = "write_file")]
        read: Option<u32>,
        /// Send this file's bytes as Data-Out.
        #[arg(long, value_name = "FILE")]
        write_file: Option<std::path::PathBuf>,
        /// Write the Data-In bytes to FILE (binary) instead of a hex dump.
        #[arg(long, value_name = "FILE", requires = "read")]
        output: Option<std::path::PathBuf>,
        /// Control channel: put tag N (1-7; 0 clears) in the reserved bits of
        /// this READ/WRITE(10/12/16) CDB (WRITE(10) byte 6 = N << 5).
        #[arg(long, value_name = "N")]
        tag: Option<u8>,
    },
}

/// The worker threads the environment variable `name` asks for: `None`
/// when it is unset; an error, said on stderr, when it is not a number
/// from 1 to 1024.
pub(crate) fn threads_from_env(name: &str) -> Result<Option<usize>, ExitCode> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(Some(n)),
            _ => {
                eprintln!("iscsi: {name}={v:?} is not a number of threads from 1 to 1024");
                Err(ExitCode::from(2))
            }
        },
    }
}

/// The environment variable that picks the initiator's worker threads.
pub(crate) const THREADS_ENV: &str = "ISCSI_INITIATOR_THREADS";

/// The tokio runtime of the initiator verbs and the daemon, or the exit
/// code after saying why it could not start.
///
/// One thread by default (`current_thread`): every hop of a command (NBD
/// request, iSCSI PDU out, response in, NBD reply) then stays on one thread
/// and wakes nothing across cores. Measured with fio's nbd engine at 4 KiB
/// QD32 through `login --foreground --nbd` (scripts/bench-nbd.sh): about
/// 0.25 context switches and 12-19 µs of the bridge's CPU per I/O, against
/// 0.8-1.2 and 23-33 µs with two workers; 128 KiB sequential I/O is no
/// slower. `ISCSI_INITIATOR_THREADS=N` (N >= 2) asks for a multi-threaded
/// runtime of N workers instead, for many busy sessions on a large host.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    let threads = threads_from_env(THREADS_ENV)?.unwrap_or(1);
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("iscsi: cannot start the runtime: {e}");
        ExitCode::from(1)
    })
}

pub fn run(cmd: InitiatorCmd) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let (verb, res) = match cmd {
        InitiatorCmd::Discover(a) => ("discover", rt.block_on(discover(a))),
        InitiatorCmd::Scsi(a) => ("scsi", rt.block_on(scsi(a))),
    };
    rt.shutdown_timeout(Duration::from_millis(100));
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("iscsi {verb}: {}", one_line(&e.to_string()));
            exit_code(&e)
        }
    }
}

pub(crate) fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

pub(crate) fn exit_code(e: &Error) -> ExitCode {
    ExitCode::from(match e.kind() {
        ErrorKind::Failed => 1,
        ErrorKind::Usage => 2,
        ErrorKind::Unreachable => 3,
    })
}

fn parse_creds(s: &str, what: &str) -> Result<(String, Vec<u8>), Error> {
    match s.split_once(':') {
        Some((u, p)) if !u.is_empty() && !p.is_empty() => {
            Ok((u.to_string(), p.as_bytes().to_vec()))
        }
        _ => Err(Error::Usage(format!("{what} must be USER:SECRET"))),
    }
}

fn parse_alg(s: &str) -> Result<u8, Error> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "5" | "md5" => 5,
        "6" | "sha1" | "sha-1" => 6,
        "7" | "sha256" | "sha-256" => 7,
        "8" | "sha3-256" | "sha3" => 8,
        other => return Err(Error::Usage(format!("unknown CHAP algorithm {other:?}"))),
    })
}

pub(crate) fn chap_config(o: &AuthOpts) -> Result<Option<ChapConfig>, Error> {
    let Some(c) = &o.chap else { return Ok(None) };
    let (user, secret) = parse_creds(c, "--chap")?;
    let mutual = o
        .mutual_chap
        .as_deref()
        .map(|m| parse_creds(m, "--mutual-chap"))
        .transpose()?;
    let algorithms = o
        .chap_alg
        .iter()
        .map(|a| parse_alg(a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(ChapConfig {
        user,
        secret,
        mutual,
        algorithms,
    }))
}

async fn discover(a: DiscoverArgs) -> Result<ExitCode, Error> {
    let o = &a.login;
    let portal = Portal::parse(&o.portal)?;
    let mut cfg = discovery::DiscoveryConfig::new(
        portal,
        initiator_name::resolve(o.auth.initiator_name.as_deref()),
    );
    cfg.chap = chap_config(&o.auth)?;
    cfg.connect_timeout = Duration::from_secs(o.timeout.clamp(1, 5));
    cfg.login_timeout = Duration::from_secs(o.timeout.max(1));
    let overall = Duration::from_secs(o.timeout.max(1) * 3);
    let targets = tokio::time::timeout(overall, discovery::discover(&cfg))
        .await
        .map_err(|_| {
            Error::Timeout(initiator::TimedOut::Deadline {
                what: "discovery",
                limit: overall,
            })
        })??;
    if o.json {
        let v: Vec<_> = targets
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "alias": t.alias,
                    "portals": t.portals.iter()
                        .map(|(a, tpgt)| json!({"address": a, "tpgt": tpgt}))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        print_json(&json!(v));
    } else {
        for t in &targets {
            for l in t.lines() {
                println!("{l}");
            }
        }
    }
    if !a.no_record {
        if let Err(e) = record_nodes(&a.state, &targets, o.json) {
            eprintln!("iscsi discover: warning: the targets were not recorded as nodes: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Record discovered (target, portal) pairs as node records; existing
/// records keep their settings.
fn record_nodes(
    state: &crate::daemon_cmd::StateOpts,
    targets: &[discovery::DiscoveredTarget],
    quiet: bool,
) -> Result<(), Error> {
    let db = initiator::daemon::nodes::NodeDb::new(&state.state_dir());
    let mut new = 0;
    for t in targets {
        for (portal, tpgt) in &t.portals {
            if db.record_discovered(&t.name, portal, *tpgt)?.1 {
                new += 1;
            }
        }
    }
    if !quiet && new > 0 {
        eprintln!(
            "recorded {new} new node(s) in {} (`iscsi node list`, `iscsi login --target IQN`)",
            db.dir().display()
        );
    }
    Ok(())
}

fn session_config(a: &ScsiArgs) -> Result<SessionConfig, Error> {
    let o = &a.login;
    let mut cfg = login_config(
        &o.portal,
        &a.target,
        &o.auth,
        a.connections,
        a.digests,
        o.timeout,
    )?;
    // A one-shot command: recover briefly, then report.
    cfg.recovery_timeout = cfg.login_timeout;
    Ok(cfg)
}

/// A session configuration from the login flags every verb shares:
/// `timeout` bounds connect (at most 5 s), each login step and each
/// command; NOP pings every third of it.
pub(crate) fn login_config(
    portal: &str,
    target: &str,
    auth: &AuthOpts,
    connections: u16,
    digests: bool,
    timeout: u64,
) -> Result<SessionConfig, Error> {
    let mut cfg = SessionConfig::new(
        Portal::parse(portal)?,
        target.to_string(),
        initiator_name::resolve(auth.initiator_name.as_deref()),
    );
    cfg.chap = chap_config(auth)?;
    cfg.connections = connections.max(1);
    cfg.offer.header_digest = digests;
    cfg.offer.data_digest = digests;
    let t = Duration::from_secs(timeout.max(1));
    cfg.connect_timeout = t.min(Duration::from_secs(5));
    cfg.login_timeout = t;
    cfg.command_timeout = t;
    cfg.nop_interval = (t / 3).max(Duration::from_secs(1));
    cfg.nop_timeout = t;
    Ok(cfg)
}

async fn scsi(a: ScsiArgs) -> Result<ExitCode, Error> {
    let cfg = session_config(&a)?;
    // Parse the operation's arguments before connecting (usage errors first).
    let raw = match &a.op {
        ScsiOp::Raw {
            cdb,
            read,
            write_file,
            tag,
            ..
        } => {
            let mut bytes = parse_hex(&cdb.join(""))?;
            if bytes.is_empty() || bytes.len() > 16 {
                return Err(Error::Usage(format!(
                    "CDB must be 1..16 bytes, got {}",
                    bytes.len()
                )));
            }
            if let Some(t) = *tag {
                proto::scsi::control::set_tag(&mut bytes, t)
                    .map_err(|e| Error::Usage(format!("--tag {t}: {e}")))?;
            }
            let dir = match (read, write_file) {
                (Some(n), _) => DataDirection::Read(*n),
                (None, Some(f)) => DataDirection::Write(
                    std::fs::read(f)
                        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", f.display())))?
                        .into(),
                ),
                (None, None) => DataDirection::None,
            };
            Some((bytes, dir))
        }
        _ => None,
    };
    let page = match &a.op {
        ScsiOp::Vpd { page } => Some(parse_u8(page)?),
        _ => None,
    };
    let overall = cfg.login_timeout * 4 + cfg.recovery_timeout;
    let json = a.login.json;
    let lun = proto::scsi::lun::Lun::from_number(a.lun).to_u64();
    let work = async {
        let s = Session::connect(cfg).await?;
        let out = run_op(&s, lun, &a.op, raw, page, json).await;
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

async fn run_op(
    s: &Session,
    lun: u64,
    op: &ScsiOp,
    raw: Option<(Vec<u8>, DataDirection)>,
    page: Option<u8>,
    json: bool,
) -> Result<ExitCode, Error> {
    match op {
        ScsiOp::Inquiry => print_inquiry(&device::inquiry(s, lun).await?, json),
        ScsiOp::Readcap => print_capacity(&device::read_capacity(s, lun).await?, json),
        ScsiOp::Tur => {
            s.execute(
                lun,
                proto::scsi::cdb::test_unit_ready().as_bytes(),
                DataDirection::None,
            )
            .await?;
            if json {
                print_json(&json!({"ready": true}));
            } else {
                println!("ready");
            }
        }
        ScsiOp::ReportLuns => print_luns(&device::scan_luns(s).await?, json),
        ScsiOp::Vpd { .. } => {
            let page = page.unwrap_or(0);
            let data = device::vpd(s, lun, page).await?;
            print_vpd(page, &data, json);
        }
        ScsiOp::Raw { output, tag, .. } => {
            let Some((cdb, dir)) = raw else {
                return Err(Error::Usage("no CDB".into()));
            };
            return run_raw(s, lun, &cdb, dir, output.as_deref(), tag.is_some(), json).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `iscsi scsi raw`: the CDB as given, its status, sense and data shown;
/// exit code 1 unless GOOD or CONDITION MET.
async fn run_raw(
    s: &Session,
    lun: u64,
    cdb: &[u8],
    dir: DataDirection,
    output: Option<&std::path::Path>,
    tagged: bool,
    json: bool,
) -> Result<ExitCode, Error> {
    // Consume the unit attention a new I_T nexus reports (SPC-5
    // §5.14) so that the raw command shows its own status.
    let _ = s
        .execute(
            lun,
            proto::scsi::cdb::test_unit_ready().as_bytes(),
            DataDirection::None,
        )
        .await;
    let r = s.execute_raw(lun, cdb, dir).await?;
    if let Some(path) = output {
        std::fs::write(path, &r.data)
            .map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    print_raw(cdb, &r, output, json);
    if let (true, Some(sense)) = (tagged, &r.sense) {
        let c = s.config();
        let what = initiator::control::Refused::TaggedIo;
        if let Some(h) = initiator::control::advice(sense, what, &c.initiator_name, &c.target_name)
        {
            eprintln!("iscsi scsi: {h}");
        }
    }
    let good = r.status == 0 || r.status == 4;
    Ok(if good {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn parse_hex(s: &str) -> Result<Vec<u8>, Error> {
    let clean: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':' && *c != ',')
        .collect();
    let clean = clean.strip_prefix("0x").unwrap_or(&clean);
    if !clean.len().is_multiple_of(2) {
        return Err(Error::Usage(format!("odd number of hex digits in {s:?}")));
    }
    (0..clean.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&clean[i..i + 2], 16)
                .map_err(|_| Error::Usage(format!("invalid hex in {s:?}")))
        })
        .collect()
}

fn parse_u8(s: &str) -> Result<u8, Error> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u8::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| Error::Usage(format!("invalid page code {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_parsing() {
        assert_eq!(
            parse_hex("12 00 00 00 24 00").unwrap(),
            vec![0x12, 0, 0, 0, 0x24, 0]
        );
        assert_eq!(
            parse_hex("120000002400").unwrap(),
            vec![0x12, 0, 0, 0, 0x24, 0]
        );
        assert!(parse_hex("123").is_err());
        assert!(parse_hex("zz").is_err());
        assert_eq!(parse_u8("0xb0").unwrap(), 0xb0);
        assert_eq!(parse_u8("131").unwrap(), 131);
        assert!(parse_u8("300").is_err());
    }

    #[test]
    fn creds_and_algs() {
        assert_eq!(
            parse_creds("u:p:q", "x").unwrap(),
            ("u".to_string(), b"p:q".to_vec())
        );
        assert!(parse_creds("nocolon", "x").is_err());
        assert_eq!(parse_alg("md5").unwrap(), 5);
        assert_eq!(parse_alg("8").unwrap(), 8);
        assert!(parse_alg("9").is_err());
    }
}
