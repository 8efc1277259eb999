//! `iscsi demo` end to end: it starts, checks its own export, and a real NBD
//! client (libnbd's `nbdinfo`) sees the export while it serves; SIGINT ends
//! it cleanly (exit 0, logged out).

use std::process::Command;
use std::time::Duration;

use testbed::{free_port, ServerProcess};

const BIN: &str = env!("CARGO_BIN_EXE_iscsi");

#[test]
fn demo_serves_an_nbd_export_until_sigint() {
    let port = free_port().expect("free port");
    let mut c = Command::new(BIN);
    c.args(["demo", "--nbd", &format!("127.0.0.1:{port}")]);
    let mut demo =
        ServerProcess::spawn(c, "Ctrl-C stops it", Duration::from_secs(60)).expect("demo starts");
    let out = demo.output().join("\n");
    assert!(out.contains("2 connections (MC/S)"), "{out}");
    assert!(
        out.contains("read back") && out.contains("identical"),
        "{out}"
    );
    let uri = format!("nbd://127.0.0.1:{port}/lun0");
    assert!(out.contains(&format!("nbdinfo {uri}")), "{out}");

    match Command::new("nbdinfo").args(["--json", &uri]).output() {
        Err(_) => eprintln!("SKIP nbdinfo part: nbdinfo not installed (scripts/install-deps.sh installs libnbd-bin)"),
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "nbdinfo: {text}{}", String::from_utf8_lossy(&o.stderr));
            let v: serde_json::Value = serde_json::from_str(&text).expect("nbdinfo --json");
            let e = &v["exports"][0];
            assert_eq!(e["export-name"], "lun0", "{v}");
            assert_eq!(e["export-size"], 256u64 << 20, "{v}");
            assert_eq!(e["is_read_only"], false, "{v}");
        }
    }

    let status = demo.interrupt(Duration::from_secs(20)).expect("demo stops");
    // The reader threads may still be delivering the last lines.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    let mut out = demo.output().join("\n");
    while !out.contains("stopped: NBD clients ended") && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        out = demo.output().join("\n");
    }
    assert!(status.success(), "exit {status}: {out}");
    assert!(out.contains("stopped: NBD clients ended"), "{out}");
}
