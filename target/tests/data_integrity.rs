//! Data integrity through the whole stack: several concurrent sessions do
//! random writes of random sizes (immediate data, R2T bursts, multi-PDU
//! Data-In), read everything back and compare with a model; then the
//! target restarts on the same file and the data must still be there.

mod common;

use common::{isid, start_server, Conn, Rng};
use iscsi_target::config::SessionLimits;

const TARGET: &str = "iqn.2024-01.rs.iscsi:test.integrity";
const SESSIONS: usize = 4;
/// Blocks per session region (each session owns a disjoint region, so the
/// expected content is known whatever the interleaving).
const REGION_BLOCKS: u32 = 2048;
const BS: usize = 512;

fn limits() -> SessionLimits {
    // Small bursts and segments so that transfers cross many PDU, R2T and
    // burst boundaries.
    SessionLimits {
        max_recv_data_segment_length: 8192,
        max_burst_length: 16384,
        first_burst_length: 8192,
        max_outstanding_r2t: 2,
        queue_depth: 8,
        ..SessionLimits::default()
    }
}

async fn verify_all(addr: std::net::SocketAddr, models: &[Vec<u8>]) {
    let mut tasks = Vec::new();
    for (i, model) in models.iter().enumerate() {
        let model = model.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::login(addr, Some(TARGET), isid(i as u8 + 100), 0, 0)
                .await
                .expect("login");
            let base = i as u32 * REGION_BLOCKS;
            let mut lba = 0u32;
            while lba < REGION_BLOCKS {
                let n = 128.min(REGION_BLOCKS - lba);
                let r = c.read10(base + lba, n as u16).await.expect("read");
                assert_eq!(r.status, 0);
                let off = lba as usize * BS;
                assert!(
                    r.data == model[off..off + n as usize * BS],
                    "session {i}: mismatch in blocks {lba}..{}",
                    lba + n
                );
                lba += n;
            }
            c.logout().await.expect("logout");
        }));
    }
    for t in tasks {
        t.await.expect("verifier panicked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_random_writes_survive_restart() {
    let dir = std::env::temp_dir().join(format!("iscsi-integrity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("lun0.img");
    let _ = std::fs::remove_file(&img);
    let size = SESSIONS as u64 * u64::from(REGION_BLOCKS) * BS as u64;
    let spec = format!("file:{},size={size},thin", img.display());

    let server = start_server(TARGET, &[&spec], limits()).await;
    let addr = server.local_addrs()[0];
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1) * 0x1234_5678));
            let mut model = vec![0u8; REGION_BLOCKS as usize * BS];
            let mut c = Conn::login(addr, Some(TARGET), isid(i as u8), 0, 0)
                .await
                .expect("login");
            let base = i as u32 * REGION_BLOCKS;
            for _ in 0..60 {
                let blocks = 1 + rng.below(96) as u32;
                let lba = rng.below(u64::from(REGION_BLOCKS - blocks + 1)) as u32;
                let mut data = vec![0u8; blocks as usize * BS];
                rng.fill(&mut data);
                let r = c.write10(base + lba, &data).await.expect("write");
                assert_eq!(r.status, 0, "write failed: {:?}", r.sense);
                let off = lba as usize * BS;
                model[off..off + data.len()].copy_from_slice(&data);
                // Read back a random earlier range now and then.
                if rng.below(4) == 0 {
                    let rl = rng.below(u64::from(REGION_BLOCKS - 64)) as u32;
                    let r = c.read10(base + rl, 64).await.expect("read");
                    let o = rl as usize * BS;
                    assert!(r.data == model[o..o + 64 * BS], "early read-back mismatch");
                }
            }
            c.logout().await.expect("logout");
            model
        }));
    }
    let mut models = Vec::new();
    for t in tasks {
        models.push(t.await.expect("writer panicked"));
    }
    verify_all(addr, &models).await;
    server.shutdown().await;

    // Restart on the same file: the data is still there.
    let server = start_server(TARGET, &[&format!("file:{}", img.display())], limits()).await;
    verify_all(server.local_addrs()[0], &models).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
