//! `iscsi target serve --config FILE --admin-socket PATH` and the admin verbs,
//! observed by real initiators: the project's initiator crate holds a
//! session open (to see unit attentions and be forced out), libiscsi's
//! tools (iscsi-inq, iscsi-ls, iscsi-readcapacity16) log in from outside.
//!
//! The target runs as the built binary on 127.0.0.1 port 0; tests read its
//! `listening on` lines. libiscsi checks are skipped (with a message) when
//! libiscsi-bin is not installed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use initiator::session::{DataDirection, Session, SessionConfig};
use initiator::Portal;
use proto::scsi::lun::Lun;
use proto::scsi::{Asc, SenseKey};
use serde_json::Value;

const T: &str = "iqn.2024-01.org.example:admin-cli";
const HOLDER: &str = "iqn.2024-01.org.example:holder";

struct Daemon {
    child: Child,
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_iscsi"))
            .args(["target", "serve", "--log", "warn", "--config"])
            .arg(&file)
            .arg("--admin-socket")
            .arg(&socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn iscsi target serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addr = None;
        loop {
            let line = lines.next().expect("serve exited early").unwrap();
            if let Some(a) = line.strip_prefix("listening on ") {
                addr.get_or_insert(a.to_string());
            } else if let Some(s) = line.strip_prefix("admin socket ") {
                assert_eq!(Path::new(s), socket);
                break;
            }
        }
        Daemon {
            child,
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

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// Per-initiator CHAP credentials replacing the target-wide ones. The
/// configuration, the admin API and `save` carry them, but the login code
/// does not consult them yet (it sees only `TargetConfig::auth`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "per-initiator CHAP is not enforced by the login path yet (target/src/login.rs)"]
async fn per_initiator_chap_overrides_target_wide() {
    let d = Daemon::start(&SECURED.replace(
        r#"{"initiator": "iqn.2024-01.org.example:allowed"}"#,
        r#"{"initiator": "iqn.2024-01.org.example:allowed",
                "chap": {"incoming": [{"user": "own", "secret": "own-secret-12345"}]}}"#,
    ));
    let allowed = "iqn.2024-01.org.example:allowed";
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
