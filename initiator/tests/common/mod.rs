//! Shared helpers for the initiator's integration tests.
#![allow(dead_code)]

use std::time::Duration;

use initiator::{Portal, ScsiDevice, Session, SessionConfig};
use rand::{Rng, SeedableRng};
use testbed::{Tgtd, TgtdConfig, Unwritten, Verifier};

pub const INITIATOR: &str = "iqn.2026-01.rs.iscsi-rs:test-initiator";

/// Start a tgtd, or `None` (test skipped with a message) when tgt is not installed.
pub fn tgtd(cfg: TgtdConfig) -> Option<Tgtd> {
    if !Tgtd::available() {
        eprintln!("skipping: tgtd/tgtadm not installed");
        return None;
    }
    Some(Tgtd::start(cfg).expect("tgtd starts"))
}

pub fn portal_of(addr: std::net::SocketAddr) -> Portal {
    Portal::parse(&addr.to_string()).unwrap()
}

pub fn config(addr: std::net::SocketAddr, target: &str) -> SessionConfig {
    let mut c = SessionConfig::new(portal_of(addr), target, INITIATOR);
    c.connect_timeout = Duration::from_secs(2);
    c.login_timeout = Duration::from_secs(5);
    c.nop_interval = Duration::from_secs(1);
    c.nop_timeout = Duration::from_secs(3);
    c.command_timeout = Duration::from_secs(20);
    c.recovery_timeout = Duration::from_secs(20);
    c
}

/// Write `total` bytes in random-sized, random-offset writes (some larger
/// than MaxBurstLength, so R2T sequences are exercised), several in flight,
/// then read every written range back and verify, plus a full sweep.
pub async fn write_read_verify(dev: &ScsiDevice, seed: u64, total: usize, max_io: usize) {
    let bs = dev.block_size() as usize;
    let size = dev.blocks() * bs as u64;
    let mut v = Verifier::new(seed, bs, size, Unwritten::Any);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut done = 0usize;
    let mut ranges = Vec::new();
    while done < total {
        // A batch of concurrent, non-overlapping writes.
        let mut batch = Vec::new();
        for _ in 0..4 {
            let blocks = rng.gen_range(1..=max_io / bs) as u64;
            let lba = rng.gen_range(0..dev.blocks() - blocks);
            if batch
                .iter()
                .any(|&(l, n, _): &(u64, u64, Vec<u8>)| lba < l + n && l < lba + blocks)
            {
                continue;
            }
            let data = v.write(lba * bs as u64, (blocks as usize) * bs);
            done += data.len();
            batch.push((lba, blocks, data));
        }
        let futs = batch
            .iter()
            .map(|(lba, _, data)| dev.write(*lba, data.clone().into(), false));
        for r in futures::future::join_all(futs).await {
            r.expect("write");
        }
        ranges.extend(batch.into_iter().map(|(l, n, _)| (l, n)));
    }
    for (lba, blocks) in ranges {
        let got = dev.read(lba, blocks as u32).await.expect("read");
        if let Err(m) = v.check(lba * bs as u64, &got) {
            panic!("data mismatch at lba {lba}: {m:?}");
        }
    }
    // Full sweep in 1 MiB reads.
    let step = ((1 << 20) / bs) as u64;
    let mut lba = 0;
    while lba < dev.blocks() {
        let n = step.min(dev.blocks() - lba);
        let got = dev.read(lba, n as u32).await.expect("sweep read");
        if let Err(m) = v.check(lba * bs as u64, &got) {
            panic!("sweep mismatch at lba {lba}: {m:?}");
        }
        lba += n;
    }
}

pub async fn open_lun1(cfg: SessionConfig) -> (Session, ScsiDevice) {
    let s = Session::connect(cfg).await.expect("login");
    let d = ScsiDevice::open(&s, 1).await.expect("open LUN 1");
    (s, d)
}
