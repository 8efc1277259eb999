//! The Tgtd helper against the real tgtd, checked with libiscsi's tools.
//! Skips (with a message) only when tgtd or the libiscsi tools are absent.

use std::process::Command;

use testbed::{Tgtd, TgtdConfig};

fn have(bin: &str) -> bool {
    Command::new(bin).arg("--help").output().is_ok()
}

fn run(bin: &str, url: &str) -> (bool, String) {
    let out = Command::new("timeout")
        .args(["20", bin, url])
        .output()
        .expect("run libiscsi tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn skip() -> bool {
    if !Tgtd::available() {
        eprintln!("SKIP: tgtd/tgtadm not installed (Debian package `tgt`)");
        return true;
    }
    if !have("iscsi-inq") || !have("iscsi-ls") {
        eprintln!("SKIP: iscsi-inq/iscsi-ls not installed (Debian package `libiscsi-bin`)");
        return true;
    }
    false
}

#[test]
fn tgtd_serves_a_lun_without_auth() {
    if skip() {
        return;
    }
    let t = Tgtd::start(TgtdConfig::default()).unwrap();
    let (ok, out) = run("iscsi-ls", &format!("iscsi://{}", t.addr()));
    assert!(ok, "{out}\ntgtd log:\n{}", t.log());
    assert!(out.contains(t.target_name()), "{out}");
    let (ok, out) = run("iscsi-inq", &t.url(1));
    assert!(ok && out.contains("DIRECT_ACCESS"), "{out}");
    let show = t.tgtadm(&["--mode", "target", "--op", "show"]).unwrap();
    assert!(
        show.contains(&t.backing_file().to_string_lossy().to_string()),
        "{show}"
    );
}

#[test]
fn tgtd_with_one_way_and_mutual_chap() {
    if skip() {
        return;
    }
    let t = Tgtd::start(TgtdConfig {
        incoming: vec![("alice".into(), "alice-secret-123".into())],
        outgoing: Some(("tgt".into(), "target-secret-456".into())),
        ..TgtdConfig::default()
    })
    .unwrap();
    let base = format!("{}/{}/1", t.addr(), t.target_name());
    let (ok, out) = run("iscsi-inq", &format!("iscsi://{base}"));
    assert!(!ok, "login without CHAP must fail: {out}");
    let (ok, out) = run(
        "iscsi-inq",
        &format!("iscsi://alice%wrong-secret-000@{base}"),
    );
    assert!(!ok, "wrong secret must fail: {out}");
    let (ok, out) = run(
        "iscsi-inq",
        &format!("iscsi://alice%alice-secret-123@{base}"),
    );
    assert!(ok, "one-way CHAP: {out}\n{}", t.log());
    let mutual = format!(
        "iscsi://alice%alice-secret-123@{base}?target_user=tgt&target_password=target-secret-456"
    );
    let (ok, out) = run("iscsi-inq", &mutual);
    assert!(ok, "mutual CHAP: {out}");
    let bad_mutual = format!(
        "iscsi://alice%alice-secret-123@{base}?target_user=tgt&target_password=not-the-secret"
    );
    let (ok, out) = run("iscsi-inq", &bad_mutual);
    assert!(
        !ok,
        "mutual CHAP with the wrong target secret must fail: {out}"
    );
}

#[test]
fn two_daemons_do_not_collide_and_stop_on_drop() {
    if !Tgtd::available() {
        eprintln!("SKIP: tgtd not installed");
        return;
    }
    let a = Tgtd::start(TgtdConfig::default()).unwrap();
    let b = Tgtd::start(TgtdConfig::default()).unwrap();
    assert_ne!(a.control_port(), b.control_port());
    assert_ne!(a.addr(), b.addr());
    let addr = a.addr();
    let sock = format!("/var/run/tgtd/socket.{}", a.control_port());
    drop(a);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "portal still open after drop"
    );
    assert!(
        !std::path::Path::new(&sock).exists(),
        "control socket left behind"
    );
    assert!(b.tgtadm(&["--mode", "target", "--op", "show"]).is_ok());
}
