//! Sequential write-then-read throughput through the initiator.
//!
//! `seqbench PORTAL TARGET LUN [TOTAL_MIB] [IO_KIB] [QUEUE_DEPTH] [CONNECTIONS]`
//! writes TOTAL_MIB (default 256; offsets wrap at the end of the LUN) in
//! IO_KIB (default 1024) requests with QUEUE_DEPTH (default 1) kept in
//! flight, then reads it back the same way, and prints MiB/s for each pass.

use std::time::Instant;

use futures::StreamExt;
use initiator::{Portal, ScsiDevice, Session, SessionConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        eprintln!(
            "usage: seqbench PORTAL TARGET LUN [TOTAL_MIB] [IO_KIB] [QUEUE_DEPTH] [CONNECTIONS]"
        );
        std::process::exit(2);
    }
    let num = |i: usize, d: u64| a.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (total_mib, io_kib, qd, conns) = (
        num(4, 256),
        num(5, 1024),
        num(6, 1) as usize,
        num(7, 1) as u16,
    );
    let mut cfg = SessionConfig::new(
        Portal::parse(&a[1])?,
        a[2].clone(),
        "iqn.2026-01.rs.iscsi-rs:seqbench",
    );
    cfg.connections = conns;
    // MRDSL_KIB: the MaxRecvDataSegmentLength to declare (default: the
    // session's default).
    if let Some(k) = std::env::var("MRDSL_KIB")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        cfg.offer.max_recv_data_segment_length = k * 1024;
    }
    let s = Session::connect(cfg).await?;
    let dev = ScsiDevice::open(&s, a[3].parse()?).await?;
    let bs = dev.block_size() as u64;
    let io = io_kib * 1024;
    // TOTAL_MIB may exceed the LUN: the offsets wrap around, as iscsi-perf's do.
    let lun_ios = dev.blocks() * bs / io;
    if lun_ios == 0 {
        return Err("the LUN is smaller than one I/O".into());
    }
    let total = (total_mib << 20) / io * io;
    let n = total / io;
    let data = initiator::bytes::Bytes::from(vec![0x5au8; io as usize]);
    for pass in ["write", "read"] {
        let start = Instant::now();
        let cpu0 = cpu_secs();
        // A sliding window: QUEUE_DEPTH requests stay in flight (as
        // iscsi-perf and fio keep their queue full), not batches of QD.
        let mut results = futures::stream::iter(0..n)
            .map(|k| {
                let d = &dev;
                let data = data.clone();
                async move {
                    let lba = (k % lun_ios) * io / bs;
                    if pass == "write" {
                        d.write(lba, data, false).await.map(|_| ())
                    } else {
                        d.read(lba, (io / bs) as u32).await.map(|_| ())
                    }
                }
            })
            .buffer_unordered(qd.max(1));
        while let Some(r) = results.next().await {
            r?;
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu_us = (cpu_secs() - cpu0) * 1e6 / n as f64;
        println!(
            "{pass}: {} MiB in {:.2}s = {:.0} MiB/s (io {} KiB, qd {qd}, conns {conns}) {cpu_us:.1} us CPU per I/O",
            total >> 20,
            secs,
            (total as f64 / (1 << 20) as f64) / secs,
            io_kib
        );
    }
    s.logout().await?;
    Ok(())
}

/// This process's user+system CPU seconds (Linux /proc; 0 elsewhere).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
