//! `iscsi discover` / `iscsi scsi` against tgtd: output and exit codes
//! (0 ok, 1 refused/failed, 2 usage, 3 unreachable), never a hang.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use testbed::{Direction, Proxy, Tgtd, TgtdConfig};

const BIN: &str = env!("CARGO_BIN_EXE_iscsi");

fn iscsi(args: &[&str]) -> Output {
    let xdg = std::env::temp_dir().join("iscsi-rs-cli-tests");
    Command::new(BIN)
        .args(args)
        .env("XDG_CONFIG_HOME", &xdg)
        .env("ISCSI_STATE_DIR", xdg.join("state"))
        .output()
        .expect("run iscsi")
}

fn tgtd(cfg: TgtdConfig) -> Option<Tgtd> {
    if !Tgtd::available() {
        eprintln!("skipping: tgt not installed");
        return None;
    }
    Some(Tgtd::start(cfg).expect("tgtd"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn discover_prints_iscsiadm_lines_and_json() {
    let Some(t) = tgtd(TgtdConfig::default()) else {
        return;
    };
    let portal = t.addr().to_string();
    let o = iscsi(&["discover", "--portal", &portal]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), format!("{portal},1 {}", t.target_name()));
    let o = iscsi(&["discover", "--portal", &portal, "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["name"], t.target_name());
}

#[test]
fn scsi_inquiry_readcap_vpd_raw() {
    let cfg = TgtdConfig {
        lun_size: 4 << 20,
        ..TgtdConfig::default()
    };
    let Some(t) = tgtd(cfg) else { return };
    let portal = t.addr().to_string();
    let base = [
        "scsi",
        "--portal",
        &portal,
        "--target",
        t.target_name(),
        "--lun",
        "1",
    ];
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        iscsi(&a)
    };
    let o = run(&["inquiry"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("VIRTUAL-DISK"), "{}", stdout(&o));
    let o = run(&["--json", "readcap"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["bytes"], 4 << 20);
    assert_eq!(v["block_size"], 512);
    let o = run(&["vpd", "0x80"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("unit_serial_number"), "{}", stdout(&o));
    // Raw INQUIRY: GOOD and 36 bytes of data.
    let o = run(&["raw", "12 00 00 00 24 00", "--read", "36"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("GOOD") && stdout(&o).contains("36 bytes"),
        "{}",
        stdout(&o)
    );
    // Raw WRITE(10) of one block from a file, then READ(10) it back.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("blk");
    std::fs::write(&f, vec![0xabu8; 512]).unwrap();
    let o = run(&[
        "raw",
        "2a 00 00 00 00 05 00 00 01 00",
        "--write-file",
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = run(&["--json", "raw", "28000000000500000100", "--read", "512"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["data"].as_str().unwrap().starts_with("ab ab ab"));
    // An unsupported opcode: CHECK CONDITION, sense printed, exit 1.
    let o = run(&["raw", "ff", "00", "00", "00", "00", "00"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("CHECK CONDITION") && stdout(&o).contains("ILLEGAL"),
        "{}",
        stdout(&o)
    );
    // report-luns lists the controller and the disk.
    let o = run(&["report-luns"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("LUN 1:"), "{}", stdout(&o));
}

#[test]
fn error_paths_have_distinct_exit_codes_and_one_line() {
    let cfg = TgtdConfig {
        incoming: vec![("bob".into(), "bobsecret123".into())],
        ..TgtdConfig::default()
    };
    let Some(t) = tgtd(cfg) else { return };
    let portal = t.addr().to_string();
    // Unknown target: refused, exit 1.
    let o = iscsi(&[
        "scsi",
        "--portal",
        &portal,
        "--target",
        "iqn.2026-01.x:none",
        "inquiry",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("target not found"), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1);
    // Wrong CHAP secret: refused, exit 1.
    let o = iscsi(&[
        "scsi",
        "--portal",
        &portal,
        "--target",
        t.target_name(),
        "--chap",
        "bob:wrongsecret1",
        "inquiry",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("authentication"), "{}", stderr(&o));
    // Right secret works.
    let o = iscsi(&[
        "scsi",
        "--portal",
        &portal,
        "--target",
        t.target_name(),
        "--chap",
        "bob:bobsecret123",
        "--lun",
        "1",
        "readcap",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Connection refused: exit 3.
    let closed = testbed::free_port().unwrap();
    let o = iscsi(&["discover", "--portal", &format!("127.0.0.1:{closed}")]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
    // Usage errors: exit 2.
    let o = iscsi(&["discover", "--portal", "host:notaport"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = iscsi(&[
        "scsi",
        "--portal",
        &portal,
        "--target",
        t.target_name(),
        "raw",
        "zz",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_target_times_out_with_exit_3() {
    let Some(t) = tgtd(TgtdConfig::default()) else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), t.addr())
        .await
        .unwrap();
    proxy.set_blackhole(Direction::ToClient, true);
    let portal = proxy.local_addr().to_string();
    let target = t.target_name().to_string();
    let start = Instant::now();
    let o = tokio::task::spawn_blocking(move || {
        iscsi(&[
            "scsi",
            "--portal",
            &portal,
            "--target",
            &target,
            "--timeout",
            "2",
            "inquiry",
        ])
    })
    .await
    .unwrap();
    let took = start.elapsed();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("timed out") || stderr(&o).contains("Login Response"),
        "{}",
        stderr(&o)
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
}
