//! Shared helpers for the NBD export tests: start our target and
//! `iscsi login --foreground`, run real NBD clients with a time bound, and
//! a minimal raw NBD client for the protocol-abuse tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use testbed::ServerProcess;

pub const BIN: &str = env!("CARGO_BIN_EXE_iscsi");
pub const TARGET: &str = "iqn.2026-01.rs.iscsi-rs:nbd-test";

/// Is `tool` on PATH? Prints a skip message when not.
pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipping: {tool} is not installed (scripts/install-deps.sh installs it)");
    }
    ok
}

/// Our target on 127.0.0.1 (port 0) with these `--lun` specs.
pub fn target(luns: &[&str]) -> ServerProcess {
    target_on("127.0.0.1:0", luns)
}

pub fn target_on(portal: &str, luns: &[&str]) -> ServerProcess {
    let mut c = Command::new(BIN);
    c.args([
        "target", "serve", "--portal", portal, "--target", TARGET, "--log", "warn",
    ]);
    for l in luns {
        c.args(["--lun", l]);
    }
    ServerProcess::spawn(c, "listening on", Duration::from_secs(10)).expect("target starts")
}

/// `iscsi login --foreground` with the NBD server on 127.0.0.1 port 0 (or
/// what `extra` says); ready once it prints `ready:`.
pub fn login(portal: SocketAddr, target: &str, extra: &[&str]) -> ServerProcess {
    let mut c = Command::new(BIN);
    c.args([
        "login",
        "--foreground",
        "--portal",
        &portal.to_string(),
        "--target",
        target,
    ]);
    if !extra.contains(&"--nbd") {
        c.args(["--nbd", "127.0.0.1:0"]);
    }
    if !extra.contains(&"--log") {
        c.args(["--log", "warn"]);
    }
    c.args(["--timeout", "5"]);
    c.args(extra);
    ServerProcess::spawn(c, "ready:", Duration::from_secs(20)).expect("iscsi login --foreground")
}

pub fn nbd_addr(p: &ServerProcess) -> SocketAddr {
    p.addr().expect("NBD address on the ready line")
}

pub fn uri(p: &ServerProcess, export: &str) -> String {
    format!("nbd://{}/{export}", nbd_addr(p))
}

/// Run a command with a time bound (coreutils `timeout`, then SIGKILL).
pub fn run(secs: u32, prog: &str, args: &[&str]) -> Output {
    let mut c = Command::new("timeout");
    c.args(["-k", "5", &secs.to_string(), prog]).args(args);
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"))
}

/// Like [`run`], asserting success.
pub fn run_ok(secs: u32, prog: &str, args: &[&str]) -> String {
    let o = run(secs, prog, args);
    assert!(
        o.status.success(),
        "{prog} {args:?} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A file of `len` random bytes.
pub fn random_file(path: &Path, len: u64) {
    let mut src = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    let mut dst = std::fs::File::create(path).expect("create");
    let n = std::io::copy(&mut (&mut src).take(len), &mut dst).expect("fill");
    assert_eq!(n, len);
}

/// Compare two files in 1 MiB pieces; the first differing offset if any.
pub fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).expect("open a"),
        std::fs::File::open(b).expect("open b"),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            let i = ba[..na.min(nb)]
                .iter()
                .zip(&bb[..na.min(nb)])
                .position(|(x, y)| x != y)
                .unwrap_or(na.min(nb));
            return Some(off + i as u64);
        }
        if na == 0 {
            return None;
        }
        off += na as u64;
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).expect("read") {
            0 => break,
            k => n += k,
        }
    }
    n
}

// ---------------------------------------------------------------------------
// A raw NBD client, to send what well-behaved clients never send.
// ---------------------------------------------------------------------------

pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_LIST: u32 = 3;
pub const OPT_GO: u32 = 7;
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;

pub struct Raw(pub TcpStream);

impl Raw {
    /// Connect and read the greeting; sends fixed-newstyle client flags.
    pub fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).expect("connect to the NBD server");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = Raw(s);
        let g = r.read_n(18);
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(u16::from_be_bytes([g[16], g[17]]) & 1, 1, "fixed newstyle");
        r.send(&1u32.to_be_bytes());
        r
    }

    pub fn send(&mut self, b: &[u8]) {
        self.0.write_all(b).expect("send");
    }

    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.0.read_exact(&mut b).expect("read from the NBD server");
        b
    }

    pub fn option(&mut self, opt: u32, data: &[u8]) {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.send(&b);
    }

    /// One option reply: (option, reply type, data).
    pub fn option_reply(&mut self) -> (u32, u32, Vec<u8>) {
        let h = self.read_n(20);
        assert_eq!(&h[..8], &0x0003_e889_0455_65a9u64.to_be_bytes());
        let be = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let (opt, kind, len) = (be(8), be(12), be(16));
        (opt, kind, self.read_n(len as usize))
    }

    /// NBD_OPT_GO data for `name` with no info requests.
    pub fn go_data(name: &str) -> Vec<u8> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&0u16.to_be_bytes());
        d
    }

    /// NBD_OPT_GO until ACK; returns (size, transmission flags).
    pub fn go(&mut self, name: &str) -> (u64, u16) {
        self.option(OPT_GO, &Self::go_data(name));
        let mut info = None;
        loop {
            let (_, kind, d) = self.option_reply();
            match kind {
                REP_INFO if d[..2] == [0, 0] => {
                    let size = u64::from_be_bytes(d[2..10].try_into().unwrap());
                    info = Some((size, u16::from_be_bytes([d[10], d[11]])));
                }
                REP_INFO => {}
                REP_ACK => return info.expect("NBD_INFO_EXPORT before ACK"),
                other => panic!("NBD_OPT_GO failed: reply {other:#x} {d:?}"),
            }
        }
    }

    pub fn request(&mut self, flags: u16, kind: u16, handle: u64, offset: u64, len: u32) {
        let mut b = 0x2560_9513u32.to_be_bytes().to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&handle.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        self.send(&b);
    }

    /// A simple reply header: (error, handle).
    pub fn simple_reply(&mut self) -> (u32, u64) {
        let h = self.read_n(16);
        assert_eq!(&h[..4], &0x6744_6698u32.to_be_bytes(), "simple reply magic");
        (
            u32::from_be_bytes(h[4..8].try_into().unwrap()),
            u64::from_be_bytes(h[8..16].try_into().unwrap()),
        )
    }

    /// True when the server closed the connection (EOF or reset) within
    /// the read timeout.
    pub fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.0.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }
}
