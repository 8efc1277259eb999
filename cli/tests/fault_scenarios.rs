//! The fault scenarios of `testbed::scenarios` (issue 11) against our own
//! target process and initiator: connection cuts every 2 s, a target kill
//! and restart, stalls longer than the NOP timeout, corrupted bytes with
//! digests on, and a slow target. The workload goes through our NBD export
//! (the session's LUN 0) with the `nbd` crate's client, one NBD connection
//! per worker; each scenario ends with a block-by-block audit.

use std::time::Duration;

use initiator::NbdServer;
use testbed::scenarios::{self, Direction, Opener, ScenarioReport, Stack, StackOptions, Workload};

const BIN: &str = env!("CARGO_BIN_EXE_iscsi");

fn workload(seconds: u64, seed: u64) -> Workload {
    Workload {
        duration: Duration::from_secs(seconds),
        seed,
        ..Workload::default()
    }
}

async fn stack(digests: bool) -> Stack {
    let mut o = StackOptions::new(BIN);
    o.digests = digests;
    Stack::start(o)
        .await
        .expect("target, proxy and session start")
}

/// The NBD export of the stack's LUN 0 and an opener of client connections.
async fn opener(s: &Stack, w: &Workload) -> (NbdServer, Opener) {
    s.nbd_export(w.op_timeout).await.expect("NBD export")
}

fn done(r: std::io::Result<ScenarioReport>) {
    let r = r.expect("scenario ran");
    eprintln!("{r}");
    if let Err(e) = r.check() {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_cut_connections_every_2s() {
    let mut s = stack(false).await;
    let w = workload(30, 101);
    let (_nbd, o) = opener(&s, &w).await;
    done(scenarios::cut_connections(&mut s, o, &w, Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_kill_and_restart_target() {
    let mut s = stack(false).await;
    let w = workload(15, 102);
    let (_nbd, o) = opener(&s, &w).await;
    let r = scenarios::kill_target(
        &mut s,
        o,
        &w,
        Duration::from_secs(4),
        Duration::from_secs(2),
    )
    .await;
    assert!(s.target_alive(), "the restarted target is still serving");
    done(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_stall_longer_than_nop_timeout() {
    let mut s = stack(false).await;
    let w = workload(15, 103);
    let (_nbd, o) = opener(&s, &w).await;
    // The session's NOP timeout is 3 s (StackOptions::new).
    done(scenarios::stall(&mut s, o, &w, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_corrupt_bytes_with_digests() {
    let mut s = stack(true).await;
    let w = workload(15, 104);
    let (_nbd, o) = opener(&s, &w).await;
    let every = Duration::from_millis(1500);
    let r = scenarios::corrupt_with_digests(&mut s, o, &w, every, &[Direction::ToClient]).await;
    if r.is_err() {
        eprintln!("target output:\n{}", s.target_output().join("\n"));
    }
    done(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_slow_target() {
    let mut s = stack(false).await;
    // A smaller disk: the final audit reads it all at the capped rate.
    let w = Workload {
        size: 16 << 20,
        ..workload(15, 105)
    };
    let (_nbd, o) = opener(&s, &w).await;
    let r = scenarios::slow_target(&mut s, o, &w, Duration::from_millis(20), 4 << 20).await;
    done(r);
}

/// Corruption toward the target: a byte flipped in a SCSI Command's
/// immediate data is rejected (Data-Digest-Error) and the command
/// discarded, leaving a CmdSN gap the initiator plugs by sending the same
/// command again (RFC 7143 §7.3, §7.2.1); one in a Data-Out ends its write
/// with CHECK CONDITION, PROTOCOL SERVICE CRC ERROR and the initiator
/// issues it anew (§7.8); one in a header fails the connection and the
/// session is recovered. Nothing corrupted is ever written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_corrupt_bytes_toward_target_with_digests() {
    let mut s = stack(true).await;
    let w = workload(15, 106);
    let (_nbd, o) = opener(&s, &w).await;
    let every = Duration::from_millis(1500);
    let r = scenarios::corrupt_with_digests(&mut s, o, &w, every, &[Direction::ToServer]).await;
    if r.as_ref().map_or(true, |r| r.check().is_err()) {
        eprintln!("target output:\n{}", s.target_output().join("\n"));
    }
    done(r);
}

/// Poll `f` every 100 ms until it holds or `within` passes.
async fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f()
}

/// MC/S with one network path lost and restored: the proxy carries only
/// one connection (the other path is down) and one of the two connections
/// is cut. ErrorRecoveryLevel 0 rebuilds the session with the one
/// connection it can log in, I/O goes on, and once the path is back the
/// initiator adds the second connection again, which carries commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcs_lost_connection_is_added_back_when_its_path_returns() {
    let s = stack(false).await;
    assert_eq!(s.session.connection_count(), 2);
    let bs = s.device.block_size() as usize;
    let io = Duration::from_secs(20);
    s.proxy.set_max_active(Some(1));
    s.proxy.cut_after(Direction::ToServer, 0);
    // The write's connection is cut under it; the session recovers with one.
    let data = bytes::Bytes::from(vec![0x5au8; 8 * bs]);
    tokio::time::timeout(io, s.device.write(64, data.clone(), false))
        .await
        .expect("write not hung")
        .expect("write succeeds across the cut");
    assert!(s.proxy.stats().cut >= 1, "a connection was cut");
    assert!(
        wait_for(Duration::from_secs(10), || s.events.recoveries().len() == 1).await,
        "the session recovered"
    );
    assert_eq!(s.session.connection_count(), 1, "one path, one connection");
    // While the path is down, attempts to add the connection fail and I/O
    // goes on over the remaining one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.session.connection_count(), 1);
    assert!(s.proxy.stats().refused >= 2, "{:?}", s.proxy.stats());
    let got = tokio::time::timeout(io, s.device.read(64, 8))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, data);
    // The path comes back: the connection is added back.
    s.proxy.set_max_active(None);
    assert!(
        wait_for(Duration::from_secs(20), || s.session.connection_count()
            == 2)
        .await,
        "the second connection was not added back: {:?}",
        s.session.stats()
    );
    let before: Vec<u64> = s.session.stats().iter().map(|c| c.commands).collect();
    for lba in 0..16u64 {
        tokio::time::timeout(io, s.device.read(lba * 8, 8))
            .await
            .unwrap()
            .unwrap();
    }
    let after: Vec<u64> = s.session.stats().iter().map(|c| c.commands).collect();
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "both connections carry commands: {before:?} -> {after:?}"
    );
    assert_eq!(s.session.negotiated().max_connections, 2);
    assert_eq!(s.events.failures(), 0);
}

/// A byte flipped inside a Data-Out's data (digests on): the target
/// rejects that PDU, ends the write with CHECK CONDITION, PROTOCOL SERVICE
/// CRC ERROR without writing any of it (RFC 7143 §7.8), and the initiator
/// issues the write again, so the caller sees it succeed with the right
/// data and no session recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_data_out_is_rewritten_transparently() {
    let s = stack(true).await;
    let io = Duration::from_secs(20);
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
    let data = bytes::Bytes::from(data);
    // Well past the command and its immediate data: inside a Data-Out.
    s.proxy.corrupt_at(Direction::ToServer, 300_000, 0x04);
    tokio::time::timeout(io, s.device.write(256, data.clone(), false))
        .await
        .expect("write not hung")
        .expect("write succeeds");
    let blocks = (data.len() / s.device.block_size() as usize) as u32;
    let got = tokio::time::timeout(io, s.device.read(256, blocks))
        .await
        .unwrap()
        .unwrap();
    assert!(got == data, "data read back differs");
    // The answer itself (CHECK CONDITION 47h/05h after the sequence ends)
    // is checked in target/tests/digests.rs.
    let out = s.target_output().join("\n");
    assert!(
        out.contains("data digest mismatch on DATA_OUT"),
        "the corruption did not hit a Data-Out:\n{out}"
    );
    assert!(s.events.recoveries().is_empty(), "recovered in-session");
}
