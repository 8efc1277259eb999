//! `nbd-verify` (the `nbd` crate's client) against a real NBD server,
//! nbdkit's memory plugin: it verifies a good export, and it catches a
//! byte flipped on the wire by the proxy.

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testbed::{free_port, Direction, Proxy};

const BIN: &str = env!("CARGO_BIN_EXE_nbd-verify");

struct Nbdkit(std::process::Child);

impl Drop for Nbdkit {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nbdkit's memory plugin on a free port, or `None` (skip) without nbdkit.
fn nbdkit() -> Option<(Nbdkit, SocketAddr)> {
    if Command::new("nbdkit").arg("--version").output().is_err() {
        eprintln!("SKIP: nbdkit not installed (scripts/install-deps.sh installs it)");
        return None;
    }
    let port = free_port().expect("free port");
    let child = Command::new("nbdkit")
        .args([
            "-f",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "memory",
            "64M",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("nbdkit starts");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < until, "nbdkit did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((Nbdkit(child), addr))
}

fn verify(addr: SocketAddr, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg(addr.to_string())
        .args(extra)
        .output()
        .expect("nbd-verify runs")
}

#[test]
fn verifies_nbdkit_memory_export() {
    let Some((_k, addr)) = nbdkit() else { return };
    let out = verify(addr, &["--mib", "8"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("2048 blocks: 2048 ok, 0 stale, 0 torn"),
        "{text}"
    );
    let out = verify(addr, &["--mib", "8", "--duration", "2", "--workers", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("0 errors, 0 read mismatches"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_a_flipped_byte() {
    let Some((_k, addr)) = nbdkit() else { return };
    let proxy = Proxy::start(([127, 0, 0, 1], 0).into(), addr)
        .await
        .unwrap();
    // Past the handshake and the write replies: inside the read-back data.
    proxy.corrupt_at(Direction::ToClient, 64 * 1024, 0x01);
    let paddr = proxy.local_addr();
    let out = tokio::task::spawn_blocking(move || verify(paddr, &["--mib", "4"]))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("FAILED") && err.contains("1 torn"), "{err}");
}

#[test]
fn unreachable_and_usage_exit_codes() {
    let port = free_port().unwrap();
    let out = verify(([127, 0, 0, 1], port).into(), &[]);
    assert_eq!(out.status.code(), Some(3));
    let out = Command::new(BIN).arg("--mib").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
