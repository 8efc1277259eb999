//! NBD clients across iSCSI session recovery: the target is killed in the
//! middle of an `nbdcopy` and restarted within the recovery timeout (the
//! copy completes and verifies), or too late (requests fail with EIO, the
//! NBD server stays up, and a new login works).

mod nbd_common;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nbd_common::*;
use testbed::ServerProcess;

/// Restart our target on the same portal (retrying while the port is
/// still held by the dying process).
fn restart(portal: &str, luns: &[&str]) -> ServerProcess {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = Command::new(BIN);
        c.args([
            "target", "serve", "--portal", portal, "--target", TARGET, "--log", "warn",
        ]);
        for l in luns {
            c.args(["--lun", l]);
        }
        match ServerProcess::spawn(c, "listening on", Duration::from_secs(20)) {
            Ok(p) => return p,
            Err(e) if Instant::now() < deadline => {
                eprintln!("restart failed, retrying: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("target restart: {e}"),
        }
    }
}

#[test]
fn target_killed_mid_nbdcopy_and_restarted_in_time_copy_completes() {
    if !have("nbdcopy") {
        return;
    }
    const SIZE: u64 = 256 << 20;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let lun = format!("file:{},size=256M,thin", img.display());
    let t = target(&[&lun]);
    let portal = t.addr().unwrap().to_string();
    let l = login(
        t.addr().unwrap(),
        TARGET,
        &["--recovery-timeout", "30", "--log", "info"],
    );
    let (src, back) = (dir.path().join("src.bin"), dir.path().join("back.bin"));
    random_file(&src, SIZE);
    let u = uri(&l, "lun0");
    // Small requests, few in flight: slow enough to be killed mid-way.
    let mut copy = Command::new("timeout")
        .args([
            "-k",
            "5",
            "120",
            "nbdcopy",
            "--request-size=65536",
            "--requests=2",
        ])
        .args(["--connections=1", "--flush", src.to_str().unwrap(), &u])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nbdcopy");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&img)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
        < 32 << 20
    {
        assert!(Instant::now() < deadline, "nbdcopy made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        copy.try_wait().unwrap().is_none(),
        "nbdcopy finished before the target could be killed (make the copy slower)"
    );
    let killed = Instant::now();
    drop(t); // SIGKILL
    std::thread::sleep(Duration::from_secs(2));
    let _t = restart(&portal, &[&lun]);
    let out = copy.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nbdcopy failed across the restart ({}): {}\niscsi login:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        l.output().join("\n")
    );
    eprintln!("copy completed {:?} after the kill", killed.elapsed());
    run_ok(120, "nbdcopy", &[&u, back.to_str().unwrap()]);
    assert_eq!(
        first_difference(&src, &back),
        None,
        "data differs after recovery"
    );
}

#[test]
fn target_back_too_late_gives_eio_and_the_server_stays_up() {
    let t = target(&["mem:16M"]);
    let portal = t.addr().unwrap();
    let mut l = login(portal, TARGET, &["--recovery-timeout", "2"]);
    let addr = nbd_addr(&l);
    let mut c = Raw::connect(addr);
    c.go("lun0");
    c.request(0, CMD_READ, 1, 0, 4096);
    assert_eq!(c.simple_reply(), (0, 1));
    c.read_n(4096);
    drop(t);
    // Waits out the 2 s recovery, then EIO.
    let start = Instant::now();
    c.request(0, CMD_READ, 2, 0, 4096);
    assert_eq!(c.simple_reply(), (EIO, 2));
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert!(l.try_wait().unwrap().is_none(), "iscsi login exited");
    // The NBD server still answers: new clients negotiate, I/O fails fast.
    let mut c2 = Raw::connect(addr);
    c2.go("lun0");
    c2.request(0, CMD_WRITE, 3, 0, 512);
    c2.send(&[7u8; 512]);
    assert_eq!(c2.simple_reply(), (EIO, 3));
    // The target comes back: a new login works.
    let _t = restart(&portal.to_string(), &["mem:16M"]);
    let l2 = login(portal, TARGET, &[]);
    let mut c3 = Raw::connect(nbd_addr(&l2));
    c3.go("lun0");
    c3.request(0, CMD_READ, 4, 0, 4096);
    assert_eq!(c3.simple_reply(), (0, 4));
    let _ = l.terminate(Duration::from_secs(20));
}
