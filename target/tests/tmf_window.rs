//! Issue 9 item 5: a Task Management request that holds a CmdSN window slot
//! (non-immediate, RFC 7143 §4.2.2.1) on a connection that drops before it
//! is answered must give its slot back to the session-wide window; the
//! other connections of the session (MC/S) go on with the full window.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{isid, start_server, Conn};
use iscsi_target::config::SessionLimits;
use proto::pdu::{NopOut, Pdu, ScsiCommand, TaskAttr, TaskMgmtRequest, TmfFunction, RESERVED_TAG};
use proto::serial::DataSn;

const T: &str = "iqn.2024-01.rs.iscsi:test.tmf-window";

/// The session window (MaxCmdSN - ExpCmdSN + 1) a NOP-In reports.
async fn window(c: &mut Conn) -> u32 {
    let itt = c.next_itt();
    c.send(Pdu::NopOut(NopOut {
        immediate: true,
        lun: 0,
        itt,
        ttt: RESERVED_TAG,
        cmd_sn: c.cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        data: Bytes::new(),
    }))
    .await;
    match c.recv().await.unwrap() {
        Pdu::NopIn(n) if n.itt == itt => n.exp_cmd_sn.distance(n.max_cmd_sn).wrapping_add(1),
        other => panic!("expected the NOP-In, got {other:?}"),
    }
}

#[tokio::test]
async fn tmf_on_a_dropped_connection_gives_its_window_slot_back() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        "file:{},size=64M,sanitize",
        dir.path().join("d.img").display()
    );
    let limits = SessionLimits {
        max_connections: 2,
        ..SessionLimits::default()
    };
    let s = start_server(T, &[&spec], limits).await;
    let addr = s.local_addrs()[0];
    let mut a = Conn::login_with(addr, Some(T), isid(1), 0, 0, |cfg| {
        cfg.operational.max_connections = 2;
    })
    .await
    .unwrap();
    a.clear_unit_attention().await.unwrap();
    let full = window(&mut a).await;
    assert!(full > 2, "window of {full}");
    let cmd_sn = a.cmd_sn;
    let mut b = Conn::login_with(addr, Some(T), isid(1), a.outcome.tsih, 1, |cfg| {
        cfg.cmd_sn = cmd_sn;
    })
    .await
    .unwrap();

    // A: SANITIZE OVERWRITE without IMMED, 8 passes over 64 MiB: it runs
    // for a while and answers only at the end.
    let params = [8u8, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef];
    let sanitize_itt = a.next_itt();
    let sanitize_sn = a.cmd_sn;
    a.send(Pdu::ScsiCommand(ScsiCommand {
        immediate: false,
        final_: true,
        read: false,
        write: true,
        attr: TaskAttr::SIMPLE,
        lun: 0,
        itt: sanitize_itt,
        expected_data_transfer_length: params.len() as u32,
        cmd_sn: sanitize_sn,
        exp_stat_sn: a.exp_stat_sn,
        cdb: Bytes::copy_from_slice(&[0x48, 0x01, 0, 0, 0, 0, 0, 0, params.len() as u8, 0]),
        bidi_read_length: None,
        data: Bytes::copy_from_slice(&params),
    }))
    .await;
    a.cmd_sn = a.cmd_sn.successor();

    // B: wait until it runs, then a non-immediate ABORT TASK for it (it
    // waits for the overwrite, which cannot be cut short), and B drops.
    b.cmd_sn = a.cmd_sn;
    let started = Instant::now();
    loop {
        let r = b.command(0, &[0u8; 6], &[], 0).await.unwrap();
        if r.status != 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "SANITIZE never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let itt = b.next_itt();
    b.send(Pdu::TaskMgmtRequest(TaskMgmtRequest {
        immediate: false,
        function: TmfFunction::ABORT_TASK,
        lun: 0,
        itt,
        referenced_task_tag: sanitize_itt,
        cmd_sn: b.cmd_sn,
        exp_stat_sn: b.exp_stat_sn,
        ref_cmd_sn: sanitize_sn,
        exp_data_sn: DataSn::new(0),
        data: Bytes::new(),
    }))
    .await;
    b.cmd_sn = b.cmd_sn.successor();
    let next = b.cmd_sn;
    // Let the target take the request in before the connection goes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(b);

    // A: once the overwrite is over (TEST UNIT READY is GOOD again), every
    // slot is free: the aborted SANITIZE's, the TURs', the TMF's.
    a.cmd_sn = next;
    loop {
        let r = a.command(0, &[0u8; 6], &[], 0).await.unwrap();
        if r.status == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "SANITIZE never ends"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(window(&mut a).await, full, "a window slot was lost");
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}
