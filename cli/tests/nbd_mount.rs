//! The mount path without a kernel NBD module, as the README walks it:
//! `iscsi login --foreground`, `nbdfuse` makes the export a file, `losetup`
//! a block device, then `mkfs.ext4`, `mount`, write files, `sync`, unmount,
//! log out; log in again, `fsck.ext4 -n` is clean, mount, files intact.
//! Against our target and against tgtd. Needs root, /dev/fuse and loop
//! devices; skips with a message otherwise.

mod nbd_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nbd_common::*;
use testbed::{ServerProcess, TgtdConfig};

fn can_mount() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        eprintln!("skipping: mounting needs root");
        return false;
    }
    for dev in ["/dev/fuse", "/dev/loop-control"] {
        if !Path::new(dev).exists() {
            eprintln!("skipping: {dev} is missing (no FUSE or loop devices here)");
            return false;
        }
    }
    [
        "nbdfuse",
        "fusermount3",
        "losetup",
        "mkfs.ext4",
        "fsck.ext4",
        "mount",
    ]
    .iter()
    .all(|t| have(t))
}

/// An export attached as a loop device through nbdfuse; everything is
/// undone on drop (unmount, detach, fusermount -u), also when a test fails.
struct Attached {
    fuse_dir: PathBuf,
    nbdfuse: Child,
    loop_dev: Option<String>,
    mounted: Option<PathBuf>,
}

impl Attached {
    fn new(uri: &str, work: &Path, tag: &str) -> Attached {
        let fuse_dir = work.join(format!("fuse-{tag}"));
        std::fs::create_dir_all(&fuse_dir).unwrap();
        let pid = work.join(format!("nbdfuse-{tag}.pid"));
        let nbdfuse = Command::new("nbdfuse")
            .args(["-P", pid.to_str().unwrap()])
            .arg(fuse_dir.join("disk"))
            .arg(uri)
            .stdin(Stdio::null())
            .spawn()
            .expect("nbdfuse");
        let mut a = Attached {
            fuse_dir,
            nbdfuse,
            loop_dev: None,
            mounted: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !pid.exists() {
            assert!(Instant::now() < deadline, "nbdfuse did not get ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let file = a.fuse_dir.join("disk");
        let dev = run_ok(20, "losetup", &["-f", "--show", file.to_str().unwrap()]);
        a.loop_dev = Some(dev.trim().to_string());
        a
    }

    fn dev(&self) -> &str {
        self.loop_dev.as_deref().expect("loop device")
    }

    fn mount(&mut self, at: &Path) {
        std::fs::create_dir_all(at).unwrap();
        run_ok(30, "mount", &[self.dev(), at.to_str().unwrap()]);
        self.mounted = Some(at.to_path_buf());
    }

    fn unmount(&mut self) {
        if let Some(m) = self.mounted.take() {
            run_ok(60, "umount", &[m.to_str().unwrap()]);
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            let _ = run(60, "umount", &["-l", m.to_str().unwrap()]);
        }
        if let Some(d) = self.loop_dev.take() {
            let _ = run(20, "losetup", &["-d", &d]);
        }
        let _ = run(20, "fusermount3", &["-u", self.fuse_dir.to_str().unwrap()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nbdfuse.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.nbdfuse.kill();
        let _ = self.nbdfuse.wait();
    }
}

/// SIGTERM the login process and expect a clean logout (exit 0).
fn logout(mut l: ServerProcess) {
    let status = l.terminate(Duration::from_secs(30)).expect("stop login");
    assert!(
        status.success(),
        "iscsi login did not log out cleanly ({status}):\n{}",
        l.output().join("\n")
    );
}

fn mount_cycle(portal: std::net::SocketAddr, target: &str, export: &str) {
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            let data: Vec<u8> = (0..(100_000 + i * 33_333))
                .map(|j| (j * 31 + i * 7) as u8)
                .collect();
            (format!("file-{i}.bin"), data)
        })
        .collect();

    let l = login(portal, target, &[]);
    {
        let mut a = Attached::new(&uri(&l, export), work.path(), "1");
        run_ok(120, "mkfs.ext4", &["-q", "-F", a.dev()]);
        a.mount(&mnt);
        for (name, data) in &files {
            std::fs::write(mnt.join(name), data).unwrap();
        }
        run_ok(60, "sync", &[]);
        a.unmount();
    }
    logout(l);

    let l = login(portal, target, &[]);
    {
        let mut a = Attached::new(&uri(&l, export), work.path(), "2");
        let fsck = run(120, "fsck.ext4", &["-n", "-f", a.dev()]);
        assert!(
            fsck.status.success(),
            "fsck found problems:\n{}\n{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        a.mount(&mnt);
        for (name, data) in &files {
            let got = std::fs::read(mnt.join(name)).unwrap();
            assert!(got == *data, "{name} differs after logout and login");
        }
        a.unmount();
    }
    logout(l);
}

#[test]
fn mount_path_survives_logout_and_login_on_our_target() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = target(&[&format!(
        "file:{},size=64M",
        dir.path().join("disk.img").display()
    )]);
    mount_cycle(t.addr().unwrap(), TARGET, "lun0");
}

#[test]
fn mount_path_survives_logout_and_login_on_tgtd() {
    if !can_mount() || !testbed::Tgtd::available() {
        eprintln!("skipping unless root, FUSE, loop devices and tgtd are all present");
        return;
    }
    let t = testbed::Tgtd::start(TgtdConfig {
        lun_size: 64 << 20,
        ..TgtdConfig::default()
    })
    .expect("tgtd");
    // tgtd's LUN 0 is its controller; the disk is LUN 1.
    mount_cycle(t.addr(), t.target_name(), "lun1");
}
