//! `iscsi target serve --config FILE --admin-socket PATH` and the admin verbs,
//! observed by real initiators: the project's initiator crate holds a
//! session open (to see unit attentions and be forced out), libiscsi's
//! tools (iscsi-inq, iscsi-ls, iscsi-readcapacity16) log in from outside.
//!
//! The target runs as the built binary on 127.0.0.1 port 0; tests read its
//! `listening on` lines. libiscsi checks are skipped (with a message) when
//! libiscsi-bin is not installed.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use bytes::Bytes;
use initiator::session::{DataDirection, Session, SessionConfig};
use initiator::Portal;
use proto::scsi::lun::Lun;
use proto::scsi::{Asc, SenseKey};
use serde_json::Value;
use testbed::ServerProcess;

const T: &str = "iqn.2024-01.org.example:admin-cli";
const HOLDER: &str = "iqn.2024-01.org.example:holder";

struct Daemon {
    /// The running `serve`; killed when the daemon is dropped.
    _process: ServerProcess,
    addr: String,
    socket: PathBuf,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Start `serve --config` with `config` (JSON text; `PORTAL` is replaced
    /// by 127.0.0.1:0).
    fn start(config: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("target.json");
        std::fs::write(&file, config.replace("PORTAL", "127.0.0.1:0")).unwrap();
        let socket = dir.path().join("admin.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iscsi"));
        cmd.args(["target", "serve", "--log", "warn", "--config"])
            .arg(&file)
            .arg("--admin-socket")
            .arg(&socket);
        // `admin socket PATH` is printed after every `listening on ADDR`.
        let process = ServerProcess::spawn(cmd, "admin socket ", Duration::from_secs(10))
            .expect("iscsi target serve starts");
        assert_eq!(
            process.stdout_values("admin socket "),
            [socket.display().to_string()]
        );
        let addr = process.stdout_values("listening on ").into_iter().next();
        Daemon {
            _process: process,
            addr: addr.expect("a listening line"),
            socket,
            config: file,
            dir,
        }
    }

    /// Run `iscsi target VERB ARGS --admin-socket SOCK`.
    fn admin(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_iscsi"))
            .arg("target")
            .args(args)
            .arg("--admin-socket")
            .arg(&self.socket)
            .output()
            .expect("run iscsi target")
    }

    /// Run a verb with --json, expect success, parse the answer.
    fn admin_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.admin(&a);
        assert!(
            out.status.success(),
            "iscsi target {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    fn show(&self) -> Value {
        self.admin_json(&["show"])
    }

    fn url(&self, auth: Option<&str>, lun: u32) -> String {
        let auth = auth.map(|a| format!("{a}@")).unwrap_or_default();
        format!("iscsi://{auth}{}/{T}/{lun}", self.addr)
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn have_libiscsi() -> bool {
    let ok = Command::new("iscsi-inq")
        .arg("--help")
        .output()
        .map(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "skipping libiscsi checks: iscsi-inq not installed (Debian package libiscsi-bin)"
        );
    }
    ok
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// A session held open by the project's initiator, without automatic
/// recovery (so that a forced logout stays visible).
async fn hold(addr: &str, initiator: &str) -> Session {
    let mut cfg = SessionConfig::new(Portal::parse(addr).unwrap(), T, initiator);
    cfg.recovery_timeout = Duration::ZERO;
    cfg.nop_interval = Duration::from_secs(3600);
    Session::connect(cfg).await.expect("login")
}

fn raw(n: u16) -> u64 {
    Lun::from_number(n).0
}

/// Send TEST UNIT READY until GOOD; returns the unit attentions seen.
async fn drain_ua(s: &Session, lun: u16) -> Vec<Asc> {
    let mut seen = Vec::new();
    for _ in 0..8 {
        let r = s
            .execute_raw(raw(lun), &[0u8; 6], DataDirection::None)
            .await
            .expect("TUR");
        if r.status == 0 {
            return seen;
        }
        let sense = r.sense.expect("CHECK CONDITION carries sense");
        assert_eq!(sense.key, SenseKey::UNIT_ATTENTION, "{sense:?}");
        seen.push(sense.asc);
    }
    panic!("unit attentions do not stop: {seen:?}");
}

fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x2A;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn report_luns_cdb() -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = 0xA0;
    c[6..10].copy_from_slice(&4096u32.to_be_bytes());
    c
}

fn parse_report_luns(data: &[u8]) -> Vec<u16> {
    let len = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
    data[8..8 + len.min(data.len() - 8)]
        .chunks(8)
        .filter_map(|c| Lun(u64::from_be_bytes(c.try_into().unwrap())).number())
        .collect()
}

fn lun_numbers(show: &Value) -> Vec<u64> {
    show["targets"][0]["luns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lun"].as_u64().unwrap())
        .collect()
}

fn tsihs(show: &Value) -> Vec<u64> {
    show["targets"][0]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tsih"].as_u64().unwrap())
        .collect()
}

const BASIC: &str = r#"{
  "_comment": "admin CLI test",
  "targets": [{
    "name": "iqn.2024-01.org.example:admin-cli",
    "portal_groups": [{"tpgt": 1, "portals": ["PORTAL"]}],
    "luns": [{"lun": 0, "backend": "mem", "size": "4M"}]
  }]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_changes_seen_by_initiators() {
    let d = Daemon::start(BASIC);
    let libiscsi = have_libiscsi();
    let s0 = d.show();
    assert_eq!(lun_numbers(&s0), vec![0]);
    assert!(s0["targets"][0]["sessions"].as_array().unwrap().is_empty());

    // A logged-in initiator that has used LUN 0.
    let s = hold(&d.addr, HOLDER).await;
    drain_ua(&s, 0).await;

    // add-lun: the new LUN is in REPORT LUNS and the initiator gets
    // REPORTED LUNS DATA HAS CHANGED.
    let r = d.admin_json(&["add-lun", "mem:8M", "--vendor", "ADMTEST"]);
    assert_eq!(r["lun"], 1);
    let uas = drain_ua(&s, 0).await;
    assert!(
        uas.contains(&Asc::REPORTED_LUNS_DATA_HAS_CHANGED),
        "{uas:?}"
    );
    let rl = s
        .execute_raw(raw(0), &report_luns_cdb(), DataDirection::Read(4096))
        .await
        .unwrap();
    assert_eq!(rl.status, 0);
    assert_eq!(parse_report_luns(&rl.data), vec![0, 1]);
    if libiscsi {
        let o = run("iscsi-inq", &[&d.url(None, 1)]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("ADMTEST"));
    }
    let show = d.show();
    assert_eq!(lun_numbers(&show), vec![0, 1]);
    assert_eq!(show["targets"][0]["luns"][0]["in_use"], true);

    // Writes counted; then set-lun ro: writes get DATA PROTECT.
    drain_ua(&s, 1).await;
    let w = s
        .execute_raw(
            raw(1),
            &write10(0, 1),
            DataDirection::Write(Bytes::from(vec![7u8; 512])),
        )
        .await
        .unwrap();
    assert_eq!(w.status, 0);
    let show = d.show();
    assert_eq!(show["targets"][0]["luns"][1]["io"]["write_ops"], 1);
    assert_eq!(show["targets"][0]["luns"][1]["io"]["write_bytes"], 512);
    d.admin_json(&["set-lun", "--lun", "1", "--mode", "ro"]);
    drain_ua(&s, 1).await;
    let w = s
        .execute_raw(
            raw(1),
            &write10(0, 1),
            DataDirection::Write(Bytes::from(vec![7u8; 512])),
        )
        .await
        .unwrap();
    assert_eq!(w.status, 2, "CHECK CONDITION");
    let sense = w.sense.unwrap();
    assert_eq!(sense.key, SenseKey::DATA_PROTECT);
    assert_eq!(sense.asc, Asc::WRITE_PROTECTED);

    // Resize: CAPACITY DATA HAS CHANGED, and the new capacity outside.
    d.admin_json(&["set-lun", "--lun", "1", "--size", "16M"]);
    let uas = drain_ua(&s, 1).await;
    assert!(uas.contains(&Asc::CAPACITY_DATA_HAS_CHANGED), "{uas:?}");
    if libiscsi {
        let o = run("iscsi-readcapacity16", &[&d.url(None, 1)]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(&format!(
                "RETURNED LOGICAL BLOCK ADDRESS:{}",
                (16u64 << 20) / 512 - 1
            )),
            "{out}"
        );
    }

    // remove-lun of a LUN in use: refused (exit 1), then forced.
    let o = d.admin(&["remove-lun", "--lun", "0"]);
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("in use"));
    let o = d.admin(&["remove-lun", "--lun", "0", "--force"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let uas = drain_ua(&s, 1).await;
    assert!(
        uas.contains(&Asc::REPORTED_LUNS_DATA_HAS_CHANGED),
        "{uas:?}"
    );

    // add-portal: a second listener, reachable at once and listed by
    // SendTargets.
    let p = d.admin_json(&["add-portal", "127.0.0.1:0"]);
    let second = p["portal"].as_str().unwrap().to_string();
    assert_ne!(second, d.addr);
    assert_eq!(d.show()["listening"].as_array().unwrap().len(), 2);
    if libiscsi {
        let url = format!("iscsi://{second}/{T}/1");
        let o = run("iscsi-inq", &[&url]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ls = run("iscsi-ls", &[&format!("iscsi://{second}")]);
        assert!(
            String::from_utf8_lossy(&ls.stdout).contains(&second),
            "{ls:?}"
        );
    }

    // The human table shows the session; logout-session forces it out.
    let table = d.admin(&["show"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains(HOLDER) && text.contains("TSIH"), "{text}");
    let before = tsihs(&d.show());
    assert_eq!(before.len(), 1);
    let tsih = before[0].to_string();
    d.admin_json(&["logout-session", &tsih]);
    assert!(tsihs(&d.show()).is_empty(), "session gone from show");
    let gone = s.execute_raw(raw(1), &[0u8; 6], DataDirection::None).await;
    assert!(gone.is_err(), "the forced-out session no longer works");
    let o = d.admin(&["logout-session", &tsih]);
    assert_eq!(code(&o), 1);

    // save: what was saved is what comes back.
    d.admin_json(&["save"]);
    let back = iscsi_target::config_file::load(&d.config).unwrap();
    let t = &back.server.targets[0];
    assert_eq!(t.luns.len(), 1);
    assert_eq!(t.luns[0].lun, 1);
    assert_eq!(t.luns[0].mode, iscsi_target::config::IoMode::ReadOnly);
    assert_eq!(
        t.luns[0].backend,
        iscsi_target::config::BackendConfig::Memory { size: 16 << 20 }
    );
    assert_eq!(t.portal_groups[0].portals[0].port(), 0);
    let text = std::fs::read_to_string(&d.config).unwrap();
    assert!(text.contains("admin CLI test"), "comments kept: {text}");

    // Exit codes: usage 2, refused 1, unreachable 3 (with a hint).
    assert_eq!(code(&d.admin(&["set-lun", "--lun", "1"])), 2);
    assert_eq!(
        code(&d.admin(&["set-lun", "--lun", "1", "--mode", "bogus"])),
        2
    );
    assert_eq!(code(&d.admin(&["add-lun", "mem:1M", "--lun", "1"])), 1);
    let o = Command::new(env!("CARGO_BIN_EXE_iscsi"))
        .args(["target", "show", "--admin-socket"])
        .arg(d.dir.path().join("nobody.sock"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 3);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is `iscsi target serve` running?"));
}

const SECURED: &str = r#"{
  "targets": [{
    "name": "iqn.2024-01.org.example:admin-cli",
    "portal_groups": [{"tpgt": 1, "portals": ["PORTAL"]}],
    "luns": [{"lun": 0, "backend": "mem", "size": "4M"}],
    "chap": {"incoming": [{"user": "alice", "secret": "alice-secret-123"}]},
    "acl": [{"initiator": "iqn.2024-01.org.example:allowed"}]
  }]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_and_chap() {
    if !have_libiscsi() {
        return;
    }
    let d = Daemon::start(SECURED);
    let allowed = "iqn.2024-01.org.example:allowed";
    let stranger = "iqn.2024-01.org.example:stranger";
    let good = Some("alice%alice-secret-123");
    let portal_url = format!("iscsi://{}", d.addr);

    // In the ACL with the right secret: logs in.
    let o = run("iscsi-inq", &["-i", allowed, &d.url(good, 0)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Wrong secret: refused.
    let o = run(
        "iscsi-inq",
        &["-i", allowed, &d.url(Some("alice%wrong-secret-000"), 0)],
    );
    assert!(!o.status.success());
    // Not in the ACL: cannot log in, and SendTargets does not show it.
    let o = run("iscsi-inq", &["-i", stranger, &d.url(good, 0)]);
    assert!(!o.status.success());
    let ls = run("iscsi-ls", &["-i", stranger, &portal_url]);
    assert!(!String::from_utf8_lossy(&ls.stdout).contains(T));
    let ls = run("iscsi-ls", &["-i", allowed, &portal_url]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains(T), "{ls:?}");

    // The exact Login status for a wrong secret: 0201 authentication failure.
    let o = Command::new(env!("CARGO_BIN_EXE_iscsi"))
        .args([
            "scsi",
            "--portal",
            &d.addr,
            "--target",
            T,
            "--initiator-name",
            allowed,
        ])
        .args(["--chap", "alice:wrong-secret-000", "tur"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("class 0x02 detail 0x01"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // allow at run time: the stranger gets in (and sees the target).
    d.admin_json(&["allow", stranger]);
    let o = run("iscsi-inq", &["-i", stranger, &d.url(good, 0)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // deny at run time: out again.
    d.admin_json(&["deny", stranger]);
    let o = run("iscsi-inq", &["-i", stranger, &d.url(good, 0)]);
    assert!(!o.status.success());
    // The last entry cannot be removed by accident.
    assert_eq!(code(&d.admin(&["deny", allowed])), 1);

    // set-chap at run time: a new account works, the removed one does not.
    d.admin_json(&["set-chap", "--add", "bob:bob-secret-4567"]);
    let o = run(
        "iscsi-inq",
        &["-i", allowed, &d.url(Some("bob%bob-secret-4567"), 0)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    d.admin_json(&["set-chap", "--remove", "alice"]);
    let o = run("iscsi-inq", &["-i", allowed, &d.url(good, 0)]);
    assert!(!o.status.success());
    // Secrets never appear in show.
    let show = d.admin(&["show", "--json"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        !text.contains("bob-secret") && text.contains("bob"),
        "{text}"
    );
}

/// `iscsi scsi ... tur` as `initiator`, with optional CHAP (and mutual CHAP).
fn our_tur(d: &Daemon, initiator: &str, chap: Option<&str>, mutual: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iscsi"));
    c.args(["scsi", "--portal", &d.addr, "--target", T]).args([
        "--initiator-name",
        initiator,
        "--timeout",
        "5",
    ]);
    if let Some(a) = chap {
        c.args(["--chap", a]);
    }
    if let Some(m) = mutual {
        c.args(["--mutual-chap", m]);
    }
    c.arg("tur").output().unwrap()
}

/// A login refused with Login status 0201 (authentication failure).
fn assert_auth_failure(o: &Output, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(code(o), 1, "{what}: {err}");
    assert!(err.contains("class 0x02 detail 0x01"), "{what}: {err}");
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Per-initiator CHAP credentials replace the target-wide ones for that
/// initiator (and only for it); runtime `allow --chap` and
/// `set-chap --initiator` apply at the next login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_initiator_chap_overrides_target_wide() {
    let d = Daemon::start(&SECURED.replace(
        r#"{"initiator": "iqn.2024-01.org.example:allowed"}"#,
        r#"{"initiator": "iqn.2024-01.org.example:allowed",
                "chap": {"incoming": [{"user": "own", "secret": "own-secret-12345"}]}},
               {"initiator": "iqn.2024-01.org.example:other"}"#,
    ));
    let allowed = "iqn.2024-01.org.example:allowed";
    let other = "iqn.2024-01.org.example:other";
    let own = "own:own-secret-12345";
    let wide = "alice:alice-secret-123";

    // Its own account works; the target-wide one is refused for it with
    // an authentication failure, and so is no CHAP at all.
    assert_ok(&our_tur(&d, allowed, Some(own), None), "own account");
    assert_auth_failure(
        &our_tur(&d, allowed, Some(wide), None),
        "target-wide account for an initiator with its own",
    );
    assert!(!our_tur(&d, allowed, None, None).status.success());
    // Another initiator keeps the target-wide accounts and cannot use
    // the first one's.
    assert_ok(&our_tur(&d, other, Some(wide), None), "target-wide account");
    assert_auth_failure(
        &our_tur(&d, other, Some(own), None),
        "someone else's account",
    );
    if have_libiscsi() {
        let o = run(
            "iscsi-inq",
            &["-i", allowed, &d.url(Some("own%own-secret-12345"), 0)],
        );
        assert!(o.status.success(), "own credentials work");
        let o = run(
            "iscsi-inq",
            &["-i", allowed, &d.url(Some("alice%alice-secret-123"), 0)],
        );
        assert!(
            !o.status.success(),
            "target-wide credentials no longer work for it"
        );
    }

    // set-chap for the initiator: the next login uses the new account.
    d.admin_json(&[
        "set-chap",
        "--initiator",
        allowed,
        "--add",
        "own2:own2-secret-1234",
    ]);
    d.admin_json(&["set-chap", "--initiator", allowed, "--remove", "own"]);
    assert_ok(
        &our_tur(&d, allowed, Some("own2:own2-secret-1234"), None),
        "account added at run time",
    );
    assert_auth_failure(&our_tur(&d, allowed, Some(own), None), "removed account");
    // Per-initiator mutual CHAP: the target proves itself with the
    // initiator's own target account.
    d.admin_json(&[
        "set-chap",
        "--initiator",
        allowed,
        "--mutual",
        "tgt-for-allowed:mutual-secret-987",
    ]);
    assert_ok(
        &our_tur(
            &d,
            allowed,
            Some("own2:own2-secret-1234"),
            Some("tgt-for-allowed:mutual-secret-987"),
        ),
        "per-initiator mutual CHAP",
    );
    assert!(!our_tur(
        &d,
        allowed,
        Some("own2:own2-secret-1234"),
        Some("tgt-for-allowed:not-the-secret-00"),
    )
    .status
    .success());

    // allow with --chap at run time: a new initiator with its own account.
    let newbie = "iqn.2024-01.org.example:newbie";
    d.admin_json(&["allow", newbie, "--chap", "nb:newbie-secret-12"]);
    assert_ok(
        &our_tur(&d, newbie, Some("nb:newbie-secret-12"), None),
        "own account from allow",
    );
    assert_auth_failure(
        &our_tur(&d, newbie, Some(wide), None),
        "newbie, target-wide",
    );

    // show lists the users, never the secrets; save keeps the accounts.
    let show = d.admin(&["show", "--json"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("own2") && !text.contains("own2-secret"),
        "{text}"
    );
    assert!(!text.contains("not enforced"), "{text}");
    d.admin_json(&["save"]);
    let back = iscsi_target::config_file::load(&d.config).unwrap();
    let t = &back.server.targets[0];
    assert_eq!(t.auth_for(allowed).incoming[0].user, "own2");
    assert_eq!(
        t.auth_for(allowed).outgoing.map(|c| c.user),
        Some("tgt-for-allowed".to_string())
    );
    assert_eq!(t.auth_for(newbie).incoming[0].user, "nb");
    assert_eq!(t.auth_for(other).incoming[0].user, "alice");

    // Clearing its accounts: the target-wide ones apply to it again.
    d.admin_json(&["set-chap", "--initiator", allowed, "--clear"]);
    assert_ok(
        &our_tur(&d, allowed, Some(wide), None),
        "target-wide after clear",
    );
    assert_auth_failure(
        &our_tur(&d, allowed, Some("own2:own2-secret-1234"), None),
        "cleared account",
    );
}

/// Discovery sessions authenticate with the discovery accounts, changed
/// at run time by `set-chap --discovery`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_chap() {
    let d = Daemon::start(&BASIC.replace(
        r#""targets""#,
        r#""discovery": {"chap": {"incoming": [{"user": "disc", "secret": "discovery-secret-1"}]}},
  "targets""#,
    ));
    let discover = |chap: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iscsi"));
        c.args([
            "discover",
            "--portal",
            &d.addr,
            "--timeout",
            "5",
            "--no-record",
        ])
        .args(["--initiator-name", HOLDER]);
        if let Some(a) = chap {
            c.args(["--chap", a]);
        }
        c.output().unwrap()
    };
    let o = discover(Some("disc:discovery-secret-1"));
    assert_ok(&o, "discovery with the discovery account");
    assert!(String::from_utf8_lossy(&o.stdout).contains(T));
    assert_auth_failure(&discover(Some("disc:wrong-secret-000")), "wrong secret");
    assert!(!discover(None).status.success(), "no CHAP");
    // Normal sessions are not affected (the target has no CHAP).
    assert_ok(&our_tur(&d, HOLDER, None, None), "normal session");
    d.admin_json(&[
        "set-chap",
        "--discovery",
        "--add",
        "disc2:discovery-secret-2",
    ]);
    d.admin_json(&["set-chap", "--discovery", "--remove", "disc"]);
    assert_ok(&discover(Some("disc2:discovery-secret-2")), "new account");
    assert_auth_failure(
        &discover(Some("disc:discovery-secret-1")),
        "removed account",
    );
    if have_libiscsi() {
        let ls = run(
            "iscsi-ls",
            &[
                "-i",
                HOLDER,
                &format!("iscsi://disc2%discovery-secret-2@{}", d.addr),
            ],
        );
        assert!(String::from_utf8_lossy(&ls.stdout).contains(T), "{ls:?}");
        let ls = run("iscsi-ls", &["-i", HOLDER, &format!("iscsi://{}", d.addr)]);
        assert!(!String::from_utf8_lossy(&ls.stdout).contains(T), "{ls:?}");
    }
}

const MASKED: &str = r#"{
  "targets": [{
    "name": "iqn.2024-01.org.example:admin-cli",
    "portal_groups": [{"tpgt": 1, "portals": ["PORTAL"]}],
    "luns": [{"lun": 0, "backend": "mem", "size": "4M"},
             {"lun": 1, "backend": "mem", "size": "4M", "sector_size": 4096},
             {"lun": 2, "backend": "mem", "size": "4M"}],
    "acl": [{"initiator": "iqn.2024-01.org.example:h1", "luns": [0, 2]},
            {"initiator": "iqn.2024-01.org.example:h2"}]
  }]
}"#;

/// `iscsi scsi --initiator-name INI ... ARGS --json`: exit code and JSON.
fn our_scsi(d: &Daemon, initiator: &str, args: &[&str]) -> (i32, Value) {
    let o = Command::new(env!("CARGO_BIN_EXE_iscsi"))
        .args(["scsi", "--portal", &d.addr, "--target", T])
        .args(["--initiator-name", initiator, "--timeout", "5", "--json"])
        .args(args)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{args:?}: no JSON: {}", String::from_utf8_lossy(&o.stderr)));
    (code(&o), v)
}

fn reported(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| l["lun"].as_u64().unwrap())
        .collect()
}

/// REPORT LUNS through a held session.
async fn session_luns(s: &Session) -> Vec<u16> {
    let rl = s
        .execute_raw(raw(0), &report_luns_cdb(), DataDirection::Read(4096))
        .await
        .unwrap();
    assert_eq!(rl.status, 0, "REPORT LUNS works on any LUN");
    parse_report_luns(&rl.data)
}

/// TEST UNIT READY on a LUN the session must not see.
async fn assert_not_supported(s: &Session, lun: u16) {
    let r = s
        .execute_raw(raw(lun), &[0u8; 6], DataDirection::None)
        .await
        .unwrap();
    assert_eq!(r.status, 2, "LUN {lun}: CHECK CONDITION");
    let sense = r.sense.unwrap();
    assert_eq!(sense.key, SenseKey::ILLEGAL_REQUEST, "LUN {lun}");
    assert_eq!(sense.asc, Asc::LOGICAL_UNIT_NOT_SUPPORTED, "LUN {lun}");
}

/// Per-initiator LUN masking, seen by real initiators: two initiator names
/// see different LUN sets; a hidden LUN is indistinguishable from a
/// missing one; runtime ACL edits raise REPORTED LUNS DATA HAS CHANGED on
/// the affected sessions only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lun_masking_per_initiator() {
    let d = Daemon::start(MASKED);
    let h1 = "iqn.2024-01.org.example:h1";
    let h2 = "iqn.2024-01.org.example:h2";

    // Different LUN sets for the two initiators.
    let (rc, v) = our_scsi(&d, h1, &["report-luns"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(reported(&v), vec![0, 2]);
    let (_, v) = our_scsi(&d, h2, &["report-luns"]);
    assert_eq!(reported(&v), vec![0, 1, 2]);
    // INQUIRY of a hidden LUN: peripheral qualifier 011b, type 1Fh, the
    // same answer as for a LUN that does not exist at all.
    let (rc, hidden) = our_scsi(&d, h1, &["--lun", "1", "inquiry"]);
    assert_eq!(rc, 0);
    assert_eq!(hidden["peripheral_qualifier"], 3, "{hidden}");
    assert_eq!(hidden["device_type"], 31, "{hidden}");
    let (_, missing) = our_scsi(&d, h1, &["--lun", "9", "inquiry"]);
    assert_eq!(hidden, missing);
    let (_, seen) = our_scsi(&d, h2, &["--lun", "1", "inquiry"]);
    assert_eq!(seen["peripheral_qualifier"], 0, "{seen}");
    // A write to it fails with LOGICAL UNIT NOT SUPPORTED, exactly like a
    // write to a missing LUN (no residual betrays its 4096-byte blocks).
    let blk = d.dir.path().join("blk.bin");
    std::fs::write(&blk, vec![0x5Au8; 512]).unwrap();
    let blk = blk.to_str().unwrap();
    let write = [
        "raw",
        "2a00",
        "00000000",
        "00",
        "0001",
        "00",
        "--write-file",
        blk,
    ];
    let (rc, w) = our_scsi(&d, h1, &[&["--lun", "1"][..], &write[..]].concat());
    assert_eq!(rc, 1, "{w}");
    assert_eq!(w["sense_key"], "ILLEGAL REQUEST", "{w}");
    assert_eq!(w["asc"], "Asc(25/00)", "{w}");
    let (_, w9) = our_scsi(&d, h1, &[&["--lun", "9"][..], &write[..]].concat());
    assert_eq!(w, w9, "hidden and missing LUNs answer the same");
    let (rc, _) = our_scsi(&d, h1, &[&["--lun", "2"][..], &write[..]].concat());
    assert_eq!(rc, 0, "a visible LUN takes the write");
    if have_libiscsi() {
        let ls = run(
            "iscsi-ls",
            &["-s", "-i", h1, &format!("iscsi://{}", d.addr)],
        );
        let out = String::from_utf8_lossy(&ls.stdout);
        assert!(out.contains("Lun:0") && out.contains("Lun:2"), "{out}");
        assert!(!out.contains("Lun:1"), "{out}");
        let ls = run(
            "iscsi-ls",
            &["-s", "-i", h2, &format!("iscsi://{}", d.addr)],
        );
        assert!(
            String::from_utf8_lossy(&ls.stdout).contains("Lun:1"),
            "{ls:?}"
        );
        let o = run("iscsi-inq", &["-i", h1, &d.url(None, 1)]);
        assert!(!o.status.success(), "iscsi-inq refuses a PQ=3 LUN");
    }
    let show = d.show();
    assert_eq!(
        show["targets"][0]["acl"][0]["luns"],
        serde_json::json!([0, 2])
    );
    assert!(
        show["warnings"].as_array().is_none_or(|w| w.is_empty()),
        "{show}"
    );

    // Logged-in sessions of both initiators.
    let s1 = hold(&d.addr, h1).await;
    let s2 = hold(&d.addr, h2).await;
    drain_ua(&s1, 0).await;
    drain_ua(&s2, 0).await;
    assert_eq!(session_luns(&s1).await, vec![0, 2]);
    assert_not_supported(&s1, 1).await;

    // Masking edit at run time: h1 is told, h2 is not.
    let r = d.admin_json(&["allow", h1, "--luns", "0,1"]);
    assert_eq!(r["luns"], serde_json::json!([0, 1]));
    let uas = drain_ua(&s1, 0).await;
    assert_eq!(uas, vec![Asc::REPORTED_LUNS_DATA_HAS_CHANGED]);
    assert!(
        drain_ua(&s2, 0).await.is_empty(),
        "h2's view did not change"
    );
    assert_eq!(session_luns(&s1).await, vec![0, 1]);
    drain_ua(&s1, 1).await;
    assert_not_supported(&s1, 2).await;

    // A new LUN: only the initiators that may see it are told.
    let r = d.admin_json(&["add-lun", "mem:1M"]);
    assert_eq!(r["lun"], 3);
    assert_eq!(
        drain_ua(&s2, 0).await,
        vec![Asc::REPORTED_LUNS_DATA_HAS_CHANGED]
    );
    assert!(
        drain_ua(&s1, 0).await.is_empty(),
        "masked: LUN 3 not visible"
    );
    assert_eq!(session_luns(&s1).await, vec![0, 1]);
    assert_eq!(session_luns(&s2).await, vec![0, 1, 2, 3]);

    // --all-luns drops the mask.
    d.admin_json(&["allow", h1, "--all-luns"]);
    assert_eq!(
        drain_ua(&s1, 0).await,
        vec![Asc::REPORTED_LUNS_DATA_HAS_CHANGED]
    );
    assert_eq!(session_luns(&s1).await, vec![0, 1, 2, 3]);

    // deny: h2's session stays logged in but sees nothing any more.
    d.admin_json(&["deny", h2]);
    assert_eq!(session_luns(&s2).await, Vec::<u16>::new());
    assert_not_supported(&s2, 0).await;
    assert!(drain_ua(&s1, 0).await.is_empty(), "h1 not affected");

    // save keeps the masks (none left for h1, h2 gone).
    d.admin_json(&["allow", h1, "--luns", "3"]);
    d.admin_json(&["save"]);
    let back = iscsi_target::config_file::load(&d.config).unwrap();
    let t = &back.server.targets[0];
    assert_eq!(t.lun_mask(h1), Some(&[3u64][..]));
    assert!(!t.allows(h2));
}

#[test]
fn bad_config_is_a_usage_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.json");
    std::fs::write(
        &f,
        BASIC.replace("PORTAL", "127.0.0.1:0").replace(
            "\"size\": \"4M\"",
            "\"size\": \"4M\", \"sector_size\": 1000",
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_iscsi"))
        .args(["target", "serve", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("targets[0].luns[0].sector_size: must be 512 or 4096, got 1000"),
        "{err}"
    );
    // --config and quick-start flags do not mix.
    let o = Command::new(env!("CARGO_BIN_EXE_iscsi"))
        .args(["target", "serve", "--lun", "mem:1M", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
}

#[test]
fn bad_socket_input_leaves_the_daemon_serving() {
    use std::os::unix::net::UnixStream;
    let d = Daemon::start(BASIC);
    let send = |bytes: &[u8]| -> String {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(bytes);
        let mut line = String::new();
        let _ = BufReader::new(s).read_line(&mut line);
        line
    };
    assert!(send(b"{oops\n").contains("bad-request"));
    assert!(send(b"{\"op\":\"reformat\"}\n").contains("bad-request"));
    // Over the 1 MiB limit.
    let mut big = b"{\"op\":\"show\",\"target\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 2 << 20));
    let answer = send(&big);
    assert!(
        answer.is_empty() || answer.contains("larger than"),
        "{answer}"
    );
    // Mid-request disconnect.
    {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(b"{\"op\":\"sh").unwrap();
    }
    // Still serving.
    assert_eq!(lun_numbers(&d.show()), vec![0]);
}

/// `--strict-names` (quick-start flags) also governs ACL entries added at
/// run time: `allow` refuses a name with '_' and says why; without the
/// flag the same name is accepted with a warning.
#[test]
fn strict_names_flag_governs_allow() {
    let name = "iqn.1991-05.com.microsoft:web_01";
    for strict in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iscsi"));
        cmd.args(["target", "serve", "--log", "warn", "--target", T])
            .args(["--lun", "mem:1M", "--portal", "127.0.0.1:0"])
            .arg("--admin-socket")
            .arg(&socket);
        if strict {
            cmd.arg("--strict-names");
        }
        let _p = ServerProcess::spawn(cmd, "admin socket ", Duration::from_secs(10))
            .expect("iscsi target serve starts");
        let o = Command::new(env!("CARGO_BIN_EXE_iscsi"))
            .args(["target", "allow", name, "--admin-socket"])
            .arg(&socket)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        if strict {
            assert!(!o.status.success(), "{err}");
            assert!(err.contains("'_'") && err.contains("strict_names"), "{err}");
        } else {
            assert!(o.status.success(), "{err}");
            let all = format!("{err}{}", String::from_utf8_lossy(&o.stdout));
            assert!(all.contains("RFC 3722"), "a warning: {all}");
        }
    }
}

/// The control channel's admin verbs (docs/control-channel.md):
/// `set-lun ... control=on|off`, `allow IQN --control`, `show --json`,
/// `save`; observed by the project's initiator sending tagged WRITE(10)s
/// and the vendor command C7h.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_channel_verbs() {
    use proto::scsi::control::{set_tag, CtlCommand};
    let d = Daemon::start(BASIC);
    let s = hold(&d.addr, HOLDER).await;
    drain_ua(&s, 0).await;
    let mut tagged = write10(4, 1);
    set_tag(&mut tagged, 6).unwrap();
    let one = || DataDirection::Write(Bytes::from(vec![9u8; 512]));
    let set_ro = CtlCommand::Set {
        name: "io_mode".into(),
        value: "ro".into(),
    };
    let send_set = |s: &Session| {
        let cdb = set_ro.encode().unwrap();
        let data = set_ro.data_out().unwrap();
        let s = s.clone();
        async move {
            s.execute_raw(raw(0), &cdb, DataDirection::Write(data))
                .await
                .unwrap()
        }
    };
    // Off by default: the tag bits are refused.
    let r = s.execute_raw(raw(0), &tagged, one()).await.unwrap();
    assert_eq!(r.sense.unwrap().asc, Asc::INVALID_FIELD_IN_CDB);
    assert_eq!(
        d.show()["targets"][0]["luns"][0]["control"]["enabled"],
        false
    );

    let r = d.admin_json(&["set-lun", "--lun", "0", "control=on"]);
    assert_eq!(r["control"], true);
    let bad = d.admin(&["set-lun", "--lun", "0", "control=yes"]);
    assert_eq!(code(&bad), 2, "a bad setting is a usage error");
    for _ in 0..2 {
        let r = s.execute_raw(raw(0), &tagged, one()).await.unwrap();
        assert_eq!(r.status, 0, "{:?}", r.sense);
    }
    let lun = &d.show()["targets"][0]["luns"][0]["control"];
    assert_eq!(lun["enabled"], true);
    assert_eq!(lun["tags"]["6"]["commands"], 2);
    assert_eq!(lun["tags"]["6"]["bytes"], 1024);
    assert_eq!(lun["recent"][1]["lba"], 4);
    assert_eq!(lun["recent"][1]["initiator"], HOLDER);

    // No control right yet (the target has no ACL): SET is ACCESS DENIED.
    let r = send_set(&s).await;
    assert_eq!(r.sense.unwrap().asc, Asc::new(0x20, 0x02));
    assert_eq!(d.show()["targets"][0]["luns"][0]["mode"], "wb");
    let r = d.admin_json(&["allow", HOLDER, "--control"]);
    assert_eq!(r["control"], true);
    assert_eq!(send_set(&s).await.status, 0);
    assert_eq!(d.show()["targets"][0]["luns"][0]["mode"], "ro");
    let acl = &d.show()["targets"][0]["acl"][0];
    assert_eq!(
        (acl["initiator"].as_str(), &acl["control"]),
        (Some(HOLDER), &Value::Bool(true))
    );

    // `save` keeps both settings.
    d.admin_json(&["save"]);
    let saved: Value = serde_json::from_slice(&std::fs::read(&d.config).unwrap()).unwrap();
    assert_eq!(saved["targets"][0]["luns"][0]["control"], true);
    assert_eq!(saved["targets"][0]["acl"][0]["control"], true);
    d.admin_json(&["set-lun", "--lun", "0", "control=off"]);
    let r = s.execute_raw(raw(0), &tagged, one()).await.unwrap();
    assert_eq!(r.sense.unwrap().asc, Asc::INVALID_FIELD_IN_CDB);
}

/// `ISCSI_TARGET_THREADS` sets the target's worker threads; a bad value is
/// a clear error (exit 2) instead of tokio's panic, and tokio's own
/// `TOKIO_WORKER_THREADS`, which made the runtime panic when it was not a
/// number, is no longer read.
#[test]
fn worker_threads_come_from_the_environment_and_bad_values_are_clear_errors() {
    let serve = |env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iscsi"));
        c.args([
            "target",
            "serve",
            "--log",
            "warn",
            "--portal",
            "127.0.0.1:0",
        ])
        .args(["--target", T, "--lun", "mem:1M"]);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    };
    let out = serve(&[("ISCSI_TARGET_THREADS", "0")]).output().unwrap();
    assert_eq!(code(&out), 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ISCSI_TARGET_THREADS=\"0\" is not a number of threads from 1 to 1024")
            && !err.contains("panicked"),
        "{err}"
    );
    let p = ServerProcess::spawn(
        serve(&[("ISCSI_TARGET_THREADS", "3"), ("TOKIO_WORKER_THREADS", "")]),
        "listening on",
        Duration::from_secs(10),
    )
    .expect("the target starts despite an empty TOKIO_WORKER_THREADS");
    // A worker names itself once its thread runs, which on a busy machine
    // may come a little after the ready line: look again for a while.
    let count = || {
        std::fs::read_dir(format!("/proc/{}/task", p.id()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|n| n.starts_with("tokio-runtime-w") || n.starts_with("tokio-rt-worker"))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut workers = count();
    while workers < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        workers = count();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(workers.max(count()), 3);
}
