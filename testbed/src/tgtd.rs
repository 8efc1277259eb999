//! A private instance of Debian's `tgtd` (the tgt project's user-space
//! target) as a real peer for initiator tests.
//!
//! `tgtd -f -C <n> --iscsi portal=127.0.0.1:<port>` runs in the foreground
//! with its management socket at `/var/run/tgtd/socket.<n>` (plus a
//! `.lock` file); every `tgtadm` call must pass the same `-C <n>`. We pick an
//! unused `<n>` and a free port, wait until `tgtadm` answers, create one
//! target with a file-backed LUN 1 (LUN 0 is tgt's controller), bind it to
//! all initiators, add the CHAP accounts asked for, and kill the daemon and
//! remove its socket files on drop.

use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::process::free_port;

const CONTROL_DIR: &str = "/var/run/tgtd";

/// What to create in the daemon.
#[derive(Debug, Clone)]
pub struct TgtdConfig {
    /// The target's IQN.
    pub target_name: String,
    /// Size of the file backing LUN 1, in bytes.
    pub lun_size: u64,
    /// CHAP accounts the initiator may log in with (tgt "incoming").
    /// Empty: no CHAP (AuthMethod=None accepted).
    pub incoming: Vec<(String, String)>,
    /// The target's own CHAP account for mutual CHAP (tgt "outgoing").
    pub outgoing: Option<(String, String)>,
}

impl Default for TgtdConfig {
    fn default() -> Self {
        TgtdConfig {
            target_name: "iqn.2024-01.rs.iscsi:testbed.tgtd".to_string(),
            lun_size: 16 * 1024 * 1024,
            incoming: Vec::new(),
            outgoing: None,
        }
    }
}

/// A running tgtd; see the module docs.
pub struct Tgtd {
    child: Child,
    control_port: u32,
    addr: SocketAddr,
    config: TgtdConfig,
    dir: tempfile::TempDir,
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(bin).is_file()
}

fn binary(bin: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(bin);
    if sbin.is_file() {
        sbin
    } else {
        PathBuf::from(bin)
    }
}

fn socket_paths(n: u32) -> [PathBuf; 2] {
    [
        PathBuf::from(format!("{CONTROL_DIR}/socket.{n}")),
        PathBuf::from(format!("{CONTROL_DIR}/socket.{n}.lock")),
    ]
}

impl Tgtd {
    /// Are `tgtd` and `tgtadm` installed?
    pub fn available() -> bool {
        which("tgtd") && which("tgtadm")
    }

    /// Start a daemon and configure it.
    pub fn start(config: TgtdConfig) -> io::Result<Tgtd> {
        if !Tgtd::available() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "tgtd/tgtadm not installed (Debian package `tgt`)",
            ));
        }
        fs::create_dir_all(CONTROL_DIR)?;
        let mut last_err = None;
        for attempt in 0..5u32 {
            match Tgtd::try_start(&config, attempt) {
                Ok(t) => return Ok(t),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("tgtd did not start")))
    }

    fn try_start(config: &TgtdConfig, attempt: u32) -> io::Result<Tgtd> {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id().rotate_left(16)
            ^ attempt.wrapping_mul(7919);
        // Control "ports" are just socket-name suffixes, parsed by tgtd into
        // a 16-bit signed value (at most 32767); stay clear of the default
        // (0) and of small numbers people pick by hand.
        let mut control_port = 20_000 + seed % 12_000;
        while socket_paths(control_port).iter().any(|p| p.exists()) {
            control_port = 20_000 + (control_port - 20_000 + 1) % 12_000;
        }
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = tempfile::Builder::new().prefix("testbed-tgtd").tempdir()?;
        let log = File::create(dir.path().join("tgtd.log"))?;
        let child = Command::new(binary("tgtd"))
            .args([
                "-f",
                "-C",
                &control_port.to_string(),
                "--iscsi",
                &format!("portal={addr}"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut t = Tgtd {
            child,
            control_port,
            addr,
            config: config.clone(),
            dir,
        };
        t.wait_ready(Duration::from_secs(10))?;
        t.configure()?;
        Ok(t)
    }

    fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "tgtd exited ({status}) during start-up; log:\n{}",
                    self.log()
                )));
            }
            let up = self.tgtadm(&["--mode", "target", "--op", "show"]).is_ok()
                && std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))
                    .is_ok();
            if up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("tgtd not ready within {timeout:?}; log:\n{}", self.log()),
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn configure(&self) -> io::Result<()> {
        let lun = self.backing_file();
        File::create(&lun)?.set_len(self.config.lun_size)?;
        let lun = lun.to_string_lossy().into_owned();
        let name = self.config.target_name.clone();
        self.tgtadm(&[
            "--mode",
            "target",
            "--op",
            "new",
            "--tid",
            "1",
            "--targetname",
            &name,
        ])?;
        self.tgtadm(&[
            "--mode",
            "logicalunit",
            "--op",
            "new",
            "--tid",
            "1",
            "--lun",
            "1",
            "--backing-store",
            &lun,
        ])?;
        self.tgtadm(&[
            "--mode",
            "target",
            "--op",
            "bind",
            "--tid",
            "1",
            "--initiator-address",
            "ALL",
        ])?;
        for (user, password) in &self.config.incoming {
            self.add_account(user, password, false)?;
        }
        if let Some((user, password)) = &self.config.outgoing {
            self.add_account(user, password, true)?;
        }
        Ok(())
    }

    /// Create a CHAP account and bind it to target 1 (`outgoing`: the
    /// target's own account for mutual CHAP).
    pub fn add_account(&self, user: &str, password: &str, outgoing: bool) -> io::Result<()> {
        self.tgtadm(&[
            "--mode",
            "account",
            "--op",
            "new",
            "--user",
            user,
            "--password",
            password,
        ])?;
        let mut args = vec![
            "--mode", "account", "--op", "bind", "--tid", "1", "--user", user,
        ];
        if outgoing {
            args.push("--outgoing");
        }
        self.tgtadm(&args)?;
        Ok(())
    }

    /// Run `tgtadm -C <n> --lld iscsi <args>`; stdout on success, an error
    /// carrying stderr otherwise.
    pub fn tgtadm(&self, args: &[&str]) -> io::Result<String> {
        let out = Command::new(binary("tgtadm"))
            .args(["-C", &self.control_port.to_string(), "--lld", "iscsi"])
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(io::Error::other(format!(
                "tgtadm {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// The iSCSI portal.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `-C` number shared by tgtd and tgtadm.
    pub fn control_port(&self) -> u32 {
        self.control_port
    }

    /// The target's IQN.
    pub fn target_name(&self) -> &str {
        &self.config.target_name
    }

    /// The file behind LUN 1.
    pub fn backing_file(&self) -> PathBuf {
        self.dir.path().join("lun1.img")
    }

    /// A libiscsi URL for `lun` without credentials:
    /// `iscsi://127.0.0.1:<port>/<iqn>/<lun>`.
    pub fn url(&self, lun: u32) -> String {
        format!("iscsi://{}/{}/{}", self.addr, self.config.target_name, lun)
    }

    /// What tgtd printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("tgtd.log")).unwrap_or_default()
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        // tgtd ignores SIGTERM while targets exist; SIGKILL is what works.
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in socket_paths(self.control_port) {
            let _ = fs::remove_file(p);
        }
    }
}
