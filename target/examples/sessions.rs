//! Scale probe: open many iSCSI sessions to one target and hold them, to
//! measure what an idle session costs the target (RSS per session) and
//! whether it takes N concurrent sessions without an error (issue 14).
//!
//! ```text
//! cargo run --release -p iscsi-target --example sessions -- \
//!     HOST:PORT TARGET_IQN SESSIONS [HOLD_SECS] [--io]
//! ```
//!
//! Each session is one connection logged in with `proto`'s initiator
//! login (its own initiator name and ISID). Once all are in, it prints `ready N` and holds
//! them for HOLD_SECS (default 10). With `--io`, every session sends a
//! NOP-Out ping and a 4 KiB READ (10) to LUN 0 once a second while held,
//! and the latency percentiles of those reads are printed at the end.
//! Raise `ulimit -n` (both here and for the target) above SESSIONS, and
//! the target's `limits.max_sessions_per_target` (config file) above it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::pdu::{Isid, NopOut, Pdu};
use tokio::sync::Semaphore;

// The raw initiator of the target's integration tests (login, commands).
#[path = "../tests/common/mod.rs"]
mod common;

use common::Conn;

const INITIATOR: &str = "iqn.2026-01.rs.iscsi-rs:sessions-probe";

/// Log in session `n`: its own initiator name (as many hosts would) and
/// ISID, one connection.
async fn login(addr: SocketAddr, target: &str, n: u32) -> Result<Conn, String> {
    let b = n.to_be_bytes();
    let isid = Isid([0x80, 0x55, b[0], b[1], b[2], b[3]]);
    Conn::login_with(addr, Some(target), isid, 0, 1, |cfg| {
        cfg.initiator_name = format!("{INITIATOR}-{n}");
    })
    .await
}

/// A NOP-Out ping (answered before anything else is sent), then a 4 KiB
/// READ (10) of LBA 0 on LUN 0. The first command of a session may get
/// the power-on unit attention (SAM-5 §5.14); any other failure is an
/// error.
async fn ping_and_read(c: &mut Conn) -> Result<(), String> {
    let itt = c.next_itt();
    let nop = NopOut {
        immediate: true,
        lun: 0,
        itt,
        ttt: proto::pdu::RESERVED_TAG,
        cmd_sn: c.cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        data: Bytes::new(),
    };
    c.send(Pdu::NopOut(nop)).await;
    match c.recv().await? {
        Pdu::NopIn(n) if n.itt == itt => {}
        other => return Err(format!("unexpected {:?}", other.opcode())),
    }
    let cdb = proto::scsi::cdb::read10(0, 8, false);
    let r = c.command(0, cdb.as_ref(), &[], 4096).await?;
    let unit_attention = r.sense.as_ref().and_then(|s| s.get(2)).map(|k| k & 0xf) == Some(6);
    if r.status != 0 && !unit_attention {
        return Err(format!("READ status {:#x}", r.status));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let io = args.iter().any(|a| a == "--io");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    if pos.len() < 3 {
        return Err("usage: sessions HOST:PORT TARGET_IQN SESSIONS [HOLD_SECS] [--io]".into());
    }
    let addr: SocketAddr = pos[0].parse().map_err(|e| format!("{e}"))?;
    let target = pos[1].clone();
    let n: u32 = pos[2].parse().map_err(|e| format!("{e}"))?;
    let hold: u64 = pos.get(3).map(|s| s.parse().unwrap_or(10)).unwrap_or(10);

    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(64));
    let mut logins = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (gate, target) = (gate.clone(), target.clone());
        logins.push(tokio::spawn(async move {
            let _p = gate.acquire().await.map_err(|e| e.to_string())?;
            login(addr, &target, i).await
        }));
    }
    let mut sessions = Vec::with_capacity(n as usize);
    let mut failed = 0u32;
    let mut first_error = None;
    for l in logins {
        match l.await.map_err(|e| e.to_string())? {
            Ok(s) => sessions.push(s),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "ready {} ({failed} failed) in {secs:.1} s ({:.0} logins/s){}",
        sessions.len(),
        sessions.len() as f64 / secs,
        first_error
            .map(|e| format!("; first error: {e}"))
            .unwrap_or_default()
    );
    if !io {
        tokio::time::sleep(Duration::from_secs(hold)).await;
        println!("done");
        return Ok(());
    }
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, mut s) in sessions.into_iter().enumerate() {
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            // Spread the sessions over the second.
            let phase = Duration::from_micros((i as u64 * 7919) % 1_000_000);
            let begin = tokio::time::Instant::now() + phase;
            let mut tick = tokio::time::interval_at(begin, Duration::from_secs(1));
            let end = Instant::now() + Duration::from_secs(hold);
            while Instant::now() < end {
                tick.tick().await;
                let t = Instant::now();
                if let Err(e) = ping_and_read(&mut s).await {
                    if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("session {i}: {e}");
                    }
                    break;
                }
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())?);
    }
    all.sort_unstable();
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)));
    println!(
        "done: {} ping+read rounds, {} errors; latency µs p50 {:?} p99 {:?} max {:?}",
        all.len(),
        errors.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99),
        all.last()
    );
    Ok(())
}
