//! The initiator daemon end to end, with real processes and real peers:
//! `iscsi daemon` on a temporary state directory, our target (`iscsi target
//! serve`) or tgtd, and libnbd's `nbdinfo`/`nbdcopy` as NBD clients.
//!
//! Node records (files, 0600), node verbs, login/session/logout, `login
//! --all` and automatic login at daemon start, bad input on the daemon
//! socket, the unreachable-daemon exit code, and recovery: the target comes
//! back within the replacement timeout (I/O completes) or too late (EIO,
//! the daemon stays up, a later login works).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testbed::{ServerProcess, Tgtd, TgtdConfig};

const BIN: &str = env!("CARGO_BIN_EXE_iscsi");
const TARGET: &str = "iqn.2026-01.rs.iscsi-rs:test-daemon";
const MIB: usize = 1 << 20;

/// A state directory, and the daemon running on it (if started).
struct Env {
    dir: tempfile::TempDir,
    daemon: Option<ServerProcess>,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
            daemon: None,
        }
    }

    fn state(&self) -> &Path {
        self.dir.path()
    }

    fn start_daemon(&mut self) {
        let mut c = Command::new(BIN);
        c.args(["daemon", "--log", "info", "--state-dir"])
            .arg(self.state())
            .env("XDG_CONFIG_HOME", self.state().join("config"));
        let d = ServerProcess::spawn(c, "listening on", Duration::from_secs(10)).expect("daemon");
        self.daemon = Some(d);
    }

    /// Run `iscsi ARGS --state-dir DIR`.
    fn iscsi(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--state-dir")
            .arg(self.state())
            .env("XDG_CONFIG_HOME", self.state().join("config"))
            .stdin(Stdio::null())
            .output()
            .expect("run iscsi")
    }

    /// Run and require success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.iscsi(args);
        assert!(
            o.status.success(),
            "iscsi {args:?} failed ({:?}): {}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr),
            self.daemon_log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }

    fn sessions(&self) -> Vec<serde_json::Value> {
        self.json(&["session", "--json"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn daemon_log(&self) -> String {
        self.daemon
            .as_ref()
            .map(|d| format!("\ndaemon output:\n{}", d.output().join("\n")))
            .unwrap_or_default()
    }

    /// Wait until a session's state is `state`.
    fn wait_state(&self, state: &str, within: Duration) -> serde_json::Value {
        let end = Instant::now() + within;
        loop {
            if let Some(s) = self.sessions().into_iter().find(|s| s["state"] == state) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "no session reached {state} within {within:?}: {:?}{}",
                self.sessions(),
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Our target on `portal` (port 0: any), LUNs as given.
fn serve(portal: &str, luns: &[&str]) -> ServerProcess {
    let mut c = Command::new(BIN);
    c.args([
        "target", "serve", "--portal", portal, "--target", TARGET, "--log", "warn",
    ]);
    for l in luns {
        c.args(["--lun", l]);
    }
    ServerProcess::spawn(c, "listening on", Duration::from_secs(10)).expect("target starts")
}

fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!("skipping: {tool} not installed (Debian package libnbd-bin)");
    }
    ok
}

/// The NBD URI of LUN `lun` in a session object.
fn uri(session: &serde_json::Value, lun: u64) -> String {
    session["luns"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["lun"] == lun))
        .and_then(|l| l["export"]["uri"].as_str())
        .unwrap_or_else(|| panic!("no export for LUN {lun}: {session}"))
        .to_string()
}

fn random_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    let p = dir.join(name);
    std::fs::write(&p, &data).unwrap();
    (p, data)
}

/// Run a command with a bound; `None` if it did not finish in time.
fn run_bounded(mut c: Command, within: Duration) -> Option<Output> {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let end = Instant::now() + within;
    while Instant::now() < end {
        if child.try_wait().ok().flatten().is_some() {
            return child.wait_with_output().ok();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn nbdcopy(src: &str, dst: &str) -> Command {
    let mut c = Command::new("nbdcopy");
    c.args([src, dst]);
    c
}

#[test]
fn discover_records_private_nodes_and_node_verbs_edit_them() {
    let t = serve("127.0.0.1:0", &["mem:8M"]);
    let portal = t.addr().expect("address").to_string();
    let env = Env::new();
    env.ok(&["discover", "--portal", &portal]);
    let nodes = env.state().join("nodes");
    let files: Vec<_> = std::fs::read_dir(&nodes).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&files[0].path()), 0o600);
    assert_eq!(mode(&nodes), 0o700);
    let list = env.json(&["node", "list", "--json"]);
    assert_eq!(list[0]["target"], TARGET);
    assert_eq!(list[0]["portal"], portal.as_str());
    assert_eq!(list[0]["startup"], "manual");
    assert_eq!(list[0]["replacement_timeout"], 120);

    env.ok(&[
        "node",
        "update",
        "--target",
        TARGET,
        "--chap",
        "alice:secret12chars",
        "--mutual-chap",
        "tgt:othersecret12",
        "--connections",
        "2",
        "--startup",
        "automatic",
        "--replacement-timeout",
        "30",
        "--nbd",
        "127.0.0.1:0",
    ]);
    let show = env.ok(&["node", "show", "--target", TARGET]);
    assert!(show.contains("alice (secret set)"), "{show}");
    assert!(!show.contains("secret12chars"), "secret printed: {show}");
    let j = env.json(&["node", "show", "--target", TARGET, "--json"]);
    assert_eq!(j[0]["connections"], 2);
    assert_eq!(j[0]["startup"], "automatic");
    assert_eq!(j[0]["replacement_timeout"], 30);
    assert!(!j.to_string().contains("secret12chars"));
    // The file holds the secret (owner-only), and is still 0600 after the
    // atomic rewrite.
    let text = std::fs::read_to_string(files[0].path()).unwrap();
    assert!(text.contains("secret12chars"));
    assert_eq!(mode(&files[0].path()), 0o600);
    // Rediscovery keeps the settings.
    env.ok(&["discover", "--portal", &portal]);
    assert_eq!(env.json(&["node", "list", "--json"])[0]["connections"], 2);

    // Bad values: usage errors (exit 2), nothing changed.
    let o = env.iscsi(&["node", "update", "--target", TARGET, "--connections", "0"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = env.iscsi(&[
        "node",
        "update",
        "--target",
        "iqn.2026-01.x:none",
        "--startup",
        "manual",
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("iscsi discover"),
        "{o:?}"
    );
    env.ok(&["node", "update", "--target", TARGET, "--no-chap"]);
    assert!(env.json(&["node", "show", "--target", TARGET, "--json"])[0]["mutual_chap"].is_null());

    env.ok(&["node", "delete", "--target", TARGET]);
    assert_eq!(env.json(&["node", "list", "--json"]), serde_json::json!([]));
}

#[test]
fn unreachable_daemon_exits_3_and_says_how_to_start_it() {
    let env = Env::new();
    for args in [
        &["session"][..],
        &["logout", "--all"],
        &["login", "--target", TARGET, "--portal", "127.0.0.1:9"],
    ] {
        let o = env.iscsi(args);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("iscsi daemon"), "{args:?}: {err}");
    }
}

#[test]
fn daemon_socket_survives_garbage_and_oversized_requests() {
    let mut env = Env::new();
    env.start_daemon();
    let sock = env.state().join("iscsid.sock");
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let read_line = |s: &mut UnixStream| {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while s.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        serde_json::from_slice::<serde_json::Value>(&line).unwrap_or(serde_json::Value::Null)
    };
    // Garbage, unknown op, unknown member: error answers, connection usable.
    for bad in [
        &b"\xff\xfe{{{ not json\n"[..],
        b"{\"op\":\"format\"}\n",
        b"{\"op\":\"sessions\",\"x\":1}\n",
        b"\n",
    ] {
        s.write_all(bad).unwrap();
        let r = read_line(&mut s);
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error"]["kind"], "bad-request", "{r}");
    }
    s.write_all(b"{\"op\":\"ping\"}\n").unwrap();
    assert_eq!(read_line(&mut s)["ok"], true);
    // Oversized (over 1 MiB, no newline): refused and closed.
    let mut big = UnixStream::connect(&sock).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..17 {
        if big.write_all(&chunk).is_err() {
            break;
        }
    }
    let r = read_line(&mut big);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("larger"),
        "{r}"
    );
    // Others are served meanwhile and after; the daemon is up.
    assert!(env.sessions().is_empty());
    s.write_all(b"{\"op\":\"ping\"}\n").unwrap();
    assert_eq!(read_line(&mut s)["ok"], true);
    // A client that connects and says nothing does not block anyone.
    let _idle = UnixStream::connect(&sock).unwrap();
    assert!(env.sessions().is_empty());
    assert!(env.daemon.as_mut().unwrap().try_wait().unwrap().is_none());
}

#[test]
fn login_session_logout_round_trip_with_nbd_clients() {
    if !have("nbdinfo") || !have("nbdcopy") {
        return;
    }
    let t = serve("127.0.0.1:0", &["mem:8M", "mem:4M"]);
    let portal = t.addr().expect("address").to_string();
    let mut env = Env::new();
    env.start_daemon();
    env.ok(&["discover", "--portal", &portal]);
    let o = env.iscsi(&[
        "login",
        "--target",
        TARGET,
        "--nbd",
        "127.0.0.1:0",
        "--connections",
        "2",
    ]);
    assert!(o.status.success(), "{o:?}{}", env.daemon_log());
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    // Progress, step by step, while the login runs.
    let progress = String::from_utf8_lossy(&o.stderr);
    for step in [
        "NBD server on",
        "2 connection(s) logged in",
        "exported as lun1",
    ] {
        assert!(progress.contains(step), "{step:?} missing: {progress}");
    }
    assert!(out.contains("successful"), "{out}");
    assert!(out.contains("nbd://127.0.0.1:"), "{out}");
    assert!(out.contains("/dev/nbd0 -N lun0"), "{out}");
    assert!(out.contains("nbdfuse"), "{out}");
    let s = &env.sessions()[0];
    assert_eq!(s["state"], "logged-in");
    assert_eq!(s["connections"].as_array().unwrap().len(), 2);
    assert_eq!(s["events"][0]["event"], "login");
    let u0 = uri(s, 0);
    let o = Command::new("nbdinfo")
        .args(["--size", &u0])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        (8 * MIB).to_string()
    );
    let o = Command::new("nbdinfo")
        .args(["--size", &uri(s, 1)])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        (4 * MIB).to_string()
    );

    let (src, data) = random_file(env.state(), "in.bin", 8 * MIB);
    let back = env.state().join("out.bin");
    let o = run_bounded(nbdcopy(src.to_str().unwrap(), &u0), Duration::from_secs(60))
        .expect("nbdcopy in time");
    assert!(o.status.success(), "{o:?}");
    let o = run_bounded(
        nbdcopy(&u0, back.to_str().unwrap()),
        Duration::from_secs(60),
    )
    .expect("nbdcopy in time");
    assert!(o.status.success(), "{o:?}");
    assert!(
        std::fs::read(&back).unwrap() == data,
        "data read back differs"
    );
    let s = &env.sessions()[0];
    let e = &s["luns"][0]["export"];
    assert!(
        e["bytes_written"].as_u64().unwrap() >= (8 * MIB) as u64,
        "{e}"
    );
    assert!(e["bytes_read"].as_u64().unwrap() >= (8 * MIB) as u64, "{e}");
    let human = env.ok(&["session"]);
    assert!(
        human.contains("logged-in") && human.contains(&u0),
        "{human}"
    );

    // A second login to the same node is refused (exit 1).
    let o = env.iscsi(&["login", "--target", TARGET]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = env.ok(&["logout", "--target", TARGET]);
    assert!(out.contains("Logout of"), "{out}");
    assert!(env.sessions().is_empty());
    let o = Command::new("nbdinfo")
        .args(["--size", &u0])
        .output()
        .unwrap();
    assert!(!o.status.success(), "export still served after logout");
    let o = env.iscsi(&["logout", "--target", TARGET]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
}

#[test]
fn login_all_and_daemon_restart_log_in_automatic_nodes() {
    let t = serve("127.0.0.1:0", &["mem:4M"]);
    let portal = t.addr().expect("address").to_string();
    let mut env = Env::new();
    env.start_daemon();
    env.ok(&["discover", "--portal", &portal]);
    let o = env.iscsi(&["login", "--all"]);
    assert_eq!(o.status.code(), Some(1), "no automatic node yet: {o:?}");
    env.ok(&[
        "node",
        "update",
        "--target",
        TARGET,
        "--startup",
        "automatic",
        "--nbd",
        "127.0.0.1:0",
    ]);
    let out = env.ok(&["login", "--all"]);
    assert!(out.contains("successful"), "{out}");
    assert_eq!(env.sessions().len(), 1);
    let out = env.ok(&["login", "--all"]);
    assert!(out.contains("Already logged in"), "{out}");
    // SIGTERM: the daemon logs out of everything and exits cleanly.
    let status = env
        .daemon
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(20))
        .unwrap();
    assert!(status.success(), "{status:?}{}", env.daemon_log());
    env.start_daemon();
    env.wait_state("logged-in", Duration::from_secs(20));
    assert_eq!(env.sessions().len(), 1);
    // A daemon that starts while the target is down keeps trying.
    env.daemon = None;
    drop(t);
    env.start_daemon();
    std::thread::sleep(Duration::from_millis(700));
    assert!(env.sessions().is_empty());
    let _t = serve(&portal, &["mem:4M"]);
    env.wait_state("logged-in", Duration::from_secs(20));
    env.ok(&["logout", "--all"]);
}

#[test]
fn tgtd_login_exports_disk_luns_only() {
    if !Tgtd::available() {
        eprintln!("skipping: tgt not installed");
        return;
    }
    if !have("nbdinfo") {
        return;
    }
    let t = Tgtd::start(TgtdConfig {
        lun_size: 4 << 20,
        ..TgtdConfig::default()
    })
    .expect("tgtd");
    let portal = t.addr().to_string();
    let mut env = Env::new();
    env.start_daemon();
    // No discovery: --portal records the node.
    let info = env.json(&[
        "login",
        "--target",
        t.target_name(),
        "--portal",
        &portal,
        "--nbd",
        "127.0.0.1:0",
        "--json",
    ]);
    let luns = info["luns"].as_array().unwrap();
    let l0 = luns.iter().find(|l| l["lun"] == 0).expect("LUN 0");
    assert!(l0["export"].is_null(), "controller LUN exported: {l0}");
    let u1 = uri(&info, 1);
    let o = Command::new("nbdinfo")
        .args(["--size", &u1])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        (4 * MIB).to_string(),
        "{o:?}"
    );
    assert_eq!(
        env.json(&["node", "list", "--json"])[0]["portal"],
        portal.as_str()
    );
    env.ok(&["logout", "--all"]);
}

/// Log in to our target on a fixed port with a file LUN (its data outlives
/// the target process) and the given replacement timeout.
fn recovery_setup(env: &mut Env, timeout: &str) -> (String, String, ServerProcess) {
    let port = testbed::free_port().unwrap();
    let portal = format!("127.0.0.1:{port}");
    let lun = format!("file:{},size=4M", env.state().join("lun.img").display());
    let t = serve(&portal, &[&lun]);
    env.start_daemon();
    env.ok(&["discover", "--portal", &portal]);
    env.ok(&[
        "node",
        "update",
        "--target",
        TARGET,
        "--replacement-timeout",
        timeout,
        "--nbd",
        "127.0.0.1:0",
    ]);
    env.ok(&["login", "--target", TARGET]);
    let u = uri(&env.sessions()[0], 0);
    (portal, u, t)
}

#[test]
fn target_back_within_replacement_timeout_io_completes() {
    if !have("nbdcopy") {
        return;
    }
    let mut env = Env::new();
    let (portal, u, t) = recovery_setup(&mut env, "30");
    let lun = format!("file:{},size=4M", env.state().join("lun.img").display());
    drop(t); // SIGKILL
    let (src, data) = random_file(env.state(), "in.bin", 4 * MIB);
    let copy = std::thread::spawn({
        let u = u.clone();
        move || run_bounded(nbdcopy(src.to_str().unwrap(), &u), Duration::from_secs(60))
    });
    std::thread::sleep(Duration::from_secs(2));
    let _t2 = serve(&portal, &[&lun]);
    let o = copy.join().unwrap().expect("nbdcopy finished");
    assert!(o.status.success(), "{o:?}{}", env.daemon_log());
    let back = env.state().join("out.bin");
    let o = run_bounded(nbdcopy(&u, back.to_str().unwrap()), Duration::from_secs(60)).unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(
        std::fs::read(&back).unwrap() == data,
        "data differs after recovery"
    );
    let s = env.wait_state("logged-in", Duration::from_secs(10));
    let events: Vec<_> = s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(events.contains(&"recovering".to_string()), "{events:?}");
    assert!(events.contains(&"recovered".to_string()), "{events:?}");
    env.ok(&["logout", "--all"]);
}

#[test]
fn target_back_too_late_eio_daemon_up_and_login_again_works() {
    if !have("nbdcopy") {
        return;
    }
    let mut env = Env::new();
    let (portal, u, t) = recovery_setup(&mut env, "2");
    let lun = format!("file:{},size=4M", env.state().join("lun.img").display());
    drop(t);
    let back = env.state().join("out.bin");
    let o = run_bounded(nbdcopy(&u, back.to_str().unwrap()), Duration::from_secs(60))
        .expect("nbdcopy bounded");
    assert!(
        !o.status.success(),
        "read succeeded without a target: {o:?}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Input/output error"), "{err}");
    let s = env.wait_state("failed", Duration::from_secs(20));
    assert!(s["events"].to_string().contains("failed"), "{s}");
    let human = env.ok(&["session"]);
    assert!(human.contains("failed") && human.contains("EIO"), "{human}");
    // The daemon is up; the target comes back; a new login replaces the
    // failed session.
    let _t2 = serve(&portal, &[&lun]);
    env.ok(&["login", "--target", TARGET]);
    let s = env.wait_state("logged-in", Duration::from_secs(5));
    assert_eq!(env.sessions().len(), 1);
    let o = run_bounded(
        nbdcopy(&uri(&s, 0), back.to_str().unwrap()),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(o.status.success(), "{o:?}");
    env.ok(&["logout", "--all"]);
}
